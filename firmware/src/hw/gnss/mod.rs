//! GNSS position: NMEA 0183 from the SIM7600's NMEA port, published as the
//! latest [`Fix`] on a `tokio::sync::watch` channel.
//!
//! # Layout
//! * [`nmea`]: the sans-IO reader (bytes in, one fix per epoch out, counters).
//! * [`serial`]: the real driver, reading the modem's NMEA port
//!   (`/dev/ttyUSB1` on the SIM7600; GNSS is switched on by the modem
//!   module's `AT+CGPS=1`).
//! * The simulator (log replay or a synthetic track) is test equipment in the
//!   `kodama-sim` crate: it serves NMEA on a pty that [`serial`] reads.
//!
//! [`run`] is the one loop around the reader: it pulls bytes from any [`Gnss`]
//! source, closes an epoch when the line goes quiet for
//! [`GnssConfig::epoch_gap_ms`], and publishes `Some(fix)` per epoch or
//! `None` when the receiver has been silent for [`GnssConfig::stale_after_ms`].
//!
//! # Channels
//! * out: `watch::Sender<Option<Fix>>` (latest fix; `None` = no receiver data).
//! * out: `watch::Sender<NmeaCounts>` (reader counters, for diagnostics).

pub mod nmea;
pub mod serial;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::nmea::{NmeaCounts, NmeaReader};

/// Fix dimension, as gpsd reports it (`mode` 1, 2, 3 in its TPV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FixMode {
    /// No valid position.
    #[default]
    #[serde(rename = "none")]
    NoFix,
    /// Latitude and longitude only.
    #[serde(rename = "2d")]
    Fix2d,
    /// Latitude, longitude and altitude.
    #[serde(rename = "3d")]
    Fix3d,
}

/// A UTC timestamp from the receiver. NMEA sends the time of day in every
/// epoch but the date only in RMC/ZDA, so the date may be unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GnssTime {
    /// UTC date, once an RMC or ZDA sentence has carried one.
    pub date: Option<NaiveDate>,
    /// UTC time of day.
    pub time: NaiveTime,
}

impl fmt::Display for GnssTime {
    /// ISO 8601: `2022-03-09T15:01:19.000Z`, or `15:01:19.000Z` without a date.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.date {
            write!(f, "{}T", d.format("%Y-%m-%d"))?;
        }
        write!(f, "{}Z", self.time.format("%H:%M:%S%.3f"))
    }
}

impl std::str::FromStr for GnssTime {
    type Err = chrono::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_suffix('Z').unwrap_or(s);
        match s.split_once('T') {
            Some((d, t)) => Ok(GnssTime {
                date: Some(NaiveDate::parse_from_str(d, "%Y-%m-%d")?),
                time: NaiveTime::parse_from_str(t, "%H:%M:%S%.f")?,
            }),
            None => Ok(GnssTime {
                date: None,
                time: NaiveTime::parse_from_str(s, "%H:%M:%S%.f")?,
            }),
        }
    }
}

impl Serialize for GnssTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GnssTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One navigation epoch as the receiver reported it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Fix {
    /// UTC time of the epoch.
    #[serde(rename = "utc")]
    pub time: Option<GnssTime>,
    /// Fix dimension; position fields are `None` when this is `none`.
    pub mode: FixMode,
    /// Latitude, degrees north (WGS 84).
    pub lat: Option<f64>,
    /// Longitude, degrees east (WGS 84).
    pub lon: Option<f64>,
    /// Altitude above mean sea level, metres (3D fixes only).
    pub alt: Option<f64>,
    /// Speed over ground, metres per second.
    pub speed: Option<f64>,
    /// Course over ground, degrees from true north.
    pub course: Option<f64>,
    /// Satellites used in the solution.
    pub satellites: Option<u32>,
    /// Horizontal dilution of precision.
    pub hdop: Option<f64>,
}

