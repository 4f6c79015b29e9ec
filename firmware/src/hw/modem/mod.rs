//! SIM7600 cellular modem: AT engine, commands, supervision and recovery.
//!
//! Layout:
//! - [`digest`]: pure byte-level digester (responses / URCs / prompts);
//! - [`engine`]: sans-IO command state machine ([`engine::AtCore`]) and the
//!   [`engine::AtCommand`] trait (a command is a type with its response,
//!   timeout and attempts);
//! - [`client`]: tokio driver over tokio-serial or any `AsyncRead + AsyncWrite`;
//! - [`sim7600`]: the SIM7600 commands used here, with manual citations;
//! - [`policy`]: sans-IO recovery ladder (AT reset → PWRKEY, capped backoff);
//! - [`supervisor`]: bring-up, periodic polling, recovery; publishes
//!   [`ModemStatus`] on a `watch` channel;
//! - [`diag`]: `kodama-camera diag modem`;
//! - [`netclock`]: steps the system clock to the network's time (NITZ)
//!   before NTP is reachable.
//!
//! The supervisor is the AT port's only writer: the image runs no
//! ModemManager and its scripts send no AT commands.
//!
//! Entry point for the firmware: [`start`].

pub mod client;
pub mod diag;
pub mod digest;
pub mod engine;
pub mod netclock;
pub mod policy;
pub mod sim7600;
pub mod supervisor;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::hw::gpio::{OutputPin, Pwrkey, PwrkeyTiming, RecordingPin};
pub use sim7600::{Registration, SimState};
pub use supervisor::{ModemState, ModemStatus};

/// The retired `modem.simulated` key. The SIM7600 simulator is test
/// equipment in the separate `kodama-sim` program and reaches the camera only
/// through a pseudo-terminal, like the real modem's USB port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredSimulated;

/// What to do instead of `modem.simulated`.
pub const SIMULATED_MOVED: &str = "the modem simulator is not part of the camera firmware: \
     run `kodama-sim --at PATH` (test equipment) and set modem.port = PATH";

impl<'de> Deserialize<'de> for RetiredSimulated {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(SIMULATED_MOVED))
    }
}

/// `[modem]` table of `kodama.toml`: the SIM7600, its data session and its
/// GNSS engine. The supervisor is the AT port's only writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModemConfig {
    /// Run the modem supervisor at all.
    pub enabled: bool,
    /// AT port (SIM7600 over USB: `/dev/ttyUSB2`; over the HAT's UART: `/dev/ttyS0`).
    pub port: PathBuf,
    /// Baud rate (ignored by USB ports; the UART default is 115200).
    pub baud: u32,
    /// APN for PDP context 1; unset keeps the modem's stored context.
    pub apn: Option<String>,
    /// Retired; any value is refused with [`SIMULATED_MOVED`].
    #[serde(skip_serializing)]
    pub simulated: Option<RetiredSimulated>,
    /// BCM GPIO number wired to PWRKEY (Waveshare SIM7600X HAT: 6); unset
    /// disables power cycling.
    pub pwrkey_gpio: Option<u8>,
    /// Driving the GPIO high asserts PWRKEY (true behind the HAT's transistor).
    pub pwrkey_active_high: bool,
    /// Start the GNSS engine (`AT+CGPS=1`).
    pub gnss: bool,
    /// Bring up the data session for the USB network interface (`AT$QCRMCALL`).
    pub data_session: bool,
    /// Cap on any one command's timeout, in ms.
    pub command_timeout_ms: u64,
    /// Status poll period, in ms.
    pub poll_interval_ms: u64,
    /// Consecutive unanswered commands before a reset.
    pub max_timeouts: u32,
    /// Wait after a reset or power cycle before probing, in ms.
    pub reboot_wait_ms: u64,
    /// First backoff between power cycles, in ms (doubles, capped).
    pub backoff_base_ms: u64,
    /// Backoff cap, in ms.
    pub backoff_max_ms: u64,
    /// PWRKEY hold to power off, in ms.
    pub pwrkey_off_ms: u64,
    /// Pause between power-off and power-on, in ms.
    pub pwrkey_settle_ms: u64,
    /// PWRKEY hold to power on, in ms.
    pub pwrkey_on_ms: u64,
}

impl Default for ModemConfig {
    fn default() -> Self {
        let t = PwrkeyTiming::default();
        Self {
            enabled: false,
            port: PathBuf::from("/dev/ttyUSB2"),
            baud: 115_200,
            apn: None,
            simulated: None,
            pwrkey_gpio: None,
            pwrkey_active_high: true,
            gnss: true,
            data_session: true,
            command_timeout_ms: 10_000,
            poll_interval_ms: 10_000,
            max_timeouts: 3,
            reboot_wait_ms: 25_000,
            backoff_base_ms: 30_000,
            backoff_max_ms: 30 * 60_000,
            pwrkey_off_ms: t.off_hold.as_millis() as u64,
            pwrkey_settle_ms: t.off_settle.as_millis() as u64,
            pwrkey_on_ms: t.on_hold.as_millis() as u64,
        }
    }
}

impl ModemConfig {
    /// PWRKEY timing from the config.
    pub fn pwrkey_timing(&self) -> PwrkeyTiming {
        PwrkeyTiming {
            off_hold: Duration::from_millis(self.pwrkey_off_ms),
            off_settle: Duration::from_millis(self.pwrkey_settle_ms),
            on_hold: Duration::from_millis(self.pwrkey_on_ms),
        }
    }

