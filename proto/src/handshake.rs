//! The hello / welcome exchange that opens every control stream.
//!
//! Both sides are plain state machines: the I/O adapter writes what they
//! produce and feeds them what it decodes. The server learns the peer's role
//! from the ALPN and checks the hello against it, so a camera dialling the
//! viewer ALPN (or the reverse) is refused with [`RejectCode::RoleMismatch`].

use crate::message::{CameraInfo, CameraSelector, Message, MessageError, RejectCode, Role};
use crate::PROTOCOL_VERSION;

/// Why a handshake failed. Both sides report the same variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The hello's role does not match the connection's ALPN.
    #[error("role mismatch: connection is for a {expected}, hello is from a {found}")]
    RoleMismatch {
        /// Role implied by the ALPN.
        expected: Role,
        /// Role the hello claims.
        found: Role,
    },
    /// The server refused us.
    #[error("server refused the connection ({code:?}): {reason}")]
    Rejected {
        /// The server's code.
        code: RejectCode,
        /// The server's explanation.
        reason: String,
    },
    /// A message arrived that does not belong in a handshake.
    #[error("unexpected {found} during the handshake")]
    Unexpected {
        /// Which message it was.
        found: &'static str,
    },
    /// The hello itself is invalid.
    #[error("invalid hello: {0}")]
    Invalid(#[from] MessageError),
}

impl HandshakeError {
    /// The reject code a server sends for this error.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            HandshakeError::VersionMismatch { .. } => RejectCode::VersionMismatch,
            HandshakeError::RoleMismatch { .. } => RejectCode::RoleMismatch,
            HandshakeError::Rejected { code, .. } => *code,
            HandshakeError::Unexpected { .. } | HandshakeError::Invalid(_) => RejectCode::BadHello,
        }
    }
}

fn message_name(msg: &Message) -> &'static str {
    match msg {
        Message::CameraHello { .. } => "CameraHello",
        Message::ViewerHello { .. } => "ViewerHello",
        Message::Welcome { .. } => "Welcome",
        Message::Reject { .. } => "Reject",
        Message::StreamInfo { .. } => "StreamInfo",
        Message::CameraState { .. } => "CameraState",
        Message::Command { .. } => "Command",
        Message::CommandAck { .. } => "CommandAck",
        Message::PairRequest { .. } => "PairRequest",
        Message::Paired { .. } => "Paired",
        Message::Stored(_) => "Stored",
        Message::RelayHello { .. } => "RelayHello",
        Message::UpdateOffer { .. } => "UpdateOffer",
        Message::UpdateReport { .. } => "UpdateReport",
    }
}

/// The dialing side: sends its hello, then waits for Welcome or Reject.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    hello: Message,
    done: bool,
}

impl ClientHandshake {
    /// A camera's handshake.
    pub fn camera(info: CameraInfo) -> Self {
        Self::with_version(PROTOCOL_VERSION, Role::Camera, Some(info), None)
    }

    /// A viewer's handshake.
    pub fn viewer(camera: CameraSelector) -> Self {
        Self::with_version(PROTOCOL_VERSION, Role::Viewer, None, Some(camera))
    }

    /// A relay's handshake for one forwarded camera.
    pub fn relay(camera: [u8; 32], info: CameraInfo) -> Self {
        Self {
            hello: Message::RelayHello {
                version: PROTOCOL_VERSION,
                camera,
                info,
            },
            done: false,
        }
    }

    /// A handshake announcing another version (tests of the mismatch path).
    pub fn with_version(
        version: u16,
        role: Role,
        info: Option<CameraInfo>,
        camera: Option<CameraSelector>,
    ) -> Self {
        let info = info.unwrap_or_else(|| CameraInfo {
            name: "camera".into(),
            codec: crate::Codec::H264,
            width: 0,
            height: 0,
            fps_milli: 0,
            bitrate_kbps: 0,
            sps: Default::default(),
            pps: Default::default(),
            firmware: String::new(),
            audio: None,
        });
        let hello = match role {
            Role::Camera => Message::CameraHello { version, info },
            Role::Viewer => Message::ViewerHello {
                version,
                camera: camera.unwrap_or(CameraSelector::FirstOnline),
            },
            Role::Relay => Message::RelayHello {
                version,
                camera: [0; 32],
                info,
            },
        };
        Self { hello, done: false }
    }

    /// The hello to write first.
    pub fn hello(&self) -> &Message {
        &self.hello
    }

    /// Feeds the server's reply. Returns the server's name on success.
    pub fn handle(&mut self, reply: Message) -> Result<String, HandshakeError> {
        if self.done {
            return Err(HandshakeError::Unexpected {
                found: message_name(&reply),
            });
        }
        self.done = true;
        match reply {
            Message::Welcome { version, server } => {
                if version != PROTOCOL_VERSION {
                    return Err(HandshakeError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    });
                }
                Ok(server)
            }
            Message::Reject { code, reason } => Err(HandshakeError::Rejected { code, reason }),
            other => Err(HandshakeError::Unexpected {
                found: message_name(&other),
            }),
        }
    }
}

