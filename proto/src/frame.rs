//! Media frames and their incremental decoder.
//!
//! # Wire format
//! ```text
//! offset size field
//!      0    4 payload length, u32 BE, at most MAX_PAYLOAD (2 MiB)
//!      4    1 channel: 0 video, 1 audio, 2 telemetry, 3 event, 4 backfill
//!      5    1 flags: bit 0 keyframe, bit 1 codec config; other bits must be 0
//!      6    8 capture timestamp, µs on the camera's clock, u64 BE
//!     14    8 sequence number, per channel, u64 BE
//!     22    n payload
//! ```
//! The length comes first so a receiver can refuse an oversized frame after
//! reading four bytes, before it allocates anything.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire::{length_prefix, LengthPrefixed};

/// Largest payload a frame may carry (2 MiB). A 1080p H.264 keyframe at high
/// quality is a few hundred KiB, so this leaves room without letting a peer
/// make us buffer without bound.
pub const MAX_PAYLOAD: usize = 2 * 1024 * 1024;

/// Size of the fixed frame header.
pub const FRAME_HEADER_LEN: usize = 22;

/// Which logical channel a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// H.264 access units in Annex-B form.
    Video = 0,
    /// Encoded audio packets.
    Audio = 1,
    /// JSON telemetry samples.
    Telemetry = 2,
    /// JSON events (motion, GPIO, modem state changes).
    Event = 3,
    /// H.264 access units the camera recorded while it could not reach the
    /// server, uploaded later behind live video (store-and-forward). Same
    /// group rules as [`Channel::Video`]; capture times are the originals.
    Backfill = 4,
}

impl Channel {
    /// All channels, in wire order.
    pub const ALL: [Channel; 5] = [
        Channel::Video,
        Channel::Audio,
        Channel::Telemetry,
        Channel::Event,
        Channel::Backfill,
    ];

    /// Whether frames of this channel are H.264 groups of pictures (live or
    /// backfilled): each stream one GOP, keyframe first, consecutive sequences.
    pub fn is_video(self) -> bool {
        matches!(self, Channel::Video | Channel::Backfill)
    }

    /// The channel for a wire byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Lower-case name used in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Video => "video",
            Channel::Audio => "audio",
            Channel::Telemetry => "telemetry",
            Channel::Event => "event",
            Channel::Backfill => "backfill",
        }
    }
}

/// Per-frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// The frame starts a group of pictures (an IDR access unit).
    pub const KEYFRAME: FrameFlags = FrameFlags(0b01);
    /// The frame carries codec configuration (SPS/PPS).
    pub const CODEC_CONFIG: FrameFlags = FrameFlags(0b10);
    const KNOWN: u8 = 0b11;

    /// No flags set.
    pub const fn empty() -> Self {
        FrameFlags(0)
    }

    /// Flags from a wire byte, or `None` if an unknown bit is set.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::KNOWN == 0).then_some(FrameFlags(bits))
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag in `other` is set.
    pub fn contains(self, other: FrameFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for FrameFlags {
    type Output = FrameFlags;
    fn bitor(self, rhs: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | rhs.0)
    }
}

/// One media frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The channel it belongs to.
    pub channel: Channel,
    /// Keyframe / codec-config flags.
    pub flags: FrameFlags,
    /// Capture time in microseconds on the camera's clock.
    pub capture_us: u64,
    /// Per-channel sequence number, starting anywhere, increasing by one.
    pub sequence: u64,
    /// The payload (Annex-B access unit, audio packet, JSON document).
    pub payload: Bytes,
}

impl Frame {
    /// Whether this frame starts a group of pictures.
    pub fn is_keyframe(&self) -> bool {
        self.flags.contains(FrameFlags::KEYFRAME)
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }

