//! Firmware bundles over the camera's own connection: the server streams a
//! bundle (or its remainder, from the offset the camera asked for) on a
//! unidirectional stream that starts with a [`BundleHeader`].
//!
//! The stream's priority is below everything live (video groups, telemetry,
//! control, even backfill): QUIC sends bundle bytes only when nothing else is
//! queued on the connection, so an update trickles over a cellular link
//! without taking the picture's bandwidth. Whether the bytes are right is the
//! receiver's business (BLAKE3 of the whole file, then RAUC's signature).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use iroh::endpoint::{Connection, RecvStream};
use kodama_proto::wire::FieldError;
use kodama_proto::{BundleHeader, BUNDLE_HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

pub use iroh::endpoint::RecvStream as BundleRecvStream;

/// Stream priority of a bundle: below backfill (-1) and all live streams.
pub const PRIORITY_UPDATE: i32 = -2;

/// Bytes read from the file and handed to QUIC at a time.
const CHUNK: usize = 64 * 1024;

/// Why a bundle stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateStreamError {
    /// The connection ended.
    #[error("connection: {0}")]
    Connection(#[from] iroh::endpoint::ConnectionError),
    /// Writing the stream failed.
    #[error("bundle stream write: {0}")]
    Write(#[from] iroh::endpoint::WriteError),
    /// Reading the stream failed.
    #[error("bundle stream read: {0}")]
    Read(#[from] iroh::endpoint::ReadError),
    /// The stream ended before its header did.
    #[error("bundle stream ended inside its header")]
    ShortHeader,
    /// The header is not a bundle header.
    #[error("not a bundle stream: {0}")]
    Header(#[from] FieldError),
    /// Reading the bundle file failed.
    #[error("bundle file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is shorter than the offered size (changed under us).
    #[error("bundle file {path} ended at {at} bytes, {size} offered")]
    FileShort {
        /// The file.
        path: String,
        /// Where it ended.
        at: u64,
        /// The offered size.
        size: u64,
    },
    /// Cancelled (the session ended).
    #[error("cancelled")]
    Cancelled,
}

/// Sends bytes `header.offset..size` of the bundle at `path`, then finishes
/// the stream. `sent` follows the absolute offset handed to QUIC.
pub async fn send_bundle(
    conn: &Connection,
    path: &Path,
    header: BundleHeader,
    size: u64,
    sent: &AtomicU64,
    cancel: &CancellationToken,
) -> Result<(), UpdateStreamError> {
    let file_err = |source| UpdateStreamError::File {
        path: path.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(file_err)?;
    file.seek(std::io::SeekFrom::Start(header.offset))
        .await
        .map_err(file_err)?;
    let mut stream = conn.open_uni().await?;
    // Only fails on a stream that is already closed.
    let _ = stream.set_priority(PRIORITY_UPDATE);
    stream.write_all(&header.to_bytes()).await?;
    let mut at = header.offset;
    sent.store(at, Ordering::Relaxed);
    let mut buf = vec![0u8; CHUNK];
    while at < size {
        let want = CHUNK.min((size - at) as usize);
        let n = file.read(&mut buf[..want]).await.map_err(file_err)?;
        if n == 0 {
            return Err(UpdateStreamError::FileShort {
                path: path.display().to_string(),
                at,
                size,
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(UpdateStreamError::Cancelled),
            w = stream.write_all(&buf[..n]) => w?,
        }
        at += n as u64;
        sent.store(at, Ordering::Relaxed);
    }
    // Finishing only fails if the peer stopped the stream; the camera reports
    // what it got either way.
    let _ = stream.finish();
    tokio::select! {
        _ = cancel.cancelled() => Err(UpdateStreamError::Cancelled),
        _ = stream.stopped() => Ok(()),
    }
}

/// The receiving side of one bundle stream.
#[derive(Debug)]
pub struct BundleStream {
    recv: RecvStream,
}

impl BundleStream {
    /// Reads the header of a stream the server opened.
    pub async fn open(mut recv: RecvStream) -> Result<(BundleHeader, Self), UpdateStreamError> {
        let mut header = [0u8; BUNDLE_HEADER_LEN];
        let mut filled = 0;
        while filled < BUNDLE_HEADER_LEN {
            match recv.read(&mut header[filled..]).await? {
                Some(n) => filled += n,
                None => return Err(UpdateStreamError::ShortHeader),
            }
        }
        Ok((BundleHeader::decode(&header)?, Self { recv }))
    }

    /// The next bytes, `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpdateStreamError> {
        Ok(self.recv.read_chunk(CHUNK).await?)
    }

    /// Tells the sender to stop (e.g. the bytes are not wanted).
    pub fn stop(&mut self) {
        let _ = self.recv.stop(crate::codes::NORMAL);
    }
}

/// Accepts the next unidirectional stream the peer opens.
pub async fn accept(conn: &Connection) -> Result<RecvStream, UpdateStreamError> {
    Ok(conn.accept_uni().await?)
}
