//! First boot (and every boot) on the camera image: turn the SD card's
//! `kodama.toml` into a running configuration, or tell the user what is wrong
//! in a way they can see without a serial cable.
//!
//! The image (see `buildroot-overlay/`) mounts the FAT boot partition at
//! `/boot` and the ext4 data partition at `/data`, then starts the firmware
//! with `KODAMA_BOOT_DIR` / `KODAMA_DATA_DIR` set. With those set, `run`:
//!
//! 1. creates the camera's secret key on the data partition if there is none
//!    (crash-safe: temporary file, fsync, rename, fsync of the directory, so a
//!    power cut leaves either no key or a whole key, never a torn one);
//! 2. writes the node id next to the config (`kodama-node-id.txt`), so the
//!    owner can read it on their computer and allow the camera on the server;
//! 3. reads and validates `kodama.toml`;
//! 4. writes `kodama-status.txt` on the boot partition: `OK` or the error and
//!    what to do about it. On error the status LED blinks [`BlinkCode`]s
//!    (see `hw/README.md`) and the error is logged.
//!
//! Writes to the FAT partition are rare (only when a file's content changes)
//! and atomic (write a temporary file, fsync, rename over the old one), so the
//! partition the Pi boots from is almost never being written when power goes.
//!
//! The step functions are plain synchronous file I/O on paths given by the
//! caller; tests run them on temporary directories.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use kodama_net::SecretKey;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};

/// The user's configuration file on the boot partition.
pub const CONFIG_FILE: &str = "kodama.toml";
/// The status report the user reads on their computer.
pub const STATUS_FILE: &str = "kodama-status.txt";
/// The camera's node id, for `kodama-server allow add`.
pub const NODE_ID_FILE: &str = "kodama-node-id.txt";
/// The secret key, relative to the data directory.
pub const KEY_FILE: &str = "kodama/camera.key";
/// Largest `kodama.toml` accepted: a real one is under 2 KiB; a card with a
/// huge file there (a photo renamed by mistake) is rejected before reading it.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Environment variable naming the boot partition's mount point.
pub const ENV_BOOT_DIR: &str = "KODAMA_BOOT_DIR";
/// Environment variable naming the data partition's mount point.
pub const ENV_DATA_DIR: &str = "KODAMA_DATA_DIR";

/// What the status LED blinks: the number of flashes per cycle
/// (played with [`crate::hw::gpio::blink_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlinkCode {
    /// 2 flashes: there is no `kodama.toml` on the boot partition.
    ConfigMissing = 2,
    /// 3 flashes: `kodama.toml` is unreadable, not TOML, or has a bad value.
    ConfigInvalid = 3,
    /// 4 flashes: the data partition is missing or not writable.
    Storage = 4,
    /// 5 flashes: the secret key could not be created or read.
    Key = 5,
}

impl BlinkCode {
    /// Flashes per cycle.
    pub fn flashes(self) -> u8 {
        self as u8
    }
}

