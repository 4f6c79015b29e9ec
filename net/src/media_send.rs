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
//! with `try_send`; a full group queue abandons the group (the caller should
//! ask its encoder for a keyframe), a full aux queue drops that frame.
//!
//! Channels: per stream one `mpsc` of capacity [`GROUP_QUEUE`] / [`AUX_QUEUE`]
//! from the caller to that stream's writer task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{Connection, SendStream};
use kodama_proto::{Channel, Frame, StreamHeader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::codes;
use crate::error::MediaError;

/// Frames a group's writer may hold before the group is abandoned.
/// 256 frames is over 8 s at 30 fps: only a stalled link fills it.
pub const GROUP_QUEUE: usize = 256;

/// Frames an aux stream's writer may hold before frames are dropped.
pub const AUX_QUEUE: usize = 64;

const PRIORITY_AUDIO: i32 = i32::MAX - 1;
const PRIORITY_AUX: i32 = i32::MAX - 2;

/// A group's priority: newer groups higher, below audio and telemetry.
/// Masking to 30 bits wraps after ~10^9 groups (decades of GOPs).
fn group_priority(group: u64) -> i32 {
    (group & 0x3FFF_FFFF) as i32
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
}

impl SendStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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

/// Sends one peer's media over a connection.
#[derive(Debug)]
pub struct MediaSender {
    conn: Connection,
    current: Option<GroupHandle>,
    next_group: u64,
    aux: HashMap<Channel, mpsc::Sender<Arc<Frame>>>,
    tasks: JoinSet<Result<(), MediaError>>,
    stats: Arc<SendStats>,
    cancel: CancellationToken,
}

impl MediaSender {
    /// A sender on `conn`; its writer tasks stop when `cancel` fires.
    pub fn new(conn: Connection, cancel: CancellationToken) -> Self {
        Self {
            conn,
            current: None,
            next_group: 0,
            aux: HashMap::new(),
            tasks: JoinSet::new(),
            stats: Arc::new(SendStats::default()),
            cancel,
        }
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
        if frame.is_keyframe() {
            self.start_group();
        }
        let Some(group) = &self.current else {
            SendStats::add(&self.stats.frames_dropped, 1);
            return SendOutcome::Dropped;
        };
        match group.tx.try_send(frame) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    group = group.id,
                    "group queue overflowed; abandoning the group"
                );
                SendStats::add(&self.stats.groups_abandoned, 1);
                SendStats::add(&self.stats.frames_dropped, 1);
                if let Some(g) = self.current.take() {
                    g.superseded.cancel();
                }
                SendOutcome::GroupAbandoned
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The writer failed (stream stopped by the peer); wait for a new group.
                self.current = None;
                SendStats::add(&self.stats.frames_dropped, 1);
                SendOutcome::GroupAbandoned
            }
        }
    }

    fn start_group(&mut self) {
        if let Some(old) = self.current.take() {
            old.superseded.cancel();
        }
        let id = self.next_group;
        self.next_group += 1;
        let (tx, rx) = mpsc::channel(GROUP_QUEUE);
        let superseded = self.cancel.child_token();
        SendStats::add(&self.stats.groups_started, 1);
        self.tasks.spawn(write_group(
            self.conn.clone(),
            StreamHeader {
                channel: Channel::Video,
                group: id,
            },
            rx,
            superseded.clone(),
            self.stats.clone(),
        ));
        self.current = Some(GroupHandle { id, tx, superseded });
    }

    fn send_aux(&mut self, frame: Arc<Frame>) -> SendOutcome {
        let channel = frame.channel;
        let tx = self.aux.entry(channel).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(AUX_QUEUE);
            self.tasks.spawn(write_aux(
                self.conn.clone(),
                channel,
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
    stream.write_all_chunks(&mut chunks).await?;
    SendStats::add(&stats.frames_sent, 1);
    SendStats::add(&stats.bytes_sent, frame.encoded_len() as u64);
    Ok(())
}

async fn write_group(
    conn: Connection,
    header: StreamHeader,
    mut rx: mpsc::Receiver<Arc<Frame>>,
    superseded: CancellationToken,
    stats: Arc<SendStats>,
) -> Result<(), MediaError> {
    let drop_queued = |rx: &mut mpsc::Receiver<Arc<Frame>>, extra: u64| {
        let n = rx.len() as u64 + extra;
        rx.close();
        SendStats::add(&stats.frames_dropped, n);
        SendStats::add(&stats.groups_superseded, 1);
    };
    let mut stream = tokio::select! {
        s = open_stream(&conn, header, group_priority(header.group)) => s?,
        _ = superseded.cancelled() => {
            // Never got a stream: everything queued is unsent.
            drop_queued(&mut rx, 0);
            return Ok(());
        }
    };
    loop {
        let frame = tokio::select! {
            biased;
            f = rx.recv() => f,
            _ = superseded.cancelled() => {
                if rx.is_empty() {
                    // Everything was handed to QUIC: let it arrive.
                    let _ = stream.finish();
                } else {
                    let _ = stream.reset(codes::GROUP_SUPERSEDED);
                    drop_queued(&mut rx, 0);
                }
                return Ok(());
            }
        };
        let Some(frame) = frame else {
            let _ = stream.finish();
            return Ok(());
        };
        tokio::select! {
            r = write_frame(&mut stream, &frame, &stats) => r?,
            _ = superseded.cancelled() => {
                // Mid-write on a stalled link: the rest of this group is stale.
                let _ = stream.reset(codes::GROUP_SUPERSEDED);
                drop_queued(&mut rx, 1);
                return Ok(());
            }
        }
    }
}

async fn write_aux(
    conn: Connection,
    channel: Channel,
    mut rx: mpsc::Receiver<Arc<Frame>>,
    cancel: CancellationToken,
    stats: Arc<SendStats>,
) -> Result<(), MediaError> {
    let priority = if channel == Channel::Audio {
        PRIORITY_AUDIO
    } else {
        PRIORITY_AUX
    };
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
