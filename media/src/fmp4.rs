//! Fragmented MP4 (ISO/IEC 14496-12, ISO base media file format) for one
//! H.264 video track and, for cameras with a microphone, one Opus audio
//! track, sans-IO: build the init segment and the fragments a recorder
//! appends, and read them back for recovery and export.
//!
//! # File shape
//! ```text
//! ftyp moov                     init segment (video trak avcC, [audio trak Opus/dOps], mvex/trex)
//! prft moof mdat                one fragment per GOP, repeated
//!      moof = mfhd traf(video) [traf(audio)]; mdat = video samples, then audio samples
//! ```
//! Each fragment starts with a keyframe, so every fragment is a seek point.
//! Audio (track 2) is Opus in ISO BMFF ("Encapsulation of Opus in ISO Base
//! Media File Format", opus-codec.org): an `Opus` sample entry with a `dOps`
//! box, 48 kHz media timescale, one Opus packet per sample; the audio of a
//! GOP's time span travels in that GOP's fragment.
//! The `prft` box (ProducerReferenceTimeBox, §8.16.5) carries the wall-clock
//! capture time of the fragment's first frame: a segment file is
//! self-describing, and a server that lost its index can rebuild it from the
//! files alone.
//!
//! Samples are stored in AVC form (ISO/IEC 14496-15 §5.3.2: four-byte length
//! prefixes). Parameter sets live in the `avcC` box of the sample entry, so
//! in-band SPS/PPS and access unit delimiters are dropped from samples.
//!
//! The reader accepts what this writer writes plus the common variants of
//! `tfhd` defaults; anything it cannot follow is a typed [`Mp4Error`] naming
//! the box and offset. Lengths are checked against the bytes present before
//! anything is allocated.

use crate::h264::{self, nal_type, SpsInfo};

/// Media timescale of the video track: the customary 90 kHz, which
/// represents every common frame interval exactly enough.
pub const TIMESCALE: u32 = 90_000;

/// Media timescale of the audio track: Opus always decodes at 48 kHz.
pub const AUDIO_TIMESCALE: u32 = 48_000;

/// Track id of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Largest box this reader will load into memory (a `moov` or `moof`);
/// `mdat` is never loaded by the scanner, only bounded by the file.
pub const MAX_METADATA_BOX: u64 = 16 * 1024 * 1024;

/// `trun` sample flags of a sync sample: `sample_depends_on = 2` (does not
/// depend on others), §8.8.3.1.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `trun` sample flags of a non-sync sample: depends on others,
/// `sample_is_non_sync_sample = 1`.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// The parameters of an H.264 video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// Sequence parameter set NAL unit (no start code).
    pub sps: Vec<u8>,
    /// Picture parameter set NAL unit (no start code).
    pub pps: Vec<u8>,
    /// Cropped picture width from the SPS.
    pub width: u16,
    /// Cropped picture height from the SPS.
    pub height: u16,
}

/// Why a track could not be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// The SPS could not be parsed.
    #[error("bad SPS: {0}")]
    Sps(#[from] h264::SpsError),
    /// The PPS is not a PPS NAL unit.
    #[error("PPS NAL unit has type {0:?}, expected 8")]
    NotPps(Option<u8>),
    /// A parameter set is longer than `avcC` can carry (16-bit length).
    #[error("parameter set of {0} bytes exceeds 65535")]
    TooLong(usize),
    /// The resolution does not fit the 16-bit fields of `tkhd`/`avc1`.
    #[error("resolution {0}x{1} too large")]
    TooLarge(u32, u32),
}

impl VideoTrack {
    /// Describes a track from its parameter sets.
    pub fn new(sps: &[u8], pps: &[u8]) -> Result<Self, TrackError> {
        let info = SpsInfo::parse(sps)?;
        if h264::unit_type(pps) != Some(nal_type::PPS) {
            return Err(TrackError::NotPps(h264::unit_type(pps)));
        }
        for ps in [sps, pps] {
            if ps.len() > usize::from(u16::MAX) {
                return Err(TrackError::TooLong(ps.len()));
            }
        }
        let (Ok(width), Ok(height)) = (u16::try_from(info.width), u16::try_from(info.height))
        else {
            return Err(TrackError::TooLarge(info.width, info.height));
        };
        Ok(VideoTrack {
            sps: sps.to_vec(),
            pps: pps.to_vec(),
            width,
            height,
        })
    }

    /// The RFC 6381 codec string (`avc1.PPCCLL`), as a browser's
    /// `MediaSource.isTypeSupported` wants it.
    pub fn codec_string(&self) -> String {
        let b = |i: usize| self.sps.get(i).copied().unwrap_or(0);
        format!("avc1.{:02x}{:02x}{:02x}", b(1), b(2), b(3))
    }
}

/// The parameters of an Opus audio track (the `dOps` box).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTrack {
    /// Channel count (1 or 2; channel mapping family 0).
    pub channels: u8,
    /// Samples (at 48 kHz) the decoder drops at the start.
    pub pre_skip: u16,
    /// The sample rate the encoder was fed, for information.
    pub input_sample_rate: u32,
}

impl AudioTrack {
    /// The RFC 6381 codec string, as `MediaSource.isTypeSupported` wants it.
    pub fn codec_string(&self) -> &'static str {
        "opus"
    }
}

/// The audio samples of one fragment: `tfdt` and `trun` of track 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRun {
    /// Base media decode time in [`AUDIO_TIMESCALE`] units.
    pub base_decode_time: u64,
    /// The samples (Opus packets), every one a sync sample.
    pub samples: Vec<SampleInfo>,
}

impl AudioRun {
    /// Sum of sample sizes.
    pub fn payload_len(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.size)).sum()
    }

    /// Sum of sample durations in [`AUDIO_TIMESCALE`] units.
    pub fn duration(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.duration)).sum()
    }
}

/// One sample of a fragment, as `trun` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    /// Duration in [`TIMESCALE`] units.
    pub duration: u32,
    /// Size in bytes of the (AVC-form) sample data.
    pub size: u32,
    /// Whether it is a sync sample (keyframe).
    pub keyframe: bool,
}

