//! `kodama-sim`: serves a simulated SIM7600 (AT port) and its GNSS receiver
//! (NMEA port) on pseudo-terminals, each symlinked at a stable path, until
//! interrupted. The camera opens those paths exactly as it opens
//! `/dev/ttyUSB2` and `/dev/ttyUSB1` on the Pi: the firmware process contains
//! no simulator.
//!
//! ```sh
//! kodama-sim --at /tmp/cam1/at --nmea /tmp/cam1/nmea --scenario healthy --lat 35.66 --lon 139.75
//! ```
//!
//! As on the real module, the NMEA port is silent until the camera's modem
//! supervisor starts the GNSS engine with `AT+CGPS=1` (when both are served).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kodama_sim::gnss::{serve_pty_while, SimGnss, Track};
use kodama_sim::modem::{spawn_with, Scenario, SimOptions};
use tokio_util::sync::CancellationToken;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "kodama-sim",
    version,
    about = "Kodama test equipment: a SIM7600 and its GNSS on pseudo-terminals"
)]
struct Args {
    /// Serve the modem's AT port; a symlink to its pty is made here.
    #[arg(long)]
    at: Option<PathBuf>,
    /// Serve the GNSS receiver's NMEA port; a symlink to its pty is made here.
    #[arg(long)]
    nmea: Option<PathBuf>,
    /// Modem scenario (healthy, slow-registration, no-sim, signal-loss,
    /// cme-errors, urc-mid-response, garbage, hang-at-reset, hang-pwrkey).
    #[arg(long, default_value = "healthy", value_parser = parse_scenario)]
    scenario: Scenario,
    /// Test timings (boot in 150 ms) instead of the real module's (3 s).
    #[arg(long)]
    fast: bool,
    /// Centre of the synthetic track, degrees latitude.
    #[arg(long, default_value_t = 35.681236, allow_negative_numbers = true)]
    lat: f64,
    /// Centre of the synthetic track, degrees longitude.
    #[arg(long, default_value_t = 139.767125, allow_negative_numbers = true)]
    lon: f64,
    /// Replay this NMEA log (looping) instead of the synthetic track.
    #[arg(long)]
    nmea_log: Option<PathBuf>,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<u64>,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

/// Points `link` at `target`, replacing a stale link from an earlier run.
fn link(target: &Path, link: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link)
            .with_context(|| format!("removing the stale link {}", link.display()))?,
        Ok(_) => anyhow::bail!(
            "{} exists and is not a symlink; not replacing it",
            link.display()
        ),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.at.is_none() && args.nmea.is_none() {
        anyhow::bail!("nothing to serve: give --at PATH and/or --nmea PATH");
    }
    let cancel = CancellationToken::new();
    let mut modem = None;
    if let Some(path) = &args.at {
        let opts = if args.fast {
            SimOptions::fast(args.scenario)
        } else {
            SimOptions::new(args.scenario)
        };
        let (pty, handle) = spawn_with(opts, cancel.child_token()).context("modem simulator")?;
        link(&pty, path)?;
        println!("at {} -> {}", path.display(), pty.display());
        modem = Some(handle);
    }
    let mut gnss_task = None;
    let mut links: Vec<PathBuf> = args.at.iter().cloned().collect();
    if let Some(path) = &args.nmea {
        let sim = match &args.nmea_log {
            Some(log) => SimGnss::replay(
                &std::fs::read_to_string(log)
                    .with_context(|| format!("reading the NMEA log {}", log.display()))?,
                true,
            ),
            None => SimGnss::track(Track::circle(args.lat, args.lon)),
        };
        let stats = modem.as_ref().map(|m| m.stats_reader());
        let engine_on = move || stats.as_ref().is_none_or(|s| s().gnss_on);
        let (pty, task) =
            serve_pty_while(sim, engine_on, cancel.child_token()).context("GNSS simulator")?;
        link(&pty, path)?;
        println!("nmea {} -> {}", path.display(), pty.display());
        links.push(path.clone());
        gnss_task = Some(task);
    }
    let limit = args.duration.map(Duration::from_secs);
    tokio::select! {
        () = shutdown_signal() => {}
        () = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        } => {}
    }
    cancel.cancel();
    if let Some(m) = modem {
        let stats = m.stats();
        m.join().await;
        eprintln!("{}", serde_json::to_string(&stats)?);
    }
    if let Some(t) = gnss_task {
        let _ = t.await;
    }
    for l in links {
        let _ = std::fs::remove_file(l);
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