    /// Check values that serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |field: &'static str, why: String| Err(StartError::Config { field, why });
        if let Some(apn) = &self.apn {
            if let Err(e) = sim7600::SetApn::new(apn) {
                return bad("modem.apn", e.to_string());
            }
        }
        if self.baud == 0 {
            return bad("modem.baud", "must be > 0".into());
        }
        if self.command_timeout_ms == 0 {
            return bad("modem.command_timeout_ms", "must be > 0".into());
        }
        if self.poll_interval_ms == 0 {
            return bad("modem.poll_interval_ms", "must be > 0".into());
        }
        if self.max_timeouts == 0 {
            return bad("modem.max_timeouts", "must be > 0".into());
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return bad(
                "modem.backoff_base_ms",
                "must be > 0 and <= backoff_max_ms".into(),
            );
        }
        Ok(())
    }
}

/// Errors starting the modem subsystem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A config value is out of range.
    #[error("{field}: {why}")]
    Config {
        /// Dotted field name.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The PWRKEY GPIO could not be opened.
    #[error("modem PWRKEY: {0}")]
    Gpio(#[from] crate::hw::gpio::GpioError),
    /// PWRKEY configured but this build has no GPIO driver (build with `--features pi`).
    #[error(
        "modem.pwrkey_gpio is set but this build has no GPIO support (build with --features pi)"
    )]
    NoGpioSupport,
}

/// The PWRKEY pin types this firmware can drive.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyPin {
    /// Test double (tests give it to the supervisor and observe it).
    Recording(RecordingPin),
    /// Raspberry Pi GPIO.
    #[cfg(feature = "pi")]
    Pi(rppal::gpio::OutputPin),
}

impl embedded_hal::digital::ErrorType for AnyPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for AnyPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        match self {
            AnyPin::Recording(p) => p.set_low(),
            #[cfg(feature = "pi")]
            AnyPin::Pi(p) => OutputPin::set_low(p),
        }
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        match self {
            AnyPin::Recording(p) => p.set_high(),
            #[cfg(feature = "pi")]
            AnyPin::Pi(p) => OutputPin::set_high(p),
        }
    }
}

/// A running modem subsystem.
#[derive(Debug)]
pub struct ModemHandle {
    /// Latest [`ModemStatus`], for telemetry.
    pub status: watch::Receiver<ModemStatus>,
    tasks: JoinSet<()>,
}

impl ModemHandle {
    /// Wait for the supervisor (and simulator) to stop; cancel the token
    /// given to [`start`] first.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Start the modem subsystem described by `cfg`: the AT driver on the port
/// and the supervisor, the port's only writer. Must be called inside a tokio
/// runtime. With `enabled = false` nothing runs and the status says
/// [`ModemState::Disabled`].
pub async fn start(
    cfg: &ModemConfig,
    cancel: CancellationToken,
) -> Result<ModemHandle, StartError> {
    cfg.validate()?;
    if !cfg.enabled {
        let (_tx, status) = watch::channel(ModemStatus {
            state: ModemState::Disabled,
            ..ModemStatus::default()
        });
        return Ok(ModemHandle {
            status,
            tasks: JoinSet::new(),
        });
    }
    let pwrkey = match open_pwrkey(cfg)? {
        Some(p) => Some(Pwrkey::new(p, cfg.pwrkey_active_high, cfg.pwrkey_timing())?),
        None => None,
    };
    let opts = supervisor::SupervisorOptions::from_config(cfg, pwrkey.is_some());
    let connector = supervisor::SerialConnector::new(cfg.port.clone(), cfg.baud);
    let (status, sup) = supervisor::Supervisor::new(connector, pwrkey, opts, cancel);
    let mut tasks = JoinSet::new();
    tasks.spawn(sup.run());
    Ok(ModemHandle { status, tasks })
}

#[cfg(feature = "pi")]
fn open_pwrkey(cfg: &ModemConfig) -> Result<Option<AnyPin>, StartError> {
    match cfg.pwrkey_gpio {
        Some(n) => Ok(Some(AnyPin::Pi(crate::hw::gpio::pi::output(n)?))),
        None => Ok(None),
    }
}

#[cfg(not(feature = "pi"))]
fn open_pwrkey(cfg: &ModemConfig) -> Result<Option<AnyPin>, StartError> {
    match cfg.pwrkey_gpio {
        Some(_) => Err(StartError::NoGpioSupport),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Top {
        modem: ModemConfig,
    }

    #[test]
    fn config_parses_and_rejects_unknown_keys() {
        let t: Top =
            toml::from_str("[modem]\nenabled = true\napn = \"internet\"\npwrkey_gpio = 6\n")
                .unwrap();
        assert!(t.modem.enabled);
        assert_eq!(t.modem.pwrkey_gpio, Some(6));
        assert_eq!(t.modem.baud, 115_200);
        for old in ["true", "false", "\"healthy\""] {
            let e = toml::from_str::<Top>(&format!("[modem]\nsimulated = {old}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("kodama-sim") && e.contains("modem.port"), "{e}");
        }

        let e = toml::from_str::<Top>("[modem]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn validate_names_the_field() {
        let cfg = ModemConfig {
            apn: Some("bad apn".into()),
            ..ModemConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("modem.apn"), "{e}");
        assert!(ModemConfig::default().validate().is_ok());
    }

    #[tokio::test]
    async fn disabled_runs_nothing() {
        let h = start(&ModemConfig::default(), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(h.status.borrow().state, ModemState::Disabled);
        h.join().await;
    }
}
