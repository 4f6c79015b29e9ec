//! One owner for the modem: nothing the image ships, other than the
//! firmware's supervisor, writes to the SIM7600's AT port or runs a modem
//! manager. (The supervisor's own behaviour against the simulator is in
//! `modem_scenarios.rs` and `modem_start.rs`.)

use std::path::{Path, PathBuf};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn image_files_never_talk_to_the_modem_or_run_a_modem_manager() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "buildroot-overlay/board",
        "buildroot-overlay/configs",
        "buildroot-overlay/package",
        "yocto/meta-kodama",
    ] {
        files_under(&repo.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found the image's files: {}", files.len());
    let mut checked = 0;
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // binary
        };
        checked += 1;
        let lower = text.to_ascii_lowercase();
        for needle in ["at+", "at$", "kodama-modem-at", "/dev/ttyusb2"] {
            assert!(
                !lower.contains(needle),
                "{} mentions {needle:?}: only the firmware's modem supervisor may use the AT port",
                f.display()
            );
        }
        for manager in ["modemmanager", "modem_manager", "modem-manager"] {
            assert!(
                !lower.contains(manager),
                "{} pulls in {manager}",
                f.display()
            );
        }
    }
    assert!(checked > 10);
}
