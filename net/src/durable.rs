//! Writing small files so that a crash or power cut leaves either the old
//! contents or the new, never a torn file — the one implementation of
//! write-temp / fsync / rename for both binaries (keys, tokens, allow and
//! pairing lists, accounts, first-boot configuration).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary name next to `path`, unique to this process and call, so
/// two writers (processes or threads) never share one.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `contents` to a new temporary file beside `path` with `mode`
/// (Unix permissions) and syncs it; returns its path.
fn write_temp(path: &Path, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Makes the entries of `dir` durable (how POSIX makes a rename or link
/// survive a power cut). File systems that cannot open or sync a directory
/// (FAT, whose boot partition is mounted `sync`) are accepted silently.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let Ok(d) = File::open(dir) else {
        return Ok(());
    };
    match d.sync_all() {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Replaces `path` with `contents` atomically and durably: temporary file,
/// `fsync`, `rename`, `fsync` of the directory. `mode` applies to the new
/// file (e.g. `0o600` for secrets).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
}

/// Creates `path` with `contents` unless it already exists, atomically and
/// race-safely: the contents are written and synced under a temporary name
/// and then hard-linked into place, which fails if `path` exists. So the
/// file is never seen half-written, and when several processes race exactly
/// one wins. Returns whether this call created it.
pub fn create_once(path: &Path, contents: &[u8], mode: u32) -> io::Result<bool> {
    let tmp = write_temp(path, contents, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(parent_dir(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/token");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("token")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn create_once_has_exactly_one_winner_and_no_torn_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let winners: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || create_once(path, &[i; 32], 0o600).expect("create"))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1);
        let contents = fs::read(&path).expect("read");
        assert_eq!(contents.len(), 32);
        assert!(contents.iter().all(|b| *b == contents[0]));
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
