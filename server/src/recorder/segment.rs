//! One segment file being written: creation in the crash-safe order,
//! appending fragments, and making them durable. The fragment bytes themselves are built
//! sans-IO by [`build_fragment`].

use std::io;
use std::path::{Path, PathBuf};

use kodama_media::fmp4::{
    self, AudioRun, AudioTrack, FragmentHeader, SampleInfo, VideoTrack, AUDIO_TIMESCALE, TIMESCALE,
};
use kodama_proto::Frame;

use super::storage::{LocalStorage, Storage, StorageFile};

/// Converts capture µs to 90 kHz ticks (exact for µs multiples of 100/9).
pub fn us_to_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(TIMESCALE) / 1_000_000) as u64
}

/// Converts 90 kHz ticks to µs.
pub fn ticks_to_us(ticks: u64) -> i64 {
    (u128::from(ticks) * 1_000_000 / u128::from(TIMESCALE)) as i64
}

/// A fragment ready to be written.
#[derive(Debug, Clone)]
pub struct BuiltFragment {
    /// `prft` + `moof` + `mdat` header.
    pub header_bytes: Vec<u8>,
    /// The sample data (the `mdat` payload).
    pub data: Vec<u8>,
    /// Its header fields.
    pub header: FragmentHeader,
    /// The audio samples of the fragment's time span, if any; their bytes
    /// follow the video's in `data`.
    pub audio: Option<AudioRun>,
}

impl BuiltFragment {
    /// Total length on disk.
    pub fn len(&self) -> u64 {
        (self.header_bytes.len() + self.data.len()) as u64
    }

    /// Whether it holds no bytes (never true for a built fragment).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Duration in ticks.
    pub fn duration_ticks(&self) -> u64 {
        self.header
            .samples
            .iter()
            .map(|s| u64::from(s.duration))
            .sum()
    }
}

/// Builds a fragment from the video frames of one GOP.
///
/// Decode times come from the capture clock relative to `segment_start_us`
/// (the capture time of the segment's first frame). The last frame has no
/// successor yet, so it lasts `nominal_us` (one frame interval). A fragment
/// never starts before the previous one ended (`min_base_ticks`), so decode
/// times stay monotonic even when that guess was long.
pub fn build_fragment(
    frames: &[&Frame],
    sequence: u32,
    segment_start_us: u64,
    min_base_ticks: u64,
    nominal_us: u64,
    wall_time_us: i64,
) -> Result<BuiltFragment, fmp4::Mp4Error> {
    let mut data = Vec::with_capacity(frames.iter().map(|f| f.payload.len()).sum());
    let mut samples = Vec::with_capacity(frames.len());
    let mut times = Vec::with_capacity(frames.len() + 1);
    for f in frames {
        times.push(us_to_ticks(f.capture_us.saturating_sub(segment_start_us)));
    }
    let last = times.last().copied().unwrap_or(0);
    times.push(last + us_to_ticks(nominal_us).max(1));
    // Shift the whole GOP if it would start before the previous one ended,
    // then keep times strictly increasing.
    let shift = min_base_ticks.saturating_sub(times[0]);
    for t in times.iter_mut() {
        *t += shift;
    }
    for i in 1..times.len() {
        if times[i] <= times[i - 1] {
            times[i] = times[i - 1] + 1;
        }
    }
    for (i, f) in frames.iter().enumerate() {
        let size = fmp4::append_sample(&f.payload, &mut data);
        samples.push(SampleInfo {
            duration: u32::try_from(times[i + 1] - times[i]).unwrap_or(u32::MAX),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            keyframe: i == 0,
        });
    }
    let header = FragmentHeader {
        sequence,
        base_decode_time: times[0],
        wall_time_us: Some(wall_time_us),
        samples,
    };
    let header_bytes = fmp4::fragment_header(&header)?;
    Ok(BuiltFragment {
        header_bytes,
        data,
        header,
        audio: None,
    })
}

