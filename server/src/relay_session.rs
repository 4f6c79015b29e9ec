//! One forwarded camera arriving from a relay (another Kodama server that
//! forwards its cameras here: an offsite copy, a site relay).
//!
//! The relay's key was allowed as a relay by the TLS hook; its hello names
//! the one camera this connection carries, which must be on that relay's
//! `carries` list in this server's allowlist, or the connection is refused
//! ([`kodama_proto::RejectCode::NotAllowed`]). The forwarded camera keeps
//! its identity: its own node id and the name the origin recorded. It is
//! online here while it is online at the origin (`StreamInfo` /
//! `CameraState` on the control stream), its media streams are the camera
//! protocol's (live GOPs, telemetry and events, backfill), and it is
//! recorded and watched like a local camera.
//!
//! Acknowledgements: the recorder's `Stored` for this camera go back to the
//! relay, except a live acknowledgement for a GOP whose stream was reset
//! (the relay superseded it, so only part of it arrived): the relay then
//! sends the whole GOP again as backfill.
//!
//! Telemetry and events arrive twice from a recording relay: live (group
//! 0, for viewers and the recorder) and in batches read from the relay's
//! index (a telemetry/event stream with a nonzero group id, [`AuxBatches`]),
//! which the recorder stores once each and acknowledges with
//! `Stored::Aux`, so what happened while the link was down arrives too.
//! Both are this session's camera: a relay can only add rows to a camera it
//! may carry.
//!
//! Channels: as the camera session (a bounded `mpsc` of media, the
//! recorder's acknowledgement route).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kodama_net::media_recv::{receive_media, Received};
use kodama_net::{codes, Connection, EndpointId};
use kodama_proto::handshake::Hello;
use kodama_proto::{Channel, Frame, Message, RejectCode, Role, Stored};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, PeerRole};
use crate::camera_session::{Backfills, SessionContext, MEDIA_QUEUE};
use crate::hello;
use crate::hub::{Hub, Publisher};
use crate::recorder::MAX_AUX_BYTES;
use crate::upstream::aux::{BATCH_BYTES, BATCH_ROWS};

/// How often a session checks that its relay may still carry the camera.
const CARRY_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Live GOPs whose outcome (complete or reset) is remembered for filtering
/// the recorder's acknowledgements.
const LIVE_OUTCOMES: usize = 64;

/// Batches of recorded telemetry/event rows a relay may have open at once.
const MAX_AUX_BATCHES: usize = 8;

/// Telemetry/event batch streams being received, by group id.
#[derive(Debug, Default)]
struct AuxBatches {
    open: HashMap<u64, (Vec<Frame>, usize)>,
}

impl AuxBatches {
    /// A batch stream began.
    fn start(&mut self, group: u64) -> Result<(), String> {
        if self.open.len() >= MAX_AUX_BATCHES {
            return Err(format!(
                "more than {MAX_AUX_BATCHES} telemetry/event batches at once"
            ));
        }
        self.open.insert(group, (Vec::new(), 0));
        Ok(())
    }

    /// A row of batch `group`.
    fn frame(&mut self, group: u64, f: Frame) -> Result<(), String> {
        let Some((frames, bytes)) = self.open.get_mut(&group) else {
            return Ok(());
        };
        *bytes += f.payload.len();
        if frames.len() >= BATCH_ROWS || *bytes > BATCH_BYTES + MAX_AUX_BYTES {
            return Err(format!(
                "telemetry/event batch {group} exceeds {BATCH_ROWS} rows or {} bytes",
                BATCH_BYTES + MAX_AUX_BYTES
            ));
        }
        frames.push(f);
        Ok(())
    }

    /// Batch `group` ended: its rows if the stream finished normally (a
    /// reset or lost one is sent again by the relay).
    fn end(&mut self, group: u64, complete: bool) -> Option<Vec<Frame>> {
        let (frames, _) = self.open.remove(&group)?;
        (complete && !frames.is_empty()).then_some(frames)
    }
}

