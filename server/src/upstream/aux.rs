//! Forwarding telemetry and events from the origin's index, so what
//! happened while the link to an upstream was down reaches it afterwards.
//!
//! The recorder stores every telemetry sample and event in the index with
//! an id that never repeats (AUTOINCREMENT) and the camera's capture time.
//! Per upstream, camera and kind one watermark (`upstream_aux_watermark`)
//! says "the upstream has every row up to this id". Rows past it go in
//! batches ([`BATCH_ROWS`], [`BATCH_BYTES`]) on a telemetry or event stream
//! whose group id is the batch id; the upstream stores each row once (by
//! camera, capture time and document, so a batch sent twice, or a row that
//! also went live, is not duplicated) in one synced transaction and answers
//! `Stored::Aux { id }`, which moves the watermark to the batch's last row.
//!
//! Live telemetry and events still go out as they arrive (for the
//! upstream's viewers); the batches are what make the upstream's copy
//! complete. In steady state each row crosses twice — a few hundred bytes
//! a second per camera, against video's megabits — and the second copy is
//! recognised upstream.
//!
//! [`AuxProgress`] is the sans-IO core: per kind the watermark, the rows
//! read past it (at most one batch's worth) and at most one batch in
//! flight. Memory is bounded by one batch per kind read and one in flight;
//! disk by the index's own retention (rows retention deleted before they
//! were forwarded are gone upstream too).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kodama_proto::{Frame, FrameFlags};

use crate::db::{AuxKind, ForwardAux};

/// Rows per batch at most.
pub const BATCH_ROWS: usize = 256;

/// Payload bytes per batch at most, unless its one row is larger (a row is
/// at most [`crate::recorder::MAX_AUX_BYTES`]).
pub const BATCH_BYTES: usize = 256 * 1024;

/// How often the index is read for new rows when the upstream is caught
/// up: live telemetry and events reach it at once anyway, and each batch
/// costs the upstream a synced commit. After a full batch the next is read
/// as soon as it is acknowledged (catching up after an outage).
pub const READ_EVERY: Duration = Duration::from_secs(5);

/// How long a batch may go unacknowledged before it is sent again (the
/// upstream answers as soon as it has synced the rows).
pub const RESEND: Duration = Duration::from_secs(20);

/// A batch of rows of one kind, to send as one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxBatch {
    /// The stream's group id and the acknowledgement's id (never 0).
    pub id: u64,
    /// Telemetry or events.
    pub kind: AuxKind,
    /// The rows, in id order, each with a capture time.
    pub rows: Vec<ForwardAux>,
}

impl AuxBatch {
    /// Payload bytes.
    pub fn bytes(&self) -> usize {
        self.rows.iter().map(|r| r.json.len()).sum()
    }

    /// The rows as frames of the batch's stream: the camera's capture
    /// time, the origin's row id as sequence (increasing), the document.
    pub fn frames(&self) -> Vec<Frame> {
        self.rows
            .iter()
            .filter_map(|r| {
                Some(Frame {
                    channel: self.kind.channel(),
                    flags: FrameFlags::empty(),
                    capture_us: r.capture_us? as u64,
                    sequence: r.id as u64,
                    payload: Bytes::from(r.json.clone()),
                })
            })
            .collect()
    }
}

/// Counters for logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuxStats {
    /// Rows the watermarks passed on the upstream's acknowledgement.
    pub confirmed: u64,
    /// Rows passed over without sending: stored before the index kept
    /// capture times, so the upstream could not recognise them.
    pub skipped: u64,
    /// Batches sent.
    pub batches: u64,
}

#[derive(Debug)]
struct InFlight {
    id: u64,
    last_row: i64,
    rows: u64,
    until: Instant,
}

#[derive(Debug)]
struct KindState {
    watermark: i64,
    saved: i64,
    /// Rows read past the watermark, not yet sent.
    next: Vec<ForwardAux>,
    in_flight: Option<InFlight>,
    /// When rows were last read, and whether the read was a full batch
    /// (more are waiting).
    last_read: Option<Instant>,
    more: bool,
}

/// Where forwarding one camera's telemetry and events to one upstream
/// stands (sans-IO: time is passed in).
#[derive(Debug)]
pub struct AuxProgress {
    kinds: [KindState; 2],
    next_id: u64,
    stats: AuxStats,
}

