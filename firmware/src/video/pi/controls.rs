//! Encoder control values for the bcm2835-codec H.264 encoder.
//!
//! Control ids and menu values are the kernel's UAPI
//! (`include/uapi/linux/v4l2-controls.h`, "Codec Control Reference" in the
//! V4L2 spec); the driver (`bcm2835-v4l2-codec.c`) implements bitrate,
//! bitrate mode, I-period, repeat sequence header, profile, level, min/max
//! QP and force-key-frame. The stateful encoder spec (kernel docs
//! "Memory-to-Memory Stateful Video Encoder Interface", section
//! "Encoding Parameter Changes") allows bitrate and force-key-frame to be set
//! while streaming; profile, level and I-period are set before STREAMON.

/// `V4L2_CID_CODEC_BASE` (`V4L2_CTRL_CLASS_CODEC | 0x900`).
const CODEC_BASE: u32 = 0x0099_0900;
/// `V4L2_CID_MPEG_VIDEO_BITRATE_MODE` (menu: VBR = 0, CBR = 1).
pub const CID_BITRATE_MODE: u32 = CODEC_BASE + 206;
/// `V4L2_CID_MPEG_VIDEO_BITRATE`, bit/s.
pub const CID_BITRATE: u32 = CODEC_BASE + 207;
/// `V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER`: SPS/PPS before every IDR.
pub const CID_REPEAT_SEQ_HEADER: u32 = CODEC_BASE + 226;
/// `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME` (button).
pub const CID_FORCE_KEY_FRAME: u32 = CODEC_BASE + 229;
/// `V4L2_CID_MPEG_VIDEO_H264_I_PERIOD`: frames between I (here IDR) frames.
pub const CID_H264_I_PERIOD: u32 = CODEC_BASE + 358;
/// `V4L2_CID_MPEG_VIDEO_H264_LEVEL` (menu).
pub const CID_H264_LEVEL: u32 = CODEC_BASE + 359;
/// `V4L2_CID_MPEG_VIDEO_H264_PROFILE` (menu).
pub const CID_H264_PROFILE: u32 = CODEC_BASE + 363;

/// H.264 profile (menu values of `V4L2_CID_MPEG_VIDEO_H264_PROFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Constrained Baseline: decodable by every browser and phone.
    ConstrainedBaseline = 1,
    /// Main: CABAC, ~10% smaller at the same quality.
    Main = 2,
    /// High: 8x8 transforms; the bcm2835 encoder supports it.
    High = 4,
}

/// H.264 level (menu values of `V4L2_CID_MPEG_VIDEO_H264_LEVEL`, in the
/// order of H.264 Table A-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Level 3.0.
    L3_0 = 8,
    /// Level 3.1.
    L3_1 = 9,
    /// Level 3.2.
    L3_2 = 10,
    /// Level 4.0.
    L4_0 = 11,
    /// Level 4.1.
    L4_1 = 12,
    /// Level 4.2: the highest the bcm2835 encoder signals.
    L4_2 = 13,
}

/// Limits of H.264 Table A-1 for the levels above: (level, MaxMBPS
/// macroblocks/s, MaxFS macroblocks, MaxBR in 1000 bit/s for Baseline/Main).
const LEVEL_LIMITS: [(Level, u64, u64, u64); 6] = [
    (Level::L3_0, 40_500, 1_620, 10_000),
    (Level::L3_1, 108_000, 3_600, 14_000),
    (Level::L3_2, 216_000, 5_120, 20_000),
    (Level::L4_0, 245_760, 8_192, 20_000),
    (Level::L4_1, 245_760, 8_192, 50_000),
    (Level::L4_2, 522_240, 8_704, 50_000),
];

/// The lowest level (from 3.0 up) whose Table A-1 limits hold the stream,
/// or `None` when not even 4.2 does. High profile's bitrate limit is 1.25x
/// the Baseline/Main one (Table A-2, cpbBrVclFactor 1250 vs 1000).
pub fn level_for(
    width: u32,
    height: u32,
    fps: u32,
    bitrate_kbps: u32,
    profile: Profile,
) -> Option<Level> {
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let mbps = mbs * u64::from(fps);
    let br = u64::from(bitrate_kbps);
    LEVEL_LIMITS
        .iter()
        .find_map(|&(level, max_mbps, max_fs, max_br)| {
            let max_br = if profile == Profile::High {
                max_br * 5 / 4
            } else {
                max_br
            };
            (mbps <= max_mbps && mbs <= max_fs && br <= max_br).then_some(level)
        })
}

/// Rate-control mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitrateMode {
    /// Variable: quality first, bitrate is an average.
    Vbr = 0,
    /// Constant: what a narrow cellular uplink wants.
    Cbr = 1,
}

/// Everything set on the encoder before STREAMON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderParams {
    /// Profile.
    pub profile: Profile,
    /// Level (computed by [`level_for`]).
    pub level: Level,
    /// Rate control.
    pub mode: BitrateMode,
    /// Target bit/s.
    pub bitrate_bps: u32,
    /// Frames between IDR frames.
    pub i_period: u32,
}

