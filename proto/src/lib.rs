//! Kodama's wire protocol, sans-IO.
//!
//! Nothing here touches a socket, a clock or an async runtime: callers feed
//! bytes in and take frames, messages or typed errors out. The transport
//! adapters in `kodama-firmware` and `kodama-server` drive these types over
//! iroh QUIC connections.
//!
//! # Connection shape
//! * The ALPN names the role: [`ALPN_CAMERA`] or [`ALPN_VIEWER`].
//! * The dialer opens one bidirectional **control stream** and sends a hello
//!   ([`Message::CameraHello`] or [`Message::ViewerHello`]); the server answers
//!   [`Message::Welcome`] or [`Message::Reject`]. After that both sides exchange
//!   control messages on it ([`message`]).
//! * Media travels on **unidirectional streams**, each opened with a
//!   [`StreamHeader`]: one stream per video group of pictures (GOP), and one
//!   long-lived stream each for audio, telemetry and events. Every stream then
//!   carries [`Frame`]s until it is finished or reset ([`stream`]).
//!
//! # Layout
//! * [`frame`]: the media frame (channel, flags, timestamp, sequence, payload)
//!   and its incremental decoder.
//! * [`message`]: control-stream messages and their incremental decoder.
//! * [`stream`]: unidirectional stream headers and the per-stream receive
//!   state machine that validates what arrives on a stream.
//! * [`handshake`]: the hello/welcome exchange for both sides.
//! * [`order`]: restores group order at a receiver (a newer GOP's stream can
//!   overtake the tail of the previous one).
//! * [`pairing`]: one-time pairing codes and the pairing string (text / QR).
//! * [`update`]: firmware update delivery: the bundle stream header and update phases.
//! * [`wire`]: the byte-level reader used by every decoder.

pub mod frame;
pub mod handshake;
pub mod message;
pub mod order;
pub mod pairing;
pub mod stream;
pub mod update;
pub mod wire;

pub use frame::{
    Channel, Frame, FrameDecoder, FrameError, FrameFlags, FRAME_HEADER_LEN, MAX_PAYLOAD,
};
pub use handshake::{ClientHandshake, HandshakeError, Hello, ServerHandshake};
pub use message::{
    AudioCodec, AudioInfo, CameraInfo, CameraSelector, Codec, Command, CommandResult, Message,
    MessageDecoder, MessageError, RejectCode, Role, Stored, TierLimit, MAX_MESSAGE_LEN,
};
pub use order::{GroupOrderer, MediaEvent};
pub use stream::{GroupReceiver, StreamError, StreamEvent, StreamHeader, STREAM_HEADER_LEN};
pub use update::{BundleHeader, UpdatePhase, BUNDLE_HEADER_LEN, MAX_BUNDLE_SIZE};

/// Protocol version carried in every hello and welcome. Bumped on any
/// incompatible change to this crate's wire format.
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN a camera uses to connect to a server.
pub const ALPN_CAMERA: &[u8] = b"kodama/camera/1";

/// ALPN a viewer uses to connect to a server.
pub const ALPN_VIEWER: &[u8] = b"kodama/view/1";

/// ALPN any key may use, only to redeem a one-time pairing code
/// ([`Message::PairRequest`]); nothing else is served on it.
pub const ALPN_PAIR: &[u8] = b"kodama/pair/1";

/// ALPN an origin server uses to forward one camera to an upstream server
/// ([`Message::RelayHello`]); the upstream must allow its key as a relay.
pub const ALPN_RELAY: &[u8] = b"kodama/relay/1";

/// The role a given ALPN stands for, or `None` for an ALPN Kodama does not speak.
pub fn role_for_alpn(alpn: &[u8]) -> Option<Role> {
    match alpn {
        ALPN_CAMERA => Some(Role::Camera),
        ALPN_VIEWER => Some(Role::Viewer),
        ALPN_RELAY => Some(Role::Relay),
        _ => None,
    }
}

/// The ALPN for a role.
pub fn alpn_for_role(role: Role) -> &'static [u8] {
    match role {
        Role::Camera => ALPN_CAMERA,
        Role::Viewer => ALPN_VIEWER,
        Role::Relay => ALPN_RELAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_round_trips_roles() {
        for role in [Role::Camera, Role::Viewer, Role::Relay] {
            assert_eq!(role_for_alpn(alpn_for_role(role)), Some(role));
        }
        assert_eq!(role_for_alpn(b"kodama/camera/2"), None);
    }
}
