//! The floor each camera → server → viewer scenario is compared with: the
//! same topology carried by iroh with nothing of Kodama in between.
//!
//! A raw relay (a child process, so its CPU is read apart from the load
//! generators') accepts the same connections the server would: one per
//! camera, one per viewer. Cameras send the same replayed access units at
//! the same pace, opening one unidirectional stream per GOP as Kodama's
//! uplink does; for every camera stream the relay opens one stream to each
//! of that camera's viewers and writes every chunk it reads to each of them
//! (a reference-counted `Bytes`, no copy). No framing, no hub, no queues,
//! no recorder, no per-viewer task: one task per camera stream. What the
//! relay spends per delivered GB is what QUIC, TLS and the kernel cost for
//! these bytes on this machine; the server's figure divided by it is the
//! price of Kodama's own work.
//!
//! Every connection starts with a 3-byte hello on its first uni stream:
//! role (camera or viewer) and the camera's index (u16, little endian).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use kodama_firmware::video::VideoSource;
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::iroh::endpoint::{RecvStream, SendStream};
use kodama_net::{codes, Connection, Endpoint, EndpointAddr, SecretKey};
use kodama_proto::Channel;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node::ChildNode;
use crate::pipeline::Stream;
use crate::procfs::{self, Memory};

/// The relay's ALPN.
pub const ALPN_RELAY: &[u8] = b"kodama/bench-relay/1";

const ROLE_CAMERA: u8 = 0;
const ROLE_VIEWER: u8 = 1;

/// Bytes per read, as `kodama_net::media_recv` reads.
const READ_CHUNK: usize = 64 * 1024;

/// How long connecting everything may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Bound on each teardown step.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn bind(alpns: Vec<Vec<u8>>) -> anyhow::Result<Endpoint> {
    bind_with(SecretKey::generate(), alpns).await
}

/// An offline endpoint on 127.0.0.1 with this key, dialling only.
pub async fn bind_key(secret: SecretKey) -> anyhow::Result<Endpoint> {
    bind_with(secret, Vec::new()).await
}

async fn bind_with(secret: SecretKey, alpns: Vec<Vec<u8>>) -> anyhow::Result<Endpoint> {
    Ok(endpoint::bind(
        secret,
        &EndpointOptions {
            offline: true,
            bind: Some(loopback()),
            alpns,
        },
    )
    .await?)
}

type Viewers = Arc<Mutex<HashMap<u16, Vec<Connection>>>>;

