//! Preview thumbnails for the web app's timeline and events: the keyframe of
//! the recorded GOP at (or just before) a time, decoded with OpenH264,
//! scaled down and written as JPEG. Cached on disk under
//! `<data>/thumbs/<camera-id>/<segment>-<fragment>.jpg` (every GOP has one
//! picture, so a cache entry never goes stale; entries of deleted
//! recordings are pruned, oldest first, when the cache exceeds
//! [`MAX_CACHED`] files).
//!
//! Decoding is CPU work: it runs on the blocking pool, one thumbnail at a
//! time ([`Thumbs::render`] holds a semaphore), so a scrubbing browser can
//! never occupy more than one core.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kodama_media::fmp4;

use crate::db::{Db, DbError, FragmentRow, SegmentRow};

/// Width of a thumbnail in pixels (height keeps the aspect ratio).
pub const WIDTH: usize = 192;
/// JPEG quality (1–100).
pub const QUALITY: u8 = 70;
/// Cached files kept at most.
pub const MAX_CACHED: usize = 20_000;
/// Largest keyframe decoded (bytes).
const MAX_KEYFRAME: u64 = 4 * 1024 * 1024;

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbError {
    /// Nothing was recorded at that time.
    #[error("nothing recorded at that time")]
    NotRecorded,
    /// The index failed.
    #[error("index: {0}")]
    Db(#[from] DbError),
    /// The segment file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The recording is not what the index says.
    #[error("segment {0}: {1}")]
    Media(String, String),
    /// The decoder produced no picture.
    #[error("the keyframe did not decode: {0}")]
    Decode(String),
    /// The JPEG encoder failed.
    #[error("jpeg: {0}")]
    Jpeg(String),
}

/// The thumbnail cache of one server.
#[derive(Debug)]
pub struct Thumbs {
    dir: PathBuf,
    root: PathBuf,
    gate: tokio::sync::Semaphore,
    writes: AtomicU64,
}

/// Which GOP a time falls in.
#[derive(Debug, Clone)]
pub struct Located {
    /// Its segment.
    pub segment: SegmentRow,
    /// Its fragment.
    pub fragment: FragmentRow,
}

/// Finds the GOP whose keyframe is at or before `time_us` (the first one of
/// the segment if `time_us` falls before it), within the segment that
/// covers `time_us`, or the next one starting within a second.
pub fn locate(db: &Db, camera_id: i64, time_us: i64) -> Result<Located, ThumbError> {
    let segments = db.segments_between(camera_id, time_us, time_us + 1_000_000)?;
    let segment = segments
        .iter()
        .find(|s| s.start_us <= time_us && time_us < s.end_us)
        .or_else(|| segments.first())
        .cloned()
        .ok_or(ThumbError::NotRecorded)?;
    let fragments = db.fragments(segment.id)?;
    let fragment = fragments
        .iter()
        .rev()
        .find(|f| f.start_us <= time_us)
        .or_else(|| fragments.first())
        .copied()
        .ok_or(ThumbError::NotRecorded)?;
    Ok(Located { segment, fragment })
}

impl Thumbs {
    /// A cache in `<data>/thumbs` for recordings under `recordings`.
    pub fn new(data_dir: &Path, recordings: PathBuf) -> Self {
        Thumbs {
            dir: data_dir.join("thumbs"),
            root: recordings,
            gate: tokio::sync::Semaphore::new(1),
            writes: AtomicU64::new(0),
        }
    }

    fn cache_path(&self, endpoint: &str, at: &Located) -> PathBuf {
        self.dir
            .join(endpoint)
            .join(format!("{}-{}.jpg", at.segment.id, at.fragment.seq))
    }

    /// The JPEG for a located GOP, from the cache or made now.
    pub async fn render(&self, endpoint: &str, at: Located) -> Result<Vec<u8>, ThumbError> {
        let path = self.cache_path(endpoint, &at);
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(bytes);
        }
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| ThumbError::Decode("the server is shutting down".into()))?;
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(bytes);
        }
        let file = self.root.join(&at.segment.path);
        let jpeg = tokio::task::spawn_blocking(move || make_thumbnail(&file, &at))
            .await
            .map_err(|e| ThumbError::Decode(format!("task: {e}")))??;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, &jpeg).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        if self.writes.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || prune(&dir, MAX_CACHED));
        }
        Ok(jpeg)
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, ThumbError> {
    let io = |source| ThumbError::Io {
        path: path.to_owned(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).map_err(io)?;
    Ok(buf)
}

/// Decodes the keyframe of a located GOP and encodes a thumbnail.
pub fn make_thumbnail(file: &Path, at: &Located) -> Result<Vec<u8>, ThumbError> {
    let media = |e: fmp4::Mp4Error| ThumbError::Media(at.segment.path.clone(), e.to_string());
    let init = read_at(file, 0, at.segment.init_bytes.max(0) as u64)?;
    let track = fmp4::parse_init(&init).map_err(media)?.track;
    if at.fragment.len <= 0 || at.fragment.len as u64 > MAX_KEYFRAME + 4096 {
        return Err(ThumbError::Media(
            at.segment.path.clone(),
            format!("fragment of {} bytes", at.fragment.len),
        ));
    }
    // The fragment header and its first sample: read the whole fragment if
    // small, else the metadata plus the keyframe.
    let frag = read_at(file, at.fragment.offset as u64, at.fragment.len as u64)?;
    let info = fmp4::parse_fragment(&frag, at.fragment.offset as u64)
        .map_err(media)?
        .ok_or_else(|| ThumbError::Media(at.segment.path.clone(), "truncated fragment".into()))?;
    let first = info
        .header
        .samples
        .first()
        .ok_or_else(|| ThumbError::Media(at.segment.path.clone(), "empty fragment".into()))?;
    let start = (info.data_offset - at.fragment.offset as u64) as usize;
    let sample = frag
        .get(start..start + first.size as usize)
        .ok_or_else(|| {
            ThumbError::Media(at.segment.path.clone(), "sample outside fragment".into())
        })?;
    let annexb = to_annexb(&track.sps, &track.pps, sample)
        .ok_or_else(|| ThumbError::Media(at.segment.path.clone(), "bad NAL lengths".into()))?;
    let (w, h, rgb) = decode_rgb(&annexb)?;
    let (tw, th, small) = downscale(&rgb, w, h, WIDTH);
    encode_jpeg(&small, tw, th)
}

/// An AVC-form sample (4-byte lengths) as an Annex-B access unit led by the
/// parameter sets.
pub fn to_annexb(sps: &[u8], pps: &[u8], sample: &[u8]) -> Option<Vec<u8>> {
    to_annexb_led_by(&[sps, pps], sample)
}

/// An AVC-form sample (4-byte lengths) as an Annex-B access unit, led by
/// `parameter_sets` (none for a frame that is not a keyframe).
pub fn to_annexb_led_by(parameter_sets: &[&[u8]], sample: &[u8]) -> Option<Vec<u8>> {
    let extra: usize = parameter_sets.iter().map(|p| p.len() + 4).sum();
    let mut out = Vec::with_capacity(sample.len() + extra);
    for ps in parameter_sets {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(ps);
    }
    let mut rest = sample;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let nal = rest.get(4..4 + len)?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &rest[4 + len..];
    }
    Some(out)
}

