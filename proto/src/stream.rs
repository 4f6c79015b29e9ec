//! Unidirectional media streams: their header and the receive state machine.
//!
//! # Wire format
//! ```text
//! offset size field
//!      0    1 magic 0x4B ('K'), so a stray stream is refused at its first byte
//!      1    1 channel the stream carries (see crate::Channel)
//!      2    8 group id, u64 BE: for video the GOP number (newer = larger);
//!             for backfill the camera's backlog record id (the server
//!             acknowledges it with `Message::Stored` once recorded);
//!             0 for the long-lived audio/telemetry/event streams; on a
//!             telemetry or event stream from a relay, a nonzero id marks a
//!             batch of rows recorded at the origin, sent again after an
//!             outage (frame sequence = the origin's row id; acknowledged
//!             with `Stored::Aux`)
//!     10    … frames (crate::frame), until FIN or reset
//! ```
//! A video stream carries exactly one group of pictures: its first frame is a
//! keyframe and no other frame in it is, and its sequence numbers increase by
//! exactly one (a gap inside a GOP would break decoding). A backfill stream
//! (channel 4) follows the same rules: it is one GOP recorded while offline;
//! after its video frames it may carry the audio packets captured during the
//! GOP (frames on channel 1, audio, with strictly increasing sequence
//! numbers of their own), and no video after them. On the long-lived
//! audio, telemetry and event streams sequence numbers strictly increase; gaps
//! there are frames a sender dropped for a slow receiver. A sender abandons an old group with a stream reset; the
//! receiver treats a reset as "skip the rest of that group", not as an error.

use bytes::{BufMut, BytesMut};

use crate::frame::{Channel, Frame, FrameDecoder, FrameError};

/// Size of the stream header.
pub const STREAM_HEADER_LEN: usize = 10;

const MAGIC: u8 = 0x4B;

/// The first bytes of every unidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// What the stream carries.
    pub channel: Channel,
    /// GOP number for video, backlog record id for backfill, a relay's
    /// batch id for recorded telemetry/events sent again; 0 otherwise.
    pub group: u64,
}

impl StreamHeader {
    /// The encoded header.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(MAGIC);
        out.put_u8(self.channel as u8);
        out.put_u64(self.group);
    }

    /// The encoded header as a fixed array.
    pub fn to_array(&self) -> [u8; STREAM_HEADER_LEN] {
        let mut a = [0u8; STREAM_HEADER_LEN];
        a[0] = MAGIC;
        a[1] = self.channel as u8;
        a[2..].copy_from_slice(&self.group.to_be_bytes());
        a
    }

    /// Parses a complete header.
    pub fn decode(bytes: &[u8; STREAM_HEADER_LEN]) -> Result<Self, StreamError> {
        if bytes[0] != MAGIC {
            return Err(StreamError::BadMagic { found: bytes[0] });
        }
        let channel =
            Channel::from_u8(bytes[1]).ok_or(StreamError::UnknownChannel { value: bytes[1] })?;
        let mut g = [0u8; 8];
        g.copy_from_slice(&bytes[2..]);
        Ok(StreamHeader {
            channel,
            group: u64::from_be_bytes(g),
        })
    }
}

/// Why a media stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The first byte is not the stream magic.
    #[error("stream does not start with the Kodama magic byte 0x4b (found {found:#04x})")]
    BadMagic {
        /// The byte found.
        found: u8,
    },
    /// The header names an unknown channel.
    #[error("stream header names unknown channel {value}")]
    UnknownChannel {
        /// The channel byte.
        value: u8,
    },
    /// A frame could not be decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame's channel differs from the stream's.
    #[error("{found} frame (sequence {sequence}) on a {expected} stream")]
    ChannelMismatch {
        /// The stream's channel.
        expected: &'static str,
        /// The frame's channel.
        found: &'static str,
        /// The frame's sequence number.
        sequence: u64,
    },
    /// A video stream's first frame is not a keyframe, or a later one is.
    #[error("video group {group}: frame {index} (sequence {sequence}) {problem}")]
    BadGroup {
        /// Group id from the header.
        group: u64,
        /// Index of the frame within the group.
        index: u64,
        /// Its sequence number.
        sequence: u64,
        /// What is wrong.
        problem: &'static str,
    },
    /// Sequence numbers go backwards, or skip inside a video group.
    #[error("{channel} sequence went from {previous} to {found} within one stream")]
    SequenceGap {
        /// The channel.
        channel: &'static str,
        /// The previous frame's sequence.
        previous: u64,
        /// This frame's sequence.
        found: u64,
    },
    /// The stream ended before its header was complete.
    #[error("stream ended after {received} of {STREAM_HEADER_LEN} header bytes")]
    TruncatedHeader {
        /// Bytes received.
        received: usize,
    },
}

