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
//! * `kodama_firmware::telemetry::procfs`: CPU time and RSS from `/proc/<pid>/stat` and
//!   `status` (the camera reports its own with the same parsers).

mod camera_side;
mod codec;
mod failover;
mod node;
mod pipeline;
mod raw;
mod rawnet;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use kodama_firmware::telemetry::procfs;
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
    /// Camera → server → viewer fan-out topologies, each beside the raw
    /// iroh relay carrying the same connections, streams and bytes.
    Pipeline,
    /// N cameras × 0 viewers with recording on, N doubling until the
    /// server uses one core; beside the raw relay.
    Ingest,
    /// One camera process (1080p30 replay): firmware uplink vs. raw iroh sender.
    Camera,
    /// Forwarding to an upstream server: the origin's CPU per forwarded GB
    /// against raw iroh, the delay it adds before an upstream viewer, and
    /// how fast it fills the upstream's copy after an outage.
    Relay,
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
    /// Fan-out topologies, CAMERASxVIEWERS (viewers in total, split evenly).
    #[arg(long, value_delimiter = ',', default_value = "1x1,1x8,1x32,1x128,8x32")]
    topology: Vec<Topology>,
    /// Measure each topology (server, then raw relay) this many times.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Most cameras the ingest section tries.
    #[arg(long, default_value_t = 32)]
    ingest_max: usize,
    /// The camera section's picture: WIDTHxHEIGHT.
    #[arg(long, default_value = "1920x1080")]
    camera_size: Topology,
    /// The camera section's bitrate, kbit/s.
    #[arg(long, default_value_t = 6000)]
    camera_kbps: u32,
    /// Another kodama-bench build whose camera children the camera section
    /// also runs, in the same run, printing their CPU against this build's
    /// (e.g. one built at the camera profile's opt-level, docs/bench.md).
    #[arg(long)]
    camera_compare: Option<PathBuf>,
    /// The forwarding section's upstream outage, seconds (default 30, 5
    /// with --quick; 0: none).
    #[arg(long)]
    outage_seconds: Option<f64>,
}

/// `AxB`: cameras × viewers, or width × height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Topology(u32, u32);

