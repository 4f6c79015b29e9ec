//! Hardware drivers, each behind a small trait with a simulator in `crate::sim`.
//!
//! # Layout
//! * [`gnss`]: NMEA 0183 position from the modem's GNSS receiver.

pub mod gnss;
