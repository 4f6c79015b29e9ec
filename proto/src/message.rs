//! Control-stream messages.
//!
//! # Wire format
//! ```text
//! offset size field
//!      0    4 body length n, u32 BE, at most MAX_MESSAGE_LEN (64 KiB)
//!      4    1 message type
//!      5  n-1 body (per type, below)
//! ```
//! Bodies (all integers big-endian; `str`/`bytes` are u16-length-prefixed):
//! ```text
//! 0x01 CameraHello  version u16, CameraInfo
//! 0x02 ViewerHello  version u16, selector u8 (0 id: [u8;32], 1 name: str, 2 first online)
//! 0x03 Welcome      version u16, server name str
//! 0x04 Reject       code u16, reason str
//! 0x05 StreamInfo   camera id [u8;32], CameraInfo
//! 0x06 CameraState  camera id [u8;32], online u8 (0|1)
//! 0x07 Command      id u32, kind u8 (0 keyframe, 1 bitrate: kbps u32, 2 reboot, 3 snapshot)
//! 0x08 CommandAck   id u32, result u8 (0 ok, 1 unsupported, 2 failed), detail str
//! 0x09 PairRequest  version u16, role u8 (0 camera, 1 viewer, 2 relay), code str, name str
//! 0x0A Paired       name str, server str
//! 0x0B Stored       kind u8 (0 live, 1 backfill, 2 aux batch), id u64
//! 0x0C RelayHello   version u16, camera id [u8;32], CameraInfo   (relay ALPN: one forwarded camera)
//! 0x0D UpdateOffer  hash [u8;32] (BLAKE3), size u64
//! 0x0E UpdateReport hash [u8;32], phase u8 (crate::update::UpdatePhase), progress u64, detail str
//!
//! Reject codes: 1 version, 2 role, 3 not allowed, 4 unknown camera, 5 bad
//! hello, 6 shutdown; pairing: 7 wrong code, 8 code expired, 9 code used,
//! 10 rate limited, 11 revoked key, 12 name taken.
//!
//! CameraInfo: name str, codec u8 (1 = H.264), width u16, height u16,
//!             fps_milli u32, bitrate_kbps u32, sps bytes, pps bytes, firmware str,
//!             then, only for a camera with a microphone:
//!             audio codec u8 (1 = Opus), sample_rate u32, channels u8, pre_skip u16
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::update::UpdatePhase;
use crate::wire::{length_prefix, put_bytes16, put_string16, FieldError, LengthPrefixed, Reader};

/// Largest control message body (64 KiB). SPS/PPS and names fit many times over.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Longest camera name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A camera streaming to the server.
    Camera,
    /// A viewer watching one camera.
    Viewer,
    /// Another Kodama server forwarding cameras it may carry (one camera
    /// per connection).
    Relay,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Camera => "camera",
            Role::Viewer => "viewer",
            Role::Relay => "relay",
        })
    }
}

/// Video codec of a camera's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC, Annex-B access units.
    H264 = 1,
}

/// What a camera tells the server about its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Human-readable name, unique per server by convention.
    pub name: String,
    /// Video codec.
    pub codec: Codec,
    /// Picture width in pixels.
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// Frame rate in thousandths of a frame per second (30 fps = 30000).
    pub fps_milli: u32,
    /// Current target bitrate.
    pub bitrate_kbps: u32,
    /// H.264 sequence parameter set NAL unit (without start code).
    pub sps: Bytes,
    /// H.264 picture parameter set NAL unit (without start code).
    pub pps: Bytes,
    /// Firmware version string.
    pub firmware: String,
    /// The audio stream, if the camera has a microphone. Encoded after the
    /// other fields only when present, so hellos without audio keep their
    /// earlier shape.
    pub audio: Option<AudioInfo>,
}

/// Audio codec of a camera's audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Opus (RFC 6716): each audio frame's payload is one Opus packet.
    Opus = 1,
}

/// What a camera tells the server about its audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioInfo {
    /// Audio codec.
    pub codec: AudioCodec,
    /// Input sample rate in Hz (Opus decodes at 48 kHz whatever it was).
    pub sample_rate: u32,
    /// Channel count (1 mono, 2 stereo).
    pub channels: u8,
    /// Samples at 48 kHz the decoder drops at the start (the encoder's
    /// look-ahead; the `pre_skip` of RFC 7845 and of MP4's `dOps`).
    pub pre_skip: u16,
}

/// Which camera a viewer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraSelector {
    /// By the camera's endpoint id (32-byte public key).
    Id([u8; 32]),
    /// By the camera's name.
    Name(String),
    /// Whichever camera is online first (handy for a one-camera setup).
    FirstOnline,
}

/// Why a server refused a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The peer speaks another protocol version.
    VersionMismatch = 1,
    /// The hello's role does not match the connection's ALPN.
    RoleMismatch = 2,
    /// The peer is not on the allowlist.
    NotAllowed = 3,
    /// The requested camera is unknown or offline.
    UnknownCamera = 4,
    /// The hello was malformed or invalid.
    BadHello = 5,
    /// The server is shutting down.
    ShuttingDown = 6,
    /// Pairing: no pending code matches.
    WrongCode = 7,
    /// Pairing: the code's time ran out.
    CodeExpired = 8,
    /// Pairing: the code was used already (codes are single use).
    CodeUsed = 9,
    /// Pairing: too many attempts; try again later.
    RateLimited = 10,
    /// Pairing: this key was removed and can never come back.
    Revoked = 11,
    /// Pairing: the name the code was made for is taken now.
    NameTaken = 12,
}

