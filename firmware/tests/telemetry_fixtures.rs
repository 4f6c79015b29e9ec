//! Telemetry read from fixture `/proc` and `/sys` trees (tests/fixtures/telemetry/):
//! a Pi Zero 2W on Wi-Fi, and one on cellular with the supply sagging.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kodama_firmware::hw::gnss::{Fix, FixMode};
use kodama_firmware::telemetry::system::LinkKind;
use kodama_firmware::telemetry::{spawn_sampler, Inputs, Sample, SystemReader, TelemetryConfig};
use kodama_proto::Channel;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/telemetry")
        .join(name)
}

fn reader(root: &Path) -> SystemReader {
    SystemReader::new(root, Path::new("/var/lib/kodama"), "thermal_zone0")
}

#[test]
fn wifi_camera() {
    let s = reader(&fixture("pi-zero-2w-wifi")).sample();
    assert_eq!(s.uptime_s, Some(955.43));
    assert_eq!(s.cpu_percent, None, "no previous sample yet");
    let m = s.memory.expect("meminfo");
    assert_eq!((m.total_kb, m.available_kb), (439_928, 318_520));
    assert_eq!(s.soc_temp_c, Some(48.312));
    let t = s.throttling.expect("get_throttled");
    assert_eq!(t.raw, 0);
    assert!(!t.under_voltage && !t.under_voltage_occurred);
    assert_eq!(s.link.kind, LinkKind::Wifi);
    assert_eq!(s.link.iface.as_deref(), Some("wlan0"));
    assert_eq!(s.link.up, vec!["wlan0".to_string()]);
    let st = s.storage.expect("statvfs");
    assert!(st.path.ends_with("var/lib/kodama"));
    assert!(st.total_bytes > 0 && st.free_bytes <= st.total_bytes);
}

#[test]
fn cellular_camera_with_under_voltage() {
    let s = reader(&fixture("pi-zero-2w-cellular-undervolt")).sample();
    assert_eq!(s.link.kind, LinkKind::Cellular);
    assert_eq!(s.link.iface.as_deref(), Some("wwan0"));
    assert_eq!(s.soc_temp_c, Some(71.25));
    let t = s.throttling.expect("get_throttled");
    assert_eq!(t.raw, 0x50005);
    assert!(t.under_voltage && t.throttled && t.under_voltage_occurred && t.throttled_occurred);
}

#[test]
fn missing_files_leave_fields_empty() {
    let empty = tempfile::tempdir().expect("tempdir");
    let s = reader(empty.path()).sample();
    assert_eq!(
        (s.uptime_s, s.memory, s.soc_temp_c, s.throttling),
        (None, None, None, None)
    );
    assert_eq!(s.link.kind, LinkKind::None);
    assert!(s.storage.is_none(), "var/lib/kodama does not exist there");
}

/// Mainline kernels have no `get_throttled`; the `rpi_volt` hwmon alarm is used.
#[test]
fn hwmon_under_voltage_alarm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hw = dir.path().join("sys/class/hwmon/hwmon1");
    std::fs::create_dir_all(&hw).expect("mkdir");
    std::fs::write(hw.join("name"), "rpi_volt\n").expect("write");
    std::fs::write(hw.join("in0_lcrit_alarm"), "1\n").expect("write");
    let t = reader(dir.path()).sample().throttling.expect("hwmon");
    assert!(t.under_voltage);
}

#[test]
fn cpu_percent_between_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc_dir = dir.path().join("proc");
    std::fs::create_dir_all(&proc_dir).expect("mkdir");
    let stat = std::fs::read_to_string(fixture("pi-zero-2w-wifi/proc/stat")).expect("stat");
    std::fs::write(proc_dir.join("stat"), &stat).expect("write");
    let mut r = reader(dir.path());
    assert_eq!(r.sample().cpu_percent, None);
    // One second on four cores = 400 ticks: 100 busy (user 70, system 30), 300 idle.
    let later = stat.replacen("cpu  12044 15 6021 361880", "cpu  12114 15 6051 362180", 1);
    std::fs::write(proc_dir.join("stat"), later).expect("write");
    assert_eq!(r.sample().cpu_percent, Some(25.0));
}

