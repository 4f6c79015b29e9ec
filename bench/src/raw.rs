//! The ceiling: one unidirectional iroh stream between two offline
//! endpoints on 127.0.0.1, with Kodama's own transport settings (stream and
//! connection receive windows, stream limits) from `kodama_net::endpoint`.
//! No Kodama framing, no hub: just bytes written and read as fast as QUIC
//! (and its TLS) on this machine allows.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::{codes, EndpointAddr, SecretKey};
use tokio_util::sync::CancellationToken;

/// The benchmark's own ALPN, so nothing Kodama-shaped answers.
const ALPN_RAW: &[u8] = b"kodama/bench-raw/1";

/// Bytes per write: a large-ish chunk so the write path is not the limit.
const WRITE_CHUNK: usize = 256 * 1024;

/// Bytes per read (what `kodama_net::media_recv` uses).
const READ_CHUNK: usize = 64 * 1024;

/// How long the whole transfer may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(120);

/// What one transfer achieved.
#[derive(Debug, Clone, Copy)]
pub struct RawResult {
    /// Bytes the receiver read.
    pub bytes: u64,
    /// From the first write to the receiver reading the end of the stream.
    pub elapsed: Duration,
}

impl RawResult {
    /// Megabits (10^6 bits) per second.
    pub fn mbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Sends `total` bytes over one uni stream and times it.
pub async fn run(total: u64, cancel: CancellationToken) -> anyhow::Result<RawResult> {
    let receiver = endpoint::bind(
        SecretKey::generate(),
        &EndpointOptions {
            offline: true,
            bind: Some(loopback()),
            alpns: vec![ALPN_RAW.to_vec()],
        },
    )
    .await?;
    let sender = endpoint::bind(
        SecretKey::generate(),
        &EndpointOptions {
            offline: true,
            bind: Some(loopback()),
            alpns: Vec::new(),
        },
    )
    .await?;
    let result = tokio::select! {
        _ = cancel.cancelled() => Err(anyhow!("cancelled")),
        r = tokio::time::timeout(LIMIT, transfer(&sender, &receiver, total)) => {
            r.map_err(|_| anyhow!("raw transfer of {total} bytes took over {LIMIT:?}"))?
        }
    };
    sender.close().await;
    receiver.close().await;
    result
}

async fn transfer(
    sender: &kodama_net::Endpoint,
    receiver: &kodama_net::Endpoint,
    total: u64,
) -> anyhow::Result<RawResult> {
    let addr = receiver
        .bound_sockets()
        .first()
        .copied()
        .context("receiver has no bound socket")?;
    let read = tokio::spawn({
        let receiver = receiver.clone();
        async move {
            let incoming = receiver
                .accept()
                .await
                .context("receiver endpoint closed")?;
            let conn = incoming.await.context("accepting the connection")?;
            let mut stream = conn.accept_uni().await.context("accepting the stream")?;
            let mut bytes = 0u64;
            while let Some(chunk) = stream.read_chunk(READ_CHUNK).await.context("reading")? {
                bytes += chunk.len() as u64;
            }
            let done = Instant::now();
            conn.close(codes::NORMAL, b"done");
            anyhow::Ok((bytes, done))
        }
    });
    let conn = sender
        .connect(
            EndpointAddr::new(receiver.id()).with_ip_addr(addr),
            ALPN_RAW,
        )
        .await
        .context("connecting to the receiver")?;
    let mut stream = conn.open_uni().await.context("opening the stream")?;
    let block = Bytes::from(
        (0..WRITE_CHUNK)
            .map(|i| (i * 13) as u8)
            .collect::<Vec<u8>>(),
    );
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(WRITE_CHUNK as u64) as usize;
        stream
            .write_chunk(block.slice(..n))
            .await
            .context("writing")?;
        left -= n as u64;
    }
    stream.finish().context("finishing the stream")?;
    let (bytes, done) = read.await.context("reader task")??;
    anyhow::ensure!(bytes == total, "receiver read {bytes} of {total} bytes");
    Ok(RawResult {
        bytes,
        elapsed: done.duration_since(start),
    })
}
