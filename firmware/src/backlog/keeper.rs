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
//!
//! Audio packets pass through [`Keeper::on_audio`] and wait until the GOP
//! whose time span they fall in completes; that GOP takes them (also the
//! packets that arrived a little after the GOP's own end, up to
//! [`LATE_AUDIO_US`] behind its keyframe), so a GOP is kept, held unconfirmed
//! and uploaded together with the sound filmed with it.

use std::collections::VecDeque;
use std::sync::Arc;

use kodama_proto::Frame;

use super::record::Gop;

/// Audio packets waiting for their GOP beyond which the oldest are
/// dropped (2 minutes of 20 ms packets: the longest GOP a record holds).
pub const MAX_PENDING_AUDIO: usize = super::record::MAX_RECORD_AUDIO;

/// A packet captured up to this long before a GOP's keyframe still goes
/// with that GOP (it reached the keeper after the previous GOP had left);
/// older ones belong to a GOP long gone and are dropped.
pub const LATE_AUDIO_US: u64 = 1_000_000;

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
    /// Audio packets not yet given to a GOP, in sequence order.
    audio: VecDeque<Arc<Frame>>,
    last_audio_sequence: Option<u64>,
    /// Audio packets dropped (out of order, or no GOP to go with).
    audio_dropped: u64,
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
            audio: VecDeque::new(),
            last_audio_sequence: None,
            audio_dropped: 0,
        }
    }

    /// Audio packets dropped so far: out of order, beyond
    /// [`MAX_PENDING_AUDIO`], or too old for any GOP.
    pub fn audio_dropped(&self) -> u64 {
        self.audio_dropped
    }

    /// An audio packet (one Opus packet on [`kodama_proto::Channel::Audio`],
    /// numbered by the uplink): it goes with the GOP whose time span it
    /// falls in, once that GOP completes.
    pub fn on_audio(&mut self, packet: Arc<Frame>) {
        if self
            .last_audio_sequence
            .is_some_and(|s| packet.sequence <= s)
        {
            self.audio_dropped += 1;
            return;
        }
        self.last_audio_sequence = Some(packet.sequence);
        if self.audio.len() >= MAX_PENDING_AUDIO {
            self.audio.pop_front();
            self.audio_dropped += 1;
        }
        self.audio.push_back(packet);
    }

    /// The pending audio packets captured before `end` (all of them when
    /// `None`), for the GOP whose keyframe was captured at `start`.
    fn take_audio(&mut self, start: u64, end: Option<u64>) -> Vec<Arc<Frame>> {
        let mut out = Vec::new();
        while let Some(a) = self.audio.front() {
            if end.is_some_and(|e| a.capture_us >= e) {
                break;
            }
            let Some(a) = self.audio.pop_front() else {
                break;
            };
            if a.capture_us.saturating_add(LATE_AUDIO_US) >= start {
                out.push(a);
            } else {
                self.audio_dropped += 1;
            }
        }
        out
    }

    /// Unconfirmed GOPs held in memory, and their payload bytes.
    pub fn unconfirmed(&self) -> (usize, usize) {
        (self.unconfirmed.len(), self.unconfirmed_bytes)
    }

    /// A video frame from the capture thread; GOPs to store go to `keep`.
    pub fn on_frame(&mut self, frame: Arc<Frame>, keep: &mut Vec<Gop>) {
        if frame.is_keyframe() {
            self.complete(Some(frame.capture_us), keep);
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
        self.complete(None, keep);
    }

    /// The GOP being assembled ends before `end` (the next keyframe's
    /// capture time; `None`: stopping, it takes every pending packet).
    fn complete(&mut self, end: Option<u64>, keep: &mut Vec<Gop>) {
        let Some(c) = self.current.take() else {
            return;
        };
        let start = c.frames.first().map_or(0, |f| f.capture_us);
        let audio = self.take_audio(start, end);
        let bytes = c.bytes + audio.iter().map(|a| a.payload.len()).sum::<usize>();
        let gop = Gop {
            frames: c.frames,
            audio,
        };
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
        self.unconfirmed_bytes += bytes;
        self.unconfirmed.push_back((gop, bytes));
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

    const PACKET_US: u64 = 20_000;

    fn packet(n: u64) -> Arc<Frame> {
        Arc::new(Frame {
            channel: Channel::Audio,
            flags: FrameFlags::empty(),
            capture_us: n * PACKET_US,
            sequence: n,
            payload: Bytes::from(vec![1; 30]),
        })
    }

    /// Video frames `seqs`, each followed by the audio packets captured
    /// during its interval (as a camera with a microphone delivers them).
    fn feed_av(k: &mut Keeper, seqs: std::ops::Range<u64>) -> Vec<Gop> {
        let mut keep = Vec::new();
        for s in seqs {
            k.on_frame(frame(s), &mut keep);
            let per_frame = FRAME_US / PACKET_US;
            for n in s * per_frame..(s + 1) * per_frame {
                k.on_audio(packet(n));
            }
        }
        keep
    }

    fn audio_span(g: &Gop) -> (u64, u64, usize) {
        (
            g.audio.first().map_or(0, |a| a.capture_us),
            g.audio.last().map_or(0, |a| a.capture_us),
            g.audio.len(),
        )
    }

    #[test]
    fn a_gop_kept_offline_carries_the_audio_of_its_span() {
        let mut k = Keeper::new(limits());
        let kept = feed_av(&mut k, 0..31);
        assert_eq!(firsts(&kept), vec![0, 10, 20]);
        for g in &kept {
            // 1 s GOPs: 50 packets of 20 ms, from the keyframe on, up to the
            // next keyframe.
            let start = g.capture_us();
            assert_eq!(
                audio_span(g),
                (start, start + 980_000, 50),
                "GOP at {start}"
            );
            assert!(g
                .audio
                .windows(2)
                .all(|w| w[0].sequence + 1 == w[1].sequence));
        }
        // Stopping: the partial GOP takes every packet still waiting.
        let mut flushed = Vec::new();
        k.flush(&mut flushed);
        assert_eq!(audio_span(&flushed[0]), (3_000_000, 3_080_000, 5));
        assert_eq!(k.audio_dropped(), 0);
    }

    #[test]
    fn unconfirmed_and_incomplete_live_gops_keep_their_audio() {
        let mut k = Keeper::new(limits());
        let mut keep = Vec::new();
        k.set_online(true, &mut keep);
        assert!(feed_av(&mut k, 0..25).is_empty(), "sent live");
        let (held, bytes) = k.unconfirmed();
        assert_eq!(held, 2);
        assert_eq!(
            bytes,
            2 * (10 * 100 + 50 * 30),
            "audio counts toward the window"
        );
        // GOP 0's live group left incomplete: kept with its audio.
        k.live_incomplete(0, &mut keep);
        assert_eq!(audio_span(&keep[0]), (0, 980_000, 50));
        // The GOP being captured left incomplete too: kept, with its audio,
        // once it completes.
        k.live_incomplete(20 * FRAME_US, &mut keep);
        let kept = feed_av(&mut k, 25..31);
        assert_eq!(firsts(&kept), vec![20]);
        assert_eq!(audio_span(&kept[0]), (2_000_000, 2_980_000, 50));
        // The link drops: the unconfirmed GOP 10 goes with its audio.
        let mut dropped = Vec::new();
        k.set_online(false, &mut dropped);
        assert_eq!(firsts(&dropped), vec![10]);
        assert_eq!(audio_span(&dropped[0]), (1_000_000, 1_980_000, 50));
    }

    #[test]
    fn late_stale_and_out_of_order_audio() {
        let mut k = Keeper::new(limits());
        let mut keep = Vec::new();
        // Audio from long before the first keyframe, and a repeat.
        k.on_audio(packet(1));
        k.on_audio(packet(1));
        for s in 100..110 {
            k.on_frame(frame(s), &mut keep);
        }
        // A packet of GOP 100's span arrives after GOP 110 began: it goes
        // with GOP 110 rather than being lost.
        k.on_frame(frame(110), &mut keep);
        k.on_audio(packet(549));
        for s in 111..121 {
            k.on_frame(frame(s), &mut keep);
        }
        assert_eq!(firsts(&keep), vec![100, 110]);
        assert!(keep[0].audio.is_empty());
        assert_eq!(audio_span(&keep[1]), (10_980_000, 10_980_000, 1));
        assert_eq!(k.audio_dropped(), 2, "the repeat and the stale packet");
    }

    #[test]
    fn waiting_audio_is_bounded_without_video() {
        let mut k = Keeper::new(limits());
        for n in 0..(MAX_PENDING_AUDIO as u64 + 100) {
            k.on_audio(packet(n));
        }
        assert_eq!(k.audio_dropped(), 100);
        assert_eq!(k.audio.len(), MAX_PENDING_AUDIO);
    }
}
