//! Maps a camera's capture clock to the server's wall clock, following drift
//! without letting network jitter move the timeline (Moonfire's rule: correct
//! by at most 500 ppm of elapsed time). Sans-IO: every call carries the
//! arrival time.

/// Largest correction rate: 500 µs per second of capture time.
pub const MAX_SLEW_PPM: i64 = 500;

/// A difference between prediction and observation beyond which the camera's
/// clock is taken to have been reset, and the mapping starts over.
pub const RESET_US: i64 = 5_000_000;

/// The mapping of one camera.
#[derive(Debug, Clone, Default)]
pub struct WallMapper {
    /// wall = capture + offset.
    offset_us: Option<i64>,
    /// Capture time of the last observation.
    last_capture_us: u64,
    /// Total correction applied since the last reset (for logs).
    corrected_us: i64,
}

/// What an observation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The mapping was (re)initialised: the timeline is discontinuous.
    Reset,
    /// The offset moved by this many µs (bounded by the slew limit).
    Corrected(i64),
}

impl WallMapper {
    /// Feeds one observation: the frame captured at `capture_us` (camera
    /// clock) had arrived by `arrival_wall_us`.
    pub fn observe(&mut self, capture_us: u64, arrival_wall_us: i64) -> Observation {
        let observed = arrival_wall_us.saturating_sub(capture_us as i64);
        let Some(offset) = self.offset_us else {
            return self.reset(capture_us, observed);
        };
        let error = observed - offset;
        if error.abs() > RESET_US || capture_us < self.last_capture_us {
            return self.reset(capture_us, observed);
        }
        let elapsed = (capture_us - self.last_capture_us) as i64;
        let limit = elapsed.saturating_mul(MAX_SLEW_PPM) / 1_000_000;
        let step = error.clamp(-limit, limit);
        self.offset_us = Some(offset + step);
        self.last_capture_us = capture_us;
        self.corrected_us += step;
        Observation::Corrected(step)
    }

    fn reset(&mut self, capture_us: u64, observed: i64) -> Observation {
        self.offset_us = Some(observed);
        self.last_capture_us = capture_us;
        self.corrected_us = 0;
        Observation::Reset
    }

    /// Wall-clock time of a capture time, or `None` before any observation.
    pub fn wall_us(&self, capture_us: u64) -> Option<i64> {
        self.offset_us
            .map(|o| (capture_us as i64).saturating_add(o))
    }

    /// Total correction since the last reset, µs (the camera clock's drift
    /// as seen by the server, plus latency changes).
    pub fn corrected_us(&self) -> i64 {
        self.corrected_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_observation_resets() {
        let mut m = WallMapper::default();
        assert_eq!(m.wall_us(5), None);
        assert_eq!(
            m.observe(1_000_000, 1_700_000_000_000_000),
            Observation::Reset
        );
        assert_eq!(m.wall_us(1_000_000), Some(1_700_000_000_000_000));
    }

    #[test]
    fn follows_a_fast_camera_clock_at_bounded_rate() {
        // The camera clock runs 100 ppm fast: wall advances 0.9999 s per
        // camera second. The mapper follows exactly (within jitter bounds).
        let mut m = WallMapper::default();
        let base = 1_700_000_000_000_000i64;
        for i in 0..3600u64 {
            let cap = i * 1_000_000;
            let wall = base + (cap as i64) - (cap as i64) / 10_000;
            m.observe(cap, wall);
        }
        let cap = 3600 * 1_000_000u64;
        let truth = base + cap as i64 - cap as i64 / 10_000;
        let est = m.wall_us(cap).expect("initialised");
        assert!((est - truth).abs() < 2_000, "error {}", est - truth);
        assert!(m.corrected_us() < -300_000);
    }

    #[test]
    fn clock_jump_resets() {
        let mut m = WallMapper::default();
        m.observe(10_000_000, 100_000_000);
        assert_eq!(
            m.observe(11_000_000, 101_000_000),
            Observation::Corrected(0)
        );
        assert_eq!(m.observe(5_000_000, 102_000_000), Observation::Reset);
        assert_eq!(m.observe(6_000_000, 110_000_000), Observation::Reset);
    }

    proptest! {
        #[test]
        fn jitter_moves_the_timeline_by_at_most_500_ppm(jitter in proptest::collection::vec(0i64..400_000, 2..200)) {
            let mut m = WallMapper::default();
            let mut prev: Option<(u64, i64)> = None;
            for (i, j) in jitter.iter().enumerate() {
                let cap = i as u64 * 1_000_000;
                let obs = m.observe(cap, 1_000_000_000 + cap as i64 + j);
                let wall = m.wall_us(cap).expect("initialised");
                if let (Some((pcap, pwall)), Observation::Corrected(_)) = (prev, obs) {
                    let expected = (cap - pcap) as i64;
                    prop_assert!(((wall - pwall) - expected).abs() <= expected * MAX_SLEW_PPM / 1_000_000);
                }
                prev = Some((cap, wall));
            }
        }
    }
}
