//! The GNSS loop end to end: the real serial driver reading the simulator
//! through a pseudo-terminal, and the fix lifecycle (first fix, epochs,
//! withdrawal after silence) on tokio's paused clock.

use std::time::Duration;

use kodama_firmware::hw::gnss::serial::SerialGnss;
use kodama_firmware::hw::gnss::{self, FixMode, Gnss, GnssConfig, GnssError, GnssOutputs};
use kodama_sim::gnss::{serve_pty, SimGnss, Track};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn serial_driver_reads_the_simulator_over_a_pty() {
    let cancel = CancellationToken::new();
    let sim =
        SimGnss::track(Track::circle(35.681236, 139.767125)).period(Duration::from_millis(50));
    let (path, sim_task) = serve_pty(sim, cancel.clone()).expect("pty");
    let cfg = GnssConfig {
        port: path,
        epoch_gap_ms: 20,
        ..GnssConfig::default()
    };
    let (out, mut fix_rx, counts_rx) = GnssOutputs::new();
    let driver = tokio::spawn({
        let (cfg, cancel) = (cfg.clone(), cancel.clone());
        async move { gnss::run(SerialGnss::new(&cfg), &cfg, out, cancel).await }
    });
    let fix = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            fix_rx.changed().await.expect("driver alive");
            let f = *fix_rx.borrow_and_update();
            if let Some(f) = f.filter(|f| f.mode == FixMode::Fix3d) {
                return f;
            }
        }
    })
    .await
    .expect("a 3D fix within 10 s");
    assert!((fix.lat.expect("lat") - 35.681236).abs() < 0.01);
    assert!((fix.speed.expect("speed") - 5.0).abs() < 1e-3);
    cancel.cancel();
    let counts = driver.await.expect("driver");
    sim_task.await.expect("sim");
    assert!(counts.fixes >= 4, "{counts:?}");
    assert_eq!(counts.bad_checksums + counts.unparsed, 0, "{counts:?}");
    assert_eq!(*counts_rx.borrow(), counts);
}

#[tokio::test]
async fn missing_port_is_a_clear_error() {
    let cfg = GnssConfig {
        port: "/nonexistent/ttyUSB9".into(),
        ..GnssConfig::default()
    };
    let mut g = SerialGnss::new(&cfg);
    let err = g.read_nmea(&mut [0; 16]).await.expect_err("no such port");
    assert!(matches!(err, GnssError::Open { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ttyUSB9"), "{err}");
}

/// A receiver that sends `epochs` epochs of a track, then goes silent.
struct GoesSilent {
    sim: SimGnss,
    bytes_left: usize,
}

impl Gnss for GoesSilent {
    async fn read_nmea(&mut self, buf: &mut [u8]) -> Result<usize, GnssError> {
        if self.bytes_left == 0 {
            std::future::pending::<()>().await;
        }
        let n = buf.len().min(self.bytes_left);
        let n = self.sim.read_nmea(&mut buf[..n]).await?;
        self.bytes_left -= n;
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn fix_is_published_per_epoch_and_withdrawn_after_silence() {
    let track = Track {
        acquisition_epochs: 0,
        ..Track::circle(51.0, -114.0)
    };
    let five_epochs: usize = (0..5).map(|n| track.epoch(n).len()).sum();
    let source = GoesSilent {
        sim: SimGnss::track(track),
        bytes_left: five_epochs,
    };
    let cfg = GnssConfig::default();
    let (out, mut fix_rx, _) = GnssOutputs::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { gnss::run(source, &cfg, out, cancel).await }
    });
    let start = tokio::time::Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        fix_rx.changed().await.expect("alive");
        seen.push((start.elapsed(), *fix_rx.borrow_and_update()));
    }
    // Epoch n is sent at n seconds and closed by the 200 ms quiet gap.
    for (n, (at, fix)) in seen[..5].iter().enumerate() {
        let fix = fix.expect("a fix");
        assert_eq!(fix.mode, FixMode::Fix3d);
        assert_eq!(
            *at,
            Duration::from_millis(n as u64 * 1000 + 200),
            "epoch {n}"
        );
    }
    // Then 5 s of silence after the last bytes withdraws it.
    assert_eq!(seen[5].1, None);
    assert_eq!(seen[5].0, Duration::from_millis(4000 + 5000));
    cancel.cancel();
    let counts = task.await.expect("task");
    assert_eq!(counts.fixes, 5);
}
