//! A sliding per-second rate meter (sans-IO: the caller passes the time).

/// Seconds averaged by [`RateMeter::rates`]: long enough to smooth a GOP's
/// keyframe burst at 1–2 s GOPs, short enough to show a drop at once.
pub const WINDOW_SECS: u64 = 5;

const BUCKETS: usize = WINDOW_SECS as usize + 1;

/// Frames and bytes per whole second over the last [`WINDOW_SECS`] complete
/// seconds (the current, partial second is not counted).
#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    /// (second since the epoch, frames, bytes), indexed by second modulo the length.
    buckets: [(u64, u64, u64); BUCKETS],
}

impl RateMeter {
    /// Counts one frame of `bytes` at `now_ms` (ms since any fixed epoch).
    pub fn record(&mut self, now_ms: u64, bytes: u64) {
        let sec = now_ms / 1000;
        let b = &mut self.buckets[(sec % BUCKETS as u64) as usize];
        if b.0 != sec {
            *b = (sec, 0, 0);
        }
        b.1 += 1;
        b.2 += bytes;
    }

    /// (frames per second, bits per second) at `now_ms`.
    pub fn rates(&self, now_ms: u64) -> (f64, f64) {
        let now = now_ms / 1000;
        let (frames, bytes) = self
            .buckets
            .iter()
            .filter(|b| b.0 < now && b.0 + WINDOW_SECS >= now && (b.1 > 0))
            .fold((0, 0), |(f, by), b| (f + b.1, by + b.2));
        let secs = WINDOW_SECS as f64;
        (frames as f64 / secs, bytes as f64 * 8.0 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_complete_seconds_and_forgets_old_ones() {
        let mut m = RateMeter::default();
        // 30 fps of 1000-byte frames for 10 s starting at t = 100 s.
        for i in 0..300u64 {
            m.record(100_000 + i * 1000 / 30, 1000);
        }
        let (fps, bps) = m.rates(110_000);
        assert!((fps - 30.0).abs() < 0.5, "{fps}");
        assert!((bps - 240_000.0).abs() < 4_000.0, "{bps}");
        // The partial current second is left out.
        m.record(110_100, 1_000_000);
        assert!((m.rates(110_500).1 - bps).abs() < 1.0);
        // Silence: the rate falls to zero once the window has passed.
        assert_eq!(m.rates(117_000), (0.0, 0.0));
        // A stale bucket that wrapped around is not counted.
        let mut m = RateMeter::default();
        m.record(1_000, 500);
        assert_eq!(m.rates(1_000 + 1000 * BUCKETS as u64 * 3), (0.0, 0.0));
    }
}
