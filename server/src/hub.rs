//! The live hub: each camera's newest group of pictures, fanned out to viewers.
//!
//! Model (moq-lite's track / group / frame): a camera is a track; each GOP is
//! a [`LiveGroup`] that grows as frames arrive. The track publishes its newest
//! group on a `watch` channel. A viewer always works on the newest group it
//! has seen: a new viewer starts at the current group's keyframe, and a viewer
//! that falls behind jumps to the newest group when one starts, abandoning the
//! rest of the old one. Only the newest group per camera is kept by the hub
//! (plus whatever a lagging viewer still holds), so memory is bounded by the
//! per-group limits below, whatever viewers do.
//!
//! Consumers that must see every group (the recorder) get completed groups on
//! a bounded feed ([`crate::feed`]) that drops whole groups when they lag.
//!
//! Channels: per camera a `watch` of the newest group, a `watch` of the
//! camera's info/online state, and a `broadcast` (capacity [`AUX_CAPACITY`]) of
//! telemetry and event frames; per group a `watch` of its frame count.
//!
//! Sessions are replaceable: a camera that reconnects while its old
//! connection still lingers (a firmware restart, a link failover) publishes
//! again, and each [`Hub::publish`] gets a higher *generation*. Only the
//! current generation may change shared state (status, newest group, feeds);
//! an older publisher is told through [`Publisher::replaced`] so its session
//! closes the stale connection, and its drop leaves the camera online.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use kodama_net::EndpointId;
use kodama_proto::{CameraInfo, CameraSelector, Frame};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::feed::{FeedEvent, FeedSender, Group, StoredAcks};

/// Telemetry/event frames a viewer may lag behind before it misses some.
pub const AUX_CAPACITY: usize = 64;

/// Largest GOP the hub holds, in payload bytes. 32 MiB is over a minute of
/// 4 Mbit/s video; a camera exceeding it is broken or hostile.
pub const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// Most frames in one GOP (two minutes at 30 fps).
pub const MAX_GROUP_FRAMES: usize = 3600;

/// A group of pictures as it arrives.
#[derive(Debug)]
pub struct LiveGroup {
    /// Hub-assigned number, increasing per camera across reconnects.
    pub id: u64,
    frames: RwLock<Vec<Arc<Frame>>>,
    bytes: AtomicU64,
    len: watch::Sender<usize>,
    closed: watch::Sender<bool>,
}

impl LiveGroup {
    fn new(id: u64) -> Self {
        Self {
            id,
            frames: RwLock::new(Vec::new()),
            bytes: AtomicU64::new(0),
            len: watch::channel(0).0,
            closed: watch::channel(false).0,
        }
    }

    /// Frames so far.
    pub fn len(&self) -> usize {
        *self.len.borrow()
    }

    /// Whether no frame has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frame `index`, if it has arrived.
    pub fn get(&self, index: usize) -> Option<Arc<Frame>> {
        self.frames.read().ok()?.get(index).cloned()
    }

    /// Waits for the frame count or the closed flag to change.
    pub fn subscribe(&self) -> (watch::Receiver<usize>, watch::Receiver<bool>) {
        (self.len.subscribe(), self.closed.subscribe())
    }

    fn push(&self, frame: Arc<Frame>) -> Result<(), GroupLimit> {
        let bytes = self
            .bytes
            .fetch_add(frame.payload.len() as u64, Ordering::Relaxed)
            + frame.payload.len() as u64;
        let mut frames = self.frames.write().map_err(|_| GroupLimit::Poisoned)?;
        if frames.len() >= MAX_GROUP_FRAMES {
            return Err(GroupLimit::Frames);
        }
        if bytes as usize > MAX_GROUP_BYTES {
            return Err(GroupLimit::Bytes);
        }
        frames.push(frame);
        let n = frames.len();
        drop(frames);
        self.len.send_replace(n);
        Ok(())
    }

    fn close(&self) -> Vec<Arc<Frame>> {
        self.closed.send_replace(true);
        self.frames.read().map(|f| f.clone()).unwrap_or_default()
    }
}

