//! One-time pairing codes: made by `kodama-server camera add` / `viewer add`,
//! redeemed once by a new camera or viewer over the pairing ALPN.
//!
//! Stored in `<data>/pairing.toml`, written atomically like the allowlist.
//! A code is never stored: each entry keeps a random 32-byte salt and
//! BLAKE3(key = salt, code), and a candidate is hashed against every entry,
//! compared in constant time (`blake3::Hash`'s equality), with no early exit.
//! An entry remembers when it was used and by whom, so a second use is
//! refused as "used" rather than "wrong"; used and expired entries are
//! dropped a week after their expiry.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use kodama_net::EndpointId;
use serde::{Deserialize, Serialize};

use crate::allowlist::{validate_name, Allowlist, AllowlistError, PeerRole};

/// Default life of a code.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// How long used or expired entries are kept to explain refusals.
const KEEP_SPENT: u64 = 7 * 24 * 3600;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingStoreError {
    /// Reading or writing the file failed.
    #[error("pairing codes {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("pairing codes {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The allowlist refused (name taken, bad name…).
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
}

/// Why a code was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedeemError {
    /// No pending code matches.
    #[error("wrong pairing code")]
    Wrong,
    /// The code expired.
    #[error("this pairing code expired {ago} s ago; make a new one with `kodama-server {role} add {name}`")]
    Expired {
        /// Seconds since it expired.
        ago: u64,
        /// Role it was for.
        role: PeerRole,
        /// Name it was for.
        name: String,
    },
    /// The code was used already.
    #[error("this pairing code was used already (codes work once); make a new one with `kodama-server {role} add {name}`")]
    Used {
        /// Role it was for.
        role: PeerRole,
        /// Name it was for.
        name: String,
    },
    /// The code is for the other role.
    #[error("this pairing code is for a {expected}, not a {found}")]
    WrongRole {
        /// What the code is for.
        expected: PeerRole,
        /// What the peer asked to be.
        found: PeerRole,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] PairingStoreError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    salt: String,
    hash: String,
    role: PeerRole,
    name: String,
    created_at: u64,
    expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    code: Vec<Entry>,
}

/// A code just made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCode {
    /// The code, normalised (show it with [`kodama_proto::pairing::format_code`]).
    pub code: String,
    /// When it expires, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A code waiting to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// What it makes its user.
    pub role: PeerRole,
    /// The name its user gets.
    pub name: String,
    /// When it expires, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The store.
#[derive(Debug)]
pub struct PairingStore {
    path: PathBuf,
    lock: Mutex<()>,
}

/// Pixels per QR module in [`qr_image`]: sharp when printed at 300 dpi
/// (about 2 cm for a typical pairing string) and on a phone's screen.
pub const QR_MODULE_PX: u32 = 8;

/// The pairing string as a QR code picture, `module_px` pixels per module
/// with the standard 4-module white quiet zone around it (what
/// `camera add --qr-image` writes, for the owner to print or show on a
/// phone in front of the camera).
pub fn qr_image(
    text: &str,
    module_px: u32,
) -> Result<kodama_media::pgm::GreyImage, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    let modules = code.width();
    let colors = code.to_colors();
    let px = module_px.max(1) as usize;
    let side = (modules + 8) * px;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + 4, i / modules + 4);
        for y in my * px..(my + 1) * px {
            pixels[y * side + mx * px..y * side + (mx + 1) * px].fill(0);
        }
    }
    Ok(kodama_media::pgm::GreyImage {
        width: side as u32,
        height: side as u32,
        pixels,
    })
}

fn hash(salt: &[u8; 32], code: &str) -> blake3::Hash {
    blake3::keyed_hash(salt, code.as_bytes())
}

