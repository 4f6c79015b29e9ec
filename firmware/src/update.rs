//! Signed A/B firmware updates on the camera (docs/design/updates.md).
//!
//! The [`Updater`] task is the only owner of the update directory on the
//! data partition and of RAUC. It
//! * receives the bundle the server offers, in order, appending to
//!   `bundle.part` (a cut connection loses nothing: the next offer resumes
//!   from the file's length, `bundle.meta` remembers which bundle it is);
//! * checks the BLAKE3 hash of the whole file against the offer before
//!   anything else reads it, then runs `rauc install` (which checks the
//!   owner's signature before writing the other slot);
//! * records `pending.json` (which slot and version it came from) and reboots;
//! * after the reboot, on the new slot, waits until the camera has streamed
//!   to its server for `commit_after_s` and only then runs `rauc status
//!   mark-good` (**the health gate**); a slot that does not get there within
//!   `trial_timeout_s` reboots, so U-Boot's boot counter runs down and falls
//!   back to the old slot by itself; the old slot then reports the rollback.
//!
//! Every phase goes to the server ([`Message::UpdateReport`] on the control
//! stream, re-sent after each connect) and into the event channel, so
//! telemetry keeps the history.
//!
//! [`Message::UpdateReport`]: kodama_proto::Message::UpdateReport

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kodama_net::update::BundleStream;
use kodama_proto::{Channel, UpdatePhase, MAX_BUNDLE_SIZE};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::uplink::{AuxMessage, LinkState};

/// `[update]` in kodama.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// RAUC's command (program and leading arguments); `install` and
    /// `status mark-good` are appended. Empty: this camera cannot update.
    pub rauc_command: Vec<String>,
    /// Where bundles are received (default: `update/` beside the key, on
    /// the data partition).
    pub dir: Option<PathBuf>,
    /// Seconds a newly booted slot must stream to the server before it is
    /// marked good.
    pub commit_after_s: f64,
    /// Seconds a newly booted slot gets to become healthy; after that the
    /// camera reboots so the boot counter can fall back to the old slot.
    pub trial_timeout_s: f64,
    /// The kernel command line, where the boot loader names the slot
    /// (`rauc.slot=A`).
    pub cmdline: PathBuf,
    /// The image's version (one line), written when the image is built.
    pub version_file: PathBuf,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            rauc_command: vec!["rauc".into()],
            dir: None,
            commit_after_s: 60.0,
            trial_timeout_s: 600.0,
            cmdline: PathBuf::from("/proc/cmdline"),
            version_file: PathBuf::from("/etc/kodama-version"),
        }
    }
}

/// Where an update stands, as the server is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateStatus {
    /// BLAKE3 of the bundle (zero when idle).
    pub hash: [u8; 32],
    /// The phase.
    pub phase: UpdatePhase,
    /// Receiving: bytes held; installing: percent.
    pub progress: u64,
    /// What happened, for people.
    pub detail: String,
}

/// What the uplink hands the updater.
#[derive(Debug)]
enum Input {
    Offer { hash: [u8; 32], size: u64 },
    Stream(kodama_net::update::BundleRecvStream),
}

/// The handle the uplink uses.
#[derive(Debug, Clone)]
pub struct Updater {
    tx: mpsc::Sender<Input>,
    status: watch::Receiver<UpdateStatus>,
    booted: Booted,
}

impl Updater {
    /// The server offers a bundle. False if the updater is gone or busy.
    pub fn offer(&self, hash: [u8; 32], size: u64) -> bool {
        self.tx.try_send(Input::Offer { hash, size }).is_ok()
    }

    /// The server opened a bundle stream.
    pub fn stream(&self, recv: kodama_net::update::BundleRecvStream) -> bool {
        self.tx.try_send(Input::Stream(recv)).is_ok()
    }

    /// The running image's version, and its slot if it has one.
    pub fn version(&self) -> String {
        self.booted.describe()
    }

    /// The current status; changes on every phase and progress step.
    pub fn status(&self) -> watch::Receiver<UpdateStatus> {
        self.status.clone()
    }
}

