//! Which peers may connect, as what, and under which name: the server's own
//! record of every camera and viewer.
//!
//! Stored as TOML in `<data>/allowlist.toml`, written atomically (temp file,
//! fsync, rename) so a crash never leaves a half-written list. The running
//! server re-reads the file when it changes, so `kodama-server camera add …`,
//! `allow add …` or a removal takes effect without a restart (a removal also
//! closes the peer's live connections: see `transport`).
//!
//! A camera's name is the label recorded here (at pairing, `allow add
//! --label`, or `camera rename`), never what the camera says in its hello.
//! Names are unique per role: [`Allowlist::add`] and [`Allowlist::rename`]
//! refuse a name in use. An entry without a label (or a hand-edited file with
//! a duplicate) gets a stable fallback name made from its node id, so two
//! peers never resolve to one name.
//!
//! Removed peers are kept as `[[revoked]]` entries: a revoked key can never
//! be allowed again, by pairing or by `allow add` (the device must make a new
//! key).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use kodama_net::EndpointId;
use kodama_proto::Role;
use serde::{Deserialize, Serialize};

/// Why the allowlist could not be used or changed.
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
    /// A name is unusable (empty, too long, control characters, or a node id).
    #[error("name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Another peer of the same role already has this name.
    #[error(
        "the name {name:?} is already used by {role} {id}; pick another or rename that one first"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The role.
        role: PeerRole,
        /// Who has it.
        id: String,
    },
    /// The key was removed once and can never come back.
    #[error("{id} was removed (revoked); a revoked key can never be allowed again — make a new key on that device")]
    Revoked {
        /// The node id.
        id: String,
    },
    /// No peer of that role has this name or id.
    #[error("no {role} named {what:?} on the allowlist")]
    Unknown {
        /// The role looked in.
        role: PeerRole,
        /// The name or id asked for.
        what: String,
    },
}

/// A role as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// May stream as a camera.
    Camera,
    /// May watch as a viewer.
    Viewer,
    /// Another Kodama server that may forward the cameras listed in its
    /// entry's `carries` (an offsite copy, a site relay).
    Relay,
}

impl PeerRole {
    fn matches(self, role: Role) -> bool {
        matches!(
            (self, role),
            (PeerRole::Camera, Role::Camera)
                | (PeerRole::Viewer, Role::Viewer)
                | (PeerRole::Relay, Role::Relay)
        )
    }

    /// The protocol role.
    pub fn role(self) -> Role {
        match self {
            PeerRole::Camera => Role::Camera,
            PeerRole::Viewer => Role::Viewer,
            PeerRole::Relay => Role::Relay,
        }
    }

    /// The file role for a protocol role.
    pub fn from_role(role: Role) -> Self {
        match role {
            Role::Camera => PeerRole::Camera,
            Role::Viewer => PeerRole::Viewer,
            Role::Relay => PeerRole::Relay,
        }
    }
}

impl std::fmt::Display for PeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.role().fmt(f)
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
    /// Its name on this server (empty: a name made from the node id).
    #[serde(default)]
    pub label: String,
    /// Relays only: the node ids of the cameras it may forward here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carries: Vec<String>,
}

/// A removed peer, refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedPeer {
    /// Its node id.
    pub id: String,
    /// The role it had.
    pub role: PeerRole,
    /// The name it had.
    #[serde(default)]
    pub label: String,
    /// When it was removed, seconds since the Unix epoch.
    #[serde(default)]
    pub revoked_at: u64,
}

/// A peer with the name the server knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPeer {
    /// Its node id.
    pub id: EndpointId,
    /// What it may do.
    pub role: PeerRole,
    /// Its unique name within its role.
    pub name: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    peer: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    revoked: Vec<RevokedPeer>,
}

/// What identifies the file's content on disk, to notice changes cheaply.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// Longest name, in bytes (the protocol's camera-name limit).
pub const MAX_NAME_LEN: usize = kodama_proto::message::MAX_NAME_LEN;

