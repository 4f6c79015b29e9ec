//! The AT client over the pty simulator at command level: echo handling,
//! typed errors, URC delivery, timeouts of a hung modem, cancellation.

use std::time::Duration;

use kodama_firmware::hw::modem::client::{open_serial, spawn};
use kodama_firmware::hw::modem::digest::{CmeError, ResultCodeError};
use kodama_firmware::hw::modem::engine::CommandError;
use kodama_firmware::hw::modem::sim7600::{
    Cmee, CpinQuery, Cpsi, Csq, Echo, Identify, SimState, Sync,
};
use kodama_sim::modem::{spawn_with, Scenario, SimOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn echo_on_then_off_and_typed_errors() {
    let cancel = CancellationToken::new();
    let (path, sim) = spawn_with(SimOptions::fast(Scenario::NoSim), cancel.clone()).unwrap();
    let port = open_serial(&path, 115_200).unwrap();
    let (at, driver) = spawn(port, cancel.child_token());
    // Echo is on after boot; the digester drops it.
    at.send(&Sync).await.unwrap();
    let ident = at.send(&Identify).await.unwrap();
    assert_eq!(ident[1], "Model: SIMCOM_SIM7600E-H");
    at.send(&Echo(false)).await.unwrap();
    // CMEE=0: plain ERROR.
    let e = at.send(&CpinQuery).await.unwrap_err();
    assert!(
        matches!(
            e,
            CommandError::Rejected {
                error: ResultCodeError::Error,
                ..
            }
        ),
        "{e}"
    );
    at.send(&Cmee(1)).await.unwrap();
    let e = at.send(&CpinQuery).await.unwrap_err();
    assert_eq!(e.cme(), Some(&CmeError::SimNotInserted));
    at.send(&Cmee(2)).await.unwrap();
    let e = at.send(&CpinQuery).await.unwrap_err();
    assert_eq!(
        e.cme(),
        Some(&CmeError::SimNotInserted),
        "verbose form maps too"
    );
    let info = at.send(&Cpsi).await.unwrap();
    assert!(!info.in_service());
    cancel.cancel();
    driver.await.unwrap().unwrap();
    sim.join().await;
}

#[tokio::test]
async fn urcs_reach_subscribers_and_responses_stay_intact() {
    let cancel = CancellationToken::new();
    let (path, sim) =
        spawn_with(SimOptions::fast(Scenario::UrcMidResponse), cancel.clone()).unwrap();
    let (at, _driver) = spawn(open_serial(&path, 115_200).unwrap(), cancel.child_token());
    let mut urcs = at.subscribe();
    at.send(&Echo(false)).await.unwrap();
    for _ in 0..4 {
        let q = at.send(&Csq).await.unwrap();
        assert!((20..=25).contains(&q.rssi));
    }
    assert_eq!(at.send(&CpinQuery).await.unwrap(), SimState::Ready);
    let mut got = Vec::new();
    while let Ok(u) = urcs.try_recv() {
        got.push(u);
    }
    assert_eq!(got.len(), 6, "one URC per command: {got:?}");
    assert!(got.contains(&"RING".to_string()));
    assert!(got.contains(&"+CMTI: \"SM\",1".to_string()));
    cancel.cancel();
    sim.join().await;
}

#[tokio::test]
async fn hung_modem_times_out_and_send_is_cancellable() {
    let cancel = CancellationToken::new();
    let mut opts = SimOptions::fast(Scenario::HangNeedsAtReset);
    opts.hang_after = 1;
    let (path, sim) = spawn_with(opts, cancel.clone()).unwrap();
    let (at, _driver) = spawn(open_serial(&path, 115_200).unwrap(), cancel.child_token());
    at.send(&Echo(false)).await.unwrap();
    let t0 = std::time::Instant::now();
    let e = at.send(&Sync).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // Three attempts of 500 ms.
    assert!(t0.elapsed() >= Duration::from_millis(1_400));
    let call = CancellationToken::new();
    let c2 = call.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c2.cancel();
    });
    let e = at.send_cancellable(&Csq, &call).await.unwrap_err();
    assert!(matches!(e, CommandError::Cancelled { .. }), "{e}");
    assert!(sim.stats().hangs == 1);
    cancel.cancel();
    sim.join().await;
}
