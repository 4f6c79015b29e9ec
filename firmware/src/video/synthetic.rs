//! A synthetic camera: a moving test pattern encoded with OpenH264.
//!
//! Test equipment, not a camera driver: it lets tests and the demo run the
//! whole pipeline with real, decodable H.264 and no sensor. The picture is a
//! slowly scrolling smooth luma wave over four colour quadrants, with a
//! burnt-in frame counter and wall-clock time so a viewer can read latency off
//! the screen. [`MotionSwitch`] adds a large moving block on demand, for
//! testing motion detection end to end.
//!
//! The plain pattern compresses so well that OpenH264 spends only ~600
//! kbit/s on it at 720p whatever the target. Adaptive-bitrate tests need a
//! source that really produces each tier's rate, so a *busy* scene
//! ([`SyntheticSource::with_busy_scene`]) adds fresh grain to every frame
//! below the clock: the encoder can always spend its whole budget, and
//! the rate it sends is the rate it was asked for. Motion detection sees
//! the picture before the grain.
//!
//! [`ReplaySource`] loops pre-encoded GOPs: it costs almost no CPU, so
//! benchmarks can run many cameras on two cores.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

pub use super::MotionSwitch;
use super::{
    EncodedFrame, LumaFrame, Overlay, VideoError, VideoFormat, VideoSettings, VideoSource,
};

/// Luma planes for motion detection are the picture scaled down by this.
pub const LUMA_SCALE: u32 = 8;

/// Copies `image` centred onto a `w`×`h` luma plane, clipped to it.
fn blit_centred(y_plane: &mut [u8], w: usize, h: usize, image: &LumaFrame) {
    let (iw, ih) = (image.width as usize, image.height as usize);
    if image.data.len() < iw * ih {
        return;
    }
    let (x0, y0) = (w.saturating_sub(iw) / 2, h.saturating_sub(ih) / 2);
    for row in 0..ih.min(h) {
        let n = iw.min(w);
        let dst = (y0 + row) * w + x0;
        y_plane[dst..dst + n].copy_from_slice(&image.data[row * iw..row * iw + n]);
    }
}

