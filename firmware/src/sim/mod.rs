//! Simulators: test equipment that behaves like the hardware, used by tests
//! and the demo through the same traits as the real drivers.
//!
//! # Layout
//! * [`gnss`]: an NMEA receiver (log replay or a synthetic track), in-process or over a pty.
//! * [`modem`]: a SIM7600 on a pty, driven by scripted scenarios.

pub mod gnss;
pub mod modem;
