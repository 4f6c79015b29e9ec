//! `kodama-bench`: prints Kodama's performance figures on loopback. It
//! measures and prints; it never asserts a timing (a failure means something
//! broke, not that something was slow).
//!
//! 1. Codec throughput of `kodama-proto` (frames and control messages), each
//!    next to a plain copy of the same bytes measured in the same run.
//! 2. Raw iroh single-stream throughput between two offline endpoints on
//!    127.0.0.1: the ceiling for everything below.
//! 3. Camera → server → viewer throughput and capture-to-viewer latency for
//!    1 camera × 1 viewer and 8 cameras × 32 viewers (4 per camera).
//! 4. Server CPU seconds per GB delivered and server RSS, read from
//!    `/proc/<pid>` of a `kodama-server` child process.
//! 5. `--only failover` (root): failover gap p50/max per kind of cut, the
//!    standby uplink's idle bytes per minute, server crash → video again,
//!    in the network test bed ([`failover`]).
//! 6. `--only abr` (root): adaptive bitrate's settle time under a 1 Mbit/s
//!    cap and its climb back after the cap lifts, BBRv3 vs Cubic.
//!
//! Build the server next to the bench so it can be found (same profile):
//! `cargo build --profile bench -p kodama-server -p kodama-bench`, then
//! `cargo run --profile bench -p kodama-bench -- [--quick]`.
//!
//! # Layout
//! * [`codec`]: frame and message encode/decode vs. memcpy.
//! * [`raw`]: one uni stream between two iroh endpoints.
//! * [`pipeline`]: simulated cameras, the server, viewers; the figures.
//! * [`server`]: the server under test, as a child process or in process.
//! * [`procfs`]: CPU time and RSS from `/proc/<pid>/stat` and `status`.

mod codec;
mod failover;
mod pipeline;
mod procfs;
mod raw;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use kodama_firmware::video::VideoSettings;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Scenario, ScenarioResult, Stream};
use crate::server::Mode;

/// Sections of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Frame and message codecs.
    Codec,
    /// Raw iroh single-stream throughput.
    Raw,
    /// Camera → server → viewer, with server CPU and RSS.
    Pipeline,
    /// Wi-Fi ↔ cellular failover, standby cost, server crash recovery in
    /// the network test bed (root; not part of the default set).
    Failover,
    /// Adaptive bitrate under a rate cap in the network test bed, BBRv3
    /// and Cubic (root; not part of the default set).
    Abr,
}

/// Kodama benchmark: figures on loopback (never pass/fail on timings).
#[derive(Debug, Parser)]
#[command(name = "kodama-bench", version, about)]
struct Args {
    /// Short run (~20 s) that proves every section works, e.g. in CI.
    #[arg(long)]
    quick: bool,
    /// Measurement window of each camera → viewer scenario, seconds
    /// (default 10, 3 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Warm-up before each window, seconds (default 2, 1 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Time per codec case, seconds (default 0.5, 0.15 with --quick).
    #[arg(long)]
    codec_seconds: Option<f64>,
    /// Bytes for the raw iroh stream, MB (default 256, 64 with --quick).
    #[arg(long)]
    raw_mb: Option<u64>,
    /// Only these sections (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Camera picture width.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    /// Camera picture height.
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Camera frame rate.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Camera encoder target, kbit/s.
    #[arg(long, default_value_t = 4000)]
    bitrate_kbps: u32,
    /// Frames per GOP.
    #[arg(long, default_value_t = 30)]
    keyframe_interval: u32,
    /// Do not pad the stream to the target bitrate with H.264 filler data
    /// when the encoder undershoots it (the test pattern compresses well).
    #[arg(long)]
    no_pad: bool,
    /// The `kodama-server` binary to measure (default: next to this one).
    #[arg(long, conflicts_with = "in_process")]
    server_bin: Option<PathBuf>,
    /// Run the server inside this process (no server CPU/RSS figures).
    #[arg(long)]
    in_process: bool,
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{what} must be a non-negative number of seconds"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,iroh=error,noq=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let _ = tokio::signal::ctrl_c().await;
                cancel.cancel();
            }
        });
        run(args, cancel).await
    })
}