/// A hello the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A camera and its stream.
    Camera(CameraInfo),
    /// A viewer and the camera it wants.
    Viewer(CameraSelector),
    /// A relay and the one camera it forwards on this connection.
    Relay {
        /// The camera's endpoint id (checked against what the relay may carry).
        camera: [u8; 32],
        /// Its stream as the origin knows it.
        info: CameraInfo,
    },
}

/// The answering side: checks the first message against the ALPN's role.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    role: Role,
    server_name: String,
}

impl ServerHandshake {
    /// A handshake for a connection whose ALPN implies `role`.
    pub fn new(role: Role, server_name: impl Into<String>) -> Self {
        Self {
            role,
            server_name: server_name.into(),
        }
    }

    /// Checks the peer's hello. On success returns it and the Welcome to
    /// send; on failure the error (for the log) — send [`Self::reject`] of it.
    pub fn handle(&self, hello: Message) -> Result<(Hello, Message), HandshakeError> {
        let (version, found, parsed) = match hello {
            Message::CameraHello { version, info } => {
                info.validate()?;
                (version, Role::Camera, Hello::Camera(info))
            }
            Message::ViewerHello { version, camera } => {
                (version, Role::Viewer, Hello::Viewer(camera))
            }
            Message::RelayHello {
                version,
                camera,
                info,
            } => {
                info.validate()?;
                (version, Role::Relay, Hello::Relay { camera, info })
            }
            other => {
                return Err(HandshakeError::Unexpected {
                    found: message_name(&other),
                })
            }
        };
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        if found != self.role {
            return Err(HandshakeError::RoleMismatch {
                expected: self.role,
                found,
            });
        }
        let welcome = Message::Welcome {
            version: PROTOCOL_VERSION,
            server: self.server_name.clone(),
        };
        Ok((parsed, welcome))
    }

    /// The Reject message for an error.
    pub fn reject(error: &HandshakeError) -> Message {
        Message::Reject {
            code: error.reject_code(),
            reason: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::info;

    #[test]
    fn camera_handshake_succeeds() {
        let mut client = ClientHandshake::camera(info());
        let server = ServerHandshake::new(Role::Camera, "box");
        let (hello, welcome) = server.handle(client.hello().clone()).expect("accepted");
        assert_eq!(hello, Hello::Camera(info()));
        assert_eq!(client.handle(welcome), Ok("box".into()));
    }

    #[test]
    fn version_mismatch_is_typed_on_both_sides() {
        let mut client = ClientHandshake::with_version(2, Role::Viewer, None, None);
        let server = ServerHandshake::new(Role::Viewer, "box");
        let err = server.handle(client.hello().clone()).expect_err("refused");
        assert_eq!(err, HandshakeError::VersionMismatch { ours: 1, theirs: 2 });
        match client.handle(ServerHandshake::reject(&err)) {
            Err(HandshakeError::Rejected {
                code: RejectCode::VersionMismatch,
                reason,
            }) => assert!(reason.contains("we speak 1, the peer speaks 2"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
        // A server of another version answering us.
        let mut client = ClientHandshake::viewer(CameraSelector::FirstOnline);
        assert_eq!(
            client.handle(Message::Welcome {
                version: 9,
                server: "x".into()
            }),
            Err(HandshakeError::VersionMismatch { ours: 1, theirs: 9 })
        );
    }

    #[test]
    fn relay_handshake_names_its_camera_and_needs_the_relay_alpn() {
        let mut client = ClientHandshake::relay([7; 32], info());
        let server = ServerHandshake::new(Role::Relay, "offsite");
        let (hello, welcome) = server.handle(client.hello().clone()).expect("accepted");
        assert_eq!(
            hello,
            Hello::Relay {
                camera: [7; 32],
                info: info()
            }
        );
        assert_eq!(client.handle(welcome), Ok("offsite".into()));
        let err = ServerHandshake::new(Role::Camera, "box")
            .handle(ClientHandshake::relay([7; 32], info()).hello().clone())
            .expect_err("a relay hello on the camera ALPN");
        assert_eq!(
            err,
            HandshakeError::RoleMismatch {
                expected: Role::Camera,
                found: Role::Relay
            }
        );
    }

    #[test]
    fn role_mismatch_is_refused() {
        let client = ClientHandshake::camera(info());
        let server = ServerHandshake::new(Role::Viewer, "box");
        let err = server.handle(client.hello().clone()).expect_err("refused");
        assert_eq!(
            err,
            HandshakeError::RoleMismatch {
                expected: Role::Viewer,
                found: Role::Camera
            }
        );
        assert!(matches!(
            ServerHandshake::reject(&err),
            Message::Reject {
                code: RejectCode::RoleMismatch,
                ..
            }
        ));
    }

    #[test]
    fn unexpected_messages_are_refused() {
        let server = ServerHandshake::new(Role::Camera, "box");
        assert!(matches!(
            server.handle(Message::Welcome {
                version: 1,
                server: String::new()
            }),
            Err(HandshakeError::Unexpected { found: "Welcome" })
        ));
        let mut client = ClientHandshake::camera(info());
        assert!(matches!(
            client.handle(Message::Command {
                id: 1,
                command: crate::Command::RequestKeyframe
            }),
            Err(HandshakeError::Unexpected { .. })
        ));
    }
}
