//! The API bearer token: created at first start in `<data>/api-token` with
//! mode 0600, rotated by `kodama-server token rotate`, re-read by the running
//! server when the file changes (so rotation needs no restart).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rand::RngCore;

/// Makes a new random token: 32 bytes from the OS-seeded CSPRNG, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `token` to `path` atomically with mode 0600.
fn write_token(path: &Path, token: &str) -> io::Result<()> {
    kodama_net::durable::write_atomic(path, format!("{token}\n").as_bytes(), 0o600)
}

/// Reads the token at `path`, creating it if missing.
pub fn load_or_create(path: &Path) -> io::Result<String> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) => rotate(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => rotate(path),
        Err(e) => Err(e),
    }
}

/// Replaces the token with a new one and returns it.
pub fn rotate(path: &Path) -> io::Result<String> {
    let token = new_token();
    write_token(path, &token)?;
    Ok(token)
}

/// Compares in time independent of where the strings differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token as the server checks it, reloaded when the file changes.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    cached: Mutex<(String, Option<SystemTime>)>,
}

impl TokenStore {
    /// Loads (creating if needed) the token at `path`.
    pub fn open(path: PathBuf) -> io::Result<TokenStore> {
        let token = load_or_create(&path)?;
        let mtime = fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(TokenStore {
            path,
            cached: Mutex::new((token, mtime)),
        })
    }

    /// Whether `presented` is the current token.
    pub fn check(&self, presented: &str) -> bool {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime != cached.1 {
            if let Ok(s) = fs::read_to_string(&self.path) {
                if !s.trim().is_empty() {
                    *cached = (s.trim().to_owned(), mtime);
                }
            }
        }
        constant_time_eq(cached.0.as_bytes(), presented.as_bytes())
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_private_and_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("api-token");
        let store = TokenStore::open(path.clone()).expect("created");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = load_or_create(&path).expect("read");
        assert_eq!(first.len(), 64);
        assert!(store.check(&first));
        assert!(!store.check("nope"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = rotate(&path).expect("rotated");
        assert_ne!(first, second);
        assert!(store.check(&second));
        assert!(!store.check(&first));
    }
}
