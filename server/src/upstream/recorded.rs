//! Forwarding from the origin's own recordings: what an upstream has not
//! confirmed storing is read back from the fMP4 segments and the SQLite
//! index, so the backlog survives an outage of any length the recordings
//! cover, and a restart of the origin during one.
//!
//! Each lane of a camera's recording (live segments, and segments written
//! from the camera's own backfill) is written in order: one open segment at
//! a time, segment ids and fragment numbers increasing. A fragment's place
//! in its lane is therefore (segment id, seq), and per upstream, camera and
//! lane one watermark in the index (`upstream_watermark`) says "the
//! upstream has everything up to here". It moves only on the upstream's
//! `Stored` acknowledgements, and only over a run of acknowledged
//! fragments: what lies beyond it is sent again (the upstream recognises a
//! GOP it already has and acknowledges it without writing it twice).
//!
//! [`Progress`] is the sans-IO core: the window of fragments after each
//! watermark (read from the index every [`SCAN_EVERY`]), the
//! acknowledgements not yet passed by a watermark, what went out live on
//! the current connection, and what is in flight as backfill. [`load_group`]
//! reads one fragment back as the camera's frames. Memory is bounded by
//! [`WINDOW`], [`ACKED_MAX`] and [`LIVE_RECENT`]; disk by the recordings'
//! own retention (a fragment retention deletes before it was forwarded is
//! gone upstream too, and counted).
//!
//! Which acknowledgement confirms which fragment: a backfilled fragment
//! goes out with its own id ([`wire_id`]: segment and fragment number) and
//! only `Stored::Backfill` with that id confirms it; a live acknowledgement
//! (`Stored::LiveThrough`, by keyframe capture time) confirms only the live
//! lane's fragment of that GOP. The same GOP can be in both lanes — cut
//! short live when the origin went down, whole in the camera's backfill
//! after it — and the whole one must still go.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kodama_media::fmp4;
use kodama_proto::{Channel, Frame, FrameFlags};

use super::pending::{GRACE, RESEND};
use crate::db::{ForwardFragment, RecordedLane};
use crate::feed::Group;
use crate::recorder::segment::{audio_ticks_to_us, ticks_to_us};

/// How often the index is read for fragments past the watermarks (and the
/// watermarks saved): the origin commits its index every few seconds, so
/// reading it more often finds nothing new.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Fragments per lane read past a watermark at once.
pub const WINDOW: usize = 256;

/// Acknowledgements held above the watermarks (live ones arrive for GOPs
/// far ahead of an outage's backfill); beyond it the newest are forgotten
/// and those GOPs sent again later.
pub const ACKED_MAX: usize = 8192;

/// Live GOPs remembered as sent whole on the current connection.
pub const LIVE_RECENT: usize = 256;

/// Largest fragment read back (a corrupt index row must not allocate more).
pub const MAX_FRAGMENT_BYTES: i64 = 64 << 20;

/// Counters for logs and figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProgressStats {
    /// Fragments the watermarks passed (confirmed stored upstream).
    pub confirmed: u64,
    /// Fragments skipped: no camera origin in the index (re-indexed from a
    /// file after a crash) or unreadable.
    pub skipped: u64,
    /// Fragments in the windows not yet confirmed.
    pub waiting: usize,
}

#[derive(Debug)]
struct LaneState {
    watermark: (i64, i64),
    saved: (i64, i64),
    window: VecDeque<ForwardFragment>,
}

/// Where forwarding one camera to one upstream stands (sans-IO: time is
/// passed in).
#[derive(Debug)]
pub struct Progress {
    lanes: [LaneState; 2],
    /// Wire ids of backfilled fragments the upstream acknowledged, not yet
    /// passed by a watermark.
    acked: BTreeSet<u64>,
    /// Keyframe capture times of live GOPs the upstream acknowledged, not
    /// yet passed.
    acked_live: BTreeSet<u64>,
    /// Frames handed to the live sender per keyframe capture time, and when.
    live: VecDeque<(u64, usize, Instant)>,
    /// Backfill in flight by keyframe capture time: when to give up on it.
    in_flight: HashMap<u64, Instant>,
    stats: ProgressStats,
}

fn index(lane: RecordedLane) -> usize {
    match lane {
        RecordedLane::Live => 0,
        RecordedLane::Backfill => 1,
    }
}

