//! Wi-Fi ↔ cellular failover over real iroh, with the real `kodama-server`
//! and `kodama-camera` binaries running in the test bed's namespaces.
//! Needs root (network namespaces); skipped without it, except under CI.

use std::time::{Duration, Instant};

use kodama_testbed::rig::{Rig, RigOptions};
use kodama_testbed::{root_or_skip, Cut, Uplink};

#[test]
fn wifi_cut_both_ways_fails_over_to_cellular_and_back() {
    if !root_or_skip("wifi_cut_both_ways_fails_over_to_cellular_and_back") {
        return;
    }
    let mut rig = Rig::start(&RigOptions::default()).expect("rig");
    assert!(
        rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(30)),
        "the camera streams over Wi-Fi first\n{}",
        rig.diagnostics()
    );
    for cut in [Cut::LinkDown, Cut::Blackhole] {
        let t_cut = Instant::now();
        rig.bed.cut(Uplink::Wifi, cut).expect("cut");
        assert!(
            rig.wait_streaming_over(Uplink::Cell, Duration::from_secs(15)),
            "{cut:?}: video moves to cellular\n{}",
            rig.diagnostics()
        );
        // The cellular counters can rise with backfill before live video
        // reaches the viewer: wait (bounded) for the first frame after the cut.
        let resumed = rig
            .first_frame_after(t_cut + Duration::from_secs(1), Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!(
                    "{cut:?}: the viewer gets video again\n{}",
                    rig.diagnostics()
                )
            });
        let gap = rig.longest_gap(t_cut - Duration::from_millis(500), resumed);
        eprintln!(
            "{cut:?}: longest pause at the viewer {:.0} ms",
            gap.as_secs_f64() * 1000.0
        );
        // Functional bound (the bench measures): far below a reconnect.
        assert!(
            gap < Duration::from_secs(5),
            "{cut:?}: paused {gap:?}\n{}",
            rig.diagnostics()
        );
        // A cut link carries nothing; the cellular one now carries video.
        let on_cell = rig
            .sent_over(Uplink::Cell, Duration::from_secs(1))
            .expect("counters");
        assert!(on_cell > 20_000, "{cut:?}: {on_cell} bytes/s on cellular");

        rig.bed.restore(Uplink::Wifi, cut).expect("restore");
        assert!(
            rig.wait_streaming_over(Uplink::Wifi, Duration::from_secs(30)),
            "{cut:?}: back on Wi-Fi once it has been healthy for a while\n{}",
            rig.diagnostics()
        );
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            rig.frames_since(t) > 15,
            "{cut:?}: video flows after moving back"
        );
    }
    let log = rig.camera.output();
    assert!(
        log.contains("failing over"),
        "the camera logged the failover\n{}",
        rig.diagnostics()
    );
    assert!(
        log.contains("moving back"),
        "the camera logged moving back\n{}",
        rig.diagnostics()
    );

    // A server that dies without closing anything (kill -9) and comes back:
    // camera and viewer notice the silence within about a second and
    // reconnect, instead of waiting out QUIC's 10 s idle timeout.
    let killed = rig.crash_and_restart_server().expect("restart the server");
    let back = rig
        .first_frame_after(killed + Duration::from_millis(300), Duration::from_secs(8))
        .unwrap_or_else(|| {
            panic!(
                "video at the viewer within 8 s of a server kill -9 and restart\n{}",
                rig.diagnostics()
            )
        });
    eprintln!(
        "server kill -9 + restart: video at the viewer after {:.0} ms",
        (back - killed).as_secs_f64() * 1000.0
    );
}
