//! One camera connection: handshake, then its media into the hub, and
//! admins' commands out to the camera.
//!
//! The camera's name is the server's record (the allowlist), never the name
//! in its hello: a camera claiming another's name in its hello gains nothing.
//!
//! Backfill streams (GOPs the camera kept while offline) are collected whole
//! here ([`Backfills`], bounded) and handed to the recorder; the recorder's
//! `Stored` acknowledgements come back on this session's route
//! ([`crate::feed::StoredAcks`]) and go to the camera on the control stream.
//!
//! Channels: a bounded `mpsc` (capacity [`MEDIA_QUEUE`]) from the media
//! receiver task to this session; a bounded `mpsc` of acknowledgements
//! ([`crate::feed::ACK_QUEUE`]) from the recorder. Any protocol violation (malformed or
//! oversized frame, a GOP without a keyframe, a GOP over the hub's limits)
//! disconnects this camera with a logged reason; other cameras and viewers
//! are unaffected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kodama_net::media_recv::{receive_media, Received};
use kodama_net::{codes, Connection};
use kodama_proto::handshake::Hello;
use kodama_proto::{Channel, CommandResult, Frame, Message, Role, StreamHeader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, PeerRole};
use crate::feed::Group;
use crate::hello;
use crate::hub::{Hub, MAX_GROUP_BYTES, MAX_GROUP_FRAMES};
use crate::sessions::{CommandOutcome, Sessions};

/// Pause before offering a bundle again after a delivery stopped short.
const REOFFER_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What camera and viewer sessions share besides the hub.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// The server's record of who may connect and their names.
    pub allowlist: Arc<Allowlist>,
    /// Live sessions (revocation, commands).
    pub sessions: Arc<Sessions>,
}

/// Items buffered between the media reader and the hub.
pub const MEDIA_QUEUE: usize = 128;

/// Backfill streams a camera may have open at once (its uploader keeps
/// three in flight).
pub const MAX_BACKFILL_STREAMS: usize = 8;

/// Audio packets one backfilled GOP may carry (2 minutes of 20 ms packets:
/// the span of the longest GOP the hub accepts).
pub const MAX_BACKFILL_AUDIO: usize = 6000;

/// One backfill stream being collected.
#[derive(Debug, Default)]
struct Collecting {
    /// Video frames, then the GOP's audio packets.
    frames: Vec<Arc<Frame>>,
    video: usize,
    audio: usize,
    bytes: usize,
}

/// Backfilled GOPs being received, by backlog record id.
#[derive(Debug, Default)]
pub struct Backfills {
    open: HashMap<u64, Collecting>,
    /// Streams allowed at once (0: [`MAX_BACKFILL_STREAMS`]).
    limit: usize,
}

impl Backfills {
    /// Backfills allowing `limit` streams at once (a relay forwarding an
    /// outage keeps more in flight than a camera's uploader).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            open: HashMap::new(),
            limit,
        }
    }

    /// A backfill stream began.
    pub fn start(&mut self, h: StreamHeader) -> Result<(), String> {
        let limit = if self.limit == 0 {
            MAX_BACKFILL_STREAMS
        } else {
            self.limit
        };
        if self.open.len() >= limit {
            return Err(format!("more than {limit} backfill streams at once"));
        }
        self.open.insert(h.group, Collecting::default());
        Ok(())
    }

    /// A frame of backfill stream `h`: video, or (after it, validated by
    /// the stream's receiver) an audio packet of the GOP's span.
    pub fn frame(&mut self, h: StreamHeader, f: Frame) -> Result<(), String> {
        let Some(c) = self.open.get_mut(&h.group) else {
            return Ok(());
        };
        c.bytes += f.payload.len();
        if f.channel == Channel::Audio {
            c.audio += 1;
        } else {
            c.video += 1;
        }
        if c.video > MAX_GROUP_FRAMES || c.audio > MAX_BACKFILL_AUDIO || c.bytes > MAX_GROUP_BYTES {
            return Err(format!(
                "backfilled GOP {} exceeds {MAX_GROUP_FRAMES} frames, {MAX_BACKFILL_AUDIO} audio packets or {MAX_GROUP_BYTES} bytes",
                h.group
            ));
        }
        c.frames.push(Arc::new(f));
        Ok(())
    }

    /// Stream `h` ended: the whole GOP (video, then its audio) if it
    /// finished normally (a reset or lost one is sent again by the camera).
    pub fn end(&mut self, h: StreamHeader, complete: bool) -> Option<Group> {
        let c = self.open.remove(&h.group)?;
        (complete && c.video > 0).then_some(Group {
            id: h.group,
            frames: c.frames,
            truncated: false,
        })
    }
}