/// Reads the scene picture at `path` (binary PGM) for a `width`×`height`
/// source, shrunk to fit the frame.
pub fn load_scene(
    path: &std::path::Path,
    width: u32,
    height: u32,
) -> Result<LumaFrame, VideoError> {
    let bad = |message: String| VideoError::InvalidSettings {
        field: "synthetic_scene",
        message: format!("{}: {message}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let image = kodama_media::pgm::GreyImage::from_pgm(&bytes)
        .map_err(|e| bad(e.to_string()))?
        .fit_within(width, height);
    Ok(LumaFrame {
        width: image.width,
        height: image.height,
        data: image.pixels,
        capture_us: 0,
    })
}

/// Microseconds since the Unix epoch on this machine's clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Sleeps until frame `n` is due, measured from `start`.
fn pace(start: Instant, n: u64, fps: u32) {
    let due = start + Duration::from_micros(n * 1_000_000 / u64::from(fps.max(1)));
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// The synthetic camera.
pub struct SyntheticSource {
    settings: VideoSettings,
    encoder: Encoder,
    yuv: Vec<u8>,
    frame_index: u64,
    start: Instant,
    paced: bool,
    motion: MotionSwitch,
    pending_bitrate: Option<u32>,
    force_keyframe: bool,
    luma: Option<LumaFrame>,
    overlay: Overlay,
    /// A still picture in front of the lens (`video.synthetic_scene`),
    /// drawn under the overlay.
    scene: Option<LumaFrame>,
    /// Grain generator state; `None`: the plain pattern.
    grain: Option<u64>,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("settings", &self.settings)
            .field("frame_index", &self.frame_index)
            .finish_non_exhaustive()
    }
}

fn make_encoder(s: &VideoSettings) -> Result<Encoder, VideoError> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(s.bitrate_kbps.saturating_mul(1000)))
        .max_frame_rate(FrameRate::from_hz(s.fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .usage_type(UsageType::CameraVideoRealTime)
        .intra_frame_period(IntraFramePeriod::from_num_frames(s.keyframe_interval))
        .skip_frames(false)
        .scene_change_detect(false);
    Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| VideoError::Encoder(e.to_string()))
}

impl SyntheticSource {
    /// A source with `settings`; `paced` sleeps to real time (tests of pure
    /// throughput turn it off).
    pub fn new(
        settings: VideoSettings,
        paced: bool,
        motion: MotionSwitch,
    ) -> Result<Self, VideoError> {
        settings.validate()?;
        let encoder = make_encoder(&settings)?;
        let (w, h) = (settings.width as usize, settings.height as usize);
        Ok(Self {
            settings,
            encoder,
            yuv: vec![0; w * h * 3 / 2],
            frame_index: 0,
            start: Instant::now(),
            paced,
            motion,
            pending_bitrate: None,
            force_keyframe: false,
            luma: None,
            overlay: Overlay::default(),
            scene: None,
            grain: None,
        })
    }

    /// Adds fresh grain to every frame (see the module docs): a picture
    /// busy enough that the encoder reaches any bitrate asked of it.
    pub fn with_busy_scene(mut self, busy: bool) -> Self {
        self.grain = busy.then_some(0x9E37_79B9_7F4A_7C15);
        self
    }

    /// Draws whatever `overlay` shows over the pattern.
    pub fn with_overlay(mut self, overlay: Overlay) -> Self {
        self.overlay = overlay;
        self
    }

    /// Films `scene` (e.g. from [`load_scene`]) from the next frame on,
    /// centred; whatever the overlay shows is drawn over it.
    pub fn with_scene(mut self, scene: Option<LumaFrame>) -> Self {
        self.scene = scene;
        self
    }

    fn draw(&mut self, capture_us: u64) {
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        let t = self.frame_index as usize;
        let (y_plane, chroma) = self.yuv.split_at_mut(w * h);
        // Smooth triangle wave scrolling 2 px per frame: visibly moving, but
        // each pixel changes by only a level or two per frame, so it is not
        // "motion" to a block-difference detector.
        let period = 2 * w;
        for y in 0..h {
            let row = &mut y_plane[y * w..(y + 1) * w];
            for (x, px) in row.iter_mut().enumerate() {
                let p = (x + y / 2 + 2 * t) % period;
                let tri = if p < w { p } else { period - p };
                *px = (40 + tri * 160 / w) as u8;
            }
        }
        let (cw, ch) = (w / 2, h / 2);
        let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
        for y in 0..ch {
            for x in 0..cw {
                let q = usize::from(x >= cw / 2) + 2 * usize::from(y >= ch / 2);
                let (u, v) = [(90, 200), (200, 90), (60, 60), (170, 170)][q];
                u_plane[y * cw + x] = u;
                v_plane[y * cw + x] = v;
            }
        }
        if self.motion.get() {
            let bw = w / 3;
            let bh = h / 3;
            let x0 = (t * 8) % (w - bw);
            let y0 = h / 3;
            for y in y0..y0 + bh {
                y_plane[y * w + x0..y * w + x0 + bw].fill(235);
            }
        }
        let secs = capture_us / 1_000_000;
        let text = format!(
            "{:07} {:02}:{:02}:{:02}.{:03}",
            self.frame_index,
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            (capture_us / 1000) % 1000
        );
        burn_text(y_plane, w, h, &text);
        if let Some(scene) = &self.scene {
            blit_centred(y_plane, w, h, scene);
        }
        if let Some(image) = self.overlay.current() {
            blit_centred(y_plane, w, h, &image);
        }
        self.luma = Some(downscale_luma(y_plane, w, h, capture_us));
        if let Some(state) = self.grain.as_mut() {
            // Below the clock band, so the frame counter stays readable.
            let band = 8 * (w / 160).clamp(1, 4);
            add_grain(&mut y_plane[(band * w).min(w * h)..], state);
        }
    }
}

/// Adds ±12 levels of white noise (xorshift64: cheap and deterministic)
/// to every pixel of `plane`.
fn add_grain(plane: &mut [u8], state: &mut u64) {
    for chunk in plane.chunks_mut(8) {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        for (i, px) in chunk.iter_mut().enumerate() {
            let noise = i32::from((x >> (i * 8)) as u8 % 25) - 12;
            *px = (i32::from(*px) + noise).clamp(16, 235) as u8;
        }
    }
}

/// Every `LUMA_SCALE`-th pixel of the luma plane.
fn downscale_luma(y_plane: &[u8], w: usize, h: usize, capture_us: u64) -> LumaFrame {
    let s = LUMA_SCALE as usize;
    let (lw, lh) = (w / s, h / s);
    let mut data = Vec::with_capacity(lw * lh);
    for y in 0..lh {
        for x in 0..lw {
            data.push(y_plane[y * s * w + x * s]);
        }
    }
    LumaFrame {
        width: lw as u32,
        height: lh as u32,
        data,
        capture_us,
    }
}

/// 3x5 glyphs for digits, ':' and '.', one row per 3 bits.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        ':' => [0, 2, 0, 2, 0],
        '.' => [0, 0, 0, 0, 2],
        _ => [0; 5],
    }
}