/// The relay, run as `kodama-bench __node raw-relay`: prints
/// `raw-relay <endpoint id> <address>` on stdout, then serves until
/// `cancel` (SIGTERM or stdin closing, see `node`).
pub async fn serve_relay(cancel: CancellationToken) -> anyhow::Result<()> {
    let ep = bind(vec![ALPN_RELAY.to_vec()]).await?;
    let addr = ep
        .bound_sockets()
        .first()
        .copied()
        .context("the relay has no bound socket")?;
    println!("raw-relay {} {addr}", ep.id());
    let viewers: Viewers = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            i = ep.accept() => match i { Some(i) => i, None => break },
        };
        let viewers = viewers.clone();
        tasks.spawn(async move {
            if let Err(e) = relay_connection(incoming, viewers).await {
                tracing::debug!("relay connection ended: {e:#}");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    ep.close().await;
    Ok(())
}

async fn relay_connection(
    incoming: kodama_net::iroh::endpoint::Incoming,
    viewers: Viewers,
) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let mut hello = conn.accept_uni().await?;
    let mut b = [0u8; 3];
    hello.read_exact(&mut b).await?;
    let camera = u16::from_le_bytes([b[1], b[2]]);
    match b[0] {
        ROLE_VIEWER => {
            viewers
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .entry(camera)
                .or_default()
                .push(conn.clone());
            conn.closed().await;
            if let Ok(mut v) = viewers.lock() {
                if let Some(list) = v.get_mut(&camera) {
                    list.retain(|c| c.stable_id() != conn.stable_id());
                }
            }
        }
        ROLE_CAMERA => {
            let mut groups = JoinSet::new();
            loop {
                let stream = match conn.accept_uni().await {
                    Ok(s) => s,
                    Err(_) => break,
                };
                let targets = viewers
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .get(&camera)
                    .cloned()
                    .unwrap_or_default();
                groups.spawn(forward(stream, targets));
                while groups.try_join_next().is_some() {}
            }
            groups.abort_all();
        }
        other => bail!("unknown role {other}"),
    }
    Ok(())
}

/// One camera stream (a GOP) to one stream per viewer, an access unit at
/// a time: the pieces QUIC handed over are written on as they are, no copy.
async fn forward(mut from: RecvStream, targets: Vec<Connection>) {
    let mut outs: Vec<SendStream> = Vec::with_capacity(targets.len());
    for c in &targets {
        if let Ok(s) = c.open_uni().await {
            outs.push(s);
        }
    }
    let mut parts: Vec<Bytes> = Vec::new();
    'units: loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).await.is_err() {
            break;
        }
        parts.clear();
        parts.push(Bytes::copy_from_slice(&len));
        let mut left = u32::from_le_bytes(len) as usize;
        while left > 0 {
            match from.read_chunk(left.min(READ_CHUNK)).await {
                Ok(Some(c)) => {
                    left = left.saturating_sub(c.len());
                    parts.push(c);
                }
                _ => break 'units,
            }
        }
        let mut i = 0;
        while i < outs.len() {
            let mut unit = parts.clone();
            if outs[i].write_all_chunks(&mut unit).await.is_err() {
                outs.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    for mut s in outs {
        let _ = s.finish();
    }
}

async fn hello(conn: &Connection, role: u8, camera: u16) -> anyhow::Result<()> {
    let mut s = conn.open_uni().await?;
    let i = camera.to_le_bytes();
    s.write_all(&[role, i[0], i[1]]).await?;
    s.finish()?;
    Ok(())
}

/// A raw camera: the firmware's capture thread replaying `source`, each
/// access unit written as one chunk, one uni stream per GOP. Adds what it
/// writes to `sent`.
pub async fn raw_camera(
    ep: Endpoint,
    relay: EndpointAddr,
    index: u16,
    source: Box<dyn VideoSource>,
    sent: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let conn = ep.connect(relay, ALPN_RELAY).await?;
    hello(&conn, ROLE_CAMERA, index).await?;
    let capture = kodama_firmware::video::spawn_capture(source, cancel.clone())?;
    let mut frames = capture.frames;
    let mut current: Option<SendStream> = None;
    let result = async {
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => break,
                f = frames.recv() => match f { Some(f) => f, None => break },
            };
            if frame.channel != Channel::Video {
                continue;
            }
            if frame.is_keyframe() || current.is_none() {
                if let Some(mut old) = current.take() {
                    let _ = old.finish();
                }
                current = Some(conn.open_uni().await?);
            }
            if let Some(s) = &mut current {
                let n = frame.payload.len() as u64;
                let len = u32::try_from(n).context("access unit over 4 GiB")?;
                let mut unit = [
                    Bytes::copy_from_slice(&len.to_le_bytes()),
                    frame.payload.clone(),
                ];
                s.write_all_chunks(&mut unit).await?;
                sent.fetch_add(n, Ordering::Relaxed);
            }
        }
        anyhow::Ok(())
    }
    .await;
    conn.close(codes::NORMAL, b"done");
    drop(frames);
    let thread = capture.thread;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result
}

