//! Motion detection on a low-resolution luma plane, cheap enough for a Pi Zero 2W.
//!
//! The plane (e.g. 80x60, the camera's downscaled preview) is cut into square
//! blocks; each block's mean luma is compared with a running background. A
//! block whose mean moved more than [`MotionConfig::threshold`] is "changed";
//! a frame has motion when at least [`MotionConfig::min_blocks`] blocks
//! changed. All arithmetic is integer (means in 1/16 luma steps) and the block
//! buffers are allocated once per plane size, never per frame.
//!
//! Events come with hysteresis: motion must persist for
//! [`MotionConfig::start_frames`] frames to start an event, and an event
//! ends only after [`MotionConfig::cooldown_ms`] without motion, so a person
//! pausing mid-frame does not produce a burst of start/end pairs. While an
//! event runs, a smaller area (half of `min_blocks`) keeps it going.
//!
//! The background learns every frame: unchanged blocks quickly (1/2^k of the
//! difference), changed blocks 8x slower, so a car that parks becomes
//! background after a while. When most of the frame changes at once (lights
//! switched on, auto-exposure step), the background is reset instead of
//! reporting motion.
//!
//! # Channels ([`run`])
//! * in: `mpsc::Receiver<LumaFrame>` from the video source.
//! * out: `mpsc::Sender<AuxMessage>` (JSON [`MotionEvent`] on [`Channel::Event`]).
//! * out: `watch::Sender<bool>` (motion active, for telemetry).

use bytes::Bytes;
use kodama_proto::Channel;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::uplink::AuxMessage;
use crate::video::LumaFrame;

/// Fixed-point scale of block means (4 fractional bits).
const FRAC_BITS: u32 = 4;

/// `[motion]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Block edge in pixels (8 on an 80x60 plane gives a 10x8 grid).
    pub block: u32,
    /// Change of a block's mean luma (0-255) that counts as motion.
    pub threshold: u8,
    /// Changed blocks needed for a frame to have motion.
    pub min_blocks: u32,
    /// Consecutive frames with motion needed to start an event.
    pub start_frames: u32,
    /// Time without motion that ends an event, milliseconds.
    pub cooldown_ms: u64,
    /// Background learning rate as a shift: each frame moves the background
    /// by 1/2^k of the difference (3 = 1/8 per frame).
    pub learn_shift: u8,
    /// Percentage of blocks changing at once that is taken as a lighting
    /// change (background reset) rather than motion.
    pub global_change_percent: u8,
    /// BCM GPIO of an optional PIR sensor (`hw/README.md`: GPIO 27), a second
    /// event source next to the picture; unset means no PIR. Needs the `pi`
    /// build feature.
    pub pir_gpio: Option<u8>,
    /// How often the PIR line is sampled, milliseconds (PIR modules hold
    /// their output for seconds, so 50 ms loses nothing).
    pub pir_poll_ms: u64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            block: 8,
            threshold: 14,
            min_blocks: 3,
            start_frames: 2,
            cooldown_ms: 2_000,
            learn_shift: 3,
            global_change_percent: 70,
            pir_gpio: None,
            pir_poll_ms: 50,
        }
    }
}

/// A rectangle in luma-plane pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl BoundingBox {
    fn union(self, o: BoundingBox) -> BoundingBox {
        let x = self.x.min(o.x);
        let y = self.y.min(o.y);
        let r = (self.x + self.w).max(o.x + o.w);
        let b = (self.y + self.h).max(o.y + o.h);
        BoundingBox {
            x,
            y,
            w: r - x,
            h: b - y,
        }
    }
}

/// A motion event, sent as JSON on the event channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MotionEvent {
    /// Motion started.
    MotionStart {
        /// When, µs since the Unix epoch.
        at_us: u64,
        /// Changed blocks in the frame that started it.
        area_blocks: u32,
        /// Changed area as a share of the frame, per mille.
        area_permille: u32,
        /// Where, in plane pixels.
        bbox: BoundingBox,
        /// Plane size the box refers to.
        frame_width: u32,
        /// Plane size the box refers to.
        frame_height: u32,
    },
    /// Motion ended (after the cooldown).
    MotionEnd {
        /// When the last motion was seen, µs since the Unix epoch.
        at_us: u64,
        /// From start to last motion, µs.
        duration_us: u64,
        /// Largest changed area during the event, blocks.
        peak_blocks: u32,
        /// Union of all boxes during the event.
        bbox: BoundingBox,
    },
}

