//! Retention: delete whole closed segments, oldest first, until the age,
//! total-size and per-camera limits hold (and, on a full disk, until enough
//! space is freed).
//!
//! Incremental: the recorder keeps the indexed bytes per camera in memory
//! ([`Usage`]), so a pass that finds every limit met reads one page of the
//! oldest segments and stops; a pass that deletes reads only as many pages
//! as it deletes from.
//!
//! Deletion follows the "Delete" order of docs/design/recording.md: the rows
//! are deleted and the paths recorded in `garbage` in one transaction, then
//! the files are unlinked and the garbage rows forgotten. A crash in between
//! leaves garbage rows, which [`collect_garbage`] finishes at the next start.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::db::{Db, DbError, SegmentRow};

use super::storage::Storage;

/// Segments read per query.
const PAGE: i64 = 64;

/// The limits a pass enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Segments that ended before this (µs since epoch) are deleted.
    pub older_than_us: i64,
    /// Total bytes across cameras.
    pub max_total_bytes: u64,
    /// Bytes per camera, if limited.
    pub max_camera_bytes: Option<u64>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: u64,
    /// Bytes those segments held.
    pub bytes_freed: u64,
    /// Telemetry and event rows deleted by age.
    pub aux_rows_deleted: u64,
    /// Segment rows read to decide.
    pub rows_read: u64,
}

/// Bytes on disk per camera row id, kept by the recorder as it writes and
/// deletes (read from the index once at start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    per_camera: HashMap<i64, u64>,
    total: u64,
}

impl Usage {
    /// The totals of the index.
    pub fn load(db: &Db) -> Result<Usage, DbError> {
        let mut usage = Usage::default();
        for (camera, bytes) in db.bytes_per_camera()? {
            usage.add(camera, bytes.max(0) as u64);
        }
        Ok(usage)
    }

    /// Bytes written for a camera.
    pub fn add(&mut self, camera: i64, bytes: u64) {
        *self.per_camera.entry(camera).or_default() += bytes;
        self.total += bytes;
    }

    /// Bytes deleted for a camera.
    pub fn remove(&mut self, camera: i64, bytes: u64) {
        let c = self.per_camera.entry(camera).or_default();
        let bytes = bytes.min(*c);
        *c -= bytes;
        self.total = self.total.saturating_sub(bytes);
    }

    /// All cameras' bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// One camera's bytes.
    pub fn camera(&self, camera: i64) -> u64 {
        self.per_camera.get(&camera).copied().unwrap_or(0)
    }
}

/// Runs one pass. `need_free` asks for at least that many bytes to be freed
/// regardless of limits (a full disk); `protected` segment ids (the ones being
/// written) are never deleted, nor are rows still marked open.
pub fn enforce(
    db: &mut Db,
    storage: &dyn Storage,
    root: &Path,
    limits: &Limits,
    need_free: u64,
    protected: &HashSet<i64>,
    usage: &mut Usage,
) -> Result<RetentionReport, DbError> {
    let mut report = RetentionReport::default();
    let over_camera = |usage: &Usage, camera: i64| {
        limits
            .max_camera_bytes
            .is_some_and(|m| usage.camera(camera) > m)
    };
    let mut after = None;
    'pages: loop {
        let page = db.oldest_segments(after, PAGE)?;
        report.rows_read += page.len() as u64;
        let Some(last) = page.last() else {
            break;
        };
        after = Some((last.start_us, last.id));
        let mut victims: Vec<&SegmentRow> = Vec::new();
        for s in &page {
            let any_camera_over = limits.max_camera_bytes.is_some()
                && usage.per_camera.keys().any(|&c| over_camera(usage, c));
            let over_total = usage.total() > limits.max_total_bytes;
            let need_space = report.bytes_freed < need_free;
            // Segments come oldest first: once one starts after the age
            // limit, none later is too old.
            if s.start_us >= limits.older_than_us && !over_total && !need_space && !any_camera_over
            {
                delete(db, storage, root, &victims, usage, &mut report)?;
                break 'pages;
            }
            if protected.contains(&s.id) || s.open {
                continue;
            }
            let too_old = s.end_us < limits.older_than_us;
            if !(too_old || over_total || need_space || over_camera(usage, s.camera_id)) {
                continue;
            }
            let bytes = s.bytes.max(0) as u64;
            usage.remove(s.camera_id, bytes);
            report.bytes_freed += bytes;
            tracing::debug!(path = %s.path, bytes, too_old, over_total, need_space, "retention deletes segment");
            victims.push(s);
        }
        delete(db, storage, root, &victims, usage, &mut report)?;
        if page.len() < PAGE as usize {
            break;
        }
    }
    report.aux_rows_deleted = db.delete_aux_before(limits.older_than_us)? as u64;
    Ok(report)
}

