//! One viewer connection: handshake, then the chosen camera's live video.
//!
//! The viewer always works on the newest group: it starts at the current
//! GOP's keyframe and, when it has fallen behind, jumps to the newest GOP as
//! soon as one begins (the old one's unsent frames are dropped and counted).
//! Sending never waits on the viewer: frames go into
//! [`kodama_net::media_send::MediaSender`]'s bounded per-group queues, so a
//! stalled viewer costs only its own queue and never slows the camera or
//! other viewers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kodama_net::control::ControlReader;
use kodama_net::error::ControlError;
use kodama_net::media_send::{MediaSender, SendStats};
use kodama_net::{codes, Connection};
use kodama_proto::handshake::Hello;
use kodama_proto::{CameraSelector, Frame, Message, RejectCode, Role};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};

use crate::allowlist::PeerRole;
use crate::camera_session::SessionContext;
use crate::hello;
use crate::hub::{CameraStatus, Hub, LiveGroup};

const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest a viewer may wait for a known camera that is offline; the viewer
/// usually gives up sooner (`kodama-server view --wait`).
pub const OFFLINE_WAIT: Duration = Duration::from_secs(600);

fn stream_info(status: &CameraStatus) -> Message {
    Message::StreamInfo {
        camera: *status.id.as_bytes(),
        info: status.info.clone(),
    }
}

/// Hands every frame of the current group that has arrived to the sender.
fn send_arrived(current: &mut Option<(Arc<LiveGroup>, usize)>, media: &mut MediaSender) {
    if let Some((group, next)) = current {
        while let Some(frame) = group.get(*next) {
            media.send(frame);
            *next += 1;
        }
    }
}

/// Waits for the next change of a watched value, handing the receiver back
/// (owned, so the wait can live across loop turns); `false` once the sender
/// is gone.
async fn next_change<T>(mut rx: watch::Receiver<T>) -> (watch::Receiver<T>, bool) {
    let ok = rx.changed().await.is_ok();
    (rx, ok)
}

/// Waits for the camera's next aux frame (audio, telemetry, events).
async fn next_aux(
    mut rx: broadcast::Receiver<Arc<Frame>>,
) -> (
    broadcast::Receiver<Arc<Frame>>,
    Result<Arc<Frame>, RecvError>,
) {
    let r = rx.recv().await;
    (rx, r)
}

/// Waits for the viewer's next control message.
async fn next_control(mut rx: ControlReader) -> (ControlReader, Result<Message, ControlError>) {
    let r = rx.recv().await;
    (rx, r)
}

/// Waits for the current group's next frame; never resolves without a
/// group or once the group can grow no more (its sender is gone), so only a
/// newer group moves on.
async fn next_frame(rx: Option<watch::Receiver<usize>>) -> watch::Receiver<usize> {
    if let Some(mut rx) = rx {
        if rx.changed().await.is_ok() {
            return rx;
        }
    }
    std::future::pending().await
}

/// Moves to the newest group when one has begun (counting the old group's
/// unsent frames as skipped) and returns the receiver of its frame count.
fn adopt_newest(
    groups: &mut watch::Receiver<Option<Arc<LiveGroup>>>,
    current: &mut Option<(Arc<LiveGroup>, usize)>,
    skipped: &mut u64,
) -> Option<watch::Receiver<usize>> {
    let newest = groups.borrow_and_update().clone()?;
    if current.as_ref().is_some_and(|(g, _)| newest.id <= g.id) {
        return None;
    }
    if let Some((old, next)) = current.take() {
        *skipped += old.len().saturating_sub(next) as u64;
    }
    // Subscribed before the loop sends what has arrived, so no frame slips
    // between the two.
    let frames = newest.subscribe().0;
    *current = Some((newest, 0));
    Some(frames)
}

