//! Link figures in the network test bed (`kodama-testbed`; needs root):
//! Wi-Fi → cellular failover gap (p50 / max over N cuts of each kind), the
//! standby link's idle cost, and server crash → video again.
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