impl RejectCode {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::VersionMismatch,
            2 => Self::RoleMismatch,
            3 => Self::NotAllowed,
            4 => Self::UnknownCamera,
            5 => Self::BadHello,
            6 => Self::ShuttingDown,
            7 => Self::WrongCode,
            8 => Self::CodeExpired,
            9 => Self::CodeUsed,
            10 => Self::RateLimited,
            11 => Self::Revoked,
            12 => Self::NameTaken,
            _ => return None,
        })
    }
}

/// A command from the server to a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start a new GOP as soon as possible.
    RequestKeyframe,
    /// Change the encoder's target bitrate.
    SetBitrate {
        /// New target in kbit/s.
        kbps: u32,
    },
    /// Restart the camera (acknowledged before it goes down).
    Reboot,
    /// Produce a keyframe now and say which one, so the server can keep it
    /// as a still picture.
    Snapshot,
    /// Limit the camera's adaptive bitrate: let it decide, cap it at a rung
    /// of its tier ladder, or pin it to one.
    SetTier(TierLimit),
}

/// What the server allows a camera's adaptive bitrate (rungs index the
/// camera's tier ladder, 0 = lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierLimit {
    /// The camera decides from its link.
    Auto,
    /// The camera decides, at most this rung.
    Cap(u8),
    /// Always this rung.
    Pin(u8),
}

/// How a camera answered a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// Done.
    Ok = 0,
    /// The camera cannot do this.
    Unsupported = 1,
    /// The camera tried and failed.
    Failed = 2,
}

/// What a [`Message::Stored`] acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Live video is durably recorded up to and including the GOP whose
    /// keyframe was captured at this time (µs, camera clock).
    LiveThrough {
        /// Capture time of that GOP's keyframe.
        capture_us: u64,
    },
    /// The backfilled GOP with this backlog record id (the stream's group
    /// id) is durably recorded, or was already: the camera may forget it.
    Backfill {
        /// The record id.
        id: u64,
    },
    /// Relay → upstream acknowledgement of a batch of recorded telemetry or
    /// event rows (a telemetry/event stream whose group id is `id`): every
    /// row of it is durably stored, or already was. Only a relay sends such
    /// batches; a camera never receives this.
    Aux {
        /// The batch's stream group id.
        id: u64,
    },
}

/// A control-stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Camera → server: first message on a camera connection.
    CameraHello {
        /// The camera's protocol version.
        version: u16,
        /// Its stream.
        info: CameraInfo,
    },
    /// Viewer → server: first message on a viewer connection.
    ViewerHello {
        /// The viewer's protocol version.
        version: u16,
        /// The camera it wants.
        camera: CameraSelector,
    },
    /// Server → peer: the hello was accepted.
    Welcome {
        /// The server's protocol version.
        version: u16,
        /// The server's name, for display.
        server: String,
    },
    /// Server → peer: the hello was refused; the server closes the connection.
    Reject {
        /// Why.
        code: RejectCode,
        /// Human-readable detail.
        reason: String,
    },
    /// Server → viewer: the stream the viewer is about to receive (sent after
    /// Welcome and again whenever the camera reconnects with new parameters).
    StreamInfo {
        /// The camera's endpoint id.
        camera: [u8; 32],
        /// Its stream parameters.
        info: CameraInfo,
    },
    /// Server → viewer: the camera went offline or came back.
    CameraState {
        /// The camera's endpoint id.
        camera: [u8; 32],
        /// Whether it is connected now.
        online: bool,
    },
    /// Server → camera.
    Command {
        /// Correlates the acknowledgement.
        id: u32,
        /// What to do.
        command: Command,
    },
    /// Camera → server: answer to a command.
    CommandAck {
        /// The command's id.
        id: u32,
        /// Outcome.
        result: CommandResult,
        /// Human-readable detail.
        detail: String,
    },
    /// Camera or viewer → server, on the pairing ALPN: redeem a one-time code.
    PairRequest {
        /// The peer's protocol version.
        version: u16,
        /// What the peer wants to become.
        role: Role,
        /// The pairing code as typed or scanned (normalised by the server).
        code: String,
        /// A suggested name (the server keeps the name it recorded with the code).
        name: String,
    },
    /// Server → peer: paired; the peer's key is now on the allowlist.
    Paired {
        /// The name the server knows the peer by.
        name: String,
        /// The server's name, for display.
        server: String,
    },
    /// Server → camera: video is durably recorded (store-and-forward: the
    /// camera keeps what is not acknowledged and uploads it later).
    Stored(Stored),
    /// Relay (an origin server) → upstream server, on the relay ALPN: the
    /// connection carries this one camera, under the name the origin
    /// recorded. Whether the camera is online follows as `StreamInfo` /
    /// `CameraState`.
    RelayHello {
        /// The relay's protocol version.
        version: u16,
        /// The forwarded camera's endpoint id.
        camera: [u8; 32],
        /// Its stream as the origin last knew it (name: the origin's record).
        info: CameraInfo,
    },
    /// Server → camera: a firmware bundle is waiting for it (an admin's
    /// `camera update`); the camera answers with an [`Message::UpdateReport`]
    /// saying how many bytes it holds, and the server streams the rest.
    UpdateOffer {
        /// BLAKE3 of the whole bundle.
        hash: [u8; 32],
        /// Its size in bytes.
        size: u64,
    },
    /// Camera → server: where an update stands (also sent after every
    /// connect, so the server learns what happened across a reboot).
    UpdateReport {
        /// The bundle's hash (zero when idle).
        hash: [u8; 32],
        /// The phase.
        phase: UpdatePhase,
        /// Receiving: bytes held; installing: percent; otherwise 0.
        progress: u64,
        /// Human-readable detail (versions, slots, errors).
        detail: String,
    },
}