/// Writes `text` in white on a black band at the top left.
fn burn_text(y_plane: &mut [u8], w: usize, h: usize, text: &str) {
    let scale = (w / 160).clamp(1, 4);
    let (cell_w, cell_h) = (4 * scale, 7 * scale);
    let band_w = (text.len() * cell_w + 2 * scale).min(w);
    for y in 0..cell_h.min(h) {
        y_plane[y * w..y * w + band_w].fill(16);
    }
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = scale + i * cell_w + col * scale + dx;
                        let y = scale + row * scale + dy;
                        if x < w && y < h {
                            y_plane[y * w + x] = 235;
                        }
                    }
                }
            }
        }
    }
}

impl VideoSource for SyntheticSource {
    fn format(&self) -> VideoFormat {
        VideoFormat {
            width: self.settings.width,
            height: self.settings.height,
            fps: self.settings.fps,
        }
    }

    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError> {
        if self.paced {
            pace(self.start, self.frame_index, self.settings.fps);
        }
        // A bitrate change rebuilds the encoder, which starts a new GOP: the
        // switch lands on a keyframe, as a tier change on the Pi does.
        if let Some(kbps) = self.pending_bitrate.take() {
            self.settings.bitrate_kbps = kbps;
            self.encoder = make_encoder(&self.settings)?;
        }
        if std::mem::take(&mut self.force_keyframe) {
            self.encoder.force_intra_frame();
        }
        let capture_us = now_us();
        self.draw(capture_us);
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        let (y, uv) = self.yuv.split_at(w * h);
        let (u, v) = uv.split_at(w * h / 4);
        let yuv = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let data = self
            .encoder
            .encode(&yuv)
            .map(|bs| bs.to_vec())
            .map_err(|e| VideoError::Encoder(e.to_string()))?;
        self.frame_index += 1;
        let keyframe = kodama_media::h264::is_idr(&data);
        Ok(EncodedFrame {
            data: Bytes::from(data),
            keyframe,
            capture_us,
        })
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), VideoError> {
        let mut s = self.settings;
        s.bitrate_kbps = kbps;
        s.validate()?;
        self.pending_bitrate = Some(kbps);
        Ok(())
    }

    fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    fn take_luma(&mut self) -> Option<LumaFrame> {
        self.luma.take()
    }

    fn full_luma(&mut self) -> Option<LumaFrame> {
        let (w, h) = (self.settings.width, self.settings.height);
        Some(LumaFrame {
            width: w,
            height: h,
            data: self.yuv[..(w * h) as usize].to_vec(),
            capture_us: now_us(),
        })
    }
}

