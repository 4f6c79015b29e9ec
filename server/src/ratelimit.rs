//! Token buckets for pairing attempts, sans-IO: every call takes `now`.
//!
//! Two buckets must both have a token for an attempt to go ahead: one per
//! peer key and one for the whole server. Keys cost nothing to make, so the
//! per-peer bucket only slows a clumsy client; the overall bucket is what
//! bounds a guesser (with the defaults, 30 guesses a minute against 2^60
//! codes that live an hour).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Bucket sizes and refill rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Attempts a peer may make in a burst.
    pub per_peer_burst: u32,
    /// One more attempt per peer every this long.
    pub per_peer_every: Duration,
    /// Attempts everyone together may make in a burst.
    pub overall_burst: u32,
    /// One more attempt overall every this long.
    pub overall_every: Duration,
    /// Peers remembered at once; beyond that, new peers wait for the oldest
    /// buckets to refill (bounded memory under a flood of fresh keys).
    pub max_peers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_peer_burst: 5,
            per_peer_every: Duration::from_secs(12),
            overall_burst: 30,
            overall_every: Duration::from_secs(2),
            max_peers: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, burst: u32, every: Duration, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() / every.as_secs_f64();
        self.tokens = (self.tokens + gained).min(f64::from(burst));
        self.at = now;
    }

    fn wait(&self, every: Duration) -> Duration {
        every.mul_f64((1.0 - self.tokens).max(0.0))
    }
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// The limiter.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limits: Limits,
    overall: Bucket,
    peers: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter whose buckets start full at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            overall: Bucket::full(limits.overall_burst, now),
            peers: HashMap::new(),
        }
    }

    /// Takes a token for `peer` if both buckets have one.
    pub fn check(&mut self, peer: &K, now: Instant) -> Result<(), RetryAfter> {
        let l = self.limits;
        self.overall.refill(l.overall_burst, l.overall_every, now);
        if !self.peers.contains_key(peer) && self.peers.len() >= l.max_peers {
            // Forget peers whose buckets are full again: they lose nothing.
            self.peers.retain(|_, b| {
                b.refill(l.per_peer_burst, l.per_peer_every, now);
                b.tokens < f64::from(l.per_peer_burst)
            });
            if self.peers.len() >= l.max_peers {
                return Err(RetryAfter(l.per_peer_every));
            }
        }
        let bucket = self
            .peers
            .entry(peer.clone())
            .or_insert_with(|| Bucket::full(l.per_peer_burst, now));
        bucket.refill(l.per_peer_burst, l.per_peer_every, now);
        if bucket.tokens < 1.0 {
            return Err(RetryAfter(bucket.wait(l.per_peer_every)));
        }
        if self.overall.tokens < 1.0 {
            return Err(RetryAfter(self.overall.wait(l.overall_every)));
        }
        bucket.tokens -= 1.0;
        self.overall.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_peer_burst: 2,
            per_peer_every: Duration::from_secs(10),
            overall_burst: 3,
            overall_every: Duration::from_secs(1),
            max_peers: 4,
        }
    }

    #[test]
    fn per_peer_then_overall_limits_apply_and_refill() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limits(), t0);
        assert!(r.check(&"a", t0).is_ok());
        assert!(r.check(&"a", t0).is_ok());
        let RetryAfter(wait) = r.check(&"a", t0).expect_err("peer bucket empty");
        assert_eq!(wait, Duration::from_secs(10));
        assert!(r.check(&"b", t0).is_ok());
        assert!(r.check(&"c", t0).is_err(), "overall bucket empty");
        assert!(r.check(&"c", t0 + Duration::from_secs(1)).is_ok());
        assert!(r.check(&"a", t0 + Duration::from_secs(5)).is_err());
        assert!(r.check(&"a", t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_flood_of_fresh_keys_is_bounded() {
        let t0 = Instant::now();
        let mut l = limits();
        l.overall_burst = 1000;
        let mut r = RateLimiter::new(l, t0);
        let allowed = (0..100).filter(|k| r.check(k, t0).is_ok()).count();
        assert_eq!(allowed, 4, "no more than max_peers fresh keys at once");
        assert!(r.peers.len() <= 4);
        // Once their buckets refill, the old peers are forgotten.
        let later = t0 + Duration::from_secs(60);
        assert!(r.check(&1000, later).is_ok());
    }
}
