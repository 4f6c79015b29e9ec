//! The terminal viewer (`kodama-server view`): watches one camera, prints
//! per-channel statistics, and can write the H.264 elementary stream to a
//! file or stdout (`kodama-server view --output - | ffplay -`) and the
//! camera's audio as Ogg Opus (`--audio-output`, [`kodama_media::opus`]).
//!
//! [`ViewerClient`] is also the library face of a viewer for tests and the
//! benchmark.

use std::io::Write;
use std::time::{Duration, Instant};

use kodama_media::opus::{OggOpusError, OggOpusWriter, OpusHead};
use kodama_net::control::{ControlReader, ControlStream, ControlWriter};
use kodama_net::error::HelloError;
use kodama_net::link::{self, LinkProfile};
use kodama_net::media_recv::{receive_media, Received};
use kodama_net::{codes, Connection, Endpoint, EndpointAddr};
use kodama_proto::{
    CameraInfo, CameraSelector, Channel, ClientHandshake, Frame, Message, ALPN_VIEWER,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::stats::ChannelStats;

/// Media items buffered in the client. Kept small so a client that stops
/// reading pushes back on the server quickly (see the skip-ahead test).
pub const CLIENT_QUEUE: usize = 16;

/// Why a viewer could not watch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewerError {
    /// Could not connect.
    #[error("cannot connect to the server: {0}")]
    Connect(String),
    /// The control stream failed.
    #[error(transparent)]
    Control(#[from] kodama_net::error::ControlError),
    /// The server refused (not allowed, unknown camera, version).
    #[error(transparent)]
    Handshake(#[from] kodama_proto::HandshakeError),
    /// The server did not send the stream description.
    #[error("expected StreamInfo after Welcome, got {0:?}")]
    NoStreamInfo(Box<Message>),
    /// The camera is known to the server but did not come online in time.
    #[error("camera {camera} is offline and did not come online within {waited:?}")]
    CameraOffline {
        /// The camera asked for.
        camera: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The server ended the stream (it shut down, the viewer was removed,
    /// the connection was lost) before the viewer's own end.
    #[error("the stream ended after {frames} video frames: {reason}")]
    Ended {
        /// Video frames received before.
        frames: u64,
        /// The connection's close reason.
        reason: String,
    },
}

/// How long [`ViewerClient::connect`] waits for a known camera that is offline.
pub const DEFAULT_OFFLINE_WAIT: Duration = Duration::from_secs(10);

/// What a viewer receives.
#[derive(Debug)]
pub enum ViewerEvent {
    /// Media from the server.
    Media(Received),
    /// A control message (StreamInfo on camera reconnect, CameraState).
    Control(Message),
    /// The connection ended.
    Closed(String),
}

/// A connected viewer.
#[derive(Debug)]
pub struct ViewerClient {
    conn: Connection,
    /// The camera's stream when we connected.
    pub info: CameraInfo,
    /// The camera's endpoint id.
    pub camera: [u8; 32],
    media: mpsc::Receiver<Received>,
    control: ControlReader,
    /// Held open: finishing our half of the control stream means "leaving".
    _control_writer: ControlWriter,
    cancel: CancellationToken,
}

impl ViewerClient {
    /// Connects to `server` and asks for `selector`, waiting up to
    /// [`DEFAULT_OFFLINE_WAIT`] for a known camera that is offline.
    pub async fn connect(
        endpoint: &Endpoint,
        server: EndpointAddr,
        selector: CameraSelector,
    ) -> Result<Self, ViewerError> {
        Self::connect_waiting(endpoint, server, selector, DEFAULT_OFFLINE_WAIT, |_| {}).await
    }

    /// Connects to `server` and asks for `selector`. If the server knows the
    /// camera but it is offline (e.g. the server just restarted and the
    /// camera has not reconnected yet), calls `on_offline` with the camera
    /// asked for and waits up to `wait` for it to come online.
    pub async fn connect_waiting(
        endpoint: &Endpoint,
        server: EndpointAddr,
        selector: CameraSelector,
        wait: Duration,
        on_offline: impl FnOnce(&str),
    ) -> Result<Self, ViewerError> {
        let wanted = match &selector {
            CameraSelector::Name(n) => n.clone(),
            CameraSelector::Id(id) => id.iter().map(|b| format!("{b:02x}")).collect(),
            CameraSelector::FirstOnline => "(first online)".into(),
        };
        // Live keep-alives, so a server that dies without closing (kill -9,
        // power loss, a black-holed path) is noticed within about a second
        // (the watchdog below), not after QUIC's idle timeout.
        let conn = link::connect(endpoint, server, ALPN_VIEWER, LinkProfile::Live)
            .await
            .map_err(|e| ViewerError::Connect(e.to_string()))?;
        let (mut control, _server) = ControlStream::hello(
            &conn,
            ClientHandshake::viewer(selector),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| match e {
            HelloError::Handshake(e) => ViewerError::Handshake(e),
            HelloError::Closed(reason) => ViewerError::Connect(reason),
            HelloError::Stream(e) | HelloError::NoAnswer(e) => ViewerError::Control(e),
            other => ViewerError::Connect(other.to_string()),
        })?;
        let (camera, info) = match control.recv_timeout(Duration::from_secs(10)).await? {
            Message::StreamInfo { camera, info } => (camera, info),
            Message::CameraState { online: false, .. } => {
                on_offline(&wanted);
                let offline = || ViewerError::CameraOffline {
                    camera: wanted.clone(),
                    waited: wait,
                };
                match tokio::time::timeout(wait, control.recv()).await {
                    Ok(Ok(Message::StreamInfo { camera, info })) => (camera, info),
                    Ok(Ok(Message::Reject { .. })) | Err(_) => {
                        conn.close(codes::NORMAL, b"camera offline");
                        return Err(offline());
                    }
                    Ok(Ok(other)) => return Err(ViewerError::NoStreamInfo(Box::new(other))),
                    Ok(Err(e)) => {
                        return Err(match conn.close_reason() {
                            Some(r) => ViewerError::Connect(r.to_string()),
                            None => e.into(),
                        })
                    }
                }
            }
            other => return Err(ViewerError::NoStreamInfo(Box::new(other))),
        };
        let cancel = CancellationToken::new();
        let (tx, media) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn({
            let conn = conn.clone();
            let cancel = cancel.clone();
            async move {
                if let Err(e) = receive_media(conn.clone(), tx, cancel).await {
                    tracing::error!("server sent invalid media: {e}");
                    conn.close(codes::PROTOCOL_VIOLATION, e.to_string().as_bytes());
                }
            }
        });
        tokio::spawn({
            let conn = conn.clone();
            let cancel = cancel.clone();
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = conn.closed() => {}
                    quiet = link::until_silent(&conn, link::SILENCE) => {
                        tracing::warn!("nothing from the server for {quiet:?}: it is gone or unreachable");
                        conn.close(codes::NORMAL, b"server silent");
                    }
                }
            }
        });
        let (control, control_writer) = control.split();
        Ok(Self {
            conn,
            info,
            camera,
            media,
            control,
            _control_writer: control_writer,
            cancel,
        })
    }

    /// The next event.
    pub async fn next(&mut self) -> ViewerEvent {
        tokio::select! {
            m = self.media.recv() => match m {
                Some(m) => ViewerEvent::Media(m),
                None => ViewerEvent::Closed(self.close_reason()),
            },
            c = self.control.recv() => match c {
                Ok(m) => ViewerEvent::Control(m),
                Err(_) => match self.media.recv().await {
                    // Drain media that arrived before the close.
                    Some(m) => ViewerEvent::Media(m),
                    None => ViewerEvent::Closed(self.close_reason()),
                },
            },
        }
    }

    fn close_reason(&self) -> String {
        self.conn
            .close_reason()
            .map_or_else(|| "connection ended".into(), |r| r.to_string())
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.cancel.cancel();
        self.conn.close(codes::NORMAL, b"viewer done");
    }
}

/// Options of `kodama-server view`.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    /// Write the H.264 elementary stream here (`-` for stdout).
    pub output: Option<std::path::PathBuf>,
    /// Write the camera's audio here as Ogg Opus (`-` for stdout).
    pub audio_output: Option<std::path::PathBuf>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many video frames.
    pub frames: Option<u64>,
    /// Print statistics this often.
    pub stats_every: Duration,
}

/// Opens an output file, `-` being stdout.
fn open_output(path: &std::path::Path) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(path)?))
    })
}

