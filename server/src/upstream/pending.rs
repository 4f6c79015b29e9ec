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
//!
//! A live GOP is held with the camera's audio of its time span
//! ([`Pending::audio`]): from its keyframe to the next GOP's keyframe (at
//! most [`AUDIO_TAIL_US`] past its last frame). Packets wait for the GOP
//! they fall in to complete (at most [`MAX_WAITING_AUDIO`]); one that
//! arrives after its GOP completed still joins it while it is held. A
//! backfilled GOP goes out as its video frames followed by those packets,
//! as the camera's own store-and-forward sends it, so the upstream's
//! recording of an outage has its sound; a live GOP completed while no
//! connection is up is due only [`AUDIO_SETTLE`] later, so the audio of
//! its last moments has arrived when the connection comes back. The audio counts against the
//! buffer's bytes; a GOP that leaves takes its audio with it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kodama_proto::{Channel, Frame};

use crate::camera_session::MAX_BACKFILL_AUDIO;
use crate::feed::Group;

/// How long a completed GOP waits for the upstream's live acknowledgement
/// before it is due for backfill: above the upstream recorder's commit
/// interval (`recording.flush_seconds`, 5 s by default), which acknowledges
/// only what is durable.
pub const GRACE: Duration = Duration::from_secs(12);

/// How long a backfilled GOP waits for its acknowledgement before it is sent again.
pub const RESEND: Duration = Duration::from_secs(20);

/// Audio packets waiting for the GOP they fall in to complete before the
/// oldest are dropped (counted): the span of the longest GOP a backfill
/// stream may carry.
pub const MAX_WAITING_AUDIO: usize = MAX_BACKFILL_AUDIO;

/// Audio captured up to this long after a GOP's last frame still belongs to
/// it when the next GOP's keyframe is later (a GOP the origin missed in
/// between is not given to its predecessor).
pub const AUDIO_TAIL_US: u64 = 1_000_000;

/// How long a live GOP completed without a connection waits before it is
/// due: the audio of its last moments travels on its own stream and may
/// arrive after the next keyframe (later still on a loaded link), and a
/// GOP that went out before its audio arrived would lack it upstream.
pub const AUDIO_SETTLE: Duration = Duration::from_secs(2);

