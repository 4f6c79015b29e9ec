//! The one place Kodama touches iroh.
//!
//! Both binaries reach QUIC only through this crate, so an iroh upgrade
//! changes one crate. Everything protocol-shaped (framing, validation,
//! handshake) lives in the sans-IO `kodama-proto`; this crate moves its bytes.
//!
//! # Layout
//! * [`endpoint`]: node identity (secret key file, mode 0600), endpoint
//!   construction with an offline mode (no relays, no address lookup, no port
//!   mapper), tickets and address parsing.
//! * [`control`]: the bidirectional control stream: length-prefixed
//!   [`kodama_proto::Message`]s in and out.
//! * [`media_send`]: sends media the Media-over-QUIC way: one unidirectional
//!   stream per GOP with rising priority, superseded groups reset instead of
//!   queued, long-lived higher-priority streams for audio, telemetry, events.
//! * [`media_recv`]: accepts a peer's media streams, validates them with
//!   [`kodama_proto::GroupReceiver`] and hands frames to the caller.
//! * [`pair`]: redeeming a one-time pairing code on the pairing ALPN.
//! * [`backfill`]: uploads one recorded GOP on its own stream, below every
//!   live stream's priority (store-and-forward).
//! * [`link`]: link liveness (silence detection within a second) and the
//!   live/standby connection profiles (keep-alive, idle timeout).
//! * [`policy`]: sans-IO decisions the drivers above follow ([`policy::send`], the GOP send
//!   policy; [`policy::rate`], the adaptive-bitrate controller and tier ladder).
//! * [`update`]: firmware bundles sent to a camera on its own connection,
//!   resumable from an offset, below every live stream's priority.
//! * [`config`]: the configuration-file error type and reading a file,
//!   shared by both binaries' `config` modules.
//! * [`error`]: the error enums.

pub mod backfill;
pub mod config;
pub mod control;
pub mod durable;
pub mod endpoint;
pub mod error;
pub mod link;
pub mod media_recv;
pub mod media_send;
pub mod pair;
pub mod policy;
pub mod process;
pub mod update;

/// The iroh crate itself, for the few places (protocol handlers, hooks) that need more.
pub use iroh;
pub use iroh::endpoint::{Connection, VarInt};
pub use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
pub use iroh_tickets::endpoint::EndpointTicket;

/// Application close codes Kodama uses on connections and streams.
pub mod codes {
    use iroh::endpoint::VarInt;

    /// Normal close (shutdown, end of session).
    pub const NORMAL: VarInt = VarInt::from_u32(0);
    /// The peer is not on the allowlist.
    pub const NOT_ALLOWED: VarInt = VarInt::from_u32(1);
    /// The handshake failed (version, role, malformed hello).
    pub const HANDSHAKE: VarInt = VarInt::from_u32(2);
    /// The peer sent malformed or oversized data.
    pub const PROTOCOL_VIOLATION: VarInt = VarInt::from_u32(3);
    /// A newer group superseded this one before it was sent (stream reset code).
    pub const GROUP_SUPERSEDED: VarInt = VarInt::from_u32(4);
    /// The server is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(5);
    /// The peer exceeded a resource limit (flood).
    pub const OVER_LIMIT: VarInt = VarInt::from_u32(6);
    /// A newer connection from the same camera replaced this one.
    pub const REPLACED: VarInt = VarInt::from_u32(7);
}
