//! [`PiCameraSource`]: the camera thread and the hardware encoder behind
//! [`VideoSource`].
//!
//! `next_frame` drives both sides in one bounded loop: hand finished OUTPUT
//! slots back to the camera, return a coded frame if one is ready, feed the
//! next picture into a free slot, otherwise wait (poll on the encoder, or
//! the picture channel when the encoder is idle).

use std::path::PathBuf;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcamera::request::Request;

use super::assemble::{device_error, libc_errno, AccessUnitAssembler, Op};
use super::camera::{CameraConfig, CameraThread, Picture};
use super::clock::{ClockMap, ClockSample};
use super::controls::EncoderParams;
use super::encoder::{Encoder, EncoderSetup};
use super::format::{check_request, negotiated};
use super::ledger::Ledger;
use super::tiers::{decide_bitrate, BitrateDecision, TierId, TIERS};
use crate::video::{EncodedFrame, LumaFrame, VideoError, VideoFormat, VideoSettings, VideoSource};

/// Upper bound on camera buffers (request cookies) the ledger tracks.
const MAX_CAMERA_BUFFERS: usize = 32;
/// A frame must come out within this long, or the pipeline is stuck.
const FRAME_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames between checks of the wall clock for steps (NTP, modem time).
const CLOCK_CHECK_FRAMES: u32 = 300;

/// Configuration of the real camera.
#[derive(Debug, Clone)]
pub struct PiCameraConfig {
    /// Initial format and encoder settings.
    pub settings: VideoSettings,
    /// The encoder node (`/dev/video11` on a Pi with bcm2835-codec).
    pub encoder_path: PathBuf,
    /// Follow bitrate requests across [`TIERS`](super::tiers::TIERS)
    /// (restarting capture at a new size/rate) instead of only moving the
    /// bitrate.
    pub adaptive_tiers: bool,
    /// Camera buffers in circulation (more absorbs encoder jitter, costs CMA).
    pub camera_buffers: u32,
    /// Camera buffers the encoder may hold at once.
    pub encoder_slots: u32,
    /// Bitstream buffers.
    pub coded_buffers: u32,
}

impl PiCameraConfig {
    /// Defaults for a Pi Zero 2W: 6 camera buffers, 4 of them in the encoder
    /// at most, 6 bitstream buffers; tiers off.
    pub fn new(settings: VideoSettings) -> Self {
        PiCameraConfig {
            settings,
            encoder_path: PathBuf::from("/dev/video11"),
            adaptive_tiers: false,
            camera_buffers: 6,
            encoder_slots: 4,
            coded_buffers: 6,
        }
    }
}

struct Pipeline {
    // Field order is drop order: the encoder must stop reading the camera's
    // dmabufs (STREAMOFF) before the requests holding them are dropped, and
    // those before the camera frees its buffers.
    encoder: Encoder,
    held: Vec<Option<Request>>,
    camera: CameraThread,
}

/// IMX219 + bcm2835-codec as a [`VideoSource`].
pub struct PiCameraSource {
    config: PiCameraConfig,
    format: VideoFormat,
    tier: TierId,
    bitrate_bps: u32,
    pipeline: Option<Pipeline>,
    ledger: Ledger,
    assembler: AccessUnitAssembler,
    clock: ClockMap,
    frames_since_clock: u32,
    /// The newest motion-stream luma plane (latest wins).
    luma: Option<LumaFrame>,
}

impl std::fmt::Debug for PiCameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiCameraSource")
            .field("format", &self.format)
            .field("tier", &self.tier.tier().name)
            .field("bitrate_bps", &self.bitrate_bps)
            .finish()
    }
}

fn sample_clocks() -> Result<ClockMap, VideoError> {
    use nix::time::{clock_gettime, ClockId};
    let mono = || {
        clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map(|t| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(t.tv_nsec()).unwrap_or(0)
            })
            .map_err(|e| VideoError::Device(format!("clock_gettime: {e}")))
    };
    let mut samples = [ClockSample {
        mono_before_ns: 0,
        real_ns: 0,
        mono_after_ns: 0,
    }; 5];
    for s in &mut samples {
        let before = mono()?;
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let after = mono()?;
        *s = ClockSample {
            mono_before_ns: before,
            real_ns: real,
            mono_after_ns: after,
        };
    }
    ClockMap::from_samples(&samples)
        .ok_or_else(|| VideoError::Device("monotonic clock went backwards".into()))
}

