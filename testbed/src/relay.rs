//! The impairment relay: a userspace UDP forwarder that adds delay and
//! jitter (this kernel has no `sch_netem`).
//!
//! It runs in the router namespace. The router redirects the camera's UDP
//! for the server to the relay (`nft … redirect`), so the camera dials the
//! server's real address; the relay forwards each client's datagrams from its
//! own upstream socket and sends the answers back from the redirected port,
//! which conntrack rewrites to the server's address. Each direction delays
//! every datagram by half the round-trip time plus jitter, never reordering
//! (a datagram leaves no earlier than the one before it), with a bounded
//! queue (a router's buffer: overflow drops).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Datagrams one direction may hold before dropping (a router buffer).
pub const QUEUE: usize = 4096;

/// Delay added to a link, per round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// Added round-trip time (half each way).
    pub rtt: Duration,
    /// Uniform jitter, ± this much per round trip (half each way).
    pub jitter: Duration,
}

struct Delayed {
    at: Instant,
    data: Vec<u8>,
    to: SocketAddr,
    via: Arc<UdpSocket>,
}

/// One direction's delay line: FIFO, so jitter never reorders.
fn delay_line(
    delay: Delay,
    stop: CancellationToken,
) -> mpsc::Sender<(Vec<u8>, SocketAddr, Arc<UdpSocket>)> {
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, SocketAddr, Arc<UdpSocket>)>(QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Delayed>(QUEUE);
    let half = delay.rtt / 2;
    let half_jitter = delay.jitter / 2;
    // Stamp on arrival (the clock starts when the datagram arrives, not when
    // the sender gets round to it).
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut last = Instant::now();
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => return,
                    i = rx.recv() => i,
                };
                let Some((data, to, via)) = item else { return };
                let jitter_us = half_jitter.as_micros() as i64;
                let offset = if jitter_us > 0 {
                    rand::rng().random_range(-jitter_us..=jitter_us)
                } else {
                    0
                };
                let wait = Duration::from_micros((half.as_micros() as i64 + offset).max(0) as u64);
                let at = (Instant::now() + wait).max(last);
                last = at;
                // Full: the buffer overflows and the datagram is lost.
                let _ = out_tx.try_send(Delayed { at, data, to, via });
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => return,
                i = out_rx.recv() => i,
            };
            let Some(d) = item else { return };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(d.at) => {}
            }
            let _ = d.via.send_to(&d.data, d.to).await;
        }
    });
    tx
}

/// Runs a relay from `front` to `target` until `stop` fires.
pub async fn run(front: UdpSocket, target: SocketAddr, delay: Delay, stop: CancellationToken) {
    let front = Arc::new(front);
    let up = delay_line(delay, stop.clone());
    let down = delay_line(delay, stop.clone());
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = front.recv_from(&mut buf) => r,
        };
        let Ok((n, client)) = received else { continue };
        let socket = match upstream.get(&client) {
            Some(s) => s.clone(),
            None => {
                // Bounded: one socket per client flow, and a test bed has a
                // handful of clients.
                if upstream.len() >= 64 {
                    continue;
                }
                let Ok(s) = UdpSocket::bind("0.0.0.0:0").await else {
                    continue;
                };
                let s = Arc::new(s);
                upstream.insert(client, s.clone());
                let (s2, front2, down2, stop2) =
                    (s.clone(), front.clone(), down.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let r = tokio::select! {
                            _ = stop2.cancelled() => return,
                            r = s2.recv_from(&mut buf) => r,
                        };
                        if let Ok((n, _)) = r {
                            let _ = down2.try_send((buf[..n].to_vec(), client, front2.clone()));
                        }
                    }
                });
                s
            }
        };
        let _ = up.try_send((buf[..n].to_vec(), target, socket));
    }
}
