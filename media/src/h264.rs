//! H.264 Annex-B access units (ITU-T H.264 Annex B) and parameter sets.
//!
//! Cameras send one access unit per frame, in Annex-B form (start-code
//! delimited NAL units). The helpers here split them without copying and read
//! the few SPS fields Kodama needs, using `h264-reader` for the SPS syntax
//! (clause 7.3.2.1.1).

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{decode_nal, BitReader};

/// NAL unit type values used here (H.264 Table 7-1).
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const NON_IDR_SLICE: u8 = 1;
    /// Coded slice of an IDR picture.
    pub const IDR_SLICE: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
}

/// Iterates over the NAL units (without start codes) of an Annex-B buffer.
///
/// Accepts 3- and 4-byte start codes; bytes before the first start code are
/// skipped (a stream may start mid-unit). Empty units are not yielded.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
        // Trailing zero bytes belong to the next (4-byte) start code.
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            units.push(&data[s..end]);
        }
    }
    units.into_iter()
}

/// The `nal_unit_type` of a NAL unit (low 5 bits of its first byte).
pub fn unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether an access unit contains an IDR slice, i.e. starts a GOP.
pub fn is_idr(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|n| unit_type(n) == Some(nal_type::IDR_SLICE))
}

/// The first SPS and PPS NAL units in an access unit, if present.
pub fn parameter_sets(access_unit: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut sps = None;
    let mut pps = None;
    for n in nal_units(access_unit) {
        match unit_type(n) {
            Some(nal_type::SPS) if sps.is_none() => sps = Some(n),
            Some(nal_type::PPS) if pps.is_none() => pps = Some(n),
            _ => {}
        }
    }
    (sps, pps)
}

/// The SPS fields Kodama uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// `profile_idc` (66 baseline, 77 main, 100 high).
    pub profile_idc: u8,
    /// The constraint flags byte.
    pub constraint_flags: u8,
    /// `level_idc` (e.g. 31 = level 3.1).
    pub level_idc: u8,
    /// Cropped picture width in pixels.
    pub width: u32,
    /// Cropped picture height in pixels.
    pub height: u32,
}

/// Why an SPS could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpsError {
    /// The NAL unit is not an SPS.
    #[error("NAL unit type {found:?} is not an SPS (7)")]
    NotSps {
        /// The type found.
        found: Option<u8>,
    },
    /// The SPS syntax is invalid.
    #[error("invalid SPS: {0}")]
    Syntax(String),
}

impl SpsInfo {
    /// Parses an SPS NAL unit (with its one-byte NAL header, no start code).
    pub fn parse(nal: &[u8]) -> Result<Self, SpsError> {
        if unit_type(nal) != Some(nal_type::SPS) {
            return Err(SpsError::NotSps {
                found: unit_type(nal),
            });
        }
        let rbsp = decode_nal(nal).map_err(|e| SpsError::Syntax(format!("{e:?}")))?;
        let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
            .map_err(|e| SpsError::Syntax(format!("{e:?}")))?;
        let (width, height) = sps
            .pixel_dimensions()
            .map_err(|e| SpsError::Syntax(format!("{e:?}")))?;
        Ok(SpsInfo {
            profile_idc: sps.profile_idc.into(),
            constraint_flags: sps.constraint_flags.into(),
            level_idc: sps.level_idc,
            width,
            height,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // SPS of a 640x480 baseline stream (level 3.0) as x264/openh264 write it.
    const SPS_640X480: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x80, 0x6d, 0x0a, 0x13, 0x50,
    ];

    #[test]
    fn splits_mixed_start_codes() {
        let au = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let units: Vec<_> = nal_units(&au).collect();
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
        assert!(is_idr(&au));
        assert_eq!(parameter_sets(&au), (Some(&[0x67, 1, 2][..]), Some(&[0x68, 3][..])));
    }

    #[test]
    fn non_idr_is_not_a_keyframe() {
        assert!(!is_idr(&[0, 0, 0, 1, 0x41, 9, 9]));
        assert!(!is_idr(&[]));
    }

    #[test]
    fn rejects_non_sps() {
        assert_eq!(
            SpsInfo::parse(&[0x68, 0]),
            Err(SpsError::NotSps { found: Some(8) })
        );
        assert!(matches!(SpsInfo::parse(&[0x67]), Err(SpsError::Syntax(_))));
    }

    #[test]
    fn parses_resolution() {
        let info = SpsInfo::parse(SPS_640X480).expect("valid SPS");
        assert_eq!((info.width, info.height), (640, 480));
        assert_eq!(info.profile_idc, 66);
        assert_eq!(info.level_idc, 30);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for n in nal_units(&data) {
                prop_assert!(!n.is_empty());
            }
            let _ = is_idr(&data);
            let mut sps = vec![0x67];
            sps.extend_from_slice(&data);
            let _ = SpsInfo::parse(&sps);
        }
    }
}
