//! A full disk: the recorder's data directory is far smaller than what the
//! camera sends. The recorder deletes oldest recordings and keeps recording,
//! never panics, keeps draining its feed (so the hub never waits on it and
//! live viewers are unaffected), and the API keeps answering.
//!
//! Twice: on a real 4 MiB tmpfs (needs root to mount; CI runs as root, and
//! under `CI=true` failing to mount fails the test), and through the
//! recorder's `Storage` trait with a 4 MiB budget and one failing
//! `fdatasync` (no privilege needed, runs everywhere).

mod recording_support;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kodama_server::api::{self, ApiConfig, ApiState, CameraStatus};
use kodama_server::feed;
use kodama_server::recorder::{
    LocalStorage, Recorder, RecorderConfig, RecorderStats, SimulatedClock, Storage, StorageFile,
};
use recording_support::*;
use tokio_util::sync::CancellationToken;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_keeps_recording_and_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (run as root)"
        );
        eprintln!(
            "SKIPPED full_disk_keeps_recording_and_serving: cannot mount a tmpfs (needs root); \
             full_disk_through_storage covers the same paths"
        );
        return;
    }
    let _mount = Mount(dir.path().to_owned());
    scenario(dir.path(), Arc::new(LocalStorage), 20).await;
}

/// The same scenario through a [`Storage`] that refuses writes beyond a
/// byte budget (like a full file system) and fails one `fdatasync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_through_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = BudgetStorage(Arc::new(Budget {
        budget: 4 << 20,
        fail_sync_number: 7,
        state: Mutex::default(),
    }));
    let stats = scenario(dir.path(), Arc::new(storage.clone()), 30).await;

    assert_eq!(
        storage.0.state.lock().expect("lock").syncs_failed,
        1,
        "the injected sync failure happened"
    );
    // The GOPs waiting for the failed sync were dropped, not indexed.
    assert!(stats.fragments_dropped.load(Ordering::Relaxed) > 0);
    assert!(stats.index_commits.load(Ordering::Relaxed) > 0);
}

#[derive(Debug, Default)]
struct BudgetState {
    /// Bytes per file, by file number (a file keeps it across renames).
    sizes: HashMap<u64, u64>,
    names: HashMap<PathBuf, u64>,
    next_file: u64,
    syncs: u64,
    syncs_failed: u64,
}

/// The local file system with a byte budget over the files it wrote.
#[derive(Debug, Clone)]
struct BudgetStorage(Arc<Budget>);

#[derive(Debug)]
struct Budget {
    budget: u64,
    /// Which `sync_data` call (1-based) fails with EIO.
    fail_sync_number: u64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetFile {
    inner: Box<dyn StorageFile>,
    number: u64,
    owner: Arc<Budget>,
}

impl BudgetFile {
    fn resize(&self, len: u64, growing_only: bool) -> io::Result<()> {
        let mut st = self.owner.state.lock().expect("lock");
        let cur = st.sizes.get(&self.number).copied().unwrap_or(0);
        if growing_only && len <= cur {
            return Ok(());
        }
        let total: u64 = st.sizes.values().sum();
        if len > cur && total - cur + len > self.owner.budget {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "budget exhausted",
            ));
        }
        st.sizes.insert(self.number, len);
        Ok(())
    }
}

impl StorageFile for BudgetFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.resize(offset + buf.len() as u64, true)?;
        self.inner.write_all_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        {
            let mut st = self.owner.state.lock().expect("lock");
            st.syncs += 1;
            if st.syncs == self.owner.fail_sync_number {
                st.syncs_failed += 1;
                return Err(io::Error::other("injected fdatasync failure"));
            }
        }
        self.inner.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.resize(len, false)?;
        self.inner.set_len(len)
    }
}