/// Checks a name an admin (or a pairing request) proposes.
pub fn validate_name(name: &str) -> Result<(), AllowlistError> {
    let bad = |reason| {
        Err(AllowlistError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1..=64 bytes");
    }
    if name.trim() != name {
        return bad("must not start or end with white space");
    }
    if name.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    if kodama_net::endpoint::parse_endpoint_id(name).is_ok() {
        return bad("must not look like a node id (names and ids share one namespace)");
    }
    Ok(())
}

fn short_id(id: &str) -> &str {
    id.get(..10).unwrap_or(id)
}

/// Every peer with its effective, unique-per-role name. File order decides
/// who keeps a duplicated label (the first); the others get a suffix.
fn named(peers: &[Peer]) -> Vec<NamedPeer> {
    let mut out: Vec<NamedPeer> = Vec::with_capacity(peers.len());
    for p in peers {
        let Ok(id) = kodama_net::endpoint::parse_endpoint_id(&p.id) else {
            continue;
        };
        let taken =
            |n: &str, out: &[NamedPeer]| out.iter().any(|o| o.role == p.role && o.name == n);
        let mut name = if p.label.is_empty() {
            format!("{}-{}", p.role, short_id(&p.id))
        } else {
            p.label.clone()
        };
        if taken(&name, &out) {
            name = format!("{name}-{}", short_id(&p.id));
        }
        // Bounded: each round appends more of a unique id.
        let mut n = 0;
        while taken(&name, &out) && n < 8 {
            name = format!("{name}-{}", p.id);
            n += 1;
        }
        out.push(NamedPeer {
            id,
            role: p.role,
            name,
        });
    }
    out
}

/// Takes an exclusive lock on `<path>.lock` (created if need be), held until
/// the returned file is dropped: read-modify-write cycles of the server and
/// of `kodama-server camera …` in another process never interleave.
pub(crate) fn lock_beside(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_file_name(name))?;
    file.lock()?;
    Ok(file)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The allowlist file.
#[derive(Debug)]
pub struct Allowlist {
    path: PathBuf,
    cache: Mutex<(Stamp, Option<File>)>,
    /// Serialises read-modify-write cycles within this process.
    write_lock: Mutex<()>,
}

impl Allowlist {
    /// The allowlist at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Mutex::new((None, None)),
            write_lock: Mutex::new(()),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<File, AllowlistError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
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
        for id in file
            .peer
            .iter()
            .map(|p| &p.id)
            .chain(file.revoked.iter().map(|r| &r.id))
        {
            kodama_net::endpoint::parse_endpoint_id(id).map_err(|e| AllowlistError::Parse {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(file)
    }

    fn write(&self, file: &File) -> Result<(), AllowlistError> {
        let io = |source| AllowlistError::Io {
            path: self.path.clone(),
            source,
        };
        let text = toml::to_string_pretty(file).map_err(|e| AllowlistError::Parse {
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
            f.write_all(
                b"# Peers allowed to connect, and their names on this server.\n\
                  # Managed by `kodama-server camera|viewer|allow`.\n",
            )
            .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// Read-modify-write under this process's lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut File) -> Result<T, AllowlistError>,
    ) -> Result<T, AllowlistError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = lock_beside(&self.path).map_err(|source| AllowlistError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut file = self.read()?;
        let out = change(&mut file)?;
        self.write(&file)?;
        Ok(out)
    }

    /// The current content, re-read when the file changed. `changed` is true
    /// when this call noticed a change since the previous one.
    fn current(&self) -> Result<(File, bool), AllowlistError> {
        let now = stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let (s, Some(file)) = &*cache {
            if *s == now && now.is_some() {
                return Ok((file.clone(), false));
            }
        }
        match self.read() {
            Ok(file) => {
                let changed = cache.1.as_ref().map(|f| (&f.peer, &f.revoked))
                    != Some((&file.peer, &file.revoked));
                *cache = (now, Some(file.clone()));
                Ok((file, changed))
            }
            Err(e) => {
                let changed = cache.1.is_some();
                *cache = (None, None);
                if changed {
                    tracing::error!("{e}; refusing every peer until it is fixed");
                }
                Err(e)
            }
        }
    }

    /// Re-reads the file if it changed; true when the allowed set or names
    /// changed since the last look (the server then re-checks live sessions).
    pub fn refresh(&self) -> bool {
        match self.current() {
            Ok((_, changed)) => changed,
            // Unreadable: every live session must be re-checked (and refused).
            Err(_) => true,
        }
    }

    /// Every entry.
    pub fn list(&self) -> Result<Vec<Peer>, AllowlistError> {
        Ok(self.read()?.peer)
    }

    /// Every entry with its effective name.
    pub fn named(&self) -> Result<Vec<NamedPeer>, AllowlistError> {
        Ok(named(&self.read()?.peer))
    }

    /// Removed keys.
    pub fn revoked(&self) -> Result<Vec<RevokedPeer>, AllowlistError> {
        Ok(self.read()?.revoked)
    }

    /// Adds (or renames) a peer; returns false if it was already there.
    /// Refuses a name another peer of the role has, and a revoked key.
    pub fn add(&self, id: &str, role: PeerRole, label: &str) -> Result<bool, AllowlistError> {
        let parsed = kodama_net::endpoint::parse_endpoint_id(id)
            .map_err(|e| AllowlistError::BadId(e.to_string()))?;
        if !label.is_empty() {
            validate_name(label)?;
        }
        let id = parsed.to_string();
        self.update(|file| {
            if file.revoked.iter().any(|r| r.id == id) {
                return Err(AllowlistError::Revoked { id: id.clone() });
            }
            if !label.is_empty() {
                if let Some(other) = named(&file.peer)
                    .into_iter()
                    .find(|n| n.role == role && n.name == label && n.id != parsed)
                {
                    return Err(AllowlistError::NameTaken {
                        name: label.to_owned(),
                        role,
                        id: other.id.to_string(),
                    });
                }
            }
            if let Some(p) = file.peer.iter_mut().find(|p| p.id == id && p.role == role) {
                p.label = label.to_owned();
                return Ok(false);
            }
            file.peer.push(Peer {
                id: id.clone(),
                role,
                label: label.to_owned(),
                carries: Vec::new(),
            });
            Ok(true)
        })
    }

    /// Renames the peer of `role` called `name_or_id`.
    pub fn rename(
        &self,
        role: PeerRole,
        name_or_id: &str,
        new_name: &str,
    ) -> Result<NamedPeer, AllowlistError> {
        validate_name(new_name)?;
        self.update(|file| {
            let peers = named(&file.peer);
            let target = find_named(&peers, role, name_or_id)?;
            if let Some(other) = peers
                .iter()
                .find(|n| n.role == role && n.name == new_name && n.id != target.id)
            {
                return Err(AllowlistError::NameTaken {
                    name: new_name.to_owned(),
                    role,
                    id: other.id.to_string(),
                });
            }
            let id = target.id.to_string();
            for p in file
                .peer
                .iter_mut()
                .filter(|p| p.id == id && p.role == role)
            {
                p.label = new_name.to_owned();
            }
            Ok(NamedPeer {
                name: new_name.to_owned(),
                ..target
            })
        })
    }

    /// Removes the peer of `role` called `name_or_id` and revokes its key for
    /// good. The running server closes its connections within a moment.
    pub fn remove_named(
        &self,
        role: PeerRole,
        name_or_id: &str,
    ) -> Result<NamedPeer, AllowlistError> {
        self.update(|file| {
            let target = find_named(&named(&file.peer), role, name_or_id)?;
            let id = target.id.to_string();
            file.peer.retain(|p| !(p.id == id && p.role == role));
            revoke(file, &id, role, &target.name);
            Ok(target)
        })
    }

    /// Removes a node id (every role, or one) and revokes it; returns how
    /// many entries went.
    pub fn remove(&self, id: &str, role: Option<PeerRole>) -> Result<usize, AllowlistError> {
        let id = kodama_net::endpoint::parse_endpoint_id(id)
            .map_err(|e| AllowlistError::BadId(e.to_string()))?
            .to_string();
        self.update(|file| {
            let gone: Vec<NamedPeer> = named(&file.peer)
                .into_iter()
                .filter(|n| n.id.to_string() == id && role.is_none_or(|r| r == n.role))
                .collect();
            file.peer
                .retain(|p| !(p.id == id && role.is_none_or(|r| r == p.role)));
            for g in &gone {
                revoke(file, &id, g.role, &g.name);
            }
            Ok(gone.len())
        })
    }

    /// Whether `id` may connect as `role`. Re-reads the file when it changed;
    /// an unreadable file refuses everyone (and is logged), never allows.
    pub fn allows(&self, id: &EndpointId, role: Role) -> bool {
        let Ok((file, _)) = self.current() else {
            return false;
        };
        let id = id.to_string();
        file.peer.iter().any(|p| p.id == id && p.role.matches(role))
            && !file.revoked.iter().any(|r| r.id == id)
    }

    /// Allows `id` as a relay that may forward `cameras` (node ids; added
    /// to what it may already carry). Returns false if it was already a relay.
    pub fn add_relay(
        &self,
        id: &str,
        label: &str,
        cameras: &[String],
    ) -> Result<bool, AllowlistError> {
        let mut carried = Vec::with_capacity(cameras.len());
        for c in cameras {
            let camera = kodama_net::endpoint::parse_endpoint_id(c)
                .map_err(|e| AllowlistError::BadId(format!("--carry: {e}")))?;
            carried.push(camera.to_string());
        }
        let added = self.add(id, PeerRole::Relay, label)?;
        let id = kodama_net::endpoint::parse_endpoint_id(id)
            .map_err(|e| AllowlistError::BadId(e.to_string()))?
            .to_string();
        self.update(|file| {
            if let Some(p) = file
                .peer
                .iter_mut()
                .find(|p| p.id == id && p.role == PeerRole::Relay)
            {
                for c in carried {
                    if !p.carries.contains(&c) {
                        p.carries.push(c);
                    }
                }
            }
            Ok(())
        })?;
        Ok(added)
    }

    /// Whether relay `relay` may forward camera `camera` to this server.
    /// Re-reads the file when it changed; an unreadable file allows nothing.
    pub fn may_carry(&self, relay: &EndpointId, camera: &EndpointId) -> bool {
        let Ok((file, _)) = self.current() else {
            return false;
        };
        let (relay, camera) = (relay.to_string(), camera.to_string());
        !file.revoked.iter().any(|r| r.id == relay || r.id == camera)
            && file
                .peer
                .iter()
                .any(|p| p.id == relay && p.role == PeerRole::Relay && p.carries.contains(&camera))
    }

    /// Whether some relay may forward camera `camera` here.
    pub fn is_carried(&self, camera: &EndpointId) -> bool {
        let Ok((file, _)) = self.current() else {
            return false;
        };
        let camera = camera.to_string();
        file.peer
            .iter()
            .any(|p| p.role == PeerRole::Relay && p.carries.contains(&camera))
    }

    /// Whether `id` was removed for good.
    pub fn is_revoked(&self, id: &EndpointId) -> bool {
        let id = id.to_string();
        match self.current() {
            Ok((file, _)) => file.revoked.iter().any(|r| r.id == id),
            // An unreadable record cannot vouch for anyone.
            Err(_) => true,
        }
    }

    /// The name the server knows `id` by in `role`, if it is allowed.
    pub fn name_of(&self, id: &EndpointId, role: PeerRole) -> Option<String> {
        let (file, _) = self.current().ok()?;
        named(&file.peer)
            .into_iter()
            .find(|n| n.id == *id && n.role == role)
            .map(|n| n.name)
    }

    /// The peer of `role` whose name (or node id) is `name_or_id`.
    pub fn resolve(&self, role: PeerRole, name_or_id: &str) -> Option<NamedPeer> {
        let (file, _) = self.current().ok()?;
        find_named(&named(&file.peer), role, name_or_id).ok()
    }

    /// Whether a peer of `role` is already called `name`.
    pub fn name_taken(&self, role: PeerRole, name: &str) -> Result<bool, AllowlistError> {
        Ok(named(&self.read()?.peer)
            .iter()
            .any(|n| n.role == role && n.name == name))
    }
}

fn find_named(
    peers: &[NamedPeer],
    role: PeerRole,
    name_or_id: &str,
) -> Result<NamedPeer, AllowlistError> {
    let by_id = kodama_net::endpoint::parse_endpoint_id(name_or_id).ok();
    peers
        .iter()
        .find(|n| n.role == role && (Some(n.id) == by_id || n.name == name_or_id))
        .cloned()
        .ok_or_else(|| AllowlistError::Unknown {
            role,
            what: name_or_id.to_owned(),
        })
}

fn revoke(file: &mut File, id: &str, role: PeerRole, name: &str) {
    if !file.revoked.iter().any(|r| r.id == id && r.role == role) {
        file.revoked.push(RevokedPeer {
            id: id.to_owned(),
            role,
            label: name.to_owned(),
            revoked_at: unix_now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        kodama_net::SecretKey::generate().public().to_string()
    }

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
    fn a_relay_carries_only_the_cameras_it_was_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = Allowlist::new(dir.path().join("allowlist.toml"));
        let relay = kodama_net::SecretKey::generate().public();
        let (porch, garden) = (
            kodama_net::SecretKey::generate().public(),
            kodama_net::SecretKey::generate().public(),
        );
        assert!(!list.may_carry(&relay, &porch));
        assert!(list
            .add_relay(&relay.to_string(), "home", &[porch.to_string()])
            .expect("add"));
        assert!(list.allows(&relay, Role::Relay));
        assert!(
            !list.allows(&relay, Role::Camera),
            "a relay is not a camera"
        );
        assert!(list.may_carry(&relay, &porch));
        assert!(!list.may_carry(&relay, &garden));
        assert!(!list.may_carry(&porch, &porch), "a camera carries nothing");
        // More cameras later; the first stays.
        assert!(!list
            .add_relay(&relay.to_string(), "home", &[garden.to_string()])
            .expect("extend"));
        assert!(list.may_carry(&relay, &porch) && list.may_carry(&relay, &garden));
        assert!(list
            .add_relay(&relay.to_string(), "home", &["nope".into()])
            .is_err());
        list.remove(&relay.to_string(), None).expect("remove");
        assert!(
            !list.may_carry(&relay, &porch),
            "a removed relay carries nothing"
        );
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

    #[test]
    fn names_are_unique_per_role_and_renamable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = Allowlist::new(dir.path().join("allowlist.toml"));
        let (a, b) = (key(), key());
        list.add(&a, PeerRole::Camera, "porch").expect("a");
        let err = list.add(&b, PeerRole::Camera, "porch").expect_err("taken");
        assert!(matches!(err, AllowlistError::NameTaken { .. }), "{err}");
        // The same name for a viewer is another namespace.
        list.add(&b, PeerRole::Viewer, "porch").expect("viewer");
        list.add(&b, PeerRole::Camera, "").expect("unlabelled");
        let b_name = list
            .name_of(
                &kodama_net::endpoint::parse_endpoint_id(&b).expect("id"),
                PeerRole::Camera,
            )
            .expect("named");
        assert!(b_name.starts_with("camera-"), "{b_name}");
        assert!(matches!(
            list.rename(PeerRole::Camera, &b_name, "porch"),
            Err(AllowlistError::NameTaken { .. })
        ));
        list.rename(PeerRole::Camera, "porch", "front door")
            .expect("rename");
        assert_eq!(
            list.resolve(PeerRole::Camera, "front door")
                .map(|n| n.id.to_string()),
            Some(a.clone())
        );
        assert!(list.resolve(PeerRole::Camera, "porch").is_none());
        assert!(matches!(
            list.add(&a, PeerRole::Camera, &b),
            Err(AllowlistError::BadName { .. })
        ));
    }

    #[test]
    fn hand_edited_duplicates_still_resolve_to_one_peer_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("allowlist.toml");
        let (a, b) = (key(), key());
        std::fs::write(
            &path,
            format!(
                "[[peer]]\nid = \"{a}\"\nrole = \"camera\"\nlabel = \"porch\"\n\
                 [[peer]]\nid = \"{b}\"\nrole = \"camera\"\nlabel = \"porch\"\n"
            ),
        )
        .expect("write");
        let list = Allowlist::new(&path);
        let names = list.named().expect("named");
        assert_eq!(names[0].name, "porch");
        assert_ne!(names[1].name, "porch");
        assert_eq!(
            list.resolve(PeerRole::Camera, "porch")
                .map(|n| n.id.to_string()),
            Some(a)
        );
    }

    #[test]
    fn removed_keys_are_revoked_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = Allowlist::new(dir.path().join("allowlist.toml"));
        let a = key();
        let id = kodama_net::endpoint::parse_endpoint_id(&a).expect("id");
        list.add(&a, PeerRole::Camera, "porch").expect("add");
        assert!(!list.refresh() || list.allows(&id, Role::Camera));
        let gone = list
            .remove_named(PeerRole::Camera, "porch")
            .expect("remove");
        assert_eq!(gone.id, id);
        assert!(list.refresh(), "a removal is a change");
        assert!(!list.allows(&id, Role::Camera));
        assert!(list.is_revoked(&id));
        assert!(matches!(
            list.add(&a, PeerRole::Camera, "porch"),
            Err(AllowlistError::Revoked { .. })
        ));
        assert!(matches!(
            list.remove_named(PeerRole::Camera, "porch"),
            Err(AllowlistError::Unknown { .. })
        ));
    }
}