#[tokio::test(start_paused = true)]
async fn sampler_sends_json_with_every_input() {
    let cfg = TelemetryConfig {
        root: fixture("pi-zero-2w-cellular-undervolt"),
        storage_path: "/var/lib/kodama".into(),
        ..TelemetryConfig::default()
    };
    let fix = Fix {
        mode: FixMode::Fix3d,
        lat: Some(35.68),
        lon: Some(139.76),
        ..Fix::default()
    };
    let (_gnss_tx, gnss) = watch::channel(Some(fix));
    let (_motion_tx, motion) = watch::channel(true);
    let (_rate_tx, rate) = watch::channel(1200u32);
    let (_modem_tx, modem) =
        watch::channel(serde_json::json!({"technology": "LTE", "signal_dbm": -83}));
    let inputs = Inputs {
        modem: Some(modem),
        gnss: Some(gnss),
        bitrate_kbps: Some(rate),
        motion: Some(motion),
        backlog: None,
        stream: None,
    };
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = spawn_sampler(cfg, inputs, tx, cancel.clone());
    let mut samples = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a sample per second")
            .expect("open");
        assert_eq!(msg.channel, Channel::Telemetry);
        let s: Sample = serde_json::from_slice(&msg.payload).expect("json");
        assert_eq!(msg.capture_us, s.at_us);
        samples.push(s);
    }
    cancel.cancel();
    task.await.expect("sampler");
    let s = &samples[2];
    assert_eq!(s.gnss, Some(fix));
    assert!(s.motion);
    assert_eq!(s.bitrate_kbps, Some(1200));
    assert_eq!(
        s.modem.as_ref().and_then(|m| m["technology"].as_str()),
        Some("LTE")
    );
    assert_eq!(s.system.link.kind, LinkKind::Cellular);
    assert_eq!(
        s.system.cpu_percent, None,
        "the fixture's counters do not move"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&samples[0].to_aux().payload).expect("json");
    assert!(
        json["throttling"]["under_voltage"].as_bool().expect("flag"),
        "{json}"
    );
    assert_eq!(json["link"]["kind"], "cellular");
}

/// The firmware reports its own memory and CPU (`/proc/self`), CPU against
/// the uptime between two samples.
#[test]
fn the_firmware_reports_its_own_memory_and_cpu() {
    let s = reader(&fixture("pi-zero-2w-wifi")).sample();
    let p = s.process.expect("proc/self");
    assert_eq!((p.rss_kib, p.peak_rss_kib), (12_288, 14_336));
    assert_eq!(p.cpu_percent, None, "no previous sample yet");

    let dir = tempfile::tempdir().expect("tempdir");
    let own = dir.path().join("proc/self");
    std::fs::create_dir_all(&own).expect("mkdir");
    let from = fixture("pi-zero-2w-wifi/proc");
    for f in ["self/status", "self/stat", "uptime"] {
        std::fs::copy(from.join(f), dir.path().join("proc").join(f)).expect("copy");
    }
    let mut r = reader(dir.path());
    assert_eq!(r.sample().process.and_then(|p| p.cpu_percent), None);
    // 10 s later with 150 more ticks (user 4520 -> 4620, system 1210 ->
    // 1260): 1.5 s of CPU in 10 s = 15 % of one core (USER_HZ is 100).
    let stat = std::fs::read_to_string(own.join("stat")).expect("stat");
    std::fs::write(
        own.join("stat"),
        stat.replacen(" 4520 1210 ", " 4620 1260 ", 1),
    )
    .expect("write");
    let up = std::fs::read_to_string(dir.path().join("proc/uptime")).expect("uptime");
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("uptime");
    std::fs::write(
        dir.path().join("proc/uptime"),
        format!("{:.2} 0.00\n", secs + 10.0),
    )
    .expect("write");
    let cpu = r.sample().process.and_then(|p| p.cpu_percent).expect("cpu");
    assert!((cpu - 15.0).abs() < 0.01, "{cpu}");
}
