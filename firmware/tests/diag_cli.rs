//! `kodama-camera diag …` as an installer runs it: the real binary, real inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokio_util::sync::CancellationToken;

fn camera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kodama-camera"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs")
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn diag_h264_reports_resolution_and_idrs() {
    let f = fixture("h264/x264_main_4slices_320x240_keyint3.h264");
    let out = camera(&["diag", "h264", f.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out)[0];
    assert_eq!(report["width"], 320, "{report}");
    assert_eq!(report["height"], 240, "{report}");
    let idrs = report["idr_frames"].as_array().expect("idr list");
    assert!(!idrs.is_empty());
}

#[test]
fn diag_h264_refuses_garbage_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("noise.bin");
    std::fs::write(&f, b"this is not video at all").expect("write");
    let out = camera(&["diag", "h264", f.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
}

#[test]
fn diag_nmea_prints_fixes_then_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("track.nmea");
    std::fs::write(
        &f,
        concat!(
            "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n",
            "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n",
            "$GPGGA,123520,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\r\n",
            "garbage line\r\n",
        ),
    )
    .expect("write");
    let out = camera(&["diag", "nmea", f.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let fix = &lines[0];
    assert!(
        (fix["lat"].as_f64().expect("lat") - 48.1173).abs() < 1e-4,
        "{fix}"
    );
    let counts = lines.last().expect("counts");
    assert!(
        counts["counts"]["bad_checksums"].as_u64().expect("count") >= 1,
        "{counts}"
    );
}

#[test]
fn diag_telemetry_reads_a_fixture_tree() {
    let root = fixture("telemetry/pi-zero-2w-cellular-undervolt");
    let out = camera(&["diag", "telemetry", "--root", root.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sample = &json_lines(&out)[0];
    assert!(sample["memory"]["total_kb"].as_u64().is_some(), "{sample}");
}

#[test]
fn diag_modem_against_the_simulator_and_a_missing_port() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cancel = CancellationToken::new();
    let (port, _sim) = rt
        .block_on(async {
            kodama_sim::modem::spawn(kodama_sim::modem::Scenario::Healthy, cancel.clone())
        })
        .expect("simulator");
    let out = camera(&[
        "diag",
        "modem",
        "--port",
        port.to_str().expect("utf8"),
        "--timeout",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["registration"], "home", "{report}");
    let out = camera(&[
        "diag",
        "modem",
        "--port",
        "/dev/does-not-exist",
        "--timeout",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
    cancel.cancel();
}
