//! The whole camera app (as the demo runs it) with a simulated SIM7600 and
//! GPS served from outside the firmware on ptys (as `kodama-sim` serves them):
//! its telemetry reaches a viewer with signal and position in it.

mod common;

use std::time::Duration;

use common::*;
use kodama_firmware::app::{self, AppHandles};
use kodama_firmware::config::Config as CameraConfig;
use kodama_net::media_recv::Received;
use kodama_proto::Channel;
use kodama_server::viewer::ViewerEvent;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_sees_signal_and_position_from_simulated_hardware() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("camera.key");
    let key = kodama_net::endpoint::load_or_create_key(&key_path).expect("key");
    server.allow_camera(&key, "sim");
    let equipment = CancellationToken::new();
    let (at_port, modem) = kodama_sim::modem::spawn_with(
        kodama_sim::modem::SimOptions::fast(kodama_sim::modem::Scenario::Healthy),
        equipment.child_token(),
    )
    .expect("modem pty");
    // The NMEA port is silent until the camera starts GNSS with AT+CGPS=1.
    let engine = modem.stats_reader();
    let (nmea_port, gnss) = kodama_sim::gnss::serve_pty_while(
        kodama_sim::gnss::SimGnss::track(kodama_sim::gnss::Track::circle(35.6586, 139.7454)),
        move || engine().gnss_on,
        equipment.child_token(),
    )
    .expect("nmea pty");
    let toml = format!(
        r#"
[camera]
name = "sim"
key_path = "{key}"
[server]
node_id = "{id}"
addrs = ["{addr}"]
[network]
offline = true
[video]
source = "synthetic"
width = 320
height = 240
bitrate_kbps = 300
[modem]
enabled = true
port = "{at}"
apn = "internet"
[gnss]
port = "{nmea}"
"#,
        at = at_port.display(),
        nmea = nmea_port.display(),
        key = key_path.display(),
        id = server.server.node.endpoint().id(),
        addr = server.addr,
    );
    let config =
        CameraConfig::from_toml(&toml, std::path::Path::new("kodama.toml")).expect("parses");
    config.validate().expect("valid");
    let cancel = CancellationToken::new();
    let camera = tokio::spawn(app::run(config, AppHandles::default(), cancel.clone()));

    let (mut client, _ep) = viewer(&server, "sim").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut found = None;
    while found.is_none() {
        let event = tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("telemetry with signal and position within 20 s");
        if let ViewerEvent::Media(Received::Frame(h, f)) = event {
            if h.channel != Channel::Telemetry {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_slice(&f.payload).expect("telemetry is JSON");
            let signal = v["modem"]["signal_dbm"].as_i64();
            let lat = v["gnss"]["lat"].as_f64();
            if let (Some(signal), Some(lat)) = (signal, lat) {
                found = Some((signal, lat, v));
            }
        }
    }
    let (signal, lat, sample) = found.expect("found");
    assert!((-113..=-51).contains(&signal), "plausible dBm: {signal}");
    assert!(
        (lat - 35.6586).abs() < 0.05,
        "position near the configured spot: {lat}"
    );
    assert_eq!(sample["modem"]["technology"], "LTE");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), camera)
        .await
        .expect("camera app stops on cancel")
        .expect("task")
        .expect("clean exit");
    equipment.cancel();
    modem.join().await;
    let _ = gnss.await;
    server.stop().await;
}