/// Converts capture µs to 48 kHz audio ticks.
pub fn us_to_audio_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(AUDIO_TIMESCALE) / 1_000_000) as u64
}

/// Converts 48 kHz audio ticks to µs.
pub fn audio_ticks_to_us(ticks: u64) -> i64 {
    (u128::from(ticks) * 1_000_000 / u128::from(AUDIO_TIMESCALE)) as i64
}

pub use kodama_media::opus::packet_samples as opus_packet_samples;

/// Adds the audio packets of a fragment's time span as its audio run.
///
/// Decode times follow the capture clock relative to `segment_start_us`, the
/// same origin as the video's, so the tracks stay in sync; a run never
/// starts before the previous one ended (`min_base_ticks`, 48 kHz). Each
/// packet lasts what it decodes to, stretched only to bridge a gap of
/// missing packets. Packets that are not Opus are skipped. Returns the
/// decode time where the next run may start.
pub fn attach_audio(
    built: &mut BuiltFragment,
    packets: &[&Frame],
    segment_start_us: u64,
    min_base_ticks: u64,
) -> Result<u64, fmp4::Mp4Error> {
    let packets: Vec<(&Frame, u32)> = packets
        .iter()
        .filter_map(|f| opus_packet_samples(&f.payload).map(|n| (*f, n)))
        .collect();
    let Some(first) = packets.first() else {
        return Ok(min_base_ticks);
    };
    let start = |f: &Frame| us_to_audio_ticks(f.capture_us.saturating_sub(segment_start_us));
    let base = start(first.0).max(min_base_ticks);
    let mut t = base;
    let mut samples = Vec::with_capacity(packets.len());
    for (i, (f, nominal)) in packets.iter().enumerate() {
        let mut duration = u64::from(*nominal);
        if let Some((next, _)) = packets.get(i + 1) {
            let gap = start(next).saturating_sub(t + duration);
            if gap > duration / 2 {
                duration += gap;
            }
        }
        t += duration;
        built.data.extend_from_slice(&f.payload);
        samples.push(SampleInfo {
            duration: u32::try_from(duration).unwrap_or(u32::MAX),
            size: u32::try_from(f.payload.len()).unwrap_or(u32::MAX),
            keyframe: true,
        });
    }
    let run = AudioRun {
        base_decode_time: base,
        samples,
    };
    built.header_bytes = fmp4::fragment_header_av(&built.header, Some(&run))?;
    built.audio = Some(run);
    Ok(t)
}

/// Syncs a directory, making entries created or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    LocalStorage.sync_dir(dir)
}

/// A segment file open for appending. Appends are written at once and made
/// durable by [`SegmentFile::sync`], which the writer calls before it
/// commits their index rows (invariant 1 of docs/design/recording.md).
#[derive(Debug)]
pub struct SegmentFile {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    /// Bytes written: init + fragments.
    written: u64,
    /// Bytes known durable (synced).
    durable: u64,
    /// Length of the init segment.
    init_len: u64,
}

impl SegmentFile {
    /// Creates `path` with `track`'s init segment in the crash-safe order:
    /// write a temporary file, sync it, rename, sync the directory (and its
    /// parent when the directory is new). See docs/design/recording.md.
    pub fn create(
        storage: &dyn Storage,
        path: &Path,
        track: &VideoTrack,
    ) -> io::Result<SegmentFile> {
        Self::create_av(storage, path, track, None)
    }