impl Progress {
    /// Starts from the saved watermarks (live, backfill).
    pub fn new(live: (i64, i64), backfill: (i64, i64)) -> Self {
        let lane = |w| LaneState {
            watermark: w,
            saved: w,
            window: VecDeque::new(),
        };
        Self {
            lanes: [lane(live), lane(backfill)],
            acked: BTreeSet::new(),
            acked_live: BTreeSet::new(),
            live: VecDeque::new(),
            in_flight: HashMap::new(),
            stats: ProgressStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> ProgressStats {
        ProgressStats {
            waiting: self.lanes.iter().map(|l| l.window.len()).sum(),
            ..self.stats
        }
    }

    /// A lane's watermark.
    pub fn watermark(&self, lane: RecordedLane) -> (i64, i64) {
        self.lanes[index(lane)].watermark
    }

    /// Watermarks that moved since they were last saved.
    pub fn unsaved(&self) -> Vec<(RecordedLane, (i64, i64))> {
        RecordedLane::ALL
            .into_iter()
            .filter(|l| {
                let s = &self.lanes[index(*l)];
                s.watermark != s.saved
            })
            .map(|l| (l, self.watermark(l)))
            .collect()
    }

    /// `at` is in the index for `lane`.
    pub fn saved(&mut self, lane: RecordedLane, at: (i64, i64)) {
        let s = &mut self.lanes[index(lane)];
        s.saved = s.saved.max(at);
    }

    /// The fragments after `lane`'s watermark, as just read from the index
    /// (read from the watermark [`Progress::watermark`] gave, in order).
    pub fn refresh(&mut self, lane: RecordedLane, from: (i64, i64), rows: Vec<ForwardFragment>) {
        let s = &mut self.lanes[index(lane)];
        s.window = rows
            .into_iter()
            .filter(|f| (f.segment_id, f.seq) > s.watermark.max(from))
            .collect();
        self.advance();
    }

    /// The upstream stored the backfilled fragment `id` ([`wire_id`]).
    pub fn backfill_acknowledged(&mut self, id: u64) {
        self.in_flight.remove(&id);
        insert_bounded(&mut self.acked, id);
        self.advance();
    }

    /// The upstream stored the whole live GOP whose keyframe was captured
    /// at `capture_us`.
    pub fn live_acknowledged(&mut self, capture_us: u64) {
        insert_bounded(&mut self.acked_live, capture_us);
        self.advance();
    }

    /// A fragment that cannot be sent (unreadable): passed over as if
    /// stored, counted.
    pub fn skip(&mut self, id: u64) {
        self.stats.skipped += 1;
        self.backfill_acknowledged(id);
    }

    fn advance(&mut self) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            while let Some(f) = lane.window.front() {
                let passed = match o_capture(f) {
                    Some(capture_us) => {
                        let by_id = self.acked.remove(&wire_id(f));
                        // A live acknowledgement stands for the live lane's GOP.
                        let live = i == 0 && self.acked_live.remove(&capture_us);
                        if by_id || live {
                            self.in_flight.remove(&wire_id(f));
                            self.stats.confirmed += 1;
                        }
                        by_id || live
                    }
                    None => {
                        self.stats.skipped += 1;
                        true
                    }
                };
                if !passed {
                    break;
                }
                lane.watermark = (f.segment_id, f.seq);
                lane.window.pop_front();
            }
        }
    }

    /// The GOP captured at `capture_us` did not leave whole live: not
    /// remembered as sent, so its fragment is backfilled.
    pub fn live_incomplete(&mut self, capture_us: u64) {
        self.live.retain(|(c, _, _)| *c != capture_us);
    }

    /// The live sender handed `frames` frames of the GOP whose keyframe
    /// was captured at `capture_us` to the connection.
    pub fn live_sent(&mut self, capture_us: u64, frames: usize, now: Instant) {
        match self.live.iter_mut().find(|(c, _, _)| *c == capture_us) {
            Some((_, n, at)) => {
                *n = (*n).max(frames);
                *at = now;
            }
            None => {
                if self.live.len() >= LIVE_RECENT {
                    self.live.pop_front();
                }
                self.live.push_back((capture_us, frames, now));
            }
        }
    }

