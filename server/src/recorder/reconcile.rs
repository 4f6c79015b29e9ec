//! Startup reconciliation of the index with the segment files (the
//! "Recover" order in docs/design/recording.md): drop rows whose file is
//! gone, extend rows from complete fragments found past their indexed end
//! and trim partial tails, index files the index does not know, delete
//! leftovers that hold nothing playable. Deletions a crash interrupted
//! (the `garbage` table) are finished first.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use kodama_media::fmp4::{self, SegmentScan};

use crate::db::{Db, DbError, FragmentRow, NewSegment};

use super::retention::collect_garbage;
use super::segment::{sync_dir, ticks_to_us};
use super::storage::LocalStorage;

/// Largest segment file reconciliation reads into memory. Segments are
/// minutes long; a file beyond this is not ours and is left alone.
const MAX_SCAN_BYTES: u64 = 4 << 30;

/// What reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Segment rows checked.
    pub rows_checked: u64,
    /// Rows dropped because their file was missing or empty.
    pub rows_dropped: u64,
    /// Rows extended or rebuilt from their file.
    pub rows_repaired: u64,
    /// Fragments added to the index from files.
    pub fragments_added: u64,
    /// Bytes of partial fragments cut from file tails.
    pub bytes_trimmed: u64,
    /// Unindexed files added to the index.
    pub files_indexed: u64,
    /// Files deleted: temporary leftovers and files with nothing playable.
    pub files_deleted: u64,
    /// Files retention had retired but not yet unlinked (a crash came
    /// between), now deleted.
    pub garbage_collected: u64,
}

