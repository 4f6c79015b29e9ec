//! The tokio adapter around [`AtCore`]: one driver task owns the port.
//!
//! Channels (all bounded):
//! - requests: `mpsc` of capacity [`REQUEST_QUEUE`] from every [`AtClient`]
//!   clone to the driver; each carries a `oneshot` for its answer;
//! - URCs: `broadcast` of capacity [`URC_QUEUE`] to every subscriber (a slow
//!   subscriber loses the oldest URCs, never blocks the driver).
//!
//! Cancellation: the driver stops when its `CancellationToken` fires or every
//! client is dropped; a caller abandons one command by dropping its future or
//! with [`AtClient::send_cancellable`] (the modem still finishes the command;
//! the driver waits for its result or timeout before the next one, so answers
//! never get attributed to the wrong command).

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::digest::{DigestStats, ResultCodeError};
use super::engine::{AtCommand, AtCore, CommandError, CoreEvent};

/// Depth of the request queue.
pub const REQUEST_QUEUE: usize = 16;
/// Depth of the URC broadcast.
pub const URC_QUEUE: usize = 64;

/// Errors that stop the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Reading the port failed.
    #[error("reading from modem port: {0}")]
    Read(#[source] std::io::Error),
    /// Writing the port failed.
    #[error("writing to modem port: {0}")]
    Write(#[source] std::io::Error),
    /// The port reported end of file (USB modem unplugged or re-enumerating).
    #[error("modem port closed")]
    Eof,
}

/// Errors opening a serial port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The device could not be opened or configured; check the path (the
    /// SIM7600's AT port is usually `/dev/ttyUSB2`), permissions (`dialout`
    /// group) and that ModemManager is not holding it.
    #[error("cannot open serial port {path}: {source}")]
    Serial {
        /// The device path.
        path: String,
        /// What the OS said.
        #[source]
        source: tokio_serial::Error,
    },
}

/// Open `path` as a raw 8N1 serial port at `baud` (tokio-serial).
///
/// Opened non-exclusively (no `TIOCEXCL`): exclusive mode would survive our own
/// close on some drivers and lock out `diag modem` run by an installer right
/// after the firmware stops; stop ModemManager on the Pi instead.
pub fn open_serial(path: &Path, baud: u32) -> Result<tokio_serial::SerialStream, OpenError> {
    use tokio_serial::SerialPortBuilderExt;
    let display = path.display().to_string();
    let mut builder = tokio_serial::new(display.clone(), baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .exclusive(false);
    builder = builder.timeout(Duration::from_millis(100));
    builder
        .open_native_async()
        .map_err(|source| OpenError::Serial {
            path: display,
            source,
        })
}

struct Request {
    text: String,
    payload: Option<Vec<u8>>,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<String>, ResultOrTimeout>>,
}

#[derive(Debug)]
enum ResultOrTimeout {
    Code(ResultCodeError),
    Timeout,
}

/// A handle for sending AT commands; cheap to clone.
#[derive(Debug, Clone)]
pub struct AtClient {
    requests: mpsc::Sender<Request>,
    urcs: broadcast::Sender<String>,
    stats: tokio::sync::watch::Receiver<DigestStats>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("text", &self.text).finish()
    }
}

