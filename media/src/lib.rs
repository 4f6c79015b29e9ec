//! Media handling shared by the camera and the server, sans-IO.
//!
//! # Layout
//! * [`h264`]: Annex-B splitting, NAL unit types, IDR detection, and the
//!   sequence parameter set fields (profile, level, resolution) both sides need.
//! * [`fmp4`]: fragmented MP4 (ISO/IEC 14496-12) writing and reading for one
//!   H.264 track: the server's recordings, and later the camera's offline ones.
//! * [`opus`]: Opus packet durations (RFC 6716) and the Ogg Opus writer
//!   (RFC 7845) of the terminal viewer's audio output.
//! * [`pgm`]: greyscale pictures as binary PGM (the pairing QR code's image
//!   file, the synthetic camera's scene).

pub mod fmp4;
pub mod h264;
pub mod opus;
pub mod pgm;
