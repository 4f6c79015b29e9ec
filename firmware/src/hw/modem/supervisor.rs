//! Modem supervisor: bring-up, periodic status polling, recovery.
//!
//! Channels:
//! - out: `watch::Sender<ModemStatus>` (latest status for telemetry; readers
//!   never block the supervisor);
//! - in: the AT driver's URC `broadcast` (registration / SIM / reboot URCs
//!   update the status between polls).
//!
//! Cancellation: [`Supervisor::run`] returns when its token fires; the AT
//! driver runs on a child token and stops with it. Every wait is bounded by a
//! command timeout, the poll interval or the recovery policy's deadline.
//!
//! The recovery decisions live in the sans-IO [`RecoveryPolicy`]; this file
//! only performs them (and logs each step).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{self, AtClient, OpenError};
use super::digest::CmeError;
use super::engine::{AtCommand, CommandError, ParseError};
use super::policy::{Action, RecoveryConfig, RecoveryPolicy};
use super::sim7600::{
    Cclk, CfunReset, CgpsQuery, CgpsStart, Cmee, CopsQuery, CpinQuery, Cpsi, Csq, CtzuOn, Echo,
    Identify, RegQuery, Registration, RmnetQuery, RmnetStart, SetApn, SimState, Sync, Urc,
};
use super::ModemConfig;
use crate::hw::gpio::{OutputPin, Pwrkey};

/// Lifecycle of the modem as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModemState {
    /// `enabled = false`.
    Disabled,
    /// Bring-up in progress (or waiting to retry it).
    #[default]
    Starting,
    /// Brought up; polling.
    Ready,
    /// Not answering; resetting / power-cycling.
    Recovering,
}

/// Everything telemetry reports about the modem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ModemStatus {
    /// Lifecycle state.
    pub state: ModemState,
    /// SIM state (`+CPIN?`).
    pub sim: SimState,
    /// Best of CS (`+CREG?`) and EPS (`+CEREG?`) registration.
    pub registration: Registration,
    /// `+CPSI?` system mode (`LTE`, `WCDMA`, `GSM`, `NO SERVICE`).
    pub technology: Option<String>,
    /// `+CPSI?` band (`EUTRAN-BAND3`…).
    pub band: Option<String>,
    /// `+COPS?` operator name.
    pub operator: Option<String>,
    /// `+CPSI?` MCC-MNC.
    pub mcc_mnc: Option<String>,
    /// RSSI in dBm from `+CSQ`.
    pub signal_dbm: Option<i32>,
    /// Raw `+CSQ` RSSI (0–31, 99 unknown).
    pub csq: Option<u8>,
    /// GNSS engine running (`+CGPS?`).
    pub gnss_on: bool,
    /// RMNET data call up (`$QCRMCALL?`).
    pub data_session_up: bool,
    /// Network time from `+CCLK?` (RFC 3339), once set by NITZ.
    pub network_time: Option<String>,
    /// Model line from `ATI`.
    pub model: Option<String>,
    /// Last command failure or recovery step, human readable.
    pub last_error: Option<String>,
    /// `AT+CFUN=1,1` resets performed.
    pub at_resets: u32,
    /// PWRKEY power cycles performed.
    pub power_cycles: u32,
    /// Recovery episodes that ended with the modem answering.
    pub recoveries: u32,
    /// URCs received.
    pub urcs_seen: u64,
    /// Typed `+CME ERROR`s received.
    pub cme_errors: u64,
    /// Noise bytes dropped by the digester.
    pub garbage_bytes: u64,
}

/// Supervisor knobs (from [`ModemConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorOptions {
    /// APN to set on PDP context 1.
    pub apn: Option<String>,
    /// Start GNSS.
    pub gnss: bool,
    /// Bring up the RMNET data call.
    pub data_session: bool,
    /// Cap on every command's timeout.
    pub command_timeout: Duration,
    /// Poll period.
    pub poll_interval: Duration,
    /// Recovery ladder.
    pub recovery: RecoveryConfig,
}