impl std::str::FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once(['x', 'X', '×'])
            .ok_or_else(|| format!("'{s}': expected AxB, e.g. 1x32"))?;
        let num = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("'{s}': {e}"));
        Ok(Topology(num(a)?, num(b)?))
    }
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{what} must be a non-negative number of seconds"))
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(node::NODE_ARG) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,iroh=error,noq=error".into()),
            )
            .with_writer(std::io::stderr)
            .init();
        return node::main(node::NodeArgs::parse_from(std::env::args().skip(1)));
    }
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
    let mut raw_cpu_per_gb: Option<f64> = None;
    if wants(Section::Raw) {
        println!();
        println!("2. Raw iroh, one unidirectional stream, two offline endpoints on 127.0.0.1 (the ceiling)");
        let cpu_before = procfs::cpu(None)?;
        let r = raw::run(raw_bytes, cancel.clone()).await?;
        let cpu = procfs::ticks_to_duration(
            procfs::cpu(None)?
                .total()
                .saturating_sub(cpu_before.total()),
        );
        raw_cpu_per_gb = Some(cpu.as_secs_f64() / (r.bytes as f64 / 1e9));
        println!(
            "   CPU {:.2} s for sender and receiver together = {:.2} CPU s per GB",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / (r.bytes as f64 / 1e9)
        );
        println!(
            "   {:.0} MB in {:.2} s = {:.0} Mbit/s",
            r.bytes as f64 / 1e6,
            r.elapsed.as_secs_f64(),
            r.mbit_per_sec()
        );
        ceiling_bps = Some(r.mbit_per_sec() * 1e6);
    }

    let mut stream_cache = None;
    if wants(Section::Relay) {
        let settings = VideoSettings {
            width: args.width,
            height: args.height,
            fps: args.fps,
            bitrate_kbps: args.bitrate_kbps,
            keyframe_interval: args.keyframe_interval,
        };
        settings.validate()?;
        let prerender_secs = (2 * settings.keyframe_interval)
            .div_ceil(settings.fps)
            .max(if q { 1 } else { 4 });
        let t = Instant::now();
        let pad = !args.no_pad;
        let stream =
            tokio::task::spawn_blocking(move || Stream::prerender(settings, prerender_secs, pad))
                .await??;
        stream_cache = Some((stream, prerender_secs, t.elapsed()));
    }
    let mut direct_latency = None;
    if wants(Section::Pipeline) {
        println!();
        let mode = server_mode(&args)?;
        println!(
            "3. Camera → server → viewer fan-out, each topology beside the raw iroh relay (same connections, streams per GOP, bytes)"
        );
        let stream = prerender(&args, q, None).await?;
        match &mode {
            Mode::Child(bin) => println!("   server: {} as a child process", bin.display()),
            Mode::InProcess => println!("   server: in this process (no server CPU/RSS figures)"),
        }
        let mut summary = Vec::new();
        for t in &args.topology {
            let (cameras, viewers) = (t.0 as usize, t.1 as usize);
            if cameras == 0 || viewers % cameras != 0 {
                bail!(
                    "--topology {}x{}: viewers must be a multiple of cameras (and cameras > 0)",
                    t.0,
                    t.1
                );
            }
            let s = Scenario {
                name: format!(
                    "{cameras} camera{} × {viewers} viewers{}",
                    if cameras == 1 { "" } else { "s" },
                    if cameras > 1 {
                        format!(" ({} per camera)", viewers / cameras)
                    } else {
                        String::new()
                    }
                ),
                cameras,
                viewers_per_camera: viewers / cameras,
                warmup,
                measure: window,
                relay: false,
                upstream_outage: None,
            };
            for round in 1..=args.repeat.max(1) {
                if cancel.is_cancelled() {
                    bail!("interrupted");
                }
                let r = pipeline::run(&s, &stream, &mode, cancel.clone())
                    .await
                    .with_context(|| format!("scenario {}", s.name))?;
                if s.cameras == 1 && s.viewers_per_camera == 1 {
                    direct_latency = r.latency;
                }
                print_scenario(&r, ceiling_bps);
                let raw = rawnet::run(
                    cameras,
                    viewers / cameras,
                    &stream,
                    warmup,
                    window,
                    cancel.clone(),
                )
                .await
                .with_context(|| format!("raw relay, {}", s.name))?;
                let ratio = print_raw(&raw, r.offered_bps, r.cpu_secs_per_gb());
                summary.push((
                    format!("{}x{} #{round}", t.0, t.1),
                    r.cpu_secs_per_gb(),
                    raw.cpu_secs_per_gb(),
                    ratio,
                ));
            }
        }
        print_summary("fan-out: CPU s per GB delivered to viewers", &summary);
    }

    if wants(Section::Ingest) {
        println!();
        let mode = server_mode(&args)?;
        let ingest_max = if q {
            args.ingest_max.min(2)
        } else {
            args.ingest_max
        };
        println!(
            "4. Ingest with recording on: N cameras × 0 viewers, N doubling up to {ingest_max} or until the server uses one core"
        );
        let stream = prerender(&args, q, None).await?;
        let mut summary = Vec::new();
        let mut n = 1;
        while n <= ingest_max.max(1) {
            if cancel.is_cancelled() {
                bail!("interrupted");
            }
            let s = Scenario {
                name: format!(
                    "{n} camera{} × 0 viewers, recording",
                    if n == 1 { "" } else { "s" }
                ),
                cameras: n,
                viewers_per_camera: 0,
                warmup,
                measure: window,
                relay: false,
                upstream_outage: None,
            };
            let r = pipeline::run(&s, &stream, &mode, cancel.clone())
                .await
                .with_context(|| format!("scenario {}", s.name))?;
            let raw = rawnet::run(n, 0, &stream, warmup, window, cancel.clone())
                .await
                .with_context(|| format!("raw relay, {}", s.name))?;
            let ingest_gb = r.ingest_offered_bps * r.window.as_secs_f64() / 8e9;
            let Some(cpu) = r.server_cpu else {
                println!("   {:>3} cameras: server in process, no CPU figure", n);
                break;
            };
            let cores = cpu.as_secs_f64() / r.window.as_secs_f64();
            let per_gb = (ingest_gb > 0.0).then(|| cpu.as_secs_f64() / ingest_gb);
            let raw_per_gb = raw.cpu_secs_per_gb();
            let ratio = per_gb.zip(raw_per_gb).map(|(a, b)| a / b);
            println!(
                "   {:>3} cameras: server {:.2} cores = {} cameras recorded per core; {} CPU s/GB ingested; raw relay {} CPU s/GB; ratio {}; server RSS {:.1} MiB",
                n,
                cores,
                if cores > 0.0 { format!("{:.0}", n as f64 / cores) } else { "n/a".into() },
                opt(per_gb, 2),
                opt(raw_per_gb, 2),
                opt(ratio, 2),
                r.server_memory.map_or(0.0, |m| m.rss_kib as f64 / 1024.0),
            );
            summary.push((format!("{n}x0"), per_gb, raw_per_gb, ratio));
            if cores >= 0.9 {
                println!("   the server uses a core at {n} cameras: stopping");
                break;
            }
            n *= 2;
        }
        print_summary(
            "ingest: CPU s per GB ingested (server records; raw relay only reads)",
            &summary,
        );
    }

    if wants(Section::Camera) {
        println!();
        let mode = server_mode(&args)?;
        let size = args.camera_size;
        println!(
            "5. Camera process: firmware capture + uplink → kodama-server, then the same capture + a raw iroh sender → raw relay"
        );
        let stream = prerender(&args, q, Some((size.0, size.1, args.camera_kbps))).await?;
        for round in 1..=args.repeat.max(1) {
            let run = camera_side::run(
                &stream,
                &mode,
                warmup,
                window,
                args.camera_compare.as_deref(),
                cancel.clone(),
            )
            .await?;
            let per_gb_ratio = |a: camera_side::CameraCost, b: camera_side::CameraCost| {
                a.cpu_secs_per_gb()
                    .zip(b.cpu_secs_per_gb())
                    .map(|(a, b)| a / b)
            };
            let fps = f64::from(stream.format.fps.max(1));
            let mut lines = vec![("firmware", run.firmware), ("raw", run.raw)];
            if let Some((fw, raw)) = run.compared {
                lines.extend([("firmware'", fw), ("raw'", raw)]);
            }
            for (name, c) in lines {
                println!(
                    "   #{round} {name:<9} {:.2} CPU s for {:.1} MB in {:.1} s = {} CPU s per GB sent, {:.2} CPU ms per frame; RSS {:.1} MiB (peak {:.1} MiB)",
                    c.cpu.as_secs_f64(),
                    c.bytes as f64 / 1e6,
                    c.window.as_secs_f64(),
                    opt(c.cpu_secs_per_gb(), 2),
                    c.cpu.as_secs_f64() * 1e3 / (c.window.as_secs_f64() * fps).max(1.0),
                    c.memory.rss_kib as f64 / 1024.0,
                    c.memory.hwm_kib as f64 / 1024.0
                );
            }
            println!(
                "   #{round} ratio     firmware ÷ raw = {}",
                opt(per_gb_ratio(run.firmware, run.raw), 2)
            );
            if let (Some((fw, raw)), Some(other)) = (run.compared, &args.camera_compare) {
                println!(
                    "   #{round} ratio     ' = {}: firmware' ÷ firmware = {}, raw' ÷ raw = {} (CPU per GB sent = per frame)",
                    other.display(),
                    opt(per_gb_ratio(fw, run.firmware), 3),
                    opt(per_gb_ratio(raw, run.raw), 3)
                );
            }
        }
    }
    if wants(Section::Relay) {
        println!();
        let mode = server_mode(&args)?;
        let Some((stream, _, _)) = &stream_cache else {
            bail!("no stream");
        };
        println!(
            "6. Forwarding to an upstream server ([[upstream]], relay ALPN), one {:.0} kbit/s camera; the upstream runs in this process",
            stream.bitrate_bps / 1000.0
        );
        let outage = secs(
            args.outage_seconds.unwrap_or(if q { 5.0 } else { 30.0 }),
            "outage-seconds",
        )?;
        let scenario = |name: &str, viewers, relay| Scenario {
            name: name.into(),
            cameras: 1,
            viewers_per_camera: viewers,
            warmup,
            measure: window,
            relay,
            upstream_outage: None,
        };
        let mut plan = vec![
            scenario("recording only (no viewer, no upstream)", 0, false),
            Scenario {
                // After its window: the upstream's outage and the backfill.
                upstream_outage: (!outage.is_zero()).then_some(outage),
                ..scenario(
                    "recording and forwarding, 1 viewer at the upstream",
                    1,
                    true,
                )
            },
        ];
        if direct_latency.is_none() {
            plan.push(scenario(
                "1 viewer at the server itself (latency baseline)",
                1,
                false,
            ));
        }
        let mut results = Vec::new();
        for s in &plan {
            if cancel.is_cancelled() {
                bail!("interrupted");
            }
            let r = pipeline::run(s, stream, &mode, cancel.clone())
                .await
                .with_context(|| format!("scenario {}", s.name))?;
            print_scenario(&r, ceiling_bps);
            results.push(r);
        }
        if let Some(r) = results.get(2) {
            direct_latency = r.latency;
        }
        let (alone, forwarding) = (&results[0], &results[1]);
        if let (Some(a), Some(f)) = (alone.server_cpu, forwarding.server_cpu) {
            let forwarded_gb =
                forwarding.ingest_offered_bps / 8.0 * forwarding.window.as_secs_f64() / 1e9;
            let extra = f.as_secs_f64()
                - a.as_secs_f64() * forwarding.window.as_secs_f64()
                    / alone.window.as_secs_f64().max(1e-9);
            let per_gb = extra / forwarded_gb.max(1e-12);
            println!(
                "   forwarding cost at the origin: {:.2} CPU s over the window = {:.1} CPU s per forwarded GB{}",
                extra,
                per_gb,
                raw_cpu_per_gb.map_or_else(String::new, |raw| format!(
                    " = {:.2} × raw iroh (sender and receiver together, {:.1} CPU s per GB)",
                    per_gb / raw.max(1e-12),
                    raw
                ))
            );
        } else {
            println!("   forwarding cost: in process, not separable (build kodama-server next to kodama-bench)");
        }
        match (direct_latency, forwarding.latency) {
            (Some(d), Some(f)) => println!(
                "   delay added by the hop: p50 {:+.1} ms, p99 {:+.1} ms (camera → upstream viewer {:.1} / {:.1} ms vs camera → server viewer {:.1} / {:.1} ms)",
                f.p50_ms - d.p50_ms,
                f.p99_ms - d.p99_ms,
                f.p50_ms,
                f.p99_ms,
                d.p50_ms,
                d.p99_ms
            ),
            _ => println!("   delay added: no latency samples"),
        }
        match &forwarding.outage {
            Some(Ok(o)) => println!(
                "   backfill after a {:.0} s upstream outage ({} frames, {:.1} MB filmed meanwhile): the upstream's copy complete {:.1} s after it came back = {:.1} MB/s, {:.1} × real time (reconnect and the upstream's index commits included)",
                o.outage.as_secs_f64(),
                o.frames_missed,
                o.bytes_missed as f64 / 1e6,
                o.filled_in.as_secs_f64(),
                o.bytes_missed as f64 / 1e6 / o.filled_in.as_secs_f64().max(1e-9),
                o.outage.as_secs_f64() / o.filled_in.as_secs_f64().max(1e-9)
            ),
            Some(Err(e)) => println!("   backfill after an upstream outage: FAILED: {e}"),
            None => {}
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

/// Encodes the replay loop once: the main settings, or `size` (width,
/// height, kbit/s) for the camera section. Prints what it made.
async fn prerender(
    args: &Args,
    quick: bool,
    size: Option<(u32, u32, u32)>,
) -> anyhow::Result<Stream> {
    let (width, height, bitrate_kbps) =
        size.unwrap_or((args.width, args.height, args.bitrate_kbps));
    let settings = VideoSettings {
        width,
        height,
        fps: args.fps,
        bitrate_kbps,
        keyframe_interval: args.keyframe_interval,
    };
    settings.validate()?;
    // Two GOPs at least, so the loop is not one keyframe repeated.
    let prerender_secs = (2 * settings.keyframe_interval)
        .div_ceil(settings.fps)
        .max(if quick { 1 } else { 4 });
    let t = Instant::now();
    let pad = !args.no_pad;
    let stream =
        tokio::task::spawn_blocking(move || Stream::prerender(settings, prerender_secs, pad))
            .await??;
    println!(
        "   stream: {}x{} @ {} fps, GOP {} frames, OpenH264 target {} kbit/s; its {} s replay loop (encoded in {:.1} s) averages {:.0} kbit/s",
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
    Ok(stream)
}

/// `Some(1.234)` → "1.23"; `None` → "n/a".
fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Prints the raw relay's figures under a scenario; returns server ÷ raw.
fn print_raw(raw: &rawnet::RawFanout, offered_bps: f64, server_per_gb: Option<f64>) -> Option<f64> {
    let secs = raw.window.as_secs_f64().max(1e-9);
    let delivered_bps = raw.delivered_bytes as f64 * 8.0 / secs;
    let raw_per_gb = raw.cpu_secs_per_gb();
    println!(
        "      raw relay    {:8.1} Mbit/s to viewers ({:.1} % of offered); {:.2} CPU s in the window = {} CPU s per GB; RSS {:.1} MiB",
        delivered_bps / 1e6,
        100.0 * delivered_bps / offered_bps.max(1.0),
        raw.relay_cpu.as_secs_f64(),
        opt(raw_per_gb, 2),
        raw.relay_memory.rss_kib as f64 / 1024.0
    );
    let ratio = server_per_gb.zip(raw_per_gb).map(|(a, b)| a / b);
    println!(
        "      ratio        server ÷ raw relay = {} (CPU per GB delivered)",
        opt(ratio, 2)
    );
    ratio
}

type SummaryRow = (String, Option<f64>, Option<f64>, Option<f64>);

fn print_summary(title: &str, rows: &[SummaryRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("   summary, {title}");
    println!(
        "   {:<12} {:>10} {:>10} {:>8}",
        "topology", "server", "raw", "ratio"
    );
    for (name, server, raw, ratio) in rows {
        println!(
            "   {:<12} {:>10} {:>10} {:>8}",
            name,
            opt(*server, 2),
            opt(*raw, 2),
            opt(*ratio, 2)
        );
    }
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