    /// [`SegmentFile::create`] for a file with an audio track as well.
    pub fn create_av(
        storage: &dyn Storage,
        path: &Path,
        track: &VideoTrack,
        audio: Option<&AudioTrack>,
    ) -> io::Result<SegmentFile> {
        let dir = path.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "segment path has no parent")
        })?;
        let new_dir = !storage.exists(dir);
        storage.create_dir_all(dir)?;
        if new_dir {
            // The camera and date directories' entries must be durable too.
            if let Some(parent) = dir.parent() {
                storage.sync_dir(parent)?;
                if let Some(grand) = parent.parent() {
                    storage.sync_dir(grand)?;
                }
            }
        }
        let tmp = path.with_extension("mp4.tmp");
        let init = fmp4::init_segment_av(track, audio);
        let result = (|| {
            let mut file = storage.create(&tmp)?;
            file.write_all_at(&init, 0)?;
            file.sync_data()?;
            storage.rename(&tmp, path)?;
            storage.sync_dir(dir)?;
            Ok(file)
        })();
        match result {
            Ok(file) => Ok(SegmentFile {
                file,
                path: path.to_owned(),
                written: init.len() as u64,
                durable: init.len() as u64,
                init_len: init.len() as u64,
            }),
            Err(e) => {
                let _ = storage.remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Appends a fragment (not yet durable: see [`SegmentFile::sync`]);
    /// returns its offset. On failure the file is cut back to its previous
    /// length, so it never ends in a partial fragment this process knows of.
    pub fn append(&mut self, fragment: &BuiltFragment) -> io::Result<u64> {
        let offset = self.written;
        let result = (|| {
            self.file.write_all_at(&fragment.header_bytes, offset)?;
            self.file
                .write_all_at(&fragment.data, offset + fragment.header_bytes.len() as u64)
        })();
        match result {
            Ok(()) => {
                self.written = offset + fragment.len();
                Ok(offset)
            }
            Err(e) => {
                // Best effort: a failure here leaves a tail that
                // reconciliation trims at the next start.
                let _ = self.file.set_len(offset);
                Err(e)
            }
        }
    }

    /// Makes everything appended durable. On failure the file is cut back
    /// to what was durable before: after a failed `fdatasync` the kernel
    /// may have dropped the unsynced pages, so their bytes are not trusted.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.durable == self.written {
            return Ok(());
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.durable = self.written;
                Ok(())
            }
            Err(e) => {
                if self.file.set_len(self.durable).is_ok() {
                    self.written = self.durable;
                }
                Err(e)
            }
        }
    }

    /// Whether appended bytes are waiting for [`SegmentFile::sync`].
    pub fn needs_sync(&self) -> bool {
        self.durable != self.written
    }

    /// Bytes written so far (init segment and fragments).
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether only the init segment has been written.
    pub fn is_empty(&self) -> bool {
        self.written == self.init_len
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::{Channel, FrameFlags};

    fn frame(capture_us: u64, key: bool) -> Frame {
        Frame {
            channel: Channel::Video,
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::empty()
            },
            capture_us,
            sequence: 0,
            payload: Bytes::from_static(&[0, 0, 0, 1, 0x41, 1, 2, 3]),
        }
    }

    #[test]
    fn durations_follow_capture_times_and_stay_monotonic() {
        let frames = [
            frame(1_000_000, true),
            frame(1_033_333, false),
            frame(1_066_667, false),
        ];
        let refs: Vec<&Frame> = frames.iter().collect();
        let f = build_fragment(&refs, 1, 1_000_000, 0, 33_333, 42).expect("builds");
        assert_eq!(f.header.base_decode_time, 0);
        let d: Vec<u32> = f.header.samples.iter().map(|s| s.duration).collect();
        // 0, 33_333 and 66_667 µs floor to ticks 0, 2999 and 6000.
        assert_eq!(d, vec![2999, 3001, 2999]);
        assert!(f.header.samples[0].keyframe && !f.header.samples[1].keyframe);

        // A GOP that would overlap the previous one is shifted after it.
        let f = build_fragment(&refs, 2, 1_000_000, 500, 33_333, 42).expect("builds");
        assert_eq!(f.header.base_decode_time, 500);

        // Repeated capture times still give positive durations.
        let same = [frame(5, true), frame(5, false)];
        let refs: Vec<&Frame> = same.iter().collect();
        let f = build_fragment(&refs, 1, 0, 0, 0, 0).expect("builds");
        assert!(f.header.samples.iter().all(|s| s.duration >= 1));
    }
}