    /// The oldest fragment due for backfill at `now`, marked in flight: not
    /// acknowledged, not in flight, and not sent whole live on this
    /// connection less than [`GRACE`] ago (its live acknowledgement is
    /// still on its way).
    pub fn next_due(&mut self, now: Instant) -> Option<ForwardFragment> {
        let due = self
            .lanes
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.window.iter().map(move |f| (i, f)))
            .filter_map(|(i, f)| Some((o_capture(f)?, i, f)))
            .filter(|(c, i, f)| {
                let id = wire_id(f);
                let live_lane = *i == 0;
                let stored = self.acked.contains(&id) || live_lane && self.acked_live.contains(c);
                let sending = self.in_flight.get(&id).is_some_and(|until| *until > now);
                // Sent whole live a moment ago: its acknowledgement is on its way.
                let live_recently = live_lane
                    && self
                        .live
                        .iter()
                        .any(|(lc, n, at)| lc == c && *n as i64 >= f.frames && now < *at + GRACE);
                !(stored || sending || live_recently)
            })
            .min_by_key(|(c, i, _)| (*c, *i))
            .map(|(_, _, f)| f.clone())?;
        self.in_flight.insert(wire_id(&due), now + RESEND);
        Some(due)
    }

    /// Backfilled GOPs sent and not yet acknowledged (nor given up on).
    pub fn in_flight(&self, now: Instant) -> usize {
        self.in_flight.values().filter(|u| **u > now).count()
    }

    /// The backfill of fragment `id` did not go out: due again at once.
    pub fn send_failed(&mut self, id: u64) {
        self.in_flight.remove(&id);
    }

    /// The connection ended: nothing is in flight, nothing went out live.
    pub fn disconnected(&mut self) {
        self.in_flight.clear();
        self.live.clear();
    }
}

fn o_capture(f: &ForwardFragment) -> Option<u64> {
    f.origin.map(|o| o.capture_us as u64)
}

/// The id a recorded fragment is backfilled under, and acknowledged by:
/// its segment id and fragment number (unique across lanes; a fragment
/// number stays below 2^24, 16.7 M GOPs in one segment).
pub fn wire_id(f: &ForwardFragment) -> u64 {
    ((f.segment_id.max(0) as u64) << 24) | (f.seq.max(0) as u64 & 0xff_ffff)
}

fn insert_bounded(set: &mut BTreeSet<u64>, value: u64) {
    set.insert(value);
    // The newest are forgotten first: the watermarks need the oldest next.
    while set.len() > ACKED_MAX {
        set.pop_last();
    }
}