/// A camera exceeded a per-group limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupLimit {
    /// Too many bytes in one GOP.
    #[error("a GOP exceeded {MAX_GROUP_BYTES} bytes")]
    Bytes,
    /// Too many frames in one GOP.
    #[error("a GOP exceeded {MAX_GROUP_FRAMES} frames")]
    Frames,
    /// A lock was poisoned by a panic elsewhere.
    #[error("internal lock poisoned")]
    Poisoned,
}

/// What viewers and the API see of a camera.
#[derive(Debug, Clone)]
pub struct CameraStatus {
    /// Its endpoint id.
    pub id: EndpointId,
    /// Its latest info.
    pub info: CameraInfo,
    /// Whether it is connected.
    pub online: bool,
    /// When it last sent anything.
    pub last_seen: SystemTime,
}

/// One camera's live state.
#[derive(Debug)]
pub struct CameraTrack {
    /// The camera's endpoint id.
    pub id: EndpointId,
    status: watch::Sender<CameraStatus>,
    group: watch::Sender<Option<Arc<LiveGroup>>>,
    aux: broadcast::Sender<Arc<Frame>>,
    next_group: AtomicU64,
    /// When the camera last sent anything, ms since the Unix epoch. Kept out
    /// of the status watch so viewers are not woken for every frame.
    last_seen_ms: AtomicU64,
    /// Frames from a group that was no longer current when they arrived.
    pub stale_frames: AtomicU64,
    /// Ingest and audience counters for metrics and `top`.
    pub counters: TrackCounters,
    /// The current publisher's generation (0: never published). Written only
    /// under `session`; read without it on the per-frame path.
    generation: AtomicU64,
    /// The current publisher's generation and its "replaced" token. Every
    /// change of shared state by a publisher happens under this lock, so a
    /// replaced publisher can never undo what its successor did.
    session: Mutex<(u64, CancellationToken)>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CameraTrack {
    fn new(status: CameraStatus, last_seen: SystemTime) -> Self {
        CameraTrack {
            id: status.id,
            status: watch::channel(status).0,
            group: watch::channel(None).0,
            aux: broadcast::channel(AUX_CAPACITY).0,
            next_group: AtomicU64::new(0),
            last_seen_ms: AtomicU64::new(unix_ms(last_seen)),
            stale_frames: AtomicU64::new(0),
            counters: TrackCounters::default(),
            generation: AtomicU64::new(0),
            session: Mutex::new((0, CancellationToken::new())),
        }
    }

    /// Counts a viewer of this camera (a viewer session, a browser's live
    /// view) until the guard is dropped.
    pub fn viewer_guard(self: &Arc<Self>) -> ViewerGuard {
        self.counters.viewers.fetch_add(1, Ordering::Relaxed);
        ViewerGuard(self.clone())
    }

    /// The camera's current status, with an up-to-date `last_seen`.
    pub fn current_status(&self) -> CameraStatus {
        let mut s = self.status.borrow().clone();
        let ms = self.last_seen_ms.load(Ordering::Relaxed);
        s.last_seen = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        s
    }

    /// Watches the camera's info and online state.
    pub fn status(&self) -> watch::Receiver<CameraStatus> {
        self.status.subscribe()
    }

    /// Watches the newest group.
    pub fn groups(&self) -> watch::Receiver<Option<Arc<LiveGroup>>> {
        self.group.subscribe()
    }

    /// Subscribes to telemetry and events.
    pub fn aux(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.aux.subscribe()
    }

    /// The generation of the session currently publishing (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Live counters of one camera: what it sends and who watches.
#[derive(Debug, Default)]
pub struct TrackCounters {
    /// Video frames accepted into the hub since start.
    pub video_frames: AtomicU64,
    /// Their payload bytes.
    pub video_bytes: AtomicU64,
    /// Viewers watching now.
    pub viewers: AtomicU64,
    /// Recent frame and byte rates.
    rate: Mutex<crate::metrics::RateMeter>,
    /// The newest telemetry document.
    telemetry: Mutex<Option<Arc<Frame>>>,
}

impl TrackCounters {
    fn video(&self, bytes: usize, now_ms: u64) {
        self.video_frames.fetch_add(1, Ordering::Relaxed);
        self.video_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(now_ms, bytes as u64);
    }

    /// Frames per second and bits per second over the last complete seconds.
    pub fn rates(&self, now_ms: u64) -> (f64, f64) {
        self.rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rates(now_ms)
    }

    /// The newest telemetry frame the camera sent.
    pub fn telemetry(&self) -> Option<Arc<Frame>> {
        self.telemetry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Holds one viewer in [`TrackCounters::viewers`].
#[derive(Debug)]
pub struct ViewerGuard(Arc<CameraTrack>);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.counters.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The camera side's handle to its track while connected.
#[derive(Debug)]
pub struct Publisher {
    hub: Arc<Hub>,
    track: Arc<CameraTrack>,
    generation: u64,
    replaced: CancellationToken,
    /// Camera's stream group id → the live group it maps to (only the newest).
    current: Option<(u64, Arc<LiveGroup>, bool)>,
}

/// All cameras.
#[derive(Debug)]
pub struct Hub {
    cameras: Mutex<HashMap<EndpointId, Arc<CameraTrack>>>,
    feeds: Vec<FeedSender>,
    acks: StoredAcks,
}

impl Hub {
    /// A hub that also hands completed groups to `feeds`.
    pub fn new(feeds: Vec<FeedSender>) -> Arc<Self> {
        Arc::new(Self {
            cameras: Mutex::new(HashMap::new()),
            feeds,
            acks: StoredAcks::default(),
        })
    }

    /// The routes of recording acknowledgements back to camera sessions
    /// (the recorder sends on them, sessions register).
    pub fn acks(&self) -> &StoredAcks {
        &self.acks
    }

    /// Hands a backfilled GOP to the consumers; `false` if one of them had
    /// no room (the camera is not acknowledged and sends it again later).
    pub fn backfill(&self, camera: EndpointId, group: Arc<Group>) -> bool {
        let mut all = true;
        for f in &self.feeds {
            if f.tx
                .try_send(FeedEvent::Backfill {
                    camera,
                    group: group.clone(),
                })
                .is_err()
            {
                all = false;
            }
        }
        all
    }

    /// Hands a relay's batch of recorded telemetry and event rows to the
    /// consumers; `false` if one of them had no room (the batch is not
    /// acknowledged and the relay sends it again later).
    pub fn aux_batch(&self, camera: EndpointId, id: u64, frames: Arc<Vec<Frame>>) -> bool {
        let mut all = true;
        for f in &self.feeds {
            if f.tx
                .try_send(FeedEvent::AuxBatch {
                    camera,
                    id,
                    frames: frames.clone(),
                })
                .is_err()
            {
                all = false;
            }
        }
        all
    }

    fn offer(&self, event: FeedEvent) {
        for f in &self.feeds {
            f.offer(event.clone());
        }
    }

    /// Every camera seen since start.
    pub fn cameras(&self) -> Vec<CameraStatus> {
        let map = self
            .cameras
            .lock()
            .map(|m| m.values().cloned().collect::<Vec<_>>());
        map.unwrap_or_default()
            .iter()
            .map(|t| t.current_status())
            .collect()
    }

    /// Finds a camera for a viewer.
    pub fn find(&self, selector: &CameraSelector) -> Option<Arc<CameraTrack>> {
        let map = self.cameras.lock().ok()?;
        match selector {
            CameraSelector::Id(bytes) => map.values().find(|t| t.id.as_bytes() == bytes).cloned(),
            CameraSelector::Name(name) => map
                .values()
                .filter(|t| &t.status.borrow().info.name == name)
                .max_by_key(|t| t.status.borrow().online)
                .cloned(),
            CameraSelector::FirstOnline => {
                let mut online: Vec<_> =
                    map.values().filter(|t| t.status.borrow().online).collect();
                online.sort_by(|a, b| {
                    a.status
                        .borrow()
                        .info
                        .name
                        .cmp(&b.status.borrow().info.name)
                });
                online.first().map(|t| (*t).clone())
            }
        }
    }

    /// Names of known cameras (for error messages).
    pub fn camera_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.cameras().into_iter().map(|c| c.info.name).collect();
        names.sort();
        names
    }

    /// Registers a camera the server knows from its own records (the
    /// recording index, the allowlist) before it connects, offline, so that
    /// after a restart viewers and the API find it by name and can wait for
    /// it. A camera already known is left as it is.
    pub fn know(&self, id: EndpointId, name: &str, last_seen: SystemTime) {
        let mut map = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_insert_with(|| {
            let info = CameraInfo {
                name: name.to_owned(),
                codec: kodama_proto::Codec::H264,
                width: 0,
                height: 0,
                fps_milli: 0,
                bitrate_kbps: 0,
                sps: Default::default(),
                pps: Default::default(),
                firmware: String::new(),
                audio: None,
            };
            let status = CameraStatus {
                id,
                info,
                online: false,
                last_seen,
            };
            Arc::new(CameraTrack::new(status, last_seen))
        });
    }

    /// A camera connected: (re)registers its track and returns its publisher.
    pub fn publish(self: &Arc<Self>, id: EndpointId, info: CameraInfo) -> Publisher {
        let status = CameraStatus {
            id,
            info: info.clone(),
            online: true,
            last_seen: SystemTime::now(),
        };
        let track = {
            let mut map = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id)
                .or_insert_with(|| Arc::new(CameraTrack::new(status.clone(), SystemTime::now())))
                .clone()
        };
        let replaced = CancellationToken::new();
        let generation = {
            let mut session = track.session.lock().unwrap_or_else(|p| p.into_inner());
            // The older session (if any) is stale from here on.
            session.1.cancel();
            let generation = session.0 + 1;
            *session = (generation, replaced.clone());
            track.generation.store(generation, Ordering::Release);
            track
                .last_seen_ms
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
            track.status.send_replace(status);
            self.offer(FeedEvent::CameraOnline { camera: id, info });
            generation
        };
        if generation > 1 {
            tracing::debug!(camera = %id, generation, "camera session replaces an older one");
        }
        Publisher {
            hub: self.clone(),
            track,
            generation,
            replaced,
            current: None,
        }
    }
}

impl Publisher {
    /// The track being published.
    pub fn track(&self) -> &Arc<CameraTrack> {
        &self.track
    }

    /// This session's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this is still the camera's current session.
    pub fn is_current(&self) -> bool {
        self.track.generation() == self.generation
    }

    /// Fires when a newer session of the same camera has published: this
    /// one's connection is stale and should be closed.
    pub fn replaced(&self) -> CancellationToken {
        self.replaced.clone()
    }

    /// Runs `change` with the session lock held if this is the current
    /// session; a replaced session changes nothing.
    fn if_current<R>(&self, change: impl FnOnce() -> R) -> Option<R> {
        let session = self.track.session.lock().unwrap_or_else(|p| p.into_inner());
        (session.0 == self.generation).then(change)
    }

    /// A video stream started: a new group begins and becomes the newest.
    pub fn start_group(&mut self, stream_group: u64) {
        self.close_current(false);
        let id = self.track.next_group.fetch_add(1, Ordering::Relaxed);
        let group = Arc::new(LiveGroup::new(id));
        let published = self.if_current(|| {
            self.track.group.send_replace(Some(group.clone()));
        });
        if published.is_some() {
            self.current = Some((stream_group, group, true));
        }
    }

    /// A video frame on the camera's stream `stream_group`.
    pub fn video(&mut self, stream_group: u64, frame: Frame) -> Result<(), GroupLimit> {
        if !self.is_current() {
            self.track.stale_frames.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let now_ms = self.touch();
        match &self.current {
            Some((g, live, _)) if *g == stream_group => {
                let bytes = frame.payload.len();
                live.push(Arc::new(frame))?;
                self.track.counters.video(bytes, now_ms);
                Ok(())
            }
            _ => {
                self.track.stale_frames.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The camera's stream `stream_group` ended (`complete` false if reset).
    pub fn end_group(&mut self, stream_group: u64, complete: bool) {
        if let Some((g, _, ok)) = &mut self.current {
            if *g == stream_group {
                *ok = complete;
                self.close_current(true);
            }
        }
    }

    fn close_current(&mut self, ended_by_stream: bool) {
        let Some((_, live, complete)) = self.current.take() else {
            return;
        };
        let frames = live.close();
        if frames.is_empty() {
            return;
        }
        let group = FeedEvent::Group {
            camera: self.track.id,
            group: Arc::new(Group {
                id: live.id,
                frames,
                truncated: !(complete && ended_by_stream),
            }),
        };
        // A replaced session's last group would land in its successor's
        // recording, out of order: it is dropped (the successor starts at a
        // keyframe of its own).
        if self.if_current(|| self.hub.offer(group)).is_none() {
            tracing::debug!(camera = %self.track.id, generation = self.generation, "dropped the last group of a replaced session");
        }
    }

    /// A telemetry or event frame.
    pub fn aux(&mut self, frame: Frame) {
        if !self.is_current() {
            return;
        }
        self.touch();
        let frame = Arc::new(frame);
        if frame.channel == kodama_proto::Channel::Telemetry {
            *self
                .track
                .counters
                .telemetry
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(frame.clone());
        }
        let _ = self.track.aux.send(frame.clone());
        self.hub.offer(FeedEvent::Aux {
            camera: self.track.id,
            frame,
        });
    }

    fn touch(&self) -> u64 {
        let now_ms = unix_ms(SystemTime::now());
        self.track.last_seen_ms.store(now_ms, Ordering::Relaxed);
        now_ms
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.close_current(false);
        // Only the current session may take the camera offline: a replaced
        // one ending must not touch its successor's status or recording.
        self.if_current(|| {
            self.track.status.send_modify(|s| {
                s.online = false;
                s.last_seen = SystemTime::now();
            });
            self.hub.offer(FeedEvent::CameraOffline {
                camera: self.track.id,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::{Channel, Codec, FrameFlags};

    fn info(name: &str) -> CameraInfo {
        CameraInfo {
            name: name.into(),
            codec: Codec::H264,
            width: 64,
            height: 48,
            fps_milli: 30_000,
            bitrate_kbps: 100,
            sps: Bytes::new(),
            pps: Bytes::new(),
            firmware: String::new(),
            audio: None,
        }
    }

    fn frame(seq: u64, key: bool, len: usize) -> Frame {
        Frame {
            channel: Channel::Video,
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::empty()
            },
            capture_us: seq,
            sequence: seq,
            payload: Bytes::from(vec![0; len]),
        }
    }

    fn id() -> EndpointId {
        kodama_net::SecretKey::generate().public()
    }

    #[test]
    fn newest_group_is_published_and_completed_groups_are_fed() {
        let (feed, mut rx) = crate::feed::channel("test", 8);
        let hub = Hub::new(vec![feed]);
        let cam = id();
        let mut p = hub.publish(cam, info("a"));
        let groups = p.track().groups();
        p.start_group(0);
        p.video(0, frame(0, true, 10)).expect("fits");
        p.video(0, frame(1, false, 10)).expect("fits");
        p.start_group(1);
        p.video(1, frame(2, true, 10)).expect("fits");
        // A late frame of the old group is stale, not appended anywhere.
        p.video(0, frame(99, false, 10)).expect("ignored");
        assert_eq!(p.track().stale_frames.load(Ordering::Relaxed), 1);
        let newest = groups.borrow().clone().expect("group");
        assert_eq!((newest.id, newest.len()), (1, 1));
        assert!(matches!(rx.try_recv(), Ok(FeedEvent::CameraOnline { .. })));
        match rx.try_recv() {
            Ok(FeedEvent::Group { group, .. }) => {
                assert_eq!(group.frames.len(), 2);
                assert!(group.truncated, "superseded before its stream finished");
            }
            other => panic!("expected a group, got {other:?}"),
        }
        p.end_group(1, true);
        match rx.try_recv() {
            Ok(FeedEvent::Group { group, .. }) => assert!(!group.truncated),
            other => panic!("expected a group, got {other:?}"),
        }
        drop(p);
        assert!(matches!(rx.try_recv(), Ok(FeedEvent::CameraOffline { .. })));
        assert!(!hub.cameras()[0].online);
    }

    #[test]
    fn a_replaced_session_cannot_take_the_camera_offline_or_feed_the_recorder() {
        let (feed, mut rx) = crate::feed::channel("test", 16);
        let hub = Hub::new(vec![feed]);
        let cam = id();
        let mut old = hub.publish(cam, info("a"));
        old.start_group(0);
        old.video(0, frame(0, true, 10)).expect("fits");
        let replaced = old.replaced();
        assert!(!replaced.is_cancelled());
        // The camera restarted; its old connection lingers.
        let mut new = hub.publish(cam, info("a"));
        assert!(replaced.is_cancelled(), "the old session is told");
        assert!(new.is_current() && !old.is_current());
        assert_eq!(new.generation(), old.generation() + 1);
        new.start_group(0);
        new.video(0, frame(1, true, 10)).expect("fits");
        // Late traffic on the old connection changes nothing.
        old.video(0, frame(2, false, 10)).expect("ignored");
        old.start_group(1);
        let newest = new.track().groups().borrow().clone().expect("group");
        assert_eq!(newest.len(), 1, "the new session's group stays newest");
        drop(old);
        assert!(
            hub.cameras()[0].online,
            "still online after the old session ended"
        );
        let events: Vec<FeedEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, FeedEvent::CameraOffline { .. })),
            "no offline event from the stale session: {events:?}"
        );
        let groups = events
            .iter()
            .filter(|e| matches!(e, FeedEvent::Group { .. }))
            .count();
        assert_eq!(
            groups, 0,
            "the stale session fed nothing after its successor"
        );
        drop(new);
        assert!(!hub.cameras()[0].online);
        let events: Vec<FeedEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(
            matches!(
                events.as_slice(),
                [FeedEvent::Group { .. }, FeedEvent::CameraOffline { .. }]
            ),
            "the current session's end feeds its group, then goes offline: {events:?}"
        );
    }

    #[test]
    fn known_cameras_are_found_offline_and_come_online_when_they_publish() {
        let hub = Hub::new(vec![]);
        let cam = id();
        hub.know(cam, "porch", SystemTime::UNIX_EPOCH);
        let track = hub
            .find(&CameraSelector::Name("porch".into()))
            .expect("known by name before it connects");
        let mut status = track.status();
        assert!(!status.borrow_and_update().online);
        assert!(hub.find(&CameraSelector::FirstOnline).is_none());
        let _p = hub.publish(cam, info("porch"));
        assert!(status.has_changed().expect("open"));
        assert!(status.borrow_and_update().online);
        // Knowing it again (a re-read allowlist) does not disturb it.
        hub.know(cam, "porch", SystemTime::UNIX_EPOCH);
        assert!(track.current_status().online);
    }

    #[test]
    fn oversized_groups_are_refused() {
        let hub = Hub::new(vec![]);
        let mut p = hub.publish(id(), info("a"));
        p.start_group(0);
        p.video(0, frame(0, true, MAX_GROUP_BYTES / 2))
            .expect("fits");
        assert_eq!(
            p.video(0, frame(1, false, MAX_GROUP_BYTES / 2 + 1)),
            Err(GroupLimit::Bytes)
        );
    }

    #[test]
    fn find_by_name_id_and_first_online() {
        let hub = Hub::new(vec![]);
        let (a, b) = (id(), id());
        let pa = hub.publish(a, info("zeta"));
        let _pb = hub.publish(b, info("alpha"));
        assert_eq!(
            hub.find(&CameraSelector::Name("zeta".into())).map(|t| t.id),
            Some(a)
        );
        assert_eq!(
            hub.find(&CameraSelector::Id(*b.as_bytes())).map(|t| t.id),
            Some(b)
        );
        assert_eq!(
            hub.find(&CameraSelector::FirstOnline).map(|t| t.id),
            Some(b)
        );
        drop(pa);
        assert_eq!(
            hub.camera_names(),
            vec!["alpha".to_owned(), "zeta".to_owned()]
        );
        assert!(hub.find(&CameraSelector::Name("nope".into())).is_none());
    }

    #[test]
    fn full_feed_drops_whole_groups_and_counts_them() {
        let (feed, _rx) = crate::feed::channel("slow", 1);
        let stats = feed.stats.clone();
        let hub = Hub::new(vec![feed]);
        let mut p = hub.publish(id(), info("a"));
        for g in 0..4 {
            p.start_group(g);
            p.video(g, frame(g, true, 1)).expect("fits");
        }
        p.end_group(3, true);
        assert_eq!(stats.groups_dropped.load(Ordering::Relaxed), 4);
    }
}
