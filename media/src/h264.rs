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
/// Neither splitting nor iterating allocates: the recorder and the live path
/// call this for every frame.
pub fn nal_units(data: &[u8]) -> NalUnits<'_> {
    NalUnits {
        data,
        next: find_start_code(data, 0),
    }
}

/// The iterator [`nal_units`] returns.
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    /// Offset just past the next start code, if there is one.
    next: Option<usize>,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let start = self.next?;
            let following = find_start_code(self.data, start);
            self.next = following;
            let mut end = following.map_or(self.data.len(), |next| next - 3);
            // Trailing zero bytes belong to the next (4-byte) start code.
            while end > start && self.data[end - 1] == 0 {
                end -= 1;
            }
            if end > start {
                return Some(&self.data[start..end]);
            }
        }
    }
}

impl std::iter::FusedIterator for NalUnits<'_> {}

/// The offset just past the first `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 2 < data.len() {
        // Skip fast: a start code is 00 00 01, so when byte i+2 is not zero
        // (and not the 1 ending one at i) none begins at i, i+1 or i+2.
        match data[i + 2] {
            1 if data[i] == 0 && data[i + 1] == 0 => return Some(i + 3),
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
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

impl SpsInfo {
    /// The profile's name (H.264 Annex A.2), telling Constrained Baseline
    /// (`constraint_set1_flag`, A.2.1.1) from Baseline.
    pub fn profile_name(&self) -> &'static str {
        let set1 = self.constraint_flags & 0x40 != 0;
        let set3 = self.constraint_flags & 0x10 != 0;
        match self.profile_idc {
            66 if set1 => "Constrained Baseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 if set3 => "High 10 Intra",
            110 => "High 10",
            122 if set3 => "High 4:2:2 Intra",
            122 => "High 4:2:2",
            244 if set3 => "High 4:4:4 Intra",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            _ => "unknown",
        }
    }

    /// The level as written in Table A-1 (`3.1`, `1b`). Level 1b is signalled
    /// as `level_idc` 11 with `constraint_set3_flag` in Baseline, Main and
    /// Extended (A.3.1), and as `level_idc` 9 elsewhere.
    pub fn level_name(&self) -> String {
        let set3 = self.constraint_flags & 0x10 != 0;
        match (self.level_idc, self.profile_idc) {
            (11, 66 | 77 | 88) if set3 => "1b".into(),
            (9, _) => "1b".into(),
            (l, _) => format!("{}.{}", l / 10, l % 10),
        }
    }
}

/// Longest prefix of a NAL unit the [`StreamScanner`] keeps: enough for any
/// real SPS (a few dozen bytes) and for slice headers.
pub const SCAN_NAL_PREFIX: usize = 4096;

/// What a [`StreamScanner`] found in an Annex-B elementary stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The first sequence parameter set that parsed.
    pub sps: Option<SpsInfo>,
    /// SPS NAL units seen (a resolution change brings a new one).
    pub sps_count: u64,
    /// SPS NAL units that did not parse.
    pub bad_sps: u64,
    /// NAL units seen.
    pub nal_units: u64,
    /// Coded pictures (frames, or fields of interlaced video).
    pub frames: u64,
    /// Zero-based indices of the pictures that are IDR pictures.
    pub idr_frames: Vec<u64>,
    /// NAL units with the forbidden_zero_bit set (corrupt data).
    pub forbidden_bit: u64,
}

/// Sans-IO scanner of an Annex-B byte stream (Annex B.2): push bytes in
/// pieces of any size, read the [`StreamSummary`] at the end.
///
/// Memory is bounded: each NAL unit is kept only up to [`SCAN_NAL_PREFIX`]
/// bytes, and [`StreamSummary::idr_frames`] up to `max_idr` entries.
///
/// A picture starts at a slice (types 1 and 5) whose `first_mb_in_slice` is 0
/// (clause 7.4.1.2.4; encoders that emit arbitrary slice order, a Baseline
/// option no camera uses, would be miscounted).
#[derive(Debug, Clone)]
pub struct StreamScanner {
    zeros: usize,
    in_nal: bool,
    nal: Vec<u8>,
    max_idr: usize,
    summary: StreamSummary,
}

impl Default for StreamScanner {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl StreamScanner {
    /// A scanner recording at most `max_idr` IDR indices.
    pub fn new(max_idr: usize) -> Self {
        StreamScanner {
            zeros: 0,
            in_nal: false,
            nal: Vec::with_capacity(256),
            max_idr,
            summary: StreamSummary::default(),
        }
    }

