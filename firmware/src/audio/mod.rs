//! Audio: a microphone (or the synthetic test signal) captured on its own
//! thread, encoded to Opus, and handed to the uplink as [`Channel::Audio`]
//! frames, one 20 ms Opus packet each.
//!
//! Channels: the audio thread offers each packet to the uplink's aux queue
//! with `try_send` and drops it when the queue is full (counted), so audio
//! never blocks capture and never waits behind video; on the wire audio has
//! its own long-lived stream above every video stream
//! (`kodama_net::policy::send::PRIORITY_AUDIO`).
//!
//! # Layout
//! * [`AudioCapture`]: one blocking read of a 20 ms PCM frame (mono, i16).
//! * [`OpusPacketizer`]: the libopus encoder (VoIP mode, speech bitrates),
//!   and the [`AudioInfo`] the hello announces.
//! * `alsa` (feature `pi`): the microphone through ALSA (`audio.device`).
//! * `synthetic` (feature `synthetic`): a speech-like test signal, paced in
//!   real time, for the demo and the tests.

#[cfg(feature = "pi")]
pub mod alsa;
#[cfg(feature = "synthetic")]
pub mod synthetic;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kodama_proto::{AudioCodec, AudioInfo, Channel};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::uplink::AuxMessage;

/// Sample rate captured and encoded (Opus's native rate).
pub const SAMPLE_RATE: u32 = 48_000;
/// One Opus frame: 20 ms, the usual speech packet.
pub const FRAME_MS: u32 = 20;
/// Samples per frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;
/// Largest Opus packet we let the encoder produce (RFC 6716 §3.4: 1275
/// bytes per frame).
const MAX_PACKET: usize = 1275;

/// Where audio comes from (`audio.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioSourceKind {
    /// A microphone through ALSA (`audio.device`); needs the `pi` feature.
    Alsa,
    /// A speech-like synthetic signal: test equipment (feature `synthetic`).
    Synthetic,
}

impl Default for AudioSourceKind {
    /// The microphone wherever the Pi drivers are built in.
    fn default() -> Self {
        if cfg!(feature = "pi") || !cfg!(feature = "synthetic") {
            AudioSourceKind::Alsa
        } else {
            AudioSourceKind::Synthetic
        }
    }
}

impl AudioSourceKind {
    /// Whether this build contains the source, with the reason if not.
    pub fn check_built_in(self) -> Result<(), String> {
        match self {
            AudioSourceKind::Alsa if !cfg!(feature = "pi") => Err(
                "\"alsa\" needs a firmware built with the `pi` feature (the ALSA driver)".into(),
            ),
            AudioSourceKind::Synthetic if !cfg!(feature = "synthetic") => Err(
                "\"synthetic\" is test equipment and is not in this firmware (built only with \
                 the `synthetic` feature, for the demo and the tests)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// `[audio]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Capture and send audio. Off by default: recording sound is a choice
    /// the owner makes (and in some places must announce).
    pub enabled: bool,
    /// `alsa` (the default where built in) or `synthetic` (test builds).
    pub source: AudioSourceKind,
    /// ALSA capture device, e.g. `default`, `plughw:1,0` (USB microphone),
    /// `plughw:0,0` (I2S MEMS microphone); see hw/README.md.
    pub device: String,
    /// Opus bitrate in kbit/s (6..=64); 24 is clear speech.
    pub bitrate_kbps: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            enabled: false,
            source: AudioSourceKind::default(),
            device: "default".into(),
            bitrate_kbps: 24,
        }
    }
}

impl AudioConfig {
    /// Checks the values, naming the bad field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        self.source
            .check_built_in()
            .map_err(|m| ("audio.source", m))?;
        if !(6..=64).contains(&self.bitrate_kbps) {
            return Err((
                "audio.bitrate_kbps",
                format!("must be 6..=64, got {}", self.bitrate_kbps),
            ));
        }
        if self.device.is_empty() {
            return Err(("audio.device", "must name an ALSA device".into()));
        }
        Ok(())
    }
}

/// Why audio could not be captured or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The capture device could not be opened or configured.
    #[error(
        "cannot open audio device {device:?}: {message} (check audio.device and `arecord -l`)"
    )]
    Open {
        /// The device name.
        device: String,
        /// What ALSA said.
        message: String,
    },
    /// Reading from the device failed and could not be recovered.
    #[error("audio capture failed: {0}")]
    Read(String),
    /// The Opus encoder refused its settings or a frame.
    #[error("opus encoder: {0}")]
    Encoder(String),
    /// The source asked for is not in this build.
    #[error("audio source: {0}")]
    NotBuiltIn(String),
}

/// A PCM source: mono 16-bit samples at [`SAMPLE_RATE`].
pub trait AudioCapture: Send {
    /// Blocks until `pcm` (exactly [`FRAME_SAMPLES`] long) is filled; returns
    /// the capture time of its first sample, µs since the Unix epoch.
    fn read_frame(&mut self, pcm: &mut [i16]) -> Result<u64, AudioError>;
}

