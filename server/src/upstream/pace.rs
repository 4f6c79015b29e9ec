//! The bandwidth cap of one upstream: a token bucket over the bytes handed
//! to the connection, shared by every camera forwarded there. Sans-IO
//! (`now` passed in). Live video asks first and may use the whole bucket;
//! backfill only takes what leaves the bucket at least half full, so a
//! backlog never holds live back.

use std::time::{Duration, Instant};

/// Seconds of the cap the bucket holds (burst).
const BURST_SECONDS: f64 = 1.0;

/// Smallest bucket: a few frames at a low cap. A keyframe larger than the
/// bucket still goes (when it is full, leaving a debt); a bigger floor
/// would only let a low cap be overrun for longer after a quiet spell.
const MIN_BURST_BYTES: f64 = 64.0 * 1024.0;

/// A token bucket; `None` rate means no cap.
#[derive(Debug, Clone)]
pub struct Pace {
    bytes_per_s: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pace {
    /// A cap of `kbps` kbit/s (0: none), full at `now`.
    pub fn new(kbps: u32, now: Instant) -> Self {
        let bytes_per_s = (kbps > 0).then(|| f64::from(kbps) * 1000.0 / 8.0);
        let burst = bytes_per_s.map_or(0.0, |r| (r * BURST_SECONDS).max(MIN_BURST_BYTES));
        Self {
            bytes_per_s,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.bytes_per_s {
            let dt = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(self.burst);
        }
        self.last = self.last.max(now);
    }

    /// Live: takes `bytes` if the bucket holds them (a frame larger than
    /// the whole bucket goes when it is full, leaving a debt).
    pub fn take_live(&mut self, bytes: usize, now: Instant) -> bool {
        self.take(bytes, now, 0.0)
    }

    /// Backfill: takes `bytes` only if at least half the bucket remains
    /// for live afterwards (or, for a GOP larger than that, when full).
    pub fn take_backfill(&mut self, bytes: usize, now: Instant) -> bool {
        self.take(bytes, now, self.burst / 2.0)
    }

    fn take(&mut self, bytes: usize, now: Instant, reserve: f64) -> bool {
        if self.bytes_per_s.is_none() {
            return true;
        }
        self.refill(now);
        let want = bytes as f64;
        let fits = self.tokens - want >= reserve;
        let oversized = want + reserve > self.burst && self.tokens >= self.burst;
        if fits || oversized {
            self.tokens -= want;
            true
        } else {
            false
        }
    }

    /// How long until `bytes` of live video would fit (zero without a cap).
    pub fn wait_live(&self, bytes: usize) -> Duration {
        let Some(rate) = self.bytes_per_s else {
            return Duration::ZERO;
        };
        let need = (bytes as f64).min(self.burst) - self.tokens;
        Duration::from_secs_f64((need / rate).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cap_takes_everything() {
        let t0 = Instant::now();
        let mut p = Pace::new(0, t0);
        assert!(p.take_live(usize::MAX / 2, t0));
        assert!(p.take_backfill(usize::MAX / 2, t0));
        assert_eq!(p.wait_live(1 << 30), Duration::ZERO);
    }

    #[test]
    fn the_cap_holds_over_time_and_backfill_leaves_live_its_half() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1 MB/s; burst 1 MB.
        let mut p = Pace::new(8_000, t0);
        let mut sent = 0usize;
        let ms = Duration::from_millis;
        for i in 0..10_000u64 {
            let now = t0 + ms(i);
            while p.take_live(10_000, now) {
                sent += 10_000;
            }
        }
        // 10 s at 1 MB/s plus the initial burst.
        assert!((10_900_000..=11_100_000).contains(&sent), "{sent}");
        let now = t0 + ms(10_000);
        assert!(!p.take_backfill(10_000, now), "empty bucket: live first");
        let later = now + ms(600);
        assert!(p.take_backfill(10_000, later), "over half full again");
        assert!(p.wait_live(200_000) <= ms(200));
    }

    #[test]
    fn a_frame_bigger_than_the_bucket_goes_when_it_is_full() {
        let t0 = Instant::now();
        let mut p = Pace::new(1_000, t0); // 125 kB/s, burst 125 kB
        assert!(
            p.take_live(600_000, t0),
            "full bucket: goes, leaving a debt"
        );
        assert!(!p.take_live(1, t0 + Duration::from_millis(100)));
        assert!(p.wait_live(1) > Duration::ZERO);
    }
}