impl AtClient {
    /// Send `cmd`, retrying up to its attempts, and parse the answer.
    pub async fn send<C: AtCommand>(&self, cmd: &C) -> Result<C::Response, CommandError> {
        let text = cmd.text();
        let attempts = cmd.attempts().max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            match self.raw(&text, cmd.payload(), cmd.timeout()).await {
                Ok(lines) => {
                    return cmd.parse(&lines).map_err(|error| CommandError::Parse {
                        command: text.clone(),
                        error,
                    })
                }
                Err(e @ CommandError::Closed { .. }) => return Err(e),
                Err(e) => {
                    if attempt < attempts {
                        tracing::debug!(command = %text, attempt, error = %e, "AT retry");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(CommandError::Closed { command: text }))
    }

    /// [`AtClient::send`], abandoned when `cancel` fires.
    pub async fn send_cancellable<C: AtCommand>(
        &self,
        cmd: &C,
        cancel: &CancellationToken,
    ) -> Result<C::Response, CommandError> {
        tokio::select! {
            _ = cancel.cancelled() => Err(CommandError::Cancelled { command: cmd.text() }),
            r = self.send(cmd) => r,
        }
    }

    /// Send one raw command line once; the information lines of an `OK` answer.
    pub async fn raw(
        &self,
        text: &str,
        payload: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Vec<String>, CommandError> {
        let (reply, rx) = oneshot::channel();
        let closed = || CommandError::Closed {
            command: text.to_string(),
        };
        self.requests
            .send(Request {
                text: text.to_string(),
                payload: payload.map(<[u8]>::to_vec),
                timeout,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        match rx.await.map_err(|_| closed())? {
            Ok(lines) => Ok(lines),
            Err(ResultOrTimeout::Code(error)) => Err(CommandError::Rejected {
                command: text.to_string(),
                error,
            }),
            Err(ResultOrTimeout::Timeout) => Err(CommandError::Timeout {
                command: text.to_string(),
                timeout,
            }),
        }
    }

    /// Subscribe to unsolicited result codes (raw lines; see
    /// [`super::sim7600::Urc::parse`]).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.urcs.subscribe()
    }

    /// Counters of garbage / overlong / stray input seen so far.
    pub fn stats(&self) -> DigestStats {
        *self.stats.borrow()
    }
}

/// Start the driver over any byte stream (a serial port, a pty, a duplex).
pub fn spawn<IO>(
    io: IO,
    cancel: CancellationToken,
) -> (AtClient, JoinHandle<Result<(), DriverError>>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE);
    let (urc_tx, _) = broadcast::channel(URC_QUEUE);
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(DigestStats::default());
    let client = AtClient {
        requests: req_tx,
        urcs: urc_tx.clone(),
        stats: stats_rx,
    };
    let task = tokio::spawn(drive(io, req_rx, urc_tx, stats_tx, cancel));
    (client, task)
}

/// Write timeout: a port that cannot take a few bytes in this long is wedged
/// (hardware flow control asserted by a dead modem).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), DriverError> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await
    {
        Ok(r) => r.map_err(DriverError::Write),
        Err(_) => Err(DriverError::Write(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write blocked",
        ))),
    }
}

async fn drive<IO>(
    io: IO,
    mut requests: mpsc::Receiver<Request>,
    urcs: broadcast::Sender<String>,
    stats: tokio::sync::watch::Sender<DigestStats>,
    cancel: CancellationToken,
) -> Result<(), DriverError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut core = AtCore::new();
    let mut current: Option<Request> = None;
    let mut buf = [0u8; 512];
    loop {
        while let Some(ev) = core.poll_event() {
            match ev {
                CoreEvent::Response(r) => {
                    if let Some(req) = current.take() {
                        tracing::trace!(command = %req.text, ok = r.is_ok(), "AT done");
                        // The caller may have gone away; nothing to do then.
                        let _ = req.reply.send(r.map_err(ResultOrTimeout::Code));
                    }
                }
                CoreEvent::TimedOut => {
                    if let Some(req) = current.take() {
                        tracing::debug!(command = %req.text, "AT timeout");
                        let _ = req.reply.send(Err(ResultOrTimeout::Timeout));
                    }
                }
                CoreEvent::Urc(line) => {
                    tracing::debug!(urc = %line, "URC");
                    // No subscribers is fine.
                    let _ = urcs.send(line);
                }
                CoreEvent::Prompt => {
                    if let Some(p) = current.as_ref().and_then(|r| r.payload.clone()) {
                        let mut bytes = p;
                        // Ctrl-Z ends the data (3GPP TS 27.005 §3.5.1).
                        bytes.push(0x1a);
                        write_all(&mut wr, &bytes).await?;
                    }
                }
            }
        }
        stats.send_if_modified(|s| {
            let new = core.stats();
            let changed = *s != new;
            *s = new;
            changed
        });
        let deadline = core.poll_timeout().map(Instant::from_std);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = rd.read(&mut buf) => {
                match n {
                    Ok(0) => return Err(DriverError::Eof),
                    Ok(n) => core.handle_input(&buf[..n]),
                    Err(e) => return Err(DriverError::Read(e)),
                }
            }
            req = requests.recv(), if current.is_none() => {
                let Some(req) = req else { return Ok(()) };
                if req.reply.is_closed() {
                    continue;
                }
                let now = Instant::now().into_std();
                let Ok(bytes) = core.start(&req.text, req.payload.is_some(), req.timeout, now) else {
                    // Unreachable by construction (current is None), but answer anyway.
                    let _ = req.reply.send(Err(ResultOrTimeout::Timeout));
                    continue;
                };
                tracing::trace!(command = %req.text, "AT send");
                write_all(&mut wr, &bytes).await?;
                current = Some(req);
            }
            _ = sleep_until_opt(deadline) => {
                core.handle_timeout(Instant::now().into_std());
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::modem::sim7600::{Csq, Sync};
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A scripted peer on the far side of a duplex: answers each line it reads.
    fn peer(
        io: tokio::io::DuplexStream,
        answer: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let (rd, mut wr) = tokio::io::split(io);
            let mut rd = BufReader::new(rd);
            let mut line = Vec::new();
            loop {
                line.clear();
                match rd.read_until(b'\r', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if let Some(a) = answer(&text) {
                    if wr.write_all(a.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn send_parses_and_urcs_are_broadcast() {
        let (a, b) = tokio::io::duplex(1024);
        let _peer = peer(b, |cmd| match cmd {
            "AT+CSQ" => Some("\r\n+CSQ: 20,99\r\n\r\n+CMTI: \"SM\",4\r\n\r\nOK\r\n".into()),
            _ => Some("\r\nERROR\r\n".into()),
        });
        let cancel = CancellationToken::new();
        let (client, task) = spawn(a, cancel.clone());
        let mut urcs = client.subscribe();
        let csq = client.send(&Csq).await.unwrap();
        assert_eq!(csq.rssi, 20);
        assert_eq!(urcs.recv().await.unwrap(), "+CMTI: \"SM\",4");
        let e = client.raw("AT+NOPE", None, Duration::from_secs(1)).await;
        assert!(matches!(
            e,
            Err(CommandError::Rejected {
                error: ResultCodeError::Error,
                ..
            })
        ));
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_then_retry_succeeds() {
        let (a, b) = tokio::io::duplex(1024);
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen2 = seen.clone();
        let _peer = peer(b, move |_| {
            // Swallow the first two ATs, answer the third.
            let n = seen2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (n >= 2).then(|| "\r\nOK\r\n".to_string())
        });
        let cancel = CancellationToken::new();
        let (client, _task) = spawn(a, cancel.clone());
        let t0 = Instant::now();
        client.send(&Sync).await.unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(Instant::now() - t0 >= Sync.timeout() * 2);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn all_attempts_time_out() {
        let (a, b) = tokio::io::duplex(1024);
        let _peer = peer(b, |_| None);
        let cancel = CancellationToken::new();
        let (client, _task) = spawn(a, cancel.clone());
        let e = client.send(&Csq).await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn cancellable_send_and_driver_shutdown() {
        let (a, b) = tokio::io::duplex(1024);
        let _peer = peer(b, |_| None);
        let cancel = CancellationToken::new();
        let (client, task) = spawn(a, cancel.clone());
        let call_cancel = CancellationToken::new();
        let c2 = call_cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        let e = client
            .send_cancellable(&Csq, &call_cancel)
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Cancelled { .. }));
        cancel.cancel();
        task.await.unwrap().unwrap();
        let e = client.send(&Csq).await.unwrap_err();
        assert!(matches!(e, CommandError::Closed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn eof_stops_driver() {
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let (_client, task) = spawn(a, CancellationToken::new());
        assert!(matches!(task.await.unwrap(), Err(DriverError::Eof)));
    }
}