/// Loops pre-encoded GOPs in real time, re-stamping capture times.
#[derive(Debug, Clone)]
pub struct ReplaySource {
    format: VideoFormat,
    frames: Vec<EncodedFrame>,
    index: u64,
    /// Set at the first frame, so a source prerendered early does not
    /// burst its "backlog" when it starts.
    start: Option<Instant>,
    paced: bool,
}

impl ReplaySource {
    /// Encodes `seconds` of the synthetic pattern once (rounded up to whole
    /// GOPs, so the loop point is a keyframe) and replays it forever.
    pub fn prerender(
        settings: VideoSettings,
        seconds: u32,
        paced: bool,
    ) -> Result<Self, VideoError> {
        let mut source = SyntheticSource::new(settings, false, MotionSwitch::default())?;
        let gop = settings.keyframe_interval.max(1);
        let wanted = (seconds * settings.fps).max(1);
        let count = wanted.div_ceil(gop) * gop;
        let mut frames = Vec::with_capacity(count as usize);
        for _ in 0..count {
            frames.push(source.next_frame()?);
        }
        if !frames.first().is_some_and(|f| f.keyframe) {
            return Err(VideoError::Encoder(
                "first prerendered frame is not a keyframe".into(),
            ));
        }
        Ok(Self {
            format: source.format(),
            frames,
            index: 0,
            start: None,
            paced,
        })
    }

    /// Average bitrate of the loop in kbit/s.
    pub fn bitrate_kbps(&self) -> u64 {
        let bytes: usize = self.frames.iter().map(|f| f.data.len()).sum();
        let secs = self.frames.len() as f64 / f64::from(self.format.fps);
        (bytes as f64 * 8.0 / secs / 1000.0) as u64
    }
}

impl VideoSource for ReplaySource {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<EncodedFrame, VideoError> {
        if self.paced {
            let start = *self.start.get_or_insert_with(Instant::now);
            pace(start, self.index, self.format.fps);
        }
        let n = self.frames.len() as u64;
        let mut frame = self.frames[(self.index % n) as usize].clone();
        self.index += 1;
        frame.capture_us = now_us();
        Ok(frame)
    }

    fn set_bitrate(&mut self, _kbps: u32) -> Result<(), VideoError> {
        Err(VideoError::Encoder(
            "a replayed stream has a fixed bitrate".into(),
        ))
    }

