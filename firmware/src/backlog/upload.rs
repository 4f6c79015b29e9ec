//! Uploading the backlog behind live video (backfill).
//!
//! One task per server session ([`run`]): it takes the oldest pending
//! records in order, paces them with a token bucket ([`Pacer`], sans-IO),
//! keeps at most [`IN_FLIGHT`] GOPs unacknowledged, and forgets a record only
//! when the server says it is recorded (`Message::Stored`, forwarded by the
//! uplink on `acks`). A record not acknowledged within [`ACK_TIMEOUT`] is
//! sent again; the server skips GOPs it already has.
//!
//! Channels: `acks` (in, bounded): record ids the server acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kodama_net::backfill::send_backfill_group;
use kodama_net::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Backlog;

/// GOPs sent but not yet acknowledged. Enough to cover a round trip plus the
/// server's disk write; few enough that backfill never fills QUIC's windows
/// ahead of live video.
pub const IN_FLIGHT: usize = 3;

/// A GOP not acknowledged within this is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// How often an idle uploader looks for new records.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// A token bucket in bytes, driven by the caller's clock.
///
/// A send may take the bucket into debt (a GOP is not split), and the next
/// send waits until the debt is repaid: the long-run rate is `rate` however
/// large the GOPs, and a burst is at most `burst` bytes plus one GOP.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Option<Duration>,
}

impl Pacer {
    /// A pacer for `kbps` kbit/s that allows `burst_ms` of it at once.
    pub fn new(kbps: u32, burst_ms: u32) -> Self {
        let bytes_per_s = f64::from(kbps) * 1000.0 / 8.0;
        let burst = bytes_per_s * f64::from(burst_ms) / 1000.0;
        Self {
            bytes_per_s,
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Duration) {
        if let Some(last) = self.last {
            let dt = now.saturating_sub(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.bytes_per_s).min(self.burst);
        }
        self.last = Some(now);
    }

    /// Takes `bytes` if the bucket is not in debt at `now`; otherwise how
    /// long to wait before trying again.
    pub fn take(&mut self, now: Duration, bytes: u64) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens < 0.0 {
            return Err(Duration::from_secs_f64(-self.tokens / self.bytes_per_s));
        }
        self.tokens -= bytes as f64;
        Ok(())
    }
}

/// Upload settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Long-run backfill rate, kbit/s.
    pub kbps: u32,
}

/// Uploads pending records on `conn` until `cancel` fires or the connection
/// fails. Returns how many GOPs were acknowledged.
pub async fn run(
    conn: Connection,
    backlog: Backlog,
    mut acks: mpsc::Receiver<u64>,
    opts: UploadOptions,
    cancel: CancellationToken,
) -> u64 {
    let origin = Instant::now();
    let mut pacer = Pacer::new(opts.kbps, 500);
    let mut in_flight: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut retry: BTreeSet<u64> = BTreeSet::new();
    let mut last_sent: Option<u64> = None;
    let mut sends: JoinSet<(u64, Result<u64, kodama_net::error::MediaError>)> = JoinSet::new();
    let mut acknowledged = 0u64;
    let mut wait = Duration::ZERO;
    let mut changes = backlog.changes();
    loop {
        // Start what the window and the pacer allow.
        while in_flight.len() < IN_FLIGHT && wait.is_zero() {
            let next = match retry.pop_first() {
                Some(id) => Some(id),
                None => backlog.next_pending(last_sent),
            };
            let Some(id) = next else { break };
            let gop = match backlog.read(id).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(id, "cannot read backlog record: {e}");
                    last_sent = Some(last_sent.map_or(id, |l| l.max(id)));
                    continue;
                }
            };
            let bytes = gop.payload_bytes() as u64;
            if let Err(d) = pacer.take(origin.elapsed(), bytes) {
                retry.insert(id);
                wait = d;
                break;
            }
            last_sent = Some(last_sent.map_or(id, |l| l.max(id)));
            in_flight.insert(id, Instant::now());
            let conn = conn.clone();
            // The GOP's audio rides on its stream, after the video.
            let mut frames = gop.frames;
            frames.extend(gop.audio);
            sends.spawn(async move { (id, send_backfill_group(&conn, id, &frames).await) });
        }
        backlog.set_in_flight(in_flight.len());
        let timeout = in_flight.values().min().map_or(IDLE_POLL, |t| {
            (*t + ACK_TIMEOUT).saturating_duration_since(Instant::now())
        });
        let sleep_for = if wait.is_zero() {
            timeout.min(IDLE_POLL)
        } else {
            wait.min(timeout)
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            id = acks.recv() => {
                let Some(id) = id else { break };
                if in_flight.remove(&id).is_some() || retry.remove(&id) {
                    acknowledged += 1;
                }
                if let Err(e) = backlog.ack(id).await {
                    tracing::warn!(id, "cannot forget an uploaded backlog record: {e}");
                }
            }
            Some(done) = sends.join_next() => match done {
                Ok((id, Err(e))) => {
                    // The connection is failing; the session notices and
                    // ends us. Until then, try this one again later.
                    tracing::debug!(id, "backfill send failed: {e}");
                    in_flight.remove(&id);
                    retry.insert(id);
                    wait = IDLE_POLL;
                }
                Ok((_, Ok(_))) => {}
                Err(e) => tracing::warn!("backfill send task failed: {e}"),
            },
            _ = changes.changed() => {}
            _ = tokio::time::sleep(sleep_for) => {
                wait = Duration::ZERO;
                let now = Instant::now();
                let late: Vec<u64> = in_flight
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) >= ACK_TIMEOUT)
                    .map(|(id, _)| *id)
                    .collect();
                for id in late {
                    tracing::info!(id, "backfilled GOP not acknowledged in time; sending it again");
                    in_flight.remove(&id);
                    retry.insert(id);
                }
            }
        }
    }
    sends.abort_all();
    backlog.set_in_flight(0);
    acknowledged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pacer_holds_the_long_run_rate() {
        // 800 kbit/s = 100 kB/s, 500 ms burst = 50 kB.
        let mut p = Pacer::new(800, 500);
        let mut now = ms(0);
        let mut sent = 0u64;
        let mut steps = 0;
        while now < ms(10_000) {
            steps += 1;
            assert!(steps < 100_000, "bounded");
            match p.take(now, 30_000) {
                Ok(()) => sent += 30_000,
                Err(wait) => now += wait.max(ms(1)),
            }
        }
        // 10 s at 100 kB/s plus the initial burst and one GOP of debt.
        assert!(sent <= 1_000_000 + 50_000 + 30_000, "{sent}");
        assert!(sent >= 950_000, "{sent}");
    }

    #[test]
    fn pacer_lets_a_large_gop_through_then_waits_out_the_debt() {
        let mut p = Pacer::new(800, 500);
        assert_eq!(p.take(ms(0), 250_000), Ok(()));
        // 200 kB of debt at 100 kB/s: two seconds.
        let wait = p.take(ms(0), 1).expect_err("in debt");
        assert_eq!(wait, ms(2_000));
        assert!(p.take(ms(1_999), 1).is_err());
        assert_eq!(p.take(ms(2_000), 1), Ok(()));
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let mut p = Pacer::new(800, 500);
        assert_eq!(p.take(ms(0), 50_000), Ok(()));
        // A minute idle buys 50 kB, not 6 MB.
        assert_eq!(p.take(ms(60_000), 50_001), Ok(()));
        assert_eq!(p.take(ms(60_000), 1), Err(Duration::from_micros(10)));
    }
}