/// What [`GroupReceiver::poll`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The header arrived.
    Header(StreamHeader),
    /// A validated frame.
    Frame(Frame),
}

/// Receive state machine for one unidirectional media stream.
///
/// Push bytes as they arrive; poll events until `Ok(None)`; call
/// [`GroupReceiver::finish`] at FIN. Any error means the peer is broken or
/// hostile: the caller drops the stream (and, per policy, the connection).
#[derive(Debug, Default)]
pub struct GroupReceiver {
    header_buf: Vec<u8>,
    header: Option<StreamHeader>,
    header_reported: bool,
    frames: FrameDecoder,
    received: u64,
    last_sequence: Option<u64>,
    /// On a backfill stream: the last audio packet's sequence.
    last_audio_sequence: Option<u64>,
}

impl GroupReceiver {
    /// A receiver for a fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header, once it has arrived.
    pub fn header(&self) -> Option<StreamHeader> {
        self.header
    }

    /// Appends received bytes.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.header.is_none() && self.header_buf.len() < STREAM_HEADER_LEN {
            let want = STREAM_HEADER_LEN - self.header_buf.len();
            let take = want.min(data.len());
            self.header_buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if !data.is_empty() {
            self.frames.push(data);
        }
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        let header = match self.header {
            Some(h) => h,
            None => {
                let Ok(raw) = <[u8; STREAM_HEADER_LEN]>::try_from(self.header_buf.as_slice())
                else {
                    if let Some(&b) = self.header_buf.first() {
                        if b != MAGIC {
                            return Err(StreamError::BadMagic { found: b });
                        }
                    }
                    return Ok(None);
                };
                let h = StreamHeader::decode(&raw)?;
                self.header = Some(h);
                h
            }
        };
        if !self.header_reported {
            self.header_reported = true;
            return Ok(Some(StreamEvent::Header(header)));
        }
        let Some(frame) = self.frames.next_frame()? else {
            return Ok(None);
        };
        self.check(&header, &frame)?;
        self.received += 1;
        if frame.channel == header.channel {
            self.last_sequence = Some(frame.sequence);
        } else {
            self.last_audio_sequence = Some(frame.sequence);
        }
        Ok(Some(StreamEvent::Frame(frame)))
    }

    fn check(&self, header: &StreamHeader, frame: &Frame) -> Result<(), StreamError> {
        let backfill_audio = header.channel == Channel::Backfill && frame.channel == Channel::Audio;
        if frame.channel != header.channel && !backfill_audio {
            return Err(StreamError::ChannelMismatch {
                expected: header.channel.name(),
                found: frame.channel.name(),
                sequence: frame.sequence,
            });
        }
        if backfill_audio {
            // The GOP's audio follows its video.
            if self.received == 0 {
                return Err(StreamError::BadGroup {
                    group: header.group,
                    index: 0,
                    sequence: frame.sequence,
                    problem: "is audio before the group's keyframe",
                });
            }
            if let Some(previous) = self.last_audio_sequence {
                if frame.sequence <= previous {
                    return Err(StreamError::SequenceGap {
                        channel: Channel::Audio.name(),
                        previous,
                        found: frame.sequence,
                    });
                }
            }
            return Ok(());
        }
        if self.last_audio_sequence.is_some() {
            return Err(StreamError::BadGroup {
                group: header.group,
                index: self.received,
                sequence: frame.sequence,
                problem: "is video after the group's audio",
            });
        }
        if header.channel.is_video() {
            let first = self.received == 0;
            if first != frame.is_keyframe() {
                return Err(StreamError::BadGroup {
                    group: header.group,
                    index: self.received,
                    sequence: frame.sequence,
                    problem: if first {
                        "starts a group but is not a keyframe"
                    } else {
                        "is a keyframe inside a group"
                    },
                });
            }
        }
        if let Some(previous) = self.last_sequence {
            let in_order = if header.channel.is_video() {
                previous.checked_add(1) == Some(frame.sequence)
            } else {
                frame.sequence > previous
            };
            if !in_order {
                return Err(StreamError::SequenceGap {
                    channel: header.channel.name(),
                    previous,
                    found: frame.sequence,
                });
            }
        }
        Ok(())
    }

    /// Declares FIN: fails if the header or a frame is incomplete.
    pub fn finish(&self) -> Result<(), StreamError> {
        if self.header.is_none() {
            return Err(StreamError::TruncatedHeader {
                received: self.header_buf.len(),
            });
        }
        Ok(self.frames.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameFlags;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn video(seq: u64, key: bool) -> Frame {
        Frame {
            channel: Channel::Video,
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::empty()
            },
            capture_us: seq * 33_333,
            sequence: seq,
            payload: Bytes::from(vec![seq as u8; 5]),
        }
    }

    fn stream(header: StreamHeader, frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        header.encode(&mut out);
        for f in frames {
            f.encode(&mut out).expect("encodes");
        }
        out.to_vec()
    }

    /// The frames a receiver yields when fed `wire` in `split`-byte pieces,
    /// and whether the stream then ended whole.
    fn receive_in_pieces(wire: &[u8], split: usize) -> (Vec<Frame>, bool) {
        let mut rx = GroupReceiver::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(split) {
            rx.push(chunk);
            for e in drain(&mut rx).expect("valid") {
                if let StreamEvent::Frame(f) = e {
                    got.push(f);
                }
            }
        }
        (got, rx.finish().is_ok())
    }

    fn drain(rx: &mut GroupReceiver) -> Result<Vec<StreamEvent>, StreamError> {
        let mut out = Vec::new();
        while let Some(e) = rx.poll()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn golden_header() {
        let h = StreamHeader {
            channel: Channel::Video,
            group: 258,
        };
        assert_eq!(hex::encode(h.to_array()), "4b000000000000000102");
        assert_eq!(StreamHeader::decode(&h.to_array()), Ok(h));
    }

    #[test]
    fn golden_backfill_header_and_group_rules() {
        let h = StreamHeader {
            channel: Channel::Backfill,
            group: 7,
        };
        assert_eq!(hex::encode(h.to_array()), "4b040000000000000007");
        let backfill = |seq: u64, key: bool| Frame {
            channel: Channel::Backfill,
            ..video(seq, key)
        };
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[backfill(5, true), backfill(6, false)]));
        assert_eq!(drain(&mut rx).expect("valid").len(), 3);
        // A backfilled GOP obeys the video rules: keyframe first, no gaps.
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[backfill(5, true), backfill(7, false)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::SequenceGap { .. })
        ));
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[backfill(5, false)]));
        assert!(matches!(drain(&mut rx), Err(StreamError::BadGroup { .. })));
        // Live frames on a backfill stream are refused.
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[video(5, true)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::ChannelMismatch { .. })
        ));
    }

    #[test]
    fn a_backfilled_gop_carries_its_audio_after_its_video() {
        let h = StreamHeader {
            channel: Channel::Backfill,
            group: 7,
        };
        let backfill = |seq: u64, key: bool| Frame {
            channel: Channel::Backfill,
            ..video(seq, key)
        };
        let audio = |seq: u64| Frame {
            channel: Channel::Audio,
            flags: FrameFlags::empty(),
            capture_us: seq * 20_000,
            sequence: seq,
            payload: Bytes::from_static(&[0xf8, 1, 2]),
        };
        let run = |frames: &[Frame]| {
            let mut rx = GroupReceiver::new();
            rx.push(&stream(h, frames));
            drain(&mut rx)
        };
        // Audio sequences are their own and may skip (dropped packets).
        let ok = run(&[
            backfill(5, true),
            backfill(6, false),
            audio(900),
            audio(902),
        ]);
        assert_eq!(ok.expect("valid").len(), 5);
        assert!(matches!(
            run(&[audio(900), backfill(5, true)]),
            Err(StreamError::BadGroup { index: 0, .. })
        ));
        assert!(matches!(
            run(&[backfill(5, true), audio(900), backfill(6, false)]),
            Err(StreamError::BadGroup { index: 2, .. })
        ));
        assert!(matches!(
            run(&[backfill(5, true), audio(900), audio(900)]),
            Err(StreamError::SequenceGap { .. })
        ));
        // Only a backfill stream carries audio inside a group.
        let live = StreamHeader {
            channel: Channel::Video,
            group: 7,
        };
        let mut rx = GroupReceiver::new();
        rx.push(&stream(live, &[video(5, true), audio(900)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::ChannelMismatch { .. })
        ));
    }

    #[test]
    fn accepts_a_group() {
        let h = StreamHeader {
            channel: Channel::Video,
            group: 3,
        };
        let frames = [video(90, true), video(91, false), video(92, false)];
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &frames));
        let events = drain(&mut rx).expect("valid");
        assert_eq!(events[0], StreamEvent::Header(h));
        assert_eq!(events.len(), 4);
        rx.finish().expect("complete");
    }

    #[test]
    fn refuses_group_without_leading_keyframe() {
        let h = StreamHeader {
            channel: Channel::Video,
            group: 1,
        };
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[video(1, false)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::BadGroup { index: 0, .. })
        ));
    }

    #[test]
    fn refuses_second_keyframe_and_gaps_and_wrong_channel() {
        let h = StreamHeader {
            channel: Channel::Video,
            group: 1,
        };
        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[video(1, true), video(2, true)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::BadGroup { index: 1, .. })
        ));

        let mut rx = GroupReceiver::new();
        rx.push(&stream(h, &[video(1, true), video(3, false)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::SequenceGap {
                previous: 1,
                found: 3,
                ..
            })
        ));

        let t = StreamHeader {
            channel: Channel::Telemetry,
            group: 0,
        };
        let telemetry = |seq: u64| Frame {
            channel: Channel::Telemetry,
            flags: FrameFlags::empty(),
            capture_us: seq,
            sequence: seq,
            payload: Bytes::from_static(b"{}"),
        };
        let mut rx = GroupReceiver::new();
        rx.push(&stream(t, &[telemetry(1), telemetry(5)]));
        assert_eq!(drain(&mut rx).expect("gaps allowed off video").len(), 3);
        let mut rx = GroupReceiver::new();
        rx.push(&stream(t, &[telemetry(5), telemetry(5)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::SequenceGap { .. })
        ));

        let mut rx = GroupReceiver::new();
        rx.push(&stream(t, &[video(1, true)]));
        assert!(matches!(
            drain(&mut rx),
            Err(StreamError::ChannelMismatch { .. })
        ));
    }

    #[test]
    fn bad_magic_is_refused_at_first_byte() {
        let mut rx = GroupReceiver::new();
        rx.push(b"G");
        assert_eq!(rx.poll(), Err(StreamError::BadMagic { found: b'G' }));
    }

    #[test]
    fn truncated_header_at_fin() {
        let mut rx = GroupReceiver::new();
        rx.push(&[MAGIC, 0, 0]);
        assert_eq!(rx.poll(), Ok(None));
        assert_eq!(
            rx.finish(),
            Err(StreamError::TruncatedHeader { received: 3 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), split in 1usize..40) {
            let mut rx = GroupReceiver::new();
            let mut failed = false;
            for chunk in data.chunks(split) {
                rx.push(chunk);
                loop {
                    match rx.poll() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => { failed = true; break }
                    }
                }
                if failed { break }
            }
            let _ = rx.finish();
        }

        #[test]
        fn valid_groups_round_trip(start in 0u64..1_000_000, len in 1usize..20, split in 1usize..64) {
            let h = StreamHeader { channel: Channel::Video, group: start };
            let frames: Vec<Frame> = (0..len as u64).map(|i| video(start + i, i == 0)).collect();
            let wire = stream(h, &frames);
            let (got, whole) = receive_in_pieces(&wire, split);
            prop_assert!(whole);
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn backfilled_groups_with_audio_round_trip(start in 0u64..1_000_000, len in 1usize..20,
                                                   audio in proptest::collection::btree_set(0u64..10_000, 0..30),
                                                   split in 1usize..64) {
            let h = StreamHeader { channel: Channel::Backfill, group: 9 };
            let mut frames: Vec<Frame> = (0..len as u64)
                .map(|i| Frame { channel: Channel::Backfill, ..video(start + i, i == 0) })
                .collect();
            frames.extend(audio.into_iter().map(|seq| Frame {
                channel: Channel::Audio,
                flags: FrameFlags::empty(),
                capture_us: seq * 20_000,
                sequence: seq,
                payload: Bytes::from(vec![0xf8; 3]),
            }));
            let wire = stream(h, &frames);
            let (got, whole) = receive_in_pieces(&wire, split);
            prop_assert!(whole);
            prop_assert_eq!(got, frames);
        }
    }
}