/// Why a control message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The declared length exceeds [`MAX_MESSAGE_LEN`]; refused before allocating.
    #[error(
        "control message at stream offset {offset}: length {len} exceeds the {max}-byte limit"
    )]
    TooLarge {
        /// Stream offset of the message.
        offset: u64,
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length body has no type byte.
    #[error("control message at stream offset {offset} is empty")]
    Empty {
        /// Stream offset of the message.
        offset: u64,
    },
    /// Unknown message type.
    #[error("control message at stream offset {offset}: unknown type {kind:#04x}")]
    UnknownType {
        /// Stream offset of the message.
        offset: u64,
        /// The type byte.
        kind: u8,
    },
    /// A field of a known message is malformed.
    #[error("control message type {kind:#04x} at stream offset {offset}: {source}")]
    Field {
        /// Stream offset of the message.
        offset: u64,
        /// The type byte.
        kind: u8,
        /// What was wrong.
        source: FieldError,
    },
    /// A camera name is empty or too long.
    #[error("camera name must be 1..={max} bytes, got {len}")]
    BadName {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a message.
    #[error(
        "control stream ended inside a message at offset {offset} ({buffered} bytes received)"
    )]
    Truncated {
        /// Stream offset of the incomplete message.
        offset: u64,
        /// Bytes of it that arrived.
        buffered: usize,
    },
}

const T_CAMERA_HELLO: u8 = 0x01;
const T_VIEWER_HELLO: u8 = 0x02;
const T_WELCOME: u8 = 0x03;
const T_REJECT: u8 = 0x04;
const T_STREAM_INFO: u8 = 0x05;
const T_CAMERA_STATE: u8 = 0x06;
const T_COMMAND: u8 = 0x07;
const T_COMMAND_ACK: u8 = 0x08;
const T_PAIR_REQUEST: u8 = 0x09;
const T_PAIRED: u8 = 0x0A;
const T_STORED: u8 = 0x0B;
const T_RELAY_HELLO: u8 = 0x0C;
const T_UPDATE_OFFER: u8 = 0x0D;
const T_UPDATE_REPORT: u8 = 0x0E;

impl CameraInfo {
    fn encode(&self, out: &mut BytesMut) {
        put_string16(out, &self.name);
        out.put_u8(self.codec as u8);
        out.put_u16(self.width);
        out.put_u16(self.height);
        out.put_u32(self.fps_milli);
        out.put_u32(self.bitrate_kbps);
        put_bytes16(out, &self.sps);
        put_bytes16(out, &self.pps);
        put_string16(out, &self.firmware);
        if let Some(audio) = &self.audio {
            out.put_u8(audio.codec as u8);
            out.put_u32(audio.sample_rate);
            out.put_u8(audio.channels);
            out.put_u16(audio.pre_skip);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        let name = r.string16("camera.name")?;
        let codec = r.u8_known("camera.codec", |v| (v == 1).then_some(Codec::H264))?;
        let mut info = CameraInfo {
            name,
            codec,
            width: r.u16("camera.width")?,
            height: r.u16("camera.height")?,
            fps_milli: r.u32("camera.fps_milli")?,
            bitrate_kbps: r.u32("camera.bitrate_kbps")?,
            sps: r.bytes16("camera.sps")?,
            pps: r.bytes16("camera.pps")?,
            firmware: r.string16("camera.firmware")?,
            audio: None,
        };
        if !r.is_empty() {
            info.audio = Some(AudioInfo::decode(r)?);
        }
        Ok(info)
    }

    /// Checks the fields a server relies on.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(MessageError::BadName {
                len: self.name.len(),
                max: MAX_NAME_LEN,
            });
        }
        Ok(())
    }
}