/// Where NMEA comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GnssSource {
    /// No GNSS: the fix stays `None`.
    Off,
    /// The receiver on [`GnssConfig::port`] (the SIM7600's NMEA port, or the
    /// `kodama-sim` test equipment's pty).
    #[default]
    Serial,
}

impl<'de> Deserialize<'de> for GnssSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "off" => Ok(GnssSource::Off),
            "serial" => Ok(GnssSource::Serial),
            "simulated" => Err(serde::de::Error::custom(
                "the GNSS simulator is not part of the camera firmware: run \
                 `kodama-sim --nmea PATH` (test equipment) and set gnss.port = PATH",
            )),
            other => Err(serde::de::Error::custom(format!(
                "expected \"serial\" or \"off\", got {other:?}"
            ))),
        }
    }
}

/// `[gnss]` table of the firmware configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GnssConfig {
    /// `serial` or `off`.
    pub source: GnssSource,
    /// NMEA serial port (the SIM7600 exposes NMEA on its second USB interface).
    pub port: PathBuf,
    /// Baud rate (ignored by USB CDC ports, used by UART receivers).
    pub baud: u32,
    /// Silence after which the epoch in progress is closed, milliseconds.
    /// Receivers send each epoch as one burst well under 100 ms.
    pub epoch_gap_ms: u64,
    /// Silence after which the fix is withdrawn (`None`), milliseconds.
    pub stale_after_ms: u64,
}

impl Default for GnssConfig {
    fn default() -> Self {
        GnssConfig {
            source: GnssSource::default(),
            port: PathBuf::from("/dev/ttyUSB1"),
            baud: 115_200,
            epoch_gap_ms: 200,
            stale_after_ms: 5_000,
        }
    }
}