/// Whether each recent live GOP (by keyframe capture time) arrived whole.
#[derive(Debug, Default)]
struct LiveOutcomes {
    by_stream: HashMap<u64, u64>,
    done: VecDeque<(u64, bool)>,
}

impl LiveOutcomes {
    fn keyframe(&mut self, stream: u64, capture_us: u64) {
        if self.by_stream.len() >= LIVE_OUTCOMES {
            self.by_stream.clear();
        }
        self.by_stream.insert(stream, capture_us);
    }

    fn ended(&mut self, stream: u64, complete: bool) {
        if let Some(capture_us) = self.by_stream.remove(&stream) {
            if self.done.len() >= LIVE_OUTCOMES {
                self.done.pop_front();
            }
            self.done.push_back((capture_us, complete));
        }
    }

    /// Whether a live acknowledgement for `capture_us` may go to the relay.
    fn whole(&self, capture_us: u64) -> bool {
        self.done
            .iter()
            .rev()
            .find(|(c, _)| *c == capture_us)
            .is_some_and(|(_, complete)| *complete)
    }
}

/// A forwarded camera by the name its origin recorded: the hub's track of
/// that name, if a relay may carry it here (a camera of this server's own
/// record is found through the allowlist instead).
pub fn forwarded_by_name(hub: &Hub, allowlist: &Allowlist, name: &str) -> Option<EndpointId> {
    let track = hub.find(&kodama_proto::CameraSelector::Name(name.to_owned()))?;
    (allowlist.is_carried(&track.id) && allowlist.name_of(&track.id, PeerRole::Camera).is_none())
        .then_some(track.id)
}

