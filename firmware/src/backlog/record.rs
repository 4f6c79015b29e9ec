//! One backlog record: a whole GOP and the audio of its time span, framed
//! and checksummed for the ring's chunk files. Pure encode/decode; no I/O.
//!
//! # Layout (format version 2, written by this firmware)
//! ```text
//! offset size field
//!      0    4 magic "KBR" + version digit: "KBR2" (version 1, "KBR1", is read too)
//!      4    4 body length n, u32 BE, at most MAX_RECORD_BODY
//!      8    4 CRC-32C (Castagnoli) of the body, u32 BE
//!     12    n body:
//!              u64 record id | u32 frame count |
//!              per frame: u8 flags | u64 capture µs | u64 sequence | u32 length | payload
//!              u32 audio packet count |                                   (version 2 only)
//!              per packet: u64 capture µs | u64 sequence | u32 length | payload
//! ```
//! The length comes before the body so a scan can skip a record without
//! decoding it, and refuse an absurd length before allocating. The checksum
//! covers the whole body, so a torn write (power cut mid-append) or a sector
//! the card returned wrong is detected at recovery rather than uploaded.
//!
//! Versions: a version-1 record (video only, from firmware before audio was
//! kept) decodes as a GOP without audio. A record of a later version than
//! this firmware knows is refused as [`RecordError::UnsupportedVersion`]
//! (the ring leaves such a chunk alone rather than cutting it off), so a
//! rolled-back firmware never mistakes it for damage.
//!
//! Audio packets are Opus packets (channel audio) captured while the GOP
//! was: strictly increasing sequence numbers, as the audio stream requires.

use std::sync::Arc;

use bytes::Bytes;
use kodama_proto::{Channel, Frame, FrameFlags, MAX_PAYLOAD};

/// Record magic of the format this firmware writes (version 2).
pub const MAGIC: [u8; 4] = *b"KBR2";

/// Magic of version 1 (video only), still read.
pub const MAGIC_V1: [u8; 4] = *b"KBR1";

/// The format version written.
pub const VERSION: u8 = 2;

/// Bytes before the body.
pub const RECORD_HEADER_LEN: usize = 12;

/// Largest body accepted: the hub's GOP limit (32 MiB) plus frame headers
/// and the audio of the GOP's span.
pub const MAX_RECORD_BODY: usize = 40 * 1024 * 1024;

/// Most frames in one record (the hub's per-GOP limit).
pub const MAX_RECORD_FRAMES: usize = 3600;

/// Most audio packets in one record: 2 minutes of 20 ms packets, the span
/// of the longest GOP the hub accepts (3600 frames at 30 fps).
pub const MAX_RECORD_AUDIO: usize = 6000;

const FRAME_META_LEN: usize = 1 + 8 + 8 + 4;
const AUDIO_META_LEN: usize = 8 + 8 + 4;

/// A whole group of pictures: a keyframe first, then its frames in sequence
/// order (video channel), and the audio packets captured during its time
/// span (audio channel, in sequence order; empty without a microphone).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gop {
    /// The video frames.
    pub frames: Vec<Arc<Frame>>,
    /// The audio packets.
    pub audio: Vec<Arc<Frame>>,
}

impl Gop {
    /// Capture time of the keyframe.
    pub fn capture_us(&self) -> u64 {
        self.frames.first().map_or(0, |f| f.capture_us)
    }

    /// Payload bytes, video and audio.
    pub fn payload_bytes(&self) -> usize {
        self.frames
            .iter()
            .chain(&self.audio)
            .map(|f| f.payload.len())
            .sum()
    }
}

