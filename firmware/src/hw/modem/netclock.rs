//! The camera's clock from the cellular network (NITZ via `AT+CCLK?`).
//!
//! A Pi has no real-time clock: until NTP answers, the clock is whatever the
//! image's time script restored (the last clean shutdown) or 1970. The modem
//! supervisor reads the network's time once registered ([`ModemStatus::network_time`]);
//! this task steps the system clock forward to it when the clock is behind
//! by more than [`STEP_THRESHOLD_S`]. It never steps the clock backwards (NTP,
//! which slews, has the last word) and ignores network times before
//! [`EARLIEST_PLAUSIBLE_UNIX`] (a module's unset clock, NITZ glitches).
//!
//! The decision ([`correction`]) is pure; [`run`] is the loop around it with
//! the clock setter injected.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ModemStatus;

/// 2025-01-01T00:00:00Z: no network time before this is believed.
pub const EARLIEST_PLAUSIBLE_UNIX: i64 = 1_735_689_600;

/// Differences below this are left to NTP. `+CCLK` has one-second
/// resolution and the poll adds up to a poll interval of staleness.
pub const STEP_THRESHOLD_S: i64 = 60;

/// The Unix time to step the clock to, if `network_time` (RFC 3339, as the
/// supervisor publishes it) is plausible and ahead of `now_unix` by more
/// than [`STEP_THRESHOLD_S`].
pub fn correction(network_time: &str, now_unix: i64) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(network_time)
        .ok()?
        .timestamp();
    (t >= EARLIEST_PLAUSIBLE_UNIX && t - now_unix > STEP_THRESHOLD_S).then_some(t)
}

/// Seconds since the Unix epoch on the system clock.
pub fn system_now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Steps `CLOCK_REALTIME` (needs `CAP_SYS_TIME`: the image runs the
/// firmware as root).
pub fn set_system_clock(unix: i64) -> std::io::Result<()> {
    use nix::time::{clock_settime, ClockId};
    clock_settime(
        ClockId::CLOCK_REALTIME,
        nix::sys::time::TimeSpec::new(unix, 0),
    )
    .map_err(std::io::Error::from)
}

/// Watches the modem status until `cancel` fires or the supervisor stops,
/// stepping the clock with `set` whenever [`correction`] says so against
/// `now()`. Returns how many times it stepped the clock.
pub async fn run(
    mut status: watch::Receiver<ModemStatus>,
    now: impl Fn() -> i64,
    mut set: impl FnMut(i64) -> std::io::Result<()>,
    cancel: CancellationToken,
) -> u32 {
    let mut steps = 0;
    let mut refused = false;
    loop {
        let network_time = status.borrow_and_update().network_time.clone();
        if let Some(target) = network_time.as_deref().and_then(|t| correction(t, now())) {
            match set(target) {
                Ok(()) => {
                    steps += 1;
                    tracing::info!(
                        network_time = network_time.as_deref().unwrap_or_default(),
                        "system clock set from the cellular network (NITZ)"
                    );
                }
                Err(e) if !refused => {
                    refused = true;
                    tracing::warn!(error = %e, "cannot set the system clock from the network time");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return steps,
            changed = status.changed() => if changed.is_err() { return steps },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const NOON_2026: &str = "2026-06-01T12:00:00+09:00";
    const NOON_2026_UNIX: i64 = 1_780_282_800;

    #[test]
    fn steps_forward_only_when_far_behind_and_plausible() {
        assert_eq!(correction(NOON_2026, 0), Some(NOON_2026_UNIX));
        assert_eq!(
            correction(NOON_2026, NOON_2026_UNIX - 3600),
            Some(NOON_2026_UNIX)
        );
        assert_eq!(
            correction(NOON_2026, NOON_2026_UNIX - 30),
            None,
            "NTP's job"
        );
        assert_eq!(
            correction(NOON_2026, NOON_2026_UNIX + 3600),
            None,
            "never back"
        );
        assert_eq!(
            correction("1980-01-06T00:00:00+00:00", 0),
            None,
            "unset module clock"
        );
        assert_eq!(correction("garbage", 0), None);
    }

    #[tokio::test]
    async fn run_sets_the_clock_once_the_network_time_arrives() {
        let (tx, rx) = watch::channel(ModemStatus::default());
        let clock = Arc::new(Mutex::new(86_400i64));
        let cancel = CancellationToken::new();
        let (c1, c2) = (clock.clone(), clock.clone());
        let task = tokio::spawn(run(
            rx,
            move || *c1.lock().expect("clock"),
            move |t| {
                *c2.lock().expect("clock") = t;
                Ok(())
            },
            cancel.clone(),
        ));
        tx.send_modify(|s| s.network_time = Some(NOON_2026.into()));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while *clock.lock().expect("clock") != NOON_2026_UNIX {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("clock stepped");
        // Later polls with the same time change nothing.
        tx.send_modify(|s| s.signal_dbm = Some(-70));
        drop(tx);
        assert_eq!(task.await.expect("task"), 1);
    }
}