/// Inputs the updater watches besides the uplink's.
#[derive(Debug)]
pub struct UpdaterIo {
    /// The uplink's state (the health gate: streaming for `commit_after_s`).
    pub link: watch::Receiver<LinkState>,
    /// Events for telemetry (phase changes).
    pub events: Option<mpsc::Sender<AuxMessage>>,
    /// How to reboot (`system.reboot_command`).
    pub reboot_command: Vec<String>,
}

/// Why the updater cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The update directory cannot be made.
    #[error("update directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Recorded before the reboot into a new slot; read after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Pending {
    hash: String,
    from_slot: Option<String>,
    from_version: String,
}

/// Starts the updater task.
pub fn spawn(
    cfg: UpdateConfig,
    dir: PathBuf,
    io: UpdaterIo,
    cancel: CancellationToken,
) -> Result<(Updater, tokio::task::JoinHandle<()>), UpdateError> {
    std::fs::create_dir_all(&dir).map_err(|source| UpdateError::Dir {
        path: dir.clone(),
        source,
    })?;
    let booted = Booted::read(&cfg);
    let (status_tx, status) = watch::channel(UpdateStatus {
        hash: [0; 32],
        phase: UpdatePhase::Idle,
        progress: 0,
        detail: booted.describe(),
    });
    let (tx, rx) = mpsc::channel(4);
    let task = Task {
        cfg,
        files: Files::new(dir),
        booted: booted.clone(),
        io,
        status: status_tx,
        receiving: None,
        trial_started: None,
    };
    let handle = tokio::spawn(task.run(rx, cancel));
    Ok((Updater { tx, status, booted }, handle))
}

/// Which slot and version this boot runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Booted {
    slot: Option<String>,
    version: String,
}

impl Booted {
    fn read(cfg: &UpdateConfig) -> Self {
        let slot = std::fs::read_to_string(&cfg.cmdline).ok().and_then(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix("rauc.slot=").map(str::to_owned))
        });
        let version = std::fs::read_to_string(&cfg.version_file)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        Self { slot, version }
    }

    fn describe(&self) -> String {
        match &self.slot {
            Some(s) => format!("version {} on slot {s}", self.version),
            None => format!("version {} (no A/B slot)", self.version),
        }
    }
}

/// The update directory's files.
#[derive(Debug)]
struct Files {
    part: PathBuf,
    meta: PathBuf,
    pending: PathBuf,
}

impl Files {
    fn new(dir: PathBuf) -> Self {
        Self {
            part: dir.join("bundle.part"),
            meta: dir.join("bundle.meta"),
            pending: dir.join("pending.json"),
        }
    }

    /// The name the complete bundle has while RAUC installs it.
    fn installing(&self) -> PathBuf {
        self.part.with_extension("raucb")
    }

    fn forget_bundle(&self) {
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(self.installing());
        let _ = std::fs::remove_file(&self.meta);
    }