/// Why a record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Fewer bytes than the header or the declared body.
    #[error("record truncated: {have} of {need} bytes")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes the record needs.
        need: usize,
    },
    /// The magic is wrong: not a record boundary.
    #[error("no record magic (found {found:02x?})")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A record of a format version this firmware does not know (written
    /// by newer firmware): left alone, not taken for damage.
    #[error("record format version {version} is newer than this firmware reads (1 to {VERSION}); update the firmware to upload it")]
    UnsupportedVersion {
        /// The version digit found.
        version: u8,
    },
    /// The declared body length exceeds [`MAX_RECORD_BODY`].
    #[error("record body length {len} exceeds {MAX_RECORD_BODY}")]
    TooLarge {
        /// Declared length.
        len: usize,
    },
    /// The body does not match its checksum.
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the body read.
        computed: u32,
    },
    /// The body is inconsistent (passed the checksum, so written by a
    /// different version or a bug).
    #[error("record body malformed: {0}")]
    Malformed(&'static str),
    /// The GOP cannot be stored (empty, too many frames, no keyframe first).
    #[error("GOP cannot be stored: {0}")]
    Unstorable(&'static str),
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bytewise table.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Encodes `gop` as record `id` (header and body), in the current format.
pub fn encode(id: u64, gop: &Gop) -> Result<Vec<u8>, RecordError> {
    let Some(first) = gop.frames.first() else {
        return Err(RecordError::Unstorable("no frames"));
    };
    if !first.is_keyframe() {
        return Err(RecordError::Unstorable("does not start with a keyframe"));
    }
    if gop.frames.len() > MAX_RECORD_FRAMES {
        return Err(RecordError::Unstorable("too many frames"));
    }
    if gop.audio.len() > MAX_RECORD_AUDIO {
        return Err(RecordError::Unstorable("too many audio packets"));
    }
    if gop.audio.windows(2).any(|w| w[1].sequence <= w[0].sequence) {
        return Err(RecordError::Unstorable("audio packets out of order"));
    }
    if gop.audio.iter().any(|a| a.payload.len() > MAX_PAYLOAD) {
        return Err(RecordError::Unstorable("audio packet too large"));
    }
    let body_len = 12
        + gop.frames.len() * FRAME_META_LEN
        + 4
        + gop.audio.len() * AUDIO_META_LEN
        + gop.payload_bytes();
    if body_len > MAX_RECORD_BODY {
        return Err(RecordError::Unstorable("larger than a record may be"));
    }
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(gop.frames.len() as u32).to_be_bytes());
    for f in &gop.frames {
        out.push(f.flags.bits());
        out.extend_from_slice(&f.capture_us.to_be_bytes());
        out.extend_from_slice(&f.sequence.to_be_bytes());
        out.extend_from_slice(&(f.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&f.payload);
    }
    out.extend_from_slice(&(gop.audio.len() as u32).to_be_bytes());
    for a in &gop.audio {
        out.extend_from_slice(&a.capture_us.to_be_bytes());
        out.extend_from_slice(&a.sequence.to_be_bytes());
        out.extend_from_slice(&(a.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&a.payload);
    }
    let crc = crc32c(&out[RECORD_HEADER_LEN..]);
    out[8..12].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The format version of the record at the start of `bytes` (1 or 2), from
/// its magic.
fn version(bytes: &[u8]) -> Result<u8, RecordError> {
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[..4]);
    match magic {
        MAGIC => Ok(VERSION),
        MAGIC_V1 => Ok(1),
        [b'K', b'B', b'R', d @ b'3'..=b'9'] => {
            Err(RecordError::UnsupportedVersion { version: d - b'0' })
        }
        found => Err(RecordError::BadMagic { found }),
    }
}

/// The header of the record at the start of `bytes`: its total length
/// (header + body). Checks magic (a known version) and length bound, not the
/// checksum.
pub fn record_len(bytes: &[u8]) -> Result<usize, RecordError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            have: bytes.len(),
            need: RECORD_HEADER_LEN,
        });
    }
    version(bytes)?;
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if len > MAX_RECORD_BODY {
        return Err(RecordError::TooLarge { len });
    }
    Ok(RECORD_HEADER_LEN + len)
}

/// What a scan learns from a valid record without keeping its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    /// Record id.
    pub id: u64,
    /// Total length (header + body).
    pub len: usize,
    /// Capture time of the keyframe.
    pub capture_us: u64,
    /// Frames in it.
    pub frames: u32,
    /// Audio packets in it.
    pub audio: u32,
    /// Its format version.
    pub version: u8,
}

