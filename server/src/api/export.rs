//! Export: one fragmented MP4 for a time range, from the keyframe at or
//! before the start to the end, assembled from indexed fragments and
//! streamed chunk by chunk without temporary files.
//!
//! Each fragment's `moof` is rewritten: sequence numbers restart at 1 and
//! decode times are rebased on the export's first keyframe (wall-clock
//! distance, never decreasing), so the output is one continuous timeline;
//! the last fragment is cut after the last frame that starts before `end`.
//! The export stops at a change of codec parameters (a different init
//! segment), which one `avc1` sample entry cannot describe. A recording's
//! audio track comes along: each fragment's audio run is moved by the same
//! amount as its video and cut where the video is.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kodama_media::fmp4::{self, AudioRun, FragmentHeader, AUDIO_TIMESCALE, TIMESCALE};

use crate::db::{Db, DbError, FragmentRow};
use crate::recorder::segment::us_to_ticks;

/// One fragment to copy.
#[derive(Debug, Clone)]
pub struct PlannedFragment {
    /// The segment file.
    pub path: PathBuf,
    /// The fragment row.
    pub row: FragmentRow,
}

/// What an export will contain.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// File whose init segment starts the export.
    pub init_path: PathBuf,
    /// Its init length.
    pub init_len: u64,
    /// Fragments in order.
    pub fragments: Vec<PlannedFragment>,
    /// Wall time of the first keyframe (media time zero).
    pub base_us: i64,
    /// End of the range.
    pub end_us: i64,
}

/// Plans an export of `camera_id` over `[start, end)`. `None`: nothing
/// recorded in the range.
pub fn plan(
    db: &Db,
    root: &Path,
    camera_id: i64,
    start_us: i64,
    end_us: i64,
) -> Result<Option<ExportPlan>, DbError> {
    // Segments overlapping the range, plus any that ended before `start` are
    // irrelevant: the keyframe at or before `start` lies in the segment that
    // contains `start` (segments start with a keyframe).
    let segments = db.segments_between(camera_id, start_us, end_us)?;
    let mut chosen: Vec<PlannedFragment> = Vec::new();
    let mut init: Option<(PathBuf, u64, Vec<u8>)> = None;
    'segments: for seg in segments {
        let path = root.join(&seg.path);
        let frags = db.fragments(seg.id)?;
        for row in frags {
            if row.start_us >= end_us {
                break 'segments;
            }
            if row.start_us + row.duration_us <= start_us {
                continue;
            }
            match &init {
                None => {
                    let Ok(bytes) = read_at(&path, 0, seg.init_bytes as u64) else {
                        continue 'segments;
                    };
                    init = Some((path.clone(), seg.init_bytes as u64, bytes));
                }
                Some((_, _, first)) => {
                    if chosen.last().is_none_or(|c| c.path != path) {
                        // Entering a new segment: same codec parameters?
                        match read_at(&path, 0, seg.init_bytes as u64) {
                            Ok(b) if &b == first => {}
                            _ => break 'segments,
                        }
                    }
                }
            }
            chosen.push(PlannedFragment {
                path: path.clone(),
                row,
            });
        }
    }
    let (Some((init_path, init_len, _)), Some(first)) = (init, chosen.first()) else {
        return Ok(None);
    };
    let base_us = first.row.start_us;
    Ok(Some(ExportPlan {
        init_path,
        init_len,
        fragments: chosen,
        base_us,
        end_us,
    }))
}

fn read_at(path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| io::Error::other("length"))?];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Produces the export's bytes, calling `sink` with each chunk; stops early
/// (returning `Ok`) when `sink` returns false (the client went away).
pub fn produce(plan: &ExportPlan, mut sink: impl FnMut(Bytes) -> bool) -> io::Result<u64> {
    let mut total = 0u64;
    let init = read_at(&plan.init_path, 0, plan.init_len)?;
    total += init.len() as u64;
    if !sink(Bytes::from(init)) {
        return Ok(total);
    }
    let mut next_ticks = 0u64;
    let mut next_audio_ticks = 0u64;
    let mut file: Option<(PathBuf, File)> = None;
    for (n, pf) in plan.fragments.iter().enumerate() {
        if file.as_ref().is_none_or(|(p, _)| p != &pf.path) {
            file = Some((pf.path.clone(), File::open(&pf.path)?));
        }
        let Some((_, f)) = &file else {
            break;
        };
        let mut buf = vec![0u8; pf.row.len as usize];
        f.read_exact_at(&mut buf, pf.row.offset as u64)?;
        let info = fmp4::parse_fragment(&buf, pf.row.offset as u64)
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::other("indexed fragment is incomplete"))?;
        let base = us_to_ticks((pf.row.start_us - plan.base_us).max(0) as u64).max(next_ticks);
        // Keep frames that start before `end` (at least the keyframe).
        let mut samples = Vec::with_capacity(info.header.samples.len());
        let mut t = pf.row.start_us;
        for s in &info.header.samples {
            if !samples.is_empty() && t >= plan.end_us {
                break;
            }
            samples.push(*s);
            t += crate::recorder::segment::ticks_to_us(u64::from(s.duration));
        }
        let payload_len: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
        let header = FragmentHeader {
            sequence: n as u32 + 1,
            base_decode_time: base,
            wall_time_us: info.header.wall_time_us,
            samples,
        };
        next_ticks = base
            + header
                .samples
                .iter()
                .map(|s| u64::from(s.duration))
                .sum::<u64>();
        // Audio: shifted like the video (same origin in the segment), and
        // only what starts before the kept video ends.
        let audio = info.audio.as_ref().map(|run| {
            let to_audio = |v: u64| {
                (u128::from(v) * u128::from(AUDIO_TIMESCALE) / u128::from(TIMESCALE)) as i128
            };
            let offset = i128::from(run.base_decode_time) - to_audio(info.header.base_decode_time);
            let moved = (to_audio(base) + offset).max(0) as u64;
            let audio_base = moved.max(next_audio_ticks);
            let video_end = to_audio(next_ticks) as u64;
            let mut t = audio_base;
            let samples: Vec<_> = run
                .samples
                .iter()
                .take_while(|s| {
                    let keep = t < video_end;
                    t += u64::from(s.duration);
                    keep
                })
                .copied()
                .collect();
            AudioRun {
                base_decode_time: audio_base,
                samples,
            }
        });
        if let Some(a) = &audio {
            next_audio_ticks = a.base_decode_time + a.duration();
        }
        let head = fmp4::fragment_header_av(&header, audio.as_ref()).map_err(io::Error::other)?;
        let start = (info.data_offset - pf.row.offset as u64) as usize;
        let buf = Bytes::from(buf);
        let data = buf.slice(start..start + payload_len as usize);
        let audio_data = match &audio {
            Some(a) => {
                let at = (info.audio_data_offset - pf.row.offset as u64) as usize;
                buf.slice(at..at + a.payload_len() as usize)
            }
            None => Bytes::new(),
        };
        total += head.len() as u64 + data.len() as u64 + audio_data.len() as u64;
        if !sink(Bytes::from(head)) || !sink(data) || !sink(audio_data) {
            return Ok(total);
        }
    }
    Ok(total)
}
