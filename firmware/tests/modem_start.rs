//! `hw::modem::start` as the firmware calls it: a `[modem]` table naming a
//! port, served by the SIM7600 simulator (test equipment, outside the
//! firmware) on a pty, brings the modem up and publishes the status.

use std::time::Duration;

use kodama_firmware::hw::modem::{start, ModemConfig, ModemState, Registration, SimState};
use kodama_sim::modem::{spawn_with, Scenario, SimOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn modem_from_config_comes_up_on_its_port_and_stops() {
    let cancel = CancellationToken::new();
    let (port, sim) =
        spawn_with(SimOptions::fast(Scenario::Healthy), cancel.child_token()).expect("pty");
    let cfg: ModemConfig = toml::from_str(&format!(
        "enabled = true\nport = {:?}\napn = \"internet\"\npoll_interval_ms = 200\n",
        port.display().to_string()
    ))
    .expect("valid [modem] table");
    let mut h = start(&cfg, cancel.clone()).await.expect("starts");
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        h.status
            .wait_for(|s| s.state == ModemState::Ready && s.data_session_up),
    )
    .await
    .expect("ready within 10 s")
    .expect("supervisor alive")
    .clone();
    assert_eq!(s.sim, SimState::Ready);
    assert_eq!(s.registration, Registration::Home);
    assert!(s.gnss_on);
    let st = sim.stats();
    assert!(
        st.commands > 10 && st.apn_set && st.gnss_on && st.data_session_up,
        "{st:?}"
    );
    let json = serde_json::to_value(&s).expect("status serialises");
    assert_eq!(json["technology"], "LTE");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), h.join())
        .await
        .expect("stops when cancelled");
    sim.join().await;
}
