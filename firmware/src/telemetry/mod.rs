//! Telemetry: one JSON [`Sample`] per interval (1 Hz by default) on the
//! uplink's telemetry channel.
//!
//! # Layout
//! * [`system`]: `/proc` and `/sys` parsers and the reader (injectable root).
//!
//! # Channels ([`spawn_sampler`])
//! * in: [`Inputs`]: `watch` receivers for the modem status, the GNSS fix,
//!   the current bitrate and the motion flag (each optional).
//! * out: `mpsc::Sender<AuxMessage>` on [`Channel::Telemetry`]. A sample is
//!   dropped (and counted) when the uplink is full: the next one a second
//!   later supersedes it, and the camera's own work must never wait on telemetry.

pub mod procfs;
pub mod system;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kodama_proto::Channel;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backlog::BacklogStatus;
use crate::hw::gnss::Fix;
use crate::uplink::{AuxMessage, StreamStatus};

pub use self::system::{SystemReader, SystemSample};

/// `[telemetry]` table of the firmware configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Sampling period, milliseconds.
    pub interval_ms: u64,
    /// Root under which `proc/` and `sys/` are read (`/` on the camera;
    /// a fixture tree in tests and demos).
    pub root: PathBuf,
    /// File system whose free space is reported (relative to `root`).
    pub storage_path: PathBuf,
    /// Thermal zone of the SoC sensor (`thermal_zone0` on the Pi).
    pub thermal_zone: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            interval_ms: 1_000,
            root: PathBuf::from("/"),
            storage_path: PathBuf::from("/"),
            thermal_zone: "thermal_zone0".into(),
        }
    }
}

impl TelemetryConfig {
    /// The system reader this configuration describes.
    pub fn reader(&self) -> SystemReader {
        SystemReader::new(&self.root, &self.storage_path, &self.thermal_zone)
    }
}

/// One telemetry document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Sample {
    /// When it was taken, µs since the Unix epoch.
    pub at_us: u64,
    /// CPU, memory, temperature, power, storage, link.
    #[serde(flatten)]
    pub system: SystemSample,
    /// The modem's status document (`hw::modem::ModemStatus` as JSON).
    pub modem: Option<serde_json::Value>,
    /// Latest GNSS fix.
    pub gnss: Option<Fix>,
    /// Current video bitrate, kbit/s.
    pub bitrate_kbps: Option<u32>,
    /// Motion event in progress.
    pub motion: bool,
    /// Store-and-forward: GOPs waiting for upload, upload progress, drops.
    pub backlog: Option<BacklogStatus>,
    /// The live stream: adaptive-bitrate tier, bandwidth estimate, uplink.
    #[serde(default)]
    pub stream: Option<StreamStatus>,
}

/// The other subsystems' state the sampler reports; any may be absent.
/// `M` is the modem status type (anything serialisable, e.g.
/// `hw::modem::ModemStatus`).
#[derive(Debug)]
pub struct Inputs<M = serde_json::Value> {
    /// Modem status.
    pub modem: Option<watch::Receiver<M>>,
    /// GNSS fix.
    pub gnss: Option<watch::Receiver<Option<Fix>>>,
    /// Current bitrate tier, kbit/s.
    pub bitrate_kbps: Option<watch::Receiver<u32>>,
    /// Motion active.
    pub motion: Option<watch::Receiver<bool>>,
    /// The backlog's status.
    pub backlog: Option<watch::Receiver<BacklogStatus>>,
    /// The live stream's tier, estimate and uplink (also the bitrate when
    /// `bitrate_kbps` is absent).
    pub stream: Option<watch::Receiver<StreamStatus>>,
}

impl<M> Default for Inputs<M> {
    fn default() -> Self {
        Inputs {
            modem: None,
            gnss: None,
            bitrate_kbps: None,
            motion: None,
            backlog: None,
            stream: None,
        }
    }
}

