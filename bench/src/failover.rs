//! Link figures in the network test bed (`kodama-testbed`; needs root):
//! Wi-Fi → cellular failover gap (p50 / max over N cuts of each kind), the
//! standby link's idle cost, and server crash → video again ([`run`]); and
//! adaptive bitrate under a 1 Mbit/s cap on a 4 Mbit/s stream, with BBRv3
//! and with Cubic ([`run_abr`]).
//!
//! The real `kodama-server` and `kodama-camera` (debug binaries: these
//! figures are bound by the network, not the CPU) run in the bed's
//! namespaces; a viewer in the server's namespace timestamps every frame.
//! The gap of a cut is the longest pause between two video frames at the
//! viewer from just before the cut until video flows over the other uplink.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kodama_testbed::rig::{Rig, RigOptions};
use kodama_testbed::{Cut, Uplink};

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Cuts of each kind.
    pub cuts: usize,
    /// Window for the standby's idle cost.
    pub idle_window: Duration,
    /// Server crash-restarts.
    pub restarts: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the plan and prints the figures (blocking; call from a blocking thread).
pub fn run(plan: Plan) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the failover section needs root (network namespaces): sudo -E cargo run --profile bench -p kodama-bench -- --only failover");
    }
    println!(
        "failover (network test bed: wifi 20 ms / 20 Mbit/s, cell 80±30 ms / 2 Mbit/s / 1 % loss)"
    );
    let mut rig = Rig::start(&RigOptions {
        return_after_s: 2.0,
        ..RigOptions::default()
    })
    .context("starting the test bed")?;
    if !rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(60)) {
        bail!(
            "the camera never streamed over Wi-Fi\n{}",
            rig.diagnostics()
        );
    }

    // The standby's idle cost while video flows over Wi-Fi.
    let bytes = rig.bytes_over(Uplink::Cell, plan.idle_window)?;
    let per_min = bytes as f64 * 60.0 / plan.idle_window.as_secs_f64();
    println!(
        "  standby (cellular) idle cost  {:.0} bytes/min ({:.1} MB/day), sent+received, measured over {:.0} s",
        per_min,
        per_min * 60.0 * 24.0 / 1e6,
        plan.idle_window.as_secs_f64()
    );

    for cut in [Cut::LinkDown, Cut::Blackhole] {
        let mut gaps = Vec::new();
        for i in 0..plan.cuts {
            let t = Instant::now();
            rig.bed.cut(Uplink::Wifi, cut)?;
            if !rig.wait_streaming_over(Uplink::Cell, Duration::from_secs(20)) {
                bail!(
                    "{cut:?} #{i}: no failover to cellular\n{}",
                    rig.diagnostics()
                );
            }
            let resumed = rig
                .first_frame_after(t + Duration::from_millis(100), Duration::from_secs(5))
                .context("no video after the cut")?;
            let gap = rig.longest_gap(
                t - Duration::from_millis(300),
                resumed.max(t) + Duration::from_millis(300),
            );
            gaps.push(gap);
            rig.bed.restore(Uplink::Wifi, cut)?;
            if !rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(30)) {
                bail!(
                    "{cut:?} #{i}: did not move back to Wi-Fi\n{}",
                    rig.diagnostics()
                );
            }
        }
        gaps.sort();
        println!(
            "  failover gap, {:<9}      p50 {:>5.0} ms   max {:>5.0} ms   over {} cuts (target p50 <= 1000, max <= 3000)",
            format!("{cut:?}"),
            ms(percentile(&gaps, 0.5)),
            ms(*gaps.last().unwrap_or(&Duration::ZERO)),
            gaps.len()
        );
    }

    let mut back = Vec::new();
    for i in 0..plan.restarts {
        let killed = rig.crash_and_restart_server()?;
        let first = rig
            .first_frame_after(killed, Duration::from_secs(30))
            .with_context(|| {
                format!("no video after server restart #{i}\n{}", rig.diagnostics())
            })?;
        back.push(first - killed);
        std::thread::sleep(Duration::from_secs(1));
    }
    back.sort();
    println!(
        "  server kill -9 + restart -> video at a viewer   p50 {:>5.0} ms   max {:>5.0} ms   over {} restarts (target <= 3000)",
        ms(percentile(&back, 0.5)),
        ms(*back.last().unwrap_or(&Duration::ZERO)),
        back.len()
    );
    Ok(())
}