/// Why bytes could not be written or read as fragmented MP4.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mp4Error {
    /// A box header claims a size smaller than its header or beyond the limit.
    #[error("box {kind} at offset {offset}: bad size {size}")]
    BadSize {
        /// Box type as text.
        kind: String,
        /// Offset of the box.
        offset: u64,
        /// The size found.
        size: u64,
    },
    /// A box ended before a field it must contain.
    #[error("box {kind} at offset {offset}: truncated")]
    Truncated {
        /// Box type as text.
        kind: String,
        /// Offset of the box.
        offset: u64,
    },
    /// A required box is missing.
    #[error("missing {0} box")]
    Missing(&'static str),
    /// A box or field has a value this reader does not support.
    #[error("unsupported {what} at offset {offset}")]
    Unsupported {
        /// What is unsupported.
        what: &'static str,
        /// Where.
        offset: u64,
    },
    /// The file does not start with `ftyp`.
    #[error("not an MP4 file (first box {0})")]
    NotMp4(String),
    /// The sample data of a fragment is too large for one `mdat`.
    #[error("fragment payload of {0} bytes too large")]
    PayloadTooLarge(u64),
    /// The track description in `avcC` is invalid.
    #[error("invalid track: {0}")]
    Track(#[from] TrackError),
}

fn kind_str(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

// ---------------------------------------------------------------- writing

fn begin(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    at
}

fn begin_full(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32) -> usize {
    let at = begin(out, kind);
    out.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
    at
}

fn end(out: &mut [u8], at: usize) {
    // Boxes written here are metadata: far below 4 GiB.
    let size = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u64be(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The unity transformation matrix of `mvhd`/`tkhd` (§8.2.2.3).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Builds the init segment (`ftyp` + `moov`) for a video-only file.
pub fn init_segment(track: &VideoTrack) -> Vec<u8> {
    init_segment_av(track, None)
}

/// Builds the init segment (`ftyp` + `moov`) for a video track and, when
/// given, an Opus audio track.
pub fn init_segment_av(track: &VideoTrack, audio: Option<&AudioTrack>) -> Vec<u8> {
    let mut o = Vec::with_capacity(700 + track.sps.len() + track.pps.len());
    // ftyp, §4.3.
    let b = begin(&mut o, b"ftyp");
    o.extend_from_slice(b"isom");
    u32be(&mut o, 0x200);
    for brand in [b"isom", b"iso6", b"avc1", b"mp41"] {
        o.extend_from_slice(brand);
    }
    end(&mut o, b);

    let moov = begin(&mut o, b"moov");
    // mvhd v0, §8.2.2: durations 0 because fragments carry the media.
    let b = begin_full(&mut o, b"mvhd", 0, 0);
    u32be(&mut o, 0); // creation_time
    u32be(&mut o, 0); // modification_time
    u32be(&mut o, 1000); // timescale
    u32be(&mut o, 0); // duration
    u32be(&mut o, 0x0001_0000); // rate 1.0
    u16be(&mut o, 0x0100); // volume 1.0
    o.extend_from_slice(&[0; 10]); // reserved
    MATRIX.iter().for_each(|&m| u32be(&mut o, m));
    o.extend_from_slice(&[0; 24]); // pre_defined
    u32be(&mut o, if audio.is_some() { 3 } else { 2 }); // next_track_ID
    end(&mut o, b);

    let trak = begin(&mut o, b"trak");
    // tkhd v0, flags track_enabled | track_in_movie, §8.3.2.
    let b = begin_full(&mut o, b"tkhd", 0, 0x3);
    u32be(&mut o, 0);
    u32be(&mut o, 0);
    u32be(&mut o, 1); // track_ID
    u32be(&mut o, 0); // reserved
    u32be(&mut o, 0); // duration
    o.extend_from_slice(&[0; 8]);
    u16be(&mut o, 0); // layer
    u16be(&mut o, 0); // alternate_group
    u16be(&mut o, 0); // volume (video)
    u16be(&mut o, 0);
    MATRIX.iter().for_each(|&m| u32be(&mut o, m));
    u32be(&mut o, u32::from(track.width) << 16);
    u32be(&mut o, u32::from(track.height) << 16);
    end(&mut o, b);

    let mdia = begin(&mut o, b"mdia");
    let b = begin_full(&mut o, b"mdhd", 0, 0); // §8.4.2
    u32be(&mut o, 0);
    u32be(&mut o, 0);
    u32be(&mut o, TIMESCALE);
    u32be(&mut o, 0);
    // ISO-639-2 "und", three 5-bit letters offset by 0x60.
    u16be(&mut o, (21 << 10) | (14 << 5) | 4);
    u16be(&mut o, 0);
    end(&mut o, b);
    let b = begin_full(&mut o, b"hdlr", 0, 0); // §8.4.3
    u32be(&mut o, 0);
    o.extend_from_slice(b"vide");
    o.extend_from_slice(&[0; 12]);
    o.extend_from_slice(b"Kodama video\0");
    end(&mut o, b);

    let minf = begin(&mut o, b"minf");
    let b = begin_full(&mut o, b"vmhd", 0, 1); // §12.1.2, flags must be 1
    o.extend_from_slice(&[0; 8]);
    end(&mut o, b);
    let dinf = begin(&mut o, b"dinf");
    let dref = begin_full(&mut o, b"dref", 0, 0);
    u32be(&mut o, 1);
    let url = begin_full(&mut o, b"url ", 0, 1); // self-contained
    end(&mut o, url);
    end(&mut o, dref);
    end(&mut o, dinf);

    let stbl = begin(&mut o, b"stbl");
    let stsd = begin_full(&mut o, b"stsd", 0, 0);
    u32be(&mut o, 1);
    // VisualSampleEntry 'avc1', ISO/IEC 14496-12 §12.1.3 and 14496-15 §5.4.2.
    let avc1 = begin(&mut o, b"avc1");
    o.extend_from_slice(&[0; 6]);
    u16be(&mut o, 1); // data_reference_index
    o.extend_from_slice(&[0; 16]); // pre_defined, reserved
    u16be(&mut o, track.width);
    u16be(&mut o, track.height);
    u32be(&mut o, 0x0048_0000); // 72 dpi
    u32be(&mut o, 0x0048_0000);
    u32be(&mut o, 0);
    u16be(&mut o, 1); // frame_count
    o.extend_from_slice(&[0; 32]); // compressorname
    u16be(&mut o, 0x0018); // depth
    u16be(&mut o, 0xffff); // pre_defined = -1
                           // AVCDecoderConfigurationRecord, 14496-15 §5.3.3.1.
    let avcc = begin(&mut o, b"avcC");
    o.push(1);
    o.extend_from_slice(&[
        track.sps.get(1).copied().unwrap_or(0),
        track.sps.get(2).copied().unwrap_or(0),
        track.sps.get(3).copied().unwrap_or(0),
    ]);
    o.push(0xff); // lengthSizeMinusOne = 3
    o.push(0xe1); // one SPS
    u16be(&mut o, track.sps.len() as u16);
    o.extend_from_slice(&track.sps);
    o.push(1); // one PPS
    u16be(&mut o, track.pps.len() as u16);
    o.extend_from_slice(&track.pps);
    end(&mut o, avcc);
    end(&mut o, avc1);
    end(&mut o, stsd);
    // Empty sample tables: the samples are in the fragments (§8.8.1).
    for kind in [b"stts", b"stsc", b"stco"] {
        let b = begin_full(&mut o, kind, 0, 0);
        u32be(&mut o, 0);
        end(&mut o, b);
    }
    let b = begin_full(&mut o, b"stsz", 0, 0);
    u32be(&mut o, 0);
    u32be(&mut o, 0);
    end(&mut o, b);
    end(&mut o, stbl);
    end(&mut o, minf);
    end(&mut o, mdia);
    end(&mut o, trak);
    if let Some(audio) = audio {
        audio_trak(&mut o, audio);
    }

    let mvex = begin(&mut o, b"mvex"); // §8.8.1
    let tracks: &[u32] = if audio.is_some() {
        &[VIDEO_TRACK_ID, AUDIO_TRACK_ID]
    } else {
        &[VIDEO_TRACK_ID]
    };
    for &id in tracks {
        let b = begin_full(&mut o, b"trex", 0, 0);
        u32be(&mut o, id); // track_ID
        u32be(&mut o, 1); // default_sample_description_index
        u32be(&mut o, 0);
        u32be(&mut o, 0);
        u32be(&mut o, 0); // default_sample_flags: sync (what audio uses)
        end(&mut o, b);
    }
    end(&mut o, mvex);
    end(&mut o, moov);
    o
}

/// The audio `trak`: `smhd`, an `Opus` AudioSampleEntry with `dOps`.
fn audio_trak(o: &mut Vec<u8>, audio: &AudioTrack) {
    let trak = begin(o, b"trak");
    let b = begin_full(o, b"tkhd", 0, 0x3);
    u32be(o, 0);
    u32be(o, 0);
    u32be(o, AUDIO_TRACK_ID);
    u32be(o, 0);
    u32be(o, 0); // duration
    o.extend_from_slice(&[0; 8]);
    u16be(o, 0); // layer
    u16be(o, 0); // alternate_group
    u16be(o, 0x0100); // volume 1.0 (audio)
    u16be(o, 0);
    MATRIX.iter().for_each(|&m| u32be(o, m));
    u32be(o, 0); // width, height: none
    u32be(o, 0);
    end(o, b);

    let mdia = begin(o, b"mdia");
    let b = begin_full(o, b"mdhd", 0, 0);
    u32be(o, 0);
    u32be(o, 0);
    u32be(o, AUDIO_TIMESCALE);
    u32be(o, 0);
    u16be(o, (21 << 10) | (14 << 5) | 4); // "und"
    u16be(o, 0);
    end(o, b);
    let b = begin_full(o, b"hdlr", 0, 0);
    u32be(o, 0);
    o.extend_from_slice(b"soun");
    o.extend_from_slice(&[0; 12]);
    o.extend_from_slice(b"Kodama audio\0");
    end(o, b);
    let minf = begin(o, b"minf");
    let b = begin_full(o, b"smhd", 0, 0); // §12.2.2: balance, reserved
    u32be(o, 0);
    end(o, b);
    let dinf = begin(o, b"dinf");
    let dref = begin_full(o, b"dref", 0, 0);
    u32be(o, 1);
    let url = begin_full(o, b"url ", 0, 1);
    end(o, url);
    end(o, dref);
    end(o, dinf);
    let stbl = begin(o, b"stbl");
    let stsd = begin_full(o, b"stsd", 0, 0);
    u32be(o, 1);
    // AudioSampleEntry (§12.2.3) named 'Opus'.
    let entry = begin(o, b"Opus");
    o.extend_from_slice(&[0; 6]);
    u16be(o, 1); // data_reference_index
    o.extend_from_slice(&[0; 8]); // reserved
    u16be(o, u16::from(audio.channels));
    u16be(o, 16); // samplesize
    u16be(o, 0); // pre_defined
    u16be(o, 0); // reserved
    u32be(o, AUDIO_TIMESCALE << 16); // samplerate 16.16
                                     // OpusSpecificBox: Version 0, channels, PreSkip, InputSampleRate,
                                     // OutputGain, ChannelMappingFamily 0 (mono/stereo, no table).
    let dops = begin(o, b"dOps");
    o.push(0);
    o.push(audio.channels);
    u16be(o, audio.pre_skip);
    u32be(o, audio.input_sample_rate);
    u16be(o, 0);
    o.push(0);
    end(o, dops);
    end(o, entry);
    end(o, stsd);
    for kind in [b"stts", b"stsc", b"stco"] {
        let b = begin_full(o, kind, 0, 0);
        u32be(o, 0);
        end(o, b);
    }
    let b = begin_full(o, b"stsz", 0, 0);
    u32be(o, 0);
    u32be(o, 0);
    end(o, b);
    end(o, stbl);
    end(o, minf);
    end(o, mdia);
    end(o, trak);
}

/// Appends an Annex-B access unit to `out` as an AVC-form sample (4-byte
/// lengths), leaving out parameter sets and delimiters, which the sample
/// entry carries. Returns the bytes appended.
pub fn append_sample(access_unit: &[u8], out: &mut Vec<u8>) -> usize {
    let before = out.len();
    for nal in h264::nal_units(access_unit) {
        if matches!(
            h264::unit_type(nal),
            Some(nal_type::SPS | nal_type::PPS | nal_type::AUD)
        ) {
            continue;
        }
        // A NAL unit inside a frame of at most MAX_PAYLOAD bytes fits in u32.
        u32be(out, u32::try_from(nal.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(nal);
    }
    out.len() - before
}

/// What goes in front of a fragment's sample data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentHeader {
    /// `mfhd` sequence number (starts at 1, increases by one per fragment).
    pub sequence: u32,
    /// `tfdt` base media decode time in [`TIMESCALE`] units.
    pub base_decode_time: u64,
    /// Wall-clock capture time of the first sample, µs since the Unix epoch,
    /// written as `prft`.
    pub wall_time_us: Option<i64>,
    /// The samples, in decode order.
    pub samples: Vec<SampleInfo>,
}

/// Builds `prft` (optional) + `moof` + the `mdat` header for a fragment whose
/// sample data (sizes as in `header.samples`) follows immediately.
pub fn fragment_header(header: &FragmentHeader) -> Result<Vec<u8>, Mp4Error> {
    fragment_header_av(header, None)
}

/// Like [`fragment_header`], with the audio samples of the fragment's time
/// span as a second `traf`; their data follows the video samples in `mdat`.
pub fn fragment_header_av(
    header: &FragmentHeader,
    audio: Option<&AudioRun>,
) -> Result<Vec<u8>, Mp4Error> {
    let video_payload: u64 = header.samples.iter().map(|s| u64::from(s.size)).sum();
    let payload = video_payload + audio.map_or(0, AudioRun::payload_len);
    if payload > u64::from(u32::MAX) - 8 {
        return Err(Mp4Error::PayloadTooLarge(payload));
    }
    let mut o = Vec::with_capacity(120 + 12 * header.samples.len());
    if let Some(us) = header.wall_time_us {
        // prft v1, flags 0: the time the frame was input to the encoder,
        // i.e. captured (§8.16.5).
        let b = begin_full(&mut o, b"prft", 1, 0);
        u32be(&mut o, 1); // reference_track_ID
        u64be(&mut o, unix_us_to_ntp(us));
        u64be(&mut o, header.base_decode_time);
        end(&mut o, b);
    }
    let moof = begin(&mut o, b"moof");
    let b = begin_full(&mut o, b"mfhd", 0, 0); // §8.8.5
    u32be(&mut o, header.sequence);
    end(&mut o, b);
    let traf = begin(&mut o, b"traf");
    // tfhd with default-base-is-moof (0x020000), §8.8.7.
    let b = begin_full(&mut o, b"tfhd", 0, 0x02_0000);
    u32be(&mut o, 1);
    end(&mut o, b);
    let b = begin_full(&mut o, b"tfdt", 1, 0); // §8.8.12
    u64be(&mut o, header.base_decode_time);
    end(&mut o, b);
    // trun: data-offset, sample duration, size and flags present (§8.8.8).
    let b = begin_full(&mut o, b"trun", 0, 0x000_0701);
    u32be(
        &mut o,
        u32::try_from(header.samples.len()).unwrap_or(u32::MAX),
    );
    let data_offset_at = o.len();
    u32be(&mut o, 0);
    for s in &header.samples {
        u32be(&mut o, s.duration);
        u32be(&mut o, s.size);
        u32be(
            &mut o,
            if s.keyframe {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            },
        );
    }
    end(&mut o, b);
    end(&mut o, traf);
    let audio_offset_at = audio
        .filter(|r| !r.samples.is_empty())
        .map(|run| audio_traf(&mut o, run));
    end(&mut o, moof);
    // data_offset is relative to the moof start; the payload follows the
    // 8-byte mdat header.
    let data_offset = (o.len() - moof + 8) as u32;
    o[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    if let Some(at) = audio_offset_at {
        let audio_offset = data_offset + video_payload as u32;
        o[at..at + 4].copy_from_slice(&audio_offset.to_be_bytes());
    }
    u32be(&mut o, (payload + 8) as u32);
    o.extend_from_slice(b"mdat");
    Ok(o)
}

/// Writes track 2's `traf` for `run`; returns where its `trun` data offset
/// goes (filled in once the `moof`'s length is known).
fn audio_traf(o: &mut Vec<u8>, run: &AudioRun) -> usize {
    let traf = begin(o, b"traf");
    let b = begin_full(o, b"tfhd", 0, 0x02_0000);
    u32be(o, AUDIO_TRACK_ID);
    end(o, b);
    let b = begin_full(o, b"tfdt", 1, 0);
    u64be(o, run.base_decode_time);
    end(o, b);
    // trun: data-offset, sample duration and size; flags from trex (sync).
    let b = begin_full(o, b"trun", 0, 0x000_0301);
    u32be(o, u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
    let offset_at = o.len();
    u32be(o, 0);
    for s in &run.samples {
        u32be(o, s.duration);
        u32be(o, s.size);
    }
    end(o, b);
    end(o, traf);
    offset_at
}

/// `moof` + the `mdat` header of a fragment holding only audio samples (the
/// browsers' live view sends audio as it arrives, between video frames).
/// The samples' bytes, in order, follow immediately.
pub fn audio_fragment_header(sequence: u32, run: &AudioRun) -> Result<Vec<u8>, Mp4Error> {
    let payload = run.payload_len();
    if payload > u64::from(u32::MAX) - 8 {
        return Err(Mp4Error::PayloadTooLarge(payload));
    }
    let mut o = Vec::with_capacity(80 + 8 * run.samples.len());
    let moof = begin(&mut o, b"moof");
    let b = begin_full(&mut o, b"mfhd", 0, 0);
    u32be(&mut o, sequence);
    end(&mut o, b);
    let offset_at = audio_traf(&mut o, run);
    end(&mut o, moof);
    let data_offset = (o.len() - moof + 8) as u32;
    o[offset_at..offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    u32be(&mut o, (payload + 8) as u32);
    o.extend_from_slice(b"mdat");
    Ok(o)
}

/// Converts µs since the Unix epoch to a 64-bit NTP timestamp (RFC 5905).
/// The 32-bit seconds field wraps in 2036 (era 1); [`ntp_to_unix_us`] reads
/// it back by the RFC 4330 §3 rule, so times from 1968 to 2104 round-trip.
pub fn unix_us_to_ntp(us: i64) -> u64 {
    let secs = us.div_euclid(1_000_000);
    let frac_us = us.rem_euclid(1_000_000) as u64;
    let ntp_secs = ((secs + NTP_UNIX_OFFSET_S as i64).max(0) as u64) & 0xffff_ffff;
    (ntp_secs << 32) | ((frac_us << 32) / 1_000_000)
}

/// Converts a 64-bit NTP timestamp to µs since the Unix epoch.
pub fn ntp_to_unix_us(ntp: u64) -> i64 {
    let mut ntp_secs = (ntp >> 32) as i64;
    // RFC 4330 §3: a clear top bit means era 1 (from 2036-02-07).
    if ntp_secs & 0x8000_0000 == 0 {
        ntp_secs += 1 << 32;
    }
    let secs = ntp_secs - NTP_UNIX_OFFSET_S as i64;
    // Round to the nearest µs so that the conversion round-trips.
    let frac = (((ntp & 0xffff_ffff) * 1_000_000) + (1 << 31)) >> 32;
    secs * 1_000_000 + frac as i64
}

// ---------------------------------------------------------------- reading

/// A box header found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    /// Box type.
    pub kind: [u8; 4],
    /// Header length (8, or 16 with a 64-bit size).
    pub header_len: u64,
    /// Total box size including the header.
    pub size: u64,
}

/// Reads a box header at the start of `buf`. `Ok(None)` means more bytes are
/// needed; `offset` is only used in errors. A size of 0 ("to end of file",
/// §4.2) is rejected: this writer never produces it.
pub fn read_box_header(buf: &[u8], offset: u64) -> Result<Option<BoxHeader>, Mp4Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let kind = [buf[4], buf[5], buf[6], buf[7]];
    let (header_len, size) = match size32 {
        1 => {
            if buf.len() < 16 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[8..16]);
            (16, u64::from_be_bytes(b))
        }
        s => (8, u64::from(s)),
    };
    if size < header_len {
        return Err(Mp4Error::BadSize {
            kind: kind_str(&kind),
            offset,
            size,
        });
    }
    Ok(Some(BoxHeader {
        kind,
        header_len,
        size,
    }))
}

/// A cursor over a box body that turns running short into a typed error.
struct Body<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: &'static str,
    offset: u64,
}

impl<'a> Body<'a> {
    fn new(buf: &'a [u8], kind: &'static str, offset: u64) -> Self {
        Body {
            buf,
            pos: 0,
            kind,
            offset,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        if self.buf.len() - self.pos < n {
            return Err(Mp4Error::Truncated {
                kind: self.kind.to_string(),
                offset: self.offset,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Mp4Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Mp4Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Mp4Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Mp4Error> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Iterates over the child boxes of a container body: (type, offset of the
/// child within `body`, child body).
/// A child box: type, offset of its body in the file, its body.
type Child<'a> = ([u8; 4], u64, &'a [u8]);

fn children(body: &[u8], base: u64) -> Result<Vec<Child<'_>>, Mp4Error> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        let at = base + pos as u64;
        let Some(h) = read_box_header(&body[pos..], at)? else {
            return Err(Mp4Error::Truncated {
                kind: "box header".into(),
                offset: at,
            });
        };
        if h.size > (body.len() - pos) as u64 {
            return Err(Mp4Error::BadSize {
                kind: kind_str(&h.kind),
                offset: at,
                size: h.size,
            });
        }
        let start = pos + h.header_len as usize;
        let stop = pos + h.size as usize;
        out.push((h.kind, at + h.header_len, &body[start..stop]));
        pos = stop;
    }
    Ok(out)
}

fn child<'a>(
    body: &'a [u8],
    base: u64,
    kind: &[u8; 4],
    name: &'static str,
) -> Result<(u64, &'a [u8]), Mp4Error> {
    children(body, base)?
        .into_iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, at, b)| (at, b))
        .ok_or(Mp4Error::Missing(name))
}

/// What the init segment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitInfo {
    /// The track.
    pub track: VideoTrack,
    /// The audio track, if the file has one.
    pub audio: Option<AudioTrack>,
    /// Media timescale from `mdhd`.
    pub timescale: u32,
    /// Length of `ftyp` + `moov` (where the first fragment starts).
    pub len: u64,
}

/// Parses the init segment at the start of `buf` (which must hold at least
/// the whole `ftyp` and `moov`).
pub fn parse_init(buf: &[u8]) -> Result<InitInfo, Mp4Error> {
    let ftyp = read_box_header(buf, 0)?.ok_or(Mp4Error::Missing("ftyp"))?;
    if &ftyp.kind != b"ftyp" {
        return Err(Mp4Error::NotMp4(kind_str(&ftyp.kind)));
    }
    let mut pos = ftyp.size;
    // Skip boxes (e.g. free) up to moov.
    loop {
        let rest = buf.get(pos as usize..).unwrap_or(&[]);
        let h = read_box_header(rest, pos)?.ok_or(Mp4Error::Missing("moov"))?;
        if h.size > MAX_METADATA_BOX || h.size > rest.len() as u64 {
            if &h.kind == b"moov" && h.size > MAX_METADATA_BOX {
                return Err(Mp4Error::BadSize {
                    kind: "moov".into(),
                    offset: pos,
                    size: h.size,
                });
            }
            return Err(Mp4Error::Missing("moov"));
        }
        if &h.kind != b"moov" {
            pos += h.size;
            continue;
        }
        let body = &rest[h.header_len as usize..h.size as usize];
        let base = pos + h.header_len;
        let (at, trak) = child(body, base, b"trak", "trak")?;
        let (at, mdia) = child(trak, at, b"mdia", "mdia")?;
        let (mdhd_at, mdhd) = child(mdia, at, b"mdhd", "mdhd")?;
        let mut m = Body::new(mdhd, "mdhd", mdhd_at);
        let version = m.u8()?;
        m.take(3)?;
        let timescale = if version == 1 {
            m.take(16)?;
            m.u32()?
        } else {
            m.take(8)?;
            m.u32()?
        };
        // VisualSampleEntry fields before child boxes: 78 bytes.
        let (at, avc1) = sample_entry(mdia, at, b"avc1", "avc1", 78)?;
        let (avcc_at, avcc) = child(avc1, at, b"avcC", "avcC")?;
        let mut c = Body::new(avcc, "avcC", avcc_at);
        c.take(4)?; // version, profile, compatibility, level
        if c.u8()? & 0x03 != 3 {
            return Err(Mp4Error::Unsupported {
                what: "NAL length size other than 4",
                offset: avcc_at,
            });
        }
        if c.u8()? & 0x1f != 1 {
            return Err(Mp4Error::Unsupported {
                what: "SPS count other than 1",
                offset: avcc_at,
            });
        }
        let n = c.u16()? as usize;
        let sps = c.take(n)?;
        if c.u8()? != 1 {
            return Err(Mp4Error::Unsupported {
                what: "PPS count other than 1",
                offset: avcc_at,
            });
        }
        let n = c.u16()? as usize;
        let pps = c.take(n)?;
        let track = VideoTrack::new(sps, pps)?;
        let mut audio = None;
        for (kind, trak_at, trak) in children(body, base)? {
            if &kind == b"trak" {
                if let Some(a) = parse_audio_trak(trak, trak_at)? {
                    audio = Some(a);
                }
            }
        }
        return Ok(InitInfo {
            track,
            audio,
            timescale,
            len: pos + h.size,
        });
    }
}

/// A track's sample entry `kind` under `mdia`/`minf`/`stbl`/`stsd`: the
/// offset and bytes of its child boxes, past its `fields` fixed bytes.
fn sample_entry<'a>(
    mdia: &'a [u8],
    at: u64,
    kind: &[u8; 4],
    name: &'static str,
    fields: usize,
) -> Result<(u64, &'a [u8]), Mp4Error> {
    let (at, minf) = child(mdia, at, b"minf", "minf")?;
    let (at, stbl) = child(minf, at, b"stbl", "stbl")?;
    let (at, stsd) = child(stbl, at, b"stsd", "stsd")?;
    // stsd: full box header + entry_count, then the entries.
    if stsd.len() < 8 {
        return Err(Mp4Error::Truncated {
            kind: "stsd".into(),
            offset: at,
        });
    }
    let (at, entry) = child(&stsd[8..], at + 8, kind, name)?;
    if entry.len() < fields {
        return Err(Mp4Error::Truncated {
            kind: name.into(),
            offset: at,
        });
    }
    Ok((at + fields as u64, &entry[fields..]))
}

/// Reads an `Opus` track's `dOps`; `None` for a trak that is not audio.
fn parse_audio_trak(trak: &[u8], at: u64) -> Result<Option<AudioTrack>, Mp4Error> {
    let (at, mdia) = child(trak, at, b"mdia", "mdia")?;
    let (hdlr_at, hdlr) = child(mdia, at, b"hdlr", "hdlr")?;
    let mut h = Body::new(hdlr, "hdlr", hdlr_at);
    h.take(8)?;
    if h.take(4)? != b"soun" {
        return Ok(None);
    }
    // AudioSampleEntry fields before child boxes: 28 bytes.
    let (at, entry) = sample_entry(mdia, at, b"Opus", "Opus", 28)?;
    let (dops_at, dops) = child(entry, at, b"dOps", "dOps")?;
    let mut d = Body::new(dops, "dOps", dops_at);
    if d.u8()? != 0 {
        return Err(Mp4Error::Unsupported {
            what: "dOps version",
            offset: dops_at,
        });
    }
    let channels = d.u8()?;
    let pre_skip = d.u16()?;
    let input_sample_rate = d.u32()?;
    d.u16()?; // output gain
    if d.u8()? != 0 || !(1..=2).contains(&channels) {
        return Err(Mp4Error::Unsupported {
            what: "Opus channel mapping other than mono/stereo",
            offset: dops_at,
        });
    }
    Ok(Some(AudioTrack {
        channels,
        pre_skip,
        input_sample_rate,
    }))
}

/// What one fragment's metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Offset of the fragment's first box (`prft` or `moof`) in the file.
    pub offset: u64,
    /// Total length: `prft` + `moof` + `mdat`.
    pub len: u64,
    /// Offset of the sample data in the file.
    pub data_offset: u64,
    /// The header fields.
    pub header: FragmentHeader,
    /// The audio samples, if the fragment has any.
    pub audio: Option<AudioRun>,
    /// Offset of the audio sample data in the file (after the video's).
    pub audio_data_offset: u64,
}

impl FragmentInfo {
    /// Sum of sample durations in timescale units.
    pub fn duration(&self) -> u64 {
        self.header
            .samples
            .iter()
            .map(|s| u64::from(s.duration))
            .sum()
    }
}

fn parse_prft(body: &[u8], at: u64) -> Result<i64, Mp4Error> {
    let mut b = Body::new(body, "prft", at);
    let version = b.u8()?;
    b.take(3)?;
    b.u32()?; // reference_track_ID
    let ntp = b.u64()?;
    if version == 0 {
        b.u32()?;
    } else {
        b.u64()?;
    }
    Ok(ntp_to_unix_us(ntp))
}

/// Parses a `moof` body into the header fields and the offset of the first
/// sample relative to the start of the `moof` box.
/// `moof` contents: sequence, the video run and its data offset, the audio
/// run and its data offset.
type MoofFields = (u32, TrafFields, Option<TrafFields>);

/// One `traf`: track id, base decode time, samples, data offset.
type TrafFields = (u32, u64, Vec<SampleInfo>, i64);

fn parse_moof(body: &[u8], body_at: u64) -> Result<MoofFields, Mp4Error> {
    let (at, mfhd) = child(body, body_at, b"mfhd", "mfhd")?;
    let mut m = Body::new(mfhd, "mfhd", at);
    m.u32()?;
    let sequence = m.u32()?;
    let mut video = None;
    let mut audio = None;
    for (kind, traf_at, traf) in children(body, body_at)? {
        if &kind != b"traf" {
            continue;
        }
        let fields = parse_traf(traf, traf_at)?;
        if video.is_none() {
            video = Some(fields);
        } else if audio.is_none() && fields.0 == AUDIO_TRACK_ID {
            audio = Some(fields);
        } else {
            return Err(Mp4Error::Unsupported {
                what: "traf of a third track",
                offset: traf_at,
            });
        }
    }
    let video = video.ok_or(Mp4Error::Missing("traf"))?;
    Ok((sequence, video, audio))
}

fn parse_traf(traf: &[u8], traf_at: u64) -> Result<TrafFields, Mp4Error> {
    let (at, tfhd) = child(traf, traf_at, b"tfhd", "tfhd")?;
    let mut t = Body::new(tfhd, "tfhd", at);
    let flags = t.u32()? & 0x00ff_ffff;
    let track_id = t.u32()?;
    if flags & 0x1 != 0 {
        return Err(Mp4Error::Unsupported {
            what: "tfhd base-data-offset",
            offset: at,
        });
    }
    if flags & 0x2 != 0 {
        t.u32()?;
    }
    let default_duration = if flags & 0x8 != 0 { t.u32()? } else { 0 };
    let default_size = if flags & 0x10 != 0 { t.u32()? } else { 0 };
    let default_flags = if flags & 0x20 != 0 {
        t.u32()?
    } else {
        NON_SYNC_SAMPLE_FLAGS
    };
    let (at, tfdt) = child(traf, traf_at, b"tfdt", "tfdt")?;
    let mut d = Body::new(tfdt, "tfdt", at);
    let version = d.u8()?;
    d.take(3)?;
    let base_decode_time = if version == 1 {
        d.u64()?
    } else {
        u64::from(d.u32()?)
    };
    let (at, trun) = child(traf, traf_at, b"trun", "trun")?;
    let mut r = Body::new(trun, "trun", at);
    let vf = r.u32()?;
    let tflags = vf & 0x00ff_ffff;
    let count = r.u32()? as usize;
    if tflags & 0x1 == 0 {
        return Err(Mp4Error::Unsupported {
            what: "trun without data-offset",
            offset: at,
        });
    }
    let data_offset = i64::from(r.u32()? as i32);
    let first_flags = if tflags & 0x4 != 0 {
        Some(r.u32()?)
    } else {
        None
    };
    let per = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&f| tflags & f != 0)
        .count()
        * 4;
    // Check the count against the bytes present before allocating.
    if per == 0 && count > 4096 || per != 0 && count > r.remaining() / per {
        return Err(Mp4Error::Truncated {
            kind: "trun".into(),
            offset: at,
        });
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let duration = if tflags & 0x100 != 0 {
            r.u32()?
        } else {
            default_duration
        };
        let size = if tflags & 0x200 != 0 {
            r.u32()?
        } else {
            default_size
        };
        let mut sflags = if tflags & 0x400 != 0 {
            r.u32()?
        } else {
            default_flags
        };
        if i == 0 {
            if let Some(f) = first_flags {
                sflags = f;
            }
        }
        if tflags & 0x800 != 0 {
            r.u32()?;
        }
        samples.push(SampleInfo {
            duration,
            size,
            // sample_is_non_sync_sample is bit 16 (§8.8.3.1).
            keyframe: sflags & 0x0001_0000 == 0,
        });
    }
    Ok((track_id, base_decode_time, samples, data_offset))
}

/// Parses one complete fragment (`prft`? `moof` `mdat`) at the start of
/// `buf`, which is at file offset `offset`. `Ok(None)` means `buf` ends
/// before the fragment does (a truncated tail).
pub fn parse_fragment(buf: &[u8], offset: u64) -> Result<Option<FragmentInfo>, Mp4Error> {
    let mut pos = 0u64;
    let mut wall_time_us = None;
    let Some(mut h) = read_box_header(buf, offset)? else {
        return Ok(None);
    };
    if &h.kind == b"prft" {
        if h.size > 64 {
            return Err(Mp4Error::BadSize {
                kind: "prft".into(),
                offset,
                size: h.size,
            });
        }
        let Some(body) = buf.get(h.header_len as usize..h.size as usize) else {
            return Ok(None);
        };
        wall_time_us = Some(parse_prft(body, offset + h.header_len)?);
        pos = h.size;
        let rest = &buf[pos as usize..];
        match read_box_header(rest, offset + pos)? {
            Some(next) => h = next,
            None => return Ok(None),
        }
    }
    if &h.kind != b"moof" {
        return Err(Mp4Error::Unsupported {
            what: "box other than prft/moof where a fragment starts",
            offset: offset + pos,
        });
    }
    if h.size > MAX_METADATA_BOX {
        return Err(Mp4Error::BadSize {
            kind: "moof".into(),
            offset: offset + pos,
            size: h.size,
        });
    }
    let moof_at = pos;
    let Some(body) = buf.get((pos + h.header_len) as usize..(pos + h.size) as usize) else {
        return Ok(None);
    };
    let (sequence, (_, base_decode_time, samples, rel), audio) =
        parse_moof(body, offset + pos + h.header_len)?;
    pos += h.size;
    let Some(m) = read_box_header(&buf[pos as usize..], offset + pos)? else {
        return Ok(None);
    };
    if &m.kind != b"mdat" {
        return Err(Mp4Error::Missing("mdat"));
    }
    let video_payload: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
    let data_offset = moof_at as i64 + rel;
    let audio_payload: u64 = audio
        .as_ref()
        .map_or(0, |a| a.2.iter().map(|s| u64::from(s.size)).sum());
    let audio_rel = audio.as_ref().map_or(0, |a| moof_at as i64 + a.3);
    // The samples must lie exactly in this mdat's payload: video, then audio.
    if data_offset != (pos + m.header_len) as i64
        || m.size - m.header_len != video_payload.saturating_add(audio_payload)
        || audio.is_some() && audio_rel != data_offset + video_payload as i64
    {
        return Err(Mp4Error::Unsupported {
            what: "sample data not exactly the following mdat",
            offset: offset + pos,
        });
    }
    let end = pos + m.size;
    if (buf.len() as u64) < end {
        return Ok(None);
    }
    Ok(Some(FragmentInfo {
        offset,
        len: end,
        data_offset: offset + data_offset as u64,
        header: FragmentHeader {
            sequence,
            base_decode_time,
            wall_time_us,
            samples,
        },
        audio_data_offset: offset + data_offset as u64 + video_payload,
        audio: audio.map(|(_, base_decode_time, samples, _)| AudioRun {
            base_decode_time,
            samples: samples
                .into_iter()
                .map(|s| SampleInfo {
                    keyframe: true,
                    ..s
                })
                .collect(),
        }),
    }))
}

/// What a scan of a whole segment file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The init segment.
    pub init: InitInfo,
    /// The complete fragments, in file order.
    pub fragments: Vec<FragmentInfo>,
    /// End of the last complete fragment: where a truncated file is cut.
    pub complete_len: u64,
    /// Why the scan stopped before the end of the buffer, if it did (a
    /// truncated tail is `None` here but `complete_len < buf.len()`).
    pub stopped: Option<Mp4Error>,
}