/// Why reading the receiver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GnssError {
    /// The serial port could not be opened: check the path, that the modem
    /// is powered and enumerated, and that no other process (gpsd) holds it.
    #[error("cannot open NMEA port {port}: {source}")]
    Open {
        /// The port path.
        port: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading failed (the modem reset and the USB device went away).
    #[error("reading NMEA failed: {0}")]
    Read(#[source] std::io::Error),
}

/// A source of NMEA bytes: the real receiver, the simulator, or a test script.
pub trait Gnss: Send {
    /// Reads the next bytes into `buf`. `Ok(0)` means the source has ended
    /// (a log file); a live receiver blocks until it has data.
    fn read_nmea(
        &mut self,
        buf: &mut [u8],
    ) -> impl Future<Output = Result<usize, GnssError>> + Send;
}

/// The outputs of [`run`].
#[derive(Debug)]
pub struct GnssOutputs {
    /// Latest fix; `None` until the first epoch and after a silence.
    pub fix: watch::Sender<Option<Fix>>,
    /// Reader counters.
    pub counts: watch::Sender<NmeaCounts>,
}

impl GnssOutputs {
    /// A fresh pair of channels, returning the receivers too.
    pub fn new() -> (
        Self,
        watch::Receiver<Option<Fix>>,
        watch::Receiver<NmeaCounts>,
    ) {
        let (fix, fix_rx) = watch::channel(None);
        let (counts, counts_rx) = watch::channel(NmeaCounts::default());
        (GnssOutputs { fix, counts }, fix_rx, counts_rx)
    }
}

/// Reads `gnss` until it ends or `cancel` fires, publishing fixes.
///
/// A read error is logged and retried after a backoff (1 s doubling to 30 s):
/// the SIM7600's NMEA port disappears for a few seconds when the modem resets.
/// Returns the final counters.
pub async fn run<G: Gnss>(
    mut gnss: G,
    cfg: &GnssConfig,
    out: GnssOutputs,
    cancel: CancellationToken,
) -> NmeaCounts {
    let gap = Duration::from_millis(cfg.epoch_gap_ms.max(1));
    let stale = Duration::from_millis(cfg.stale_after_ms.max(1));
    let mut reader = NmeaReader::new();
    let mut buf = [0u8; 1024];
    let mut backoff = Duration::from_secs(1);
    let mut quiet = Duration::ZERO;
    let publish = |fix: Fix| {
        out.fix.send_replace(Some(fix));
    };
    loop {
        let read = tokio::select! {
            () = cancel.cancelled() => break,
            r = tokio::time::timeout(gap, gnss.read_nmea(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) => {
                if let Some(fix) = reader.finish() {
                    publish(fix);
                }
                break;
            }
            Ok(Ok(n)) => {
                backoff = Duration::from_secs(1);
                quiet = Duration::ZERO;
                reader.push(&buf[..n], publish);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "GNSS read failed");
                reader.reset_framing();
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                quiet = quiet.saturating_add(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(_elapsed) => {
                if let Some(fix) = reader.flush() {
                    publish(fix);
                }
                quiet = quiet.saturating_add(gap);
            }
        }
        if quiet >= stale && out.fix.borrow().is_some() {
            tracing::info!(silent_for = ?quiet, "GNSS silent; withdrawing the fix");
            out.fix.send_replace(None);
        }
        out.counts.send_if_modified(|c| {
            let now = reader.counts();
            let changed = *c != now;
            *c = now;
            changed
        });
    }
    reader.counts()
}

/// A running GNSS task and its outputs.
#[derive(Debug)]
pub struct GnssHandle {
    /// Latest fix (stays `None` with `source = "off"`).
    pub fix: watch::Receiver<Option<Fix>>,
    /// Reader counters.
    pub counts: watch::Receiver<NmeaCounts>,
    /// The task; returns the final counters once cancelled.
    pub task: tokio::task::JoinHandle<NmeaCounts>,
}

/// Starts the source `cfg` selects: the serial receiver, or nothing.
pub fn spawn(cfg: &GnssConfig, cancel: CancellationToken) -> Result<GnssHandle, GnssError> {
    let (out, fix, counts) = GnssOutputs::new();
    let cfg = cfg.clone();
    let task = match cfg.source {
        GnssSource::Off => tokio::spawn(async move {
            // Keep the senders until shutdown so receivers see "no fix", not "closed".
            cancel.cancelled().await;
            drop(out);
            NmeaCounts::default()
        }),
        GnssSource::Serial => {
            let gnss = serial::SerialGnss::new(&cfg);
            tokio::spawn(async move { run(gnss, &cfg, out, cancel).await })
        }
    };
    Ok(GnssHandle { fix, counts, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_through_json() {
        let fix = Fix {
            time: Some("2022-03-09T15:01:19.250Z".parse().expect("time")),
            mode: FixMode::Fix3d,
            lat: Some(51.0),
            ..Fix::default()
        };
        let json = serde_json::to_string(&fix).expect("json");
        assert!(
            json.contains(r#""utc":"2022-03-09T15:01:19.250Z""#),
            "{json}"
        );
        assert!(json.contains(r#""mode":"3d""#), "{json}");
        let back: Fix = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, fix);
        let no_date: GnssTime = "08:14:37.000Z".parse().expect("time");
        assert_eq!(no_date.to_string(), "08:14:37.000Z");
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let cfg: GnssConfig = toml::from_str("source = \"off\"").expect("toml");
        assert_eq!(cfg.source, GnssSource::Off);
        assert_eq!(cfg.port, PathBuf::from("/dev/ttyUSB1"));
        let err = toml::from_str::<GnssConfig>("source = \"simulated\"").expect_err("retired");
        assert!(err.to_string().contains("kodama-sim --nmea"), "{err}");
        let err = toml::from_str::<GnssConfig>("source = \"usb\"").expect_err("bad");
        assert!(err.to_string().contains("\"serial\" or \"off\""), "{err}");
        let err = toml::from_str::<GnssConfig>("prot = \"/dev/x\"").expect_err("typo");
        assert!(err.to_string().contains("prot"), "{err}");
    }
}
