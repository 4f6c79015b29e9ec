//! Which GOPs must be kept for backfill: a sans-IO state machine between the
//! capture queue and the ring.
//!
//! Every video frame passes through [`Keeper::on_frame`], which assembles
//! GOPs (keyframe to keyframe). A completed GOP is *kept* (handed back to be
//! written to the ring) when any of it was captured while the uplink was
//! down, or when live sending gave it up ([`Keeper::live_lost`]). Otherwise it
//! was sent live, but the camera cannot know it arrived until the server says
//! so ([`Keeper::confirmed`], from `Message::Stored`): it waits in a bounded
//! window of unconfirmed GOPs, and when the link goes down
//! ([`Keeper::set_online`]) the unconfirmed ones are kept too. A link that
//! dies silently is noticed only after a timeout; the window covers it, and
//! the server skips GOPs it already has.

use std::collections::VecDeque;
use std::sync::Arc;

use kodama_proto::Frame;

use super::record::Gop;

/// Limits of the unconfirmed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeeperLimits {
    /// Keep unconfirmed GOPs whose keyframe is at most this old (capture
    /// clock) relative to the newest frame. Longer than the time the uplink
    /// needs to notice a dead link.
    pub window_us: u64,
    /// And at most this many payload bytes of them.
    pub max_bytes: usize,
}

#[derive(Debug)]
struct Assembling {
    frames: Vec<Arc<Frame>>,
    bytes: usize,
    /// Some of it was captured while offline, or live sending dropped it.
    keep: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Keeper {
    limits: KeeperLimits,
    online: bool,
    current: Option<Assembling>,
    unconfirmed: VecDeque<(Gop, usize)>,
    unconfirmed_bytes: usize,
    /// Keyframe capture time of the newest GOP the server confirmed.
    confirmed_through: Option<u64>,
}

impl Keeper {
    /// A keeper that starts offline (nothing has reached a server yet).
    pub fn new(limits: KeeperLimits) -> Self {
        Self {
            limits,
            online: false,
            current: None,
            unconfirmed: VecDeque::new(),
            unconfirmed_bytes: 0,
            confirmed_through: None,
        }
    }

    /// Unconfirmed GOPs held in memory, and their payload bytes.
    pub fn unconfirmed(&self) -> (usize, usize) {
        (self.unconfirmed.len(), self.unconfirmed_bytes)
    }

    /// A video frame from the capture thread; GOPs to store go to `keep`.
    pub fn on_frame(&mut self, frame: Arc<Frame>, keep: &mut Vec<Gop>) {
        if frame.is_keyframe() {
            self.complete(keep);
            self.current = Some(Assembling {
                bytes: frame.payload.len(),
                frames: vec![frame],
                keep: !self.online,
            });
            return;
        }
        // Frames before the first keyframe cannot be decoded: nothing to keep.
        if let Some(c) = &mut self.current {
            c.bytes += frame.payload.len();
            c.frames.push(frame);
            c.keep |= !self.online;
        }
    }

    /// Live sending gave up the GOP being captured (its group was abandoned):
    /// keep it for backfill.
    pub fn live_lost(&mut self) {
        if let Some(c) = &mut self.current {
            c.keep = true;
        }
    }

    /// The live group of the GOP whose keyframe was captured at
    /// `capture_us` left with frames unsent (superseded on a slow link): the
    /// server records only part of it but acknowledges it like any other, so
    /// it is kept whole for backfill (the server fills in what it lacks).
    pub fn live_incomplete(&mut self, capture_us: u64, keep: &mut Vec<Gop>) {
        if let Some(at) = self
            .unconfirmed
            .iter()
            .position(|(g, _)| g.capture_us() == capture_us)
        {
            if let Some((gop, bytes)) = self.unconfirmed.remove(at) {
                self.unconfirmed_bytes -= bytes;
                keep.push(gop);
            }
        } else if let Some(c) = &mut self.current {
            if c.frames.first().is_some_and(|f| f.capture_us == capture_us) {
                c.keep = true;
            }
        }
    }

    /// The uplink reached the server (`true`) or lost it (`false`). Losing
    /// it keeps every unconfirmed GOP and the one being captured.
    pub fn set_online(&mut self, online: bool, keep: &mut Vec<Gop>) {
        if self.online && !online {
            keep.extend(self.unconfirmed.drain(..).map(|(g, _)| g));
            self.unconfirmed_bytes = 0;
            if let Some(c) = &mut self.current {
                c.keep = true;
            }
        }
        self.online = online;
    }

    /// The server recorded live video through the GOP whose keyframe was
    /// captured at `capture_us`.
    pub fn confirmed(&mut self, capture_us: u64) {
        self.confirmed_through = Some(
            self.confirmed_through
                .map_or(capture_us, |c| c.max(capture_us)),
        );
        while let Some((g, bytes)) = self.unconfirmed.front() {
            if g.capture_us() > capture_us {
                break;
            }
            self.unconfirmed_bytes -= bytes;
            self.unconfirmed.pop_front();
        }
    }

    /// Stopping: the GOP being captured, if it must be kept, and (when the
    /// link is down) nothing else is pending — see [`Keeper::set_online`].
    pub fn flush(&mut self, keep: &mut Vec<Gop>) {
        self.complete(keep);
    }

