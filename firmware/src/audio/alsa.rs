//! The microphone through ALSA (feature `pi`): an I2S MEMS microphone
//! (e.g. an SPH0645/ICS-43434 on the Pi's PCM pins, `dtoverlay=
//! googlevoicehat-soundcard` or `adau7002-simple`) or a USB microphone; see
//! hw/README.md. The device is opened mono, 16-bit, 48 kHz; `plughw:`
//! devices convert from what the hardware has (32-bit I2S words, stereo).

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

use super::{now_us, AudioCapture, AudioError, FRAME_SAMPLES, SAMPLE_RATE};

/// Overruns recovered in a row before capture gives up.
const MAX_RECOVERIES: u32 = 5;

/// An open ALSA capture device.
pub struct AlsaCapture {
    pcm: PCM,
    device: String,
}

impl std::fmt::Debug for AlsaCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaCapture")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl AlsaCapture {
    /// Opens and configures `device` (mono, S16, 48 kHz, 20 ms periods).
    pub fn open(device: &str) -> Result<Self, AudioError> {
        let open_err = |e: alsa::Error| AudioError::Open {
            device: device.to_owned(),
            message: e.to_string(),
        };
        let pcm = PCM::new(device, Direction::Capture, false).map_err(open_err)?;
        {
            let hw = HwParams::any(&pcm).map_err(open_err)?;
            hw.set_channels(1).map_err(open_err)?;
            hw.set_rate(SAMPLE_RATE, ValueOr::Nearest)
                .map_err(open_err)?;
            hw.set_format(Format::s16()).map_err(open_err)?;
            hw.set_access(Access::RWInterleaved).map_err(open_err)?;
            hw.set_period_size_near(FRAME_SAMPLES as alsa::pcm::Frames, ValueOr::Nearest)
                .map_err(open_err)?;
            hw.set_buffer_size_near(8 * FRAME_SAMPLES as alsa::pcm::Frames)
                .map_err(open_err)?;
            pcm.hw_params(&hw).map_err(open_err)?;
            let rate = hw.get_rate().map_err(open_err)?;
            if rate != SAMPLE_RATE {
                return Err(AudioError::Open {
                    device: device.to_owned(),
                    message: format!("runs at {rate} Hz, not 48000 (use a plughw: device)"),
                });
            }
        }
        pcm.start().map_err(open_err)?;
        Ok(AlsaCapture {
            pcm,
            device: device.to_owned(),
        })
    }
}

impl AudioCapture for AlsaCapture {
    fn read_frame(&mut self, pcm: &mut [i16]) -> Result<u64, AudioError> {
        let io = self
            .pcm
            .io_i16()
            .map_err(|e| AudioError::Read(e.to_string()))?;
        let mut filled = 0;
        let mut recoveries = 0;
        while filled < pcm.len() {
            match io.readi(&mut pcm[filled..]) {
                Ok(n) => filled += n,
                Err(e) if recoveries < MAX_RECOVERIES => {
                    // An overrun (EPIPE) after a stall: restart the stream.
                    recoveries += 1;
                    tracing::debug!(device = %self.device, "capture overrun: {e}");
                    self.pcm
                        .try_recover(e, true)
                        .map_err(|e| AudioError::Read(e.to_string()))?;
                }
                Err(e) => return Err(AudioError::Read(e.to_string())),
            }
        }
        // The frame's first sample was heard (delay + frame) ago.
        let delay = self.pcm.delay().unwrap_or(0).max(0) as u64;
        let behind_us = (delay + pcm.len() as u64) * 1_000_000 / u64::from(SAMPLE_RATE);
        Ok(now_us().saturating_sub(behind_us))
    }
}
