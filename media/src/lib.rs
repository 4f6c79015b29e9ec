//! Media handling shared by the camera and the server, sans-IO.
//!
//! # Layout
//! * [`h264`]: Annex-B splitting, NAL unit types, IDR detection, and the
//!   sequence parameter set fields (profile, level, resolution) both sides need.

pub mod h264;
