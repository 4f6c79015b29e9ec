//! A SIM7600 on a pseudo-terminal: test equipment for the AT engine.
//!
//! [`spawn`] opens a pty, puts it in raw mode and serves the SIM7600 dialect on
//! the master side; the engine opens the slave path exactly like a real serial
//! port. The dialect follows the SIM7500/SIM7600 AT Command Manual: echo on
//! until `ATE0` (character echo of the command line), `<CR><LF>`-framed
//! information lines and result codes (V.250 §5.7.1), `+CME ERROR` in the
//! format chosen by `AT+CMEE`, `RDY` / `+CPIN: READY` / `SMS DONE` / `PB DONE`
//! after boot, `+CFUN=1,1` rebooting, PWRKEY pulses powering off / on.
//!
//! Scenarios ([`Scenario`]) script faults; randomness comes from a seeded
//! ChaCha RNG, so a scenario with a seed always produces the same bytes for
//! the same command sequence. The modem logic ([`SimModem`]) is sans-IO; the
//! task in [`spawn_with`] only moves bytes between it and the pty and watches
//! the PWRKEY pin double ([`SimHandle::pwrkey_pin`]).
//!
//! Channels: the PWRKEY level arrives through the pin's `watch`; output to the
//! pty is written with a bounded wait (dropped, and counted, if nobody reads).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use kodama_firmware::hw::gpio::{PinProbe, RecordingPin};

/// Scripted behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Registered on LTE, good signal, everything works.
    Healthy,
    /// Searching (`<stat>` 2) for the first registration queries.
    SlowRegistration,
    /// No SIM: `+CPIN?` answers `+CME ERROR: 10`.
    NoSim,
    /// Registered, then signal and registration lost for a few polls, then back.
    SignalLoss,
    /// Random `+CME ERROR`s on a fifth of the extended commands.
    RandomCmeErrors,
    /// URCs inserted between information lines and result codes.
    UrcMidResponse,
    /// Random garbage bytes between frames.
    Garbage,
    /// Stops answering after some commands until `AT+CFUN=1,1`.
    HangNeedsAtReset,
    /// Stops answering after some commands; only a PWRKEY power cycle helps.
    HangNeedsPwrkey,
}

impl Scenario {
    /// Config / CLI names, in [`Scenario::ALL`] order.
    pub const NAMES: &'static [&'static str] = &[
        "healthy",
        "slow-registration",
        "no-sim",
        "signal-loss",
        "cme-errors",
        "urc-mid-response",
        "garbage",
        "hang-at-reset",
        "hang-pwrkey",
    ];

    /// Every scenario.
    pub const ALL: [Scenario; 9] = [
        Scenario::Healthy,
        Scenario::SlowRegistration,
        Scenario::NoSim,
        Scenario::SignalLoss,
        Scenario::RandomCmeErrors,
        Scenario::UrcMidResponse,
        Scenario::Garbage,
        Scenario::HangNeedsAtReset,
        Scenario::HangNeedsPwrkey,
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        let i = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Self::NAMES[i]
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| {
                format!(
                    "unknown modem scenario {s:?}; expected one of {}",
                    Self::NAMES.join(", ")
                )
            })
    }
}

/// Simulator knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// The script.
    pub scenario: Scenario,
    /// RNG seed.
    pub seed: u64,
    /// Reset / power-on to `RDY`.
    pub boot_delay: Duration,
    /// Commands answered before a hang scenario hangs.
    pub hang_after: u64,
    /// Registration queries answered "searching" in [`Scenario::SlowRegistration`].
    pub slow_registration_queries: u32,
    /// `AT+CSQ` queries after which [`Scenario::SignalLoss`] loses the signal,
    /// and for how many it stays lost.
    pub signal_loss_at: (u32, u32),
    /// Shortest PWRKEY pulse that powers the module on.
    pub pwrkey_on_min: Duration,
    /// Shortest PWRKEY pulse that powers a running module off.
    pub pwrkey_off_min: Duration,
    /// PWRKEY pin level that asserts PWRKEY (see `hw::gpio::Pwrkey`).
    pub pwrkey_active_high: bool,
}