/// Why the camera cannot start from its card.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirstBootError {
    /// No `kodama.toml` on the boot partition.
    #[error("{path} not found: copy your kodama.toml to the card's boot partition")]
    ConfigMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `kodama.toml` is larger than [`MAX_CONFIG_BYTES`].
    #[error("{path} is {len} bytes; a kodama.toml is at most {MAX_CONFIG_BYTES} bytes")]
    ConfigTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// `kodama.toml` is not valid UTF-8 text.
    #[error("{path} is not UTF-8 text: save it as plain text (UTF-8)")]
    ConfigNotText {
        /// The file.
        path: PathBuf,
    },
    /// `kodama.toml` could not be read, parsed, or has an invalid value.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The data directory is missing or cannot be written.
    #[error("data partition {path}: {source}")]
    Storage {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but does not hold a 32-byte key.
    #[error("secret key {path} is {len} bytes, not 32: the data partition is damaged")]
    KeyCorrupt {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

impl FirstBootError {
    /// The LED code for this error.
    pub fn blink_code(&self) -> BlinkCode {
        match self {
            Self::ConfigMissing { .. } => BlinkCode::ConfigMissing,
            Self::ConfigTooLarge { .. } | Self::ConfigNotText { .. } | Self::Config(_) => {
                BlinkCode::ConfigInvalid
            }
            Self::Storage { .. } => BlinkCode::Storage,
            Self::KeyCorrupt { .. } => BlinkCode::Key,
        }
    }

    /// One line of advice for the status file.
    fn advice(&self) -> &'static str {
        match self.blink_code() {
            BlinkCode::ConfigMissing => {
                "Put the card in your computer, copy kodama.toml to this drive, and boot again."
            }
            BlinkCode::ConfigInvalid => {
                "Fix the line named above in kodama.toml on this drive, and boot again."
            }
            BlinkCode::Storage | BlinkCode::Key => {
                "The card's data partition is damaged or full. Re-flash the card (scripts/flash.sh) or use a new card."
            }
        }
    }
}

/// The boot and data partitions' mount points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDirs {
    /// FAT boot partition (holds `kodama.toml`).
    pub boot: PathBuf,
    /// Writable data partition.
    pub data: PathBuf,
}

impl BootDirs {
    /// From [`ENV_BOOT_DIR`] and [`ENV_DATA_DIR`]; `None` unless both are set
    /// (a developer's `kodama-camera run` on a laptop skips the image logic).
    pub fn from_env() -> Option<Self> {
        let boot = std::env::var_os(ENV_BOOT_DIR)?;
        let data = std::env::var_os(ENV_DATA_DIR)?;
        Some(Self {
            boot: boot.into(),
            data: data.into(),
        })
    }

    /// `kodama.toml`'s path.
    pub fn config_path(&self) -> PathBuf {
        self.boot.join(CONFIG_FILE)
    }

    /// The secret key's path.
    pub fn key_path(&self) -> PathBuf {
        self.data.join(KEY_FILE)
    }

    /// Where the store-and-forward ring lives by default.
    pub fn backlog_dir(&self) -> PathBuf {
        self.data.join("backlog")
    }
}

/// The outcome of a successful [`prepare`].
#[derive(Debug)]
pub struct Prepared {
    /// The validated configuration, its key path pointing at the data partition.
    pub config: Config,
    /// This camera's node id (hex), as written to [`NODE_ID_FILE`].
    pub node_id: String,
    /// The key was created on this boot.
    pub first_boot: bool,
}

/// Runs the boot steps (see the module docs): key, node id file, config.
///
/// `resolve` produces the validated configuration (the caller's usual path:
/// `kodama.toml` plus flag/environment overrides). The status file is
/// written in every case; on error the caller reports it with
/// [`signal_failure`].
pub fn prepare<F>(dirs: &BootDirs, resolve: F) -> Result<Prepared, FirstBootError>
where
    F: FnOnce(&Path) -> Result<Config, ConfigError>,
{
    let result = prepare_inner(dirs, resolve);
    let status = match &result {
        Ok(p) => status_ok(&p.node_id),
        Err(e) => status_error(e, read_node_id(&dirs.boot).as_deref()),
    };
    // The status file is best effort: a read-only or full boot partition
    // must not keep a good configuration from running.
    if let Err(e) = write_if_changed(&dirs.boot.join(STATUS_FILE), status.as_bytes()) {
        tracing::warn!(error = %e, "cannot write {STATUS_FILE} on the boot partition");
    }
    result
}