/// A PIR sensor's output changed, sent as JSON on the event channel next to
/// the picture's [`MotionEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PirEvent {
    /// The sensor's output went high: a warm body moved in its field.
    PirStart {
        /// When, µs since the Unix epoch.
        at_us: u64,
    },
    /// The output went low again (after the module's hold time).
    PirEnd {
        /// When, µs since the Unix epoch.
        at_us: u64,
    },
}

impl PirEvent {
    /// The event for an edge seen at `at_us`.
    pub fn from_edge(motion: bool, at_us: u64) -> Self {
        if motion {
            PirEvent::PirStart { at_us }
        } else {
            PirEvent::PirEnd { at_us }
        }
    }

    /// The event as an uplink message on [`Channel::Event`].
    pub fn to_aux(&self) -> AuxMessage {
        let (PirEvent::PirStart { at_us } | PirEvent::PirEnd { at_us }) = *self;
        AuxMessage {
            channel: Channel::Event,
            capture_us: at_us,
            payload: Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
        }
    }
}

/// Forwards PIR edges (from [`crate::hw::gpio::watch_pir`]) as [`PirEvent`]s
/// until the edges end or `cancel` fires; waits when the uplink is behind
/// (edges are rare), never drops one. `now_us` is the wall clock.
pub async fn run_pir(
    mut edges: mpsc::Receiver<crate::hw::gpio::MotionEdge>,
    events: mpsc::Sender<AuxMessage>,
    now_us: impl Fn() -> u64,
    cancel: CancellationToken,
) {
    loop {
        let edge = tokio::select! {
            () = cancel.cancelled() => break,
            e = edges.recv() => match e { Some(e) => e, None => break },
        };
        let ev = PirEvent::from_edge(edge.motion, now_us());
        tracing::info!(?ev, "PIR");
        tokio::select! {
            () = cancel.cancelled() => break,
            r = events.send(ev.to_aux()) => if r.is_err() { break },
        }
    }
}

impl MotionEvent {
    /// The event as an uplink message on [`Channel::Event`].
    pub fn to_aux(&self) -> AuxMessage {
        let at_us = match self {
            MotionEvent::MotionStart { at_us, .. } | MotionEvent::MotionEnd { at_us, .. } => *at_us,
        };
        AuxMessage {
            channel: Channel::Event,
            capture_us: at_us,
            // Serialising plain integers and strings cannot fail.
            payload: Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
        }
    }
}

/// Detector state of an event in progress.
#[derive(Debug, Clone, Copy)]
struct Active {
    start_us: u64,
    last_motion_us: u64,
    peak_blocks: u32,
    bbox: BoundingBox,
}

/// Motion detector. Sans-IO: frames and their times in, events out.
#[derive(Debug, Clone)]
pub struct MotionDetector {
    cfg: MotionConfig,
    width: u32,
    height: u32,
    cols: u32,
    rows: u32,
    /// Per-block pixel sums of the current frame.
    sums: Vec<u32>,
    /// Per-block background mean, fixed point (`FRAC_BITS`); empty until the first frame.
    background: Vec<u32>,
    streak: u32,
    active: Option<Active>,
    rejected: u64,
}

impl MotionDetector {
    /// A detector with no background yet.
    pub fn new(cfg: MotionConfig) -> Self {
        MotionDetector {
            cfg,
            width: 0,
            height: 0,
            cols: 0,
            rows: 0,
            sums: Vec::new(),
            background: Vec::new(),
            streak: 0,
            active: None,
            rejected: 0,
        }
    }

    /// Whether an event is in progress.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Frames rejected because their size did not match their data.
    pub fn rejected_frames(&self) -> u64 {
        self.rejected
    }

    /// Feeds one frame taken at `now_us`; returns an event when one starts or ends.
    pub fn push(&mut self, frame: &LumaFrame, now_us: u64) -> Option<MotionEvent> {
        self.push_plane(frame.width, frame.height, &frame.data, now_us)
    }