/// Adaptive bitrate: a 4 Mbit/s stream (busy synthetic scene) on Wi-Fi gets
/// a 1 Mbit/s cap `rounds` times; per round the time until the camera's
/// telemetry (every 250 ms) reports a tier that fits, the longest pause at
/// the viewer meanwhile, and after the cap lifts the time until it is back
/// at 2 and at 4 Mbit/s. Once per congestion controller.
pub fn run_abr(rounds: usize) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the abr section needs root (network namespaces): sudo -E cargo run --profile bench -p kodama-bench -- --only abr");
    }
    println!("adaptive bitrate (test bed Wi-Fi 20 ms / 20 Mbit/s, capped to 1 Mbit/s; 4 Mbit/s busy synthetic stream, GOP 1 s)");
    for congestion in ["bbr3", "cubic"] {
        let rig = Rig::start(&RigOptions {
            bitrate_kbps: 4000,
            busy_scene: true,
            congestion,
            telemetry_ms: 250,
            ..RigOptions::default()
        })
        .context("starting the test bed")?;
        if !rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(60)) {
            bail!(
                "the camera never streamed over Wi-Fi\n{}",
                rig.diagnostics()
            );
        }
        let (mut settle, mut stall, mut up2, mut up4) = (vec![], vec![], vec![], vec![]);
        let mut settled_kbps = Vec::new();
        for i in 0..rounds {
            if rig
                .wait_stream(Instant::now(), Duration::from_secs(90), |s| s.kbps >= 4000)
                .is_none()
            {
                bail!(
                    "{congestion} round {i}: never at 4 Mbit/s\n{}",
                    rig.diagnostics()
                );
            }
            let t = Instant::now();
            rig.bed.cap(Uplink::Wifi, 1000)?;
            let s = rig
                .wait_stream(t, Duration::from_secs(30), |s| s.kbps <= 800)
                .with_context(|| {
                    format!(
                        "{congestion} round {i}: no tier under 1 Mbit/s\n{}",
                        rig.diagnostics()
                    )
                })?;
            settle.push(s.at - t);
            std::thread::sleep(Duration::from_secs(5));
            stall.push(rig.longest_gap(t - Duration::from_millis(300), Instant::now()));
            settled_kbps.push(
                rig.streams_since(Instant::now() - Duration::from_secs(1))
                    .last()
                    .map_or(0, |s| s.kbps),
            );
            let lift = Instant::now();
            rig.bed
                .cap(Uplink::Wifi, kodama_testbed::Profile::WIFI.rate_kbit)?;
            let two = rig
                .wait_stream(lift, Duration::from_secs(90), |s| s.kbps >= 2000)
                .with_context(|| {
                    format!("{congestion} round {i}: no climb\n{}", rig.diagnostics())
                })?;
            up2.push(two.at - lift);
            let four = rig
                .wait_stream(lift, Duration::from_secs(90), |s| s.kbps >= 4000)
                .with_context(|| {
                    format!(
                        "{congestion} round {i}: not back at the top\n{}",
                        rig.diagnostics()
                    )
                })?;
            up4.push(four.at - lift);
        }
        for v in [&mut settle, &mut stall, &mut up2, &mut up4] {
            v.sort();
        }
        println!(
            "  {congestion:<5}  settle after the cap  p50 {:>5.0} ms  max {:>5.0} ms (at {:?} kbit/s)   longest viewer pause p50 {:>5.0} ms  max {:>5.0} ms",
            ms(percentile(&settle, 0.5)),
            ms(*settle.last().unwrap_or(&Duration::ZERO)),
            settled_kbps,
            ms(percentile(&stall, 0.5)),
            ms(*stall.last().unwrap_or(&Duration::ZERO)),
        );
        println!(
            "  {congestion:<5}  after the lift: 2 Mbit/s p50 {:>5.1} s  max {:>5.1} s   4 Mbit/s p50 {:>5.1} s  max {:>5.1} s   over {rounds} caps",
            percentile(&up2, 0.5).as_secs_f64(),
            up2.last().unwrap_or(&Duration::ZERO).as_secs_f64(),
            percentile(&up4, 0.5).as_secs_f64(),
            up4.last().unwrap_or(&Duration::ZERO).as_secs_f64(),
        );
    }
    Ok(())
}
