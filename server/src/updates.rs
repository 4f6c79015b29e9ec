//! Firmware updates the server delivers to its cameras (an admin's
//! `kodama-server camera update NAME BUNDLE`; docs/design/updates.md).
//!
//! Bundles are stored once under `<data>/updates/<blake3>.raucb`. Each camera
//! has at most one update job: its camera session offers the bundle on the
//! control stream whenever the camera is connected and has not got it yet,
//! streams it from the offset the camera reports (so a cut resumes), and
//! records every phase the camera reports — through the reboot, the health
//! gate, to the commit or the rollback. Each job is also written to the
//! server's SQLite index (`update_job`) on every phase change, so after a
//! server restart the job carries on: the camera's next connection is
//! offered the bundle again (it resumes from the bytes it holds) or reports
//! how the install ended.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kodama_net::EndpointId;
use kodama_proto::{UpdatePhase, MAX_BUNDLE_SIZE};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, UpdateJobRow};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// A bundle stored on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// `<data>/updates/<hash>.raucb`.
    pub path: PathBuf,
    /// BLAKE3 of the whole file.
    pub hash: [u8; 32],
    /// Its size.
    pub size: u64,
}

/// Why a bundle could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Larger than any camera accepts.
    #[error("the bundle is larger than {MAX_BUNDLE_SIZE} bytes")]
    TooLarge,
    /// Empty upload.
    #[error("the bundle is empty")]
    Empty,
    /// Disk trouble.
    #[error("storing the bundle in {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The upload broke off.
    #[error("the upload broke off: {0}")]
    Upload(String),
}

/// One entry of an update's history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Milliseconds since the update started.
    pub at_ms: u64,
    /// The phase the camera reported.
    pub phase: &'static str,
    /// What it said.
    pub detail: String,
}

/// What `camera status` and the API show of a camera's update.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpdateView {
    /// BLAKE3 of the bundle (hex), if an update was started.
    pub bundle: Option<String>,
    /// Bundle size in bytes.
    pub size: u64,
    /// `offered` until the camera first answers, then the camera's phase.
    pub phase: &'static str,
    /// Receiving: bytes the camera holds; installing: percent.
    pub progress: u64,
    /// Bytes the server has handed to QUIC (absolute offset).
    pub sent: u64,
    /// The camera's last word.
    pub detail: String,
    /// When the update started (Unix seconds).
    pub started_unix: u64,
    /// Seconds since it started.
    pub elapsed_s: f64,
    /// Every phase change.
    pub history: Vec<HistoryEntry>,
    /// What the camera runs, as it last said when nothing was pending.
    pub running: Option<String>,
}

#[derive(Debug)]
struct Job {
    bundle: StoredBundle,
    phase: Option<UpdatePhase>,
    progress: u64,
    detail: String,
    started: Instant,
    started_unix: u64,
    sent: Arc<AtomicU64>,
    history: Vec<HistoryEntry>,
}

#[derive(Debug, Default)]
struct Entry {
    job: Option<Job>,
    running: Option<String>,
}

/// What a camera session needs to send (part of) a bundle.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The bundle.
    pub bundle: StoredBundle,
    /// Where the camera's copy ends.
    pub from: u64,
    /// The server's send progress, for status.
    pub sent: Arc<AtomicU64>,
}

/// The server's update jobs.
#[derive(Debug)]
pub struct Updates {
    dir: PathBuf,
    entries: Mutex<HashMap<EndpointId, Entry>>,
    changed: watch::Sender<u64>,
    /// Where jobs are kept across restarts (`None`: memory only).
    db: Option<Mutex<Db>>,
}

/// A history entry as stored (JSON).
#[derive(Debug, Deserialize)]
struct StoredEntry {
    at_ms: u64,
    phase: String,
    detail: String,
}

/// `'static` names for stored phases (`interrupted` is the server's own).
fn phase_name(name: &str) -> &'static str {
    (0..=9)
        .filter_map(UpdatePhase::from_u8)
        .map(UpdatePhase::name)
        .find(|n| *n == name)
        .unwrap_or(INTERRUPTED)
}

