//! Recovery policy for a modem that stops answering: a sans-IO state machine.
//!
//! Inputs carry `now`: [`RecoveryPolicy::on_answer`] (the modem answered, even
//! with an error), [`RecoveryPolicy::on_timeout`] (it did not),
//! [`RecoveryPolicy::on_probe`] (the result of the `AT` probe it asked for).
//! Output: [`RecoveryPolicy::poll_action`] and [`RecoveryPolicy::poll_timeout`].
//!
//! Ladder (each step logged by the supervisor):
//! 1. `max_timeouts` consecutive timeouts → [`Action::ResetByAt`] (`AT+CFUN=1,1`),
//!    then wait `reboot_wait` and [`Action::Probe`];
//! 2. probe fails → [`Action::PowerCycle`] (PWRKEY), wait `reboot_wait`, probe;
//! 3. probe fails again → wait `backoff(n)` = `backoff_base · 2^(n-1)` capped at
//!    `backoff_max`, power-cycle again, and so on. Without a PWRKEY pin the
//!    ladder repeats the AT reset with the same backoff.
//!    A successful probe returns to healthy and resets the ladder.

use std::time::{Duration, Instant};

/// Policy knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// Consecutive unanswered commands that declare the modem hung.
    pub max_timeouts: u32,
    /// Time a SIM7600 needs from reset / power-on to answering AT (~10–20 s).
    pub reboot_wait: Duration,
    /// First backoff between power cycles.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// A PWRKEY pin is wired.
    pub has_pwrkey: bool,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_timeouts: 3,
            reboot_wait: Duration::from_secs(25),
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30 * 60),
            has_pwrkey: true,
        }
    }
}

/// What the supervisor must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `AT+CFUN=1,1` (its answer does not matter).
    ResetByAt,
    /// Power-cycle through PWRKEY.
    PowerCycle {
        /// 1 for the first power cycle of this episode.
        attempt: u32,
    },
    /// Send a short `AT` and report with [`RecoveryPolicy::on_probe`].
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ResetAt,
    PowerCycle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Healthy {
        timeouts: u32,
    },
    /// An action is due now.
    Due(Action),
    /// Waiting for the module to boot after `step`; probe at `at`.
    Rebooting {
        step: Step,
        at: Instant,
    },
    /// Probe sent, awaiting `on_probe`.
    Probing {
        step: Step,
    },
    /// Waiting before repeating `step`.
    Backoff {
        step: Step,
        until: Instant,
    },
}

/// The policy state machine.
#[derive(Debug, Clone)]
pub struct RecoveryPolicy {
    cfg: RecoveryConfig,
    state: State,
    /// Failed recovery rounds in this episode (drives the backoff).
    failures: u32,
    power_cycles: u32,
    at_resets: u32,
    recoveries: u32,
}

impl RecoveryPolicy {
    /// A healthy policy.
    pub fn new(cfg: RecoveryConfig) -> Self {
        Self {
            cfg,
            state: State::Healthy { timeouts: 0 },
            failures: 0,
            power_cycles: 0,
            at_resets: 0,
            recoveries: 0,
        }
    }

    /// Not in a recovery episode.
    pub fn is_healthy(&self) -> bool {
        matches!(self.state, State::Healthy { .. })
    }

    /// Total `AT+CFUN=1,1` resets asked for.
    pub fn at_resets(&self) -> u32 {
        self.at_resets
    }

    /// Total PWRKEY power cycles asked for.
    pub fn power_cycles(&self) -> u32 {
        self.power_cycles
    }

    /// Episodes that ended with the modem answering again.
    pub fn recoveries(&self) -> u32 {
        self.recoveries
    }

    /// The modem answered a command (OK or an error code).
    pub fn on_answer(&mut self, _now: Instant) {
        if let State::Healthy { timeouts } = &mut self.state {
            *timeouts = 0;
        }
    }

    /// A command got no answer.
    pub fn on_timeout(&mut self, _now: Instant) {
        if let State::Healthy { timeouts } = &mut self.state {
            *timeouts += 1;
            if *timeouts >= self.cfg.max_timeouts {
                self.failures = 0;
                self.state = State::Due(Action::ResetByAt);
            }
        }
    }