    /// [`MotionDetector::push`] on a bare plane (`width * height` bytes, row-major).
    pub fn push_plane(
        &mut self,
        width: u32,
        height: u32,
        data: &[u8],
        now_us: u64,
    ) -> Option<MotionEvent> {
        let block = self.cfg.block.max(1);
        let expected = u64::from(width) * u64::from(height);
        if width == 0 || height == 0 || data.len() as u64 != expected {
            self.rejected = self.rejected.saturating_add(1);
            return None;
        }
        if (width, height) != (self.width, self.height) {
            // New plane size: start over (allocates; only on a size change).
            self.width = width;
            self.height = height;
            self.cols = width.div_ceil(block);
            self.rows = height.div_ceil(block);
            let n = (self.cols * self.rows) as usize;
            self.sums = vec![0; n];
            self.background.clear();
            self.streak = 0;
        }
        self.block_sums(data, block);

        let first = self.background.is_empty();
        if first {
            for i in 0..self.sums.len() {
                let mean = self.block_mean(i, block);
                self.background.push(mean);
            }
            return self.tick(0, None, now_us);
        }

        let threshold = u32::from(self.cfg.threshold) << FRAC_BITS;
        let shift = u32::from(self.cfg.learn_shift.min(12));
        let (mut changed, mut x0, mut y0, mut x1, mut y1) = (0u32, u32::MAX, u32::MAX, 0, 0);
        for i in 0..self.sums.len() {
            let mean = self.block_mean(i, block);
            let bg = self.background[i];
            let moved = mean.abs_diff(bg) > threshold;
            // Integer exponential average towards the current mean.
            let k = if moved { shift + 3 } else { shift };
            self.background[i] = if mean >= bg {
                bg + ((mean - bg) >> k).max(u32::from(mean != bg))
            } else {
                bg - ((bg - mean) >> k).max(1)
            };
            if moved {
                changed += 1;
                let (c, r) = (i as u32 % self.cols, i as u32 / self.cols);
                (x0, y0, x1, y1) = (x0.min(c), y0.min(r), x1.max(c), y1.max(r));
            }
        }
        let total = self.cols * self.rows;
        if changed * 100 >= total * u32::from(self.cfg.global_change_percent.max(1)) {
            // Lighting change: adopt the new frame as background, report nothing new.
            for i in 0..self.sums.len() {
                self.background[i] = self.block_mean(i, block);
            }
            return self.tick(0, None, now_us);
        }
        let bbox = (changed > 0).then(|| {
            let x = x0 * block;
            let y = y0 * block;
            BoundingBox {
                x,
                y,
                w: ((x1 + 1) * block).min(width) - x,
                h: ((y1 + 1) * block).min(height) - y,
            }
        });
        self.tick(changed, bbox, now_us)
    }

    /// Advances the event state machine with this frame's changed-block count.
    fn tick(
        &mut self,
        changed: u32,
        bbox: Option<BoundingBox>,
        now_us: u64,
    ) -> Option<MotionEvent> {
        let min = self.cfg.min_blocks.max(1);
        match &mut self.active {
            None => {
                if changed >= min {
                    self.streak += 1;
                } else {
                    self.streak = 0;
                }
                let bbox = bbox?;
                if self.streak < self.cfg.start_frames.max(1) {
                    return None;
                }
                self.streak = 0;
                self.active = Some(Active {
                    start_us: now_us,
                    last_motion_us: now_us,
                    peak_blocks: changed,
                    bbox,
                });
                let total = u64::from(self.cols * self.rows);
                Some(MotionEvent::MotionStart {
                    at_us: now_us,
                    area_blocks: changed,
                    area_permille: u32::try_from(u64::from(changed) * 1000 / total.max(1))
                        .unwrap_or(1000),
                    bbox,
                    frame_width: self.width,
                    frame_height: self.height,
                })
            }
            Some(a) => {
                if changed >= min.div_ceil(2) {
                    a.last_motion_us = now_us;
                    a.peak_blocks = a.peak_blocks.max(changed);
                    if let Some(b) = bbox {
                        a.bbox = a.bbox.union(b);
                    }
                    return None;
                }
                if now_us.saturating_sub(a.last_motion_us) < self.cfg.cooldown_ms * 1000 {
                    return None;
                }
                let a = *a;
                self.active = None;
                Some(MotionEvent::MotionEnd {
                    at_us: a.last_motion_us,
                    duration_us: a.last_motion_us - a.start_us,
                    peak_blocks: a.peak_blocks,
                    bbox: a.bbox,
                })
            }
        }
    }

    /// Sums each block's pixels into `self.sums`.
    fn block_sums(&mut self, data: &[u8], block: u32) {
        self.sums.fill(0);
        let (w, b) = (self.width as usize, block as usize);
        let cols = self.cols as usize;
        for (y, row) in data.chunks_exact(w).enumerate() {
            let base = (y / b) * cols;
            for (c, px) in row.chunks(b).enumerate() {
                self.sums[base + c] += px.iter().map(|&p| u32::from(p)).sum::<u32>();
            }
        }
    }

