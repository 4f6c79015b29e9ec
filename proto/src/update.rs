//! Firmware update delivery: the bundle stream's header and the phases a
//! camera reports (docs/design/updates.md).
//!
//! The server offers a bundle on the control stream
//! ([`crate::Message::UpdateOffer`]: size and BLAKE3 hash); the camera answers
//! with [`crate::Message::UpdateReport`] in phase [`UpdatePhase::Receiving`]
//! and the number of bytes it already holds. The server then opens a
//! unidirectional stream starting with a [`BundleHeader`] (the hash and that
//! offset) and sends the rest of the bundle, raw, to the end. A cut
//! connection loses nothing already written: the next offer on the next
//! connection resumes where the camera's file ends.
//!
//! # Bundle stream header (41 bytes)
//! ```text
//! offset size field
//!      0    1 magic 0x55 'U' (a media stream starts with 'K')
//!      1   32 BLAKE3 hash of the whole bundle
//!     33    8 offset of the first byte that follows, u64 BE
//! ```

use bytes::{BufMut, BytesMut};

use crate::wire::{FieldError, Reader};

/// First byte of a bundle stream.
pub const BUNDLE_MAGIC: u8 = 0x55;

/// Length of [`BundleHeader`] on the wire.
pub const BUNDLE_HEADER_LEN: usize = 41;

/// Largest bundle a camera accepts (a root slot is far smaller).
pub const MAX_BUNDLE_SIZE: u64 = 1 << 30;

/// The start of a bundle stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleHeader {
    /// BLAKE3 of the whole bundle: which offer this stream belongs to.
    pub hash: [u8; 32],
    /// Where in the bundle the stream's bytes start.
    pub offset: u64,
}

impl BundleHeader {
    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(BUNDLE_MAGIC);
        out.put_slice(&self.hash);
        out.put_u64(self.offset);
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; BUNDLE_HEADER_LEN] {
        let mut out = BytesMut::with_capacity(BUNDLE_HEADER_LEN);
        self.encode(&mut out);
        let mut a = [0u8; BUNDLE_HEADER_LEN];
        a.copy_from_slice(&out);
        a
    }

    /// Decodes the first [`BUNDLE_HEADER_LEN`] bytes of a stream.
    pub fn decode(bytes: &[u8; BUNDLE_HEADER_LEN]) -> Result<Self, FieldError> {
        let mut r = Reader::new(bytes);
        r.u8_known("bundle.magic", |v| (v == BUNDLE_MAGIC).then_some(()))?;
        let hash = r.array("bundle.hash")?;
        let offset = r.u64("bundle.offset")?;
        r.finish()?;
        Ok(Self { hash, offset })
    }
}

/// Where an update stands on the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdatePhase {
    /// Nothing in progress; the report's detail names the running version and slot.
    Idle = 0,
    /// Receiving the bundle; `progress` is the bytes the camera holds.
    Receiving = 1,
    /// The whole bundle arrived and its BLAKE3 hash matched.
    Verified = 2,
    /// `rauc install` runs; `progress` is its percentage.
    Installing = 3,
    /// Written to the other slot, which boots next.
    Installed = 4,
    /// The camera is restarting into the new slot.
    Rebooting = 5,
    /// Running the new slot on trial: it commits once healthy.
    Booted = 6,
    /// The new slot reached the server, streamed, and was marked good.
    Committed = 7,
    /// The new slot never became healthy: the boot counter went back to the old one.
    RolledBack = 8,
    /// The update failed (detail says why); the running slot is unchanged.
    Failed = 9,
}

impl UpdatePhase {
    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Idle,
            1 => Self::Receiving,
            2 => Self::Verified,
            3 => Self::Installing,
            4 => Self::Installed,
            5 => Self::Rebooting,
            6 => Self::Booted,
            7 => Self::Committed,
            8 => Self::RolledBack,
            9 => Self::Failed,
            _ => return None,
        })
    }

    /// Lower-case name for logs, JSON and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Receiving => "receiving",
            Self::Verified => "verified",
            Self::Installing => "installing",
            Self::Installed => "installed",
            Self::Rebooting => "rebooting",
            Self::Booted => "booted",
            Self::Committed => "committed",
            Self::RolledBack => "rolled-back",
            Self::Failed => "failed",
        }
    }

    /// Whether the update is over (one way or another).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Idle | Self::Committed | Self::RolledBack | Self::Failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_has_the_documented_layout() {
        let h = BundleHeader {
            hash: [0xAB; 32],
            offset: 0x0102_0304_0506_0708,
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes[0], b'U');
        assert_eq!(&bytes[1..33], &[0xAB; 32]);
        assert_eq!(&bytes[33..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(BundleHeader::decode(&bytes), Ok(h));
    }

    #[test]
    fn a_media_stream_is_not_a_bundle_stream() {
        let mut bytes = [0u8; BUNDLE_HEADER_LEN];
        bytes[0] = b'K';
        assert!(matches!(
            BundleHeader::decode(&bytes),
            Err(FieldError::UnknownValue {
                field: "bundle.magic",
                ..
            })
        ));
    }

    #[test]
    fn phases_round_trip() {
        for v in 0..=9u8 {
            let p = UpdatePhase::from_u8(v).expect("known");
            assert_eq!(p as u8, v);
            assert!(!p.name().is_empty());
        }
        assert_eq!(UpdatePhase::from_u8(10), None);
    }
}