/// Runs the terminal viewer until done (`duration`, `frames`) or cancelled;
/// returns video frames written. A stream the server ended first is
/// [`ViewerError::Ended`], with the reason.
pub async fn watch(
    mut client: ViewerClient,
    opts: ViewOptions,
    cancel: CancellationToken,
) -> anyhow::Result<u64> {
    let stdout_twice =
        |p: &Option<std::path::PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if stdout_twice(&opts.output) && stdout_twice(&opts.audio_output) {
        anyhow::bail!("--output and --audio-output cannot both be stdout (-)");
    }
    let mut audio_out = match &opts.audio_output {
        None => None,
        Some(path) => {
            let Some(audio) = client.info.audio else {
                client.close();
                anyhow::bail!(
                    "camera {} has no microphone: it sends no audio for --audio-output",
                    client.info.name
                );
            };
            let head = OpusHead {
                channels: audio.channels,
                pre_skip: audio.pre_skip,
                input_sample_rate: audio.sample_rate,
            };
            Some(OggOpusWriter::new(open_output(path)?, head)?)
        }
    };
    let mut out = opts.output.as_deref().map(open_output).transpose()?;
    eprintln!(
        "watching {} ({}x{} @ {} fps, {} kbit/s)",
        client.info.name,
        client.info.width,
        client.info.height,
        client.info.fps_milli / 1000,
        client.info.bitrate_kbps
    );
    let started = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut stats: [ChannelStats; Channel::ALL.len()] = Default::default();
    let mut last_print = Instant::now();
    let mut written = 0u64;
    let mut telemetry: Option<String> = None;
    let mut ended: Option<String> = None;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            e = client.next() => e,
        };
        match event {
            ViewerEvent::Media(Received::Frame(_, frame)) => {
                stats[frame.channel as usize].record(&frame, crate::stats::now_us());
                if frame.channel == Channel::Video {
                    if let Some(w) = out.as_mut() {
                        w.write_all(&frame.payload)?;
                    }
                    written += 1;
                    if opts.frames.is_some_and(|n| written >= n) {
                        break;
                    }
                } else if frame.channel == Channel::Audio {
                    if let Some(w) = audio_out.as_mut() {
                        match w.push(frame.capture_us, &frame.payload) {
                            Err(OggOpusError::Io(e)) => return Err(e.into()),
                            Err(e) => {
                                tracing::warn!("audio packet {} skipped: {e}", frame.sequence)
                            }
                            Ok(()) => {}
                        }
                    }
                } else if frame.channel == Channel::Telemetry {
                    telemetry = Some(summarise_telemetry(&frame));
                } else if frame.channel == Channel::Event {
                    eprintln!("event: {}", String::from_utf8_lossy(&frame.payload));
                }
            }
            ViewerEvent::Media(_) => {}
            ViewerEvent::Control(Message::CameraState { online, .. }) => {
                eprintln!("camera is {}", if online { "online" } else { "offline" });
            }
            ViewerEvent::Control(Message::StreamInfo { info, .. }) => {
                eprintln!(
                    "camera stream: {}x{} @ {} kbit/s",
                    info.width, info.height, info.bitrate_kbps
                );
            }
            ViewerEvent::Control(_) => {}
            ViewerEvent::Closed(reason) => {
                ended = Some(reason);
                break;
            }
        }
        if last_print.elapsed() >= opts.stats_every {
            print_stats(&mut stats, telemetry.as_deref(), last_print.elapsed());
            last_print = Instant::now();
        }
    }
    if let Some(mut w) = out {
        w.flush()?;
    }
    if let Some(w) = audio_out {
        let (packets, filled, seconds) = (
            w.packets(),
            w.filled(),
            w.duration_samples() as f64 / 48_000.0,
        );
        w.finish()?;
        eprintln!("{packets} audio packets ({seconds:.2} s, {filled} lost packets concealed) written as Ogg Opus");
    }
    print_stats(&mut stats, telemetry.as_deref(), last_print.elapsed());
    eprintln!(
        "{written} video frames in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    client.close();
    match ended {
        Some(reason) => Err(ViewerError::Ended {
            frames: written,
            reason,
        }
        .into()),
        None => Ok(written),
    }
}