impl PiCameraSource {
    /// Opens the camera and the encoder and starts streaming.
    pub fn open(config: PiCameraConfig) -> Result<Self, VideoError> {
        config.settings.validate()?;
        let s = config.settings;
        let tier = TIERS
            .iter()
            .position(|t| t.width == s.width && t.height == s.height && t.fps == s.fps)
            .map_or_else(|| super::tiers::tier_for_bitrate(s.bitrate_kbps), TierId);
        let mut source = PiCameraSource {
            ledger: Ledger::new(MAX_CAMERA_BUFFERS, config.encoder_slots as usize),
            format: VideoFormat {
                width: s.width,
                height: s.height,
                fps: s.fps,
            },
            tier,
            bitrate_bps: s.bitrate_kbps.saturating_mul(1000),
            pipeline: None,
            assembler: AccessUnitAssembler::new(),
            clock: sample_clocks()?,
            frames_since_clock: 0,
            luma: None,
            config,
        };
        source.start(s.width, s.height, s.fps)?;
        Ok(source)
    }

    /// The tier the source runs in (meaningful with `adaptive_tiers`).
    pub fn tier(&self) -> TierId {
        self.tier
    }

    fn start(&mut self, width: u32, height: u32, fps: u32) -> Result<(), VideoError> {
        check_request(width, height, fps)?;
        let camera = CameraThread::spawn(CameraConfig {
            width,
            height,
            fps,
            buffers: self.config.camera_buffers,
        })?;
        let params = EncoderParams::new(
            camera.stream.width,
            camera.stream.height,
            fps,
            self.bitrate_bps / 1000,
            self.config.settings.keyframe_interval,
        )
        .map_err(|e| VideoError::InvalidSettings {
            field: "bitrate_kbps",
            message: e.to_string(),
        })?;
        let encoder = Encoder::open(
            &self.config.encoder_path,
            &EncoderSetup {
                width: camera.stream.width,
                height: camera.stream.height,
                fps,
                layout: camera.layout,
                params,
                output_slots: self.config.encoder_slots,
                capture_buffers: self.config.coded_buffers,
            },
        )?;
        self.format = negotiated(&camera.stream, fps);
        self.ledger = Ledger::new(MAX_CAMERA_BUFFERS, self.config.encoder_slots as usize);
        self.assembler.reset();
        let held = (0..self.config.encoder_slots).map(|_| None).collect();
        self.pipeline = Some(Pipeline {
            encoder,
            held,
            camera,
        });
        tracing::info!(?self.format, bitrate_bps = self.bitrate_bps, "pi camera pipeline running");
        Ok(())
    }

    fn stop(&mut self) -> Result<(), VideoError> {
        if let Some(p) = self.pipeline.take() {
            let Pipeline {
                encoder,
                held,
                camera,
            } = p;
            drop(encoder);
            drop(held);
            camera.stop()?;
        }
        Ok(())
    }

    fn feed(&mut self, pic: Picture) -> Result<(), VideoError> {
        let p = self
            .pipeline
            .as_mut()
            .ok_or_else(|| VideoError::Device("pipeline stopped".into()))?;
        let ledger_err =
            |e: super::ledger::LedgerError| VideoError::Device(format!("buffer bookkeeping: {e}"));
        self.ledger.completed(pic.cookie).map_err(ledger_err)?;
        if let Some(l) = pic.luma {
            self.luma = Some(LumaFrame {
                width: l.width,
                height: l.height,
                data: l.data,
                capture_us: self.clock.to_unix_us(pic.sensor_ns),
            });
        }
        let slot = self.ledger.submit(pic.cookie).map_err(ledger_err)?;
        p.encoder.queue_picture(
            slot,
            pic.fd,
            pic.length,
            p.camera.layout.size,
            pic.sensor_ns,
        )?;
        if let Some(h) = p.held.get_mut(slot as usize) {
            *h = Some(pic.request);
        }
        Ok(())
    }

