//! `kodama-testbed demo`: a camera in the network test bed whose Wi-Fi is
//! cut every minute (alternately link down and a silent black hole), so you
//! can watch it fail over to cellular and come back while the recording
//! stays whole, and its adaptive bitrate move: it streams a busy picture at
//! up to 4 Mbit/s, steps down to a tier the 2 Mbit/s cellular link carries,
//! and climbs back on Wi-Fi (each tier change is printed). Needs root.
//! `scripts/demo.sh --testbed` runs it.
//!
//! ```text
//! kodama-testbed demo [--cut-every SECONDS] [--cut-for SECONDS] [--duration SECONDS] [--data-dir DIR]
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kodama_testbed::rig::{Rig, RigOptions};
use kodama_testbed::{Cut, Uplink};

fn usage() -> ! {
    eprintln!("usage: kodama-testbed demo [--cut-every SECONDS] [--cut-for SECONDS] [--duration SECONDS] [--data-dir DIR]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("demo") {
        usage();
    }
    let (mut every, mut cut_for, mut duration) = (60.0_f64, 20.0_f64, f64::INFINITY);
    let mut data_dir = None;
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let number = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0)
                .unwrap_or_else(|| usage())
        };
        match flag.as_str() {
            "--cut-every" => every = number(),
            "--cut-for" => cut_for = number(),
            "--duration" => duration = number(),
            "--data-dir" => data_dir = Some(std::path::PathBuf::from(&value)),
            _ => usage(),
        }
    }
    if !kodama_testbed::root_or_skip("kodama-testbed demo") {
        std::process::exit(1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(tokio::signal::ctrl_c());
        }
        flag.store(true, Ordering::Relaxed);
    });
    let rig = match Rig::start(&RigOptions {
        return_after_s: 10.0,
        bitrate_kbps: 4000,
        data_dir: data_dir.clone(),
        busy_scene: true,
        ..RigOptions::default()
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the test bed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "test bed {} up: camera ns {}, server ns {}",
        rig.bed.tag,
        rig.bed.ns(kodama_testbed::Ns::Camera),
        rig.bed.ns(kodama_testbed::Ns::Server)
    );
    println!(
        "logs: {}/camera.log, {}/server.log",
        rig.dir.display(),
        rig.dir.display()
    );
    if let Some(d) = &data_dir {
        println!(
            "recordings: {}/recordings (index {}/kodama.db)",
            d.display(),
            d.display()
        );
    }
    let started = Instant::now();
    let last_tier = std::cell::RefCell::new(None::<String>);
    // Prints the camera's tier whenever its telemetry reports a new one.
    let tier_changes = || {
        let Some(s) = rig
            .streams_since(Instant::now() - Duration::from_secs(2))
            .pop()
        else {
            return;
        };
        let now = format!(
            "{} at {} kbit/s over {} (link estimate {}, limit {})",
            s.tier.as_deref().unwrap_or("-"),
            s.kbps,
            s.uplink.as_deref().unwrap_or("-"),
            s.estimate_kbps
                .map_or_else(|| "-".to_owned(), |e| format!("{e} kbit/s")),
            s.limit
        );
        let tier = format!("{:?}{}", s.tier, s.kbps);
        if last_tier.borrow().as_deref() != Some(tier.as_str()) {
            println!("[{:>6.1} s] tier: {now}", started.elapsed().as_secs_f64());
            *last_tier.borrow_mut() = Some(tier);
        }
    };
    let sleep_until = |t: Instant| {
        while Instant::now() < t && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            tier_changes();
        }
    };
    let report = |what: &str| {
        let over = |u| rig.sent_over(u, Duration::from_millis(500)).unwrap_or(0) * 2;
        let (w, c) = (over(Uplink::Wifi), over(Uplink::Cell));
        println!(
            "[{:>6.1} s] {what}: wifi0 sends {:>6.0} kbit/s, cell0 {:>6.0} kbit/s",
            started.elapsed().as_secs_f64(),
            w as f64 * 8.0 / 1000.0,
            c as f64 * 8.0 / 1000.0
        );
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed().as_secs_f64() < duration {
        sleep_until(Instant::now() + Duration::from_secs_f64((every - cut_for).max(1.0)));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        report("streaming");
        let cut = if n.is_multiple_of(2) {
            Cut::LinkDown
        } else {
            Cut::Blackhole
        };
        n += 1;
        let t = Instant::now();
        if let Err(e) = rig.bed.cut(Uplink::Wifi, cut) {
            eprintln!("cut failed: {e}");
            break;
        }
        println!(
            "[{:>6.1} s] Wi-Fi cut ({cut:?})",
            started.elapsed().as_secs_f64()
        );
        let resumed =
            rig.first_frame_after(t + Duration::from_millis(100), Duration::from_secs(10));
        if let Some(r) = resumed {
            let gap = rig.longest_gap(
                t - Duration::from_millis(300),
                r.max(t) + Duration::from_millis(300),
            );
            println!(
                "[{:>6.1} s] video back after a {:.0} ms pause",
                started.elapsed().as_secs_f64(),
                gap.as_secs_f64() * 1000.0
            );
        } else {
            println!(
                "[{:>6.1} s] no video 10 s after the cut",
                started.elapsed().as_secs_f64()
            );
        }
        report("Wi-Fi cut");
        sleep_until(t + Duration::from_secs_f64(cut_for));
        if let Err(e) = rig.bed.restore(Uplink::Wifi, cut) {
            eprintln!("restore failed: {e}");
            break;
        }
        println!(
            "[{:>6.1} s] Wi-Fi restored; the camera moves back once it has been healthy for 10 s",
            started.elapsed().as_secs_f64()
        );
    }
    println!("stopping; the test bed is removed");
}