fn print_stats(
    stats: &mut [ChannelStats; Channel::ALL.len()],
    telemetry: Option<&str>,
    window: Duration,
) {
    for c in Channel::ALL {
        if let Some(line) = stats[c as usize].report(window) {
            eprintln!("{:>9}: {line}", c.name());
        }
    }
    if let Some(t) = telemetry {
        eprintln!("telemetry: {t}");
    }
}

/// The fields a person wants at a glance, from whatever telemetry JSON arrived.
fn summarise_telemetry(frame: &Frame) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&frame.payload) else {
        return String::from_utf8_lossy(&frame.payload)
            .chars()
            .take(200)
            .collect();
    };
    let mut parts = Vec::new();
    let mut walk = vec![(String::new(), &v)];
    while let Some((prefix, node)) = walk.pop() {
        if let Some(map) = node.as_object() {
            for (k, child) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if child.is_object() {
                    walk.push((key, child));
                } else if !child.is_null() && !child.is_array() {
                    parts.push(format!("{key}={child}"));
                }
            }
        }
    }
    parts.sort();
    let stream = v.get("stream").filter(|s| s.is_object()).map(|s| {
        let text = |k: &str| s.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
        let num = |k: &str| s.get(k).and_then(serde_json::Value::as_u64);
        format!(
            "tier {} ({} kbit/s, estimate {}, limit {}) over {} | ",
            text("tier"),
            num("kbps").map_or("-".into(), |k| k.to_string()),
            num("estimate_kbps").map_or("-".into(), |k| format!("{k} kbit/s")),
            text("limit"),
            text("uplink"),
        )
    });
    format!("{}{}", stream.unwrap_or_default(), parts.join(" "))
}