    fn complete(&mut self, keep: &mut Vec<Gop>) {
        let Some(c) = self.current.take() else {
            return;
        };
        let gop = Gop { frames: c.frames };
        if c.keep {
            keep.push(gop);
            return;
        }
        if self
            .confirmed_through
            .is_some_and(|t| gop.capture_us() <= t)
        {
            return;
        }
        let newest = gop.frames.last().map_or(0, |f| f.capture_us);
        self.unconfirmed_bytes += c.bytes;
        self.unconfirmed.push_back((gop, c.bytes));
        while let Some((g, bytes)) = self.unconfirmed.front() {
            let too_old = newest.saturating_sub(g.capture_us()) > self.limits.window_us;
            if !too_old && self.unconfirmed_bytes <= self.limits.max_bytes {
                break;
            }
            // Assumed delivered: the window is longer than a dead link
            // takes to notice.
            self.unconfirmed_bytes -= bytes;
            self.unconfirmed.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::{Channel, FrameFlags};

    const GOP: u64 = 10;
    const FRAME_US: u64 = 100_000;

    fn frame(seq: u64) -> Arc<Frame> {
        Arc::new(Frame {
            channel: Channel::Video,
            flags: if seq.is_multiple_of(GOP) {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::empty()
            },
            capture_us: seq * FRAME_US,
            sequence: seq,
            payload: Bytes::from(vec![0; 100]),
        })
    }

    fn limits() -> KeeperLimits {
        KeeperLimits {
            window_us: 3_000_000,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_live_group_sent_incomplete_is_kept_even_once_acknowledged() {
        let mut k = Keeper::new(limits());
        let mut keep = Vec::new();
        k.set_online(true, &mut keep);
        // GOP 0 completes (unconfirmed), GOP 10 is being captured.
        assert!(feed(&mut k, 0..15).is_empty());
        assert_eq!(k.unconfirmed().0, 1);
        // Its live group was superseded with frames unsent.
        k.live_incomplete(0, &mut keep);
        assert_eq!(keep.len(), 1, "the incomplete GOP goes to the backlog");
        assert_eq!(keep[0].frames.len(), 10, "whole, not just what was sent");
        assert_eq!(k.unconfirmed(), (0, 0));
        // The one being captured: kept when it completes, though the
        // server acknowledges it.
        k.live_incomplete(10 * FRAME_US, &mut keep);
        let kept = feed(&mut k, 15..21);
        k.confirmed(10 * FRAME_US);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].capture_us(), 10 * FRAME_US);
        // An unknown capture time changes nothing.
        let mut none = Vec::new();
        k.live_incomplete(12_345, &mut none);
        assert!(none.is_empty());
    }

    fn feed(k: &mut Keeper, seqs: std::ops::Range<u64>) -> Vec<Gop> {
        let mut keep = Vec::new();
        for s in seqs {
            k.on_frame(frame(s), &mut keep);
        }
        keep
    }

    fn firsts(gops: &[Gop]) -> Vec<u64> {
        gops.iter().map(|g| g.frames[0].sequence).collect()
    }

    #[test]
    fn offline_from_the_start_keeps_every_whole_gop() {
        let mut k = Keeper::new(limits());
        // Frames before the first keyframe are undecodable and ignored.
        let mut keep = Vec::new();
        k.on_frame(frame(7), &mut keep);
        let keep = feed(&mut k, 10..41);
        assert_eq!(firsts(&keep), vec![10, 20, 30]);
        assert!(keep.iter().all(|g| g.frames.len() == 10));
    }

    #[test]
    fn outage_keeps_the_unconfirmed_window_and_everything_offline() {
        let mut k = Keeper::new(limits());
        let mut keep = Vec::new();
        k.set_online(true, &mut keep);
        assert!(feed(&mut k, 0..60).is_empty(), "sent live");
        // The server confirmed through GOP 20; 30 and 40 are unconfirmed and
        // 50 is being captured when the link drops.
        k.confirmed(20 * FRAME_US);
        assert_eq!(k.unconfirmed().0, 2);
        k.set_online(false, &mut keep);
        assert_eq!(firsts(&keep), vec![30, 40]);
        let offline = feed(&mut k, 60..85);
        assert_eq!(firsts(&offline), vec![50, 60, 70]);
        // Back online mid-GOP: the GOP begun offline is still kept; the
        // next one is live.
        k.set_online(true, &mut keep);
        let after = feed(&mut k, 85..101);
        assert_eq!(firsts(&after), vec![80]);
        assert_eq!(after[0].frames.len(), 10);
    }

    #[test]
    fn the_window_is_bounded_by_time_and_bytes() {
        let mut k = Keeper::new(limits());
        let mut keep = Vec::new();
        k.set_online(true, &mut keep);
        feed(&mut k, 0..200);
        // 3 s window at 1 s GOPs: the GOP starting 3 s before the newest
        // frame's, plus newer ones.
        assert!(k.unconfirmed().0 <= 4, "{:?}", k.unconfirmed());
        let mut small = Keeper::new(KeeperLimits {
            window_us: u64::MAX,
            max_bytes: 2_500,
        });
        small.set_online(true, &mut keep);
        feed(&mut small, 0..200);
        assert!(small.unconfirmed().1 <= 2_500);
        assert_eq!(small.unconfirmed().0, 2);
    }

    #[test]
    fn abandoned_live_gop_is_kept_and_flush_keeps_the_partial_gop() {
        let mut k = Keeper::new(limits());
        let mut keep = Vec::new();
        k.set_online(true, &mut keep);
        feed(&mut k, 0..15);
        k.live_lost();
        let keep = feed(&mut k, 15..21);
        assert_eq!(firsts(&keep), vec![10]);
        let mut keep = Vec::new();
        k.set_online(false, &mut keep);
        feed(&mut k, 21..24);
        let mut flushed = Vec::new();
        k.flush(&mut flushed);
        assert_eq!(firsts(&flushed), vec![20]);
        assert_eq!(flushed[0].frames.len(), 4);
    }
}