/// The history entry the server adds when a camera lost power mid-install.
const INTERRUPTED: &str = "interrupted";

impl Updates {
    /// Jobs whose bundles are kept in `dir`, in memory only (relay mode,
    /// tests).
    pub fn new(dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            dir,
            entries: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            db: None,
        })
    }

    /// Jobs whose bundles are kept in `dir`, recorded in the index `db`;
    /// loads the jobs a previous run left (those whose bundle file is gone
    /// are dropped, with a warning).
    pub fn open(dir: PathBuf, db: Db) -> Result<Arc<Self>, DbError> {
        let now_unix = unix_now();
        let mut entries = HashMap::new();
        for row in db.update_jobs()? {
            let Ok(camera) = EndpointId::from_bytes(&row.camera) else {
                continue;
            };
            let path = dir.join(format!("{}.raucb", hex::encode(row.bundle)));
            if !path.is_file() {
                tracing::warn!(%camera, path = %path.display(), "update job dropped: its bundle is gone");
                continue;
            }
            let history = serde_json::from_str::<Vec<StoredEntry>>(&row.history)
                .unwrap_or_default()
                .into_iter()
                .map(|e| HistoryEntry {
                    at_ms: e.at_ms,
                    phase: phase_name(&e.phase),
                    detail: e.detail,
                })
                .collect();
            let age = std::time::Duration::from_secs(now_unix.saturating_sub(row.started_unix));
            let job = Job {
                bundle: StoredBundle {
                    path,
                    hash: row.bundle,
                    size: row.size,
                },
                phase: row.phase.and_then(UpdatePhase::from_u8),
                progress: 0,
                detail: row.detail,
                started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                started_unix: row.started_unix,
                sent: Arc::new(AtomicU64::new(0)),
                history,
            };
            tracing::info!(%camera, phase = job.phase.map_or("offered", UpdatePhase::name), "update job restored");
            entries.insert(
                camera,
                Entry {
                    job: Some(job),
                    running: None,
                },
            );
        }
        Ok(Arc::new(Self {
            dir,
            entries: Mutex::new(entries),
            changed: watch::channel(0).0,
            db: Some(Mutex::new(db)),
        }))
    }

    /// Writes `camera`'s job to the index (logged, not fatal: the job goes
    /// on in memory).
    fn persist(&self, camera: &EndpointId, job: &Job) {
        let Some(db) = &self.db else {
            return;
        };
        let row = UpdateJobRow {
            camera: *camera.as_bytes(),
            bundle: job.bundle.hash,
            size: job.bundle.size,
            phase: job.phase.map(|p| p as u8),
            detail: job.detail.clone(),
            started_unix: job.started_unix,
            history: serde_json::to_string(&job.history).unwrap_or_else(|_| "[]".into()),
        };
        let db = db.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = db.save_update_job(&row) {
            tracing::warn!(%camera, "cannot record the update job: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumped whenever a job starts: sessions check for offers to make.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stores an uploaded bundle, hashing it on the way.
    pub async fn store<S, E>(&self, mut body: S) -> Result<StoredBundle, StoreError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io(&self.dir))?;
        let tmp = self
            .dir
            .join(format!("upload-{}.part", rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::Upload(e.to_string()))?;
                size += chunk.len() as u64;
                if size > MAX_BUNDLE_SIZE {
                    return Err(StoreError::TooLarge);
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io(&tmp))?;
            }
            if size == 0 {
                return Err(StoreError::Empty);
            }
            file.sync_all().await.map_err(io(&tmp))?;
            let hash = *hasher.finalize().as_bytes();
            let path = self.dir.join(format!("{}.raucb", hex::encode(hash)));
            tokio::fs::rename(&tmp, &path).await.map_err(io(&path))?;
            Ok(StoredBundle { path, hash, size })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Starts (or restarts) delivering `bundle` to `camera`.
    pub fn start(&self, camera: EndpointId, bundle: StoredBundle) {
        tracing::info!(%camera, size = bundle.size, bundle = %hex::encode(bundle.hash), "update started");
        let mut entries = self.lock();
        let entry = entries.entry(camera).or_default();
        let job = entry.job.insert(Job {
            bundle,
            phase: None,
            progress: 0,
            detail: "waiting for the camera".into(),
            started: Instant::now(),
            started_unix: unix_now(),
            sent: Arc::new(AtomicU64::new(0)),
            history: Vec::new(),
        });
        self.persist(&camera, job);
        drop(entries);
        self.changed.send_modify(|g| *g += 1);
    }

    /// The offer to make to `camera` now, if it still needs its bundle.
    pub fn offer_for(&self, camera: &EndpointId) -> Option<StoredBundle> {
        let entries = self.lock();
        let job = entries.get(camera)?.job.as_ref()?;
        matches!(job.phase, None | Some(UpdatePhase::Receiving)).then(|| job.bundle.clone())
    }

    /// Records what `camera` reported; returns what to send when it is
    /// receiving this job's bundle.
    pub fn report(
        &self,
        camera: &EndpointId,
        hash: [u8; 32],
        phase: UpdatePhase,
        progress: u64,
        detail: &str,
    ) -> Option<Delivery> {
        let mut entries = self.lock();
        let entry = entries.entry(*camera).or_default();
        if phase == UpdatePhase::Idle {
            entry.running = Some(detail.to_owned());
            // Idle after the bundle was verified but before it was installed:
            // the camera restarted mid-install (a power cut). The old slot is
            // still the one it boots, so the bundle goes out again.
            let interrupted = entry.job.as_mut().filter(|j| {
                matches!(
                    j.phase,
                    Some(UpdatePhase::Verified | UpdatePhase::Installing)
                )
            });
            if let Some(job) = interrupted {
                tracing::info!(%camera, "update interrupted before the install finished; offering again");
                job.history.push(HistoryEntry {
                    at_ms: job.started.elapsed().as_millis() as u64,
                    phase: INTERRUPTED,
                    detail: format!(
                        "the camera restarted during the install; {detail}; offering again"
                    ),
                });
                job.phase = None;
                job.detail = "interrupted during the install; offering again".into();
                self.persist(camera, job);
                drop(entries);
                self.changed.send_modify(|g| *g += 1);
                return None;
            }
        }
        let job = entry.job.as_mut().filter(|j| j.bundle.hash == hash)?;
        let changed = job.phase != Some(phase);
        if changed {
            tracing::info!(%camera, phase = phase.name(), %detail, "camera update");
            job.history.push(HistoryEntry {
                at_ms: job.started.elapsed().as_millis() as u64,
                phase: phase.name(),
                detail: detail.to_owned(),
            });
        }
        job.phase = Some(phase);
        job.progress = progress;
        job.detail = detail.to_owned();
        if changed {
            self.persist(camera, job);
        }
        if matches!(phase, UpdatePhase::Committed | UpdatePhase::RolledBack) {
            entry.running = Some(detail.to_owned());
        }
        (phase == UpdatePhase::Receiving && progress < job.bundle.size).then(|| Delivery {
            bundle: job.bundle.clone(),
            from: progress,
            sent: job.sent.clone(),
        })
    }

    /// Makes every session offer its camera's pending bundle again (a
    /// delivery stopped short; the camera's answer says where to resume).
    pub fn reoffer(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// `camera`'s update, for people.
    pub fn view(&self, camera: &EndpointId) -> Option<UpdateView> {
        let entries = self.lock();
        let entry = entries.get(camera)?;
        let running = entry.running.clone();
        Some(match &entry.job {
            Some(job) => UpdateView {
                bundle: Some(hex::encode(job.bundle.hash)),
                size: job.bundle.size,
                phase: job.phase.map_or("offered", UpdatePhase::name),
                progress: job.progress,
                sent: job.sent.load(Ordering::Relaxed),
                detail: job.detail.clone(),
                started_unix: job.started_unix,
                elapsed_s: job.started.elapsed().as_secs_f64(),
                history: job.history.clone(),
                running,
            },
            None => UpdateView {
                bundle: None,
                size: 0,
                phase: UpdatePhase::Idle.name(),
                progress: 0,
                sent: 0,
                detail: String::new(),
                started_unix: 0,
                elapsed_s: 0.0,
                history: Vec::new(),
                running,
            },
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera() -> EndpointId {
        kodama_net::SecretKey::generate().public()
    }

    #[tokio::test]
    async fn a_stored_bundle_is_named_by_its_blake3_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let updates = Updates::new(dir.path().join("updates"));
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(bytes::Bytes::from_static(b"hello ")),
            Ok(bytes::Bytes::from_static(b"bundle")),
        ];
        let stored = updates
            .store(futures::stream::iter(chunks))
            .await
            .expect("stored");
        assert_eq!(stored.hash, *blake3::hash(b"hello bundle").as_bytes());
        assert_eq!(stored.size, 12);
        assert_eq!(std::fs::read(&stored.path).expect("file"), b"hello bundle");
        let empty: Vec<Result<bytes::Bytes, std::io::Error>> = Vec::new();
        assert!(matches!(
            updates.store(futures::stream::iter(empty)).await,
            Err(StoreError::Empty)
        ));
    }

    #[test]
    fn a_job_is_offered_until_the_camera_has_the_bundle_and_keeps_its_history() {
        let updates = Updates::new(PathBuf::from("/nonexistent"));
        let cam = camera();
        let bundle = StoredBundle {
            path: PathBuf::from("/b.raucb"),
            hash: [1; 32],
            size: 100,
        };
        assert!(updates.offer_for(&cam).is_none());
        updates.start(cam, bundle.clone());
        assert_eq!(updates.offer_for(&cam), Some(bundle.clone()));
        let d = updates
            .report(&cam, [1; 32], UpdatePhase::Receiving, 40, "40 of 100")
            .expect("deliver the rest");
        assert_eq!(d.from, 40);
        // Another bundle's report changes nothing.
        assert!(updates
            .report(&cam, [2; 32], UpdatePhase::Receiving, 0, "")
            .is_none());
        assert!(updates
            .report(&cam, [1; 32], UpdatePhase::Installing, 50, "rauc")
            .is_none());
        assert!(updates.offer_for(&cam).is_none());
        updates.report(
            &cam,
            [1; 32],
            UpdatePhase::Committed,
            0,
            "version 2 on slot B",
        );
        let v = updates.view(&cam).expect("view");
        assert_eq!(v.phase, "committed");
        assert_eq!(v.running.as_deref(), Some("version 2 on slot B"));
        let phases: Vec<_> = v.history.iter().map(|h| h.phase).collect();
        assert_eq!(phases, ["receiving", "installing", "committed"]);
    }

    #[test]
    fn a_camera_idle_after_a_cut_mid_install_is_offered_the_bundle_again() {
        let updates = Updates::new(PathBuf::from("/nonexistent"));
        let cam = camera();
        let bundle = StoredBundle {
            path: PathBuf::from("/b.raucb"),
            hash: [1; 32],
            size: 100,
        };
        updates.start(cam, bundle.clone());
        updates.report(&cam, [1; 32], UpdatePhase::Installing, 30, "rauc");
        assert!(updates.offer_for(&cam).is_none());
        // Power cut: the camera comes back on its old slot with nothing pending.
        updates.report(&cam, [0; 32], UpdatePhase::Idle, 0, "version 1 on slot A");
        assert_eq!(updates.offer_for(&cam), Some(bundle));
        let v = updates.view(&cam).expect("view");
        assert_eq!(v.phase, "offered");
        assert_eq!(v.history.last().map(|h| h.phase), Some("interrupted"));
        // Idle after the reboot into the new slot is not an interruption.
        updates.report(&cam, [1; 32], UpdatePhase::Installed, 0, "");
        updates.report(&cam, [0; 32], UpdatePhase::Idle, 0, "version 1 on slot A");
        assert!(updates.offer_for(&cam).is_none());
    }
}