    /// Appends the header to `out`; the payload is written separately so a
    /// sender can hand both to QUIC without copying the payload.
    pub fn encode_header(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(FrameError::PayloadTooLarge {
                len: self.payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        out.reserve(FRAME_HEADER_LEN);
        out.put_u32(self.payload.len() as u32);
        out.put_u8(self.channel as u8);
        out.put_u8(self.flags.bits());
        out.put_u64(self.capture_us);
        out.put_u64(self.sequence);
        Ok(())
    }

    /// Header and payload in one buffer.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_header(out)?;
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Header and payload as one `Bytes`.
    pub fn to_bytes(&self) -> Result<Bytes, FrameError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared payload length exceeds [`MAX_PAYLOAD`]; refused before allocating.
    #[error("frame at stream offset {offset}: payload length {len} exceeds the {max}-byte limit")]
    TooLarge {
        /// Stream offset of the frame header.
        offset: u64,
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A payload handed to the encoder exceeds [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The channel byte is not a known channel.
    #[error("frame at stream offset {offset}: unknown channel {value}")]
    UnknownChannel {
        /// Stream offset of the frame header.
        offset: u64,
        /// The channel byte.
        value: u8,
    },
    /// The flags byte has a bit this version does not define.
    #[error("frame at stream offset {offset}: unknown flag bits {value:#04x}")]
    UnknownFlags {
        /// Stream offset of the frame header.
        offset: u64,
        /// The flags byte.
        value: u8,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame at offset {offset} ({buffered} bytes of it received)")]
    Truncated {
        /// Stream offset of the incomplete frame.
        offset: u64,
        /// Bytes of it that arrived.
        buffered: usize,
    },
}

/// Incremental frame decoder: push bytes as they arrive, pull whole frames.
///
/// Contract: call [`FrameDecoder::push`] with each chunk read from the
/// stream, then [`FrameDecoder::next_frame`] until it returns `Ok(None)`
/// ("need more bytes"). At end of stream call [`FrameDecoder::finish`], which
/// fails if a partial frame is buffered. After an error the decoder is
/// poisoned: the stream is garbage and must be dropped.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    core: LengthPrefixed<FrameError>,
}

impl FrameDecoder {
    /// A decoder at stream offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.core.push(data);
    }

    /// Bytes buffered and not yet returned as frames. Never more than one
    /// frame's worth plus the last pushed chunk, because [`Self::next_frame`]
    /// refuses an oversized header before its payload is buffered.
    pub fn buffered(&self) -> usize {
        self.core.buffered()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.core.next(parse_frame)
    }

    /// Declares end of stream: fails if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        self.core
            .finish(|offset, buffered| FrameError::Truncated { offset, buffered })
    }
}

fn parse_frame(buf: &mut BytesMut, offset: u64) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(len) = length_prefix(buf) else {
        return Ok(None);
    };
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge {
            offset,
            len,
            max: MAX_PAYLOAD,
        });
    }
    if buf.len() < 6 {
        return Ok(None);
    }
    let channel = Channel::from_u8(buf[4]).ok_or(FrameError::UnknownChannel {
        offset,
        value: buf[4],
    })?;
    let flags = FrameFlags::from_bits(buf[5]).ok_or(FrameError::UnknownFlags {
        offset,
        value: buf[5],
    })?;
    if buf.len() < FRAME_HEADER_LEN + len {
        buf.reserve(FRAME_HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let mut header = buf.split_to(FRAME_HEADER_LEN);
    header.advance(6);
    let capture_us = header.get_u64();
    let sequence = header.get_u64();
    let payload = buf.split_to(len).freeze();
    let frame = Frame {
        channel,
        flags,
        capture_us,
        sequence,
        payload,
    };
    Ok(Some((frame, FRAME_HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame {
            channel: Channel::Video,
            flags: FrameFlags::KEYFRAME | FrameFlags::CODEC_CONFIG,
            capture_us: 0x0102_0304_0506_0708,
            sequence: 42,
            payload: Bytes::from_static(&[0, 0, 0, 1, 0x65, 0xAA]),
        }
    }

    #[test]
    fn golden_video_keyframe() {
        let bytes = sample().to_bytes().expect("encodes");
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "00000006",         // payload length
                "00",               // channel: video
                "03",               // flags: keyframe | codec config
                "0102030405060708", // capture µs
                "000000000000002a", // sequence 42
                "0000000165aa"      // payload
            )
        );
    }

    #[test]
    fn golden_telemetry_frame() {
        let frame = Frame {
            channel: Channel::Telemetry,
            flags: FrameFlags::empty(),
            capture_us: 1,
            sequence: 7,
            payload: Bytes::from_static(b"{}"),
        };
        assert_eq!(
            hex::encode(frame.to_bytes().expect("encodes")),
            "000000020200000000000000000100000000000000077b7d"
        );
    }

    #[test]
    fn decodes_byte_by_byte() {
        let frames = [sample(), sample()];
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire).expect("encodes");
        }
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            dec.push(&[*b]);
            while let Some(f) = dec.next_frame().expect("valid") {
                out.push(f);
            }
        }
        dec.finish().expect("clean end");
        assert_eq!(out, frames);
    }

    #[test]
    fn oversized_length_is_refused_before_payload_arrives() {
        let mut dec = FrameDecoder::new();
        dec.push(&((MAX_PAYLOAD as u32) + 1).to_be_bytes());
        match dec.next_frame() {
            Err(FrameError::TooLarge { offset: 0, len, .. }) => assert_eq!(len, MAX_PAYLOAD + 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(dec.buffered(), 0, "garbage is not kept");
        assert!(dec.next_frame().is_err(), "decoder stays poisoned");
    }

    #[test]
    fn max_payload_is_accepted() {
        let mut frame = sample();
        frame.payload = Bytes::from(vec![7u8; MAX_PAYLOAD]);
        let mut dec = FrameDecoder::new();
        dec.push(&frame.to_bytes().expect("encodes"));
        assert_eq!(dec.next_frame().expect("valid"), Some(frame));
    }

    #[test]
    fn encoder_refuses_oversized_payload() {
        let mut frame = sample();
        frame.payload = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
        assert!(matches!(
            frame.to_bytes(),
            Err(FrameError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_channel_and_flags_are_typed_errors() {
        let mut wire = sample().to_bytes().expect("encodes").to_vec();
        wire[4] = 9;
        let mut dec = FrameDecoder::new();
        dec.push(&wire);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::UnknownChannel {
                offset: 0,
                value: 9
            })
        );
        let mut wire = sample().to_bytes().expect("encodes").to_vec();
        wire[5] = 0x80;
        let mut dec = FrameDecoder::new();
        dec.push(&wire);
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::UnknownFlags { value: 0x80, .. })
        ));
    }

    #[test]
    fn truncated_stream_is_reported_with_offset() {
        let first = sample().to_bytes().expect("encodes");
        let mut dec = FrameDecoder::new();
        dec.push(&first);
        dec.push(&first[..10]);
        assert!(dec.next_frame().expect("first is whole").is_some());
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                offset: first.len() as u64,
                buffered: 10
            })
        );
    }

    pub(crate) fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            0u8..4,
            0u8..4,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(c, f, capture_us, sequence, payload)| Frame {
                channel: Channel::from_u8(c).expect("in range"),
                flags: FrameFlags::from_bits(f).expect("known bits"),
                capture_us,
                sequence,
                payload: Bytes::from(payload),
            })
    }

    proptest! {
        #[test]
        fn round_trip_any_split(frames in proptest::collection::vec(arb_frame(), 1..8), split in 1usize..97) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire).expect("encodes");
            }
            let mut dec = FrameDecoder::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                dec.push(chunk);
                while let Some(f) = dec.next_frame().expect("valid") {
                    out.push(f);
                }
            }
            prop_assert!(dec.finish().is_ok());
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), split in 1usize..64) {
            let mut dec = FrameDecoder::new();
            for chunk in data.chunks(split) {
                dec.push(chunk);
                while let Ok(Some(f)) = dec.next_frame() {
                    prop_assert!(f.payload.len() <= MAX_PAYLOAD);
                }
            }
            let _ = dec.finish();
        }
    }
}