fn index(kind: AuxKind) -> usize {
    match kind {
        AuxKind::Telemetry => 0,
        AuxKind::Event => 1,
    }
}

impl AuxProgress {
    /// Starts from the saved watermarks (telemetry, events).
    pub fn new(telemetry: i64, events: i64) -> Self {
        let kind = |w| KindState {
            watermark: w,
            saved: w,
            next: Vec::new(),
            in_flight: None,
            last_read: None,
            more: false,
        };
        Self {
            kinds: [kind(telemetry), kind(events)],
            next_id: 1,
            stats: AuxStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> AuxStats {
        self.stats
    }

    /// A kind's watermark.
    pub fn watermark(&self, kind: AuxKind) -> i64 {
        self.kinds[index(kind)].watermark
    }

    /// Watermarks that moved since they were last saved.
    pub fn unsaved(&self) -> Vec<(AuxKind, i64)> {
        AuxKind::ALL
            .into_iter()
            .filter(|k| {
                let s = &self.kinds[index(*k)];
                s.watermark != s.saved
            })
            .map(|k| (k, self.watermark(k)))
            .collect()
    }

    /// `at` is in the index for `kind`.
    pub fn saved(&mut self, kind: AuxKind, at: i64) {
        let s = &mut self.kinds[index(kind)];
        s.saved = s.saved.max(at);
    }

    /// The kinds whose next rows should be read from the index at `now`,
    /// each with the id to read after: nothing read and waiting, no batch
    /// in flight (or it is overdue), and either more rows known to wait or
    /// [`READ_EVERY`] passed since the last read.
    pub fn wants_rows(&self, now: Instant) -> Vec<(AuxKind, i64)> {
        AuxKind::ALL
            .into_iter()
            .filter(|k| {
                let s = &self.kinds[index(*k)];
                let idle = s.next.is_empty() && s.in_flight.as_ref().is_none_or(|f| f.until <= now);
                let due = s.more || s.last_read.is_none_or(|at| now >= at + READ_EVERY);
                idle && due
            })
            .map(|k| (k, self.watermark(k)))
            .collect()
    }

    /// Rows of `kind` read from the index at `now` after `from`, in id
    /// order, at most [`BATCH_ROWS`] of them. Rows without a capture time
    /// at the front are passed over at once (counted): they cannot be
    /// identified upstream.
    pub fn refresh(&mut self, kind: AuxKind, from: i64, rows: Vec<ForwardAux>, now: Instant) {
        let s = &mut self.kinds[index(kind)];
        s.last_read = Some(now);
        s.more = rows.len() >= BATCH_ROWS;
        let after = s.watermark.max(from);
        s.next = rows.into_iter().filter(|r| r.id > after).collect();
        while let Some(r) = s.next.first() {
            if r.capture_us.is_some() || s.in_flight.is_some() {
                break;
            }
            s.watermark = r.id;
            s.next.remove(0);
            self.stats.skipped += 1;
        }
    }

    /// The next batch to send at `now`, marked in flight: for a kind with
    /// rows read and no batch in flight (or one overdue, which is then
    /// given up on).
    pub fn next_batch(&mut self, now: Instant) -> Option<AuxBatch> {
        for kind in AuxKind::ALL {
            let s = &mut self.kinds[index(kind)];
            if s.next.is_empty() || s.in_flight.as_ref().is_some_and(|f| f.until > now) {
                continue;
            }
            let mut bytes = 0;
            let mut take = 0;
            for r in &s.next {
                if take > 0 && (take >= BATCH_ROWS || bytes + r.json.len() > BATCH_BYTES) {
                    break;
                }
                bytes += r.json.len();
                take += 1;
            }
            let considered: Vec<ForwardAux> = s.next.drain(..take).collect();
            let last_row = considered.last().map_or(s.watermark, |r| r.id);
            let total = considered.len() as u64;
            let rows: Vec<ForwardAux> = considered
                .into_iter()
                .filter(|r| r.capture_us.is_some())
                .collect();
            self.stats.skipped += total - rows.len() as u64;
            // Rows read again after this batch are what follows it.
            s.next.clear();
            if rows.is_empty() {
                s.watermark = s.watermark.max(last_row);
                s.in_flight = None;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            s.in_flight = Some(InFlight {
                id,
                last_row,
                rows: total,
                until: now + RESEND,
            });
            self.stats.batches += 1;
            return Some(AuxBatch { id, kind, rows });
        }
        None
    }

    /// The upstream stored batch `id`: the watermark passes its rows.
    /// An acknowledgement for a batch given up on, or from an earlier
    /// connection, is ignored (its rows are sent again and recognised).
    pub fn acknowledged(&mut self, id: u64) -> bool {
        for s in &mut self.kinds {
            if s.in_flight.as_ref().is_some_and(|f| f.id == id) {
                if let Some(f) = s.in_flight.take() {
                    s.watermark = s.watermark.max(f.last_row);
                    s.next.retain(|r| r.id > f.last_row);
                    self.stats.confirmed += f.rows;
                }
                return true;
            }
        }
        false
    }

    /// Batch `id` did not go out: read and due again at once.
    pub fn send_failed(&mut self, id: u64) {
        for s in &mut self.kinds {
            if s.in_flight.as_ref().is_some_and(|f| f.id == id) {
                s.in_flight = None;
                s.next.clear();
                s.last_read = None;
            }
        }
    }

    /// The connection ended: nothing is in flight, and everything past
    /// the watermarks is read again on the next connection.
    pub fn disconnected(&mut self) {
        for s in &mut self.kinds {
            s.in_flight = None;
            s.next.clear();
            s.last_read = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: std::ops::RangeInclusive<i64>, len: usize) -> Vec<ForwardAux> {
        ids.map(|id| ForwardAux {
            id,
            capture_us: Some(1_000 + id),
            json: "x".repeat(len),
        })
        .collect()
    }

    #[test]
    fn batches_follow_the_watermark_and_only_an_acknowledgement_moves_it() {
        let t0 = Instant::now();
        let mut p = AuxProgress::new(0, 10);
        assert_eq!(
            p.wants_rows(t0),
            vec![(AuxKind::Telemetry, 0), (AuxKind::Event, 10)]
        );
        p.refresh(AuxKind::Event, 10, rows(11..=13, 5), t0);
        let b = p.next_batch(t0).expect("a batch");
        assert_eq!((b.kind, b.rows.len(), b.bytes()), (AuxKind::Event, 3, 15));
        let frames = b.frames();
        assert_eq!(
            frames
                .iter()
                .map(|f| (f.channel, f.sequence, f.capture_us))
                .collect::<Vec<_>>(),
            vec![
                (kodama_proto::Channel::Event, 11, 1_011),
                (kodama_proto::Channel::Event, 12, 1_012),
                (kodama_proto::Channel::Event, 13, 1_013)
            ],
            "the camera's capture times, the origin's row ids in order"
        );
        assert_ne!(b.id, 0, "group 0 is the live stream");
        assert!(p.next_batch(t0).is_none(), "one batch per kind in flight");
        assert_eq!(p.wants_rows(t0), vec![(AuxKind::Telemetry, 0)]);
        assert_eq!(p.watermark(AuxKind::Event), 10, "sent is not stored");

        assert!(!p.acknowledged(b.id + 100), "not ours");
        assert!(p.acknowledged(b.id));
        assert_eq!(p.watermark(AuxKind::Event), 13);
        assert_eq!(p.unsaved(), vec![(AuxKind::Event, 13)]);
        p.saved(AuxKind::Event, 13);
        assert!(p.unsaved().is_empty());
        assert_eq!(p.stats().confirmed, 3);
        assert!(!p.acknowledged(b.id), "an acknowledgement counts once");
    }

    #[test]
    fn a_backlog_goes_in_bounded_batches_in_order() {
        let t0 = Instant::now();
        let mut p = AuxProgress::new(0, 0);
        // An outage's worth: more rows than one batch holds.
        p.refresh(
            AuxKind::Telemetry,
            0,
            rows(1..=(BATCH_ROWS as i64 + 10), 10),
            t0,
        );
        let first = p.next_batch(t0).expect("first");
        assert_eq!(first.rows.len(), BATCH_ROWS);
        assert_eq!(first.rows[0].id, 1);
        p.acknowledged(first.id);
        assert_eq!(p.watermark(AuxKind::Telemetry), BATCH_ROWS as i64);
        // The rest is read again past the new watermark.
        let (kind, from) = p.wants_rows(t0)[0];
        assert_eq!((kind, from), (AuxKind::Telemetry, BATCH_ROWS as i64));
        p.refresh(kind, from, rows(1..=(BATCH_ROWS as i64 + 10), 10), t0);
        let second = p.next_batch(t0).expect("second");
        assert_eq!(
            second.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            ((BATCH_ROWS as i64 + 1)..=(BATCH_ROWS as i64 + 10)).collect::<Vec<_>>()
        );
        // Bytes bound a batch too, but one large row still goes alone.
        let mut q = AuxProgress::new(0, 0);
        q.refresh(AuxKind::Event, 0, rows(1..=5, BATCH_BYTES / 2), t0);
        assert_eq!(q.next_batch(t0).expect("batch").rows.len(), 2);
        let mut r = AuxProgress::new(0, 0);
        r.refresh(AuxKind::Event, 0, rows(1..=2, BATCH_BYTES + 1), t0);
        assert_eq!(r.next_batch(t0).expect("batch").rows.len(), 1);
    }

    #[test]
    fn lost_batches_are_sent_again_and_late_acknowledgements_ignored() {
        let t0 = Instant::now();
        let mut p = AuxProgress::new(0, 0);
        p.refresh(AuxKind::Event, 0, rows(1..=2, 3), t0);
        let lost = p.next_batch(t0).expect("batch");
        // Unanswered past the resend time: read and sent again.
        assert!(!p.wants_rows(t0 + RESEND / 2).contains(&(AuxKind::Event, 0)));
        let later = t0 + RESEND + Duration::from_millis(1);
        assert!(p.wants_rows(later).contains(&(AuxKind::Event, 0)));
        p.refresh(AuxKind::Event, 0, rows(1..=2, 3), later);
        let again = p.next_batch(later).expect("sent again");
        assert_ne!(again.id, lost.id);
        assert_eq!(again.rows, lost.rows);
        assert!(!p.acknowledged(lost.id), "given up on");
        assert_eq!(p.watermark(AuxKind::Event), 0);
        assert!(p.acknowledged(again.id));
        assert_eq!(p.watermark(AuxKind::Event), 2);

        // A connection that ends drops what was in flight.
        p.refresh(AuxKind::Event, 2, rows(3..=4, 3), later);
        let cut = p.next_batch(later).expect("batch");
        p.disconnected();
        assert!(!p.acknowledged(cut.id));
        assert!(p.wants_rows(later).contains(&(AuxKind::Event, 2)));
        // A failed send is due at the next read.
        p.refresh(AuxKind::Event, 2, rows(3..=4, 3), later);
        let failed = p.next_batch(later).expect("batch");
        p.send_failed(failed.id);
        assert!(p.wants_rows(later).contains(&(AuxKind::Event, 2)));
    }

    #[test]
    fn a_caught_up_upstream_is_read_every_few_seconds_and_a_backlog_at_once() {
        let t0 = Instant::now();
        let mut p = AuxProgress::new(0, 0);
        p.refresh(AuxKind::Event, 0, rows(1..=2, 3), t0);
        p.refresh(AuxKind::Telemetry, 0, Vec::new(), t0);
        let b = p.next_batch(t0).expect("batch");
        p.acknowledged(b.id);
        assert!(p.wants_rows(t0 + READ_EVERY / 2).is_empty(), "caught up");
        assert_eq!(p.wants_rows(t0 + READ_EVERY).len(), 2);
        // A full read: the rest is read as soon as the batch is stored.
        let t1 = t0 + READ_EVERY;
        p.refresh(AuxKind::Event, 2, rows(3..=(BATCH_ROWS as i64 + 2), 3), t1);
        p.refresh(AuxKind::Telemetry, 0, Vec::new(), t1);
        let b = p.next_batch(t1).expect("batch");
        p.acknowledged(b.id);
        assert_eq!(
            p.wants_rows(t1),
            vec![(AuxKind::Event, BATCH_ROWS as i64 + 2)]
        );
    }

    #[test]
    fn rows_without_a_capture_time_are_passed_over() {
        let t0 = Instant::now();
        let mut p = AuxProgress::new(0, 0);
        let mut old = rows(1..=3, 2);
        for r in &mut old {
            r.capture_us = None;
        }
        old.extend(rows(4..=5, 2));
        p.refresh(AuxKind::Event, 0, old, t0);
        assert_eq!(p.watermark(AuxKind::Event), 3, "leading ones at once");
        assert_eq!(p.stats().skipped, 3);
        let b = p.next_batch(t0).expect("batch");
        assert_eq!(b.rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![4, 5]);
    }
}
