//! Receiving a peer's media streams.
//!
//! [`receive_media`] accepts unidirectional streams until the connection
//! ends, runs one reader task per stream (bounded by the connection's
//! stream limit), validates every stream with [`GroupReceiver`], and hands
//! [`Received`] items to the caller through a bounded channel. A slow caller
//! makes readers wait, which lets QUIC flow control push back on the sender,
//! whose newest-group-first policy then drops stale video at the source.
//!
//! A stream that violates the protocol (bad header, oversized or malformed
//! frame, a GOP without a leading keyframe) ends the whole call with an
//! error: the caller closes the connection with a logged reason.

use iroh::endpoint::{Connection, ReadError, RecvStream};
use kodama_proto::stream::StreamEvent;
use kodama_proto::{Frame, GroupReceiver, StreamHeader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::MediaError;

const READ_CHUNK: usize = 64 * 1024;

/// One item of received media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A stream opened; for video, a new group begins.
    StreamStarted(StreamHeader),
    /// A validated frame from the stream with this header.
    Frame(StreamHeader, Frame),
    /// The stream ended: `complete` is false when the sender reset it
    /// (a superseded or abandoned group).
    StreamEnded {
        /// Its header.
        header: StreamHeader,
        /// Whether it was finished normally.
        complete: bool,
    },
}

/// Receives media on `conn` until it closes, `cancel` fires, or a stream
/// violates the protocol (returned as the error). A connection closed by the
/// peer ends with `Ok(())`.
pub async fn receive_media(
    conn: Connection,
    tx: mpsc::Sender<Received>,
    cancel: CancellationToken,
) -> Result<(), MediaError> {
    let mut readers: JoinSet<Result<(), MediaError>> = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            accepted = conn.accept_uni() => match accepted {
                Ok(stream) => {
                    readers.spawn(read_stream(stream, tx.clone(), cancel.clone()));
                }
                Err(_) => break Ok(()),
            },
            Some(done) = readers.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(join) => {
                    tracing::error!("media reader task failed: {join}");
                }
            },
        }
    };
    readers.abort_all();
    result
}

async fn read_stream(
    mut stream: RecvStream,
    tx: mpsc::Sender<Received>,
    cancel: CancellationToken,
) -> Result<(), MediaError> {
    let mut rx = GroupReceiver::new();
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            c = stream.read_chunk(READ_CHUNK) => c,
        };
        match chunk {
            Ok(Some(bytes)) => rx.push(&bytes),
            Ok(None) => {
                rx.finish()?;
                if let Some(header) = rx.header() {
                    let _ = tx
                        .send(Received::StreamEnded {
                            header,
                            complete: true,
                        })
                        .await;
                }
                return Ok(());
            }
            Err(ReadError::Reset(_)) => {
                if let Some(header) = rx.header() {
                    let _ = tx
                        .send(Received::StreamEnded {
                            header,
                            complete: false,
                        })
                        .await;
                }
                return Ok(());
            }
            Err(ReadError::ConnectionLost(_)) | Err(ReadError::ClosedStream) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        while let Some(event) = rx.poll()? {
            let item = match event {
                StreamEvent::Header(h) => Received::StreamStarted(h),
                StreamEvent::Frame(f) => match rx.header() {
                    Some(h) => Received::Frame(h, f),
                    None => continue,
                },
            };
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
    }
}