/// Runs a viewer connection to its end.
pub async fn run(
    conn: Connection,
    hub: Arc<Hub>,
    ctx: SessionContext,
    server_name: String,
    cancel: CancellationToken,
) {
    let viewer = conn.remote_id();
    let Some(hello::Accepted {
        mut control,
        hello: Hello::Viewer(selector),
        welcome,
    }) = hello::accept(&conn, Role::Viewer, server_name).await
    else {
        return;
    };
    let _guard = ctx.sessions.register(&conn, Role::Viewer);
    // Names resolve through the server's record only: a camera's hello
    // cannot make it answer to another camera's name.
    let resolved = match &selector {
        CameraSelector::Name(name) => ctx
            .allowlist
            .resolve(PeerRole::Camera, name)
            .map(|p| p.id)
            .or_else(|| crate::relay_session::forwarded_by_name(&hub, &ctx.allowlist, name))
            .map(|id| CameraSelector::Id(*id.as_bytes())),
        CameraSelector::Id(id) => Some(CameraSelector::Id(*id)),
        CameraSelector::FirstOnline => Some(CameraSelector::FirstOnline),
    };
    let Some(track) = resolved.and_then(|s| hub.find(&s)) else {
        let mut known: Vec<String> = ctx
            .allowlist
            .named()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.role == PeerRole::Camera)
            .map(|p| p.name)
            .collect();
        known.sort();
        let reason = format!(
            "no camera matches {selector:?}; known cameras: [{}]",
            known.join(", ")
        );
        let reject = Message::Reject {
            code: RejectCode::UnknownCamera,
            reason: reason.clone(),
        };
        hello::refuse(&conn, &mut control, &reject, &reason).await;
        return;
    };
    let mut status = track.status();
    if control.send(&welcome).await.is_err() {
        return;
    }
    let first = status.borrow_and_update().clone();
    if !first.online {
        // A camera the server knows (index, allowlist) but that is not
        // connected right now, e.g. just after a server restart: say so and
        // wait for it while the viewer stays.
        let offline = Message::CameraState {
            camera: *first.id.as_bytes(),
            online: false,
        };
        if control.send(&offline).await.is_err() {
            return;
        }
        tracing::info!(%viewer, camera = %first.info.name, "viewer waits for an offline camera");
        tokio::select! {
            _ = cancel.cancelled() => {
                conn.close(codes::SHUTDOWN, b"server shutting down");
                return;
            }
            _ = conn.closed() => return,
            online = async {
                matches!(tokio::time::timeout(OFFLINE_WAIT, status.wait_for(|s| s.online)).await, Ok(Ok(_)))
            } => {
                if !online {
                    let reason = format!("camera {} stayed offline for {OFFLINE_WAIT:?}", first.info.name);
                    let reject = Message::Reject { code: RejectCode::UnknownCamera, reason: reason.clone() };
                    hello::refuse(&conn, &mut control, &reject, &reason).await;
                    return;
                }
            }
        }
    }
    let first = status.borrow_and_update().clone();
    if control.send(&stream_info(&first)).await.is_err() {
        return;
    }
    tracing::info!(%viewer, camera = %first.info.name, "viewer watching");
    let _watching = track.viewer_guard();

    let session = cancel.child_token();
    let mut media = MediaSender::new(conn.clone(), session.clone());
    let stats = media.stats();
    let mut groups = track.groups();
    let (ctl_rx, mut ctl_tx) = control.split();
    let mut current: Option<(Arc<LiveGroup>, usize)> = None;
    let mut skipped = 0u64;
    let mut aux_sequence = 0u64;
    let mut aux_missed = 0u64;
    let mut logged_drops = 0u64;
    let mut last_drop_log = Instant::now();

    // Every wait below lives across loop turns and is re-armed only when it
    // fires: re-creating them per frame registered and unregistered each
    // with its waiter list (the connection's lock among them) for every
    // frame of every viewer, the main cost above raw iroh at high fan-out.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let closed = conn.closed();
    tokio::pin!(closed);
    let first_frames = adopt_newest(&mut groups, &mut current, &mut skipped);
    let mut frames_wait = ReusableBoxFuture::new(next_frame(first_frames));
    let mut groups_wait = ReusableBoxFuture::new(next_change(groups));
    let mut status_wait = ReusableBoxFuture::new(next_change(status));
    let mut aux_wait = ReusableBoxFuture::new(next_aux(track.aux()));
    let mut control_wait = ReusableBoxFuture::new(next_control(ctl_rx));
    loop {
        // Hand over what has arrived of the current group: whether the
        // viewer keeps up is for the network to decide (MediaSender resets a
        // superseded group whose frames are still unsent), not for how
        // promptly this task was scheduled.
        send_arrived(&mut current, &mut media);
        let dropped = SendStats::get(&stats.frames_dropped) + skipped;
        if dropped > logged_drops && last_drop_log.elapsed() >= DROP_LOG_EVERY {
            tracing::warn!(%viewer, dropped, "viewer is behind; skipped to the newest GOP");
            logged_drops = dropped;
            last_drop_log = Instant::now();
        }
        tokio::select! {
            _ = &mut cancelled => {
                conn.close(codes::SHUTDOWN, b"server shutting down");
                break;
            }
            _ = &mut closed => break,
            (mut rx, ok) = &mut groups_wait => {
                if !ok { break }
                // Finish the old group before moving on, so nothing that
                // had arrived is counted as skipped.
                send_arrived(&mut current, &mut media);
                if let Some(frames) = adopt_newest(&mut rx, &mut current, &mut skipped) {
                    frames_wait.set(next_frame(Some(frames)));
                }
                groups_wait.set(next_change(rx));
            }
            frames = &mut frames_wait => frames_wait.set(next_frame(Some(frames))),
            (mut rx, ok) = &mut status_wait => {
                if !ok { break }
                let s = rx.borrow_and_update().clone();
                status_wait.set(next_change(rx));
                let msg = if s.online { stream_info(&s) } else {
                    Message::CameraState { camera: *s.id.as_bytes(), online: false }
                };
                if ctl_tx.send(&msg).await.is_err() { break }
            }
            (rx, a) = &mut aux_wait => {
                aux_wait.set(next_aux(rx));
                match a {
                    Ok(frame) => {
                        // Re-sequence: the camera's numbering restarts when it
                        // does, but this stream's must keep increasing.
                        aux_sequence += 1;
                        media.send(Arc::new(Frame { sequence: aux_sequence, ..(*frame).clone() }));
                    }
                    Err(RecvError::Lagged(n)) => aux_missed += n,
                    Err(RecvError::Closed) => break,
                }
            }
            (rx, m) = &mut control_wait => {
                if m.is_err() { break }
                control_wait.set(next_control(rx));
            }
        }
    }
    session.cancel();
    let dropped = SendStats::get(&stats.frames_dropped) + skipped;
    tracing::info!(
        %viewer,
        sent = SendStats::get(&stats.frames_sent),
        dropped,
        groups_superseded = SendStats::get(&stats.groups_superseded),
        aux_missed,
        "viewer left"
    );
}
