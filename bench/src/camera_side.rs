//! The camera's cost: one camera child process streaming a replayed loop
//! (1080p30 by default) for a window, measuring its own CPU and memory,
//! once with the firmware's capture thread and uplink to a real
//! `kodama-server`, once with the same capture thread and a plain iroh
//! stream per GOP to the raw relay. Both send the same bytes at the same
//! pace; the ratio of their CPU per GB sent is what the firmware's uplink
//! (framing, send policy, control stream, telemetry plumbing) costs over
//! iroh itself.
//!
//! With `--camera-compare OTHER`, each of the two also runs from OTHER (the
//! same bench built differently, e.g. at the camera profile's opt-level)
//! right after this build's, against the same server or relay: the CPU cost
//! of a build setting, measured in one run.

use std::time::Duration;

use anyhow::Context;
use kodama_net::EndpointAddr;
use kodama_server::allowlist::{Allowlist, PeerRole};
use tokio_util::sync::CancellationToken;

use crate::node::{write_frames, CameraKind, ChildNode};
use crate::pipeline::Stream;
use crate::server::{Mode, Running};
use kodama_firmware::telemetry::procfs::Memory;

/// What one camera child measured.
#[derive(Debug, Clone, Copy)]
pub struct CameraCost {
    /// CPU (user + system) in the window.
    pub cpu: Duration,
    /// Access-unit bytes handed to the sender in the window.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
    /// Memory at the end of the window.
    pub memory: Memory,
}

impl CameraCost {
    /// CPU seconds per 10^9 bytes sent.
    pub fn cpu_secs_per_gb(&self) -> Option<f64> {
        (self.bytes > 0).then(|| self.cpu.as_secs_f64() / (self.bytes as f64 / 1e9))
    }

    fn parse(line: &str) -> anyhow::Result<Self> {
        let field = |key: &str| -> anyhow::Result<u64> {
            line.split_ascii_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("camera result lacks {key}: {line}"))
        };
        Ok(Self {
            cpu: kodama_firmware::telemetry::procfs::ticks_to_duration(field("cpu_ticks")?),
            bytes: field("bytes")?,
            window: Duration::from_micros(field("window_us")?),
            memory: Memory {
                rss_kib: field("rss_kib")?,
                hwm_kib: field("hwm_kib")?,
            },
        })
    }
}

/// What one run of the camera section measured.
#[derive(Debug, Clone, Copy)]
pub struct CameraRun {
    /// The firmware's capture thread and uplink → `kodama-server`.
    pub firmware: CameraCost,
    /// The same capture thread and a plain iroh sender → the raw relay.
    pub raw: CameraCost,
    /// Both again from the `--camera-compare` build, if one was given.
    pub compared: Option<(CameraCost, CameraCost)>,
}

/// Firmware camera → server, then raw camera → relay; each once from this
/// executable and, with `compare`, once from that one.
pub async fn run(
    stream: &Stream,
    mode: &Mode,
    warmup: Duration,
    window: Duration,
    compare: Option<&std::path::Path>,
    cancel: CancellationToken,
) -> anyhow::Result<CameraRun> {
    let this = std::env::current_exe().context("locating kodama-bench")?;
    let dir = tempfile::tempdir().context("temporary dir")?;
    let frames = dir.path().join("loop.bin");
    write_frames(&frames, &stream.frames)?;
    let key = dir.path().join("camera.key");
    let camera_id = kodama_net::endpoint::load_or_create_key(&key)?.public();

    let data_dir = dir.path().join("server");
    std::fs::create_dir_all(&data_dir)?;
    Allowlist::new(data_dir.join("allowlist.toml")).add(
        &camera_id.to_string(),
        PeerRole::Camera,
        "bench camera",
    )?;
    let scope = cancel.child_token();
    let (server, server_addr) = Running::start(mode, &data_dir, None, scope.child_token()).await?;
    let measure = &|kind, peer, exe| one(exe, kind, peer, &key, &frames, stream, warmup, window);
    // This build's camera, then (with --camera-compare) the other build's,
    // against the same peer.
    let this = this.as_path();
    let here_and_there = |kind, peer, what: &'static str| async move {
        let here = measure(kind, peer, this)
            .await
            .with_context(|| format!("{what} camera"))?;
        let there = match compare {
            Some(exe) => Some(
                measure(kind, peer, exe)
                    .await
                    .with_context(|| format!("{what} camera from {}", exe.display()))?,
            ),
            None => None,
        };
        anyhow::Ok((here, there))
    };
    let firmware = here_and_there(CameraKind::Firmware, &server_addr, "firmware").await;
    scope.cancel();
    server.stop().await;
    let (firmware, firmware_compared) = firmware?;

    let (relay, relay_addr) = ChildNode::relay().await?;
    let raw = here_and_there(CameraKind::Raw, &relay_addr, "raw").await;
    relay.stop().await;
    let (raw, raw_compared) = raw?;
    Ok(CameraRun {
        firmware,
        raw,
        compared: firmware_compared.zip(raw_compared),
    })
}

#[allow(clippy::too_many_arguments)]
async fn one(
    exe: &std::path::Path,
    kind: CameraKind,
    peer: &EndpointAddr,
    key: &std::path::Path,
    frames: &std::path::Path,
    stream: &Stream,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<CameraCost> {
    let addr = peer
        .ip_addrs()
        .next()
        .copied()
        .context("the peer has no address")?;
    let f = stream.format;
    let mut args: Vec<String> = vec!["camera".into(), "--kind".into()];
    args.push(match kind {
        CameraKind::Firmware => "firmware".into(),
        CameraKind::Raw => "raw".into(),
    });
    for (k, v) in [
        ("--peer-id", peer.id.to_string()),
        ("--peer-addr", addr.to_string()),
        ("--key", key.display().to_string()),
        ("--frames", frames.display().to_string()),
        ("--width", f.width.to_string()),
        ("--height", f.height.to_string()),
        ("--fps", f.fps.to_string()),
        ("--gop", stream.gop_frames.to_string()),
        ("--kbps", stream.target_kbps.to_string()),
        ("--warmup-ms", warmup.as_millis().to_string()),
        ("--window-ms", window.as_millis().to_string()),
    ] {
        args.push(k.into());
        args.push(v);
    }
    let mut child = ChildNode::start_exe(exe, &args)?;
    let result = async {
        child.line("camera-ready", Duration::from_secs(30)).await?;
        let line = child
            .line("result ", warmup + window + Duration::from_secs(30))
            .await?;
        CameraCost::parse(&line)
    }
    .await;
    child.stop().await;
    result
}