    /// Bytes already held of the bundle `hash`/`size`, or `None` if what
    /// the directory holds is another bundle (or nothing). A bundle left
    /// under its installing name lost its install to a power cut: it is
    /// complete, so it goes back to `bundle.part` and is verified and
    /// installed again without being sent again.
    fn held(&self, hash: &[u8; 32], size: u64) -> Option<u64> {
        let meta = std::fs::read_to_string(&self.meta).ok()?;
        if meta.trim() != format!("{} {size}", hex(hash)) {
            tracing::info!(
                held = meta.trim(),
                "the bundle held is another one; dropped"
            );
            return None;
        }
        if !self.part.exists() && self.installing().exists() {
            tracing::info!("a complete bundle whose install was cut is installed again");
            std::fs::rename(self.installing(), &self.part).ok()?;
            sync_dir(&self.part);
        }
        let len = std::fs::metadata(&self.part).ok()?.len();
        (len <= size).then_some(len)
    }
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bundle being received.
#[derive(Debug, Clone, Copy)]
struct Receiving {
    hash: [u8; 32],
    size: u64,
    have: u64,
}

struct Task {
    cfg: UpdateConfig,
    files: Files,
    booted: Booted,
    io: UpdaterIo,
    status: watch::Sender<UpdateStatus>,
    receiving: Option<Receiving>,
    /// Set while a newly booted slot is on trial.
    trial_started: Option<Instant>,
}

/// How often receiving progress is published at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How long `rauc status mark-good` may take.
const MARK_GOOD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `rauc install` may take (a whole root slot on a slow card).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, cancel: CancellationToken) {
        self.after_boot().await;
        let mut healthy_since: Option<Instant> = None;
        let mut link = self.io.link.clone();
        loop {
            let now = Instant::now();
            if *link.borrow_and_update() == LinkState::Streaming {
                healthy_since.get_or_insert(now);
            } else {
                healthy_since = None;
            }
            // The trial's two clocks: healthy long enough, or out of time.
            let deadline = self.trial_started.map(|started| {
                let commit = healthy_since
                    .map(|h| h + Duration::from_secs_f64(self.cfg.commit_after_s.max(0.0)));
                let give_up = started + Duration::from_secs_f64(self.cfg.trial_timeout_s.max(0.0));
                commit.map_or(give_up, |c| c.min(give_up))
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = link.changed() => {
                    if changed.is_err() {
                        // The uplink is gone: the camera is stopping.
                        return;
                    }
                }
                _ = sleep_until(deadline) => {
                    let committed = healthy_since.is_some_and(|h| {
                        Instant::now() >= h + Duration::from_secs_f64(self.cfg.commit_after_s.max(0.0))
                    });
                    if committed {
                        self.commit().await;
                    } else {
                        self.give_up_trial().await;
                    }
                }
                input = rx.recv() => match input {
                    None => return,
                    Some(Input::Offer { hash, size }) => self.offer(hash, size).await,
                    Some(Input::Stream(recv)) => self.receive(recv, &cancel).await,
                }
            }
        }
    }

    fn publish(&self, hash: [u8; 32], phase: UpdatePhase, progress: u64, detail: String) {
        let changed_phase = self.status.borrow().phase != phase;
        if changed_phase {
            tracing::info!(phase = phase.name(), %detail, "update");
            if let Some(events) = &self.io.events {
                let doc = serde_json::json!({
                    "event": "update",
                    "phase": phase.name(),
                    "progress": progress,
                    "bundle": hex(&hash),
                    "detail": detail,
                });
                let _ = events.try_send(AuxMessage {
                    channel: Channel::Event,
                    capture_us: wall_us(),
                    payload: Bytes::from(doc.to_string()),
                });
            }
        }
        self.status.send_replace(UpdateStatus {
            hash,
            phase,
            progress,
            detail,
        });
    }

    /// What this boot means for an update that was installed before it.
    async fn after_boot(&mut self) {
        let pending = std::fs::read(&self.files.pending)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pending>(&b).ok());
        let Some(p) = pending else {
            // A committed slot: keep its boot counter full, so power cuts
            // never run it down.
            if self.booted.slot.is_some() {
                // Logged inside; nothing else to do about a failure here.
                let _ = self.mark_good().await;
            }
            return;
        };
        let hash = parse_hex(&p.hash).unwrap_or([0; 32]);
        let new_slot = match (&self.booted.slot, &p.from_slot) {
            (Some(now), Some(from)) => now != from,
            _ => self.booted.version != p.from_version,
        };
        if new_slot {
            self.trial_started = Some(Instant::now());
            self.publish(
                hash,
                UpdatePhase::Booted,
                0,
                format!(
                    "{} (was {}); on trial: commits after {} s of streaming",
                    self.booted.describe(),
                    p.from_version,
                    self.cfg.commit_after_s
                ),
            );
        } else {
            let _ = std::fs::remove_file(&self.files.pending);
            self.publish(
                hash,
                UpdatePhase::RolledBack,
                0,
                format!(
                    "the new slot did not become healthy; back on {}",
                    self.booted.describe()
                ),
            );
        }
    }

    async fn commit(&mut self) {
        let hash = self.status.borrow().hash;
        match self.mark_good().await {
            Ok(()) => {
                self.trial_started = None;
                let _ = std::fs::remove_file(&self.files.pending);
                self.publish(
                    hash,
                    UpdatePhase::Committed,
                    0,
                    format!("{}; marked good", self.booted.describe()),
                );
            }
            Err(e) => {
                // Not committed: the trial clock keeps running and the boot
                // counter falls back if this never succeeds.
                tracing::error!("cannot mark the slot good: {e}");
            }
        }
    }

    async fn give_up_trial(&mut self) {
        let hash = self.status.borrow().hash;
        self.trial_started = None;
        self.publish(
            hash,
            UpdatePhase::Rebooting,
            0,
            format!(
                "the new slot did not stream to the server for {} s within {} s; rebooting so the boot loader falls back",
                self.cfg.commit_after_s, self.cfg.trial_timeout_s
            ),
        );
        if let Err(e) = run(&self.io.reboot_command, Duration::from_secs(10)).await {
            tracing::error!("cannot reboot after a failed trial: {e}");
        }
    }

    async fn mark_good(&self) -> Result<(), String> {
        let mut cmd = self.cfg.rauc_command.clone();
        if cmd.is_empty() {
            return Err("no update.rauc_command".into());
        }
        cmd.extend(["status".into(), "mark-good".into()]);
        let r = run(&cmd, MARK_GOOD_TIMEOUT).await;
        match &r {
            Ok(()) => tracing::info!(slot = ?self.booted.slot, "slot marked good"),
            Err(e) => tracing::warn!("`{}`: {e}", cmd.join(" ")),
        }
        r
    }

    async fn offer(&mut self, hash: [u8; 32], size: u64) {
        let current = self.status.borrow().clone();
        if current.hash == hash
            && !matches!(
                current.phase,
                UpdatePhase::Idle | UpdatePhase::Receiving | UpdatePhase::Failed
            )
        {
            // Already past receiving (installing, on trial, done): say so again.
            self.status.send_replace(current);
            return;
        }
        if self.cfg.rauc_command.is_empty() {
            self.publish(
                hash,
                UpdatePhase::Failed,
                0,
                "this camera has no update.rauc_command".into(),
            );
            return;
        }
        if size == 0 || size > MAX_BUNDLE_SIZE {
            self.publish(
                hash,
                UpdatePhase::Failed,
                0,
                format!("bundle size {size} is outside 1..={MAX_BUNDLE_SIZE} bytes"),
            );
            return;
        }
        let have = match self.files.held(&hash, size) {
            Some(have) => have,
            None => {
                self.files.forget_bundle();
                // Durable before any byte arrives: a power cut must not
                // leave bytes of a bundle nobody can name.
                let created = std::fs::write(&self.files.part, b"").and_then(|()| {
                    write_synced(
                        &self.files.meta,
                        format!("{} {size}\n", hex(&hash)).as_bytes(),
                    )
                });
                if let Err(e) = created {
                    self.publish(
                        hash,
                        UpdatePhase::Failed,
                        0,
                        format!(
                            "cannot store the bundle in {}: {e}",
                            self.files.part.display()
                        ),
                    );
                    return;
                }
                0
            }
        };
        self.receiving = Some(Receiving { hash, size, have });
        if have == size {
            self.complete().await;
        } else {
            self.publish(
                hash,
                UpdatePhase::Receiving,
                have,
                format!("{have} of {size} bytes"),
            );
        }
    }

    async fn receive(
        &mut self,
        recv: kodama_net::update::BundleRecvStream,
        cancel: &CancellationToken,
    ) {
        let (header, mut stream) = match BundleStream::open(recv).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("bundle stream: {e}");
                return;
            }
        };
        let Some(mut r) = self.receiving else {
            tracing::warn!("a bundle stream arrived without an offer; ignored");
            stream.stop();
            return;
        };
        if header.hash != r.hash || header.offset != r.have {
            tracing::warn!(
                offset = header.offset,
                have = r.have,
                "a bundle stream for another bundle or offset; ignored"
            );
            stream.stop();
            return;
        }
        let mut file = match tokio::fs::OpenOptions::new()
            .append(true)
            .open(&self.files.part)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                self.publish(
                    r.hash,
                    UpdatePhase::Failed,
                    r.have,
                    format!("cannot open {}: {e}", self.files.part.display()),
                );
                return;
            }
        };
        let mut last_publish = Instant::now();
        let ended = loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => break Err("cancelled".to_owned()),
                c = stream.next_chunk() => c,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    if r.have + bytes.len() as u64 > r.size {
                        break Err(format!("the stream runs past the offered {} bytes", r.size));
                    }
                    if let Err(e) = file.write_all(&bytes).await {
                        break Err(format!("writing {}: {e}", self.files.part.display()));
                    }
                    r.have += bytes.len() as u64;
                    self.receiving = Some(r);
                    if last_publish.elapsed() >= PROGRESS_EVERY {
                        last_publish = Instant::now();
                        self.publish(
                            r.hash,
                            UpdatePhase::Receiving,
                            r.have,
                            format!("{} of {} bytes", r.have, r.size),
                        );
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        // What arrived is kept across a cut: flush it before anything else.
        let _ = file.flush().await;
        let _ = file.sync_data().await;
        drop(file);
        match ended {
            Ok(()) if r.have == r.size => self.complete().await,
            Ok(()) | Err(_) => {
                if let Err(e) = &ended {
                    tracing::info!(
                        have = r.have,
                        size = r.size,
                        "bundle stream ended early: {e}"
                    );
                }
                if r.have > r.size {
                    self.files.forget_bundle();
                    self.receiving = None;
                    self.publish(r.hash, UpdatePhase::Failed, 0, "bundle too long".into());
                } else {
                    self.publish(
                        r.hash,
                        UpdatePhase::Receiving,
                        r.have,
                        format!("{} of {} bytes; resumes on the next offer", r.have, r.size),
                    );
                }
            }
        }
    }

    /// The whole bundle is here: verify, install, reboot.
    async fn complete(&mut self) {
        let Some(r) = self.receiving.take() else {
            return;
        };
        let part = self.files.part.clone();
        let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(&part)?)?;
            Ok(*hasher.finalize().as_bytes())
        })
        .await;
        let got = match hashed {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.files.forget_bundle();
                self.publish(
                    r.hash,
                    UpdatePhase::Failed,
                    0,
                    format!("cannot read the bundle: {e}"),
                );
                return;
            }
            Err(e) => {
                self.publish(
                    r.hash,
                    UpdatePhase::Failed,
                    0,
                    format!("hashing failed: {e}"),
                );
                return;
            }
        };
        if got != r.hash {
            self.files.forget_bundle();
            self.publish(
                r.hash,
                UpdatePhase::Failed,
                0,
                format!(
                    "BLAKE3 mismatch: received {}, offered {}; deleted, nothing installed",
                    hex(&got),
                    hex(&r.hash)
                ),
            );
            return;
        }
        self.publish(
            r.hash,
            UpdatePhase::Verified,
            r.size,
            format!("{} bytes, BLAKE3 {}", r.size, hex(&r.hash)),
        );
        // RAUC wants a bundle-looking name.
        let bundle = self.files.part.with_extension("raucb");
        if let Err(e) = std::fs::rename(&self.files.part, &bundle) {
            self.files.forget_bundle();
            self.publish(
                r.hash,
                UpdatePhase::Failed,
                0,
                format!("cannot rename the bundle: {e}"),
            );
            return;
        }
        // The installing name must be on disk before RAUC starts: a power
        // cut during the install then finds the whole bundle (see `held`).
        sync_dir(&bundle);
        let installed = self.install(r.hash, &bundle).await;
        let _ = std::fs::remove_file(&bundle);
        self.files.forget_bundle();
        if let Err(why) = installed {
            self.publish(r.hash, UpdatePhase::Failed, 0, why);
            return;
        }
        let pending = Pending {
            hash: hex(&r.hash),
            from_slot: self.booted.slot.clone(),
            from_version: self.booted.version.clone(),
        };
        let recorded = serde_json::to_vec(&pending)
            .map_err(std::io::Error::other)
            .and_then(|b| write_synced(&self.files.pending, &b));
        if let Err(e) = recorded {
            // The slot is written and boots next; without the record the
            // next boot cannot tell a rollback, but it still commits.
            tracing::error!("cannot record the pending update: {e}");
        }
        if self.io.reboot_command.is_empty() {
            self.publish(
                r.hash,
                UpdatePhase::Installed,
                100,
                "installed; it runs after the next reboot (no system.reboot_command)".into(),
            );
            return;
        }
        self.publish(
            r.hash,
            UpdatePhase::Rebooting,
            100,
            format!("installed; rebooting from {}", self.booted.describe()),
        );
        // Give the report a moment to leave before the network goes down.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Err(e) = run(&self.io.reboot_command, Duration::from_secs(10)).await {
            self.publish(
                r.hash,
                UpdatePhase::Installed,
                100,
                format!("installed, but the reboot failed: {e}"),
            );
        }
    }

    /// Runs `rauc install`, publishing its percentage.
    async fn install(&self, hash: [u8; 32], bundle: &Path) -> Result<(), String> {
        self.publish(hash, UpdatePhase::Installing, 0, "rauc install".into());
        let (program, args) = self
            .cfg
            .rauc_command
            .split_first()
            .ok_or("no update.rauc_command")?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .arg("install")
            .arg(bundle)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (line_tx, mut lines) = mpsc::channel::<String>(64);
        for pipe in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let tx = line_tx.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(line_tx);
        let mut last = String::new();
        let deadline = Instant::now() + INSTALL_TIMEOUT;
        loop {
            tokio::select! {
                line = lines.recv() => match line {
                    Some(line) => {
                        tracing::info!("rauc: {line}");
                        if let Some(p) = percent(&line) {
                            self.publish(hash, UpdatePhase::Installing, p, line.trim().to_owned());
                        }
                        if !line.trim().is_empty() {
                            last = line.trim().to_owned();
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("rauc install did not finish within {INSTALL_TIMEOUT:?}"));
                }
            }
        }
        let status = tokio::time::timeout_at(deadline, child.wait())
            .await
            .map_err(|_| "rauc install did not exit".to_owned())?
            .map_err(|e| format!("rauc install: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "rauc install refused the bundle ({status}): {last}"
            ))
        }
    }
}