/// Verifies the record at the start of `bytes` (magic, length, checksum,
/// body structure) and decodes it.
pub fn decode(bytes: &[u8]) -> Result<(RecordSummary, Gop), RecordError> {
    let len = record_len(bytes)?;
    let version = version(bytes)?;
    if bytes.len() < len {
        return Err(RecordError::Truncated {
            have: bytes.len(),
            need: len,
        });
    }
    let stored = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let body = &bytes[RECORD_HEADER_LEN..len];
    let computed = crc32c(body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let mut r = body;
    let id = take_u64(&mut r)?;
    let count = take_u32(&mut r)? as usize;
    if count == 0 || count > MAX_RECORD_FRAMES {
        return Err(RecordError::Malformed("frame count"));
    }
    let mut frames = Vec::with_capacity(count);
    for i in 0..count {
        let flags =
            FrameFlags::from_bits(take_u8(&mut r)?).ok_or(RecordError::Malformed("frame flags"))?;
        let capture_us = take_u64(&mut r)?;
        let sequence = take_u64(&mut r)?;
        let payload = take_payload(&mut r, "frame length")?;
        let frame = Frame {
            channel: Channel::Video,
            flags,
            capture_us,
            sequence,
            payload,
        };
        if (i == 0) != frame.is_keyframe() {
            return Err(RecordError::Malformed("keyframe placement"));
        }
        frames.push(Arc::new(frame));
    }
    let mut audio = Vec::new();
    if version >= 2 {
        let count = take_u32(&mut r)? as usize;
        if count > MAX_RECORD_AUDIO {
            return Err(RecordError::Malformed("audio packet count"));
        }
        audio.reserve(count);
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let capture_us = take_u64(&mut r)?;
            let sequence = take_u64(&mut r)?;
            if previous.is_some_and(|p| sequence <= p) {
                return Err(RecordError::Malformed("audio sequence order"));
            }
            previous = Some(sequence);
            let payload = take_payload(&mut r, "audio packet length")?;
            audio.push(Arc::new(Frame {
                channel: Channel::Audio,
                flags: FrameFlags::empty(),
                capture_us,
                sequence,
                payload,
            }));
        }
    }
    if !r.is_empty() {
        return Err(RecordError::Malformed("trailing bytes"));
    }
    let gop = Gop { frames, audio };
    let summary = RecordSummary {
        id,
        len,
        capture_us: gop.capture_us(),
        frames: count as u32,
        audio: gop.audio.len() as u32,
        version,
    };
    Ok((summary, gop))
}

/// A `u32` length and that many payload bytes (at most [`MAX_PAYLOAD`]).
fn take_payload(r: &mut &[u8], field: &'static str) -> Result<Bytes, RecordError> {
    let n = take_u32(r)? as usize;
    if n > MAX_PAYLOAD || n > r.len() {
        return Err(RecordError::Malformed(field));
    }
    let payload = Bytes::copy_from_slice(&r[..n]);
    *r = &r[n..];
    Ok(payload)
}

fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], RecordError> {
    if r.len() < N {
        return Err(RecordError::Malformed("body ends inside a field"));
    }
    let mut a = [0u8; N];
    a.copy_from_slice(&r[..N]);
    *r = &r[N..];
    Ok(a)
}

fn take_u8(r: &mut &[u8]) -> Result<u8, RecordError> {
    Ok(take::<1>(r)?[0])
}

fn take_u32(r: &mut &[u8]) -> Result<u32, RecordError> {
    Ok(u32::from_be_bytes(take(r)?))
}

