//! Hardware drivers, each behind a small trait; their simulators (test equipment) live outside the firmware, in the `kodama-sim` crate.
//!
//! # Layout
//! * [`gnss`]: NMEA 0183 position from the modem's GNSS receiver.
//! * [`modem`]: SIM7600 AT engine, bring-up, supervision and recovery.
//! * [`gpio`]: PWRKEY, status LED and PIR pins (embedded-hal 1.0; rppal with `pi`).

pub mod gnss;
pub mod gpio;
pub mod modem;
