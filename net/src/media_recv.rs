//! Receiving a peer's media streams.
//!
//! [`receive_media`] accepts unidirectional streams until the connection
//! ends, runs one reader task per stream (bounded by the connection's
//! stream limit), validates every stream with [`GroupReceiver`], and hands
//! [`Received`] items to the caller through a bounded channel. A slow caller
//! makes readers wait, which lets QUIC flow control push back on the sender,
//! whose newest-group-first policy then drops stale video at the source.
//!
//! Reader tasks feed one [`GroupOrderer`], which restores group order (a
//! newer GOP's higher-priority stream can overtake the previous one's tail).
//!
//! A stream that violates the protocol (bad header, oversized or malformed
//! frame, a GOP without a leading keyframe) ends the whole call with an
//! error: the caller closes the connection with a logged reason.

use iroh::endpoint::{Connection, ReadError, RecvStream};
use kodama_proto::stream::StreamEvent;
use kodama_proto::{GroupOrderer, GroupReceiver, MediaEvent};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::MediaError;

const READ_CHUNK: usize = 64 * 1024;

/// One item of received media (in group order; see [`GroupOrderer`]).
pub type Received = MediaEvent;

/// Payload bytes of newer groups held while an older one is still arriving
/// before the older one is given up (about 2 s of 4 Mbit/s video).
pub const REORDER_BUDGET: usize = 1024 * 1024;

/// Receives media on `conn` until it closes, `cancel` fires, or a stream
/// violates the protocol (returned as the error). A connection closed by the
/// peer ends with `Ok(())`. Video is delivered group by group.
pub async fn receive_media(
    conn: Connection,
    tx: mpsc::Sender<Received>,
    cancel: CancellationToken,
) -> Result<(), MediaError> {
    let mut readers: JoinSet<Result<(), MediaError>> = JoinSet::new();
    // Small: buffering belongs to QUIC's flow-control windows, so a slow
    // consumer pushes back on the sender promptly.
    let (raw_tx, mut raw_rx) = mpsc::channel::<Received>(8);
    let mut orderer = GroupOrderer::new(REORDER_BUDGET);
    let mut ordered = Vec::new();
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            accepted = conn.accept_uni() => match accepted {
                Ok(stream) => {
                    readers.spawn(read_stream(stream, raw_tx.clone(), cancel.clone()));
                }
                Err(_) => {
                    // Connection over: deliver what the readers still hold.
                    drop(raw_tx);
                    while let Some(done) = readers.join_next().await {
                        if let Ok(Err(e)) = done {
                            return Err(e);
                        }
                    }
                    while let Ok(event) = raw_rx.try_recv() {
                        orderer.push(event, &mut ordered);
                    }
                    for event in ordered.drain(..) {
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                    return Ok(());
                }
            },
            Some(event) = raw_rx.recv() => {
                orderer.push(event, &mut ordered);
                for event in ordered.drain(..) {
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
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
                        .send(Received::Ended {
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
                        .send(Received::Ended {
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
                StreamEvent::Header(h) => Received::Started(h),
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