async fn run(args: Args, cancel: CancellationToken) -> anyhow::Result<()> {
    let q = args.quick;
    let window = secs(
        args.seconds.unwrap_or(if q { 3.0 } else { 10.0 }),
        "seconds",
    )?;
    let warmup = secs(args.warmup.unwrap_or(if q { 1.0 } else { 2.0 }), "warmup")?;
    let codec_time = secs(
        args.codec_seconds.unwrap_or(if q { 0.15 } else { 0.5 }),
        "codec-seconds",
    )?;
    let raw_bytes = args.raw_mb.unwrap_or(if q { 64 } else { 256 }).max(1) * 1_000_000;
    let wants = |s: Section| {
        // The failover section needs root and minutes: only when asked for.
        (args.only.is_empty() && !matches!(s, Section::Failover | Section::Abr))
            || args.only.contains(&s)
    };
    let started = Instant::now();

    println!(
        "kodama-bench {}: figures on 127.0.0.1, {} CPUs{}",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            " — DEBUG BUILD, figures are meaningless; use --profile bench"
        } else {
            ""
        }
    );
    println!(
        "(1 GB = 10^9 bytes, 1 Mbit = 10^6 bits; other load on the machine shows up as noise)"
    );

    if wants(Section::Codec) {
        println!();
        println!(
            "1. Codec (kodama-proto), {:.2} s per case; decoders fed {}-byte pushes; baseline = plain copy of the same bytes",
            codec_time.as_secs_f64(),
            codec::CHUNK
        );
        println!(
            "   {:<32} {:>8} {:>12} {:>14} {:>6}",
            "case", "GB/s", "items/s", "baseline GB/s", "ratio"
        );
        let results = tokio::task::spawn_blocking(move || codec::run(codec_time)).await??;
        for r in results {
            println!(
                "   {:<32} {:>8.2} {:>12} {:>14.2} {:>6.2}",
                r.name,
                r.bytes_per_sec / 1e9,
                si(r.items_per_sec),
                r.baseline_bytes_per_sec / 1e9,
                r.ratio()
            );
        }
    }

    let mut ceiling_bps = None;
    if wants(Section::Raw) {
        println!();
        println!("2. Raw iroh, one unidirectional stream, two offline endpoints on 127.0.0.1 (the ceiling)");
        let r = raw::run(raw_bytes, cancel.clone()).await?;
        println!(
            "   {:.0} MB in {:.2} s = {:.0} Mbit/s",
            r.bytes as f64 / 1e6,
            r.elapsed.as_secs_f64(),
            r.mbit_per_sec()
        );
        ceiling_bps = Some(r.mbit_per_sec() * 1e6);
    }

    if wants(Section::Pipeline) {
        println!();
        let mode = server_mode(&args)?;
        let settings = VideoSettings {
            width: args.width,
            height: args.height,
            fps: args.fps,
            bitrate_kbps: args.bitrate_kbps,
            keyframe_interval: args.keyframe_interval,
        };
        settings.validate()?;
        // Two GOPs at least, so the loop is not one keyframe repeated.
        let prerender_secs = (2 * settings.keyframe_interval)
            .div_ceil(settings.fps)
            .max(if q { 1 } else { 4 });
        let t = Instant::now();
        let pad = !args.no_pad;
        let stream =
            tokio::task::spawn_blocking(move || Stream::prerender(settings, prerender_secs, pad))
                .await??;
        println!(
            "3. Camera → server → viewer: {}x{} @ {} fps, GOP {} frames, OpenH264 target {} kbit/s; its {} s replay loop (encoded in {:.1} s) averages {:.0} kbit/s",
            stream.format.width,
            stream.format.height,
            stream.format.fps,
            stream.gop_frames,
            stream.target_kbps,
            prerender_secs,
            t.elapsed().as_secs_f64(),
            stream.encoded_bps / 1000.0,
        );
        if stream.pad_factor > 1.0 {
            println!(
                "   OpenH264 cannot reach the target on this simple pattern: each access unit is padded ×{:.2} with an \
                 H.264 filler-data NAL unit (type 12) to {:.0} kbit/s per camera (--no-pad to send the raw rate)",
                stream.pad_factor,
                stream.bitrate_bps / 1000.0
            );
        } else if stream.bitrate_bps < 0.9 * f64::from(stream.target_kbps) * 1000.0 {
            println!(
                "   note: the stream is below its {} kbit/s target; figures use the actual rate",
                stream.target_kbps
            );
        }
        match &mode {
            Mode::Child(bin) => println!("   server: {} as a child process", bin.display()),
            Mode::InProcess => println!("   server: in this process (no server CPU/RSS figures)"),
        }
        let scenarios = [
            Scenario {
                name: "1 camera × 1 viewer".into(),
                cameras: 1,
                viewers_per_camera: 1,
                warmup,
                measure: window,
            },
            Scenario {
                name: "8 cameras × 32 viewers (4 per camera)".into(),
                cameras: 8,
                viewers_per_camera: 4,
                warmup,
                measure: window,
            },
        ];
        for s in &scenarios {
            if cancel.is_cancelled() {
                bail!("interrupted");
            }
            let r = pipeline::run(s, &stream, &mode, cancel.clone())
                .await
                .with_context(|| format!("scenario {}", s.name))?;
            print_scenario(&r, ceiling_bps);
        }
    }
    if wants(Section::Failover) {
        println!();
        let plan = failover::Plan {
            cuts: if q { 3 } else { 10 },
            idle_window: Duration::from_secs(if q { 20 } else { 60 }),
            restarts: if q { 3 } else { 5 },
        };
        tokio::task::spawn_blocking(move || failover::run(plan))
            .await
            .context("failover section")??;
    }
    if wants(Section::Abr) {
        println!();
        let rounds = if q { 1 } else { 3 };
        tokio::task::spawn_blocking(move || failover::run_abr(rounds))
            .await
            .context("abr section")??;
    }
    println!();
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn server_mode(args: &Args) -> anyhow::Result<Mode> {
    if args.in_process {
        return Ok(Mode::InProcess);
    }
    if let Some(bin) = &args.server_bin {
        if !bin.is_file() {
            bail!("--server-bin {}: no such file", bin.display());
        }
        return Ok(Mode::Child(bin.clone()));
    }
    Ok(match server::sibling_binary() {
        Some(bin) => Mode::Child(bin),
        None => {
            eprintln!(
                "warning: no kodama-server next to this binary; running the server in process, so there are no \
                 server CPU/RSS figures. Build both: cargo build --profile bench -p kodama-server -p kodama-bench"
            );
            Mode::InProcess
        }
    })
}