    fn one_step(&mut self, deadline: Instant) -> Result<Option<EncodedFrame>, VideoError> {
        let p = self
            .pipeline
            .as_mut()
            .ok_or_else(|| VideoError::Device("pipeline stopped".into()))?;
        // 1. Slots the encoder is done with: their requests go back to the camera.
        while let Some(slot) = p.encoder.dequeue_output()? {
            self.ledger
                .slot_done(slot)
                .map_err(|e| VideoError::Encoder(format!("buffer bookkeeping: {e}")))?;
            if let Some(req) = p.held.get_mut(slot as usize).and_then(Option::take) {
                p.camera.recycle(req);
            }
        }
        // 2. A coded frame.
        if let Some(coded) = p.encoder.dequeue_coded()? {
            let capture_us = match coded.sensor_ns {
                Some(ns) if ns > 0 => self.clock.to_unix_us(ns),
                _ => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            };
            return self.assembler.push(&coded.data, capture_us);
        }
        // 3. The next picture, if the encoder has room.
        if self.ledger.has_free_slot() {
            let waiting = if self.ledger.encoding() == 0 {
                // Encoder idle: block on the camera.
                let wait = deadline.saturating_duration_since(Instant::now());
                match p.camera.pictures.recv_timeout(wait) {
                    Ok(pic) => Some(pic),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Err(self.camera_gone()),
                }
            } else {
                match p.camera.pictures.try_recv() {
                    Ok(pic) => Some(pic),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return Err(self.camera_gone()),
                }
            };
            if let Some(pic) = waiting {
                self.feed(pic)?;
                return Ok(None);
            }
        }
        // 4. Wait for the encoder (bounded; the caller checks the deadline).
        if self.ledger.encoding() > 0 {
            if let Some(p) = &self.pipeline {
                p.encoder.wait(Duration::from_millis(20))?;
            }
        }
        Ok(None)
    }

    fn camera_gone(&mut self) -> VideoError {
        match self.stop() {
            Err(e) => e,
            Ok(()) => VideoError::Device("camera thread ended".into()),
        }
    }

    fn recheck_clock(&mut self) {
        self.frames_since_clock += 1;
        if self.frames_since_clock < CLOCK_CHECK_FRAMES {
            return;
        }
        self.frames_since_clock = 0;
        match sample_clocks() {
            Ok(fresh) if self.clock.stepped(&fresh, 1_000_000) => {
                tracing::info!("wall clock stepped; re-anchoring frame timestamps");
                self.clock = fresh;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot sample clocks: {e}"),
        }
    }
}

impl VideoSource for PiCameraSource {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn take_luma(&mut self) -> Option<LumaFrame> {
        self.luma.take()
    }

    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError> {
        if self.pipeline.is_none() {
            let f = self.format;
            self.start(f.width, f.height, f.fps)?;
        }
        let deadline = Instant::now() + FRAME_TIMEOUT;
        while Instant::now() < deadline {
            match self.one_step(deadline) {
                Ok(Some(frame)) => {
                    self.recheck_clock();
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    // The next call restarts the pipeline from scratch.
                    let _ = self.stop();
                    return Err(e);
                }
            }
        }
        let _ = self.stop();
        Err(device_error(
            Op::Encode,
            libc_errno::ETIMEDOUT,
            "no coded frame within 3 s",
        ))
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        match decide_bitrate(self.tier, kbps, self.config.adaptive_tiers) {
            BitrateDecision::SetBitrate { bps } => {
                self.bitrate_bps = bps;
                match &self.pipeline {
                    Some(p) => p.encoder.set_bitrate(bps),
                    None => Ok(()),
                }
            }
            BitrateDecision::SwitchTier { tier, bps } => {
                let t = tier.tier();
                tracing::info!(
                    from = self.tier.tier().name,
                    to = t.name,
                    "switching video tier"
                );
                self.stop()?;
                self.tier = tier;
                self.bitrate_bps = bps;
                self.start(t.width, t.height, t.fps)
            }
        }
    }

    fn request_keyframe(&mut self) {
        if let Some(p) = &self.pipeline {
            if let Err(e) = p.encoder.force_keyframe() {
                tracing::warn!("cannot force a keyframe: {e}");
            }
        }
    }
}

impl Drop for PiCameraSource {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("pi camera stopped with an error: {e}");
        }
    }
}
