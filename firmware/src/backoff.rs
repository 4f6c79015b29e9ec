//! Capped exponential backoff for reconnecting, sans-IO.

use std::time::Duration;

/// Delays double from `initial` up to `max`; [`Backoff::reset`] after a
/// session that got going. A little jitter (supplied by the caller, so tests
/// stay deterministic) keeps a fleet of cameras from reconnecting in lockstep
/// after a server restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt; `jitter` in `0.0..1.0` adds up to 25%.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let extra = base.mul_f64(jitter.clamp(0.0, 1.0) * 0.25);
        (base + extra).min(self.max)
    }

    /// Starts again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let seq: Vec<u64> = (0..5)
            .map(|_| b.next_delay(0.0).as_millis() as u64)
            .collect();
        assert_eq!(seq, vec![100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(250));
    }
}