impl SimOptions {
    /// Timings close to the real module's (the demo).
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            seed: 0x5157_7600,
            boot_delay: Duration::from_secs(3),
            hang_after: 60,
            slow_registration_queries: 6,
            signal_loss_at: (3, 3),
            pwrkey_on_min: Duration::from_millis(500),
            pwrkey_off_min: Duration::from_millis(2_500),
            pwrkey_active_high: true,
        }
    }

    /// Timings scaled down for tests (boot in 150 ms, PWRKEY thresholds 20/40 ms).
    pub fn fast(scenario: Scenario) -> Self {
        Self {
            boot_delay: Duration::from_millis(150),
            hang_after: 20,
            pwrkey_on_min: Duration::from_millis(20),
            pwrkey_off_min: Duration::from_millis(40),
            ..Self::new(scenario)
        }
    }
}

/// What the simulator did (for assertions and the demo's logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Command lines answered.
    pub commands: u64,
    /// Command lines ignored while hung / off / booting.
    pub ignored: u64,
    /// `AT+CFUN=1,1` resets.
    pub cfun_resets: u32,
    /// PWRKEY power-offs.
    pub power_offs: u32,
    /// PWRKEY power-ons.
    pub power_ons: u32,
    /// Hangs started.
    pub hangs: u32,
    /// `+CME ERROR`s injected.
    pub cme_injected: u32,
    /// URCs injected mid-response.
    pub urcs_injected: u32,
    /// Garbage bursts injected.
    pub garbage_bursts: u32,
    /// Bytes dropped because the pty was not read.
    pub dropped_output: u64,
    /// Unprompted reboots (a brown-out; [`SimHandle::brown_out`]).
    pub brown_outs: u32,
    /// The GNSS engine is on (`AT+CGPS=1`): the NMEA port streams.
    pub gnss_on: bool,
    /// The RMNET data call is up (`AT$QCRMCALL=1,1`).
    pub data_session_up: bool,
    /// An APN has been set on PDP context 1 (`AT+CGDCONT`) since start.
    pub apn_set: bool,
}

/// Errors starting or running the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// openpty / termios failed (no `/dev/ptmx`? in a container, mount devpts).
    #[error("cannot set up a pseudo-terminal: {0}")]
    Pty(#[from] tokio_serial::Error),
    /// The pty slave has no path name.
    #[error("pseudo-terminal slave has no name")]
    NoSlaveName,
    /// Registering the pty with tokio or reading it failed.
    #[error("pty I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Power {
    Off,
    Booting { until: Instant },
    On,
}

/// Longest command line accepted (the SIM7600 buffer is 1024 bytes too).
const MAX_CMD: usize = 1_024;

/// The SIM7600 model, sans-IO: bytes in, bytes out, `now` passed in.
#[derive(Debug)]
pub struct SimModem {
    opts: SimOptions,
    rng: ChaCha8Rng,
    power: Power,
    hung: bool,
    hung_once: bool,
    echo: bool,
    cmee: u8,
    line: Vec<u8>,
    line_overflow: bool,
    reg_queries: u32,
    csq_queries: u32,
    gps_on: bool,
    apn: String,
    data_up: bool,
    ctzu: bool,
    urc_turn: usize,
    pwrkey_since: Option<Instant>,
    stats: SimStats,
}

