//! `hw::modem::start` as the firmware calls it: a `[modem]` table with a
//! simulated scenario brings the modem up and publishes the status.

use std::time::Duration;

use kodama_firmware::hw::modem::{start, ModemConfig, ModemState, Registration, SimState};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn simulated_modem_from_config_comes_up_and_stops() {
    let cfg: ModemConfig = toml::from_str(
        "enabled = true\nsimulated = \"healthy\"\napn = \"internet\"\npoll_interval_ms = 200\n",
    )
    .expect("valid [modem] table");
    let cancel = CancellationToken::new();
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
    assert!(h.sim.as_ref().is_some_and(|sim| sim.stats().commands > 10));
    let json = serde_json::to_value(&s).expect("status serialises");
    assert_eq!(json["technology"], "LTE");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), h.join())
        .await
        .expect("stops when cancelled");
}