impl Storage for BudgetStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        LocalStorage.create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let inner = LocalStorage.create(path)?;
        let mut st = self.0.state.lock().expect("lock");
        st.next_file += 1;
        let number = st.next_file;
        if let Some(old) = st.names.insert(path.to_owned(), number) {
            st.sizes.remove(&old);
        }
        st.sizes.insert(number, 0);
        Ok(Box::new(BudgetFile {
            inner,
            number,
            owner: self.0.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        LocalStorage.rename(from, to)?;
        let mut st = self.0.state.lock().expect("lock");
        if let Some(n) = st.names.remove(from) {
            if let Some(old) = st.names.insert(to.to_owned(), n) {
                st.sizes.remove(&old);
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        LocalStorage.remove_file(path)?;
        let mut st = self.0.state.lock().expect("lock");
        if let Some(n) = st.names.remove(path) {
            st.sizes.remove(&n);
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        LocalStorage.remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        LocalStorage.sync_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        LocalStorage.exists(path)
    }
}

/// Records 900 one-second GOPs into `dir` through `storage`, checks the
/// API answers and recording continued after the disk filled.
async fn scenario(dir: &Path, storage: Arc<dyn Storage>, max_dropped: u64) -> Arc<RecorderStats> {
    let clock = Arc::new(SimulatedClock::new(1_750_000_000_000_000));
    let cfg = RecorderConfig {
        data_dir: dir.to_owned(),
        ..RecorderConfig::default()
    };
    let rec = Recorder::open_with_storage(cfg, clock.clone(), storage).expect("open");
    let stats = rec.stats();
    let api_state = ApiState::open(
        dir,
        &ApiConfig::default(),
        Arc::new(Vec::<CameraStatus>::new),
        rec.status(),
    )
    .expect("api state");
    let token = std::fs::read_to_string(dir.join("api-token")).expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let api_task = tokio::spawn(api::serve_on(listener, api_state, cancel.clone()));
    let (tx, rx) = feed::channel("recorder", 64);
    let rec_task = tokio::spawn(rec.run(rx, cancel.clone()));

    let gops = tokio::task::spawn_blocking(|| encode(320, 240, 10, 10, 10))
        .await
        .expect("encode");
    let cam = camera_id(9);
    tx.offer(online(cam, "full", &gops, 320, 240, 10));
    let mut capture = 0u64;
    let mut written_at_first_full = None;
    // 900 one-second GOPs: many times what 8 MiB holds.
    for id in 1..=900u64 {
        let g = &gops[id as usize % gops.len()];
        clock.advance(Duration::from_secs(1));
        tx.offer(group(cam, id, g, capture, 10));
        capture += 1_000_000;
        // A real camera sends one GOP a second: let the recorder take each
        // before the simulated clock moves on, so arrival times stay real.
        while tx.tx.capacity() < 64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if written_at_first_full.is_none() && stats.disk_full.load(Ordering::Relaxed) > 0 {
            written_at_first_full = Some(stats.fragments_written.load(Ordering::Relaxed));
        }
    }
    while tx.tx.capacity() < 64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The API answers on the full disk.
    // (health needs no token; a wrong one is ignored there.)
    let health = api::client::get(addr, "", "/api/v1/health")
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let cams = api::client::get(addr, token.trim(), "/api/v1/cameras")
        .await
        .expect("cameras");
    assert_eq!(cams.status(), 200);
    cancel.cancel();
    rec_task.await.expect("recorder ended cleanly");
    api_task.await.expect("api task").expect("api ok");

    let full = stats.disk_full.load(Ordering::Relaxed);
    let written = stats.fragments_written.load(Ordering::Relaxed);
    let deleted = stats.segments_deleted.load(Ordering::Relaxed);
    println!(
        "disk full {full} times, {written} fragments written, {} dropped, {} segments opened, {deleted} deleted",
        stats.fragments_dropped.load(Ordering::Relaxed),
        stats.segments_opened.load(Ordering::Relaxed)
    );
    assert!(
        full > 0,
        "the disk never filled: test is not testing anything"
    );
    assert!(deleted > 0, "retention freed nothing");
    let first = written_at_first_full.expect("disk filled during the run");
    assert!(
        written > first + 100,
        "recording did not continue after the disk filled ({first} → {written})"
    );
    assert!(
        stats.fragments_dropped.load(Ordering::Relaxed) < max_dropped,
        "most GOPs must still be recorded"
    );
    assert_eq!(
        tx.stats.groups_dropped.load(Ordering::Relaxed),
        0,
        "the recorder kept draining its feed"
    );
    assert_consistent(dir);
    stats
}