/// Runs a relay connection to its end.
pub async fn run(
    conn: Connection,
    hub: Arc<Hub>,
    ctx: SessionContext,
    server_name: String,
    cancel: CancellationToken,
) {
    let relay = conn.remote_id();
    let Some(hello::Accepted {
        mut control,
        hello: Hello::Relay { camera, mut info },
        welcome,
    }) = hello::accept(&conn, Role::Relay, server_name).await
    else {
        return;
    };
    let camera = match EndpointId::from_bytes(&camera) {
        Ok(c) => c,
        Err(_) => {
            let reason = "the relay's hello names no valid camera id".to_owned();
            let reject = Message::Reject {
                code: RejectCode::BadHello,
                reason: reason.clone(),
            };
            hello::refuse(&conn, &mut control, &reject, &reason).await;
            return;
        }
    };
    if !ctx.allowlist.may_carry(&relay, &camera) {
        let reason = format!(
            "relay {relay} may not forward camera {camera} here (on this server: kodama-server allow add {relay} --role relay --carry {camera})"
        );
        let reject = Message::Reject {
            code: RejectCode::NotAllowed,
            reason: reason.clone(),
        };
        hello::refuse(&conn, &mut control, &reject, &reason).await;
        return;
    }
    // A camera this server knows by its own record keeps that name; one
    // known only through the relay keeps the name the origin recorded.
    if let Some(own) = ctx.allowlist.name_of(&camera, PeerRole::Camera) {
        info.name = own;
    }
    let guard = ctx.sessions.register(&conn, Role::Relay);
    if let Err(e) = control.send(&welcome).await {
        tracing::warn!(%relay, %camera, "cannot welcome relay: {e}");
        return;
    }
    let name = info.name.clone();
    tracing::info!(%relay, %camera, %name, "relay forwards a camera");
    hub.know(camera, &name, std::time::SystemTime::now());
    let (_ack_route, mut acks) = hub.acks().register(camera);
    // QUIC's own stream limit bounds what a relay can have open.
    let mut backfills = Backfills::with_limit(kodama_net::endpoint::MAX_UNI_STREAMS as usize);
    let mut publisher: Option<Publisher> = None;
    let mut outcomes = LiveOutcomes::default();
    let mut batches = AuxBatches::default();
    let session = cancel.child_token();
    let (tx, mut rx) = mpsc::channel(MEDIA_QUEUE);
    let receiver = tokio::spawn(receive_media(conn.clone(), tx, session.clone()));
    let (mut ctl_rx, mut ctl_tx) = control.split();
    let never = CancellationToken::new();
    let mut recheck = tokio::time::interval(CARRY_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason: Option<String> = loop {
        let replaced = publisher
            .as_ref()
            .map_or_else(|| never.clone(), Publisher::replaced);
        tokio::select! {
            _ = cancel.cancelled() => {
                conn.close(codes::SHUTDOWN, b"server shutting down");
                break None;
            }
            _ = recheck.tick() => {
                // Taken off the relay's `carries` (the relay itself being
                // removed closes the connection through `sessions`).
                if !ctx.allowlist.may_carry(&relay, &camera) {
                    tracing::warn!(%relay, %camera, %name, "the relay may no longer forward this camera; closing");
                    conn.close(codes::NOT_ALLOWED, b"no longer allowed to forward this camera");
                    break None;
                }
            }
            _ = replaced.cancelled() => {
                // The camera connected here directly (or through another
                // relay): that session owns it now.
                tracing::info!(%relay, %camera, %name, "camera published by a newer session; closing the relay's");
                conn.close(codes::REPLACED, b"replaced by a newer connection for this camera");
                break None;
            }
            item = rx.recv() => match item {
                Some(Received::Started(h)) if h.channel == Channel::Video => {
                    if let Some(p) = &mut publisher {
                        p.start_group(h.group);
                    }
                }
                Some(Received::Started(h)) if h.channel == Channel::Backfill => {
                    if let Err(why) = backfills.start(h) {
                        conn.close(codes::OVER_LIMIT, why.as_bytes());
                        break Some(why);
                    }
                }
                Some(Received::Started(h)) if is_aux_batch(h) => {
                    if let Err(why) = batches.start(h.group) {
                        conn.close(codes::OVER_LIMIT, why.as_bytes());
                        break Some(why);
                    }
                }
                Some(Received::Started(_)) => {}
                Some(Received::Frame(h, f)) if is_aux_batch(h) => {
                    if let Err(why) = batches.frame(h.group, f) {
                        conn.close(codes::OVER_LIMIT, why.as_bytes());
                        break Some(why);
                    }
                }
                Some(Received::Frame(h, f)) if h.channel == Channel::Backfill => {
                    if let Err(why) = backfills.frame(h, f) {
                        conn.close(codes::OVER_LIMIT, why.as_bytes());
                        break Some(why);
                    }
                }
                Some(Received::Frame(h, f)) if h.channel == Channel::Video => {
                    if f.is_keyframe() {
                        outcomes.keyframe(h.group, f.capture_us);
                    }
                    if let Some(p) = &mut publisher {
                        if let Err(limit) = p.video(h.group, f) {
                            conn.close(codes::OVER_LIMIT, limit.to_string().as_bytes());
                            break Some(format!("over limit: {limit}"));
                        }
                    }
                }
                Some(Received::Frame(_, f)) => {
                    if let Some(p) = &mut publisher {
                        p.aux(Frame::clone(&f));
                    }
                }
                Some(Received::Ended { header, complete }) => {
                    if header.channel == Channel::Video {
                        outcomes.ended(header.group, complete);
                        if let Some(p) = &mut publisher {
                            p.end_group(header.group, complete);
                        }
                    } else if is_aux_batch(header) {
                        if let Some(rows) = batches.end(header.group, complete) {
                            if !hub.aux_batch(camera, header.group, Arc::new(rows)) {
                                tracing::debug!(%camera, id = header.group, "a consumer is busy; the relay will send this telemetry/event batch again");
                            }
                        }
                    } else if header.channel == Channel::Backfill {
                        if let Some(group) = backfills.end(header, complete) {
                            let id = group.id;
                            if !hub.backfill(camera, Arc::new(group)) {
                                tracing::debug!(%camera, id, "a consumer is busy; the relay will send this GOP again");
                            }
                        }
                    }
                }
                None => break None,
            },
            Some(stored) = acks.recv() => {
                let forward = match stored {
                    Stored::LiveThrough { capture_us } => outcomes.whole(capture_us),
                    Stored::Backfill { .. } | Stored::Aux { .. } => true,
                };
                if forward {
                    if let Err(e) = ctl_tx.send(&Message::Stored(stored)).await {
                        tracing::debug!(%relay, %camera, "cannot acknowledge to the relay: {e}");
                    }
                }
            }
            msg = ctl_rx.recv() => match msg {
                Ok(Message::StreamInfo { camera: id, info: mut now }) if id == *camera.as_bytes() => {
                    if let Err(e) = now.validate() {
                        break Some(format!("invalid stream info: {e}"));
                    }
                    now.name = name.clone();
                    // A new publisher per origin session: the hub's
                    // generations then order them as for a local camera.
                    drop(publisher.take());
                    publisher = Some(hub.publish(camera, now));
                }
                Ok(Message::CameraState { camera: id, online: false }) if id == *camera.as_bytes() => {
                    drop(publisher.take());
                }
                Ok(Message::CameraState { .. }) => {}
                Ok(other) => tracing::debug!(%relay, "ignoring control message {other:?}"),
                Err(_) => break None,
            },
        }
    };
    session.cancel();
    let violation = match receiver.await {
        Ok(Err(e)) => Some(format!("invalid media: {e}")),
        _ => None,
    };
    if let Some(why) = violation.or(reason) {
        tracing::error!(%relay, %camera, %name, "disconnecting relay: {why}");
        conn.close(codes::PROTOCOL_VIOLATION, why.as_bytes());
    } else {
        tracing::info!(%relay, %camera, %name, "relay stopped forwarding the camera");
    }
    drop(publisher);
    drop(guard);
}

/// Whether stream `h` is a relay's batch of recorded telemetry or events
/// (the live telemetry/event streams have group 0).
fn is_aux_batch(h: kodama_proto::StreamHeader) -> bool {
    matches!(h.channel, Channel::Telemetry | Channel::Event) && h.group != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aux_batches_are_bounded_and_only_whole_ones_count() {
        let row = |n: u64, len: usize| Frame {
            channel: Channel::Event,
            flags: Default::default(),
            capture_us: n,
            sequence: n,
            payload: bytes::Bytes::from(vec![b'1'; len]),
        };
        let mut b = AuxBatches::default();
        b.start(7).expect("start");
        b.frame(7, row(1, 10)).expect("row");
        b.frame(7, row(2, 10)).expect("row");
        assert_eq!(b.end(7, true).map(|r| r.len()), Some(2));
        b.start(8).expect("start");
        b.frame(8, row(1, 10)).expect("row");
        assert_eq!(b.end(8, false), None, "a reset batch is sent again");
        b.start(9).expect("start");
        let too_many = (0..=BATCH_ROWS as u64).try_for_each(|n| b.frame(9, row(n + 1, 1)));
        assert!(too_many.is_err(), "at most {BATCH_ROWS} rows");
        for g in 100..100 + MAX_AUX_BATCHES as u64 {
            let _ = b.start(g);
        }
        assert!(b.start(1000).is_err(), "at most {MAX_AUX_BATCHES} open");
    }

    #[test]
    fn only_whole_live_gops_are_acknowledged_to_the_relay() {
        let mut o = LiveOutcomes::default();
        o.keyframe(1, 100);
        o.keyframe(2, 200);
        assert!(!o.whole(100), "not ended yet");
        o.ended(1, false);
        o.ended(2, true);
        assert!(!o.whole(100), "reset: the relay sends it again as backfill");
        assert!(o.whole(200));
        assert!(!o.whole(300), "never seen");
        for g in 0..(LIVE_OUTCOMES as u64 * 2) {
            o.keyframe(10 + g, 1000 + g);
            o.ended(10 + g, true);
        }
        assert!(o.done.len() <= LIVE_OUTCOMES, "bounded");
    }
}
