//! Child processes of the bench, so each one's CPU time and memory can be
//! read from `/proc/<pid>` apart from the load generators': the raw relay
//! ([`crate::rawnet`]) and a single camera (the firmware's capture thread
//! and uplink, or the raw iroh sender next to it, see [`crate::camera_side`]).
//!
//! They are this same executable run as `kodama-bench __node <role> …`
//! (hidden from `--help`). A child prints one line naming its address when
//! it is ready, and a camera child a `result` line when it has measured
//! itself; it stops on SIGTERM or when its stdin closes, so it never
//! outlives the bench.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use kodama_firmware::uplink::LinkState;
use kodama_firmware::video::{EncodedFrame, VideoError, VideoFormat, VideoSettings, VideoSource};
use kodama_net::EndpointAddr;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{self, Paced, Stream};
use kodama_firmware::telemetry::procfs;

/// The first argument that makes this executable a child node.
pub const NODE_ARG: &str = "__node";

/// How long a child may take to print its ready line.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// How long a child may take to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// `kodama-bench __node …`.
#[derive(Debug, Parser)]
#[command(name = "kodama-bench __node")]
pub struct NodeArgs {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The raw iroh relay.
    RawRelay,
    /// One camera streaming a replay file, measuring itself.
    Camera(CameraArgs),
}

/// What a camera child sends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CameraKind {
    /// The firmware's capture thread and uplink, to a `kodama-server`.
    Firmware,
    /// The capture thread and a plain iroh stream per GOP, to the raw relay.
    Raw,
}

#[derive(Debug, clap::Args)]
struct CameraArgs {
    #[arg(long, value_enum)]
    kind: CameraKind,
    /// The peer's endpoint id.
    #[arg(long)]
    peer_id: String,
    /// The peer's UDP address.
    #[arg(long)]
    peer_addr: std::net::SocketAddr,
    /// The camera's secret key file (firmware: on the server's allowlist).
    #[arg(long)]
    key: PathBuf,
    /// The replay loop ([`write_frames`]).
    #[arg(long)]
    frames: PathBuf,
    #[arg(long)]
    width: u32,
    #[arg(long)]
    height: u32,
    #[arg(long)]
    fps: u32,
    #[arg(long)]
    gop: u32,
    #[arg(long)]
    kbps: u32,
    #[arg(long)]
    warmup_ms: u64,
    #[arg(long)]
    window_ms: u64,
}

/// Runs a child node to its end.
pub fn main(args: NodeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        // Stop on SIGTERM or when the parent goes away (stdin closes).
        tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                let mut stdin = tokio::io::stdin();
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = term.recv() => {}
                    _ = async { while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
                }
                cancel.cancel();
            }
        });
        match args.role {
            Role::RawRelay => crate::rawnet::serve_relay(cancel).await,
            Role::Camera(a) => camera(a, cancel).await,
        }
    })
}

/// Counts the bytes a source hands out.
struct Counted {
    inner: Paced,
    bytes: Arc<AtomicU64>,
}

impl VideoSource for Counted {
    fn format(&self) -> VideoFormat {
        self.inner.format()
    }
    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError> {
        let f = self.inner.next_frame()?;
        self.bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
        Ok(f)
    }
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        self.inner.set_bitrate(kbps)
    }
    fn request_keyframe(&mut self) {
        self.inner.request_keyframe();
    }
}

