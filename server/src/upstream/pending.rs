//! What an origin has not yet got acknowledged by one upstream, for one
//! camera: whole GOPs keyed by their keyframe's capture time, bounded in
//! bytes (the oldest go first when full, counted). Sans-IO: every call
//! that depends on time takes `now`.
//!
//! A GOP enters when it completes at the origin (live, or uploaded late by
//! the camera's own store-and-forward) and leaves when the upstream
//! acknowledges it as recorded: a live acknowledgement counts only if the
//! whole GOP went out live ([`Pending::live_sent`]), a backfill one always.
//! A GOP still here [`GRACE`] after it completed — its live copy was cut
//! short, the link was down, or the acknowledgement never came — is due
//! for backfill, oldest first. A backfilled GOP counts as in flight until
//! its acknowledgement (the upstream bounds the backfill streams a peer may
//! have open, as it does for cameras); one not acknowledged within
//! [`RESEND`], whose send failed, or whose connection ended is due again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feed::Group;

/// How long a completed GOP waits for the upstream's live acknowledgement
/// before it is due for backfill: above the upstream recorder's commit
/// interval (`recording.flush_seconds`, 5 s by default), which acknowledges
/// only what is durable.
pub const GRACE: Duration = Duration::from_secs(12);

/// How long a backfilled GOP waits for its acknowledgement before it is sent again.
pub const RESEND: Duration = Duration::from_secs(20);

/// Where a pending GOP came from at the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The camera's live stream.
    Live,
    /// The camera's own backfill, with its backlog record id.
    CameraBackfill(u64),
}

#[derive(Debug)]
struct Entry {
    group: Arc<Group>,
    source: Source,
    bytes: usize,
    due: Instant,
    live_frames: usize,
    in_flight: bool,
}

/// Counters for logs and figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PendingStats {
    /// GOPs held now.
    pub gops: usize,
    /// Their payload bytes.
    pub bytes: usize,
    /// GOPs acknowledged by the upstream.
    pub acknowledged: u64,
    /// GOPs dropped, oldest first, because the buffer was full.
    pub evicted: u64,
}

/// The not-yet-acknowledged GOPs of one camera at one upstream.
#[derive(Debug)]
pub struct Pending {
    max_bytes: usize,
    gops: BTreeMap<u64, Entry>,
    /// Frames handed to the live sender per keyframe capture time, for GOPs
    /// that have not completed at the origin yet (bounded).
    live: VecDeque<(u64, usize)>,
    /// Acknowledgements that came before their GOP completed here (bounded).
    early_acks: VecDeque<u64>,
    /// Whether a connection to the upstream is up (GOPs completed without
    /// one cannot have gone out live: due at once).
    connected: bool,
    stats: PendingStats,
}

const RECENT: usize = 64;

impl Pending {
    /// A buffer holding at most `max_bytes` of payload.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            gops: BTreeMap::new(),
            live: VecDeque::new(),
            early_acks: VecDeque::new(),
            connected: false,
            stats: PendingStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> PendingStats {
        PendingStats {
            gops: self.gops.len(),
            bytes: self.stats.bytes,
            ..self.stats
        }
    }

    /// The GOP captured at `capture_us` did not leave whole live.
    pub fn live_incomplete(&mut self, capture_us: u64) {
        if let Some(e) = self.gops.get_mut(&capture_us) {
            e.live_frames = 0;
        }
        self.live.retain(|(c, _)| *c != capture_us);
    }

    /// The live sender handed `frames` frames of the GOP whose keyframe was
    /// captured at `capture_us` to the connection.
    pub fn live_sent(&mut self, capture_us: u64, frames: usize) {
        if let Some(e) = self.gops.get_mut(&capture_us) {
            e.live_frames = e.live_frames.max(frames);
            return;
        }
        match self.live.iter_mut().find(|(c, _)| *c == capture_us) {
            Some((_, n)) => *n = (*n).max(frames),
            None => {
                if self.live.len() >= RECENT {
                    self.live.pop_front();
                }
                self.live.push_back((capture_us, frames));
            }
        }
    }