impl PairingStore {
    /// The store at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Excludes other processes (`camera add` while the server redeems).
    fn lock_file(&self) -> Result<std::fs::File, PairingStoreError> {
        crate::allowlist::lock_beside(&self.path).map_err(|source| PairingStoreError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn read(&self) -> Result<File, PairingStoreError> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => toml::from_str(&t).map_err(|e| PairingStoreError::Parse {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(source) => Err(PairingStoreError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, file: &File) -> Result<(), PairingStoreError> {
        let io = |source| PairingStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let text = toml::to_string_pretty(file).map_err(|e| PairingStoreError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let contents = format!(
            "# One-time pairing codes (hashed). Managed by `kodama-server camera|viewer add`.\n{text}"
        );
        kodama_net::durable::write_atomic(&self.path, contents.as_bytes(), 0o600).map_err(io)
    }

    /// Makes a code for a new peer of `role` called `name`, valid for `ttl`
    /// from `now` (seconds since the Unix epoch). A pending code for the same
    /// name is replaced. The name must be free on the allowlist.
    pub fn create(
        &self,
        allowlist: &Allowlist,
        role: PeerRole,
        name: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<NewCode, PairingStoreError> {
        validate_name(name)?;
        if let Some(other) = allowlist.resolve(role, name) {
            return Err(AllowlistError::NameTaken {
                name: name.to_owned(),
                role,
                id: other.id.to_string(),
            }
            .into());
        }
        let code = kodama_proto::pairing::code_from_bits(rand::random::<u64>());
        let salt: [u8; 32] = rand::random();
        let expires_at = now + ttl.as_secs().max(1);
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = self.lock_file()?;
        let mut file = self.read()?;
        file.code.retain(|e| {
            let replaced = e.role == role && e.name == name && e.used_at.is_none();
            let stale = e.expires_at + KEEP_SPENT < now;
            !replaced && !stale
        });
        file.code.push(Entry {
            salt: hex::encode(salt),
            hash: hash(&salt, &code).to_hex().to_string(),
            role,
            name: name.to_owned(),
            created_at: now,
            expires_at,
            used_by: None,
            used_at: None,
        });
        self.write(&file)?;
        Ok(NewCode { code, expires_at })
    }

    /// Codes waiting to be used at `now`.
    pub fn pending(&self, now: u64) -> Result<Vec<Pending>, PairingStoreError> {
        Ok(self
            .read()?
            .code
            .into_iter()
            .filter(|e| e.used_at.is_none() && e.expires_at > now)
            .map(|e| Pending {
                role: e.role,
                name: e.name,
                expires_at: e.expires_at,
            })
            .collect())
    }

    /// Withdraws the unused codes for `name`; returns how many.
    pub fn cancel(&self, role: PeerRole, name: &str) -> Result<usize, PairingStoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = self.lock_file()?;
        let mut file = self.read()?;
        let before = file.code.len();
        file.code
            .retain(|e| !(e.role == role && e.name == name && e.used_at.is_none()));
        let n = before - file.code.len();
        if n > 0 {
            self.write(&file)?;
        }
        Ok(n)
    }

    /// Redeems `candidate` for `peer` wanting to be `role` at `now`: on
    /// success the code is spent and the name it was made for returned. The
    /// caller then puts the peer on the allowlist.
    pub fn redeem(
        &self,
        candidate: &str,
        role: PeerRole,
        peer: &EndpointId,
        now: u64,
    ) -> Result<Pending, RedeemError> {
        let Ok(code) = kodama_proto::pairing::normalize_code(candidate) else {
            return Err(RedeemError::Wrong);
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = self.lock_file()?;
        let mut file = self.read()?;
        // Hash against every entry, no early exit: the time taken does not
        // depend on which entry (if any) matches.
        let mut found = None;
        for (i, e) in file.code.iter().enumerate() {
            let mut salt = [0u8; 32];
            let salt_ok = hex::decode_to_slice(&e.salt, &mut salt).is_ok();
            let stored = blake3::Hash::from_hex(&e.hash).ok();
            let matches = stored.is_some_and(|h| h == hash(&salt, &code));
            if salt_ok && matches && found.is_none() {
                found = Some(i);
            }
        }
        let i = found.ok_or(RedeemError::Wrong)?;
        let e = &mut file.code[i];
        if e.used_at.is_some() {
            return Err(RedeemError::Used {
                role: e.role,
                name: e.name.clone(),
            });
        }
        if e.expires_at <= now {
            return Err(RedeemError::Expired {
                ago: now - e.expires_at,
                role: e.role,
                name: e.name.clone(),
            });
        }
        if e.role != role {
            return Err(RedeemError::WrongRole {
                expected: e.role,
                found: role,
            });
        }
        e.used_at = Some(now);
        e.used_by = Some(peer.to_string());
        let out = Pending {
            role: e.role,
            name: e.name.clone(),
            expires_at: e.expires_at,
        };
        self.write(&file)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Allowlist, PairingStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = Allowlist::new(dir.path().join("allowlist.toml"));
        let store = PairingStore::new(dir.path().join("pairing.toml"));
        (dir, list, store)
    }

    #[test]
    fn a_code_works_once_and_is_stored_only_as_a_hash() {
        let (_d, list, store) = setup();
        let peer = kodama_net::SecretKey::generate().public();
        let code = store
            .create(&list, PeerRole::Camera, "porch", DEFAULT_TTL, 1000)
            .expect("create");
        assert_eq!(code.expires_at, 4600);
        let text = std::fs::read_to_string(store.path()).expect("file");
        assert!(
            !text.contains(&code.code),
            "the code itself is never written"
        );
        assert!(matches!(
            store.redeem("AAAA-AAAA-AAAA", PeerRole::Camera, &peer, 1001),
            Err(RedeemError::Wrong)
        ));
        assert!(matches!(
            store.redeem(&code.code, PeerRole::Viewer, &peer, 1001),
            Err(RedeemError::WrongRole { .. })
        ));
        let typed = kodama_proto::pairing::format_code(&code.code).to_lowercase();
        let got = store
            .redeem(&typed, PeerRole::Camera, &peer, 1002)
            .expect("redeem");
        assert_eq!(got.name, "porch");
        assert!(matches!(
            store.redeem(&code.code, PeerRole::Camera, &peer, 1003),
            Err(RedeemError::Used { .. })
        ));
        assert!(store.pending(1003).expect("pending").is_empty());
    }

    #[test]
    fn expired_replaced_and_cancelled_codes_are_refused() {
        let (_d, list, store) = setup();
        let peer = kodama_net::SecretKey::generate().public();
        let old = store
            .create(&list, PeerRole::Camera, "porch", Duration::from_secs(60), 0)
            .expect("create");
        assert!(matches!(
            store.redeem(&old.code, PeerRole::Camera, &peer, 61),
            Err(RedeemError::Expired { ago: 1, .. })
        ));
        let first = store
            .create(&list, PeerRole::Viewer, "phone", DEFAULT_TTL, 100)
            .expect("create");
        let second = store
            .create(&list, PeerRole::Viewer, "phone", DEFAULT_TTL, 100)
            .expect("replace");
        assert!(matches!(
            store.redeem(&first.code, PeerRole::Viewer, &peer, 101),
            Err(RedeemError::Wrong)
        ));
        assert_eq!(store.pending(101).expect("pending").len(), 1);
        assert_eq!(store.cancel(PeerRole::Viewer, "phone").expect("cancel"), 1);
        assert!(matches!(
            store.redeem(&second.code, PeerRole::Viewer, &peer, 102),
            Err(RedeemError::Wrong)
        ));
    }

    #[test]
    fn a_code_needs_a_free_valid_name() {
        let (_d, list, store) = setup();
        let id = kodama_net::SecretKey::generate().public().to_string();
        list.add(&id, PeerRole::Camera, "porch").expect("allow");
        assert!(matches!(
            store.create(&list, PeerRole::Camera, "porch", DEFAULT_TTL, 0),
            Err(PairingStoreError::Allowlist(
                AllowlistError::NameTaken { .. }
            ))
        ));
        assert!(store
            .create(&list, PeerRole::Camera, "", DEFAULT_TTL, 0)
            .is_err());
    }
}