async fn camera(a: CameraArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let settings = VideoSettings {
        width: a.width,
        height: a.height,
        fps: a.fps,
        bitrate_kbps: a.kbps,
        keyframe_interval: a.gop,
    };
    let format = VideoFormat {
        width: a.width,
        height: a.height,
        fps: a.fps,
    };
    let stream = Stream::from_frames(read_frames(&a.frames)?, format, settings, 0.0, 1.0)?;
    let peer = EndpointAddr::new(kodama_net::endpoint::parse_endpoint_id(&a.peer_id)?)
        .with_ip_addr(a.peer_addr);
    let secret = kodama_net::endpoint::load_or_create_key(&a.key)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let source = Box::new(Counted {
        inner: stream.paced(),
        bytes: bytes.clone(),
    });
    let scope = cancel.child_token();
    let (running, ep) = match a.kind {
        CameraKind::Firmware => {
            let mut cam = pipeline::start_camera(
                secret,
                "bench-cam-0".into(),
                source,
                &stream,
                peer,
                scope.clone(),
            )
            .await?;
            tokio::time::timeout(
                READY_LIMIT,
                cam.state.wait_for(|s| *s == LinkState::Streaming),
            )
            .await
            .map_err(|_| anyhow!("the camera did not start streaming"))??;
            let ep = cam.endpoint.clone();
            let stopping = scope.clone();
            let task = tokio::spawn(async move {
                stopping.cancelled().await;
                cam.stop().await;
                anyhow::Ok(())
            });
            (task, ep)
        }
        CameraKind::Raw => {
            let ep = crate::rawnet::bind_key(secret).await?;
            let task = tokio::spawn(crate::rawnet::raw_camera(
                ep.clone(),
                peer,
                0,
                source,
                Arc::new(AtomicU64::new(0)),
                scope.clone(),
            ));
            (task, ep)
        }
    };
    println!("camera-ready");
    tokio::time::sleep(Duration::from_millis(a.warmup_ms)).await;
    let before = procfs::sample(None)?;
    let b0 = bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(a.window_ms)) => {}
        _ = cancel.cancelled() => bail!("stopped before the window ended"),
    }
    let window = started.elapsed();
    let after = procfs::sample(None)?;
    let b1 = bytes.load(Ordering::Relaxed);
    println!(
        "result cpu_ticks={} bytes={} window_us={} rss_kib={} hwm_kib={}",
        after.cpu.total().saturating_sub(before.cpu.total()),
        b1 - b0,
        window.as_micros(),
        after.memory.rss_kib,
        after.memory.hwm_kib
    );
    scope.cancel();
    let _ = tokio::time::timeout(STOP_LIMIT, running).await;
    let _ = tokio::time::timeout(STOP_LIMIT, ep.close()).await;
    Ok(())
}

/// Writes a replay loop as `[keyframe u8][length u32 LE][access unit]`…
pub fn write_frames(path: &Path, frames: &[EncodedFrame]) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    for f in frames {
        out.put_u8(u8::from(f.keyframe));
        out.put_u32_le(u32::try_from(f.data.len()).context("access unit over 4 GiB")?);
        out.put_slice(&f.data);
    }
    std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))
}

/// Reads what [`write_frames`] wrote.
pub fn read_frames(path: &Path) -> anyhow::Result<Vec<EncodedFrame>> {
    let mut data =
        Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let mut frames = Vec::new();
    while data.has_remaining() {
        if data.remaining() < 5 {
            bail!("{}: truncated frame header", path.display());
        }
        let keyframe = data.get_u8() != 0;
        let len = data.get_u32_le() as usize;
        if data.remaining() < len {
            bail!("{}: truncated access unit", path.display());
        }
        frames.push(EncodedFrame {
            data: data.split_to(len),
            keyframe,
            capture_us: 0,
        });
    }
    Ok(frames)
}

/// A running child node.
#[derive(Debug)]
pub struct ChildNode {
    child: Child,
    /// Its process id.
    pub pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildNode {
    /// Starts `kodama-bench __node <args>`.
    pub fn start(args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating kodama-bench")?;
        Self::start_exe(&exe, args)
    }

    /// Starts `<exe> __node <args>`: `exe` is this kodama-bench or another
    /// build of it (`--camera-compare`).
    pub fn start_exe(exe: &std::path::Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .arg(NODE_ARG)
            .args(args)
            .env("RUST_LOG", "warn,iroh=error,noq=error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a bench child process")?;
        let pid = child.id().context("the child exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        Ok(Self {
            child,
            pid,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next stdout line starting with `prefix`, within `limit`.
    pub async fn line(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let found = tokio::time::timeout(limit, async {
            while let Some(line) = self.lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(Some(rest.trim().to_owned()));
                }
            }
            std::io::Result::Ok(None)
        })
        .await;
        match found {
            Ok(Ok(Some(rest))) => Ok(rest),
            Ok(Ok(None)) => bail!("child exited before printing '{prefix}'"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => bail!("child did not print '{prefix}' within {limit:?}"),
        }
    }

    /// Starts the raw relay and reads its address.
    pub async fn relay() -> anyhow::Result<(Self, EndpointAddr)> {
        let mut node = Self::start(&["raw-relay".to_owned()])?;
        let rest = node.line("raw-relay ", READY_LIMIT).await?;
        let (id, addr) = rest
            .split_once(' ')
            .context("raw-relay line lacks an address")?;
        let addr = EndpointAddr::new(kodama_net::endpoint::parse_endpoint_id(id)?)
            .with_ip_addr(addr.parse().context("raw-relay address")?);
        Ok((node, addr))
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    pub async fn stop(mut self) {
        if let Ok(raw) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_LIMIT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("bench child {} ignored SIGTERM; killing it", self.pid);
            let _ = self.child.kill().await;
        }
    }
}
