//! One backlog record: a whole GOP, framed and checksummed for the ring's
//! chunk files. Pure encode/decode; no I/O.
//!
//! # Layout
//! ```text
//! offset size field
//!      0    4 magic "KBR1"
//!      4    4 body length n, u32 BE, at most MAX_RECORD_BODY
//!      8    4 CRC-32C (Castagnoli) of the body, u32 BE
//!     12    n body:
//!              u64 record id | u32 frame count |
//!              per frame: u8 flags | u64 capture µs | u64 sequence | u32 length | payload
//! ```
//! The length comes before the body so a scan can skip a record without
//! decoding it, and refuse an absurd length before allocating. The checksum
//! covers the whole body, so a torn write (power cut mid-append) or a sector
//! the card returned wrong is detected at recovery rather than uploaded.

use std::sync::Arc;

use bytes::Bytes;
use kodama_proto::{Channel, Frame, FrameFlags, MAX_PAYLOAD};

/// Record magic.
pub const MAGIC: [u8; 4] = *b"KBR1";

/// Bytes before the body.
pub const RECORD_HEADER_LEN: usize = 12;

/// Largest body accepted: the hub's GOP limit (32 MiB) plus frame headers.
pub const MAX_RECORD_BODY: usize = 40 * 1024 * 1024;

/// Most frames in one record (the hub's per-GOP limit).
pub const MAX_RECORD_FRAMES: usize = 3600;

const FRAME_META_LEN: usize = 1 + 8 + 8 + 4;

/// A whole group of pictures: a keyframe first, then its frames in sequence
/// order (video channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gop {
    /// The frames.
    pub frames: Vec<Arc<Frame>>,
}

impl Gop {
    /// Capture time of the keyframe.
    pub fn capture_us(&self) -> u64 {
        self.frames.first().map_or(0, |f| f.capture_us)
    }

    /// Payload bytes.
    pub fn payload_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.payload.len()).sum()
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

/// Encodes `gop` as record `id` (header and body).
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
    let body_len = 12 + gop.frames.len() * FRAME_META_LEN + gop.payload_bytes();
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
    let crc = crc32c(&out[RECORD_HEADER_LEN..]);
    out[8..12].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The header of the record at the start of `bytes`: its total length
/// (header + body). Checks magic and length bound, not the checksum.
pub fn record_len(bytes: &[u8]) -> Result<usize, RecordError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            have: bytes.len(),
            need: RECORD_HEADER_LEN,
        });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[..4]);
    if magic != MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
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
}

/// Verifies the record at the start of `bytes` (magic, length, checksum,
/// body structure) and decodes it.
pub fn decode(bytes: &[u8]) -> Result<(RecordSummary, Gop), RecordError> {
    let len = record_len(bytes)?;
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
        let n = take_u32(&mut r)? as usize;
        if n > MAX_PAYLOAD || n > r.len() {
            return Err(RecordError::Malformed("frame length"));
        }
        let frame = Frame {
            channel: Channel::Video,
            flags,
            capture_us,
            sequence,
            payload: Bytes::copy_from_slice(&r[..n]),
        };
        r = &r[n..];
        if (i == 0) != frame.is_keyframe() {
            return Err(RecordError::Malformed("keyframe placement"));
        }
        frames.push(Arc::new(frame));
    }
    if !r.is_empty() {
        return Err(RecordError::Malformed("trailing bytes"));
    }
    let gop = Gop { frames };
    let summary = RecordSummary {
        id,
        len,
        capture_us: gop.capture_us(),
        frames: count as u32,
    };
    Ok((summary, gop))
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
        }
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C (RFC 3720 B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn golden_record() {
        let g = gop(2, 1, 1);
        let bytes = encode(9, &g).expect("encodes");
        assert_eq!(
            hex::encode(&bytes[..8]),
            "4b42523100000022", // "KBR1", body length 34
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
                "02"                // payload
            )
        );
        assert_eq!(bytes[8..12], crc32c(&bytes[12..]).to_be_bytes());
        let (summary, back) = decode(&bytes).expect("decodes");
        assert_eq!(summary.id, 9);
        assert_eq!(back, g);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(1, &gop(0, 3, 10)).expect("encodes");
        for cut in [0, 5, RECORD_HEADER_LEN, bytes.len() - 1] {
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
    fn gops_that_cannot_play_are_not_stored() {
        let mut g = gop(0, 2, 1);
        g.frames.remove(0);
        assert!(matches!(encode(0, &g), Err(RecordError::Unstorable(_))));
        assert!(matches!(
            encode(0, &Gop { frames: vec![] }),
            Err(RecordError::Unstorable(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<u64>(), seq in 0u64..1_000_000, n in 1usize..40, len in 0usize..300) {
            let g = gop(seq, n, len);
            let bytes = encode(id, &g).expect("encodes");
            let (s, back) = decode(&bytes).expect("decodes");
            prop_assert_eq!(s.id, id);
            prop_assert_eq!(s.len, bytes.len());
            prop_assert_eq!(back, g);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&data);
        }
    }
}