impl AudioInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        let codec = r.u8_known("camera.audio.codec", |v| {
            (v == 1).then_some(AudioCodec::Opus)
        })?;
        let sample_rate = r.u32_known("camera.audio.sample_rate", |v| {
            (8_000..=48_000).contains(&v).then_some(v)
        })?;
        let channels = r.u8_known("camera.audio.channels", |v| {
            (1..=2).contains(&v).then_some(v)
        })?;
        Ok(AudioInfo {
            codec,
            sample_rate,
            channels,
            pre_skip: r.u16("camera.audio.pre_skip")?,
        })
    }
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::CameraHello { .. } => T_CAMERA_HELLO,
            Message::ViewerHello { .. } => T_VIEWER_HELLO,
            Message::Welcome { .. } => T_WELCOME,
            Message::Reject { .. } => T_REJECT,
            Message::StreamInfo { .. } => T_STREAM_INFO,
            Message::CameraState { .. } => T_CAMERA_STATE,
            Message::Command { .. } => T_COMMAND,
            Message::CommandAck { .. } => T_COMMAND_ACK,
            Message::PairRequest { .. } => T_PAIR_REQUEST,
            Message::Paired { .. } => T_PAIRED,
            Message::Stored(_) => T_STORED,
            Message::RelayHello { .. } => T_RELAY_HELLO,
            Message::UpdateOffer { .. } => T_UPDATE_OFFER,
            Message::UpdateReport { .. } => T_UPDATE_REPORT,
        }
    }

    /// Appends the length-prefixed message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        out.put_u8(self.kind());
        match self {
            Message::CameraHello { version, info } => {
                out.put_u16(*version);
                info.encode(out);
            }
            Message::ViewerHello { version, camera } => {
                out.put_u16(*version);
                match camera {
                    CameraSelector::Id(id) => {
                        out.put_u8(0);
                        out.put_slice(id);
                    }
                    CameraSelector::Name(name) => {
                        out.put_u8(1);
                        put_string16(out, name);
                    }
                    CameraSelector::FirstOnline => out.put_u8(2),
                }
            }
            Message::Welcome { version, server } => {
                out.put_u16(*version);
                put_string16(out, server);
            }
            Message::Reject { code, reason } => {
                out.put_u16(*code as u16);
                put_string16(out, reason);
            }
            Message::StreamInfo { camera, info } => {
                out.put_slice(camera);
                info.encode(out);
            }
            Message::CameraState { camera, online } => {
                out.put_slice(camera);
                out.put_u8(u8::from(*online));
            }
            Message::Command { id, command } => {
                out.put_u32(*id);
                match command {
                    Command::RequestKeyframe => out.put_u8(0),
                    Command::SetBitrate { kbps } => {
                        out.put_u8(1);
                        out.put_u32(*kbps);
                    }
                    Command::Reboot => out.put_u8(2),
                    Command::Snapshot => out.put_u8(3),
                    Command::SetTier(limit) => {
                        out.put_u8(4);
                        let (mode, rung) = match limit {
                            TierLimit::Auto => (0, 0),
                            TierLimit::Cap(r) => (1, *r),
                            TierLimit::Pin(r) => (2, *r),
                        };
                        out.put_u8(mode);
                        out.put_u8(rung);
                    }
                }
            }
            Message::CommandAck { id, result, detail } => {
                out.put_u32(*id);
                out.put_u8(*result as u8);
                put_string16(out, detail);
            }
            Message::PairRequest {
                version,
                role,
                code,
                name,
            } => {
                out.put_u16(*version);
                out.put_u8(match role {
                    Role::Camera => 0,
                    Role::Viewer => 1,
                    Role::Relay => 2,
                });
                put_string16(out, code);
                put_string16(out, name);
            }
            Message::Paired { name, server } => {
                put_string16(out, name);
                put_string16(out, server);
            }
            Message::Stored(stored) => match stored {
                Stored::LiveThrough { capture_us } => {
                    out.put_u8(0);
                    out.put_u64(*capture_us);
                }
                Stored::Backfill { id } => {
                    out.put_u8(1);
                    out.put_u64(*id);
                }
                Stored::Aux { id } => {
                    out.put_u8(2);
                    out.put_u64(*id);
                }
            },
            Message::RelayHello {
                version,
                camera,
                info,
            } => {
                out.put_u16(*version);
                out.put_slice(camera);
                info.encode(out);
            }
            Message::UpdateOffer { hash, size } => {
                out.put_slice(hash);
                out.put_u64(*size);
            }
            Message::UpdateReport {
                hash,
                phase,
                progress,
                detail,
            } => {
                out.put_slice(hash);
                out.put_u8(*phase as u8);
                out.put_u64(*progress);
                put_string16(out, detail);
            }
        }
        let body_len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&body_len.to_be_bytes());
    }

    /// The length-prefixed message as `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes one complete body (type byte and fields, no length prefix).
    fn decode_body(kind: u8, body: &[u8]) -> Result<Self, FieldError> {
        let mut r = Reader::new(body);
        let msg = match kind {
            T_CAMERA_HELLO => Message::CameraHello {
                version: r.u16("version")?,
                info: CameraInfo::decode(&mut r)?,
            },
            T_VIEWER_HELLO => {
                let version = r.u16("version")?;
                let at = r.offset();
                let camera = match r.u8("selector")? {
                    0 => CameraSelector::Id(r.array("selector.id")?),
                    1 => CameraSelector::Name(r.string16("selector.name")?),
                    2 => CameraSelector::FirstOnline,
                    v => {
                        return Err(FieldError::UnknownValue {
                            field: "selector",
                            offset: at,
                            value: v.into(),
                        })
                    }
                };
                Message::ViewerHello { version, camera }
            }
            T_WELCOME => Message::Welcome {
                version: r.u16("version")?,
                server: r.string16("server")?,
            },
            T_REJECT => {
                let code = r.u16_known("code", RejectCode::from_u16)?;
                Message::Reject {
                    code,
                    reason: r.string16("reason")?,
                }
            }
            T_STREAM_INFO => Message::StreamInfo {
                camera: r.array("camera")?,
                info: CameraInfo::decode(&mut r)?,
            },
            T_CAMERA_STATE => {
                let camera = r.array("camera")?;
                let online = r.u8_known("online", |v| match v {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                })?;
                Message::CameraState { camera, online }
            }
            T_COMMAND => {
                let id = r.u32("id")?;
                let at = r.offset();
                let command = match r.u8("command")? {
                    0 => Command::RequestKeyframe,
                    1 => Command::SetBitrate {
                        kbps: r.u32("command.kbps")?,
                    },
                    2 => Command::Reboot,
                    3 => Command::Snapshot,
                    4 => {
                        let at = r.offset();
                        let mode = r.u8("command.tier_mode")?;
                        let rung = r.u8("command.tier_rung")?;
                        Command::SetTier(match mode {
                            0 => TierLimit::Auto,
                            1 => TierLimit::Cap(rung),
                            2 => TierLimit::Pin(rung),
                            v => {
                                return Err(FieldError::UnknownValue {
                                    field: "command.tier_mode",
                                    offset: at,
                                    value: v.into(),
                                })
                            }
                        })
                    }
                    v => {
                        return Err(FieldError::UnknownValue {
                            field: "command",
                            offset: at,
                            value: v.into(),
                        })
                    }
                };
                Message::Command { id, command }
            }
            T_COMMAND_ACK => {
                let id = r.u32("id")?;
                let result = r.u8_known("result", |v| match v {
                    0 => Some(CommandResult::Ok),
                    1 => Some(CommandResult::Unsupported),
                    2 => Some(CommandResult::Failed),
                    _ => None,
                })?;
                Message::CommandAck {
                    id,
                    result,
                    detail: r.string16("detail")?,
                }
            }
            T_PAIR_REQUEST => {
                let version = r.u16("version")?;
                let role = r.u8_known("role", |v| match v {
                    0 => Some(Role::Camera),
                    1 => Some(Role::Viewer),
                    2 => Some(Role::Relay),
                    _ => None,
                })?;
                Message::PairRequest {
                    version,
                    role,
                    code: r.string16("code")?,
                    name: r.string16("name")?,
                }
            }
            T_PAIRED => Message::Paired {
                name: r.string16("name")?,
                server: r.string16("server")?,
            },
            T_STORED => {
                let at = r.offset();
                let stored = match r.u8("stored.kind")? {
                    0 => Stored::LiveThrough {
                        capture_us: r.u64("stored.id")?,
                    },
                    1 => Stored::Backfill {
                        id: r.u64("stored.id")?,
                    },
                    2 => Stored::Aux {
                        id: r.u64("stored.id")?,
                    },
                    v => {
                        return Err(FieldError::UnknownValue {
                            field: "stored.kind",
                            offset: at,
                            value: v.into(),
                        })
                    }
                };
                Message::Stored(stored)
            }
            T_RELAY_HELLO => Message::RelayHello {
                version: r.u16("version")?,
                camera: r.array("camera")?,
                info: CameraInfo::decode(&mut r)?,
            },
            T_UPDATE_OFFER => Message::UpdateOffer {
                hash: r.array("update.hash")?,
                size: r.u64("update.size")?,
            },
            T_UPDATE_REPORT => {
                let hash = r.array("update.hash")?;
                let phase = r.u8_known("update.phase", UpdatePhase::from_u8)?;
                Message::UpdateReport {
                    hash,
                    phase,
                    progress: r.u64("update.progress")?,
                    detail: r.string16("update.detail")?,
                }
            }
            _ => unreachable_kind(kind)?,
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Unknown kinds are filtered out by the decoder before bodies are parsed;
/// this keeps `decode_body` total without a panic path.
fn unreachable_kind(kind: u8) -> Result<Message, FieldError> {
    Err(FieldError::UnknownValue {
        field: "type",
        offset: 0,
        value: kind.into(),
    })
}

fn known_kind(kind: u8) -> bool {
    (T_CAMERA_HELLO..=T_UPDATE_REPORT).contains(&kind)
}

/// Incremental control-message decoder; same contract as
/// [`crate::FrameDecoder`]: push bytes, pull messages until `Ok(None)`.
#[derive(Debug, Default)]
pub struct MessageDecoder {
    core: LengthPrefixed<MessageError>,
}

impl MessageDecoder {
    /// A decoder at stream offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.core.push(data);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, MessageError> {
        self.core.next(parse_message)
    }

    /// Declares end of stream: fails if a partial message is buffered.
    pub fn finish(&self) -> Result<(), MessageError> {
        self.core
            .finish(|offset, buffered| MessageError::Truncated { offset, buffered })
    }
}

fn parse_message(
    buf: &mut BytesMut,
    offset: u64,
) -> Result<Option<(Message, usize)>, MessageError> {
    let Some(len) = length_prefix(buf) else {
        return Ok(None);
    };
    if len > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLarge {
            offset,
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    if len == 0 {
        return Err(MessageError::Empty { offset });
    }
    let kind = buf[4.min(buf.len() - 1)];
    if buf.len() >= 5 && !known_kind(kind) {
        return Err(MessageError::UnknownType { offset, kind });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(5);
    let body = buf.split_to(len - 1);
    let msg = Message::decode_body(kind, &body).map_err(|source| MessageError::Field {
        offset,
        kind,
        source,
    })?;
    match &msg {
        Message::CameraHello { info, .. } | Message::StreamInfo { info, .. } => info.validate()?,
        _ => {}
    }
    Ok(Some((msg, 4 + len)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn info() -> CameraInfo {
        CameraInfo {
            name: "porch".into(),
            codec: Codec::H264,
            width: 640,
            height: 480,
            fps_milli: 30_000,
            bitrate_kbps: 1500,
            sps: Bytes::from_static(&[0x67, 0x42]),
            pps: Bytes::from_static(&[0x68]),
            firmware: "0.1".into(),
            audio: None,
        }
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Message>, MessageError> {
        let mut d = MessageDecoder::new();
        d.push(bytes);
        d.next_message()
    }

    fn golden(msg: Message, expected_hex: &str) {
        let bytes = msg.to_bytes();
        assert_eq!(hex::encode(&bytes), expected_hex, "{msg:?}");
        assert_eq!(decode_one(&bytes), Ok(Some(msg)));
    }

    #[test]
    fn golden_camera_hello() {
        golden(
            Message::CameraHello {
                version: 1,
                info: info(),
            },
            concat!(
                "00000023",       // body length 35
                "01",             // CameraHello
                "0001",           // version
                "0005706f726368", // name "porch"
                "01",             // codec H.264
                "028001e0",       // 640 x 480
                "00007530",       // 30000 millifps
                "000005dc",       // 1500 kbit/s
                "00026742",       // sps
                "000168",         // pps
                "0003302e31"      // firmware "0.1"
            ),
        );
    }

    #[test]
    fn golden_camera_hello_with_audio() {
        let mut info = info();
        info.audio = Some(AudioInfo {
            codec: AudioCodec::Opus,
            sample_rate: 48_000,
            channels: 1,
            pre_skip: 312,
        });
        golden(
            Message::CameraHello { version: 1, info },
            concat!(
                "0000002b",       // body length 43
                "01",             // CameraHello
                "0001",           // version
                "0005706f726368", // name "porch"
                "01",             // codec H.264
                "028001e0",       // 640 x 480
                "00007530",       // 30000 millifps
                "000005dc",       // 1500 kbit/s
                "00026742",       // sps
                "000168",         // pps
                "0003302e31",     // firmware "0.1"
                "01",             // audio codec Opus
                "0000bb80",       // 48000 Hz
                "01",             // mono
                "0138"            // pre-skip 312
            ),
        );
    }

    #[test]
    fn audio_info_refuses_unknown_codec_and_bad_shape() {
        let mut info = info();
        info.audio = Some(AudioInfo {
            codec: AudioCodec::Opus,
            sample_rate: 48_000,
            channels: 1,
            pre_skip: 0,
        });
        let good = Message::CameraHello { version: 1, info }
            .to_bytes()
            .to_vec();
        let n = good.len();
        // codec at n-8, rate n-7..n-3, channels n-3, pre-skip n-2..n
        for (at, value, field) in [
            (n - 8, 9u8, "camera.audio.codec"),
            (n - 3, 3, "camera.audio.channels"),
            (n - 3, 0, "camera.audio.channels"),
            (n - 7, 0xff, "camera.audio.sample_rate"),
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            match decode_one(&bad) {
                Err(MessageError::Field {
                    source: FieldError::UnknownValue { field: f, .. },
                    ..
                }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        // A truncated audio description is an error, not a silent "no audio".
        let mut cut = good[..n - 1].to_vec();
        cut[3] -= 1;
        assert!(decode_one(&cut).is_err());
    }

    #[test]
    fn golden_viewer_hellos() {
        golden(
            Message::ViewerHello {
                version: 1,
                camera: CameraSelector::Name("porch".into()),
            },
            "0000000b020001010005706f726368",
        );
        golden(
            Message::ViewerHello {
                version: 1,
                camera: CameraSelector::FirstOnline,
            },
            "0000000402000102",
        );
        golden(
            Message::ViewerHello {
                version: 1,
                camera: CameraSelector::Id([0xab; 32]),
            },
            &format!("0000002402000100{}", "ab".repeat(32)),
        );
    }

    #[test]
    fn golden_welcome_reject() {
        golden(
            Message::Welcome {
                version: 1,
                server: "box".into(),
            },
            "000000080300010003626f78",
        );
        golden(
            Message::Reject {
                code: RejectCode::NotAllowed,
                reason: "no".into(),
            },
            "0000000704000300026e6f",
        );
    }

    #[test]
    fn golden_stream_info_and_state() {
        golden(
            Message::StreamInfo {
                camera: [0x11; 32],
                info: info(),
            },
            &format!(
                "0000004105{}0005706f72636801028001e000007530000005dc000267420001680003302e31",
                "11".repeat(32)
            ),
        );
        golden(
            Message::CameraState {
                camera: [0x22; 32],
                online: true,
            },
            &format!("0000002206{}01", "22".repeat(32)),
        );
    }

    #[test]
    fn golden_commands() {
        golden(
            Message::Command {
                id: 7,
                command: Command::SetBitrate { kbps: 800 },
            },
            "0000000a07000000070100000320",
        );
        golden(
            Message::Command {
                id: 8,
                command: Command::RequestKeyframe,
            },
            "00000006070000000800",
        );
        golden(
            Message::CommandAck {
                id: 7,
                result: CommandResult::Unsupported,
                detail: "x".into(),
            },
            "00000009080000000701000178",
        );
    }

    #[test]
    fn golden_pairing_and_new_commands() {
        golden(
            Message::PairRequest {
                version: 1,
                role: Role::Camera,
                code: "AB".into(),
                name: "porch".into(),
            },
            concat!(
                "0000000f",       // body length 15
                "09",             // PairRequest
                "0001",           // version
                "00",             // role camera
                "00024142",       // code "AB"
                "0005706f726368"  // name "porch"
            ),
        );
        golden(
            Message::Paired {
                name: "p".into(),
                server: "s".into(),
            },
            "000000070a000170000173",
        );
        golden(
            Message::Reject {
                code: RejectCode::RateLimited,
                reason: "x".into(),
            },
            "0000000604000a000178",
        );
        golden(
            Message::Command {
                id: 1,
                command: Command::Reboot,
            },
            "00000006070000000102",
        );
        golden(
            Message::Command {
                id: 1,
                command: Command::Snapshot,
            },
            "00000006070000000103",
        );
    }

    #[test]
    fn golden_tier_limits() {
        golden(
            Message::Command {
                id: 2,
                command: Command::SetTier(TierLimit::Cap(1)),
            },
            "000000080700000002040101",
        );
        golden(
            Message::Command {
                id: 2,
                command: Command::SetTier(TierLimit::Auto),
            },
            "000000080700000002040000",
        );
        // An unknown mode is an error naming the field, not a panic.
        let bad = hex::decode("000000080700000002040300").expect("hex");
        assert!(decode_one(&bad).is_err());
    }

    #[test]
    fn golden_update_messages() {
        let hash = [0x11u8; 32];
        golden(
            Message::UpdateOffer { hash, size: 0x0203 },
            &format!("000000290d{}0000000000000203", "11".repeat(32)),
        );
        golden(
            Message::UpdateReport {
                hash,
                phase: UpdatePhase::Installing,
                progress: 40,
                detail: "ok".into(),
            },
            &format!(
                "0000002e0e{}0300000000000000280002{}",
                "11".repeat(32),
                hex::encode("ok")
            ),
        );
        // A phase the decoder does not know is named.
        let mut bad = Message::UpdateReport {
            hash,
            phase: UpdatePhase::Idle,
            progress: 0,
            detail: String::new(),
        }
        .to_bytes()
        .to_vec();
        bad[5 + 32] = 42;
        assert!(matches!(
            decode_one(&bad),
            Err(MessageError::Field {
                source: FieldError::UnknownValue {
                    field: "update.phase",
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn golden_stored() {
        golden(
            Message::Stored(Stored::LiveThrough { capture_us: 0x0102 }),
            "0000000a0b000000000000000102",
        );
        golden(
            Message::Stored(Stored::Backfill { id: 3 }),
            "0000000a0b010000000000000003",
        );
        golden(
            Message::Stored(Stored::Aux { id: 4 }),
            "0000000a0b020000000000000004",
        );
        assert!(matches!(
            decode_one(&hex::decode("0000000a0b030000000000000003").expect("hex")),
            Err(MessageError::Field {
                source: FieldError::UnknownValue {
                    field: "stored.kind",
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn oversized_message_refused_before_body() {
        let err = decode_one(&((MAX_MESSAGE_LEN as u32) + 1).to_be_bytes());
        assert!(matches!(err, Err(MessageError::TooLarge { offset: 0, .. })));
    }

    #[test]
    fn unknown_type_refused_at_once() {
        assert_eq!(
            decode_one(&[0, 0, 0, 9, 0x7f]),
            Err(MessageError::UnknownType {
                offset: 0,
                kind: 0x7f
            })
        );
    }

    #[test]
    fn truncated_field_names_the_field() {
        // A Welcome whose server string claims 10 bytes but carries 3.
        let err = decode_one(&hex::decode("00000008030001000a626f78").expect("hex"));
        match err {
            Err(MessageError::Field {
                kind: 0x03,
                source:
                    FieldError::Truncated {
                        field: "server", ..
                    },
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_and_bad_names_are_errors() {
        let mut bytes = Message::Welcome {
            version: 1,
            server: "a".into(),
        }
        .to_bytes()
        .to_vec();
        bytes[3] += 1;
        bytes.push(0);
        assert!(matches!(
            decode_one(&bytes),
            Err(MessageError::Field {
                source: FieldError::Trailing { extra: 1, .. },
                ..
            })
        ));
        let mut bad = info();
        bad.name = String::new();
        let bytes = Message::CameraHello {
            version: 1,
            info: bad,
        }
        .to_bytes();
        assert!(matches!(
            decode_one(&bytes),
            Err(MessageError::BadName { len: 0, .. })
        ));
    }

    fn arb_info() -> impl Strategy<Value = CameraInfo> {
        (
            "[a-z0-9-]{1,64}",
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..16),
            "\\PC{0,16}",
            proptest::option::of((8_000u32..=48_000, 1u8..=2, any::<u16>())),
        )
            .prop_map(
                |(name, width, height, fps_milli, bitrate_kbps, sps, pps, firmware, audio)| {
                    CameraInfo {
                        name,
                        codec: Codec::H264,
                        width,
                        height,
                        fps_milli,
                        bitrate_kbps,
                        sps: sps.into(),
                        pps: pps.into(),
                        firmware,
                        audio: audio.map(|(sample_rate, channels, pre_skip)| AudioInfo {
                            codec: AudioCodec::Opus,
                            sample_rate,
                            channels,
                            pre_skip,
                        }),
                    }
                },
            )
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), arb_info())
                .prop_map(|(version, info)| Message::CameraHello { version, info }),
            (any::<u16>(), any::<[u8; 32]>()).prop_map(|(version, id)| Message::ViewerHello {
                version,
                camera: CameraSelector::Id(id)
            }),
            (any::<u16>(), "\\PC{0,32}").prop_map(|(version, name)| Message::ViewerHello {
                version,
                camera: CameraSelector::Name(name)
            }),
            (any::<u16>(), "\\PC{0,32}")
                .prop_map(|(version, server)| Message::Welcome { version, server }),
            (1u16..=12, "\\PC{0,64}").prop_map(|(c, reason)| Message::Reject {
                code: RejectCode::from_u16(c).expect("in range"),
                reason
            }),
            (any::<[u8; 32]>(), arb_info())
                .prop_map(|(camera, info)| Message::StreamInfo { camera, info }),
            (any::<[u8; 32]>(), any::<bool>())
                .prop_map(|(camera, online)| Message::CameraState { camera, online }),
            (any::<u32>(), any::<u32>()).prop_map(|(id, kbps)| Message::Command {
                id,
                command: Command::SetBitrate { kbps }
            }),
            (any::<u32>(), 0u8..7, any::<u8>()).prop_map(|(id, k, rung)| Message::Command {
                id,
                command: match k {
                    0 => Command::RequestKeyframe,
                    1 => Command::Reboot,
                    2 => Command::Snapshot,
                    3 => Command::SetTier(TierLimit::Auto),
                    4 => Command::SetTier(TierLimit::Cap(rung)),
                    5 => Command::SetTier(TierLimit::Pin(rung)),
                    _ => Command::SetBitrate { kbps: id },
                }
            }),
            (any::<u16>(), any::<bool>(), "\\PC{0,32}", "\\PC{0,32}").prop_map(
                |(version, camera, code, name)| Message::PairRequest {
                    version,
                    role: if camera { Role::Camera } else { Role::Viewer },
                    code,
                    name
                }
            ),
            ("\\PC{0,32}", "\\PC{0,32}")
                .prop_map(|(name, server)| Message::Paired { name, server }),
            (any::<u32>(), "\\PC{0,32}").prop_map(|(id, detail)| Message::CommandAck {
                id,
                result: CommandResult::Failed,
                detail
            }),
            any::<u64>().prop_map(|capture_us| Message::Stored(Stored::LiveThrough { capture_us })),
            any::<u64>().prop_map(|id| Message::Stored(Stored::Backfill { id })),
            any::<u64>().prop_map(|id| Message::Stored(Stored::Aux { id })),
            (any::<u16>(), any::<[u8; 32]>(), arb_info()).prop_map(|(version, camera, info)| {
                Message::RelayHello {
                    version,
                    camera,
                    info,
                }
            }),
            (any::<[u8; 32]>(), any::<u64>())
                .prop_map(|(hash, size)| Message::UpdateOffer { hash, size }),
            (any::<[u8; 32]>(), 0u8..10, any::<u64>(), "\\PC{0,32}").prop_map(
                |(hash, phase, progress, detail)| Message::UpdateReport {
                    hash,
                    phase: UpdatePhase::from_u8(phase).expect("in range"),
                    progress,
                    detail
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_any_split(msgs in proptest::collection::vec(arb_message(), 1..6), split in 1usize..50) {
            let mut wire = BytesMut::new();
            for m in &msgs {
                m.encode(&mut wire);
            }
            let mut d = MessageDecoder::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk);
                while let Some(m) = d.next_message().expect("valid") {
                    out.push(m);
                }
            }
            prop_assert!(d.finish().is_ok());
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut d = MessageDecoder::new();
            d.push(&data);
            for _ in 0..data.len() + 1 {
                match d.next_message() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