/// Frame interval assumed for a GOP of one frame.
const DEFAULT_FRAME_US: u64 = 33_333;

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
    /// The camera's audio of the GOP's span (live GOPs only).
    audio: Vec<Arc<Frame>>,
    /// Capture time past its span (live GOPs only).
    audio_end_us: u64,
    /// Capture time of its last video frame.
    last_us: u64,
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
    /// Audio packets held with GOPs now.
    pub audio: usize,
    /// Audio packets dropped that a held GOP needed (too many waiting, or
    /// more than a backfill stream carries).
    pub audio_dropped: u64,
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
    /// Audio packets captured after the newest live GOP's span, waiting for
    /// the GOP they fall in to complete (bounded, oldest dropped).
    waiting_audio: VecDeque<Arc<Frame>>,
    /// Keyframe capture time of the newest live GOP pushed.
    newest_live: Option<u64>,
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
            waiting_audio: VecDeque::new(),
            newest_live: None,
            stats: PendingStats::default(),
        }
    }

    /// Whether it keeps anything (a buffer of 0 bytes keeps nothing).
    pub fn keeps(&self) -> bool {
        self.max_bytes > 0
    }

    /// The counters.
    pub fn stats(&self) -> PendingStats {
        PendingStats {
            gops: self.gops.len(),
            bytes: self.stats.bytes,
            audio: self.gops.values().map(|e| e.audio.len()).sum(),
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
        let last_us = group
            .frames
            .iter()
            .rfind(|f| f.channel != Channel::Audio)
            .map_or(capture_us, |f| f.capture_us);
        if source == Source::Live {
            self.live_gop_begins(capture_us);
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
        let audio_end_us = last_us + frame_interval(&group);
        self.stats.bytes += bytes;
        self.gops.insert(
            capture_us,
            Entry {
                group,
                source,
                bytes,
                due: match (self.connected, source) {
                    (true, _) => now + GRACE,
                    (false, Source::Live) => now + AUDIO_SETTLE,
                    // Whole, with the audio the camera kept with it.
                    (false, Source::CameraBackfill(_)) => now,
                },
                live_frames,
                in_flight: false,
                audio: Vec::new(),
                audio_end_us,
                last_us,
            },
        );
        if source == Source::Live {
            // Its packets that arrived before it completed.
            self.attach_waiting_before(audio_end_us);
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.stats.bytes > self.max_bytes {
            let Some((_, old)) = self.gops.pop_first() else {
                break;
            };
            self.stats.bytes -= old.bytes;
            self.stats.evicted += 1;
        }
    }

    /// A live GOP whose keyframe was captured at `capture_us` completed:
    /// the previous one's span ends at its keyframe, and the packets
    /// waiting before it are the previous one's.
    fn live_gop_begins(&mut self, capture_us: u64) {
        if let Some(e) = self.newest_live.and_then(|k| self.gops.get_mut(&k)) {
            if capture_us > e.audio_end_us {
                e.audio_end_us = capture_us.min(e.last_us + AUDIO_TAIL_US);
            }
        }
        if self.newest_live.is_none_or(|k| capture_us > k) {
            self.newest_live = Some(capture_us);
        }
        self.attach_waiting_before(capture_us);
    }

    /// Gives the waiting packets captured before `end_us` to their GOPs.
    fn attach_waiting_before(&mut self, end_us: u64) {
        while self
            .waiting_audio
            .front()
            .is_some_and(|a| a.capture_us < end_us)
        {
            if let Some(a) = self.waiting_audio.pop_front() {
                self.attach_audio(a);
            }
        }
    }

    /// An audio packet of the camera ([`Channel::Audio`]) as it arrived
    /// live: held with the GOP whose span it falls in, or until that GOP
    /// completes. Packets of GOPs no longer held are not needed.
    pub fn audio(&mut self, packet: Arc<Frame>) {
        if self.max_bytes == 0 || packet.channel != Channel::Audio {
            return;
        }
        let newest_end = self
            .newest_live
            .and_then(|k| self.gops.get(&k))
            .map(|e| e.audio_end_us);
        let after_newest = match (self.newest_live, newest_end) {
            (None, _) => true,
            (Some(_), Some(end)) => packet.capture_us >= end,
            // The newest GOP left already: what is after its keyframe may
            // be the next one's.
            (Some(k), None) => packet.capture_us >= k,
        };
        if !after_newest {
            self.attach_audio(packet);
            return;
        }
        if self.waiting_audio.len() >= MAX_WAITING_AUDIO {
            self.waiting_audio.pop_front();
            self.stats.audio_dropped += 1;
        }
        // Kept in capture order (packets may arrive out of order).
        let at = self
            .waiting_audio
            .partition_point(|a| a.capture_us <= packet.capture_us);
        self.waiting_audio.insert(at, packet);
    }

    /// Adds `packet` to the held live GOP whose span holds it, if any.
    fn attach_audio(&mut self, packet: Arc<Frame>) {
        let Some((_, e)) = self.gops.range_mut(..=packet.capture_us).next_back() else {
            return;
        };
        if e.source != Source::Live
            || packet.capture_us >= e.audio_end_us
            || e.audio.iter().any(|a| a.sequence == packet.sequence)
        {
            return;
        }
        if e.audio.len() >= MAX_BACKFILL_AUDIO {
            self.stats.audio_dropped += 1;
            return;
        }
        let bytes = packet.payload.len();
        e.audio.push(packet);
        e.bytes += bytes;
        self.stats.bytes += bytes;
        self.evict();
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
        Some((*capture_us, with_audio(&e.group, &e.audio)))
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

/// The interval between a GOP's frames (its last frame lasts as long).
fn frame_interval(group: &Group) -> u64 {
    let video: Vec<u64> = group
        .frames
        .iter()
        .filter(|f| f.channel != Channel::Audio)
        .map(|f| f.capture_us)
        .collect();
    match (video.first(), video.last()) {
        (Some(first), Some(last)) if video.len() > 1 => {
            (last.saturating_sub(*first) / (video.len() as u64 - 1)).max(1)
        }
        _ => DEFAULT_FRAME_US,
    }
}

/// `group` as a backfill stream carries it: its video frames, then `audio`
/// in increasing sequence numbers (each once).
fn with_audio(group: &Arc<Group>, audio: &[Arc<Frame>]) -> Arc<Group> {
    if audio.is_empty() {
        return group.clone();
    }
    let mut packets = audio.to_vec();
    packets.sort_by_key(|a| a.sequence);
    packets.dedup_by_key(|a| a.sequence);
    let mut frames = group.frames.clone();
    frames.extend(packets);
    Arc::new(Group {
        id: group.id,
        frames,
        truncated: group.truncated,
    })
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
    fn gops_completed_without_a_connection_are_due_once_their_audio_arrived() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.push(gop(100, 2, 10), Source::Live, t0);
        assert!(p.next_due(t0).is_none(), "its last audio may be on its way");
        p.push(gop(50, 2, 10), Source::CameraBackfill(1), t0);
        assert_eq!(
            p.next_due(t0).map(|(c, _)| c),
            Some(50),
            "the camera's backfill carries its own audio"
        );
        let t0 = t0 + AUDIO_SETTLE;
        assert_eq!(p.next_due(t0).map(|(c, _)| c), Some(100));
        p.connected();
        p.push(gop(200, 2, 10), Source::Live, t0);
        assert!(
            p.next_due(t0).is_none(),
            "on a live connection: after the grace"
        );
        p.disconnected(t0);
        p.push(gop(300, 2, 10), Source::Live, t0);
        let t1 = t0 + AUDIO_SETTLE;
        let due: Vec<u64> = std::iter::from_fn(|| p.next_due(t1).map(|(c, _)| c)).collect();
        assert_eq!(due, vec![50, 100, 200, 300]);
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

    /// A live GOP of one second at 30 fps from keyframe `k_us`.
    fn second(k_us: u64) -> Arc<Group> {
        Arc::new(Group {
            id: k_us,
            frames: (0..30u64)
                .map(|i| {
                    Arc::new(Frame {
                        channel: Channel::Video,
                        flags: if i == 0 {
                            FrameFlags::KEYFRAME
                        } else {
                            FrameFlags::empty()
                        },
                        capture_us: k_us + i * 33_333,
                        sequence: k_us / 33_333 + i,
                        payload: Bytes::from(vec![0; 100]),
                    })
                })
                .collect(),
            truncated: false,
        })
    }

    /// The 20 ms audio packet captured at `capture_us` (numbered by it).
    fn packet(capture_us: u64) -> Arc<Frame> {
        Arc::new(Frame {
            channel: Channel::Audio,
            flags: FrameFlags::empty(),
            capture_us,
            sequence: capture_us / 20_000,
            payload: Bytes::from(vec![1; 40]),
        })
    }

    fn audio_of(g: &Group) -> Vec<u64> {
        g.frames
            .iter()
            .filter(|f| f.channel == Channel::Audio)
            .map(|f| f.capture_us)
            .collect()
    }

    #[test]
    fn a_backfilled_gop_carries_the_audio_of_its_span_after_its_video() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        // Offline: three one-second GOPs; each completes when the next
        // keyframe arrives, after its audio. One packet of the first GOP
        // arrives late, after that GOP completed; one arrives twice.
        for gop in 0..3u64 {
            for a in 0..50u64 {
                let c = gop * 1_000_000 + a * 20_000;
                if c != 980_000 {
                    p.audio(packet(c));
                }
            }
            if gop == 0 {
                p.audio(packet(20_000));
            }
            if gop > 0 {
                p.push(second((gop - 1) * 1_000_000), Source::Live, t0);
            }
            if gop == 1 {
                p.audio(packet(980_000));
            }
        }
        p.push(second(2_000_000), Source::Live, t0);
        let t0 = t0 + AUDIO_SETTLE;
        let sent: Vec<(u64, Arc<Group>)> = std::iter::from_fn(|| p.next_due(t0)).collect();
        assert_eq!(sent.len(), 3);
        for (i, (id, g)) in sent.iter().enumerate() {
            let k = i as u64 * 1_000_000;
            assert_eq!(*id, k);
            let kinds: Vec<Channel> = g.frames.iter().map(|f| f.channel).collect();
            assert!(
                kinds[..30].iter().all(|c| *c == Channel::Video)
                    && kinds[30..].iter().all(|c| *c == Channel::Audio),
                "video first, then audio"
            );
            let sequences: Vec<u64> = g.frames[30..].iter().map(|f| f.sequence).collect();
            assert!(
                sequences.windows(2).all(|w| w[0] < w[1]),
                "increasing, each once"
            );
            let audio = audio_of(g);
            // The newest GOP's span ends one frame after its last frame.
            let want: Vec<u64> = (k..k + 1_000_000).step_by(20_000).collect();
            assert_eq!(audio, want, "GOP {i} holds exactly its span's audio");
        }
        assert_eq!(p.stats().audio, 150);
        assert_eq!(p.stats().bytes, 3 * 30 * 100 + 150 * 40, "audio counts");
        // A GOP that leaves takes its audio with it.
        p.backfill_acknowledged(0);
        assert_eq!(p.stats().audio, 100);
        assert_eq!(p.stats().bytes, 2 * 30 * 100 + 100 * 40);
    }

    #[test]
    fn audio_of_gops_no_longer_held_is_not_kept() {
        let t0 = Instant::now();
        let mut p = Pending::new(1 << 20);
        p.connected();
        // Sent whole live and acknowledged: neither it nor its audio stays.
        for a in 0..50u64 {
            p.audio(packet(a * 20_000));
        }
        p.live_sent(0, 30);
        p.push(second(0), Source::Live, t0);
        assert_eq!(p.live_acknowledged(0), Some(Source::Live));
        p.audio(packet(990_000));
        assert_eq!(
            (p.stats().gops, p.stats().audio, p.stats().bytes),
            (0, 0, 0)
        );
        // The next GOP takes only its own span, and a camera's backfilled
        // GOP keeps the audio it came with.
        for a in 50..100u64 {
            p.audio(packet(a * 20_000));
        }
        p.push(second(1_000_000), Source::Live, t0);
        let mut uploaded = (*second(10_000_000)).clone();
        uploaded.frames.push(packet(10_000_000));
        p.push(Arc::new(uploaded), Source::CameraBackfill(3), t0);
        p.audio(packet(10_020_000));
        let due: Vec<(u64, Arc<Group>)> = std::iter::from_fn(|| p.next_due(t0 + GRACE)).collect();
        assert_eq!(
            audio_of(&due[0].1),
            (1_000_000..2_000_000).step_by(20_000).collect::<Vec<_>>()
        );
        assert_eq!(audio_of(&due[1].1), vec![10_000_000]);
    }

    #[test]
    fn waiting_audio_is_bounded() {
        let mut p = Pending::new(1 << 30);
        for a in 0..(MAX_WAITING_AUDIO as u64 + 10) {
            p.audio(packet(a * 20_000));
        }
        assert_eq!(p.stats().audio_dropped, 10);
        assert_eq!(p.waiting_audio.len(), MAX_WAITING_AUDIO);
        // Nothing waits when nothing is kept.
        let mut none = Pending::new(0);
        none.audio(packet(0));
        assert!(none.waiting_audio.is_empty());
    }
}