/// `NN%` in a line of RAUC's progress output.
fn percent(line: &str) -> Option<u64> {
    let end = line.find('%')?;
    let digits: String = line[..end]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok().filter(|p| *p <= 100)
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Makes a file's directory entry (a create or rename) durable; best effort.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs a command to its end.
async fn run(command: &[String], timeout: Duration) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no command configured")?;
    let out = tokio::time::timeout(
        timeout,
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`{}` did not finish within {timeout:?}", command.join(" ")))?
    .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            command.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_whose_install_was_cut_is_held_whole_and_another_is_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files::new(dir.path().to_owned());
        let hash = [7u8; 32];
        std::fs::write(&files.meta, format!("{} 5\n", hex(&hash))).expect("meta");
        // Power cut during `rauc install`: the bundle has its installing name.
        std::fs::write(files.installing(), b"12345").expect("bundle");
        assert_eq!(files.held(&hash, 5), Some(5));
        assert!(files.part.exists() && !files.installing().exists());
        // Another bundle offered: nothing of this one is held, and forgetting
        // it removes it under either name.
        assert_eq!(files.held(&[8u8; 32], 5), None);
        std::fs::rename(&files.part, files.installing()).expect("rename");
        files.forget_bundle();
        assert!(!files.installing().exists() && !files.meta.exists());
    }

    #[test]
    fn percent_is_read_from_rauc_progress_lines() {
        assert_eq!(
            percent("installing  40% Copying image to rootfs.1"),
            Some(40)
        );
        assert_eq!(percent("100% Installing done."), Some(100));
        assert_eq!(percent("no progress here"), None);
        assert_eq!(percent("250% nonsense"), None);
    }

    #[test]
    fn the_booted_slot_comes_from_the_kernel_command_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cmdline = dir.path().join("cmdline");
        let version = dir.path().join("version");
        std::fs::write(&cmdline, "console=ttyAMA0 rauc.slot=B root=/dev/vda3\n").expect("write");
        std::fs::write(&version, "2.0.0\n").expect("write");
        let cfg = UpdateConfig {
            cmdline,
            version_file: version,
            ..UpdateConfig::default()
        };
        let b = Booted::read(&cfg);
        assert_eq!(b.slot.as_deref(), Some("B"));
        assert_eq!(b.version, "2.0.0");
        assert_eq!(b.describe(), "version 2.0.0 on slot B");
    }

    #[test]
    fn a_partial_bundle_is_only_resumed_for_the_same_offer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files::new(dir.path().to_owned());
        let hash = [7u8; 32];
        std::fs::write(&files.meta, format!("{} 100\n", hex(&hash))).expect("meta");
        std::fs::write(&files.part, [0u8; 40]).expect("part");
        assert_eq!(files.held(&hash, 100), Some(40));
        assert_eq!(files.held(&[8u8; 32], 100), None);
        assert_eq!(files.held(&hash, 101), None);
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
    }
}