/// A raw viewer: reads every stream the relay opens, counting bytes.
async fn raw_viewer(conn: Connection, received: Arc<AtomicU64>, cancel: CancellationToken) {
    let mut readers = JoinSet::new();
    loop {
        let mut s = tokio::select! {
            _ = cancel.cancelled() => break,
            s = conn.accept_uni() => match s { Ok(s) => s, Err(_) => break },
        };
        let received = received.clone();
        readers.spawn(async move {
            while let Ok(Some(chunk)) = s.read_chunk(READ_CHUNK).await {
                received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        while readers.try_join_next().is_some() {}
    }
    readers.abort_all();
    conn.close(codes::NORMAL, b"done");
}

/// What the raw relay carried in the window.
#[derive(Debug, Clone, Copy)]
pub struct RawFanout {
    /// Bytes the cameras wrote in the window.
    pub ingest_bytes: u64,
    /// Bytes the viewers read in the window.
    pub delivered_bytes: u64,
    /// The window.
    pub window: Duration,
    /// The relay's CPU (user + system) in the window.
    pub relay_cpu: Duration,
    /// The relay's memory at the end of the window.
    pub relay_memory: Memory,
}

impl RawFanout {
    /// Relay CPU seconds per 10^9 bytes delivered (or, with no viewers, ingested).
    pub fn cpu_secs_per_gb(&self) -> Option<f64> {
        let bytes = if self.delivered_bytes > 0 {
            self.delivered_bytes
        } else {
            self.ingest_bytes
        };
        (bytes > 0).then(|| self.relay_cpu.as_secs_f64() / (bytes as f64 / 1e9))
    }
}

/// Runs `cameras` × `viewers_per_camera` through a raw relay child process
/// for `warmup` + `window`.
pub async fn run(
    cameras: usize,
    viewers_per_camera: usize,
    stream: &Stream,
    warmup: Duration,
    window: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<RawFanout> {
    let (relay, relay_addr) = ChildNode::relay().await?;
    let scope = cancel.child_token();
    let result = async {
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let mut endpoints = Vec::new();
        let mut tasks = JoinSet::new();
        // Viewers first, so every camera stream finds them registered.
        let connect = async {
            for i in 0..cameras * viewers_per_camera {
                let camera = (i / viewers_per_camera.max(1)) as u16;
                let ep = bind(Vec::new()).await?;
                let conn = ep.connect(relay_addr.clone(), ALPN_RELAY).await?;
                hello(&conn, ROLE_VIEWER, camera).await?;
                endpoints.push(ep);
                tasks.spawn(raw_viewer(conn, received.clone(), scope.clone()));
            }
            // Let the relay register the last viewer before streams start.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let gop = Duration::from_secs_f64(
                f64::from(stream.gop_frames) / f64::from(stream.format.fps.max(1)),
            );
            let stagger = gop / cameras.max(1) as u32;
            for i in 0..cameras {
                if i > 0 {
                    tokio::time::sleep(stagger).await;
                }
                let ep = bind(Vec::new()).await?;
                endpoints.push(ep.clone());
                let (relay, source, sent, scope) = (
                    relay_addr.clone(),
                    Box::new(stream.paced()),
                    sent.clone(),
                    scope.clone(),
                );
                tasks.spawn(async move {
                    if let Err(e) = raw_camera(ep, relay, i as u16, source, sent, scope).await {
                        tracing::warn!("raw camera {i}: {e:#}");
                    }
                });
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(CONNECT_LIMIT, connect)
            .await
            .map_err(|_| anyhow!("raw topology did not connect within {CONNECT_LIMIT:?}"))??;
        tokio::time::sleep(warmup).await;
        let pid = relay.pid;
        let before = procfs::sample(Some(pid))?;
        let (sent0, recv0) = (
            sent.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let elapsed = started.elapsed();
        let after = procfs::sample(Some(pid))?;
        let (sent1, recv1) = (
            sent.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        scope.cancel();
        let _ = tokio::time::timeout(TEARDOWN_LIMIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        for ep in endpoints {
            let _ = tokio::time::timeout(TEARDOWN_LIMIT, ep.close()).await;
        }
        Ok(RawFanout {
            ingest_bytes: sent1 - sent0,
            delivered_bytes: recv1 - recv0,
            window: elapsed,
            relay_cpu: procfs::ticks_to_duration(
                after.cpu.total().saturating_sub(before.cpu.total()),
            ),
            relay_memory: after.memory,
        })
    }
    .await;
    scope.cancel();
    relay.stop().await;
    result
}