    /// A GOP completed at the origin.
    pub fn push(&mut self, group: Arc<Group>, source: Source, now: Instant) {
        let Some(capture_us) = group.frames.first().map(|f| f.capture_us) else {
            return;
        };
        if self.max_bytes == 0 || self.gops.contains_key(&capture_us) {
            return;
        }
        let live_frames = self
            .live
            .iter()
            .find(|(c, _)| *c == capture_us)
            .map_or(0, |(_, n)| *n);
        if live_frames >= group.frames.len() {
            if let Some(i) = self.early_acks.iter().position(|c| *c == capture_us) {
                self.early_acks.remove(i);
                self.stats.acknowledged += 1;
                return;
            }
        }
        let bytes = group.payload_bytes();
        self.stats.bytes += bytes;
        self.gops.insert(
            capture_us,
            Entry {
                group,
                source,
                bytes,
                due: if self.connected { now + GRACE } else { now },
                live_frames,
                in_flight: false,
            },
        );
        while self.stats.bytes > self.max_bytes {
            let Some((_, old)) = self.gops.pop_first() else {
                break;
            };
            self.stats.bytes -= old.bytes;
            self.stats.evicted += 1;
        }
    }

    /// The upstream recorded the live GOP whose keyframe was captured at
    /// `capture_us`. Returns the GOP's origin when it leaves the buffer.
    pub fn live_acknowledged(&mut self, capture_us: u64) -> Option<Source> {
        match self.gops.get(&capture_us) {
            Some(e) if e.live_frames >= e.group.frames.len() => self.remove(capture_us),
            // Cut short on the way: backfill sends it whole.
            Some(_) => None,
            None => {
                if self.early_acks.len() >= RECENT {
                    self.early_acks.pop_front();
                }
                self.early_acks.push_back(capture_us);
                None
            }
        }
    }

    /// The upstream recorded (or already had) backfilled GOP `capture_us`.
    pub fn backfill_acknowledged(&mut self, capture_us: u64) -> Option<Source> {
        self.remove(capture_us)
    }

    fn remove(&mut self, capture_us: u64) -> Option<Source> {
        let e = self.gops.remove(&capture_us)?;
        self.stats.bytes -= e.bytes;
        self.stats.acknowledged += 1;
        Some(e.source)
    }

    /// The oldest GOP due for backfill at `now`, marked in flight; its id
    /// on the wire is its keyframe's capture time.
    pub fn next_due(&mut self, now: Instant) -> Option<(u64, Arc<Group>)> {
        let (capture_us, e) = self.gops.iter_mut().find(|(_, e)| e.due <= now)?;
        e.in_flight = true;
        e.due = now + RESEND;
        Some((*capture_us, e.group.clone()))
    }

    /// Backfilled GOPs sent and not yet acknowledged (nor given up on) at `now`.
    pub fn in_flight(&self, now: Instant) -> usize {
        self.gops
            .values()
            .filter(|e| e.in_flight && e.due > now)
            .count()
    }

    /// The backfill of `capture_us` did not go out (stream or connection
    /// failed): due again at once.
    pub fn send_failed(&mut self, capture_us: u64, now: Instant) {
        if let Some(e) = self.gops.get_mut(&capture_us) {
            e.in_flight = false;
            e.due = now;
        }
    }

    /// A connection to the upstream is up: GOPs completing from now on
    /// may go out live and get a grace for their acknowledgement.
    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// The connection ended: nothing is in flight any more, and everything
    /// held is due at once on the next connection (what did arrive is
    /// recognised upstream and acknowledged without being written again).
    pub fn disconnected(&mut self, now: Instant) {
        for e in self.gops.values_mut() {
            e.due = e.due.min(now);
            e.in_flight = false;
        }
        self.live.clear();
        self.connected = false;
    }

    /// When the next GOP falls due (or an unacknowledged one is given up
    /// on), if any is held.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gops.values().map(|e| e.due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::{Channel, Frame, FrameFlags};

    fn gop(capture_us: u64, frames: usize, size: usize) -> Arc<Group> {
        Arc::new(Group {
            id: capture_us,
            frames: (0..frames)
                .map(|i| {
                    Arc::new(Frame {
                        channel: Channel::Video,
                        flags: if i == 0 {
                            FrameFlags::KEYFRAME
                        } else {
                            FrameFlags::empty()
                        },
                        capture_us: capture_us + i as u64,
                        sequence: i as u64,
                        payload: Bytes::from(vec![0; size]),
                    })
                })
                .collect(),
            truncated: false,
        })
    }

