//! Kodama server.

pub mod feed;
