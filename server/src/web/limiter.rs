//! Login throttling, sans-IO (time is passed in): after a few failures from
//! one client address or for one account name, each further attempt must
//! wait twice as long as the last, up to [`MAX_DELAY_MS`]. A success clears
//! the client's and the name's records. Memory is bounded: at most
//! [`MAX_ENTRIES`] keys, the stalest forgotten first.

use std::collections::HashMap;

/// Failures allowed before attempts are delayed.
pub const FREE_FAILURES: u32 = 3;
/// Delay after the first delayed failure.
pub const BASE_DELAY_MS: u64 = 1_000;
/// Longest delay.
pub const MAX_DELAY_MS: u64 = 60_000;
/// A key's failures are forgotten this long after its last one.
pub const FORGET_AFTER_MS: u64 = 15 * 60_000;
/// Keys tracked at most.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure_ms: u64,
    next_allowed_ms: u64,
}

/// The throttle.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    entries: HashMap<String, Entry>,
}

impl LoginLimiter {
    /// A throttle with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(ms)`: the attempt must wait this long; `Ok`: it may proceed.
    pub fn check(&self, keys: &[&str], now_ms: u64) -> Result<(), u64> {
        let wait = keys
            .iter()
            .filter_map(|k| self.entries.get(*k))
            .filter(|e| now_ms.saturating_sub(e.last_failure_ms) < FORGET_AFTER_MS)
            .map(|e| e.next_allowed_ms.saturating_sub(now_ms))
            .max()
            .unwrap_or(0);
        if wait == 0 {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Records a failed attempt for every key.
    pub fn failure(&mut self, keys: &[&str], now_ms: u64) {
        for k in keys {
            let e = self.entries.entry((*k).to_owned()).or_insert(Entry {
                failures: 0,
                last_failure_ms: now_ms,
                next_allowed_ms: 0,
            });
            if now_ms.saturating_sub(e.last_failure_ms) >= FORGET_AFTER_MS {
                e.failures = 0;
            }
            e.failures += 1;
            e.last_failure_ms = now_ms;
            e.next_allowed_ms = now_ms + delay_ms(e.failures);
        }
        if self.entries.len() > MAX_ENTRIES {
            self.entries
                .retain(|_, e| now_ms.saturating_sub(e.last_failure_ms) < FORGET_AFTER_MS);
            while self.entries.len() > MAX_ENTRIES {
                let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure_ms)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
    }

    /// Clears the keys' records.
    pub fn success(&mut self, keys: &[&str]) {
        for k in keys {
            self.entries.remove(*k);
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The wait after `failures` failures.
pub fn delay_ms(failures: u32) -> u64 {
    if failures <= FREE_FAILURES {
        return 0;
    }
    let doublings = (failures - FREE_FAILURES - 1).min(16);
    (BASE_DELAY_MS << doublings).min(MAX_DELAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_after_free_failures_and_cap() {
        assert_eq!(
            (1..=10).map(delay_ms).collect::<Vec<_>>(),
            [0, 0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000]
        );
        assert_eq!(delay_ms(u32::MAX), MAX_DELAY_MS);
    }

    #[test]
    fn a_client_is_slowed_then_forgiven() {
        let mut l = LoginLimiter::new();
        let keys = ["ip:10.0.0.2", "name:owner"];
        for t in 0..3 {
            assert_eq!(l.check(&keys, t), Ok(()));
            l.failure(&keys, t);
        }
        assert_eq!(l.check(&keys, 3), Ok(()));
        l.failure(&keys, 3);
        assert_eq!(l.check(&keys, 503), Err(500));
        // Another client trying the same name is slowed too.
        assert_eq!(l.check(&["ip:10.0.0.9", "name:owner"], 503), Err(500));
        assert_eq!(l.check(&keys, 1_003), Ok(()));
        l.failure(&keys, 1_003);
        assert_eq!(l.check(&keys, 1_003), Err(2_000));
        // Long after the last failure, the record is forgotten.
        assert_eq!(l.check(&keys, 1_003 + FORGET_AFTER_MS), Ok(()));
        l.success(&keys);
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = LoginLimiter::new();
        for i in 0..(MAX_ENTRIES as u64 + 50) {
            l.failure(&[&format!("ip:{i}")], i);
        }
        assert_eq!(l.len(), MAX_ENTRIES);
        assert_eq!(l.check(&["ip:0"], MAX_ENTRIES as u64 + 50), Ok(()));
    }
}