    #[test]
    fn a_gop_sent_whole_live_leaves_on_its_live_acknowledgement() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.connected();
        p.live_sent(100, 3);
        p.push(gop(100, 3, 10), Source::Live, t0);
        assert_eq!(p.live_acknowledged(100), Some(Source::Live));
        assert_eq!(p.stats().gops, 0);
        assert!(p.next_due(t0 + GRACE * 2).is_none());
    }

    #[test]
    fn a_gop_cut_short_live_is_backfilled_after_the_grace() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.connected();
        p.live_sent(100, 2);
        p.push(gop(100, 3, 10), Source::Live, t0);
        assert_eq!(
            p.live_acknowledged(100),
            None,
            "only 2 of 3 frames went live"
        );
        assert!(p.next_due(t0).is_none(), "not before the grace");
        let (id, g) = p.next_due(t0 + GRACE).expect("due");
        assert_eq!((id, g.frames.len()), (100, 3));
        assert!(p.next_due(t0 + GRACE).is_none(), "in flight");
        assert_eq!(p.in_flight(t0 + GRACE), 1);
        assert_eq!(p.in_flight(t0 + GRACE + RESEND), 0, "given up on");
        assert!(
            p.next_due(t0 + GRACE + RESEND / 2).is_none(),
            "waits for its ack"
        );
        assert!(
            p.next_due(t0 + GRACE + RESEND).is_some(),
            "sent again without one"
        );
        assert_eq!(p.backfill_acknowledged(100), Some(Source::Live));
        assert_eq!(p.stats().acknowledged, 1);
    }

    #[test]
    fn an_outage_is_backfilled_oldest_first_and_again_after_a_failed_send() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.connected();
        for c in [300, 100, 200] {
            p.push(gop(c, 2, 10), Source::Live, t0);
        }
        p.push(gop(50, 2, 10), Source::CameraBackfill(7), t0);
        let due = t0 + GRACE;
        let order: Vec<u64> = std::iter::from_fn(|| p.next_due(due).map(|(c, _)| c)).collect();
        assert_eq!(order, vec![50, 100, 200, 300]);
        p.send_failed(200, due);
        assert_eq!(p.next_due(due).map(|(c, _)| c), Some(200), "again at once");
        p.disconnected(due);
        let again: Vec<u64> = std::iter::from_fn(|| p.next_due(due).map(|(c, _)| c)).collect();
        assert_eq!(
            again,
            vec![50, 100, 200, 300],
            "all due again after a reconnect"
        );
        assert_eq!(p.backfill_acknowledged(50), Some(Source::CameraBackfill(7)));
    }

    #[test]
    fn gops_completed_without_a_connection_are_due_at_once() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.push(gop(100, 2, 10), Source::Live, t0);
        assert_eq!(p.next_due(t0).map(|(c, _)| c), Some(100));
        p.connected();
        p.push(gop(200, 2, 10), Source::Live, t0);
        assert!(
            p.next_due(t0).is_none(),
            "on a live connection: after the grace"
        );
        p.disconnected(t0);
        p.push(gop(300, 2, 10), Source::Live, t0);
        let due: Vec<u64> = std::iter::from_fn(|| p.next_due(t0).map(|(c, _)| c)).collect();
        assert_eq!(due, vec![100, 200, 300]);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut p = Pending::new(100);
        p.connected();
        for c in 0..10 {
            p.push(gop(c * 10, 2, 20), Source::Live, t0);
        }
        let s = p.stats();
        assert!(s.bytes <= 100, "{s:?}");
        assert_eq!((s.gops, s.evicted), (2, 8));
        assert_eq!(p.next_due(t0 + GRACE).map(|(c, _)| c), Some(80));
    }

    #[test]
    fn an_acknowledgement_before_the_gop_completes_here_counts() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.connected();
        p.live_sent(100, 2);
        assert_eq!(p.live_acknowledged(100), None);
        p.push(gop(100, 2, 10), Source::Live, t0);
        assert_eq!(p.stats().gops, 0);
        assert_eq!(p.stats().acknowledged, 1);
    }
}
