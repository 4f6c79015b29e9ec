//! Which peers may connect, and as what.
//!
//! Stored as TOML in `<data>/allowlist.toml`, written atomically (temp file,
//! fsync, rename) so a crash never leaves a half-written list. The running
//! server re-reads the file when its modification time changes, so
//! `kodama-server allow add …` takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use kodama_net::EndpointId;
use kodama_proto::Role;
use serde::{Deserialize, Serialize};

/// Why the allowlist could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllowlistError {
    /// Reading or writing the file failed.
    #[error("allowlist {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid allowlist.
    #[error("allowlist {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A node id is malformed.
    #[error("{0}")]
    BadId(String),
}

/// A role as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// May stream as a camera.
    Camera,
    /// May watch as a viewer.
    Viewer,
}

impl PeerRole {
    fn matches(self, role: Role) -> bool {
        matches!(
            (self, role),
            (PeerRole::Camera, Role::Camera) | (PeerRole::Viewer, Role::Viewer)
        )
    }
}

/// One allowed peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its node id.
    pub id: String,
    /// What it may do.
    pub role: PeerRole,
    /// A label for humans.
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    peer: Vec<Peer>,
}

/// The allowlist file.
#[derive(Debug)]
pub struct Allowlist {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<Peer>)>,
}

impl Allowlist {
    /// The allowlist at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<Peer>, AllowlistError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AllowlistError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let file: File = toml::from_str(&text).map_err(|e| AllowlistError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        for p in &file.peer {
            kodama_net::endpoint::parse_endpoint_id(&p.id).map_err(|e| AllowlistError::Parse {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(file.peer)
    }

    fn write(&self, peers: Vec<Peer>) -> Result<(), AllowlistError> {
        let io = |source| AllowlistError::Io {
            path: self.path.clone(),
            source,
        };
        let text =
            toml::to_string_pretty(&File { peer: peers }).map_err(|e| AllowlistError::Parse {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(b"# Peers allowed to connect. Managed by `kodama-server allow`.\n")
                .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// Every entry.
    pub fn list(&self) -> Result<Vec<Peer>, AllowlistError> {
        self.read()
    }

    /// Adds (or updates the label of) a peer; returns false if it was already there.
    pub fn add(&self, id: &str, role: PeerRole, label: &str) -> Result<bool, AllowlistError> {
        let parsed = kodama_net::endpoint::parse_endpoint_id(id)
            .map_err(|e| AllowlistError::BadId(e.to_string()))?;
        let id = parsed.to_string();
        let mut peers = self.read()?;
        if let Some(p) = peers.iter_mut().find(|p| p.id == id && p.role == role) {
            p.label = label.to_owned();
            self.write(peers)?;
            return Ok(false);
        }
        peers.push(Peer {
            id,
            role,
            label: label.to_owned(),
        });
        self.write(peers)?;
        Ok(true)
    }

    /// Removes a peer (every role, or one); returns how many entries went.
    pub fn remove(&self, id: &str, role: Option<PeerRole>) -> Result<usize, AllowlistError> {
        let mut peers = self.read()?;
        let before = peers.len();
        peers.retain(|p| !(p.id == id.trim() && role.is_none_or(|r| r == p.role)));
        let removed = before - peers.len();
        if removed > 0 {
            self.write(peers)?;
        }
        Ok(removed)
    }

    /// Whether `id` may connect as `role`. Re-reads the file when it changed;
    /// an unreadable file refuses everyone (and is logged), never allows.
    pub fn allows(&self, id: &EndpointId, role: Role) -> bool {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let Ok(mut cache) = self.cache.lock() else {
            return false;
        };
        if cache.0 != mtime || mtime.is_none() {
            match self.read() {
                Ok(peers) => *cache = (mtime, peers),
                Err(e) => {
                    tracing::error!("{e}; refusing every peer until it is fixed");
                    *cache = (None, Vec::new());
                    return false;
                }
            }
        }
        let id = id.to_string();
        cache.1.iter().any(|p| p.id == id && p.role.matches(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = Allowlist::new(dir.path().join("allowlist.toml"));
        let id = kodama_net::SecretKey::generate().public();
        assert!(!list.allows(&id, Role::Camera));
        assert!(list
            .add(&id.to_string(), PeerRole::Camera, "porch")
            .expect("add"));
        assert!(!list
            .add(&id.to_string(), PeerRole::Camera, "porch 2")
            .expect("update"));
        assert!(list.allows(&id, Role::Camera));
        assert!(!list.allows(&id, Role::Viewer), "roles are separate");
        assert_eq!(list.list().expect("list")[0].label, "porch 2");
        assert_eq!(list.remove(&id.to_string(), None).expect("remove"), 1);
        assert!(!list.allows(&id, Role::Camera));
    }

    #[test]
    fn bad_ids_and_files_are_clear_errors_and_refuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("allowlist.toml");
        let list = Allowlist::new(&path);
        assert!(list.add("not-a-key", PeerRole::Viewer, "").is_err());
        std::fs::write(&path, "[[peer]]\nid = \"zz\"\nrole = \"camera\"\n").expect("write");
        let err = list.list().expect_err("bad id");
        assert!(err.to_string().contains("allowlist"), "{err}");
        let id = kodama_net::SecretKey::generate().public();
        assert!(!list.allows(&id, Role::Camera));
    }
}