/// Deletes segments in the crash-safe order (rows and garbage, unlink,
/// forget garbage). On a database too full to record the garbage rows, the
/// files are unlinked first (freeing the space) and the rows deleted after:
/// a crash in between leaves rows for missing files, which reconciliation
/// drops.
fn delete(
    db: &mut Db,
    storage: &dyn Storage,
    root: &Path,
    victims: &[&SegmentRow],
    usage: &mut Usage,
    report: &mut RetentionReport,
) -> Result<(), DbError> {
    if victims.is_empty() {
        return Ok(());
    }
    let rows: Vec<(i64, &str)> = victims.iter().map(|s| (s.id, s.path.as_str())).collect();
    match db.retire_segments(&rows) {
        Ok(()) => {
            let paths: Vec<String> = victims.iter().map(|s| s.path.clone()).collect();
            let gone = unlink_all(storage, root, &paths);
            db.forget_garbage(&gone)?;
        }
        Err(e) if e.is_disk_full() => {
            tracing::warn!("index full; deleting recordings before their rows");
            let paths: Vec<String> = victims.iter().map(|s| s.path.clone()).collect();
            unlink_all(storage, root, &paths);
            for s in victims {
                db.delete_segment(s.id)?;
            }
        }
        Err(e) => {
            // Nothing was deleted: give the bytes back to the totals.
            for s in victims {
                usage.add(s.camera_id, s.bytes.max(0) as u64);
                report.bytes_freed = report.bytes_freed.saturating_sub(s.bytes.max(0) as u64);
            }
            return Err(e);
        }
    }
    report.segments_deleted += victims.len() as u64;
    Ok(())
}

/// Unlinks files (paths relative to `root`), syncs their directories and
/// removes directories left empty; returns the paths that are gone.
fn unlink_all(storage: &dyn Storage, root: &Path, paths: &[String]) -> Vec<String> {
    let mut gone = Vec::with_capacity(paths.len());
    let mut dirs = Vec::new();
    for rel in paths {
        let path = root.join(rel);
        match storage.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot delete segment (retried at next start): {e}");
                continue;
            }
        }
        gone.push(rel.clone());
        if let Some(dir) = path.parent() {
            if !dirs.iter().any(|d: &std::path::PathBuf| d == dir) {
                dirs.push(dir.to_owned());
            }
        }
    }
    for dir in dirs {
        if let Err(e) = storage.sync_dir(&dir) {
            tracing::warn!(dir = %dir.display(), "syncing directory after delete: {e}");
        }
        // Remove the date directory once empty; failure means not empty.
        let _ = storage.remove_dir(&dir);
    }
    gone
}

/// Finishes deletions a crash interrupted: unlinks every file listed in
/// `garbage` and forgets it. Run at start, before unindexed files are
/// looked for (they would otherwise be re-indexed).
pub fn collect_garbage(db: &mut Db, storage: &dyn Storage, root: &Path) -> Result<usize, DbError> {
    let paths = db.garbage()?;
    if paths.is_empty() {
        return Ok(0);
    }
    let gone = unlink_all(storage, root, &paths);
    db.forget_garbage(&gone)?;
    tracing::info!(
        files = gone.len(),
        "finished deletions interrupted by a crash"
    );
    Ok(gone.len())
}