/// Why encoder parameters cannot be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The stream exceeds H.264 level 4.2 (the encoder's limit).
    #[error("{width}x{height}@{fps} at {kbps} kbit/s exceeds H.264 level 4.2")]
    BeyondLevel {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Frame rate.
        fps: u32,
        /// Bitrate.
        kbps: u32,
    },
    /// A keyframe interval of zero.
    #[error("keyframe interval must be at least 1 frame")]
    KeyframeInterval,
}

impl EncoderParams {
    /// Parameters for a stream. Constrained Baseline keeps every viewer able
    /// to decode it; CBR keeps the uplink predictable.
    pub fn new(
        width: u32,
        height: u32,
        fps: u32,
        bitrate_kbps: u32,
        keyframe_interval: u32,
    ) -> Result<Self, ControlError> {
        if keyframe_interval == 0 {
            return Err(ControlError::KeyframeInterval);
        }
        let profile = Profile::ConstrainedBaseline;
        let bitrate_kbps = bitrate_kbps.clamp(super::tiers::MIN_KBPS, super::tiers::MAX_KBPS);
        let level = level_for(width, height, fps, bitrate_kbps, profile).ok_or(
            ControlError::BeyondLevel {
                width,
                height,
                fps,
                kbps: bitrate_kbps,
            },
        )?;
        Ok(EncoderParams {
            profile,
            level,
            mode: BitrateMode::Cbr,
            bitrate_bps: bitrate_kbps * 1000,
            i_period: keyframe_interval,
        })
    }

    /// `(control id, value)` pairs in the order to set them: profile and
    /// level first (the driver checks bitrate against them), then rate
    /// control, GOP and in-band headers. Repeating SPS/PPS before every IDR
    /// is what lets a viewer join at any keyframe.
    pub fn controls(&self) -> [(u32, i32); 6] {
        [
            (CID_H264_PROFILE, self.profile as i32),
            (CID_H264_LEVEL, self.level as i32),
            (CID_BITRATE_MODE, self.mode as i32),
            (
                CID_BITRATE,
                i32::try_from(self.bitrate_bps).unwrap_or(i32::MAX),
            ),
            (
                CID_H264_I_PERIOD,
                i32::try_from(self.i_period).unwrap_or(i32::MAX),
            ),
            (CID_REPEAT_SEQ_HEADER, 1),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_match_uapi() {
        // Values from include/uapi/linux/v4l2-controls.h (6.12).
        assert_eq!(CID_BITRATE, 0x0099_09cf);
        assert_eq!(CID_BITRATE_MODE, 0x0099_09ce);
        assert_eq!(CID_REPEAT_SEQ_HEADER, 0x0099_09e2);
        assert_eq!(CID_FORCE_KEY_FRAME, 0x0099_09e5);
        assert_eq!(CID_H264_I_PERIOD, 0x0099_0a66);
        assert_eq!(CID_H264_LEVEL, 0x0099_0a67);
        assert_eq!(CID_H264_PROFILE, 0x0099_0a6b);
    }

    #[test]
    fn levels_follow_table_a1() {
        let cb = Profile::ConstrainedBaseline;
        // 1080p30: 8160 MBs, 244,800 MB/s -> 4.0.
        assert_eq!(level_for(1920, 1080, 30, 4000, cb), Some(Level::L4_0));
        // ... but 25 Mbit/s needs 4.1's bitrate limit.
        assert_eq!(level_for(1920, 1080, 30, 25_000, cb), Some(Level::L4_1));
        // 720p30: 3600 MBs, 108,000 MB/s -> exactly 3.1.
        assert_eq!(level_for(1280, 720, 30, 2000, cb), Some(Level::L3_1));
        assert_eq!(level_for(1280, 720, 31, 2000, cb), Some(Level::L3_2));
        assert_eq!(level_for(640, 360, 10, 250, cb), Some(Level::L3_0));
        assert_eq!(level_for(1920, 1080, 60, 8000, cb), Some(Level::L4_2));
        assert_eq!(level_for(1920, 1920, 60, 8000, cb), None);
        // High profile gets 1.25x the bitrate.
        assert_eq!(level_for(1280, 720, 30, 17_000, cb), Some(Level::L3_2));
        assert_eq!(
            level_for(1280, 720, 30, 17_000, Profile::High),
            Some(Level::L3_1)
        );
    }

    #[test]
    fn params_and_control_order() {
        let p = EncoderParams::new(1280, 720, 30, 2000, 60).expect("params");
        assert_eq!(
            p.controls(),
            [
                (CID_H264_PROFILE, 1),
                (CID_H264_LEVEL, 9),
                (CID_BITRATE_MODE, 1),
                (CID_BITRATE, 2_000_000),
                (CID_H264_I_PERIOD, 60),
                (CID_REPEAT_SEQ_HEADER, 1),
            ]
        );
        // Bitrate clamped into the encoder's range before the level is chosen.
        assert_eq!(
            EncoderParams::new(640, 360, 10, 1, 10)
                .expect("p")
                .bitrate_bps,
            50_000
        );
        assert_eq!(
            EncoderParams::new(640, 360, 10, 500, 0),
            Err(ControlError::KeyframeInterval)
        );
        assert!(matches!(
            EncoderParams::new(1920, 1920, 60, 500, 30),
            Err(ControlError::BeyondLevel { .. })
        ));
        let big = EncoderParams {
            i_period: u32::MAX,
            ..p
        };
        assert_eq!(big.controls()[4].1, i32::MAX);
    }
}