/// 1234567.0 → "1.23 M".
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2} G", v / 1e9),
        v if v >= 1e6 => format!("{:.2} M", v / 1e6),
        v if v >= 1e3 => format!("{:.2} k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn print_scenario(r: &ScenarioResult, ceiling_bps: Option<f64>) {
    let s = &r.scenario;
    let mbit = |bps: f64| bps / 1e6;
    println!();
    println!(
        "   -- {}: {} viewers connected, {:.1} s window after {:.1} s warm-up",
        s.name,
        r.viewers,
        r.window.as_secs_f64(),
        s.warmup.as_secs_f64()
    );
    println!(
        "      offered      {:8.1} Mbit/s into the server ({} × camera), {:.1} Mbit/s to viewers",
        mbit(r.ingest_offered_bps),
        s.cameras,
        mbit(r.offered_bps)
    );
    let ceiling = ceiling_bps.map_or_else(
        || "raw ceiling not measured".to_owned(),
        |c| {
            format!(
                "{:.3} of the raw iroh single-stream ceiling",
                r.delivered_bps() / c
            )
        },
    );
    println!(
        "      delivered    {:8.1} Mbit/s to viewers ({:.1} % of offered; {ceiling})",
        mbit(r.delivered_bps()),
        100.0 * r.delivered_bps() / r.offered_bps.max(1.0),
    );
    println!(
        "      frames       {} received of {} expected; {} dropped (sequence gaps seen by viewers)",
        r.frames_received, r.frames_expected, r.frames_dropped
    );
    match r.latency {
        Some(l) => println!(
            "      latency      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (capture → viewer, {} frames)",
            l.p50_ms, l.p99_ms, l.max_ms, l.samples
        ),
        None => println!("      latency      no frames received"),
    }
    match (r.server_cpu, r.server_memory) {
        (Some(cpu), Some(mem)) => {
            let per_gb = r
                .cpu_secs_per_gb()
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"));
            println!(
                "      server       {:.2} CPU s in the window = {per_gb} CPU s per GB delivered; RSS {:.1} MiB (peak {:.1} MiB)",
                cpu.as_secs_f64(),
                mem.rss_kib as f64 / 1024.0,
                mem.hwm_kib as f64 / 1024.0
            );
        }
        _ => println!("      server       in process: CPU and RSS not separable"),
    }
    println!(
        "      bench        {:.2} CPU s in the window (cameras' uplinks, viewers{})",
        r.bench_cpu.as_secs_f64(),
        if r.server_cpu.is_none() {
            ", server"
        } else {
            ""
        }
    );
    if !r.closed_early.is_empty() {
        println!(
            "      warning      {} viewers disconnected early: {:?}",
            r.closed_early.len(),
            r.closed_early
        );
    }
}
