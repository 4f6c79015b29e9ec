//! Kodama camera firmware.
//!
//! Captures video, encodes H.264 and streams it, with telemetry and events,
//! to a Kodama server over iroh. Hardware sits behind small traits, each with
//! a real Linux driver. The simulators (test equipment) live in the separate
//! `kodama-sim` crate and reach the drivers only through the devices' own
//! interfaces (pseudo-terminals), never from inside this binary.
//!
//! # Layout
//! * [`config`]: `kodama.toml`, validated, errors naming the field.
//! * [`cli`]: flags and environment variables layered over the file.
//! * [`firstboot`]: the SD-card image's boot steps: key, node id and status files.
//! * [`app`]: wires identity, endpoint, source, capture and uplink together.
//! * [`video`]: the [`video::VideoSource`] trait, the capture thread, the
//!   Pi driver (feature `pi`) and the synthetic test source (feature `synthetic`).
//! * [`audio`]: microphone (ALSA, feature `pi`) or the synthetic speech signal
//!   (feature `synthetic`) → Opus packets on the audio channel.
//! * [`update`]: signed A/B updates: receive the bundle (resumable, BLAKE3),
//!   `rauc install`, reboot, commit only once healthy (the health gate).
//! * [`uplink`]: connect, handshake, stream GOPs, reconnect with backoff.
//! * [`pairing`]: redeem `server.pair`'s one-time code, remember being paired.
//! * [`onboarding`]: read the pairing string from a QR code in front of the
//!   lens while unpaired, with LED feedback.
//! * [`backoff`]: capped exponential backoff, sans-IO.
//! * [`backlog`]: store-and-forward: the crash-safe ring of GOPs filmed
//!   while the server was unreachable, and their upload (backfill).
//! * [`hw`]: hardware drivers (modem, GNSS, GPIO).

pub mod app;
pub mod audio;
pub mod backlog;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod diag;
pub mod firstboot;
pub mod hw;
pub mod link;
pub mod motion;
pub mod onboarding;
pub mod pairing;
pub mod telemetry;
pub mod update;
pub mod uplink;
pub mod video;
