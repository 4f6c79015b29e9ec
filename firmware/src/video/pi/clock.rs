//! Timestamps: libcamera's `SensorTimestamp` to `capture_us` (µs since the
//! Unix epoch, the protocol's frame time), and through the encoder.
//!
//! `SensorTimestamp` is the start of exposure of the first line, in
//! nanoseconds on `CLOCK_MONOTONIC` (libcamera `control_ids_core.yaml`;
//! it comes from the V4L2 buffer timestamp, which the unicam driver stamps
//! with `V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`). Wall-clock time jumps (NTP,
//! the modem's network time), so the monotonic-to-Unix offset is sampled
//! at start and whenever the wall clock is stepped, never per frame.
//!
//! The encoder copies each OUTPUT buffer's `timestamp` to the CAPTURE buffer
//! that carries its coded frame (spec "Memory-to-Memory Stateful Video
//! Encoder Interface", section "Encoding": "the timestamp ... copied from
//! the OUTPUT buffer"), so the sensor time rides through the encoder as a
//! `struct timeval` and no lookup table is needed.

/// One reading of both clocks: monotonic before, wall, monotonic after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// `CLOCK_MONOTONIC` just before reading the wall clock, ns.
    pub mono_before_ns: u64,
    /// `CLOCK_REALTIME`, ns since the Unix epoch.
    pub real_ns: u64,
    /// `CLOCK_MONOTONIC` just after, ns.
    pub mono_after_ns: u64,
}

/// Maps monotonic nanoseconds to Unix microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMap {
    /// `real - mono`, ns.
    offset_ns: i128,
    /// Half the bracket of the sample used: the offset's uncertainty.
    pub uncertainty_ns: u64,
}

impl ClockMap {
    /// The offset from the tightest of several samples (the one where the
    /// wall-clock read was least likely preempted). `None` without samples.
    pub fn from_samples(samples: &[ClockSample]) -> Option<Self> {
        let best = samples
            .iter()
            .filter(|s| s.mono_after_ns >= s.mono_before_ns)
            .min_by_key(|s| s.mono_after_ns - s.mono_before_ns)?;
        let span = best.mono_after_ns - best.mono_before_ns;
        let mid = i128::from(best.mono_before_ns) + i128::from(span / 2);
        Some(ClockMap {
            offset_ns: i128::from(best.real_ns) - mid,
            uncertainty_ns: span / 2 + span % 2,
        })
    }

    /// A sensor timestamp as µs since the Unix epoch (0 if it would fall
    /// before the epoch, which only a broken clock produces).
    pub fn to_unix_us(&self, mono_ns: u64) -> u64 {
        let real = i128::from(mono_ns) + self.offset_ns;
        u64::try_from(real.max(0) / 1000).unwrap_or(u64::MAX)
    }

    /// Whether a fresh sample disagrees by more than `tolerance_ns` (the wall
    /// clock was stepped): the caller then replaces the map.
    pub fn stepped(&self, fresh: &ClockMap, tolerance_ns: u64) -> bool {
        self.offset_ns.abs_diff(fresh.offset_ns) > u128::from(tolerance_ns)
    }
}

/// Nanoseconds as a V4L2 `struct timeval` (seconds, microseconds).
pub fn timeval_from_ns(ns: u64) -> (i64, i64) {
    let secs = ns / 1_000_000_000;
    let usec = (ns % 1_000_000_000) / 1000;
    (i64::try_from(secs).unwrap_or(i64::MAX), usec as i64)
}

/// A V4L2 `struct timeval` back to nanoseconds (µs precision). Negative or
/// out-of-range fields (a driver that did not copy the timestamp) give `None`.
pub fn ns_from_timeval(sec: i64, usec: i64) -> Option<u64> {
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return None;
    }
    u64::try_from(sec)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(usec).ok()? * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn picks_tightest_sample() {
        let samples = [
            ClockSample {
                mono_before_ns: 1_000,
                real_ns: 1_700_000_000_000_009_000,
                mono_after_ns: 9_000,
            },
            ClockSample {
                mono_before_ns: 20_000,
                real_ns: 1_700_000_000_000_020_500,
                mono_after_ns: 21_000,
            },
        ];
        let m = ClockMap::from_samples(&samples).expect("map");
        assert_eq!(m.uncertainty_ns, 500);
        // mono 20_500 <-> real ...020_500: offset = 1.7e18.
        assert_eq!(m.to_unix_us(1_000_000), 1_700_000_000_001_000);
        assert_eq!(ClockMap::from_samples(&[]), None);
        let backwards = ClockSample {
            mono_before_ns: 10,
            real_ns: 0,
            mono_after_ns: 5,
        };
        assert_eq!(ClockMap::from_samples(&[backwards]), None);
    }

    #[test]
    fn before_epoch_clamps_to_zero() {
        let m = ClockMap::from_samples(&[ClockSample {
            mono_before_ns: 5_000_000_000,
            real_ns: 1_000,
            mono_after_ns: 5_000_000_000,
        }])
        .expect("map");
        assert_eq!(m.to_unix_us(0), 0);
    }

    #[test]
    fn detects_steps() {
        let a = ClockMap::from_samples(&[ClockSample {
            mono_before_ns: 0,
            real_ns: 1_000_000,
            mono_after_ns: 0,
        }])
        .expect("a");
        let b = ClockMap::from_samples(&[ClockSample {
            mono_before_ns: 0,
            real_ns: 1_400_000,
            mono_after_ns: 0,
        }])
        .expect("b");
        assert!(!a.stepped(&b, 1_000_000));
        assert!(a.stepped(&b, 100_000));
    }

    #[test]
    fn timeval_edges() {
        assert_eq!(timeval_from_ns(1_234_567_891_999), (1234, 567_891));
        assert_eq!(ns_from_timeval(1234, 567_891), Some(1_234_567_891_000));
        assert_eq!(ns_from_timeval(-1, 0), None);
        assert_eq!(ns_from_timeval(0, 1_000_000), None);
        assert_eq!(ns_from_timeval(i64::MAX, 0), None);
    }

    proptest! {
        #[test]
        fn timeval_round_trip_keeps_microseconds(ns in any::<u64>()) {
            let (s, us) = timeval_from_ns(ns);
            prop_assert_eq!(ns_from_timeval(s, us), Some(ns / 1000 * 1000));
        }

        #[test]
        fn mapping_is_monotonic(a in 0u64..u64::MAX / 2, d in 0u64..1_000_000_000_000, real in any::<u64>(), mono in 0u64..u64::MAX / 2) {
            let m = ClockMap::from_samples(&[ClockSample { mono_before_ns: mono, real_ns: real, mono_after_ns: mono }]).expect("map");
            prop_assert!(m.to_unix_us(a) <= m.to_unix_us(a + d));
        }
    }
}
