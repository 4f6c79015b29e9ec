//! Retention: delete whole closed segments, oldest first, until the age,
//! total-size and per-camera limits hold (and, on a full disk, until enough
//! space is freed). Files are unlinked before their rows are deleted
//! (invariant 4 of docs/design/recording.md).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::db::{Db, DbError};

use super::segment::sync_dir;

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
}

/// Runs one pass. `need_free` asks for at least that many bytes to be freed
/// regardless of limits (a full disk); `protected` segment ids (the ones being
/// written) are never deleted.
pub fn enforce(
    db: &mut Db,
    root: &Path,
    limits: &Limits,
    need_free: u64,
    protected: &HashSet<i64>,
) -> Result<RetentionReport, DbError> {
    let segments = db.all_segments()?;
    let mut total: u64 = segments.iter().map(|s| s.bytes.max(0) as u64).sum();
    let mut per_camera: HashMap<i64, u64> = HashMap::new();
    for s in &segments {
        *per_camera.entry(s.camera_id).or_default() += s.bytes.max(0) as u64;
    }
    let mut report = RetentionReport::default();
    // `all_segments` is ordered oldest first.
    for s in &segments {
        if protected.contains(&s.id) || s.open {
            continue;
        }
        let bytes = s.bytes.max(0) as u64;
        let cam = per_camera.get(&s.camera_id).copied().unwrap_or(0);
        let too_old = s.end_us < limits.older_than_us;
        let over_total = total > limits.max_total_bytes;
        let over_camera = limits.max_camera_bytes.is_some_and(|m| cam > m);
        let need_space = report.bytes_freed < need_free;
        if !(too_old || over_total || over_camera || need_space) {
            continue;
        }
        let path = root.join(&s.path);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), "retention cannot delete segment: {e}");
                continue;
            }
        }
        if let Some(dir) = path.parent() {
            if let Err(e) = sync_dir(dir) {
                tracing::warn!(dir = %dir.display(), "syncing directory after delete: {e}");
            }
            // Remove the date directory once empty; failure means not empty.
            let _ = std::fs::remove_dir(dir);
        }
        db.delete_segment(s.id)?;
        total -= bytes;
        if let Some(c) = per_camera.get_mut(&s.camera_id) {
            *c -= bytes;
        }
        report.segments_deleted += 1;
        report.bytes_freed += bytes;
        tracing::debug!(path = %s.path, bytes, too_old, over_total, over_camera, need_space, "retention deleted segment");
    }
    report.aux_rows_deleted = db.delete_aux_before(limits.older_than_us)? as u64;
    Ok(report)
}
