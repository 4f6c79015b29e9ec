//! `diag modem` against the pty simulator: the JSON document, and clear
//! errors for a wrong path and a dead modem.

use std::path::Path;
use std::time::Duration;

use kodama_firmware::hw::modem::diag::diag_modem;
use kodama_sim::modem::{spawn_with, Scenario, SimOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn reports_a_healthy_modem() {
    let cancel = CancellationToken::new();
    let (path, sim) = spawn_with(SimOptions::fast(Scenario::Healthy), cancel.clone()).unwrap();
    let v = diag_modem(&path, 115_200, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(v["sim"], "ready");
    assert_eq!(v["registration"], "home");
    assert_eq!(v["technology"], "LTE");
    assert_eq!(v["band"], "EUTRAN-BAND3");
    assert_eq!(v["operator"], "Kodama Test Network");
    assert_eq!(v["model"], "SIMCOM_SIM7600E-H");
    assert_eq!(v["port"], path.display().to_string());
    let dbm = v["signal_dbm"].as_i64().unwrap();
    assert!((-73..=-63).contains(&dbm));
    // Read-only: GNSS is reported, not started; no data call is made.
    assert_eq!(v["gnss_on"], false);
    assert_eq!(v["data_session_up"], false);
    assert!(v.get("at_resets").is_none());
    cancel.cancel();
    sim.join().await;
}

#[tokio::test]
async fn reports_a_missing_sim() {
    let cancel = CancellationToken::new();
    let (path, sim) = spawn_with(SimOptions::fast(Scenario::NoSim), cancel.clone()).unwrap();
    let v = diag_modem(&path, 115_200, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(v["sim"], "absent");
    assert_eq!(v["registration"], "not_registered");
    assert_eq!(v["technology"], "NO SERVICE");
    assert!(v["last_error"]
        .as_str()
        .unwrap()
        .contains("SIM not inserted"));
    cancel.cancel();
    sim.join().await;
}

#[tokio::test]
async fn dead_modem_is_a_clear_error() {
    let cancel = CancellationToken::new();
    let mut opts = SimOptions::fast(Scenario::HangNeedsPwrkey);
    opts.hang_after = 0;
    let (path, sim) = spawn_with(opts, cancel.clone()).unwrap();
    let t0 = std::time::Instant::now();
    let e = diag_modem(&path, 115_200, Duration::from_millis(1_500))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    assert!(e.contains("no answer to AT"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    cancel.cancel();
    sim.join().await;
}

#[tokio::test]
async fn missing_port_is_a_clear_error() {
    let e = diag_modem(
        Path::new("/nonexistent/ttyUSB9"),
        115_200,
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("cannot open serial port /nonexistent/ttyUSB9"),
        "{msg}"
    );
}
