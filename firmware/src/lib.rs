//! Kodama camera firmware.
//!
//! Captures video, encodes H.264 and streams it, with telemetry and events,
//! to a Kodama server over iroh. Hardware sits behind small traits, each with
//! a real Linux driver and a simulator (test equipment) the tests and the
//! demo use.
//!
//! # Layout
//! * [`config`]: `kodama.toml`, validated, errors naming the field.
//! * [`cli`]: flags and environment variables layered over the file.
//! * [`firstboot`]: the SD-card image's boot steps: key, node id and status files.
//! * [`app`]: wires identity, endpoint, source, capture and uplink together.
//! * [`video`]: the [`video::VideoSource`] trait, the capture thread, the
//!   synthetic source (and the Pi driver under the `pi` feature).
//! * [`uplink`]: connect, handshake, stream GOPs, reconnect with backoff.
//! * [`backoff`]: capped exponential backoff, sans-IO.
//! * [`hw`]: hardware drivers (modem, GNSS, GPIO).
//! * [`sim`]: hardware simulators (test equipment).

pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod diag;
pub mod firstboot;
pub mod hw;
pub mod link;
pub mod motion;
pub mod sim;
pub mod telemetry;
pub mod uplink;
pub mod video;
