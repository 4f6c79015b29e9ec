//! Errors of the transport layer.

use kodama_proto::{FrameError, HandshakeError, MessageError, StreamError};

/// Why the endpoint or identity could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The secret key file could not be read or written.
    #[error("secret key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret key file does not hold a key.
    #[error("secret key file {path} is not a 32-byte key (found {len} bytes); delete it to create a new identity")]
    BadKey {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        len: usize,
    },
    /// Binding the endpoint failed.
    #[error("binding the iroh endpoint on {addr}: {message}")]
    Bind {
        /// The address.
        addr: String,
        /// What iroh said.
        message: String,
    },
    /// Dialling a peer failed.
    #[error("connecting: {0}")]
    Connect(String),
    /// A node id, address or ticket could not be parsed.
    #[error("cannot parse {what} {value:?}: {message}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The input.
        value: String,
        /// Why.
        message: String,
    },
}

/// Why the control stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Opening or accepting the stream failed.
    #[error("control stream: {0}")]
    Connection(#[from] iroh::endpoint::ConnectionError),
    /// Reading failed.
    #[error("control stream read: {0}")]
    Read(#[from] iroh::endpoint::ReadError),
    /// Writing failed.
    #[error("control stream write: {0}")]
    Write(#[from] iroh::endpoint::WriteError),
    /// The peer sent a malformed message.
    #[error("malformed control message: {0}")]
    Malformed(#[from] MessageError),
    /// The peer closed the stream.
    #[error("peer closed the control stream")]
    Closed,
    /// No message arrived in time.
    #[error("no control message within {0:?}")]
    Timeout(std::time::Duration),
}

/// Why saying hello to a server failed
/// ([`crate::control::ControlStream::hello`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The control stream could not be opened or the hello not sent.
    #[error("{0}")]
    Stream(#[source] ControlError),
    /// The server closed the connection before answering (a refusal before
    /// any Kodama byte, e.g. a key not on its allowlist): its close reason.
    #[error("handshake: {0}")]
    Closed(String),
    /// No answer could be read within the timeout.
    #[error("handshake: {0}")]
    NoAnswer(#[source] ControlError),
    /// The server answered with a refusal or something other than a welcome.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Why a media stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The connection ended.
    #[error("connection: {0}")]
    Connection(#[from] iroh::endpoint::ConnectionError),
    /// Writing a stream failed.
    #[error("media stream write: {0}")]
    Write(#[from] iroh::endpoint::WriteError),
    /// Reading a stream failed.
    #[error("media stream read: {0}")]
    Read(#[from] iroh::endpoint::ReadError),
    /// The peer sent an invalid stream.
    #[error("invalid media stream: {0}")]
    Invalid(#[from] StreamError),
    /// A frame could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(#[from] FrameError),
    /// The stream was closed locally.
    #[error("media stream already closed")]
    ClosedStream,
}
