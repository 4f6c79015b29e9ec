//! Sending media: one QUIC stream per GOP, newest first.
//!
//! * Each video group (keyframe + following frames) gets its own
//!   unidirectional stream with a priority above every older group's, so a
//!   congested link spends its bandwidth on the newest pictures.
//! * When a newer keyframe arrives, the previous group is *superseded*: if it
//!   still has frames queued that were never handed to QUIC, its stream is
//!   reset (code [`codes::GROUP_SUPERSEDED`]) and those frames dropped; if it
//!   is fully handed over, it is finished normally. Old video is never queued
//!   behind new video, so latency stays bounded on a slow link.
//! * Audio, telemetry and events each have one long-lived stream with a
//!   priority above all video, so they never wait behind a keyframe.
//!
//! Nothing here blocks the caller: frames go into bounded per-stream queues
//! with `try_send`; a group whose queue is full or never drains is abandoned
//! (the caller should ask its encoder for a keyframe), a full aux queue drops
//! that frame.
//!
//! Every decision (which group, supersede or abandon, finish or reset, which
//! priority) is made by the sans-IO [`SendPolicy`]; this module is its
//! driver: it owns the QUIC streams, the queues and the counters.
//!
//! Channels: per stream one `mpsc` of capacity [`GROUP_QUEUE`] / [`AUX_QUEUE`]
//! from the caller to that stream's writer task.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{Connection, SendStream};
use kodama_proto::{Channel, Frame, StreamHeader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::codes;
use crate::error::MediaError;
use crate::policy::send::{end_superseded, AuxPlan, GroupEnd, SendConfig, SendPolicy, VideoPlan};

/// Frames a group's writer may hold before the group is abandoned
/// ([`SendConfig::group_queue`]).
pub const GROUP_QUEUE: usize = 256;

/// Frames an aux stream's writer may hold before frames are dropped
/// ([`SendConfig::aux_queue`]).
pub const AUX_QUEUE: usize = 64;

/// How many incomplete-group notes wait for [`MediaSender::take_incomplete`]
/// (the oldest go first; the sender's owner drains them every frame).
const INCOMPLETE_NOTES: usize = 64;

/// Keyframe capture times of video groups that left incomplete (superseded
/// or never opened with frames still unsent), for the sender's owner.
#[derive(Debug, Clone, Default)]
struct IncompleteGroups(Arc<Mutex<VecDeque<u64>>>);

impl IncompleteGroups {
    fn note(&self, capture_us: u64) {
        let mut notes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if notes.len() == INCOMPLETE_NOTES {
            notes.pop_front();
        }
        notes.push_back(capture_us);
    }

    fn take(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }
}

/// Counters, shared with the writer tasks.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Video groups started.
    pub groups_started: AtomicU64,
    /// Groups reset because a newer one superseded them with frames unsent.
    pub groups_superseded: AtomicU64,
    /// Groups abandoned because their queue overflowed.
    pub groups_abandoned: AtomicU64,
    /// Frames handed to QUIC.
    pub frames_sent: AtomicU64,
    /// Frames dropped (superseded, abandoned, aux overflow, or before the first keyframe).
    pub frames_dropped: AtomicU64,
    /// Bytes handed to QUIC (headers and payloads).
    pub bytes_sent: AtomicU64,
    /// Video payload bytes queued for the writers, not yet handed to QUIC
    /// (the rate controller's send-queue depth).
    pub video_bytes_queued: AtomicU64,
}

impl SendStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Video groups dropped so far: superseded with frames unsent, or abandoned.
    pub fn groups_dropped(&self) -> u64 {
        Self::get(&self.groups_superseded) + Self::get(&self.groups_abandoned)
    }

    fn unqueue(&self, frame: &Frame) {
        if frame.channel == Channel::Video {
            self.video_bytes_queued
                .fetch_sub(frame.payload.len() as u64, Ordering::Relaxed);
        }
    }
}

/// What happened to a frame handed to [`MediaSender::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for sending.
    Queued,
    /// Dropped: video before the first keyframe of a group, or an aux frame
    /// whose queue was full.
    Dropped,
    /// The current group's queue overflowed; the group was abandoned and
    /// video is dropped until the next keyframe. Ask the encoder for one.
    GroupAbandoned,
}

