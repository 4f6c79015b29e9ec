//! Resolution/frame-rate tiers for adaptive bitrate, and the IMX219 sensor
//! mode each one reads out.
//!
//! A tier is what the uplink asks for when the link gets better or worse: a
//! picture size, a frame rate and the bitrate range that size looks right
//! in. Within a tier only the bitrate moves (a control on the running
//! encoder); crossing a tier restarts capture and encoder with a new format.

use super::format::FormatError;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Stable name, for logs and telemetry (`"720p30"`).
    pub name: &'static str,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Lowest bitrate this tier is used at; below it the next tier down wins.
    pub min_kbps: u32,
    /// Bitrate the tier starts at.
    pub default_kbps: u32,
    /// Above this the picture stops improving; bitrate is clamped here.
    pub max_kbps: u32,
}

/// The ladder, best first. Sizes are 16:9 with widths a multiple of 16 (the
/// ISP's and encoder's line alignment); heights that are not whole
/// macroblocks (1080, 360) are coded as 1088/368 with a cropping rectangle in
/// the SPS (H.264 clause 7.4.2.1.1, frame_crop_*). Bitrates are what the
/// bcm2835 encoder needs for a mostly static security scene at that size
/// (roughly 0.05–0.1 bit per pixel per frame at the default).
pub const TIERS: [Tier; 5] = [
    Tier {
        name: "1080p30",
        width: 1920,
        height: 1080,
        fps: 30,
        min_kbps: 2500,
        default_kbps: 4000,
        max_kbps: 8000,
    },
    Tier {
        name: "720p30",
        width: 1280,
        height: 720,
        fps: 30,
        min_kbps: 1200,
        default_kbps: 2000,
        max_kbps: 4000,
    },
    Tier {
        name: "720p15",
        width: 1280,
        height: 720,
        fps: 15,
        min_kbps: 600,
        default_kbps: 1000,
        max_kbps: 2000,
    },
    Tier {
        name: "480p15",
        width: 848,
        height: 480,
        fps: 15,
        min_kbps: 300,
        default_kbps: 500,
        max_kbps: 1000,
    },
    Tier {
        name: "360p10",
        width: 640,
        height: 360,
        fps: 10,
        min_kbps: 50,
        default_kbps: 250,
        max_kbps: 500,
    },
];

/// Index into [`TIERS`]; 0 is the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TierId(pub usize);

impl TierId {
    /// The tier's parameters; out-of-range ids clamp to the lowest tier.
    pub fn tier(self) -> &'static Tier {
        &TIERS[self.0.min(TIERS.len() - 1)]
    }
}

/// The best tier whose `min_kbps` the bitrate reaches (the lowest tier when
/// it reaches none).
pub fn tier_for_bitrate(kbps: u32) -> TierId {
    TierId(
        TIERS
            .iter()
            .position(|t| kbps >= t.min_kbps)
            .unwrap_or(TIERS.len() - 1),
    )
}

/// What a bitrate request does to a running source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitrateDecision {
    /// Same tier: set the encoder's bitrate control to this many bit/s.
    SetBitrate {
        /// V4L2_CID_MPEG_VIDEO_BITRATE value.
        bps: u32,
    },
    /// A different tier: restart capture and encoder in it at this bitrate.
    SwitchTier {
        /// The new tier.
        tier: TierId,
        /// Its bitrate, bit/s.
        bps: u32,
    },
}

/// Decides how to follow a bitrate request.
///
/// With `adaptive_tiers` off the format never changes and the bitrate is
/// only clamped to the encoder's range. With it on, a request outside the
/// current tier's `[min_kbps, max_kbps]` moves to the tier that fits; small
/// wobbles around a boundary therefore do not restart the camera, because a
/// tier keeps everything between its own min and max.
pub fn decide_bitrate(current: TierId, kbps: u32, adaptive_tiers: bool) -> BitrateDecision {
    let tier = current.tier();
    if !adaptive_tiers || (tier.min_kbps..=tier.max_kbps).contains(&kbps) {
        let kbps = if adaptive_tiers {
            kbps
        } else {
            kbps.clamp(MIN_KBPS, MAX_KBPS)
        };
        return BitrateDecision::SetBitrate {
            bps: kbps.saturating_mul(1000),
        };
    }
    let next = tier_for_bitrate(kbps);
    let t = next.tier();
    let kbps = kbps.clamp(t.min_kbps, t.max_kbps);
    if next == current {
        BitrateDecision::SetBitrate { bps: kbps * 1000 }
    } else {
        BitrateDecision::SwitchTier {
            tier: next,
            bps: kbps * 1000,
        }
    }
}

/// The bcm2835-codec's bitrate control range is 25 kbit/s .. 25 Mbit/s
/// (`V4L2_CID_MPEG_VIDEO_BITRATE` min/max in bcm2835-v4l2-codec.c); Kodama
/// stays inside it with margin.
pub const MIN_KBPS: u32 = 50;
/// Upper end, see [`MIN_KBPS`].
pub const MAX_KBPS: u32 = 20_000;

/// An IMX219 readout mode (Linux `drivers/media/i2c/imx219.c`,
/// `supported_modes`; maximum rates from the Raspberry Pi camera
/// documentation for the 10-bit modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorMode {
    /// Output width of the sensor in this mode.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Highest frame rate the mode reaches.
    pub max_fps: u32,
    /// Whether the mode sees the whole pixel array (binned) or a crop.
    pub full_field_of_view: bool,
}