fn prepare_inner<F>(dirs: &BootDirs, resolve: F) -> Result<Prepared, FirstBootError>
where
    F: FnOnce(&Path) -> Result<Config, ConfigError>,
{
    // The key first: the owner needs the node id even while the config is
    // still wrong (allowing the camera and fixing Wi-Fi are independent).
    let key_path = dirs.key_path();
    let (key, first_boot) = load_or_create_key(&key_path)?;
    let node_id = key.public().to_string();
    if let Err(e) = write_if_changed(
        &dirs.boot.join(NODE_ID_FILE),
        format!("{node_id}\n").as_bytes(),
    ) {
        tracing::warn!(error = %e, "cannot write {NODE_ID_FILE} on the boot partition");
    }
    if first_boot {
        tracing::info!(%node_id, "first boot: created the camera's key");
    }

    let config_path = dirs.config_path();
    check_config_file(&config_path)?;
    let mut config = resolve(&config_path)?;
    config.camera.key_path = key_path;
    // The backlog belongs on the data partition unless kodama.toml says otherwise.
    if config.backlog.dir.is_none() {
        config.backlog.dir = Some(dirs.backlog_dir());
    }
    Ok(Prepared {
        config,
        node_id,
        first_boot,
    })
}

/// Checks that `kodama.toml` exists, is small, and is UTF-8, so the common
/// card mistakes get their own message (and blink code) before parsing.
pub fn check_config_file(path: &Path) -> Result<(), FirstBootError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FirstBootError::ConfigMissing {
                path: path.to_owned(),
            })
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }
            .into())
        }
    };
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let len = file.metadata().map_err(read_err)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(FirstBootError::ConfigTooLarge {
            path: path.to_owned(),
            len,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // take(): the file may grow between metadata() and read.
    file.take(MAX_CONFIG_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(FirstBootError::ConfigNotText {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Reads the 32-byte key at `path`, or creates it crash-safely.
/// Returns the key and whether it was created now.
pub fn load_or_create_key(path: &Path) -> Result<(SecretKey, bool), FirstBootError> {
    let storage = |path: &Path| {
        let path = path.to_owned();
        move |source| FirstBootError::Storage { path, source }
    };
    match fs::read(path) {
        Ok(bytes) => {
            let arr: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| FirstBootError::KeyCorrupt {
                        path: path.to_owned(),
                        len: bytes.len() as u64,
                    })?;
            Ok((SecretKey::from_bytes(&arr), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).map_err(storage(dir))?;
            let key = SecretKey::generate();
            atomic_write(path, &key.to_bytes(), 0o600).map_err(storage(path))?;
            Ok((key, true))
        }
        Err(source) => Err(FirstBootError::Storage {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The node id last written to the boot partition, if any.
fn read_node_id(boot: &Path) -> Option<String> {
    let text = fs::read_to_string(boot.join(NODE_ID_FILE)).ok()?;
    let id = text.trim();
    (!id.is_empty() && id.len() <= 128).then(|| id.to_owned())
}

/// The status file's text when the camera is running.
pub fn status_ok(node_id: &str) -> String {
    format!(
        "Kodama camera: OK\n\
         \n\
         The configuration in kodama.toml is valid; the camera is connecting to its server.\n\
         Node id: {node_id}\n\
         Allow it on the server with:  kodama-server allow add {node_id}\n\
         Firmware: kodama-camera {}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Ends a status text with the node id (when known) and the firmware
/// version, as every problem report on the card does.
fn push_identity(s: &mut String, node_id: Option<&str>) {
    if let Some(id) = node_id {
        s.push_str(&format!("Node id: {id}\n"));
    }
    s.push_str(&format!(
        "Firmware: kodama-camera {}\n",
        env!("CARGO_PKG_VERSION")
    ));
}

/// The status file's text when the server refused the pairing code in
/// `kodama.toml`: the camera runs, unpaired, and waits for a pairing QR code.
pub fn status_not_paired(reason: &str, node_id: Option<&str>) -> String {
    let mut s = format!(
        "Kodama camera: NOT PAIRED\n\
         \n\
         The server refused the pairing code in kodama.toml ([server] pair): {reason}\n\
         \n\
         Make a new code with `kodama-server camera add NAME`, then either put its pairing \
         string in kodama.toml and restart the camera, or hold its QR code in front of the lens.\n\
         The status LED blinks {} times, pauses, and repeats, then once a cycle while it looks for a QR code.\n",
        crate::onboarding::blink::REFUSED
    );
    push_identity(&mut s, node_id);
    s
}

/// On the SD-card image (see [`BootDirs::from_env`]), replaces the status
/// file: [`status_ok`] when `refused` is `None`, else
/// [`status_not_paired`]. Best effort, like [`prepare`]'s.
pub fn report_pairing(refused: Option<&str>) {
    let Some(dirs) = BootDirs::from_env() else {
        return;
    };
    let node_id = read_node_id(&dirs.boot);
    let status = match (refused, &node_id) {
        (Some(reason), id) => status_not_paired(reason, id.as_deref()),
        (None, Some(id)) => status_ok(id),
        (None, None) => return,
    };
    if let Err(e) = write_if_changed(&dirs.boot.join(STATUS_FILE), status.as_bytes()) {
        tracing::warn!(error = %e, "cannot write {STATUS_FILE} on the boot partition");
    }
}

/// The status file's text for an error.
pub fn status_error(err: &FirstBootError, node_id: Option<&str>) -> String {
    let code = err.blink_code().flashes();
    let mut s = format!(
        "Kodama camera: ERROR\n\
         \n\
         {err}\n\
         \n\
         {}\n\
         The status LED blinks {code} times, pauses, and repeats.\n",
        err.advice()
    );
    push_identity(&mut s, node_id);
    s
}

/// Writes `contents` to `path` unless it already holds exactly that.
/// Returns whether it wrote.
pub fn write_if_changed(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    match fs::read(path) {
        Ok(old) if old == contents => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    atomic_write(path, contents, 0o644)?;
    Ok(true)
}

/// Replaces `path` with `contents` so that a crash leaves the old or the new
/// file, never a mix (the shared write-temp / fsync / rename / fsync-dir).
pub fn atomic_write(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    kodama_net::durable::write_atomic(path, contents, mode)
}

/// Logs `err` and, on the Pi, blinks its code on the status LED until
/// `cancel` fires (the card must be taken out to fix it, so there is nothing
/// better to do). Without the LED (other builds) it returns after logging.
pub async fn signal_failure(err: &FirstBootError, cancel: &CancellationToken) {
    let code = err.blink_code();
    tracing::error!(error = %err, blink = code.flashes(), "cannot start from the card; see {STATUS_FILE}");
    #[cfg(feature = "pi")]
    {
        use crate::hw::gpio::{blink_code, pi, StatusLed};
        match pi::output(STATUS_LED_PIN).and_then(StatusLed::new) {
            Ok(mut led) => {
                let pattern = blink_code(code.flashes());
                while led.play(&pattern, cancel).await.is_ok() {}
            }
            Err(e) => {
                tracing::warn!(error = %e, "status LED unavailable");
                cancel.cancelled().await;
            }
        }
    }
    #[cfg(not(feature = "pi"))]
    let _ = cancel;
}

/// BCM GPIO of the status LED (see `hw/README.md`, pin 11).
pub const STATUS_LED_PIN: u8 = 17;

/// [`prepare`], then on error [`signal_failure`] (which, on the Pi, blinks
/// until `cancel`): the one call `kodama-camera run` makes on the image.
pub async fn prepare_or_signal<F>(
    dirs: &BootDirs,
    resolve: F,
    cancel: &CancellationToken,
) -> Result<Config, FirstBootError>
where
    F: FnOnce(&Path) -> Result<Config, ConfigError>,
{
    match prepare(dirs, resolve) {
        Ok(p) => Ok(p.config),
        Err(e) => {
            signal_failure(&e, cancel).await;
            Err(e)
        }
    }
}