/// Why a recorded fragment could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The segment file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold what the index says.
    #[error("{path}: {why}")]
    Media {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Reads fragment `f` of a segment under `root` back as the camera's GOP:
/// Annex-B access units (the keyframe led by the track's parameter sets),
/// the camera's sequence numbers, and capture times rebuilt from the
/// keyframe's (exact, from the index) plus the fragment's 90 kHz decode
/// times (within 11 µs). The group id is the fragment's [`wire_id`], the
/// id its backfill acknowledgement comes back with.
pub fn load_group(root: &Path, f: &ForwardFragment) -> Result<Group, LoadError> {
    let path = root.join(&f.path);
    let media = |why: String| LoadError::Media {
        path: path.clone(),
        why,
    };
    let origin = f
        .origin
        .ok_or_else(|| media("the index does not know where the fragment came from".into()))?;
    if f.init_bytes <= 0 || f.init_bytes > 1 << 20 || f.len <= 0 || f.len > MAX_FRAGMENT_BYTES {
        return Err(media(format!(
            "implausible lengths: init {} fragment {}",
            f.init_bytes, f.len
        )));
    }
    let io = |source| LoadError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    let mut init = vec![0u8; f.init_bytes as usize];
    (&file)
        .take(f.init_bytes as u64)
        .read_exact(&mut init)
        .map_err(io)?;
    let track = fmp4::parse_init(&init)
        .map_err(|e| media(e.to_string()))?
        .track;
    let mut buf = vec![0u8; f.len as usize];
    file.read_exact_at(&mut buf, f.offset as u64).map_err(io)?;
    let info = fmp4::parse_fragment(&buf, f.offset as u64)
        .map_err(|e| media(e.to_string()))?
        .ok_or_else(|| media("truncated fragment".into()))?;
    let mut at = (info.data_offset - f.offset as u64) as usize;
    let mut ticks = 0u64;
    let mut frames = Vec::with_capacity(info.header.samples.len());
    for (i, s) in info.header.samples.iter().enumerate() {
        let sample = buf
            .get(at..at + s.size as usize)
            .ok_or_else(|| media("sample outside its fragment".into()))?;
        let parameter_sets: &[&[u8]] = if i == 0 {
            &[&track.sps, &track.pps]
        } else {
            &[]
        };
        let payload = crate::thumbs::to_annexb_led_by(parameter_sets, sample)
            .ok_or_else(|| media("bad NAL unit lengths".into()))?;
        frames.push(Arc::new(Frame {
            channel: Channel::Video,
            flags: if i == 0 {
                FrameFlags::KEYFRAME | FrameFlags::CODEC_CONFIG
            } else {
                FrameFlags::empty()
            },
            capture_us: origin.capture_us as u64 + ticks_to_us(ticks) as u64,
            sequence: origin.first_seq as u64 + i as u64,
            payload: Bytes::from(payload),
        }));
        at += s.size as usize;
        ticks += u64::from(s.duration);
    }
    if frames.len() as i64 != f.frames || !info.header.samples.first().is_some_and(|s| s.keyframe) {
        return Err(media(format!(
            "{} frames, the index says {}, or no keyframe first",
            frames.len(),
            f.frames
        )));
    }
    if let Some(run) = &info.audio {
        // The audio of the GOP's span follows its video, as the camera's
        // own backfill sends it. Its capture times come back through the
        // decode times, which both tracks count from the segment's start.
        let video_start_us = ticks_to_us(info.header.base_decode_time);
        let mut at = (info.audio_data_offset - f.offset as u64) as usize;
        let mut t = run.base_decode_time;
        for (i, s) in run.samples.iter().enumerate() {
            let packet = buf
                .get(at..at + s.size as usize)
                .ok_or_else(|| media("audio sample outside its fragment".into()))?;
            let since_video_us = audio_ticks_to_us(t) - video_start_us;
            frames.push(Arc::new(Frame {
                channel: Channel::Audio,
                flags: FrameFlags::empty(),
                capture_us: (origin.capture_us + since_video_us).max(0) as u64,
                // The fMP4 file keeps no audio sequence numbers; a backfill
                // stream needs them only increasing.
                sequence: i as u64,
                payload: Bytes::copy_from_slice(packet),
            }));
            at += s.size as usize;
            t += u64::from(s.duration);
        }
    }
    Ok(Group {
        id: wire_id(f),
        frames,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::FragmentOrigin;

    fn frag(segment_id: i64, seq: i64, capture_us: Option<i64>) -> ForwardFragment {
        ForwardFragment {
            segment_id,
            seq,
            path: String::new(),
            init_bytes: 1,
            offset: 1,
            len: 100,
            frames: 15,
            origin: capture_us.map(|capture_us| FragmentOrigin {
                capture_us,
                first_seq: 0,
            }),
        }
    }

    #[test]
    fn the_watermark_moves_only_over_acknowledged_runs() {
        let t0 = Instant::now();
        let mut p = Progress::new((1, 0), (0, 0));
        // Live acknowledgements may come before the origin indexes the GOP.
        p.live_acknowledged(300);
        p.refresh(
            RecordedLane::Live,
            (1, 0),
            vec![
                frag(1, 1, Some(100)),
                frag(1, 2, Some(200)),
                frag(1, 3, Some(300)),
            ],
        );
        assert_eq!(p.watermark(RecordedLane::Live), (1, 0));
        let due: Vec<u64> =
            std::iter::from_fn(|| p.next_due(t0).and_then(|f| o_capture(&f))).collect();
        assert_eq!(due, vec![100, 200], "oldest first; 300 is stored already");
        assert_eq!(p.in_flight(t0), 2);
        p.backfill_acknowledged(wire_id(&frag(1, 2, None)));
        assert_eq!(
            p.watermark(RecordedLane::Live),
            (1, 0),
            "100 is still missing"
        );
        p.backfill_acknowledged(wire_id(&frag(1, 1, None)));
        assert_eq!(p.watermark(RecordedLane::Live), (1, 3), "the whole run");
        assert_eq!(p.unsaved(), vec![(RecordedLane::Live, (1, 3))]);
        p.saved(RecordedLane::Live, (1, 3));
        assert!(p.unsaved().is_empty());
        assert_eq!(p.stats().confirmed, 3);
        assert_eq!(p.in_flight(t0), 0);
    }

    #[test]
    fn a_gop_sent_whole_live_waits_its_grace_and_a_lost_connection_sends_it_again() {
        let t0 = Instant::now();
        let mut p = Progress::new((0, 0), (0, 0));
        p.live_sent(100, 15, t0);
        p.live_sent(200, 7, t0);
        p.refresh(
            RecordedLane::Live,
            (0, 0),
            vec![frag(1, 1, Some(100)), frag(1, 2, Some(200))],
        );
        let f = p.next_due(t0).expect("cut short live: due now");
        assert_eq!(o_capture(&f), Some(200));
        assert!(p.next_due(t0).is_none(), "100 is in its grace");
        assert!(p.next_due(t0 + GRACE).is_some(), "no ack within the grace");
        p.disconnected();
        assert_eq!(p.in_flight(t0), 0);
        let again: Vec<u64> =
            std::iter::from_fn(|| p.next_due(t0).and_then(|f| o_capture(&f))).collect();
        assert_eq!(
            again,
            vec![100, 200],
            "everything due on the next connection"
        );
        assert_eq!(p.in_flight(t0 + RESEND), 0, "given up on after RESEND");
        assert!(p.next_due(t0 + RESEND).is_some(), "and sent again");
    }

    #[test]
    fn lanes_are_followed_apart_and_fragments_without_origin_are_passed_over() {
        let t0 = Instant::now();
        let mut p = Progress::new((5, 9), (0, 0));
        p.refresh(
            RecordedLane::Live,
            (5, 9),
            vec![frag(5, 9, Some(1)), frag(6, 1, None), frag(6, 2, Some(900))],
        );
        p.refresh(RecordedLane::Backfill, (0, 0), vec![frag(7, 1, Some(50))]);
        assert_eq!(
            p.watermark(RecordedLane::Live),
            (6, 1),
            "(5, 9) was passed already"
        );
        assert_eq!(p.stats().skipped, 1);
        assert_eq!(
            p.next_due(t0).and_then(|f| o_capture(&f)),
            Some(50),
            "oldest capture first"
        );
        p.live_acknowledged(50);
        assert_eq!(
            p.watermark(RecordedLane::Backfill),
            (0, 0),
            "a live acknowledgement does not stand for a backfill-lane fragment"
        );
        p.backfill_acknowledged(wire_id(&frag(7, 1, None)));
        assert_eq!(p.watermark(RecordedLane::Backfill), (7, 1));
        p.skip(wire_id(&frag(6, 2, None)));
        assert_eq!(p.watermark(RecordedLane::Live), (6, 2));
        assert_eq!(p.stats().skipped, 2);
    }

    #[test]
    fn a_gop_cut_short_live_and_whole_in_the_cameras_backfill_goes_twice() {
        let t0 = Instant::now();
        let mut p = Progress::new((0, 0), (0, 0));
        let cut = ForwardFragment {
            frames: 5,
            ..frag(1, 1, Some(100))
        };
        let whole = frag(2, 1, Some(100));
        p.refresh(RecordedLane::Live, (0, 0), vec![cut.clone()]);
        p.refresh(RecordedLane::Backfill, (0, 0), vec![whole.clone()]);
        let first = p.next_due(t0).expect("due");
        let second = p.next_due(t0).expect("the other copy is due too");
        assert_eq!(
            (wire_id(&first), wire_id(&second)),
            (wire_id(&cut), wire_id(&whole))
        );
        p.backfill_acknowledged(wire_id(&cut));
        assert_eq!(p.watermark(RecordedLane::Live), (1, 1));
        assert_eq!(p.watermark(RecordedLane::Backfill), (0, 0), "still owed");
        p.backfill_acknowledged(wire_id(&whole));
        assert_eq!(p.watermark(RecordedLane::Backfill), (2, 1));
    }

    /// A GOP of the firmware's synthetic picture written the way the
    /// recorder writes it, then read back.
    #[test]
    fn a_recorded_gop_reads_back_as_the_cameras_frames_then_its_audio() {
        use crate::recorder::segment::{build_fragment, SegmentFile};
        use crate::recorder::LocalStorage;
        use kodama_firmware::video::synthetic::{MotionSwitch, SyntheticSource};
        use kodama_firmware::video::{VideoSettings, VideoSource};
        use kodama_media::h264;

        let settings = VideoSettings {
            width: 64,
            height: 48,
            fps: 30,
            bitrate_kbps: 100,
            keyframe_interval: 3,
        };
        let mut src =
            SyntheticSource::new(settings, false, MotionSwitch::default()).expect("source");
        let originals: Vec<Frame> = (0..3u64)
            .map(|i| {
                let f = src.next_frame().expect("frame");
                assert_eq!(f.keyframe, i == 0);
                Frame {
                    channel: Channel::Video,
                    flags: if i == 0 {
                        FrameFlags::KEYFRAME
                    } else {
                        FrameFlags::empty()
                    },
                    capture_us: 1_000_000 + i * 33_333,
                    sequence: 100 + i,
                    payload: f.data,
                }
            })
            .collect();
        let (Some(sps), Some(pps)) = h264::parameter_sets(&originals[0].payload) else {
            panic!("the keyframe carries SPS and PPS");
        };
        let track = fmp4::VideoTrack::new(sps, pps).expect("track");
        let dir = tempfile::tempdir().expect("tempdir");
        let rel = "cam/2026-11-30/00-00-00.mp4";
        let microphone = fmp4::AudioTrack {
            channels: 1,
            pre_skip: 312,
            input_sample_rate: 48_000,
        };
        let mut file = SegmentFile::create_av(
            &LocalStorage,
            &dir.path().join(rel),
            &track,
            Some(&microphone),
        )
        .expect("segment");
        let init_bytes = file.len() as i64;
        let refs: Vec<&Frame> = originals.iter().collect();
        let mut built = build_fragment(&refs, 1, 1_000_000, 0, 33_333, 5).expect("fragment");
        // Five 20 ms Opus packets (TOC 0xF8: CELT fullband, one frame), the
        // first 10 ms after the keyframe.
        let sounds: Vec<Frame> = (0..5u64)
            .map(|i| Frame {
                channel: Channel::Audio,
                flags: FrameFlags::empty(),
                capture_us: 1_010_000 + i * 20_000,
                sequence: 40 + i,
                payload: Bytes::from(vec![0xF8, i as u8, 7, 7]),
            })
            .collect();
        let sound_refs: Vec<&Frame> = sounds.iter().collect();
        crate::recorder::segment::attach_audio(&mut built, &sound_refs, 1_000_000, 0)
            .expect("audio");
        let offset = file.append(&built).expect("append");
        file.sync().expect("sync");
        let f = ForwardFragment {
            segment_id: 7,
            seq: 1,
            path: rel.into(),
            init_bytes,
            offset: offset as i64,
            len: built.len() as i64,
            frames: 3,
            origin: Some(FragmentOrigin {
                capture_us: 1_000_000,
                first_seq: 100,
            }),
        };
        let g = load_group(dir.path(), &f).expect("reads back");
        assert_eq!(g.id, wire_id(&f));
        assert_eq!(
            g.frames.len(),
            3 + 5,
            "the video, then the audio of its span"
        );
        let (video, audio) = g.frames.split_at(3);
        for (i, (got, want)) in audio.iter().zip(&sounds).enumerate() {
            assert_eq!(got.channel, Channel::Audio);
            assert_eq!(got.payload, want.payload);
            assert!(got.capture_us.abs_diff(want.capture_us) <= 21, "{got:?}");
            assert_eq!(got.sequence, i as u64, "increasing within the GOP");
        }
        assert!(g.frames[0].is_keyframe() && h264::is_idr(&g.frames[0].payload));
        assert_eq!(
            h264::parameter_sets(&g.frames[0].payload),
            (Some(sps), Some(pps)),
            "the keyframe is led by the parameter sets"
        );
        for (got, want) in video.iter().zip(&originals) {
            assert_eq!(got.sequence, want.sequence);
            assert!(got.capture_us.abs_diff(want.capture_us) <= 11, "{got:?}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            fmp4::append_sample(&got.payload, &mut a);
            fmp4::append_sample(&want.payload, &mut b);
            assert_eq!(a, b, "the same NAL units");
        }

        let wrong = ForwardFragment {
            frames: 4,
            ..f.clone()
        };
        assert!(matches!(
            load_group(dir.path(), &wrong),
            Err(LoadError::Media { .. })
        ));
        let huge = ForwardFragment {
            len: MAX_FRAGMENT_BYTES + 1,
            ..f.clone()
        };
        assert!(matches!(
            load_group(dir.path(), &huge),
            Err(LoadError::Media { .. })
        ));
        let gone = ForwardFragment {
            path: "cam/none.mp4".into(),
            ..f
        };
        assert!(matches!(
            load_group(dir.path(), &gone),
            Err(LoadError::Io { .. })
        ));
    }

    #[test]
    fn acknowledgements_held_are_bounded_newest_forgotten_first() {
        let mut p = Progress::new((0, 0), (0, 0));
        for c in 0..(ACKED_MAX as u64 + 10) {
            p.backfill_acknowledged(1_000 + c);
        }
        assert_eq!(p.acked.len(), ACKED_MAX);
        assert!(
            p.acked.contains(&1_000),
            "the oldest stay: the watermark needs them next"
        );
    }
}
