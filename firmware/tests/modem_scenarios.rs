//! The real AT engine and supervisor against the pty SIM7600 simulator, one
//! test per scripted scenario. Real I/O, so real (short) time: each test is
//! bounded by `WAIT`.

use std::path::PathBuf;
use std::time::Duration;

use kodama_firmware::hw::gpio::{PinProbe, Pwrkey, PwrkeyTiming, RecordingPin};
use kodama_firmware::hw::modem::policy::RecoveryConfig;
use kodama_firmware::hw::modem::supervisor::{
    ModemState, ModemStatus, SerialConnector, Supervisor, SupervisorOptions,
};
use kodama_firmware::hw::modem::{Registration, SimState};
use kodama_sim::modem::{spawn_with, Scenario, SimHandle, SimOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

struct Rig {
    status: watch::Receiver<ModemStatus>,
    sim: SimHandle,
    probe: PinProbe,
    cancel: CancellationToken,
    sup: JoinHandle<()>,
}

fn options() -> SupervisorOptions {
    SupervisorOptions {
        apn: Some("internet".into()),
        gnss: true,
        data_session: true,
        command_timeout: Duration::from_millis(200),
        poll_interval: Duration::from_millis(100),
        recovery: RecoveryConfig {
            max_timeouts: 3,
            reboot_wait: Duration::from_millis(400),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            has_pwrkey: true,
        },
    }
}

fn rig(opts: SimOptions) -> Rig {
    let cancel = CancellationToken::new();
    let (path, sim): (PathBuf, SimHandle) =
        spawn_with(opts, cancel.child_token()).expect("pty simulator starts");
    let probe = sim.pwrkey_probe();
    let timing = PwrkeyTiming {
        off_hold: Duration::from_millis(60),
        off_settle: Duration::from_millis(30),
        on_hold: Duration::from_millis(40),
    };
    let key: Pwrkey<RecordingPin> =
        Pwrkey::new(sim.pwrkey_pin(), true, timing).expect("pin double never fails");
    let (status, sup) = Supervisor::new(
        SerialConnector::new(path, 115_200),
        Some(key),
        options(),
        cancel.child_token(),
    );
    let sup = tokio::spawn(sup.run());
    Rig {
        status,
        sim,
        probe,
        cancel,
        sup,
    }
}

impl Rig {
    /// Wait until the published status satisfies `pred`.
    async fn until(&mut self, what: &str, pred: impl Fn(&ModemStatus) -> bool) -> ModemStatus {
        let r = tokio::time::timeout(WAIT, self.status.wait_for(|s| pred(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match r {
            Ok(Ok(s)) => s,
            _ => panic!(
                "timed out waiting for {what}; last status {:#?}; sim {:?}",
                *self.status.borrow(),
                self.sim.stats()
            ),
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.sup)
            .await
            .expect("supervisor stops when cancelled")
            .expect("supervisor task did not panic");
        self.sim.join().await;
    }
}

fn fully_up(s: &ModemStatus) -> bool {
    s.state == ModemState::Ready
        && s.sim == SimState::Ready
        && s.registration == Registration::Home
        && s.data_session_up
        && s.gnss_on
        && s.operator.is_some()
        && s.signal_dbm.is_some()
}

fn assert_healthy_fields(s: &ModemStatus) {
    assert_eq!(s.technology.as_deref(), Some("LTE"));
    assert_eq!(s.band.as_deref(), Some("EUTRAN-BAND3"));
    assert_eq!(s.mcc_mnc.as_deref(), Some("001-01"));
    assert_eq!(s.operator.as_deref(), Some("Kodama Test Network"));
    let dbm = s.signal_dbm.expect("signal reported");
    assert!((-73..=-63).contains(&dbm), "{dbm} dBm from CSQ 20..=25");
    assert_eq!(s.model.as_deref(), Some("SIMCOM_SIM7600E-H"));
    assert!(
        s.network_time
            .as_deref()
            .is_some_and(|t| t.starts_with("20")),
        "{:?}",
        s.network_time
    );
}

#[tokio::test]
async fn healthy() {
    let mut r = rig(SimOptions::fast(Scenario::Healthy));
    let s = r.until("fully up", fully_up).await;
    assert_healthy_fields(&s);
    assert_eq!(s.last_error, None);
    assert_eq!((s.at_resets, s.power_cycles), (0, 0));
    assert!(r.probe.high_pulses().is_empty());
    r.stop().await;
}

#[tokio::test]
async fn slow_registration() {
    let mut r = rig(SimOptions::fast(Scenario::SlowRegistration));
    let s = r
        .until("searching", |s| s.registration == Registration::Searching)
        .await;
    assert!(!s.data_session_up);
    assert_eq!(s.technology.as_deref(), Some("NO SERVICE"));
    let s = r.until("registered with data", fully_up).await;
    assert_healthy_fields(&s);
    r.stop().await;
}

#[tokio::test]
async fn no_sim() {
    let mut r = rig(SimOptions::fast(Scenario::NoSim));
    let s = r
        .until("no SIM reported", |s| {
            s.state == ModemState::Ready && s.sim == SimState::Absent
        })
        .await;
    assert_eq!(s.registration, Registration::NotRegistered);
    assert!(!s.data_session_up);
    assert!(s.gnss_on, "GNSS works without a SIM");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("SIM not inserted")),
        "{:?}",
        s.last_error
    );
    r.stop().await;
}

#[tokio::test]
async fn signal_loss_then_recovery() {
    let mut r = rig(SimOptions::fast(Scenario::SignalLoss));
    r.until("up", fully_up).await;
    let s = r
        .until("signal lost", |s| {
            s.signal_dbm.is_none() && s.registration == Registration::Searching
        })
        .await;
    assert_eq!(s.csq, Some(99));
    assert!(!s.data_session_up);
    assert_eq!(s.operator, None);
    let s = r.until("back", fully_up).await;
    assert_healthy_fields(&s);
    r.stop().await;
}

#[tokio::test]
async fn random_cme_errors() {
    let mut r = rig(SimOptions::fast(Scenario::RandomCmeErrors));
    let s = r
        .until("up despite errors, errors seen", |s| {
            fully_up(s) && s.cme_errors > 0
        })
        .await;
    assert_eq!(s.at_resets, 0, "errors are answers, not hangs");
    assert!(r.sim.stats().cme_injected > 0);
    r.stop().await;
}

#[tokio::test]
async fn urcs_in_the_middle_of_responses() {
    let mut r = rig(SimOptions::fast(Scenario::UrcMidResponse));
    let s = r
        .until("up with URCs delivered", |s| {
            fully_up(s) && s.urcs_seen >= 10
        })
        .await;
    assert_healthy_fields(&s);
    assert!(r.sim.stats().urcs_injected >= 10);
    r.stop().await;
}

#[tokio::test]
async fn garbage_bytes() {
    let mut r = rig(SimOptions::fast(Scenario::Garbage));
    let s = r
        .until("up, garbage dropped", |s| {
            fully_up(s) && s.garbage_bytes > 0
        })
        .await;
    assert_healthy_fields(&s);
    assert!(r.sim.stats().garbage_bursts > 0);
    r.stop().await;
}

#[tokio::test]
async fn hang_recovered_by_at_reset() {
    let mut r = rig(SimOptions::fast(Scenario::HangNeedsAtReset));
    let s = r
        .until("recovered by AT+CFUN=1,1", |s| {
            s.recoveries >= 1 && fully_up(s)
        })
        .await;
    assert_eq!(s.at_resets, 1);
    assert_eq!(s.power_cycles, 0);
    assert!(r.probe.high_pulses().is_empty(), "PWRKEY untouched");
    let st = r.sim.stats();
    assert_eq!((st.hangs, st.cfun_resets, st.power_offs), (1, 1, 0));
    r.stop().await;
}

#[tokio::test]
async fn hang_recovered_by_pwrkey() {
    let mut r = rig(SimOptions::fast(Scenario::HangNeedsPwrkey));
    let s = r
        .until("recovered by PWRKEY", |s| s.recoveries >= 1 && fully_up(s))
        .await;
    assert_eq!(s.at_resets, 1, "AT reset tried first");
    assert_eq!(s.power_cycles, 1);
    let pulses = r.probe.high_pulses();
    assert_eq!(pulses.len(), 2, "off pulse then on pulse: {pulses:?}");
    assert!(pulses[0].1 >= Duration::from_millis(60));
    assert!(pulses[1].1 >= Duration::from_millis(40));
    let st = r.sim.stats();
    assert_eq!(
        (st.hangs, st.cfun_resets, st.power_offs, st.power_ons),
        (1, 0, 1, 1)
    );
    r.stop().await;
}

/// The module reboots on its own mid-session (a supply brown-out): the data
/// session and the GNSS engine die with it, and the supervisor — the only
/// writer on the AT port — notices and brings both back without help.
#[tokio::test]
async fn brown_out_mid_session_brings_data_and_gnss_back() {
    let mut r = rig(SimOptions::fast(Scenario::Healthy));
    r.until("fully up", fully_up).await;
    let before = r.sim.stats();
    assert!(before.data_session_up && before.gnss_on && before.apn_set);
    r.sim.brown_out();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = r.sim.stats();
        if st.brown_outs == 1 && st.data_session_up && st.gnss_on {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "data session and GNSS not restarted after the brown-out: sim {st:?}, status {:#?}",
            *r.status.borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = r.until("fully up again", fully_up).await;
    assert_healthy_fields(&s);
    assert_eq!(s.power_cycles, 0, "a reboot needs no PWRKEY");
    r.stop().await;
}
