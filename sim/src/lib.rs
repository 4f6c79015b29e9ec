//! Kodama's test equipment: hardware simulators that stand in for the
//! camera's devices from outside the firmware, through the devices' own
//! interface (a pseudo-terminal, as `/dev/ttyUSB2` and `/dev/ttyUSB1` are on
//! the SIM7600). Never linked into `kodama-camera`.
//!
//! # Layout
//! * [`modem`]: a SIM7600 speaking its AT dialect on a pty, driven by scripted
//!   scenarios; sans-IO model plus a thin pty task.
//! * [`gnss`]: an NMEA receiver (log replay or a synthetic track), in-process
//!   through the firmware's `Gnss` trait or over a pty.
//!
//! The `kodama-sim` binary serves both on ptys (symlinked at stable paths)
//! for the demo, and the emulated boot's host side.

pub mod gnss;
pub mod modem;