/// Scans a segment file held in memory: the init segment, then fragments
/// until the end, a truncated tail, or bytes that are not a fragment.
pub fn scan_segment(buf: &[u8]) -> Result<SegmentScan, Mp4Error> {
    let init = parse_init(buf)?;
    let mut pos = init.len;
    let mut fragments = Vec::new();
    let mut stopped = None;
    while (pos as usize) < buf.len() {
        match parse_fragment(&buf[pos as usize..], pos) {
            Ok(Some(f)) => {
                pos += f.len;
                fragments.push(f);
            }
            Ok(None) => break,
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    Ok(SegmentScan {
        init,
        fragments,
        complete_len: pos,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x80, 0x6d, 0x0a, 0x13, 0x50,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn track() -> VideoTrack {
        VideoTrack::new(SPS, PPS).expect("valid track")
    }

    /// Writes a file of `gops`, each a list of (frame size, duration); every
    /// GOP's first frame is a keyframe.
    fn write_file(gops: &[Vec<(usize, u32)>], t0: i64) -> (Vec<u8>, Vec<FragmentHeader>) {
        let mut file = init_segment(&track());
        let mut headers = Vec::new();
        let mut dts = 0u64;
        for (i, gop) in gops.iter().enumerate() {
            let mut data = Vec::new();
            let mut samples = Vec::new();
            for (j, &(size, duration)) in gop.iter().enumerate() {
                let nal_type = if j == 0 { 0x65 } else { 0x41 };
                let mut au = vec![0, 0, 0, 1, nal_type];
                au.extend(std::iter::repeat_n(0xab, size));
                let n = append_sample(&au, &mut data);
                samples.push(SampleInfo {
                    duration,
                    size: n as u32,
                    keyframe: j == 0,
                });
            }
            let header = FragmentHeader {
                sequence: i as u32 + 1,
                base_decode_time: dts,
                wall_time_us: Some(t0 + (dts as i64) * 1_000_000 / i64::from(TIMESCALE)),
                samples,
            };
            dts += gop.iter().map(|&(_, d)| u64::from(d)).sum::<u64>();
            file.extend(fragment_header(&header).expect("fits"));
            file.extend(data);
            headers.push(header);
        }
        (file, headers)
    }

    #[test]
    fn audio_track_and_runs_round_trip() {
        let audio = AudioTrack {
            channels: 1,
            pre_skip: 312,
            input_sample_rate: 48_000,
        };
        let mut file = init_segment_av(&track(), Some(&audio));
        let init = parse_init(&file).expect("init");
        assert_eq!(init.audio, Some(audio));
        assert_eq!(init.track, track());
        assert_eq!(init.len, file.len() as u64);
        let mut expected = Vec::new();
        for n in 0..3u32 {
            let mut data = Vec::new();
            let size = append_sample(&[0, 0, 0, 1, 0x65, 1, 2, 3], &mut data) as u32;
            let header = FragmentHeader {
                sequence: n + 1,
                base_decode_time: u64::from(n) * 3000,
                wall_time_us: Some(1_700_000_000_000_000),
                samples: vec![SampleInfo {
                    duration: 3000,
                    size,
                    keyframe: true,
                }],
            };
            let run = AudioRun {
                base_decode_time: u64::from(n) * 1600,
                samples: (0..2)
                    .map(|k| SampleInfo {
                        duration: 960,
                        size: 3 + k,
                        keyframe: true,
                    })
                    .collect(),
            };
            let audio_bytes: Vec<u8> = (0..run.payload_len()).map(|b| 0xa0 | b as u8).collect();
            file.extend(fragment_header_av(&header, Some(&run)).expect("fits"));
            file.extend(&data);
            file.extend(&audio_bytes);
            expected.push((header, run, data, audio_bytes));
        }
        let scan = scan_segment(&file).expect("scan");
        assert_eq!(scan.stopped, None);
        assert_eq!(scan.complete_len, file.len() as u64);
        assert_eq!(scan.fragments.len(), 3);
        for (f, (header, run, data, audio_bytes)) in scan.fragments.iter().zip(&expected) {
            assert_eq!(&f.header, header);
            assert_eq!(f.audio.as_ref(), Some(run));
            let at = f.data_offset as usize;
            assert_eq!(&file[at..at + data.len()], &data[..]);
            let at = f.audio_data_offset as usize;
            assert_eq!(&file[at..at + audio_bytes.len()], &audio_bytes[..]);
        }
        // A video-only file reads back without audio.
        let plain = init_segment(&track());
        assert_eq!(parse_init(&plain).expect("init").audio, None);
    }

    #[test]
    fn an_audio_only_fragment_points_at_its_samples() {
        use mp4_atom::{Any, Decode};
        let run = AudioRun {
            base_decode_time: 48_000,
            samples: (0..3)
                .map(|k| SampleInfo {
                    duration: 960,
                    size: 10 + k,
                    keyframe: true,
                })
                .collect(),
        };
        let mut bytes = audio_fragment_header(7, &run).expect("fits");
        let header_len = bytes.len();
        bytes.extend((0..run.payload_len()).map(|b| b as u8));
        let mut cursor = std::io::Cursor::new(&bytes[..]);
        let Any::Moof(moof) = Any::decode(&mut cursor).expect("moof") else {
            panic!("expected moof");
        };
        assert_eq!(moof.mfhd.sequence_number, 7);
        assert_eq!(moof.traf.len(), 1);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.track_id, AUDIO_TRACK_ID);
        assert_eq!(
            traf.tfdt.as_ref().map(|t| t.base_media_decode_time),
            Some(48_000)
        );
        let entries: Vec<(u32, u32)> = traf.trun[0]
            .entries
            .iter()
            .map(|e| (e.duration.unwrap_or(0), e.size.unwrap_or(0)))
            .collect();
        assert_eq!(entries, vec![(960, 10), (960, 11), (960, 12)]);
        // The data offset (from the moof's start) lands on the first sample.
        assert_eq!(traf.trun[0].data_offset, Some(header_len as i32));
        let Any::Mdat(mdat) = Any::decode(&mut cursor).expect("mdat") else {
            panic!("expected mdat");
        };
        assert_eq!(mdat.data.len() as u64, run.payload_len());
    }

    #[test]
    fn init_round_trips() {
        let init = init_segment(&track());
        let info = parse_init(&init).expect("parses");
        assert_eq!(info.track, track());
        assert_eq!((info.track.width, info.track.height), (640, 480));
        assert_eq!(info.timescale, TIMESCALE);
        assert_eq!(info.len, init.len() as u64);
        assert_eq!(track().codec_string(), "avc1.42c01e");
    }

    #[test]
    fn annexb_becomes_length_prefixed_without_parameter_sets() {
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 7, 8,
        ];
        let mut out = Vec::new();
        assert_eq!(append_sample(&au, &mut out), 7);
        assert_eq!(out, [0, 0, 0, 3, 0x65, 7, 8]);
    }

    #[test]
    fn truncated_tail_is_cut_at_last_complete_fragment() {
        let (file, headers) = write_file(
            &[vec![(100, 3000); 3], vec![(50, 3000); 2]],
            1_700_000_000_000_000,
        );
        let whole = scan_segment(&file).expect("scans");
        assert_eq!(whole.fragments.len(), 2);
        assert_eq!(whole.complete_len, file.len() as u64);
        let first_end = whole.fragments[0].offset + whole.fragments[0].len;
        for cut in first_end as usize..file.len() {
            let s = scan_segment(&file[..cut]).expect("scans");
            assert_eq!(s.fragments.len(), 1, "cut at {cut}");
            assert_eq!(s.complete_len, first_end);
            assert_eq!(s.fragments[0].header, headers[0]);
        }
    }

    #[test]
    fn ntp_conversion_round_trips() {
        for us in [
            0i64,
            1,
            999_999,
            1_700_000_000_123_456,
            -5,
            2_200_000_000_000_000,
        ] {
            assert_eq!(ntp_to_unix_us(unix_us_to_ntp(us)), us);
        }
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert!(matches!(
            parse_init(b"\0\0\0\x08moov"),
            Err(Mp4Error::NotMp4(_))
        ));
        assert!(matches!(
            read_box_header(b"\0\0\0\x04abcd", 0),
            Err(Mp4Error::BadSize { .. })
        ));
        assert_eq!(read_box_header(b"\0\0\0", 0), Ok(None));
    }

    fn gops() -> impl Strategy<Value = Vec<Vec<(usize, u32)>>> {
        proptest::collection::vec(
            proptest::collection::vec((0usize..2000, 1u32..9000), 1..20),
            1..6,
        )
    }

    proptest! {
        #[test]
        fn written_files_read_back(gops in gops(), t0 in 0i64..4_000_000_000_000_000) {
            let (file, headers) = write_file(&gops, t0);
            let scan = scan_segment(&file).expect("scans");
            prop_assert!(scan.stopped.is_none());
            prop_assert_eq!(scan.complete_len, file.len() as u64);
            let read: Vec<_> = scan.fragments.iter().map(|f| f.header.clone()).collect();
            prop_assert_eq!(read, headers.clone());

            // An independent parser (mp4-atom) agrees box by box.
            use mp4_atom::{Any, Decode};
            let mut cursor = std::io::Cursor::new(&file[..]);
            let mut truns = Vec::new();
            let mut tfdts = Vec::new();
            while (cursor.position() as usize) < file.len() {
                match Any::decode(&mut cursor).expect("mp4-atom decodes") {
                    Any::Moov(moov) => {
                        let trak = &moov.trak[0];
                        prop_assert_eq!(trak.mdia.mdhd.timescale, TIMESCALE);
                        prop_assert_eq!(trak.tkhd.width.integer(), 640);
                    }
                    Any::Moof(moof) => {
                        let traf = &moof.traf[0];
                        tfdts.push(traf.tfdt.as_ref().expect("tfdt").base_media_decode_time);
                        truns.push(traf.trun[0].entries.iter().map(|e| (e.duration.unwrap_or(0), e.size.unwrap_or(0))).collect::<Vec<_>>());
                    }
                    _ => {}
                }
            }
            let want_tfdt: Vec<u64> = headers.iter().map(|h| h.base_decode_time).collect();
            prop_assert_eq!(tfdts, want_tfdt);
            let want_trun: Vec<Vec<(u32, u32)>> = headers.iter().map(|h| h.samples.iter().map(|s| (s.duration, s.size)).collect()).collect();
            prop_assert_eq!(truns, want_trun);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = scan_segment(&data);
            let _ = parse_fragment(&data, 0);
            let mut with_init = init_segment(&track());
            with_init.extend_from_slice(&data);
            let _ = scan_segment(&with_init);
        }

        #[test]
        fn mutated_files_never_panic(gops in gops(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let (mut file, _) = write_file(&gops, 0);
            for (i, b) in flips {
                let at = i.index(file.len());
                file[at] = b;
            }
            if let Ok(scan) = scan_segment(&file) {
                prop_assert!(scan.complete_len as usize <= file.len());
            }
        }
    }
}
