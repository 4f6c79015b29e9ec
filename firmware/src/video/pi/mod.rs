//! The Raspberry Pi camera: IMX219 through libcamera into the bcm2835-codec
//! hardware H.264 encoder (V4L2 memory-to-memory, `/dev/video11`).
//!
//! Data flow (feature `pi`):
//!
//! ```text
//! libcamera thread ──Request (YUV420 dmabuf, SensorTimestamp)──▶ PiCameraSource::next_frame
//!        ▲                                                       │ VIDIOC_QBUF OUTPUT (DMABUF import)
//!        └──────────── Request back once the encoder ◀───────────┤ VIDIOC_DQBUF OUTPUT
//!                      has dequeued its OUTPUT slot               │ VIDIOC_DQBUF CAPTURE (MMAP) → access unit
//! ```
//!
//! Zero copies of raw pictures: the encoder reads the camera's dmabufs.
//! Coded frames are copied once out of the encoder's CAPTURE buffers.
//!
//! # Layout
//! Always built (pure logic, unit-tested on any machine):
//! * [`tiers`]: the resolution/frame-rate ladder and IMX219 sensor modes.
//! * [`format`]: libcamera stream ↔ encoder OUTPUT/CAPTURE formats.
//! * [`controls`]: encoder control ids and values (profile, level from
//!   H.264 Table A-1, bitrate, I-period, in-band headers).
//! * [`ledger`]: which camera buffer is where (camera, ready, encoder slot).
//! * [`clock`]: `SensorTimestamp` → Unix µs; timestamps through the encoder.
//! * [`assemble`]: CAPTURE buffers → access units; errno → actionable errors.
//!
//! Feature `pi` only (needs libcamera >= 0.4 and the kernel's videodev2.h;
//! `scripts/check-pi.sh` builds it on a machine without them):
//! * `camera`: the libcamera thread.
//! * `encoder`: the V4L2 M2M encoder.
//! * `source`: [`PiCameraSource`], the [`crate::video::VideoSource`].

pub mod assemble;
pub mod clock;
pub mod controls;
pub mod format;
pub mod ledger;
pub mod tiers;

#[cfg(feature = "pi")]
mod camera;
#[cfg(feature = "pi")]
mod encoder;
#[cfg(feature = "pi")]
mod source;

#[cfg(feature = "pi")]
pub use source::{PiCameraConfig, PiCameraSource};