impl SupervisorOptions {
    /// From the `[modem]` config; `has_pwrkey` says whether a pin is wired.
    pub fn from_config(cfg: &ModemConfig, has_pwrkey: bool) -> Self {
        Self {
            apn: cfg.apn.clone(),
            gnss: cfg.gnss,
            data_session: cfg.data_session,
            command_timeout: Duration::from_millis(cfg.command_timeout_ms),
            poll_interval: Duration::from_millis(cfg.poll_interval_ms),
            recovery: RecoveryConfig {
                max_timeouts: cfg.max_timeouts,
                reboot_wait: Duration::from_millis(cfg.reboot_wait_ms),
                backoff_base: Duration::from_millis(cfg.backoff_base_ms),
                backoff_max: Duration::from_millis(cfg.backoff_max_ms),
                has_pwrkey,
            },
        }
    }
}

/// Opens the AT port (again after a reset: USB modems re-enumerate).
pub trait Connector: Send + 'static {
    /// A fresh client; its driver must stop when `cancel` fires.
    fn connect(&mut self, cancel: CancellationToken) -> Result<AtClient, OpenError>;
}

/// Opens a serial port (or a pty) with tokio-serial.
#[derive(Debug, Clone)]
pub struct SerialConnector {
    path: PathBuf,
    baud: u32,
}

impl SerialConnector {
    /// For `path` at `baud`.
    pub fn new(path: PathBuf, baud: u32) -> Self {
        Self { path, baud }
    }
}

impl Connector for SerialConnector {
    fn connect(&mut self, cancel: CancellationToken) -> Result<AtClient, OpenError> {
        let port = client::open_serial(&self.path, self.baud)?;
        let (client, task) = client::spawn(port, cancel);
        let path = self.path.display().to_string();
        tokio::spawn(async move {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(port = %path, error = %e, "AT driver stopped"),
                Err(e) => tracing::error!(port = %path, error = %e, "AT driver panicked"),
            }
        });
        Ok(client)
    }
}

/// A PWRKEY type for builds/uses without one (uninhabited).
#[derive(Debug)]
pub enum NoPin {}

impl embedded_hal::digital::ErrorType for NoPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        match *self {}
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        match *self {}
    }
}

/// A command with its timeout capped.
struct Capped<'a, C> {
    cmd: &'a C,
    max: Duration,
}

impl<C: AtCommand> AtCommand for Capped<'_, C> {
    type Response = C::Response;
    fn text(&self) -> String {
        self.cmd.text()
    }
    fn timeout(&self) -> Duration {
        self.cmd.timeout().min(self.max)
    }
    fn attempts(&self) -> u8 {
        self.cmd.attempts()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.cmd.payload()
    }
    fn parse(&self, lines: &[String]) -> Result<Self::Response, ParseError> {
        self.cmd.parse(lines)
    }
}

/// The supervisor. Build with [`Supervisor::new`], run with [`Supervisor::run`].
#[derive(Debug)]
pub struct Supervisor<C, P> {
    connector: C,
    client: Option<AtClient>,
    conn_cancel: CancellationToken,
    urcs: Option<broadcast::Receiver<String>>,
    pwrkey: Option<Pwrkey<P>>,
    opts: SupervisorOptions,
    policy: RecoveryPolicy,
    status: ModemStatus,
    tx: watch::Sender<ModemStatus>,
    cancel: CancellationToken,
    need_bringup: bool,
}

/// The modem stopped answering in the middle of a sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("modem not answering; recovery pending")]
pub struct Hung;

impl<C: Connector, P: OutputPin + Send> Supervisor<C, P> {
    /// A supervisor and the receiver of its status.
    pub fn new(
        connector: C,
        pwrkey: Option<Pwrkey<P>>,
        mut opts: SupervisorOptions,
        cancel: CancellationToken,
    ) -> (watch::Receiver<ModemStatus>, Self) {
        opts.recovery.has_pwrkey = pwrkey.is_some();
        let (tx, rx) = watch::channel(ModemStatus::default());
        let sup = Self {
            connector,
            client: None,
            conn_cancel: cancel.child_token(),
            urcs: None,
            pwrkey,
            policy: RecoveryPolicy::new(opts.recovery),
            opts,
            status: ModemStatus::default(),
            tx,
            cancel,
            need_bringup: true,
        };
        (rx, sup)
    }