impl<M: Serialize> Inputs<M> {
    /// Fills `sample`'s non-system fields from the latest values.
    fn fill(&self, sample: &mut Sample) {
        sample.modem = self
            .modem
            .as_ref()
            .and_then(|m| serde_json::to_value(&*m.borrow()).ok());
        sample.gnss = self.gnss.as_ref().and_then(|g| *g.borrow());
        sample.bitrate_kbps = self.bitrate_kbps.as_ref().map(|b| *b.borrow());
        sample.motion = self.motion.as_ref().is_some_and(|m| *m.borrow());
        sample.backlog = self.backlog.as_ref().map(|b| *b.borrow());
        sample.stream = self.stream.as_ref().map(|s| s.borrow().clone());
        if sample.bitrate_kbps.is_none() {
            sample.bitrate_kbps = sample.stream.as_ref().map(|s| s.kbps);
        }
    }
}

/// Microseconds since the Unix epoch on the system clock.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Takes one sample now (CPU usage since `reader`'s previous sample).
pub fn sample_now<M: Serialize>(reader: &mut SystemReader, inputs: &Inputs<M>) -> Sample {
    let mut s = Sample {
        at_us: now_us(),
        system: reader.sample(),
        ..Sample::default()
    };
    inputs.fill(&mut s);
    s
}

impl Sample {
    /// The sample as an uplink message on [`Channel::Telemetry`].
    pub fn to_aux(&self) -> AuxMessage {
        AuxMessage {
            channel: Channel::Telemetry,
            capture_us: self.at_us,
            // Plain numbers, strings and JSON values: serialisation cannot fail.
            payload: Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
        }
    }
}

/// Samples every `cfg.interval_ms` until `cancel` fires or the uplink closes.
/// File reads are small and run on the blocking pool so a slow SD card
/// never stalls the runtime.
pub fn spawn_sampler<M: Serialize + Send + Sync + 'static>(
    cfg: TelemetryConfig,
    inputs: Inputs<M>,
    tx: mpsc::Sender<AuxMessage>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = cfg.reader();
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dropped = 0u64;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (r, system) = match tokio::task::spawn_blocking(move || {
                let s = reader.sample();
                (reader, s)
            })
            .await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "telemetry sampler task failed");
                    break;
                }
            };
            reader = r;
            let mut sample = Sample {
                at_us: now_us(),
                system,
                ..Sample::default()
            };
            inputs.fill(&mut sample);
            match tx.try_send(sample.to_aux()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    tracing::debug!(dropped, "uplink full; telemetry sample dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_keys() {
        let cfg: TelemetryConfig = toml::from_str("interval_ms = 500").expect("toml");
        assert_eq!(cfg.interval_ms, 500);
        assert_eq!(cfg.thermal_zone, "thermal_zone0");
        let err = toml::from_str::<TelemetryConfig>("intervall = 1").expect_err("typo");
        assert!(err.to_string().contains("intervall"), "{err}");
    }

    #[test]
    fn sample_json_round_trips() {
        let s = Sample {
            at_us: 5,
            modem: Some(serde_json::json!({"signal_dbm": -71})),
            bitrate_kbps: Some(800),
            motion: true,
            stream: Some(StreamStatus {
                uplink: Some("cell".into()),
                tier: Some("480p15".into()),
                kbps: 1000,
                estimate_kbps: Some(1800),
                rtt_ms: Some(80),
                limit: "cap 480p15".into(),
            }),
            ..Sample::default()
        };
        let aux = s.to_aux();
        assert_eq!(aux.channel, Channel::Telemetry);
        let back: Sample = serde_json::from_slice(&aux.payload).expect("json");
        assert_eq!(back, s);
        let v: serde_json::Value = serde_json::from_slice(&aux.payload).expect("json");
        assert_eq!(v["stream"]["uplink"], "cell");
        assert_eq!(v["stream"]["estimate_kbps"], 1800);
    }

    #[test]
    fn the_stream_status_gives_the_bitrate() {
        let (_tx, rx) = watch::channel(StreamStatus {
            tier: Some("360p15".into()),
            kbps: 500,
            ..StreamStatus::default()
        });
        let inputs: Inputs = Inputs {
            stream: Some(rx),
            ..Inputs::default()
        };
        let mut sample = Sample::default();
        inputs.fill(&mut sample);
        assert_eq!(sample.bitrate_kbps, Some(500));
        assert_eq!(
            sample.stream.and_then(|s| s.tier).as_deref(),
            Some("360p15")
        );
    }
}
