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
/// peer ends with `Ok(())` once everything its streams delivered has been
/// handed to `tx`. Video is delivered group by group.
///
/// Never hangs: readers and the hand-over to `tx` both watch `cancel`, and
/// after the connection ends the readers' channel is drained *while* they
/// are joined (a reader blocked on a full channel could otherwise never
/// finish).
pub async fn receive_media(
    conn: Connection,
    tx: mpsc::Sender<Received>,
    cancel: CancellationToken,
) -> Result<(), MediaError> {
    let mut readers: JoinSet<Result<(), MediaError>> = JoinSet::new();
    // Small: buffering belongs to QUIC's flow-control windows, so a slow
    // consumer pushes back on the sender promptly.
    let (raw_tx, mut raw_rx) = mpsc::channel::<Received>(8);
    // `None` once the connection has ended: no new readers, and the channel
    // closes when the last reader drops its sender.
    let mut raw_tx = Some(raw_tx);
    let mut orderer = GroupOrderer::new(REORDER_BUDGET);
    let mut ordered = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            Some(done) = readers.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(join) => tracing::error!("media reader task failed: {join}"),
            },
            event = raw_rx.recv() => match event {
                Some(event) => {
                    orderer.push(event, &mut ordered);
                    if !deliver(&tx, &mut ordered, &cancel).await {
                        break Ok(());
                    }
                }
                // Connection over and every reader has dropped its sender:
                // all delivered. Their tasks are ending; collect a late error.
                None => {
                    let mut end = Ok(());
                    while let Some(done) = readers.join_next().await {
                        if let Ok(Err(e)) = done {
                            end = Err(e);
                        }
                    }
                    break end;
                }
            },
            accepted = conn.accept_uni(), if raw_tx.is_some() => match accepted {
                Ok(stream) => {
                    if let Some(raw_tx) = &raw_tx {
                        readers.spawn(read_stream(stream, raw_tx.clone(), cancel.clone()));
                    }
                }
                // Connection over: keep draining what the readers still hold.
                Err(_) => raw_tx = None,
            },
        }
    };
    readers.abort_all();
    result
}

/// Hands `ordered` to the caller; false if the caller is gone or `cancel` fired.
async fn deliver(
    tx: &mpsc::Sender<Received>,
    ordered: &mut Vec<Received>,
    cancel: &CancellationToken,
) -> bool {
    for event in ordered.drain(..) {
        if !forward(tx, event, cancel).await {
            return false;
        }
    }
    true
}

/// Sends one item, giving up when `cancel` fires; false if not sent.
async fn forward(tx: &mpsc::Sender<Received>, item: Received, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        sent = tx.send(item) => sent.is_ok(),
    }
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
                    let ended = Received::Ended {
                        header,
                        complete: true,
                    };
                    forward(&tx, ended, &cancel).await;
                }
                return Ok(());
            }
            Err(ReadError::Reset(_)) => {
                if let Some(header) = rx.header() {
                    let ended = Received::Ended {
                        header,
                        complete: false,
                    };
                    forward(&tx, ended, &cancel).await;
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
            if !forward(&tx, item, &cancel).await {
                return Ok(());
            }
        }
    }
}