fn take_u64(r: &mut &[u8]) -> Result<u64, RecordError> {
    Ok(u64::from_be_bytes(take(r)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn gop(first_seq: u64, frames: usize, payload: usize) -> Gop {
        Gop {
            frames: (0..frames as u64)
                .map(|i| {
                    Arc::new(Frame {
                        channel: Channel::Video,
                        flags: if i == 0 {
                            FrameFlags::KEYFRAME | FrameFlags::CODEC_CONFIG
                        } else {
                            FrameFlags::empty()
                        },
                        capture_us: 1_000_000 + (first_seq + i) * 33_333,
                        sequence: first_seq + i,
                        payload: Bytes::from(vec![(first_seq + i) as u8; payload]),
                    })
                })
                .collect(),
            audio: Vec::new(),
        }
    }

    /// An audio packet: 20 ms apart from the GOP clock's origin.
    pub(crate) fn packet(sequence: u64, len: usize) -> Arc<Frame> {
        Arc::new(Frame {
            channel: Channel::Audio,
            flags: FrameFlags::empty(),
            capture_us: 1_000_000 + sequence * 20_000,
            sequence,
            payload: Bytes::from(vec![0xf8 ^ sequence as u8; len]),
        })
    }

    /// [`gop`] with `packets` audio packets from sequence `first_audio`.
    pub(crate) fn gop_with_audio(
        first_seq: u64,
        frames: usize,
        payload: usize,
        first_audio: u64,
        packets: usize,
    ) -> Gop {
        Gop {
            audio: (first_audio..first_audio + packets as u64)
                .map(|s| packet(s, 40 + (s % 7) as usize))
                .collect(),
            ..gop(first_seq, frames, payload)
        }
    }

    /// Sets the checksum of an edited record.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32c(&bytes[RECORD_HEADER_LEN..]);
        bytes[8..12].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C (RFC 3720 B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn golden_record() {
        let g = Gop {
            audio: vec![packet(7, 2)],
            ..gop(2, 1, 1)
        };
        let bytes = encode(9, &g).expect("encodes");
        assert_eq!(
            hex::encode(&bytes[..8]),
            "4b4252320000003c", // "KBR2", body length 60
        );
        assert_eq!(
            hex::encode(&bytes[RECORD_HEADER_LEN..]),
            concat!(
                "0000000000000009", // id
                "00000001",         // one frame
                "03",               // keyframe | codec config
                "00000000001046aa", // capture µs 1_066_666
                "0000000000000002", // sequence
                "00000001",         // length
                "02",               // payload
                "00000001",         // one audio packet
                "0000000000116520", // capture µs 1_140_000
                "0000000000000007", // sequence
                "00000002",         // length
                "ffff"              // payload
            )
        );
        assert_eq!(bytes[8..12], crc32c(&bytes[12..]).to_be_bytes());
        let (summary, back) = decode(&bytes).expect("decodes");
        assert_eq!((summary.id, summary.audio, summary.version), (9, 1, 2));
        assert_eq!(back, g);
    }

    #[test]
    fn a_version_1_record_still_reads_as_video_only() {
        // Written by firmware before audio was kept (the golden record of
        // version 1, byte for byte).
        let mut bytes = hex::decode(concat!(
            "4b42523100000022", // "KBR1", body length 34
            "00000000",         // checksum, set below
            "0000000000000009",
            "00000001",
            "03",
            "00000000001046aa",
            "0000000000000002",
            "00000001",
            "02"
        ))
        .expect("hex");
        reseal(&mut bytes);
        let (summary, back) = decode(&bytes).expect("a version-1 record decodes");
        assert_eq!((summary.id, summary.version, summary.audio), (9, 1, 0));
        assert_eq!(back, gop(2, 1, 1));
        assert_eq!(record_len(&bytes), Ok(bytes.len()));
    }

    #[test]
    fn a_newer_version_is_refused_by_name_not_taken_for_damage() {
        let mut bytes = encode(1, &gop_with_audio(0, 2, 3, 0, 2)).expect("encodes");
        bytes[3] = b'3';
        assert_eq!(
            record_len(&bytes),
            Err(RecordError::UnsupportedVersion { version: 3 })
        );
        let err = decode(&bytes).expect_err("refused");
        assert_eq!(err, RecordError::UnsupportedVersion { version: 3 });
        assert!(
            err.to_string().contains("newer than this firmware"),
            "{err}"
        );
        bytes[3] = b'0';
        assert!(matches!(decode(&bytes), Err(RecordError::BadMagic { .. })));
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(1, &gop_with_audio(0, 3, 10, 5, 4)).expect("encodes");
        // Every cut, including inside the audio part, is a truncation.
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Err(RecordError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            decode(&flipped),
            Err(RecordError::Checksum { .. })
        ));
        let mut huge = bytes.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::TooLarge { .. })));
        assert!(matches!(
            decode(&[0u8; 20]),
            Err(RecordError::BadMagic { .. })
        ));
    }

    #[test]
    fn inconsistent_audio_passing_the_checksum_is_malformed() {
        let g = gop_with_audio(0, 2, 3, 5, 3);
        let bytes = encode(1, &g).expect("encodes");
        let audio_at = RECORD_HEADER_LEN + 12 + 2 * FRAME_META_LEN + 2 * 3;
        // An absurd packet count.
        let mut b = bytes.clone();
        b[audio_at..audio_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        reseal(&mut b);
        assert_eq!(
            decode(&b),
            Err(RecordError::Malformed("audio packet count"))
        );
        // The second packet's sequence number made equal to the first's.
        let mut b = bytes.clone();
        let second = audio_at + 4 + AUDIO_META_LEN + g.audio[0].payload.len();
        b[second + 8..second + 16].copy_from_slice(&5u64.to_be_bytes());
        reseal(&mut b);
        assert_eq!(
            decode(&b),
            Err(RecordError::Malformed("audio sequence order"))
        );
        // A packet length past the end of the body.
        let mut b = bytes.clone();
        b[audio_at + 4 + 16..audio_at + 4 + 20].copy_from_slice(&9_999u32.to_be_bytes());
        reseal(&mut b);
        assert_eq!(
            decode(&b),
            Err(RecordError::Malformed("audio packet length"))
        );
        // The audio count dropped: the packets become trailing bytes.
        let mut b = bytes;
        b[audio_at..audio_at + 4].copy_from_slice(&0u32.to_be_bytes());
        reseal(&mut b);
        assert_eq!(decode(&b), Err(RecordError::Malformed("trailing bytes")));
    }

    #[test]
    fn gops_that_cannot_play_are_not_stored() {
        let mut g = gop(0, 2, 1);
        g.frames.remove(0);
        assert!(matches!(encode(0, &g), Err(RecordError::Unstorable(_))));
        assert!(matches!(
            encode(0, &Gop::default()),
            Err(RecordError::Unstorable(_))
        ));
        let mut g = gop_with_audio(0, 2, 1, 0, 3);
        g.audio.swap(0, 2);
        assert_eq!(
            encode(0, &g),
            Err(RecordError::Unstorable("audio packets out of order"))
        );
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<u64>(), seq in 0u64..1_000_000, n in 1usize..40, len in 0usize..300,
                      first_audio in 0u64..1_000_000, packets in 0usize..120) {
            let g = gop_with_audio(seq, n, len, first_audio, packets);
            let bytes = encode(id, &g).expect("encodes");
            let (s, back) = decode(&bytes).expect("decodes");
            prop_assert_eq!(s.id, id);
            prop_assert_eq!(s.len, bytes.len());
            prop_assert_eq!(s.audio as usize, packets);
            prop_assert_eq!(back, g);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&data);
        }

        /// Bytes changed inside a valid record whose checksum is then made
        /// to match (a bug, or a writer of another build): refused or
        /// decoded consistently, never a panic.
        #[test]
        fn resealed_garbage_never_panics(packets in 0usize..8,
                                         edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = encode(3, &gop_with_audio(0, 3, 5, 0, packets)).expect("encodes");
            for (at, v) in edits {
                let at = RECORD_HEADER_LEN + at % (bytes.len() - RECORD_HEADER_LEN);
                bytes[at] = v;
            }
            reseal(&mut bytes);
            if let Ok((s, g)) = decode(&bytes) {
                prop_assert_eq!(s.frames as usize, g.frames.len());
                prop_assert_eq!(s.audio as usize, g.audio.len());
                prop_assert!(g.frames[0].is_keyframe());
                prop_assert!(g.audio.windows(2).all(|w| w[0].sequence < w[1].sequence));
            }
        }
    }
}