impl SimModem {
    /// A powered, booted module.
    pub fn new(opts: SimOptions) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            opts,
            power: Power::On,
            hung: false,
            hung_once: false,
            echo: true,
            cmee: 0,
            line: Vec::new(),
            line_overflow: false,
            reg_queries: 0,
            csq_queries: 0,
            gps_on: false,
            apn: String::new(),
            data_up: false,
            ctzu: false,
            urc_turn: 0,
            pwrkey_since: None,
            stats: SimStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        SimStats {
            gnss_on: self.gps_on && self.power == Power::On,
            data_session_up: self.data_up && self.power == Power::On,
            apn_set: !self.apn.is_empty(),
            ..self.stats
        }
    }

    /// The module reboots on its own (supply brown-out, firmware watchdog):
    /// everything volatile is lost and `RDY` follows after the boot delay.
    pub fn brown_out(&mut self, now: Instant) {
        self.stats.brown_outs += 1;
        self.reboot(now);
    }

    /// Whether it currently ignores commands.
    pub fn is_hung(&self) -> bool {
        self.hung
    }

    /// When [`SimModem::tick`] must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.power {
            Power::Booting { until } => Some(until),
            _ => None,
        }
    }

    fn reboot(&mut self, now: Instant) {
        self.power = Power::Booting {
            until: now + self.opts.boot_delay,
        };
        self.hung = false;
        self.echo = true;
        self.cmee = 0;
        self.gps_on = false;
        self.data_up = false;
        self.ctzu = false;
        self.line.clear();
    }

    /// Time passed: finish booting.
    pub fn tick(&mut self, now: Instant) -> Vec<u8> {
        match self.power {
            Power::Booting { until } if now >= until => {
                self.power = Power::On;
                let mut out = frame("RDY");
                if self.opts.scenario != Scenario::NoSim {
                    out.extend(frame("+CPIN: READY"));
                    out.extend(frame("SMS DONE"));
                    out.extend(frame("PB DONE"));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// The PWRKEY pin changed level.
    pub fn pwrkey(&mut self, level_high: bool, now: Instant) -> Vec<u8> {
        let asserted = level_high == self.opts.pwrkey_active_high;
        if asserted {
            self.pwrkey_since.get_or_insert(now);
            return Vec::new();
        }
        let Some(since) = self.pwrkey_since.take() else {
            return Vec::new();
        };
        let held = now.saturating_duration_since(since);
        match self.power {
            Power::On | Power::Booting { .. } if held >= self.opts.pwrkey_off_min => {
                self.power = Power::Off;
                self.hung = false;
                self.data_up = false;
                self.stats.power_offs += 1;
            }
            Power::Off if held >= self.opts.pwrkey_on_min => {
                self.stats.power_ons += 1;
                self.reboot(now);
            }
            _ => {}
        }
        Vec::new()
    }

    /// Bytes from the host.
    pub fn input(&mut self, data: &[u8], now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in data {
            if self.power != Power::On {
                continue;
            }
            if self.echo && !self.hung {
                out.push(b);
            }
            match b {
                b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    if std::mem::take(&mut self.line_overflow) {
                        out.extend(frame("ERROR"));
                        continue;
                    }
                    let cmd = String::from_utf8_lossy(&line).trim().to_string();
                    if cmd.is_empty() {
                        continue;
                    }
                    out.extend(self.command(&cmd, now));
                }
                b'\n' => {}
                _ => {
                    if self.line.len() >= MAX_CMD {
                        self.line_overflow = true;
                    } else {
                        self.line.push(b);
                    }
                }
            }
        }
        out
    }

    fn registered(&self) -> bool {
        match self.opts.scenario {
            Scenario::NoSim => false,
            Scenario::SlowRegistration => self.reg_queries > self.opts.slow_registration_queries,
            Scenario::SignalLoss => !self.signal_lost(),
            _ => true,
        }
    }

    fn signal_lost(&self) -> bool {
        let (at, len) = self.opts.signal_loss_at;
        self.opts.scenario == Scenario::SignalLoss
            && self.csq_queries > at
            && self.csq_queries <= at + len
    }

    fn cme(&self, code: u16, text: &str) -> String {
        match self.cmee {
            1 => format!("+CME ERROR: {code}"),
            2 => format!("+CME ERROR: {text}"),
            _ => "ERROR".into(),
        }
    }

    fn command(&mut self, cmd: &str, now: Instant) -> Vec<u8> {
        let upper = cmd.to_ascii_uppercase();
        if self.hung {
            self.stats.ignored += 1;
            if self.opts.scenario == Scenario::HangNeedsAtReset && upper == "AT+CFUN=1,1" {
                self.stats.cfun_resets += 1;
                self.reboot(now);
                return frame("OK");
            }
            return Vec::new();
        }
        let hang_scenario = matches!(
            self.opts.scenario,
            Scenario::HangNeedsAtReset | Scenario::HangNeedsPwrkey
        );
        if hang_scenario && !self.hung_once && self.stats.commands >= self.opts.hang_after {
            self.hung = true;
            self.hung_once = true;
            self.stats.hangs += 1;
            self.stats.ignored += 1;
            return Vec::new();
        }
        self.stats.commands += 1;

        if self.opts.scenario == Scenario::RandomCmeErrors
            && (upper.starts_with("AT+") || upper.starts_with("AT$"))
            && !upper.starts_with("AT+CMEE")
            && !upper.starts_with("AT+CFUN")
            && self.rng.random_bool(0.2)
        {
            const CODES: [(u16, &str); 4] = [
                (3, "operation not allowed"),
                (4, "operation not supported"),
                (14, "SIM busy"),
                (100, "unknown"),
            ];
            let (code, text) = CODES[self.rng.random_range(0..CODES.len())];
            self.stats.cme_injected += 1;
            let e = self.cme(code, text);
            return self.render(&[], &e);
        }

        let (info, result) = self.answer(cmd, &upper, now);
        let info: Vec<&str> = info.iter().map(String::as_str).collect();
        self.render(&info, &result)
    }

    /// Frame the answer, with the scenario's injections.
    fn render(&mut self, info: &[&str], result: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut frames: Vec<String> = info.iter().map(|s| s.to_string()).collect();
        if self.opts.scenario == Scenario::UrcMidResponse {
            const URCS: [&str; 4] = [
                "+CMTI: \"SM\",1",
                "RING",
                "+CTZV: +32,0",
                "+CGEV: ME PDN ACT 1",
            ];
            let urc = URCS[self.urc_turn % URCS.len()];
            self.urc_turn += 1;
            let at = if frames.is_empty() { 0 } else { 1 };
            frames.insert(at, urc.to_string());
            self.stats.urcs_injected += 1;
        }
        frames.push(result.to_string());
        for f in frames {
            if self.opts.scenario == Scenario::Garbage && self.rng.random_bool(0.4) {
                let n = self.rng.random_range(1..=8);
                // Line noise: bytes a UART shows at a glitch (no CR/LF, so a
                // burst never completes a line on its own).
                out.extend((0..n).map(|_| {
                    let b: u8 = self.rng.random();
                    if b == b'\r' || b == b'\n' {
                        0xff
                    } else {
                        b
                    }
                }));
                self.stats.garbage_bursts += 1;
            }
            out.extend(frame(&f));
        }
        out
    }

    fn answer(&mut self, cmd: &str, upper: &str, now: Instant) -> (Vec<String>, String) {
        let ok = |info: Vec<String>| (info, "OK".to_string());
        let err = || (Vec::new(), "ERROR".to_string());
        let sim = self.opts.scenario != Scenario::NoSim;
        match upper {
            "AT" => ok(vec![]),
            "ATE0" => {
                self.echo = false;
                ok(vec![])
            }
            "ATE1" => {
                self.echo = true;
                ok(vec![])
            }
            "ATI" => ok(vec![
                "Manufacturer: SIMCOM INCORPORATED".into(),
                "Model: SIMCOM_SIM7600E-H".into(),
                "Revision: SIM7600M22_V2.0".into(),
                "IMEI: 867584030000000".into(),
                "+GCAP: +CGSM".into(),
            ]),
            "AT+CMEE?" => ok(vec![format!("+CMEE: {}", self.cmee)]),
            "AT+CPIN?" if sim => ok(vec!["+CPIN: READY".into()]),
            "AT+CPIN?" => (vec![], self.cme(10, "SIM not inserted")),
            "AT+CSQ" => {
                self.csq_queries += 1;
                let rssi = if self.signal_lost() {
                    99
                } else {
                    self.rng.random_range(20..=25)
                };
                ok(vec![format!("+CSQ: {rssi},99")])
            }
            "AT+CPSI?" => ok(vec![if self.registered() {
                "+CPSI: LTE,Online,001-01,0x1A2B,27316237,320,EUTRAN-BAND3,1650,5,5,-94,-969,-659,14"
                    .into()
            } else {
                "+CPSI: NO SERVICE,Online".into()
            }]),
            "AT+CREG?" | "AT+CEREG?" => {
                self.reg_queries += 1;
                let stat = if self.registered() {
                    1
                } else if sim {
                    2
                } else {
                    0
                };
                let name = if upper == "AT+CREG?" {
                    "+CREG"
                } else {
                    "+CEREG"
                };
                ok(vec![format!("{name}: 0,{stat}")])
            }
            "AT+COPS?" => ok(vec![if self.registered() {
                "+COPS: 0,0,\"Kodama Test Network\",7".into()
            } else {
                "+COPS: 0".into()
            }]),
            "AT+CTZU=1" | "AT+CTZU=0" => {
                self.ctzu = upper.ends_with('1');
                ok(vec![])
            }
            "AT+CCLK?" => ok(vec![format!("+CCLK: \"{}\"", self.clock())]),
            "AT+CGPS?" => ok(vec![format!("+CGPS: {},1", u8::from(self.gps_on))]),
            "AT+CGPS=1" if self.gps_on => err(),
            "AT+CGPS=1" => {
                self.gps_on = true;
                ok(vec![])
            }
            "AT+CGPS=0" => {
                self.gps_on = false;
                ok(vec![])
            }
            "AT$QCRMCALL?" => ok(if self.data_up && self.registered() {
                vec!["$QCRMCALL: 1,V4".into()]
            } else {
                vec![]
            }),
            "AT$QCRMCALL=1,1" if !sim => (vec![], self.cme(10, "SIM not inserted")),
            "AT$QCRMCALL=1,1" if !self.registered() => err(),
            "AT$QCRMCALL=1,1" => {
                self.data_up = true;
                ok(vec!["$QCRMCALL: 1,V4".into()])
            }
            "AT+CFUN?" => ok(vec!["+CFUN: 1".into()]),
            "AT+CFUN=1,1" => {
                self.stats.cfun_resets += 1;
                self.reboot(now);
                ok(vec![])
            }
            "AT+CGDCONT?" => ok(vec![format!(
                "+CGDCONT: 1,\"IP\",\"{}\",\"0.0.0.0\",0,0",
                self.apn
            )]),
            _ if upper.starts_with("AT+CMEE=") => match upper["AT+CMEE=".len()..].parse::<u8>() {
                Ok(n) if n <= 2 => {
                    self.cmee = n;
                    ok(vec![])
                }
                _ => err(),
            },
            _ if upper.starts_with("AT+CGDCONT=1,\"IP\",\"") && upper.ends_with('"') => {
                let start = "AT+CGDCONT=1,\"IP\",\"".len();
                self.apn = cmd[start..cmd.len() - 1].to_string();
                ok(vec![])
            }
            _ => err(),
        }
    }

    /// The RTC: network time once registered with `AT+CTZU=1` (NITZ), the
    /// module's 1980 default epoch before.
    fn clock(&self) -> String {
        if self.ctzu && self.registered() {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
            let t = secs % 86_400;
            format!(
                "{:02}/{mo:02}/{d:02},{:02}:{:02}:{:02}+00",
                y.rem_euclid(100),
                t / 3600,
                t / 60 % 60,
                t % 60
            )
        } else {
            "80/01/06,00:00:00+00".into()
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn frame(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 4);
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(s.as_bytes());
    v.extend_from_slice(b"\r\n");
    v
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    path: PathBuf,
    pin: RecordingPin,
    probe: PinProbe,
    stats: Arc<Mutex<SimStats>>,
    glitch: tokio::sync::mpsc::Sender<()>,
    task: JoinHandle<Result<(), SimError>>,
}

impl SimHandle {
    /// Reboot the module unprompted, as a supply brown-out does (the data
    /// session and GNSS engine go down; `RDY` arrives after the boot delay).
    pub fn brown_out(&self) {
        let _ = self.glitch.try_send(());
    }

    /// The pty slave path (open it like `/dev/ttyUSB2`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A PWRKEY pin wired to this simulated module (give it to the supervisor).
    pub fn pwrkey_pin(&self) -> RecordingPin {
        self.pin.clone()
    }

    /// Observer of the PWRKEY pin (pulses, levels).
    pub fn pwrkey_probe(&self) -> PinProbe {
        self.probe.clone()
    }

    /// What the simulator has done so far.
    pub fn stats(&self) -> SimStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A reader of the live counters that outlives borrows of the handle
    /// (for a GNSS port that streams only while the engine is on).
    pub fn stats_reader(&self) -> impl Fn() -> SimStats + Send + Sync + 'static {
        let stats = self.stats.clone();
        move || *stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for the task to end (cancel its token first).
    pub async fn join(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "modem simulator failed"),
            Err(e) => tracing::error!(error = %e, "modem simulator panicked"),
        }
    }
}

/// Start a simulator with [`SimOptions::new`] timings. Inside a tokio runtime.
pub fn spawn(
    scenario: Scenario,
    cancel: CancellationToken,
) -> Result<(PathBuf, SimHandle), SimError> {
    spawn_with(SimOptions::new(scenario), cancel)
}

/// Start a simulator with explicit options. Inside a tokio runtime.
pub fn spawn_with(
    opts: SimOptions,
    cancel: CancellationToken,
) -> Result<(PathBuf, SimHandle), SimError> {
    use tokio_serial::SerialPort;
    // openpty through serialport: both ends in raw mode (no kernel echo, no
    // CR→LF translation), registered with tokio without any unsafe here.
    let (master, slave) = tokio_serial::SerialStream::pair()?;
    let path = slave
        .name()
        .map(PathBuf::from)
        .ok_or(SimError::NoSlaveName)?;
    let (pin, probe) = RecordingPin::new();
    let stats = Arc::new(Mutex::new(SimStats::default()));
    let model = SimModem::new(opts);
    let (glitch, glitches) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(serve(
        master,
        slave,
        model,
        Inputs {
            probe: probe.clone(),
            glitches,
        },
        stats.clone(),
        cancel,
    ));
    Ok((
        path.clone(),
        SimHandle {
            path,
            pin,
            probe,
            stats,
            glitch,
            task,
        },
    ))
}

/// How long output may wait for the pty to drain before it is dropped.
const WRITE_WAIT: Duration = Duration::from_millis(500);

/// What reaches the module besides the AT port.
struct Inputs {
    probe: PinProbe,
    glitches: tokio::sync::mpsc::Receiver<()>,
}

async fn serve(
    mut master: tokio_serial::SerialStream,
    // Held open so the master never sees a hang-up while the engine reopens.
    _slave: tokio_serial::SerialStream,
    mut model: SimModem,
    inputs: Inputs,
    stats: Arc<Mutex<SimStats>>,
    cancel: CancellationToken,
) -> Result<(), SimError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Inputs {
        probe,
        mut glitches,
    } = inputs;
    let mut level = probe.subscribe();
    let mut buf = [0u8; 512];
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    loop {
        while let Some(out) = pending.pop_front() {
            if out.is_empty() {
                continue;
            }
            match tokio::time::timeout(WRITE_WAIT, master.write_all(&out)).await {
                Ok(r) => r?,
                Err(_) => model.stats.dropped_output += out.len() as u64,
            }
        }
        *stats.lock().unwrap_or_else(|p| p.into_inner()) = model.stats();
        let deadline = model.next_deadline();
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = master.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                pending.push_back(model.input(&buf[..n], Instant::now()));
            }
            changed = level.changed() => {
                if changed.is_err() {
                    // Pin and probe dropped: PWRKEY can no longer change.
                    level = tokio::sync::watch::channel(false).1;
                    continue;
                }
                let high = *level.borrow_and_update();
                pending.push_back(model.pwrkey(high, Instant::now()));
            }
            _ = sleep_opt(deadline) => pending.push_back(model.tick(Instant::now())),
            Some(()) = glitches.recv() => model.brown_out(Instant::now()),
        }
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talk(m: &mut SimModem, cmd: &str) -> String {
        String::from_utf8_lossy(&m.input(format!("{cmd}\r").as_bytes(), Instant::now()))
            .into_owned()
    }

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert!("bogus".parse::<Scenario>().unwrap_err().contains("healthy"));
    }

    #[test]
    fn echo_until_ate0_and_framing() {
        let mut m = SimModem::new(SimOptions::fast(Scenario::Healthy));
        assert_eq!(talk(&mut m, "AT"), "AT\r\r\nOK\r\n");
        assert_eq!(talk(&mut m, "ATE0"), "ATE0\r\r\nOK\r\n");
        assert_eq!(talk(&mut m, "AT+CPIN?"), "\r\n+CPIN: READY\r\n\r\nOK\r\n");
        assert_eq!(talk(&mut m, "AT+BOGUS"), "\r\nERROR\r\n");
    }

    #[test]
    fn no_sim_error_follows_cmee() {
        let mut m = SimModem::new(SimOptions::fast(Scenario::NoSim));
        talk(&mut m, "ATE0");
        assert_eq!(talk(&mut m, "AT+CPIN?"), "\r\nERROR\r\n");
        talk(&mut m, "AT+CMEE=1");
        assert_eq!(talk(&mut m, "AT+CPIN?"), "\r\n+CME ERROR: 10\r\n");
        talk(&mut m, "AT+CMEE=2");
        assert_eq!(
            talk(&mut m, "AT+CPIN?"),
            "\r\n+CME ERROR: SIM not inserted\r\n"
        );
    }

    #[test]
    fn same_seed_same_bytes() {
        let run = || {
            let mut m = SimModem::new(SimOptions::fast(Scenario::Garbage));
            let mut out = Vec::new();
            for c in ["AT", "ATE0", "AT+CSQ", "AT+CPSI?", "AT+COPS?", "AT+CSQ"] {
                out.extend(m.input(format!("{c}\r").as_bytes(), Instant::now()));
            }
            out
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn hang_then_cfun_reboots() {
        let mut opts = SimOptions::fast(Scenario::HangNeedsAtReset);
        opts.hang_after = 2;
        let mut m = SimModem::new(opts);
        talk(&mut m, "ATE0");
        talk(&mut m, "AT");
        assert_eq!(talk(&mut m, "AT"), "", "hung");
        assert!(m.is_hung());
        assert_eq!(talk(&mut m, "AT+CSQ"), "");
        assert_eq!(talk(&mut m, "AT+CFUN=1,1"), "\r\nOK\r\n");
        assert_eq!(talk(&mut m, "AT"), "", "booting");
        let t = m.next_deadline().unwrap();
        let urcs = String::from_utf8(m.tick(t)).unwrap();
        assert!(urcs.starts_with("\r\nRDY\r\n"), "{urcs}");
        assert_eq!(
            talk(&mut m, "AT"),
            "AT\r\r\nOK\r\n",
            "echo back on after reboot"
        );
        assert_eq!(talk(&mut m, "AT"), "AT\r\r\nOK\r\n", "hangs only once");
    }

    #[test]
    fn pwrkey_power_cycles_a_hard_hang() {
        let mut opts = SimOptions::fast(Scenario::HangNeedsPwrkey);
        opts.hang_after = 0;
        let off = opts.pwrkey_off_min;
        let on = opts.pwrkey_on_min;
        let mut m = SimModem::new(opts);
        // The command that triggers the hang is echoed, then nothing more.
        assert_eq!(talk(&mut m, "AT"), "AT\r");
        assert_eq!(talk(&mut m, "AT+CFUN=1,1"), "", "CFUN ignored");
        let t0 = Instant::now();
        // Too-short pulse: nothing.
        m.pwrkey(true, t0);
        m.pwrkey(false, t0 + on);
        assert_eq!(m.stats().power_offs, 0);
        m.pwrkey(true, t0);
        m.pwrkey(false, t0 + off);
        assert_eq!(m.stats().power_offs, 1);
        m.pwrkey(true, t0 + off);
        m.pwrkey(false, t0 + off + on);
        assert_eq!(m.stats().power_ons, 1);
        let t = m.next_deadline().unwrap();
        assert!(!m.tick(t).is_empty());
        assert_eq!(talk(&mut m, "AT"), "AT\r\r\nOK\r\n");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_875), (2024, 6, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