/// How often a camera's telemetry is summarised in the log.
const TELEMETRY_LOG_EVERY: Duration = Duration::from_secs(30);

/// Runs a camera connection to its end.
pub async fn run(
    conn: Connection,
    hub: Arc<Hub>,
    ctx: SessionContext,
    server_name: String,
    cancel: CancellationToken,
) {
    let camera = conn.remote_id();
    let Some(hello::Accepted {
        mut control,
        hello: Hello::Camera(mut info),
        welcome,
    }) = hello::accept(&conn, Role::Camera, server_name).await
    else {
        return;
    };
    let guard = ctx.sessions.register(&conn, Role::Camera);
    // The name is the server's record; the hello's is only logged.
    let Some(recorded) = ctx.allowlist.name_of(&camera, PeerRole::Camera) else {
        // Removed between the TLS hook and now.
        conn.close(codes::NOT_ALLOWED, b"removed from this server");
        return;
    };
    if info.name != recorded {
        tracing::info!(%camera, claimed = %info.name, name = %recorded, "camera calls itself by another name; using the server's record");
    }
    info.name = recorded;
    let mut commands = guard.accept_commands();
    let mut pending: HashMap<u32, oneshot::Sender<CommandOutcome>> = HashMap::new();
    let mut next_command = 0u32;
    if let Err(e) = control.send(&welcome).await {
        tracing::warn!(%camera, "cannot welcome camera: {e}");
        return;
    }
    tracing::info!(
        %camera,
        name = %info.name,
        resolution = %format!("{}x{}", info.width, info.height),
        fps = info.fps_milli / 1000,
        kbps = info.bitrate_kbps,
        "camera online"
    );
    let name = info.name.clone();
    // Registered before the publisher, so the recorder's first
    // acknowledgement for this session finds it.
    let (_ack_route, mut acks) = hub.acks().register(camera);
    let mut backfills = Backfills::default();
    let mut publisher = hub.publish(camera, info);
    let replaced = publisher.replaced();
    let session = cancel.child_token();
    let (tx, mut rx) = mpsc::channel(MEDIA_QUEUE);
    let receiver = tokio::spawn(receive_media(conn.clone(), tx, session.clone()));
    let (mut ctl_rx, mut ctl_tx) = control.split();
    // Firmware updates: offer the camera its bundle while it needs it, and
    // stream it from wherever the camera's copy ends.
    let updates = ctx.sessions.updates().clone();
    let mut update_jobs = updates.subscribe();
    update_jobs.mark_changed();
    // The job generation last offered in this session.
    let mut offered: Option<u64> = None;
    let mut delivery: Option<(tokio::task::JoinHandle<()>, CancellationToken)> = None;
    let mut last_telemetry_log = Instant::now() - TELEMETRY_LOG_EVERY;
    let mut frames = 0u64;
    let reason: Option<String> = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                conn.close(codes::SHUTDOWN, b"server shutting down");
                break None;
            }
            _ = replaced.cancelled() => {
                // The camera connected again (restart, failover): this
                // connection is stale; the newer session owns the camera.
                tracing::info!(%camera, %name, generation = publisher.generation(), "camera reconnected; closing its older connection");
                conn.close(codes::REPLACED, b"replaced by a newer connection from this camera");
                break None;
            }
            item = rx.recv() => match item {
                Some(Received::Started(h)) if h.channel == Channel::Video => {
                    publisher.start_group(h.group);
                }
                Some(Received::Started(h)) if h.channel == Channel::Backfill => {
                    if let Err(why) = backfills.start(h) {
                        conn.close(codes::OVER_LIMIT, why.as_bytes());
                        break Some(why);
                    }
                }
                Some(Received::Started(_)) => {}
                Some(Received::Frame(h, f)) if h.channel == Channel::Backfill => {
                    if let Err(why) = backfills.frame(h, f) {
                        conn.close(codes::OVER_LIMIT, why.as_bytes());
                        break Some(why);
                    }
                }
                Some(Received::Frame(h, f)) if h.channel == Channel::Video => {
                    frames += 1;
                    if let Err(limit) = publisher.video(h.group, f) {
                        conn.close(codes::OVER_LIMIT, limit.to_string().as_bytes());
                        break Some(format!("over limit: {limit}"));
                    }
                }
                Some(Received::Frame(_, f)) => {
                    if f.channel == Channel::Telemetry && last_telemetry_log.elapsed() >= TELEMETRY_LOG_EVERY {
                        last_telemetry_log = Instant::now();
                        tracing::info!(%camera, %name, telemetry = %String::from_utf8_lossy(&f.payload), "telemetry");
                    } else {
                        tracing::debug!(%camera, channel = f.channel.name(), payload = %String::from_utf8_lossy(&f.payload));
                    }
                    publisher.aux(f);
                }
                Some(Received::Ended { header, complete }) => {
                    if header.channel == Channel::Video {
                        publisher.end_group(header.group, complete);
                    } else if header.channel == Channel::Backfill {
                        if let Some(group) = backfills.end(header, complete) {
                            let id = group.id;
                            if !hub.backfill(camera, Arc::new(group)) {
                                tracing::warn!(%camera, id, "recorder busy; the camera will send this backfilled GOP again");
                            }
                        }
                    }
                }
                None => break None,
            },
            Some(stored) = acks.recv() => {
                if let Err(e) = ctl_tx.send(&Message::Stored(stored)).await {
                    tracing::debug!(%camera, "cannot acknowledge recorded video: {e}");
                }
            }
            Ok(()) = update_jobs.changed() => {
                let generation = *update_jobs.borrow_and_update();
                if let Some(bundle) = updates.offer_for(&camera) {
                    if offered != Some(generation) {
                        offered = Some(generation);
                        tracing::info!(%camera, %name, size = bundle.size, "offering a firmware update");
                        let offer = Message::UpdateOffer { hash: bundle.hash, size: bundle.size };
                        if let Err(e) = ctl_tx.send(&offer).await {
                            tracing::debug!(%camera, "cannot offer the update: {e}");
                            break None;
                        }
                    }
                }
            }
            Some(request) = commands.recv() => {
                next_command = next_command.wrapping_add(1);
                let id = next_command;
                tracing::info!(%camera, %name, id, command = ?request.command, "sending an admin's command");
                if let Err(e) = ctl_tx.send(&Message::Command { id, command: request.command }).await {
                    let _ = request.reply.send(CommandOutcome {
                        result: CommandResult::Failed,
                        detail: format!("could not send to the camera: {e}"),
                    });
                    break None;
                }
                pending.retain(|_, reply| !reply.is_closed());
                pending.insert(id, request.reply);
            }
            msg = ctl_rx.recv() => match msg {
                Ok(Message::CommandAck { id, result, detail }) => {
                    tracing::info!(%camera, %name, id, ?result, %detail, "camera answered a command");
                    if let Some(reply) = pending.remove(&id) {
                        let _ = reply.send(CommandOutcome { result, detail });
                    }
                }
                Ok(Message::UpdateReport { hash, phase, progress, detail }) => {
                    let wanted = updates.report(&camera, hash, phase, progress, &detail);
                    let sending = delivery.as_ref().is_some_and(|(task, _)| !task.is_finished());
                    if let (Some(d), false) = (wanted, sending) {
                        tracing::info!(%camera, %name, from = d.from, size = d.bundle.size, "sending the firmware bundle");
                        let token = session.child_token();
                        let conn = conn.clone();
                        let stop = token.clone();
                        let jobs = updates.clone();
                        let task = tokio::spawn(async move {
                            let header = kodama_proto::BundleHeader { hash: d.bundle.hash, offset: d.from };
                            match kodama_net::update::send_bundle(&conn, &d.bundle.path, header, d.bundle.size, &d.sent, &stop).await {
                                Ok(()) => tracing::info!(%camera, "firmware bundle delivered"),
                                Err(e) => {
                                    tracing::info!(%camera, "firmware bundle delivery stopped: {e}");
                                    // The camera refused this stream (it holds a different
                                    // length than its last report said, e.g. after a
                                    // reconnect raced the old stream's tail): offer again,
                                    // at most once a second, so it says what it holds and
                                    // the next stream starts there.
                                    tokio::select! {
                                        _ = stop.cancelled() => {}
                                        _ = tokio::time::sleep(REOFFER_AFTER) => jobs.reoffer(),
                                    }
                                }
                            }
                        });
                        delivery = Some((task, token));
                    }
                }
                Ok(other) => tracing::debug!(%camera, "ignoring control message {other:?}"),
                Err(_) => {
                    // The control stream ending means the camera is leaving;
                    // media already received is still delivered below.
                    break None;
                }
            },
        }
    };
    session.cancel();
    if let Some((task, token)) = delivery {
        token.cancel();
        let _ = task.await;
    }
    let violation = match receiver.await {
        Ok(Err(e)) => Some(format!("invalid media: {e}")),
        _ => None,
    };
    if let Some(why) = violation.or(reason) {
        tracing::error!(%camera, %name, "disconnecting camera: {why}");
        conn.close(codes::PROTOCOL_VIOLATION, why.as_bytes());
    } else {
        tracing::info!(%camera, %name, frames, "camera offline");
    }
    drop(publisher);
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::FrameFlags;

    fn frame(channel: Channel, sequence: u64, key: bool) -> Frame {
        Frame {
            channel,
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::empty()
            },
            capture_us: sequence * 1000,
            sequence,
            payload: Bytes::from_static(&[1, 2, 3]),
        }
    }

    #[test]
    fn a_backfilled_gop_is_collected_with_its_audio_and_bounded() {
        let h = StreamHeader {
            channel: Channel::Backfill,
            group: 4,
        };
        let mut b = Backfills::default();
        b.start(h).expect("starts");
        b.frame(h, frame(Channel::Backfill, 10, true))
            .expect("video");
        b.frame(h, frame(Channel::Backfill, 11, false))
            .expect("video");
        for s in 0..MAX_BACKFILL_AUDIO as u64 {
            b.frame(h, frame(Channel::Audio, s, false)).expect("audio");
        }
        let g = b.end(h, true).expect("whole GOP");
        assert_eq!(g.frames.len(), 2 + MAX_BACKFILL_AUDIO);
        assert_eq!(g.frames[0].channel, Channel::Backfill);
        assert_eq!(g.frames[2].channel, Channel::Audio);

        // One audio packet more than a GOP may carry is refused.
        b.start(h).expect("starts");
        b.frame(h, frame(Channel::Backfill, 10, true))
            .expect("video");
        for s in 0..MAX_BACKFILL_AUDIO as u64 {
            b.frame(h, frame(Channel::Audio, s, false)).expect("audio");
        }
        assert!(b.frame(h, frame(Channel::Audio, 99_999, false)).is_err());
        // Audio alone is no GOP.
        let lone = StreamHeader { group: 5, ..h };
        b.start(lone).expect("starts");
        b.frame(lone, frame(Channel::Audio, 1, false))
            .expect("held");
        assert!(b.end(lone, true).is_none());
    }
}