    /// Result of the probe asked for with [`Action::Probe`].
    pub fn on_probe(&mut self, answered: bool, now: Instant) {
        let State::Probing { step } = self.state else {
            return;
        };
        if answered {
            self.recoveries += 1;
            self.failures = 0;
            self.state = State::Healthy { timeouts: 0 };
            return;
        }
        self.failures += 1;
        let next = if self.cfg.has_pwrkey {
            Step::PowerCycle
        } else {
            Step::ResetAt
        };
        if step == Step::ResetAt && next == Step::PowerCycle && self.failures == 1 {
            // The AT reset did not help: escalate at once.
            self.state = State::Due(self.action_for(next));
        } else {
            self.state = State::Backoff {
                step: next,
                until: now + self.backoff(),
            };
        }
    }

    /// Backoff after the current number of failures.
    pub fn backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(30);
        self.cfg
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.cfg.backoff_max)
    }

    fn action_for(&mut self, step: Step) -> Action {
        match step {
            Step::ResetAt => Action::ResetByAt,
            Step::PowerCycle => Action::PowerCycle {
                attempt: self.power_cycles + 1,
            },
        }
    }

    /// The action due at `now`, if any. Returning an action commits to it: the
    /// supervisor must perform it (a power cycle or reset is then awaited for
    /// `reboot_wait`).
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        match self.state {
            State::Healthy { .. } | State::Probing { .. } => None,
            State::Due(action) => {
                let step = match action {
                    Action::ResetByAt => {
                        self.at_resets += 1;
                        Step::ResetAt
                    }
                    Action::PowerCycle { .. } => {
                        self.power_cycles += 1;
                        Step::PowerCycle
                    }
                    Action::Probe => {
                        self.state = State::Probing {
                            step: Step::ResetAt,
                        };
                        return Some(Action::Probe);
                    }
                };
                self.state = State::Rebooting {
                    step,
                    at: now + self.cfg.reboot_wait,
                };
                Some(action)
            }
            State::Rebooting { step, at } => {
                if now >= at {
                    self.state = State::Probing { step };
                    Some(Action::Probe)
                } else {
                    None
                }
            }
            State::Backoff { step, until } => {
                if now >= until {
                    let action = self.action_for(step);
                    self.state = State::Due(action);
                    self.poll_action(now)
                } else {
                    None
                }
            }
        }
    }

    /// When [`RecoveryPolicy::poll_action`] will next have something to say
    /// (`Some(now-ish)` when an action is already due).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Healthy { .. } | State::Probing { .. } | State::Due(_) => None,
            State::Rebooting { at, .. } => Some(at),
            State::Backoff { until, .. } => Some(until),
        }
    }

    /// An action is due right now.
    pub fn action_due(&self) -> bool {
        matches!(self.state, State::Due(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: an origin and an offset moved by the test.
    struct Clock {
        t0: Instant,
        off: Duration,
    }

    impl Clock {
        fn new() -> Self {
            Self {
                t0: Instant::now(),
                off: Duration::ZERO,
            }
        }
        fn now(&self) -> Instant {
            self.t0 + self.off
        }
        fn advance(&mut self, d: Duration) {
            self.off += d;
        }
    }

    fn cfg() -> RecoveryConfig {
        RecoveryConfig {
            max_timeouts: 3,
            reboot_wait: Duration::from_secs(20),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            has_pwrkey: true,
        }
    }

    #[test]
    fn answers_reset_the_timeout_count() {
        let c = Clock::new();
        let mut p = RecoveryPolicy::new(cfg());
        p.on_timeout(c.now());
        p.on_timeout(c.now());
        p.on_answer(c.now());
        p.on_timeout(c.now());
        p.on_timeout(c.now());
        assert_eq!(p.poll_action(c.now()), None);
        assert!(p.is_healthy());
        p.on_timeout(c.now());
        assert_eq!(p.poll_action(c.now()), Some(Action::ResetByAt));
    }

    #[test]
    fn at_reset_recovers() {
        let mut c = Clock::new();
        let mut p = RecoveryPolicy::new(cfg());
        for _ in 0..3 {
            p.on_timeout(c.now());
        }
        assert_eq!(p.poll_action(c.now()), Some(Action::ResetByAt));
        assert_eq!(p.poll_action(c.now()), None, "waits for the reboot");
        assert_eq!(p.poll_timeout(), Some(c.now() + Duration::from_secs(20)));
        c.advance(Duration::from_secs(19));
        assert_eq!(p.poll_action(c.now()), None);
        c.advance(Duration::from_secs(1));
        assert_eq!(p.poll_action(c.now()), Some(Action::Probe));
        assert_eq!(p.poll_action(c.now()), None, "awaits the probe result");
        p.on_probe(true, c.now());
        assert!(p.is_healthy());
        assert_eq!((p.at_resets(), p.power_cycles(), p.recoveries()), (1, 0, 1));
    }

    #[test]
    fn escalates_to_pwrkey_with_capped_exponential_backoff() {
        let mut c = Clock::new();
        let mut p = RecoveryPolicy::new(cfg());
        for _ in 0..3 {
            p.on_timeout(c.now());
        }
        assert_eq!(p.poll_action(c.now()), Some(Action::ResetByAt));
        c.advance(Duration::from_secs(20));
        assert_eq!(p.poll_action(c.now()), Some(Action::Probe));
        p.on_probe(false, c.now());
        // First escalation is immediate.
        assert_eq!(
            p.poll_action(c.now()),
            Some(Action::PowerCycle { attempt: 1 })
        );
        let mut waits = Vec::new();
        for attempt in 2..=6 {
            c.advance(Duration::from_secs(20));
            assert_eq!(p.poll_action(c.now()), Some(Action::Probe));
            p.on_probe(false, c.now());
            let until = p.poll_timeout().unwrap();
            waits.push(until - c.now());
            assert_eq!(p.poll_action(c.now()), None);
            c.advance(until - c.now());
            assert_eq!(p.poll_action(c.now()), Some(Action::PowerCycle { attempt }));
        }
        let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![20, 40, 60, 60, 60]);
        c.advance(Duration::from_secs(20));
        assert_eq!(p.poll_action(c.now()), Some(Action::Probe));
        p.on_probe(true, c.now());
        assert!(p.is_healthy());
        assert_eq!(p.power_cycles(), 6);
        assert_eq!(p.backoff(), Duration::from_secs(10), "ladder reset");
    }

    #[test]
    fn without_pwrkey_repeats_at_reset() {
        let mut c = Clock::new();
        let mut p = RecoveryPolicy::new(RecoveryConfig {
            has_pwrkey: false,
            ..cfg()
        });
        for _ in 0..3 {
            p.on_timeout(c.now());
        }
        assert_eq!(p.poll_action(c.now()), Some(Action::ResetByAt));
        c.advance(Duration::from_secs(20));
        assert_eq!(p.poll_action(c.now()), Some(Action::Probe));
        p.on_probe(false, c.now());
        assert_eq!(p.poll_action(c.now()), None);
        c.advance(Duration::from_secs(10));
        assert_eq!(p.poll_action(c.now()), Some(Action::ResetByAt));
        assert_eq!(p.at_resets(), 2);
        assert_eq!(p.power_cycles(), 0);
    }

    #[test]
    fn events_in_wrong_state_are_ignored() {
        let c = Clock::new();
        let mut p = RecoveryPolicy::new(cfg());
        p.on_probe(false, c.now());
        assert!(p.is_healthy());
        for _ in 0..3 {
            p.on_timeout(c.now());
        }
        assert!(p.action_due());
        // Timeouts while recovering do not restart the ladder.
        p.on_timeout(c.now());
        assert_eq!(p.poll_action(c.now()), Some(Action::ResetByAt));
        p.on_answer(c.now());
        assert!(!p.is_healthy());
    }
}