/// The Opus encoder, configured for speech.
pub struct OpusPacketizer {
    encoder: opus::Encoder,
    info: AudioInfo,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusPacketizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusPacketizer")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl OpusPacketizer {
    /// A mono VoIP encoder at `bitrate_kbps`.
    pub fn new(bitrate_kbps: u32) -> Result<Self, AudioError> {
        let err = |e: opus::Error| AudioError::Encoder(e.to_string());
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(err)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate_kbps as i32 * 1000))
            .map_err(err)?;
        // A camera uplink loses packets: in-band FEC lets the receiver
        // rebuild one lost packet from the next.
        encoder.set_inband_fec(true).map_err(err)?;
        encoder.set_packet_loss_perc(5).map_err(err)?;
        let lookahead = encoder.get_lookahead().map_err(err)?;
        let info = AudioInfo {
            codec: AudioCodec::Opus,
            sample_rate: SAMPLE_RATE,
            channels: 1,
            pre_skip: u16::try_from(lookahead).unwrap_or(0),
        };
        Ok(OpusPacketizer {
            encoder,
            info,
            out: vec![0; MAX_PACKET],
        })
    }

    /// What the hello announces.
    pub fn info(&self) -> AudioInfo {
        self.info
    }

    /// Encodes one 20 ms frame into one Opus packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<bytes::Bytes, AudioError> {
        let n = self
            .encoder
            .encode(pcm, &mut self.out)
            .map_err(|e| AudioError::Encoder(e.to_string()))?;
        Ok(bytes::Bytes::copy_from_slice(&self.out[..n]))
    }
}

/// Opens the configured source.
pub fn open_capture(cfg: &AudioConfig) -> Result<Box<dyn AudioCapture>, AudioError> {
    match cfg.source {
        #[cfg(feature = "pi")]
        AudioSourceKind::Alsa => Ok(Box::new(alsa::AlsaCapture::open(&cfg.device)?)),
        #[cfg(feature = "synthetic")]
        AudioSourceKind::Synthetic => Ok(Box::new(synthetic::SpeechLike::new())),
        #[allow(unreachable_patterns)]
        other => Err(AudioError::NotBuiltIn(
            other.check_built_in().err().unwrap_or_default(),
        )),
    }
}

/// The running audio thread.
#[derive(Debug)]
pub struct AudioTask {
    /// What the hello announces.
    pub info: AudioInfo,
    thread: std::thread::JoinHandle<Result<(), AudioError>>,
}

impl AudioTask {
    /// Waits for the thread after cancellation.
    pub fn join(self) -> Result<(), AudioError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(AudioError::Read("audio thread panicked".into())))
    }
}

/// Starts capture + encoding on its own thread; packets go to `tx` (the
/// uplink's aux queue) without ever waiting on it.
pub fn spawn_audio(
    mut capture: Box<dyn AudioCapture>,
    mut encoder: OpusPacketizer,
    tx: mpsc::Sender<AuxMessage>,
    cancel: CancellationToken,
) -> Result<AudioTask, AudioError> {
    let info = encoder.info();
    let thread = std::thread::Builder::new()
        .name("kodama-audio".into())
        .spawn(move || {
            let mut pcm = vec![0i16; FRAME_SAMPLES];
            let mut dropped = 0u64;
            while !cancel.is_cancelled() && !tx.is_closed() {
                let capture_us = capture.read_frame(&mut pcm)?;
                let payload = encoder.encode(&pcm)?;
                let message = AuxMessage {
                    channel: Channel::Audio,
                    capture_us,
                    payload,
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(message) {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::debug!(dropped, "uplink queue full; dropped audio packets");
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| AudioError::Read(format!("cannot start the audio thread: {e}")))?;
    Ok(AudioTask { info, thread })
}

/// Now, µs since the Unix epoch (the clock video frames are stamped with).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_encodes_within_the_bitrate() {
        let mut enc = OpusPacketizer::new(24).expect("encoder");
        assert_eq!(enc.info().sample_rate, 48_000);
        assert!(enc.info().pre_skip > 0, "libopus reports its look-ahead");
        let mut bytes = 0usize;
        let frames = 100; // 2 s
        for n in 0..frames {
            let pcm: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (n * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
                    ((t * 220.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let packet = enc.encode(&pcm).expect("encode");
            // TOC byte: config of a 20 ms frame (RFC 6716 §3.1).
            assert!(!packet.is_empty());
            bytes += packet.len();
        }
        let kbps = bytes as f64 * 8.0 / (frames as f64 * 0.02) / 1000.0;
        assert!(kbps <= 32.0, "{kbps:.1} kbit/s");
        assert!(kbps >= 6.0, "{kbps:.1} kbit/s is suspiciously low");
    }

    #[test]
    fn config_refuses_bad_values_naming_the_field() {
        let mut c = AudioConfig {
            enabled: true,
            ..AudioConfig::default()
        };
        c.bitrate_kbps = 500;
        assert_eq!(c.validate().unwrap_err().0, "audio.bitrate_kbps");
        c.bitrate_kbps = 24;
        c.device.clear();
        c.source = AudioSourceKind::Synthetic;
        assert_eq!(c.validate().unwrap_err().0, "audio.device");
        // Disabled audio is never checked.
        c.enabled = false;
        assert!(c.validate().is_ok());
    }
}
