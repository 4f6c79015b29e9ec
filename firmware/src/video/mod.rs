//! Video sources: something that yields encoded H.264 access units.
//!
//! The camera's streaming logic sees only [`VideoSource`]. Implementations:
//! * `synthetic::SyntheticSource` (feature `synthetic`): a moving test
//!   pattern with a burnt-in frame counter and clock, encoded in software with
//!   OpenH264. Test equipment for the demo, the tests and the emulated boot;
//!   it can inject motion. Not in the shipping image.
//! * `pi` (feature `pi`): the IMX219 through libcamera into the Pi's hardware
//!   encoder (V4L2 memory-to-memory, bcm2835-codec).
//!
//! Sources are blocking (capture and hardware encoders are), so the camera
//! runs one on a dedicated thread; see [`spawn_capture`].

pub mod pi;
#[cfg(feature = "synthetic")]
pub mod synthetic;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kodama_proto::{Channel, Frame, FrameFlags};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Turns injected motion on and off from another thread. Only the
/// synthetic source (feature `synthetic`) reads it; a camera sees real motion.
#[derive(Debug, Clone, Default)]
pub struct MotionSwitch(Arc<AtomicBool>);

impl MotionSwitch {
    /// Starts or stops the moving block.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether motion is being injected.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A picture held in front of the synthetic lens (test equipment: e.g. a
/// pairing QR code for onboarding tests), drawn centred over the pattern.
/// Only the synthetic source (feature `synthetic`) reads it.
#[derive(Debug, Clone, Default)]
pub struct Overlay(Arc<std::sync::Mutex<Option<Arc<LumaFrame>>>>);

impl Overlay {
    /// Shows `image` (8-bit luma) from the next frame on.
    pub fn show(&self, image: LumaFrame) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(image));
    }

    /// Takes the picture away.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The picture being shown, if any.
    pub fn current(&self) -> Option<Arc<LumaFrame>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Picture format a source produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

/// Encoder settings a source starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSettings {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate.
    pub bitrate_kbps: u32,
    /// Frames per GOP (a keyframe every this many frames).
    pub keyframe_interval: u32,
}

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex-B access unit (keyframes carry SPS and PPS).
    pub data: Bytes,
    /// Whether it is an IDR access unit.
    pub keyframe: bool,
    /// Capture time, µs since the Unix epoch on the camera's clock.
    pub capture_us: u64,
}

/// A low-resolution luma plane for motion detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LumaFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major 8-bit luma, `width * height` bytes.
    pub data: Vec<u8>,
    /// Capture time, µs since the Unix epoch.
    pub capture_us: u64,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// The settings are unusable; names the field.
    #[error("video.{field}: {message}")]
    InvalidSettings {
        /// The offending setting.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The encoder failed.
    #[error("encoder: {0}")]
    Encoder(String),
    /// The capture device failed.
    #[error("capture device: {0}")]
    Device(String),
}

/// Something that yields encoded video.
pub trait VideoSource: Send {
    /// The format being produced.
    fn format(&self) -> VideoFormat;
    /// Blocks until the next access unit is ready (paced by the sensor or clock).
    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError>;
    /// Changes the target bitrate; takes effect within a GOP.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError>;
    /// Makes the next frame a keyframe.
    fn request_keyframe(&mut self);
    /// Moves to a rung of the adaptive-bitrate ladder from the next
    /// keyframe (forced), and says what the source actually runs now. A
    /// source that can change only its bitrate (the default) keeps its
    /// picture size and frame rate.
    fn set_tier(&mut self, tier: &TierRequest) -> Result<Applied, VideoError> {
        self.set_bitrate(tier.kbps)?;
        self.request_keyframe();
        Ok(Applied {
            tier: tier.name,
            kbps: tier.kbps,
            format: self.format(),
        })
    }
    /// The latest low-resolution luma plane, if the source provides one.
    fn take_luma(&mut self) -> Option<LumaFrame> {
        None
    }
    /// The latest full-resolution luma plane (QR onboarding reads codes
    /// off it), if the source provides one. Called only while unpaired.
    fn full_luma(&mut self) -> Option<LumaFrame> {
        None
    }
}

impl VideoSettings {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), VideoError> {
        let bad = |field, message: String| Err(VideoError::InvalidSettings { field, message });
        if !(16..=4096).contains(&self.width) || !self.width.is_multiple_of(2) {
            return bad(
                "width",
                format!("must be even and 16..=4096, got {}", self.width),
            );
        }
        if !(16..=4096).contains(&self.height) || !self.height.is_multiple_of(2) {
            return bad(
                "height",
                format!("must be even and 16..=4096, got {}", self.height),
            );
        }
        if !(1..=60).contains(&self.fps) {
            return bad("fps", format!("must be 1..=60, got {}", self.fps));
        }
        if !(50..=50_000).contains(&self.bitrate_kbps) {
            return bad(
                "bitrate_kbps",
                format!("must be 50..=50000, got {}", self.bitrate_kbps),
            );
        }
        if !(1..=600).contains(&self.keyframe_interval) {
            return bad(
                "keyframe_interval",
                format!("must be 1..=600 frames, got {}", self.keyframe_interval),
            );
        }
        Ok(())
    }
}

/// Control requests from the network side to the capture thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoControl {
    /// Make the next frame a keyframe.
    Keyframe,
    /// Change the bitrate.
    Bitrate(u32),
    /// Move to a rung of the adaptive-bitrate ladder (at a forced keyframe).
    Tier(TierRequest),
}