fn decode_rgb(annexb: &[u8]) -> Result<(usize, usize, Vec<u8>), ThumbError> {
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;
    let mut dec = Decoder::new().map_err(|e| ThumbError::Decode(e.to_string()))?;
    let to_rgb = |yuv: &openh264::decoder::DecodedYUV<'_>| {
        let (w, h) = yuv.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        yuv.write_rgb8(&mut rgb);
        (w, h, rgb)
    };
    if let Some(yuv) = dec
        .decode(annexb)
        .map_err(|e| ThumbError::Decode(e.to_string()))?
    {
        return Ok(to_rgb(&yuv));
    }
    let rest = dec
        .flush_remaining()
        .map_err(|e| ThumbError::Decode(e.to_string()))?;
    rest.first()
        .map(to_rgb)
        .ok_or_else(|| ThumbError::Decode("no picture".into()))
}

/// Box-filter downscale of packed RGB to `target_w` wide (never up).
pub fn downscale(rgb: &[u8], w: usize, h: usize, target_w: usize) -> (usize, usize, Vec<u8>) {
    if w <= target_w || w == 0 || h == 0 {
        return (w, h, rgb.to_vec());
    }
    let tw = target_w;
    let th = (h * tw / w).max(1);
    let mut out = vec![0u8; tw * th * 3];
    for ty in 0..th {
        let (y0, y1) = (ty * h / th, ((ty + 1) * h / th).max(ty * h / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, ((tx + 1) * w / tw).max(tx * w / tw + 1));
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = (y * w + x) * 3;
                    for c in 0..3 {
                        sum[c] += u32::from(rgb[p + c]);
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (ty * tw + tx) * 3;
            for c in 0..3 {
                out[o + c] = (sum[c] / n) as u8;
            }
        }
    }
    (tw, th, out)
}

fn encode_jpeg(rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>, ThumbError> {
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, QUALITY);
    let (w16, h16) = (
        u16::try_from(w).map_err(|_| ThumbError::Jpeg("too wide".into()))?,
        u16::try_from(h).map_err(|_| ThumbError::Jpeg("too tall".into()))?,
    );
    enc.encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ThumbError::Jpeg(e.to_string()))?;
    Ok(out)
}

/// Deletes the oldest cached thumbnails beyond `keep`.
pub fn prune(dir: &Path, keep: usize) {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    let Ok(cams) = std::fs::read_dir(dir) else {
        return;
    };
    for cam in cams.flatten() {
        let Ok(entries) = std::fs::read_dir(cam.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            files.push((t, e.path()));
        }
    }
    if files.len() <= keep {
        return;
    }
    files.sort();
    let excess = files.len() - keep;
    for (_, p) in files.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_conversion_checks_lengths() {
        let sample = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        let out = to_annexb(&[0x67, 1], &[0x68, 2], &sample).expect("valid");
        assert_eq!(
            out,
            [0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x06]
        );
        assert_eq!(to_annexb(&[], &[], &[0, 0, 0, 9, 1]), None);
        assert_eq!(to_annexb(&[], &[], &[0, 0]), None);
    }

    #[test]
    fn downscale_averages_boxes() {
        // 4x2 → 2x1: each output pixel is the mean of a 2x2 box.
        let rgb: Vec<u8> = (0..8).flat_map(|i| [i * 10, 0, 255]).collect();
        let (w, h, out) = downscale(&rgb, 4, 2, 2);
        assert_eq!((w, h), (2, 1));
        assert_eq!(out, vec![25, 0, 255, 45, 0, 255]);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cam = dir.path().join("cam");
        std::fs::create_dir_all(&cam).expect("mkdir");
        for i in 0..5 {
            let p = cam.join(format!("{i}.jpg"));
            std::fs::write(&p, b"x").expect("write");
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            File::options()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(t))
                .expect("mtime");
        }
        prune(dir.path(), 2);
        let mut left: Vec<_> = std::fs::read_dir(&cam)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().into_string().expect("utf8"))
            .collect();
        left.sort();
        assert_eq!(left, ["3.jpg", "4.jpg"]);
    }
}