    /// The status as last computed.
    pub fn status(&self) -> &ModemStatus {
        &self.status
    }

    fn publish(&mut self) {
        self.status.at_resets = self.policy.at_resets();
        self.status.power_cycles = self.policy.power_cycles();
        self.status.recoveries = self.policy.recoveries();
        if let Some(c) = &self.client {
            self.status.garbage_bytes = c.stats().garbage_bytes;
        }
        let new = self.status.clone();
        self.tx.send_if_modified(|s| {
            let changed = *s != new;
            *s = new;
            changed
        });
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    fn client(&mut self) -> Result<AtClient, CommandError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        self.conn_cancel = self.cancel.child_token();
        match self.connector.connect(self.conn_cancel.clone()) {
            Ok(c) => {
                self.urcs = Some(c.subscribe());
                self.client = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open modem port");
                self.status.last_error = Some(e.to_string());
                Err(CommandError::Closed {
                    command: "open".into(),
                })
            }
        }
    }

    fn drop_connection(&mut self) {
        self.conn_cancel.cancel();
        self.client = None;
        self.urcs = None;
    }

    /// Send one command, feed the policy, record failures.
    async fn exec<Cmd: AtCommand>(&mut self, cmd: &Cmd) -> Result<Cmd::Response, CommandError> {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                self.policy.on_timeout(Self::now());
                return Err(e);
            }
        };
        let capped = Capped {
            cmd,
            max: self.opts.command_timeout,
        };
        let r = client.send_cancellable(&capped, &self.cancel).await;
        self.drain_urcs();
        let now = Self::now();
        match &r {
            Ok(_) => self.policy.on_answer(now),
            Err(CommandError::Cancelled { .. }) => return r,
            Err(e) if e.is_timeout() => self.policy.on_timeout(now),
            Err(CommandError::Closed { .. }) => {
                self.drop_connection();
                self.policy.on_timeout(now);
            }
            Err(_) => self.policy.on_answer(now),
        }
        if let Err(e) = &r {
            if e.cme().is_some() {
                self.status.cme_errors += 1;
            }
            tracing::debug!(error = %e, "modem command failed");
            self.status.last_error = Some(e.to_string());
        }
        r
    }

    fn hung(&self) -> Result<(), Hung> {
        if self.policy.is_healthy() && !self.cancel.is_cancelled() {
            Ok(())
        } else {
            Err(Hung)
        }
    }

    async fn check_sim(&mut self) -> Result<(), Hung> {
        self.status.sim = match self.exec(&CpinQuery).await {
            Ok(s) => s,
            Err(e) => match e.cme() {
                Some(CmeError::SimNotInserted) => SimState::Absent,
                Some(CmeError::SimPinRequired) => SimState::PinRequired,
                Some(CmeError::SimPukRequired) => SimState::PukRequired,
                // SIM busy right after boot: keep what we knew, ask again next poll.
                Some(CmeError::SimBusy) => self.status.sim.clone(),
                Some(other) => SimState::Other(other.to_string()),
                None => {
                    self.hung()?;
                    self.status.sim.clone()
                }
            },
        };
        self.hung()
    }

    /// Bring the modem up: sync, echo off, numeric errors, SIM, then (when
    /// `configure`) time zone updates, APN and GNSS, then one poll. With
    /// `configure = false` nothing is changed on the modem beyond echo and
    /// error format (what `diag modem` wants).
    pub async fn bring_up(&mut self, configure: bool) -> Result<(), CommandError> {
        self.status.state = ModemState::Starting;
        self.publish();
        tracing::info!("modem bring-up");
        self.exec(&Sync).await?;
        self.exec(&Echo(false)).await?;
        // Numeric +CME ERROR codes (mapped to names by the digester).
        let _ = self.exec(&Cmee(1)).await;
        if let Ok(lines) = self.exec(&Identify).await {
            self.status.model = lines
                .iter()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
                .or_else(|| lines.first().cloned());
        }
        let timeout = self.opts.command_timeout;
        let hung = move |_: Hung| CommandError::Timeout {
            command: "bring-up".into(),
            timeout,
        };
        self.check_sim().await.map_err(hung)?;
        if configure {
            let _ = self.exec(&CtzuOn).await;
            if let (Some(apn), SimState::Ready) = (self.opts.apn.clone(), &self.status.sim) {
                match SetApn::new(&apn) {
                    Ok(cmd) => {
                        let _ = self.exec(&cmd).await;
                    }
                    Err(e) => self.status.last_error = Some(e.to_string()),
                }
            }
            self.hung().map_err(hung)?;
            if self.opts.gnss {
                self.ensure_gnss().await.map_err(hung)?;
            }
        }
        self.poll(configure).await.map_err(hung)?;
        self.status.state = ModemState::Ready;
        self.publish();
        tracing::info!(
            sim = ?self.status.sim,
            registration = ?self.status.registration,
            technology = ?self.status.technology,
            signal_dbm = ?self.status.signal_dbm,
            "modem ready"
        );
        Ok(())
    }

    async fn ensure_gnss(&mut self) -> Result<(), Hung> {
        match self.exec(&CgpsQuery).await {
            Ok(true) => self.status.gnss_on = true,
            Ok(false) => {
                self.status.gnss_on = self.exec(&CgpsStart).await.is_ok();
                if self.status.gnss_on {
                    tracing::info!("GNSS started (AT+CGPS=1)");
                }
            }
            Err(_) => {}
        }
        self.hung()
    }

    /// One status poll.
    async fn poll(&mut self, configure: bool) -> Result<(), Hung> {
        if self.status.sim != SimState::Ready {
            self.check_sim().await?;
        }
        if let Ok(q) = self.exec(&Csq).await {
            self.status.csq = Some(q.rssi);
            self.status.signal_dbm = q.dbm();
        }
        self.hung()?;
        // Registration before +CPSI?/+COPS?, so the three describe the same moment
        // as closely as a polled interface allows.
        let creg = self.exec(&RegQuery { eps: false }).await.ok();
        self.hung()?;
        let cereg = self.exec(&RegQuery { eps: true }).await.ok();
        self.hung()?;
        if creg.is_some() || cereg.is_some() {
            self.status.registration = creg.unwrap_or_default().best(cereg.unwrap_or_default());
        }
        if let Ok(info) = self.exec(&Cpsi).await {
            let in_service = info.in_service();
            self.status.technology = Some(info.technology);
            self.status.band = info.band;
            self.status.mcc_mnc = info.mcc_mnc;
            if !in_service {
                self.status.operator = None;
            }
        }
        self.hung()?;
        if let Ok(op) = self.exec(&CopsQuery).await {
            self.status.operator = op.name;
        }
        self.hung()?;
        if let Ok(t) = self.exec(&Cclk).await {
            self.status.network_time = t;
        }
        self.hung()?;
        if !configure || !self.opts.gnss {
            if let Ok(on) = self.exec(&CgpsQuery).await {
                self.status.gnss_on = on;
            }
            self.hung()?;
        }
        if self.status.registration.registered() && self.status.sim == SimState::Ready {
            let mut up = self.exec(&RmnetQuery).await.unwrap_or(false);
            self.hung()?;
            if !up && configure && self.opts.data_session {
                tracing::info!("starting data session (AT$QCRMCALL=1,1)");
                up = self.exec(&RmnetStart).await.is_ok();
                self.hung()?;
            }
            self.status.data_session_up = up;
        } else {
            self.status.data_session_up = false;
        }
        self.publish();
        Ok(())
    }

    fn drain_urcs(&mut self) {
        let Some(mut rx) = self.urcs.take() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(line) => self.on_urc(&line),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.status.urcs_seen += n,
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.publish();
                    return;
                }
            }
        }
        self.urcs = Some(rx);
    }

    fn on_urc(&mut self, line: &str) {
        self.status.urcs_seen += 1;
        match Urc::parse(line) {
            Urc::Ready if self.policy.is_healthy() && !self.need_bringup => {
                tracing::warn!("modem rebooted on its own (RDY); bringing it up again");
                self.need_bringup = true;
            }
            Urc::Sim(s) => self.status.sim = s,
            Urc::Registration(r) => self.status.registration = r,
            _ => {}
        }
    }

    /// Wait `dur`, handling URCs; false when cancelled.
    async fn idle(&mut self, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        loop {
            let mut rx = self.urcs.take();
            let got = tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline) => { self.urcs = rx; return true }
                r = async {
                    match rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => r,
            };
            match got {
                Ok(line) => {
                    self.urcs = rx;
                    self.on_urc(&line);
                    self.publish();
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.urcs = rx;
                    self.status.urcs_seen += n;
                }
                Err(broadcast::error::RecvError::Closed) => {}
            }
        }
    }

    async fn perform(&mut self, action: Action) {
        self.status.state = ModemState::Recovering;
        match action {
            Action::ResetByAt => {
                tracing::warn!("modem not answering: resetting with AT+CFUN=1,1");
                self.status.last_error = Some("modem not answering; AT+CFUN=1,1 reset".into());
                self.publish();
                if let Ok(c) = self.client() {
                    let cmd = Capped {
                        cmd: &CfunReset,
                        max: self.opts.command_timeout,
                    };
                    match c.send_cancellable(&cmd, &self.cancel).await {
                        Ok(()) => tracing::info!("AT+CFUN=1,1 accepted; waiting for reboot"),
                        Err(e) => tracing::warn!(error = %e, "AT+CFUN=1,1 not answered"),
                    }
                }
                // USB modems re-enumerate on reset: reopen the port afterwards.
                self.drop_connection();
            }
            Action::PowerCycle { attempt } => {
                self.drop_connection();
                self.status.last_error =
                    Some(format!("modem still dead; PWRKEY power cycle #{attempt}"));
                self.publish();
                match self.pwrkey.as_mut() {
                    Some(key) => {
                        tracing::warn!(
                            attempt,
                            "modem still not answering: power-cycling via PWRKEY"
                        );
                        if let Err(e) = key.power_cycle(&self.cancel).await {
                            tracing::error!(error = %e, "PWRKEY power cycle failed");
                        }
                    }
                    None => tracing::error!("power cycle requested but no PWRKEY pin"),
                }
            }
            Action::Probe => {
                let answered = match self.client() {
                    Ok(c) => {
                        let cmd = Capped {
                            cmd: &Sync,
                            max: self.opts.command_timeout,
                        };
                        match c.send_cancellable(&cmd, &self.cancel).await {
                            Ok(()) => true,
                            Err(CommandError::Rejected { .. }) => true,
                            Err(CommandError::Closed { .. }) => {
                                self.drop_connection();
                                false
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                };
                self.policy.on_probe(answered, Self::now());
                if answered {
                    tracing::info!("modem answers again after recovery");
                    self.need_bringup = true;
                    self.status.last_error = None;
                } else {
                    tracing::warn!(
                        next_in = ?self.policy.poll_timeout().map(|t| t.saturating_duration_since(Self::now())),
                        "modem still not answering after recovery step"
                    );
                }
            }
        }
        self.publish();
    }

    /// Run until cancelled: bring-up, then poll every `poll_interval`;
    /// recover when the modem stops answering.
    pub async fn run(mut self) {
        while !self.cancel.is_cancelled() {
            if let Some(action) = self.policy.poll_action(Self::now()) {
                self.perform(action).await;
                continue;
            }
            if !self.policy.is_healthy() {
                let wait = self
                    .policy
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(Self::now()))
                    .unwrap_or(self.opts.poll_interval);
                if !self.idle(wait).await {
                    break;
                }
                continue;
            }
            if self.need_bringup {
                match self.bring_up(true).await {
                    Ok(()) => self.need_bringup = false,
                    Err(e) => tracing::warn!(error = %e, "modem bring-up failed"),
                }
            } else if self.poll(true).await.is_ok() && self.status.state != ModemState::Ready {
                self.status.state = ModemState::Ready;
                self.publish();
            }
            if self.policy.action_due() {
                continue;
            }
            if !self.idle(self.opts.poll_interval).await {
                break;
            }
        }
        self.drop_connection();
        tracing::debug!("modem supervisor stopped");
    }
}