/// IMX219 modes, smallest first.
pub const IMX219_MODES: [SensorMode; 4] = [
    SensorMode {
        width: 640,
        height: 480,
        max_fps: 103,
        full_field_of_view: false,
    },
    SensorMode {
        width: 1640,
        height: 1232,
        max_fps: 41,
        full_field_of_view: true,
    },
    SensorMode {
        width: 1920,
        height: 1080,
        max_fps: 47,
        full_field_of_view: false,
    },
    SensorMode {
        width: 3280,
        height: 2464,
        max_fps: 21,
        full_field_of_view: true,
    },
];

/// The sensor mode to read `width`x`height` at `fps` from: the smallest one
/// that covers the size and reaches the rate. Small modes mean less CSI-2 and
/// ISP bandwidth, which is what limits a Pi Zero 2W; ties go to the full
/// field of view.
pub fn sensor_mode_for(width: u32, height: u32, fps: u32) -> Result<SensorMode, FormatError> {
    IMX219_MODES
        .iter()
        .filter(|m| m.width >= width && m.height >= height && m.max_fps >= fps)
        .min_by_key(|m| {
            (
                u64::from(m.width) * u64::from(m.height),
                !m.full_field_of_view,
            )
        })
        .copied()
        .ok_or(FormatError::NoSensorMode { width, height, fps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_is_ordered_and_contiguous() {
        for pair in TIERS.windows(2) {
            let (hi, lo) = (&pair[0], &pair[1]);
            assert!(
                u64::from(hi.width) * u64::from(hi.height) * u64::from(hi.fps)
                    > u64::from(lo.width) * u64::from(lo.height) * u64::from(lo.fps)
            );
            assert!(hi.min_kbps > lo.min_kbps, "{} vs {}", hi.name, lo.name);
            // Every bitrate between the lowest min and the highest max lands in some tier.
            assert!(
                lo.max_kbps >= hi.min_kbps,
                "gap between {} and {}",
                lo.name,
                hi.name
            );
        }
        for t in &TIERS {
            assert!(
                t.min_kbps <= t.default_kbps && t.default_kbps <= t.max_kbps,
                "{}",
                t.name
            );
            assert_eq!(t.width % 16, 0, "{}", t.name);
            assert_eq!(t.height % 8, 0, "{}", t.name);
            assert!(
                sensor_mode_for(t.width, t.height, t.fps).is_ok(),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn tier_for_bitrate_picks_best_reachable() {
        assert_eq!(tier_for_bitrate(10_000), TierId(0));
        assert_eq!(tier_for_bitrate(2500), TierId(0));
        assert_eq!(tier_for_bitrate(2499), TierId(1));
        assert_eq!(tier_for_bitrate(700), TierId(2));
        assert_eq!(tier_for_bitrate(300), TierId(3));
        assert_eq!(tier_for_bitrate(100), TierId(4));
        assert_eq!(tier_for_bitrate(0), TierId(4));
        assert_eq!(TierId(99).tier().name, "360p10");
    }

    #[test]
    fn bitrate_inside_tier_only_sets_control() {
        assert_eq!(
            decide_bitrate(TierId(1), 1500, true),
            BitrateDecision::SetBitrate { bps: 1_500_000 }
        );
        // Hysteresis: 3000 kbit/s would pick 1080p from scratch, but 720p30 keeps it.
        assert_eq!(
            decide_bitrate(TierId(1), 3000, true),
            BitrateDecision::SetBitrate { bps: 3_000_000 }
        );
    }

    #[test]
    fn bitrate_outside_tier_switches() {
        assert_eq!(
            decide_bitrate(TierId(1), 800, true),
            BitrateDecision::SwitchTier {
                tier: TierId(2),
                bps: 800_000
            }
        );
        assert_eq!(
            decide_bitrate(TierId(2), 6000, true),
            BitrateDecision::SwitchTier {
                tier: TierId(0),
                bps: 6_000_000
            }
        );
        // Below the bottom tier: stay, clamped to its minimum.
        assert_eq!(
            decide_bitrate(TierId(4), 10, true),
            BitrateDecision::SetBitrate { bps: 50_000 }
        );
    }

    #[test]
    fn fixed_format_clamps_to_encoder_range() {
        assert_eq!(
            decide_bitrate(TierId(0), 10, false),
            BitrateDecision::SetBitrate { bps: 50_000 }
        );
        assert_eq!(
            decide_bitrate(TierId(4), 90_000, false),
            BitrateDecision::SetBitrate { bps: 20_000_000 }
        );
        assert_eq!(
            decide_bitrate(TierId(4), 9000, false),
            BitrateDecision::SetBitrate { bps: 9_000_000 }
        );
    }

    #[test]
    fn sensor_mode_selection() {
        // 1080p needs the cropped 1080 mode (the binned one is 1640 wide).
        assert_eq!(
            sensor_mode_for(1920, 1080, 30).map(|m| (m.width, m.height)),
            Ok((1920, 1080))
        );
        // 1920x1088 (whole macroblocks) no longer fits 1080 rows: full readout, 21 fps max.
        assert!(sensor_mode_for(1920, 1088, 30).is_err());
        assert_eq!(sensor_mode_for(1920, 1088, 15).map(|m| m.width), Ok(3280));
        // 720p: the binned full-FoV mode is smaller than the 1080 crop.
        assert_eq!(
            sensor_mode_for(1280, 720, 30).map(|m| (m.width, m.height)),
            Ok((1640, 1232))
        );
        assert_eq!(sensor_mode_for(640, 360, 10).map(|m| m.width), Ok(640));
        assert_eq!(sensor_mode_for(640, 480, 90).map(|m| m.width), Ok(640));
        assert_eq!(
            sensor_mode_for(640, 480, 120),
            Err(FormatError::NoSensorMode {
                width: 640,
                height: 480,
                fps: 120
            })
        );
        assert!(sensor_mode_for(4000, 3000, 1).is_err());
    }
}