/// Why reconciliation failed (per-file problems are logged, not fatal).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The index could not be read or updated.
    #[error("index: {0}")]
    Db(#[from] DbError),
    /// The recordings directory could not be listed.
    #[error("listing {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Fragment rows for the scanned fragments, starting at index `from`. Wall
/// times come from `prft`; a fragment without one follows its predecessor.
fn fragment_rows(
    scan: &SegmentScan,
    from: usize,
    mut prev_end_us: Option<i64>,
) -> Vec<FragmentRow> {
    let ts = u64::from(scan.init.timescale.max(1));
    let mut rows = Vec::new();
    for f in &scan.fragments[from..] {
        let duration_us = ticks_to_us(f.duration() * u64::from(fmp4::TIMESCALE) / ts);
        let Some(start_us) = f.header.wall_time_us.or(prev_end_us) else {
            continue;
        };
        rows.push(FragmentRow {
            seq: i64::from(f.header.sequence),
            start_us,
            duration_us,
            offset: f.offset as i64,
            len: f.len as i64,
            frames: f.header.samples.len() as i64,
        });
        prev_end_us = Some(start_us + duration_us);
    }
    rows
}

/// Reads and scans a file, cutting a partial tail. `Ok(None)`: not a
/// segment we can use.
fn scan_and_trim(
    path: &Path,
    report: &mut ReconcileReport,
) -> std::io::Result<Option<SegmentScan>> {
    let len = fs::metadata(path)?.len();
    if len > MAX_SCAN_BYTES {
        tracing::warn!(path = %path.display(), len, "segment file too large to scan; left alone");
        return Ok(None);
    }
    let buf = fs::read(path)?;
    let scan = match fmp4::scan_segment(&buf) {
        Ok(scan) => scan,
        Err(e) => {
            tracing::warn!(path = %path.display(), "not a readable segment: {e}");
            return Ok(None);
        }
    };
    if let Some(e) = &scan.stopped {
        tracing::warn!(path = %path.display(), at = scan.complete_len, "segment damaged after last complete fragment: {e}");
    }
    if scan.complete_len < len {
        let f = fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(scan.complete_len)?;
        f.sync_all()?;
        report.bytes_trimmed += len - scan.complete_len;
        tracing::info!(path = %path.display(), cut = len - scan.complete_len, "trimmed partial fragment");
    }
    Ok(Some(scan))
}

fn remove(path: &Path, report: &mut ReconcileReport) {
    match fs::remove_file(path) {
        Ok(()) => {
            report.files_deleted += 1;
            if let Some(dir) = path.parent() {
                let _ = sync_dir(dir);
            }
        }
        Err(e) => tracing::warn!(path = %path.display(), "cannot delete: {e}"),
    }
}

/// Lists `root/<camera>/<date>/<file>` (exactly three levels: bounded).
fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>, ReconcileError> {
    let list = |p: &Path| -> Result<Vec<PathBuf>, ReconcileError> {
        match fs::read_dir(p) {
            Ok(rd) => Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(ReconcileError::List {
                path: p.to_owned(),
                source,
            }),
        }
    };
    let mut out = Vec::new();
    for cam in list(root)? {
        if !cam.is_dir() {
            continue;
        }
        for day in list(&cam)? {
            if !day.is_dir() {
                continue;
            }
            for file in list(&day)? {
                if let Ok(rel) = file.strip_prefix(root) {
                    let rel = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push((rel, file));
                }
            }
        }
    }
    Ok(out)
}

/// Reconciles the index with the files under `root` (the recordings
/// directory). Run once at start, before recording.
pub fn reconcile(db: &mut Db, root: &Path) -> Result<ReconcileReport, ReconcileError> {
    // First, so a retired file is deleted rather than re-indexed below.
    let mut report = ReconcileReport {
        garbage_collected: collect_garbage(db, &LocalStorage, root)? as u64,
        ..ReconcileReport::default()
    };
    let mut known = HashSet::new();

    for row in db.all_segments()? {
        report.rows_checked += 1;
        known.insert(row.path.clone());
        let path = root.join(&row.path);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                db.delete_segment(row.id)?;
                report.rows_dropped += 1;
                tracing::info!(path = %row.path, "dropped index row of missing file");
                continue;
            }
            Err(e) => {
                tracing::warn!(path = %row.path, "cannot stat segment: {e}");
                continue;
            }
        };
        let unindexed_fragments = row.fragments == 0 && row.bytes > row.init_bytes;
        if len == row.bytes as u64 && !row.open && !unindexed_fragments {
            continue;
        }
        let scan = match scan_and_trim(&path, &mut report) {
            Ok(Some(scan)) => scan,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(path = %row.path, "cannot read segment: {e}");
                continue;
            }
        };
        if scan.fragments.is_empty() {
            remove(&path, &mut report);
            db.delete_segment(row.id)?;
            report.rows_dropped += 1;
            continue;
        }
        // Fragments past the indexed end are new; a file shorter than its
        // index, or rows without fragments, are rebuilt from scratch.
        let rebuild = scan.complete_len < row.bytes as u64 || unindexed_fragments;
        let from = if rebuild {
            db.reset_segment(row.id, scan.init.len as i64)?;
            0
        } else {
            scan.fragments
                .iter()
                .position(|f| f.offset >= row.bytes as u64)
                .unwrap_or(scan.fragments.len())
        };
        let prev_end = if from == 0 { None } else { Some(row.end_us) };
        let rows = fragment_rows(&scan, from, prev_end);
        if !rows.is_empty() || rebuild {
            report.rows_repaired += 1;
        }
        report.fragments_added += rows.len() as u64;
        db.add_fragments(row.id, &rows)?;
        db.close_segment(row.id)?;
    }

    for (rel, path) in list_files(root)? {
        if rel.ends_with(".tmp") {
            remove(&path, &mut report);
            continue;
        }
        if known.contains(&rel) || !rel.ends_with(".mp4") {
            continue;
        }
        let scan = match scan_and_trim(&path, &mut report) {
            Ok(Some(scan)) => scan,
            Ok(None) => {
                remove(&path, &mut report);
                continue;
            }
            Err(e) => {
                tracing::warn!(path = %rel, "cannot read unindexed file: {e}");
                continue;
            }
        };
        let rows = fragment_rows(&scan, 0, None);
        let Some(first) = rows.first() else {
            remove(&path, &mut report);
            continue;
        };
        let endpoint = rel.split('/').next().unwrap_or_default();
        let camera_id = db.ensure_camera(endpoint, first.start_us)?;
        let track = &scan.init.track;
        let id = db.insert_segment(&NewSegment {
            camera_id,
            path: &rel,
            start_us: first.start_us,
            init_bytes: scan.init.len as i64,
            codec: &track.codec_string(),
            width: i64::from(track.width),
            height: i64::from(track.height),
            open: false,
            backfill: false,
        })?;
        db.add_fragments(id, &rows)?;
        report.files_indexed += 1;
        report.fragments_added += rows.len() as u64;
        tracing::info!(path = %rel, fragments = rows.len(), "indexed unindexed segment file");
    }
    Ok(report)
}