/// A rung of the adaptive-bitrate ladder, as the encoder should run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierRequest {
    /// The rung's name (`"480p15"`).
    pub name: &'static str,
    /// Target bitrate, kbit/s.
    pub kbps: u32,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl From<&kodama_net::policy::rate::Rung> for TierRequest {
    fn from(r: &kodama_net::policy::rate::Rung) -> Self {
        TierRequest {
            name: r.name,
            kbps: r.kbps,
            width: r.width,
            height: r.height,
            fps: r.fps,
        }
    }
}

/// What the source runs after a tier request: the capture thread publishes
/// it, the uplink acknowledges with it and telemetry reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The rung asked for.
    pub tier: &'static str,
    /// The bitrate the encoder targets, kbit/s.
    pub kbps: u32,
    /// The picture the source produces.
    pub format: VideoFormat,
}

/// The capture thread's answer to the latest tier request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TierState {
    /// No tier asked for yet.
    #[default]
    Initial,
    /// Running this.
    Applied(Applied),
    /// The source refused the request.
    Failed {
        /// The rung asked for.
        tier: &'static str,
        /// Why.
        error: String,
    },
}

/// Handles to a running capture thread.
#[derive(Debug)]
pub struct Capture {
    /// Encoded frames as protocol frames (video channel), sequence-numbered.
    pub frames: mpsc::Receiver<Arc<Frame>>,
    /// Luma planes for motion detection (latest-wins; a slow reader misses some).
    pub luma: mpsc::Receiver<LumaFrame>,
    /// Control requests to the source.
    pub control: mpsc::Sender<VideoControl>,
    /// What the source did with the latest tier request.
    pub tier: tokio::sync::watch::Receiver<TierState>,
    /// The thread; joins after `cancel` fires.
    pub thread: std::thread::JoinHandle<Result<(), VideoError>>,
}

/// Frames buffered between the capture thread and the network side: a bit
/// over one second at 30 fps. When full, the capture thread drops frames
/// until the next keyframe (never a partial GOP) and asks for one.
pub const CAPTURE_QUEUE: usize = 40;

/// Runs `source` on its own thread until `cancel` fires.
///
/// The thread never blocks on the network: frames are offered with
/// `try_send`; after a drop it discards until a keyframe so receivers never
/// see a GOP with holes.
pub fn spawn_capture(
    mut source: Box<dyn VideoSource>,
    cancel: CancellationToken,
) -> Result<Capture, VideoError> {
    let (frame_tx, frames) = mpsc::channel(CAPTURE_QUEUE);
    let (luma_tx, luma) = mpsc::channel(4);
    let (control, mut control_rx) = mpsc::channel(16);
    let (tier_tx, tier) = tokio::sync::watch::channel(TierState::Initial);
    let thread = std::thread::Builder::new()
        .name("kodama-capture".into())
        .spawn(move || {
            let mut sequence = 0u64;
            let mut skipping = false;
            let mut dropped = 0u64;
            while !cancel.is_cancelled() {
                while let Ok(c) = control_rx.try_recv() {
                    match c {
                        VideoControl::Keyframe => source.request_keyframe(),
                        VideoControl::Bitrate(kbps) => {
                            if let Err(e) = source.set_bitrate(kbps) {
                                tracing::warn!("cannot change bitrate to {kbps} kbit/s: {e}");
                            }
                        }
                        VideoControl::Tier(t) => {
                            let state = match source.set_tier(&t) {
                                Ok(applied) => {
                                    tracing::info!(tier = t.name, kbps = applied.kbps, format = ?applied.format, "video tier");
                                    TierState::Applied(applied)
                                }
                                Err(e) => {
                                    tracing::warn!(tier = t.name, "cannot change the video tier: {e}");
                                    TierState::Failed {
                                        tier: t.name,
                                        error: e.to_string(),
                                    }
                                }
                            };
                            tier_tx.send_replace(state);
                        }
                    }
                }
                let encoded = source.next_frame()?;
                if let Some(l) = source.take_luma() {
                    let _ = luma_tx.try_send(l);
                }
                if skipping && !encoded.keyframe {
                    dropped += 1;
                    continue;
                }
                skipping = false;
                let mut flags = FrameFlags::empty();
                if encoded.keyframe {
                    flags = FrameFlags::KEYFRAME | FrameFlags::CODEC_CONFIG;
                }
                let frame = Arc::new(Frame {
                    channel: Channel::Video,
                    flags,
                    capture_us: encoded.capture_us,
                    sequence,
                    payload: encoded.data,
                });
                sequence += 1;
                match frame_tx.try_send(frame) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped += 1;
                        skipping = true;
                        source.request_keyframe();
                        tracing::debug!(
                            dropped,
                            "network side is behind; skipping to the next keyframe"
                        );
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            Ok(())
        })
        .map_err(|e| VideoError::Device(format!("cannot start capture thread: {e}")))?;
    Ok(Capture {
        frames,
        luma,
        control,
        tier,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> VideoSettings {
        VideoSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 500,
            keyframe_interval: 30,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(settings().validate().is_ok());
        let mut s = settings();
        s.width = 321;
        assert!(s
            .validate()
            .expect_err("odd")
            .to_string()
            .starts_with("video.width"));
        let mut s = settings();
        s.fps = 0;
        assert!(s
            .validate()
            .expect_err("fps")
            .to_string()
            .starts_with("video.fps"));
        let mut s = settings();
        s.keyframe_interval = 0;
        assert!(s
            .validate()
            .expect_err("gop")
            .to_string()
            .starts_with("video.keyframe_interval"));
    }
}