#[derive(Debug)]
struct GroupHandle {
    id: u64,
    tx: mpsc::Sender<Arc<Frame>>,
    superseded: CancellationToken,
}

impl GroupHandle {
    /// Frames queued but not yet taken by the writer.
    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Sends one peer's media over a connection.
#[derive(Debug)]
pub struct MediaSender {
    conn: Connection,
    policy: SendPolicy,
    current: Option<GroupHandle>,
    aux: HashMap<Channel, mpsc::Sender<Arc<Frame>>>,
    tasks: JoinSet<Result<(), MediaError>>,
    stats: Arc<SendStats>,
    cancel: CancellationToken,
    incomplete: IncompleteGroups,
}

impl MediaSender {
    /// A sender on `conn`; its writer tasks stop when `cancel` fires.
    pub fn new(conn: Connection, cancel: CancellationToken) -> Self {
        Self {
            conn,
            policy: SendPolicy::new(SendConfig {
                group_queue: GROUP_QUEUE,
                aux_queue: AUX_QUEUE,
                ..SendConfig::default()
            }),
            current: None,
            aux: HashMap::new(),
            tasks: JoinSet::new(),
            stats: Arc::new(SendStats::default()),
            cancel,
            incomplete: IncompleteGroups::default(),
        }
    }

    /// Keyframe capture times of video groups that ended with frames unsent
    /// (superseded by a newer group, or dropped before their stream opened)
    /// since the last call. A camera keeps those GOPs for backfill: the
    /// server acknowledges what it recorded of a live group, not whether it
    /// got all of it.
    pub fn take_incomplete(&self) -> Vec<u64> {
        self.incomplete.take()
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<SendStats> {
        self.stats.clone()
    }

    /// Queues a frame without waiting.
    pub fn send(&mut self, frame: Arc<Frame>) -> SendOutcome {
        self.reap();
        if frame.channel == Channel::Video {
            self.send_video(frame)
        } else {
            self.send_aux(frame)
        }
    }

    fn send_video(&mut self, frame: Arc<Frame>) -> SendOutcome {
        // A writer that died (stream stopped by the peer) ends its group.
        let dead = self
            .current
            .as_ref()
            .filter(|g| g.tx.is_closed())
            .map(|g| g.id);
        let plan = match dead.and_then(|id| self.policy.stream_closed(id)) {
            Some(plan) if !frame.is_keyframe() => plan,
            _ => {
                let queued = self.current.as_ref().map_or(0, GroupHandle::queued);
                self.policy
                    .video(Instant::now(), frame.is_keyframe(), queued)
            }
        };
        match plan {
            VideoPlan::StartGroup {
                group,
                priority,
                supersede,
            } => {
                // The superseded group's writer decides finish-or-reset
                // (`end_superseded`) when told.
                if let Some(old) = self.current.take() {
                    tracing::trace!(old = old.id, ?supersede, group, "group superseded");
                    old.superseded.cancel();
                }
                self.start_group(group, priority, frame.capture_us);
                self.queue_video(frame)
            }
            VideoPlan::Queue { .. } => self.queue_video(frame),
            VideoPlan::Drop => {
                SendStats::add(&self.stats.frames_dropped, 1);
                SendOutcome::Dropped
            }
            VideoPlan::Abandon { group, reason } => {
                tracing::warn!(group, ?reason, "abandoning the group");
                SendStats::add(&self.stats.groups_abandoned, 1);
                SendStats::add(&self.stats.frames_dropped, 1);
                if let Some(g) = self.current.take() {
                    g.superseded.cancel();
                }
                SendOutcome::GroupAbandoned
            }
        }
    }

    fn queue_video(&mut self, frame: Arc<Frame>) -> SendOutcome {
        let Some(group) = &self.current else {
            SendStats::add(&self.stats.frames_dropped, 1);
            return SendOutcome::Dropped;
        };
        let len = frame.payload.len() as u64;
        match group.tx.try_send(frame) {
            Ok(()) => {
                SendStats::add(&self.stats.video_bytes_queued, len);
                SendOutcome::Queued
            }
            // The policy abandons before the queue is full, and a closed
            // writer is noticed at the next frame; either way this frame is lost.
            Err(_) => {
                SendStats::add(&self.stats.frames_dropped, 1);
                SendOutcome::Dropped
            }
        }
    }

    fn start_group(&mut self, id: u64, priority: i32, first_capture_us: u64) {
        let (tx, rx) = mpsc::channel(self.policy.config().group_queue);
        let superseded = self.cancel.child_token();
        SendStats::add(&self.stats.groups_started, 1);
        self.tasks.spawn(write_group(
            self.conn.clone(),
            StreamHeader {
                channel: Channel::Video,
                group: id,
            },
            priority,
            rx,
            superseded.clone(),
            self.stats.clone(),
            (self.incomplete.clone(), first_capture_us),
        ));
        self.current = Some(GroupHandle { id, tx, superseded });
    }

    fn send_aux(&mut self, frame: Arc<Frame>) -> SendOutcome {
        let channel = frame.channel;
        let queued = self
            .aux
            .get(&channel)
            .map_or(0, |tx| tx.max_capacity() - tx.capacity());
        let AuxPlan::Queue { priority } = self.policy.aux(channel == Channel::Audio, queued) else {
            SendStats::add(&self.stats.frames_dropped, 1);
            return SendOutcome::Dropped;
        };
        let capacity = self.policy.config().aux_queue;
        let tx = self.aux.entry(channel).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(capacity);
            self.tasks.spawn(write_aux(
                self.conn.clone(),
                channel,
                priority,
                rx,
                self.cancel.clone(),
                self.stats.clone(),
            ));
            tx
        });
        match tx.try_send(frame) {
            Ok(()) => SendOutcome::Queued,
            Err(e) => {
                if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                    self.aux.remove(&channel);
                }
                SendStats::add(&self.stats.frames_dropped, 1);
                SendOutcome::Dropped
            }
        }
    }

    /// Collects finished writer tasks. Their errors mean the connection or a
    /// stream died; the session notices that through the connection itself,
    /// so here they are only logged.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            if let Ok(Err(e)) = done {
                tracing::debug!("media writer ended: {e}");
            }
        }
    }

    /// Finishes every stream and waits for the writers to hand everything to QUIC.
    pub async fn finish(mut self) {
        if let Some(g) = self.current.take() {
            drop(g.tx);
        }
        self.aux.clear();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub(crate) async fn open_stream(
    conn: &Connection,
    header: StreamHeader,
    priority: i32,
) -> Result<SendStream, MediaError> {
    let mut stream = conn.open_uni().await?;
    stream
        .set_priority(priority)
        .map_err(|_| MediaError::ClosedStream)?;
    stream.write_all(&header.to_array()).await?;
    Ok(stream)
}

fn frame_chunks(frame: &Frame) -> Result<[Bytes; 2], MediaError> {
    let mut header = BytesMut::with_capacity(kodama_proto::FRAME_HEADER_LEN);
    frame.encode_header(&mut header)?;
    Ok([header.freeze(), frame.payload.clone()])
}

pub(crate) async fn write_frame(
    stream: &mut SendStream,
    frame: &Frame,
    stats: &SendStats,
) -> Result<(), MediaError> {
    let mut chunks = frame_chunks(frame)?;
    let written = stream.write_all_chunks(&mut chunks).await;
    stats.unqueue(frame);
    written?;
    SendStats::add(&stats.frames_sent, 1);
    SendStats::add(&stats.bytes_sent, frame.encoded_len() as u64);
    Ok(())
}

/// Most frames a group's writer hands to QUIC in one write.
const WRITE_BATCH: usize = 16;

/// Frames taken from a group's queue and written together: one QUIC write
/// (one lock of the connection, one wake-up of its driver) for whatever
/// queued while the previous write was under way, and one header buffer for
/// all of them. The buffers are kept across batches.
#[derive(Default)]
struct Batch {
    frames: Vec<Arc<Frame>>,
    headers: BytesMut,
    chunks: Vec<Bytes>,
}

impl Batch {
    fn prepare(&mut self) -> Result<(), MediaError> {
        self.chunks.clear();
        self.headers
            .reserve(self.frames.len() * kodama_proto::FRAME_HEADER_LEN);
        for frame in &self.frames {
            frame.encode_header(&mut self.headers)?;
            self.chunks.push(self.headers.split().freeze());
            self.chunks.push(frame.payload.clone());
        }
        Ok(())
    }

    /// Writes the batch's frames; on success the batch is empty again.
    async fn write(
        &mut self,
        stream: &mut SendStream,
        stats: &SendStats,
    ) -> Result<(), MediaError> {
        self.prepare()?;
        let written = stream.write_all_chunks(&mut self.chunks).await;
        for frame in &self.frames {
            stats.unqueue(frame);
        }
        written?;
        SendStats::add(&stats.frames_sent, self.frames.len() as u64);
        let bytes: usize = self.frames.iter().map(|f| f.encoded_len()).sum();
        SendStats::add(&stats.bytes_sent, bytes as u64);
        self.frames.clear();
        Ok(())
    }

    /// Drops the batch's frames after a reset mid-write; returns how many.
    fn abandon(&mut self, stats: &SendStats) -> u64 {
        for frame in &self.frames {
            stats.unqueue(frame);
        }
        let n = self.frames.len() as u64;
        self.frames.clear();
        self.chunks.clear();
        n
    }
}

async fn write_group(
    conn: Connection,
    header: StreamHeader,
    priority: i32,
    mut rx: mpsc::Receiver<Arc<Frame>>,
    superseded: CancellationToken,
    stats: Arc<SendStats>,
    (incomplete, first_capture_us): (IncompleteGroups, u64),
) -> Result<(), MediaError> {
    let drop_queued = |rx: &mut mpsc::Receiver<Arc<Frame>>, extra: u64| {
        incomplete.note(first_capture_us);
        rx.close();
        let mut n = extra;
        while let Ok(f) = rx.try_recv() {
            stats.unqueue(&f);
            n += 1;
        }
        SendStats::add(&stats.frames_dropped, n);
        SendStats::add(&stats.groups_superseded, 1);
    };
    // One wait for the whole group: re-creating it around every frame
    // registered with and unregistered from the token's tree twice per frame.
    let superseded = superseded.cancelled_owned();
    tokio::pin!(superseded);
    let mut stream = tokio::select! {
        s = open_stream(&conn, header, priority) => s?,
        _ = &mut superseded => {
            // Never got a stream: everything queued is unsent.
            drop_queued(&mut rx, 0);
            return Ok(());
        }
    };
    let mut batch = Batch::default();
    loop {
        // Whatever queued while the previous batch was written, up to
        // WRITE_BATCH frames; queued frames go before a supersede is heard.
        let received = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch.frames, WRITE_BATCH) => n,
            _ = &mut superseded => {
                match end_superseded(rx.len(), false) {
                    GroupEnd::Finish => {
                        let _ = stream.finish();
                    }
                    GroupEnd::Reset => {
                        let _ = stream.reset(codes::GROUP_SUPERSEDED);
                        drop_queued(&mut rx, 0);
                    }
                }
                return Ok(());
            }
        };
        if received == 0 {
            // The sender finished the group and everything is written.
            let _ = stream.finish();
            return Ok(());
        }
        tokio::select! {
            r = batch.write(&mut stream, &stats) => r?,
            _ = &mut superseded => {
                // Mid-write on a stalled link: the rest of this group is stale.
                debug_assert_eq!(end_superseded(rx.len(), true), GroupEnd::Reset);
                let _ = stream.reset(codes::GROUP_SUPERSEDED);
                let unsent = batch.abandon(&stats);
                drop_queued(&mut rx, unsent);
                return Ok(());
            }
        }
    }
}

async fn write_aux(
    conn: Connection,
    channel: Channel,
    priority: i32,
    mut rx: mpsc::Receiver<Arc<Frame>>,
    cancel: CancellationToken,
    stats: Arc<SendStats>,
) -> Result<(), MediaError> {
    let header = StreamHeader { channel, group: 0 };
    let mut stream = tokio::select! {
        s = open_stream(&conn, header, priority) => s?,
        _ = cancel.cancelled() => return Ok(()),
    };
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = cancel.cancelled() => None,
        };
        let Some(frame) = frame else {
            let _ = stream.finish();
            return Ok(());
        };
        tokio::select! {
            r = write_frame(&mut stream, &frame, &stats) => r?,
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}
