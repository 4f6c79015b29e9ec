//! Kodama server: accepts paired cameras and authorised viewers over iroh,
//! routes live video from cameras to viewers, records, and plays back.
//!
//! # Layout
//! * [`config`], [`cli`]: configuration file, environment and flags.
//! * [`app`]: starts the pieces; the `allow`, `view` and `id` subcommands.
//! * [`transport`]: the iroh node — allowlist hook and one protocol handler
//!   per ALPN (`kodama/camera/1`, `kodama/view/1`).
//! * [`allowlist`]: which node ids may connect as camera or viewer, and
//!   their names (the server's record; names never come from a hello).
//! * [`pairing`], [`pair_session`], [`ratelimit`]: one-time pairing codes,
//!   the pairing ALPN's handler, and its attempt limits.
//! * [`sessions`]: live connections, for revocation and admins' commands.
//! * [`updates`]: firmware update jobs: stored bundles, delivery state, the
//!   phases each camera reported.
//! * [`hello`]: the server side of the hello exchange, shared by both sessions.
//! * [`camera_session`]: one camera connection: handshake, media into the hub.
//! * [`viewer_session`]: one viewer connection: newest-GOP-first fan-out.
//! * [`hub`]: per-camera newest group, viewers' subscriptions, the feeds.
//! * [`feed`]: bounded whole-GOP feeds for consumers such as the recorder.
//! * [`viewer`], [`stats`]: the terminal viewer client and its statistics.
//! * [`recorder`], [`db`]: fMP4 segments on disk, their SQLite index,
//!   recovery and retention (docs/design/recording.md).
//! * [`api`]: the HTTP API for recordings, playback and export.
//! * [`web`]: the embedded web app: accounts and sessions, live video over
//!   WebSocket, camera administration, HTTPS.
//! * [`thumbs`]: preview thumbnails decoded from recorded keyframes.
//! * [`upstream`]: forwarding cameras to upstream servers (`[[upstream]]`,
//!   relay ALPN `kodama/relay/1`): live, telemetry, and backfill of what the
//!   upstream has not recorded (read back from the recordings past a
//!   per-upstream watermark in the index; a relay node from memory); [`relay_session`]: the upstream's side of one
//!   forwarded camera; [`relay_mode`]: `kodama-server relay` (no recording,
//!   no API).
//! * [`metrics`]: Prometheus `/metrics` and the JSON overview behind
//!   `kodama-server top`; the in-memory ring of recent log events.
//! * [`top`]: `kodama-server top`, the terminal dashboard over that overview.

pub mod allowlist;
pub mod api;
pub mod app;
pub mod camera_session;
pub mod cli;
pub mod config;
pub mod db;
pub mod feed;
pub mod hello;
pub mod hub;
pub mod metrics;
pub mod pair_session;
pub mod pairing;
pub mod ratelimit;
pub mod recorder;
pub mod relay_mode;
pub mod relay_session;
pub mod sessions;
pub mod stats;
pub mod thumbs;
pub mod top;
pub mod transport;
pub mod updates;
pub mod upstream;
pub mod viewer;
pub mod viewer_session;
pub mod web;
