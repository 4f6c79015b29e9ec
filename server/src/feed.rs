//! What the live hub hands to consumers that must see every group, such as
//! the recorder: whole GOPs, telemetry and events, camera arrivals and departures.
//!
//! Channels: the hub `try_send`s into a bounded `mpsc` per consumer. When a
//! consumer's queue is full the hub drops the event (a whole GOP at a time,
//! never part of one), counts it in [`FeedStats`], and logs it: a slow disk
//! never blocks live routing. Acknowledgements travel back to a camera's
//! session through [`StoredAcks`] (one bounded `mpsc` per connected camera).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kodama_net::EndpointId;
use kodama_proto::{CameraInfo, Frame, Stored};

/// One complete group of pictures: a keyframe and the frames that follow it
/// up to (not including) the next keyframe.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group number from the camera (increasing per camera connection).
    pub id: u64,
    /// The frames, keyframe first, in sequence order.
    pub frames: Vec<Arc<Frame>>,
    /// Whether the group ended early (the camera disconnected or abandoned
    /// it); its frames are still valid and in order.
    pub truncated: bool,
}

impl Group {
    /// Total payload bytes.
    pub fn payload_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.payload.len()).sum()
    }
}

/// An event on a consumer's feed.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A camera completed its handshake (also sent again on reconnect, with
    /// possibly new parameters).
    CameraOnline {
        /// The camera's endpoint id.
        camera: EndpointId,
        /// Its stream parameters.
        info: CameraInfo,
    },
    /// A complete GOP.
    Group {
        /// The camera.
        camera: EndpointId,
        /// The group.
        group: Arc<Group>,
    },
    /// A telemetry or event frame (JSON payload).
    Aux {
        /// The camera.
        camera: EndpointId,
        /// The frame.
        frame: Arc<Frame>,
    },
    /// A GOP the camera kept while it could not reach the server, uploaded
    /// later (store-and-forward). Its frames are on [`kodama_proto::Channel::Backfill`]
    /// with their original capture times, followed by the audio packets
    /// captured during it ([`kodama_proto::Channel::Audio`], if the camera
    /// has a microphone); `group.id` is the camera's backlog record id,
    /// which the recorder acknowledges once the GOP is durable.
    Backfill {
        /// The camera.
        camera: EndpointId,
        /// The GOP.
        group: Arc<Group>,
    },
    /// Telemetry and event rows a relaying server recorded and sends again
    /// after an outage (frames on [`kodama_proto::Channel::Telemetry`] or
    /// [`kodama_proto::Channel::Event`], capture times the camera's). The
    /// recorder stores each row once (by camera, capture time and document)
    /// and acknowledges `Stored::Aux { id }` when they are durable.
    AuxBatch {
        /// The camera.
        camera: EndpointId,
        /// The relay's batch id.
        id: u64,
        /// The rows, oldest first.
        frames: Arc<Vec<Frame>>,
    },
    /// The camera's connection ended.
    CameraOffline {
        /// The camera.
        camera: EndpointId,
    },
}

/// Drop counters for one feed consumer.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// GOPs dropped because the consumer's queue was full.
    pub groups_dropped: AtomicU64,
    /// Other events dropped because the consumer's queue was full.
    pub events_dropped: AtomicU64,
}

impl FeedStats {
    /// Counts a dropped event.
    pub fn count_drop(&self, event: &FeedEvent) {
        let counter = match event {
            FeedEvent::Group { .. } => &self.groups_dropped,
            _ => &self.events_dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The sending half the hub keeps for one consumer.
#[derive(Debug, Clone)]
pub struct FeedSender {
    /// The consumer's bounded queue.
    pub tx: tokio::sync::mpsc::Sender<FeedEvent>,
    /// Its drop counters, shared with the consumer for reporting.
    pub stats: Arc<FeedStats>,
    /// Name for logs ("recorder").
    pub name: &'static str,
}

impl FeedSender {
    /// Offers an event without waiting; a full queue drops it, counted and logged.
    pub fn offer(&self, event: FeedEvent) {
        use tokio::sync::mpsc::error::TrySendError;
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                self.stats.count_drop(&event);
                let what = match &event {
                    FeedEvent::Group { camera, group } => {
                        format!("GOP {} of camera {camera}", group.id)
                    }
                    other => format!("{other:?}").chars().take(80).collect(),
                };
                tracing::warn!(consumer = self.name, "consumer is behind; dropped {what}");
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// Acknowledgements queued per camera session before newer ones are dropped
/// (a lost live watermark is superseded by the next; a lost backfill ack
/// makes the camera send that GOP again, which is recognised and skipped).
pub const ACK_QUEUE: usize = 64;

/// Routes `Message::Stored` acknowledgements from the recorder to the
/// session of the camera they concern. A reconnecting camera's new session
/// replaces the old one's route; the old one's drop leaves the new in place.
#[derive(Debug, Clone, Default)]
pub struct StoredAcks(Arc<Mutex<HashMap<EndpointId, AckSender>>>);

/// A session's generation and its acknowledgement queue.
type AckSender = (u64, tokio::sync::mpsc::Sender<Stored>);

/// A session's route; removing it on drop unless a newer session took over.
#[derive(Debug)]
pub struct AckRoute {
    acks: StoredAcks,
    camera: EndpointId,
    generation: u64,
}

impl StoredAcks {
    /// Registers the current session of `camera`.
    pub fn register(&self, camera: EndpointId) -> (AckRoute, tokio::sync::mpsc::Receiver<Stored>) {
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::channel(ACK_QUEUE);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(camera, (generation, tx));
        (
            AckRoute {
                acks: self.clone(),
                camera,
                generation,
            },
            rx,
        )
    }

    /// Sends an acknowledgement to `camera`'s session, if it is connected.
    pub fn send(&self, camera: EndpointId, stored: Stored) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tx)) = map.get(&camera) {
            let _ = tx.try_send(stored);
        }
    }
}

impl Drop for AckRoute {
    fn drop(&mut self) {
        let mut map = self.acks.0.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.camera)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            map.remove(&self.camera);
        }
    }
}

/// Creates a feed with room for `capacity` events.
pub fn channel(
    name: &'static str,
    capacity: usize,
) -> (FeedSender, tokio::sync::mpsc::Receiver<FeedEvent>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (
        FeedSender {
            tx,
            stats: Arc::new(FeedStats::default()),
            name,
        },
        rx,
    )
}