    fn request_keyframe(&mut self) {
        // Jump to the start of the next loop iteration's GOP: the loop is made
        // of whole GOPs, so index 0 of any iteration is a keyframe.
        let n = self.frames.len() as u64;
        if let Some(next_key) =
            (self.index..self.index + n).find(|i| self.frames[(i % n) as usize].keyframe)
        {
            self.index = next_key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodama_media::h264::{parameter_sets, SpsInfo};

    fn settings() -> VideoSettings {
        VideoSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 400,
            keyframe_interval: 10,
        }
    }

    #[test]
    fn produces_decodable_gops() {
        let mut src =
            SyntheticSource::new(settings(), false, MotionSwitch::default()).expect("source");
        let frames: Vec<_> = (0..25).map(|_| src.next_frame().expect("frame")).collect();
        let keys: Vec<usize> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 10, 20]);
        let (sps, pps) = parameter_sets(&frames[0].data);
        let info = SpsInfo::parse(sps.expect("keyframe carries SPS")).expect("valid SPS");
        assert_eq!((info.width, info.height), (320, 240));
        assert!(pps.is_some());
    }

    #[test]
    fn films_the_scene_picture_shrunk_to_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("scene.pgm");
        // 480x480, black left half, white right half: shrunk to 240x240.
        let image = kodama_media::pgm::GreyImage {
            width: 480,
            height: 480,
            pixels: (0..480 * 480)
                .map(|i| if i % 480 < 240 { 0 } else { 255 })
                .collect(),
        };
        std::fs::write(&path, image.to_pgm()).expect("write");
        let scene = load_scene(&path, 320, 240).expect("loads");
        assert_eq!((scene.width, scene.height), (240, 240));
        let mut src = SyntheticSource::new(settings(), false, MotionSwitch::default())
            .expect("source")
            .with_scene(Some(scene));
        src.next_frame().expect("frame");
        let luma = src.full_luma().expect("luma");
        let at = |x: usize, y: usize| luma.data[y * 320 + x];
        // Centred: columns 40..160 black, 160..280 white, every row.
        assert_eq!((at(60, 120), at(150, 200)), (0, 0));
        assert_eq!((at(170, 120), at(270, 200)), (255, 255));
    }

    #[test]
    fn a_missing_or_bad_scene_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pgm");
        let err = load_scene(&missing, 320, 240).expect_err("missing");
        assert!(
            err.to_string().starts_with("video.synthetic_scene: ")
                && err.to_string().contains("nope.pgm"),
            "{err}"
        );
        let png = dir.path().join("scene.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n").expect("write");
        let err = load_scene(&png, 320, 240).expect_err("not a PGM");
        assert!(err.to_string().contains("not a binary PGM"), "{err}");
    }

    #[test]
    fn keyframe_on_request_and_bitrate_change() {
        let mut src =
            SyntheticSource::new(settings(), false, MotionSwitch::default()).expect("source");
        for _ in 0..3 {
            src.next_frame().expect("frame");
        }
        src.request_keyframe();
        assert!(src.next_frame().expect("frame").keyframe);
        src.set_bitrate(200).expect("valid");
        assert!(
            src.next_frame().expect("frame").keyframe,
            "a new bitrate starts a GOP"
        );
        assert!(src.set_bitrate(1).is_err());
    }

    /// The busy scene makes the encoder produce what each ABR rung asks,
    /// from 500 kbit/s to 4 Mbit/s (the plain pattern stays far below).
    #[test]
    fn busy_scene_reaches_every_rung_of_the_ladder() {
        let fps = 30;
        let mut rates = Vec::new();
        for rung in &kodama_net::policy::rate::LADDER {
            let s = VideoSettings {
                width: 320,
                height: 240,
                fps,
                bitrate_kbps: rung.kbps,
                keyframe_interval: 30,
            };
            let mut src = SyntheticSource::new(s, false, MotionSwitch::default())
                .expect("source")
                .with_busy_scene(true);
            // Skip the first GOP: rate control settles.
            for _ in 0..30 {
                src.next_frame().expect("frame");
            }
            let frames = 60;
            let bytes: usize = (0..frames)
                .map(|_| src.next_frame().expect("frame").data.len())
                .sum();
            let kbps = bytes as f64 * 8.0 * f64::from(fps) / f64::from(frames) / 1000.0;
            rates.push((rung.kbps, kbps));
        }
        for (want, got) in &rates {
            let ratio = got / f64::from(*want);
            assert!(
                (0.7..=1.3).contains(&ratio),
                "asked {want} kbit/s, got {got:.0}: {rates:?}"
            );
        }
    }

    #[test]
    fn motion_changes_the_luma_plane() {
        let motion = MotionSwitch::default();
        let mut src = SyntheticSource::new(settings(), false, motion.clone()).expect("source");
        src.next_frame().expect("frame");
        let still = src.take_luma().expect("luma");
        assert_eq!((still.width, still.height), (40, 30));
        motion.set(true);
        src.next_frame().expect("frame");
        let moving = src.take_luma().expect("luma");
        let changed = still
            .data
            .iter()
            .zip(&moving.data)
            .filter(|(a, b)| a.abs_diff(**b) > 40)
            .count();
        assert!(
            changed > 40,
            "the injected block changes many pixels ({changed})"
        );
    }

    #[test]
    fn replay_loops_on_keyframes() {
        let mut src = ReplaySource::prerender(settings(), 1, false).expect("replay");
        let frames: Vec<_> = (0..70).map(|_| src.next_frame().expect("frame")).collect();
        assert!(frames[0].keyframe && frames[30].keyframe && frames[60].keyframe);
        assert!(src.bitrate_kbps() > 0);
    }
}