    /// Consumes the next bytes of the stream.
    pub fn push(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                0 => self.zeros = self.zeros.saturating_add(1),
                1 if self.zeros >= 2 => {
                    // Start code: the zeros before it end the previous unit
                    // (trailing_zero_8bits / zero_byte, B.1.1).
                    self.end_nal();
                    self.in_nal = true;
                    self.zeros = 0;
                }
                _ => {
                    if self.in_nal {
                        let room = SCAN_NAL_PREFIX.saturating_sub(self.nal.len());
                        let z = self.zeros.min(room);
                        self.nal.extend(std::iter::repeat_n(0, z));
                        if self.nal.len() < SCAN_NAL_PREFIX {
                            self.nal.push(b);
                        }
                    }
                    self.zeros = 0;
                }
            }
        }
    }

    /// Ends the stream and returns what was found.
    pub fn finish(mut self) -> StreamSummary {
        self.end_nal();
        self.summary
    }

    /// The summary so far (the unit in progress is not yet counted).
    pub fn summary(&self) -> &StreamSummary {
        &self.summary
    }

    fn end_nal(&mut self) {
        if !self.in_nal || self.nal.is_empty() {
            self.nal.clear();
            return;
        }
        let s = &mut self.summary;
        s.nal_units += 1;
        let header = self.nal[0];
        if header & 0x80 != 0 {
            s.forbidden_bit += 1;
        }
        match header & 0x1f {
            // first_mb_in_slice is ue(v) (7.3.3); it is 0 exactly when the
            // first bit after the header is 1.
            t @ (nal_type::NON_IDR_SLICE | nal_type::IDR_SLICE)
                if self.nal.get(1).is_some_and(|b| b & 0x80 != 0) =>
            {
                s.frames += 1;
                if t == nal_type::IDR_SLICE && s.idr_frames.len() < self.max_idr {
                    s.idr_frames.push(s.frames - 1);
                }
            }
            nal_type::SPS => {
                s.sps_count += 1;
                match SpsInfo::parse(&self.nal) {
                    Ok(info) => {
                        s.sps.get_or_insert(info);
                    }
                    Err(_) => s.bad_sps += 1,
                }
            }
            _ => {}
        }
        self.nal.clear();
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

    /// The obvious, allocating split the iterator must agree with.
    fn reference_split(data: &[u8]) -> Vec<&[u8]> {
        let starts: Vec<usize> = (0..data.len().saturating_sub(2))
            .filter(|&i| data[i..i + 3] == [0, 0, 1])
            .map(|i| i + 3)
            .collect();
        let mut units = Vec::new();
        for (n, &s) in starts.iter().enumerate() {
            let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
            while end > s && data[end - 1] == 0 {
                end -= 1;
            }
            if end > s {
                units.push(&data[s..end]);
            }
        }
        units
    }

    #[test]
    fn splits_mixed_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let units: Vec<_> = nal_units(&au).collect();
        assert_eq!(
            units,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert!(is_idr(&au));
        assert_eq!(
            parameter_sets(&au),
            (Some(&[0x67, 1, 2][..]), Some(&[0x68, 3][..]))
        );
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

    #[test]
    fn profile_and_level_names() {
        let info = SpsInfo::parse(SPS_640X480).expect("valid SPS");
        // 0xc0: constraint_set0 and set1 → Constrained Baseline.
        assert_eq!(info.profile_name(), "Constrained Baseline");
        assert_eq!(info.level_name(), "3.0");
        let one_b = SpsInfo {
            profile_idc: 77,
            constraint_flags: 0x10,
            level_idc: 11,
            width: 1,
            height: 1,
        };
        assert_eq!(one_b.level_name(), "1b");
        let high = SpsInfo {
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 41,
            width: 1,
            height: 1,
        };
        assert_eq!(
            (high.profile_name(), high.level_name().as_str()),
            ("High", "4.1")
        );
    }

    #[test]
    fn scanner_counts_pictures_and_idrs() {
        let mut stream = vec![0, 0, 0, 1];
        stream.extend_from_slice(SPS_640X480);
        // IDR (first_mb 0), second slice of it (first_mb 1: bit pattern 010),
        // then two P pictures, then an IDR.
        stream.extend_from_slice(&[0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88, 0x80]);
        stream.extend_from_slice(&[0, 0, 1, 0x65, 0x40, 0x11, 0, 0, 0, 1, 0x41, 0x9a, 0]);
        stream.extend_from_slice(&[0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x65, 0x88]);
        let mut whole = StreamScanner::default();
        whole.push(&stream);
        let s = whole.finish();
        assert_eq!(s.frames, 4);
        assert_eq!(s.idr_frames, vec![0, 3]);
        assert_eq!(s.nal_units, 7);
        assert_eq!(s.sps.map(|i| (i.width, i.height)), Some((640, 480)));
        let mut bytewise = StreamScanner::default();
        for b in &stream {
            bytewise.push(std::slice::from_ref(b));
        }
        assert_eq!(bytewise.finish(), s);
    }

    proptest! {
        #[test]
        fn scanner_split_anywhere_is_the_same(
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..512),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut whole = StreamScanner::new(4);
            whole.push(&data);
            let at = cut.index(data.len() + 1);
            let mut split = StreamScanner::new(4);
            split.push(&data[..at]);
            split.push(&data[at..]);
            let (a, b) = (whole.finish(), split.finish());
            prop_assert!(a.idr_frames.len() <= 4);
            prop_assert!(a.frames <= a.nal_units);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn nal_units_match_the_reference_split(
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..512),
        ) {
            let fast: Vec<&[u8]> = nal_units(&data).collect();
            prop_assert_eq!(fast, reference_split(&data));
        }

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