    /// Mean luma of block `i`, fixed point; edge blocks may be partial.
    fn block_mean(&self, i: usize, block: u32) -> u32 {
        let (c, r) = (i as u32 % self.cols, i as u32 / self.cols);
        let bw = block.min(self.width - c * block);
        let bh = block.min(self.height - r * block);
        (self.sums[i] << FRAC_BITS) / (bw * bh)
    }
}

/// Runs a detector over `frames` until they end or `cancel` fires: events go
/// to `events` (waiting when the uplink is behind, never dropping an end
/// event), the active flag to `active`.
pub async fn run(
    cfg: MotionConfig,
    mut frames: mpsc::Receiver<LumaFrame>,
    events: mpsc::Sender<AuxMessage>,
    active: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut det = MotionDetector::new(cfg);
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => break,
            f = frames.recv() => match f { Some(f) => f, None => break },
        };
        if let Some(ev) = det.push(&frame, frame.capture_us) {
            tracing::info!(?ev, "motion");
            tokio::select! {
                () = cancel.cancelled() => break,
                r = events.send(ev.to_aux()) => if r.is_err() { break },
            }
        }
        active.send_if_modified(|a| std::mem::replace(a, det.is_active()) != det.is_active());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn pir_edges_become_events_on_the_event_channel() {
        use crate::hw::gpio::{watch_pir, ScriptedInput};
        let pin = ScriptedInput::new();
        let (edge_tx, edge_rx) = mpsc::channel(4);
        let (aux_tx, mut aux_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(watch_pir(
            pin.clone(),
            std::time::Duration::from_millis(50),
            edge_tx,
            cancel.clone(),
        ));
        let forwarder = tokio::spawn(run_pir(
            edge_rx,
            aux_tx,
            || 1_700_000_000_000_000,
            cancel.clone(),
        ));
        // Let the watcher read the idle (low) level first.
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        pin.set(true);
        let start = aux_rx.recv().await.expect("start event");
        pin.set(false);
        let end = aux_rx.recv().await.expect("end event");
        assert_eq!(start.channel, Channel::Event);
        let start: serde_json::Value = serde_json::from_slice(&start.payload).expect("json");
        let end: serde_json::Value = serde_json::from_slice(&end.payload).expect("json");
        assert_eq!(start["event"], "pir_start");
        assert_eq!(end["event"], "pir_end");
        assert_eq!(start["at_us"], 1_700_000_000_000_000u64);
        cancel.cancel();
        watcher.await.expect("task").expect("pin never fails");
        forwarder.await.expect("task");
    }

    const W: u32 = 80;
    const H: u32 = 60;

    /// A flat grey plane with a bright square at (x, y) of edge `s`.
    fn plane(square: Option<(u32, u32, u32)>) -> Vec<u8> {
        let mut d = vec![90u8; (W * H) as usize];
        if let Some((x, y, s)) = square {
            for yy in y..(y + s).min(H) {
                for xx in x..(x + s).min(W) {
                    d[(yy * W + xx) as usize] = 220;
                }
            }
        }
        d
    }

    fn run_frames(det: &mut MotionDetector, frames: &[Vec<u8>], t0: u64) -> Vec<MotionEvent> {
        frames
            .iter()
            .enumerate()
            .filter_map(|(i, f)| det.push_plane(W, H, f, t0 + i as u64 * 100_000))
            .collect()
    }

    #[test]
    fn still_scene_has_no_events() {
        let mut det = MotionDetector::new(MotionConfig::default());
        let frames = vec![plane(None); 50];
        assert!(run_frames(&mut det, &frames, 0).is_empty());
        assert!(!det.is_active());
    }

    #[test]
    fn moving_square_starts_then_ends_after_cooldown() {
        let mut det = MotionDetector::new(MotionConfig::default());
        let mut frames = vec![plane(None); 5];
        // 10 frames (1 s at 10 fps) of a 24 px square walking right.
        frames.extend((0..10).map(|i| plane(Some((4 + i * 4, 16, 24)))));
        // Then 40 still frames (4 s): longer than the 2 s cooldown.
        frames.extend(vec![plane(None); 40]);
        let events = run_frames(&mut det, &frames, 1_000_000);
        assert_eq!(events.len(), 2, "{events:?}");
        match &events[0] {
            MotionEvent::MotionStart {
                at_us,
                area_blocks,
                bbox,
                ..
            } => {
                // Second frame with motion (start_frames = 2) is frame 6.
                assert_eq!(*at_us, 1_600_000);
                assert!(*area_blocks >= 9, "{area_blocks}");
                assert!(
                    bbox.x <= 8 && bbox.y <= 16 && bbox.y + bbox.h >= 40,
                    "{bbox:?}"
                );
            }
            e => panic!("expected start, got {e:?}"),
        }
        match &events[1] {
            MotionEvent::MotionEnd {
                duration_us, bbox, ..
            } => {
                assert!(*duration_us >= 800_000, "{duration_us}");
                assert!(bbox.x + bbox.w >= 64, "union covers the walk: {bbox:?}");
            }
            e => panic!("expected end, got {e:?}"),
        }
        assert!(!det.is_active());
        let json = serde_json::to_string(&events[0]).expect("json");
        assert!(json.starts_with(r#"{"event":"motion_start""#), "{json}");
    }

    #[test]
    fn tiny_change_is_below_minimum_area() {
        let mut det = MotionDetector::new(MotionConfig::default());
        let mut frames = vec![plane(None); 3];
        // A 6 px blob touches at most 2 blocks (< min_blocks 3).
        frames.extend((0..10).map(|i| plane(Some((10 + (i % 2) * 40, 10, 6)))));
        assert!(run_frames(&mut det, &frames, 0).is_empty());
    }

    #[test]
    fn lighting_change_resets_background() {
        let mut det = MotionDetector::new(MotionConfig::default());
        let mut frames = vec![plane(None); 3];
        frames.extend(vec![vec![200u8; (W * H) as usize]; 10]);
        assert!(run_frames(&mut det, &frames, 0).is_empty());
    }

    #[test]
    fn parked_object_becomes_background() {
        let mut det = MotionDetector::new(MotionConfig {
            cooldown_ms: 500,
            ..MotionConfig::default()
        });
        let mut frames = vec![plane(None); 3];
        frames.extend(vec![plane(Some((20, 20, 24))); 200]);
        let events = run_frames(&mut det, &frames, 0);
        assert_eq!(events.len(), 2, "start, then end once absorbed: {events:?}");
    }

    #[test]
    fn bad_frames_are_rejected() {
        let mut det = MotionDetector::new(MotionConfig::default());
        assert_eq!(det.push_plane(W, H, &[0; 10], 0), None);
        assert_eq!(det.push_plane(0, 0, &[], 0), None);
        assert_eq!(det.rejected_frames(), 2);
    }

    #[tokio::test]
    async fn run_sends_events_as_aux_messages() {
        let (ftx, frx) = mpsc::channel(4);
        let (etx, mut erx) = mpsc::channel(4);
        let (atx, arx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(MotionConfig::default(), frx, etx, atx, cancel.clone()));
        for i in 0..8u32 {
            let sq = (i >= 3).then_some((i * 6, 10, 24));
            let f = LumaFrame {
                width: W,
                height: H,
                data: plane(sq),
                capture_us: u64::from(i) * 100_000,
            };
            ftx.send(f).await.expect("send");
        }
        let msg = erx.recv().await.expect("event");
        assert_eq!(msg.channel, Channel::Event);
        assert_eq!(msg.capture_us, 400_000);
        let ev: MotionEvent = serde_json::from_slice(&msg.payload).expect("json");
        assert!(matches!(ev, MotionEvent::MotionStart { .. }));
        drop(ftx);
        task.await.expect("task");
        assert!(*arx.borrow());
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(
            w in 1u32..40, h in 1u32..40, block in 0u32..20,
            seeds in proptest::collection::vec(any::<u8>(), 1..8),
            extra in 0usize..3,
        ) {
            let mut det = MotionDetector::new(MotionConfig { block, ..MotionConfig::default() });
            for (i, s) in seeds.iter().enumerate() {
                let n = (w * h) as usize + if i % 3 == 0 { extra } else { 0 };
                let data: Vec<u8> = (0..n).map(|k| s.wrapping_mul(k as u8)).collect();
                let _ = det.push_plane(w, h, &data, i as u64 * 1000);
            }
        }

        #[test]
        fn unchanged_frames_never_trigger(level in any::<u8>(), n in 1usize..30) {
            let mut det = MotionDetector::new(MotionConfig::default());
            let d = vec![level; (W * H) as usize];
            for i in 0..n {
                prop_assert_eq!(det.push_plane(W, H, &d, i as u64), None);
            }
        }
    }
}
