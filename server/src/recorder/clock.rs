//! Injected time: the recorder asks a [`Clock`] for wall-clock and monotonic
//! time, so tests and benchmarks can run it on a simulated clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time, µs since the Unix epoch (UTC).
    fn wall_us(&self) -> i64;
    /// Monotonic time since an arbitrary start.
    fn monotonic(&self) -> Duration;
}

/// The system clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock reading the system time.
    pub fn new() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn wall_us(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            // A clock set before 1970: report the epoch rather than panic.
            Err(_) => 0,
        }
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct SimulatedClock {
    wall_us: AtomicI64,
    mono_us: AtomicI64,
}

impl SimulatedClock {
    /// A clock reading `wall_us`, monotonic zero.
    pub fn new(wall_us: i64) -> Self {
        SimulatedClock {
            wall_us: AtomicI64::new(wall_us),
            mono_us: AtomicI64::new(0),
        }
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.wall_us.fetch_add(us, Ordering::SeqCst);
        self.mono_us.fetch_add(us, Ordering::SeqCst);
    }

    /// Steps the wall clock only (an NTP correction).
    pub fn set_wall_us(&self, wall_us: i64) {
        self.wall_us.store(wall_us, Ordering::SeqCst);
    }
}

impl Clock for SimulatedClock {
    fn wall_us(&self) -> i64 {
        self.wall_us.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_micros(self.mono_us.load(Ordering::SeqCst).max(0) as u64)
    }
}
