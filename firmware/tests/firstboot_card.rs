//! The image's boot steps on a simulated card: a temporary "boot partition"
//! and "data partition" directory, the way `/boot` and `/data` look on the Pi.

use std::fs;
use std::path::Path;

use kodama_firmware::config::{Config, ConfigError};
use kodama_firmware::firstboot::{
    self, BlinkCode, BootDirs, FirstBootError, KEY_FILE, NODE_ID_FILE, STATUS_FILE,
};
use proptest::prelude::*;

fn card() -> (tempfile::TempDir, BootDirs) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs = BootDirs {
        boot: tmp.path().join("boot"),
        data: tmp.path().join("data"),
    };
    fs::create_dir_all(&dirs.boot).expect("boot dir");
    fs::create_dir_all(&dirs.data).expect("data dir");
    (tmp, dirs)
}

fn resolve(path: &Path) -> Result<Config, ConfigError> {
    let c = Config::load(path)?;
    c.validate()?;
    Ok(c)
}

fn valid_toml() -> String {
    let server = kodama_net::SecretKey::generate().public();
    format!(
        "[camera]\nname = \"porch\"\n[server]\nnode_id = \"{server}\"\naddrs = [\"10.0.2.2:7070\"]\n[network]\noffline = true\n"
    )
}

fn read(dirs: &BootDirs, name: &str) -> String {
    fs::read_to_string(dirs.boot.join(name)).expect(name)
}

#[test]
fn first_boot_creates_key_node_id_and_ok_status() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), valid_toml()).expect("write config");

    let p = firstboot::prepare(&dirs, resolve).expect("prepare");
    assert!(p.first_boot);
    assert_eq!(p.config.camera.name, "porch");
    // The running config uses the key on the data partition.
    assert_eq!(p.config.camera.key_path, dirs.data.join(KEY_FILE));
    let key = fs::read(dirs.data.join(KEY_FILE)).expect("key");
    assert_eq!(key.len(), 32);
    let expected_id = kodama_net::SecretKey::from_bytes(&key.try_into().expect("32"))
        .public()
        .to_string();
    assert_eq!(p.node_id, expected_id);
    assert_eq!(read(&dirs, NODE_ID_FILE).trim(), expected_id);
    let status = read(&dirs, STATUS_FILE);
    assert!(status.starts_with("Kodama camera: OK"), "{status}");
    assert!(
        status.contains(&format!("kodama-server allow add {expected_id}")),
        "{status}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dirs.data.join(KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key must be private");
    }
    // No temporary files left behind.
    for dir in [&dirs.boot, &dirs.data.join("kodama")] {
        for e in fs::read_dir(dir).expect("ls") {
            let name = e.expect("entry").file_name();
            assert!(
                !name.to_string_lossy().ends_with(".tmp"),
                "{name:?} left in {dir:?}"
            );
        }
    }
}

#[test]
fn later_boots_keep_the_identity_and_do_not_rewrite_the_boot_partition() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), valid_toml()).expect("write config");
    let first = firstboot::prepare(&dirs, resolve).expect("first");
    let status_before = fs::metadata(dirs.boot.join(STATUS_FILE)).expect("status");
    let id_before = fs::metadata(dirs.boot.join(NODE_ID_FILE)).expect("id");

    let second = firstboot::prepare(&dirs, resolve).expect("second");
    assert!(!second.first_boot);
    assert_eq!(first.node_id, second.node_id);
    // Same content: the FAT partition was not written (same inode, same mtime).
    for (name, before) in [(STATUS_FILE, status_before), (NODE_ID_FILE, id_before)] {
        let after = fs::metadata(dirs.boot.join(name)).expect(name);
        assert_eq!(
            before.modified().expect("mtime"),
            after.modified().expect("mtime"),
            "{name}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(before.ino(), after.ino(), "{name} was replaced");
        }
    }
}

#[test]
fn missing_config_blinks_two_and_still_publishes_the_node_id() {
    let (_tmp, dirs) = card();
    let err = firstboot::prepare(&dirs, resolve).expect_err("no config");
    assert!(matches!(err, FirstBootError::ConfigMissing { .. }), "{err}");
    assert_eq!(err.blink_code(), BlinkCode::ConfigMissing);
    assert_eq!(err.blink_code().flashes(), 2);
    let status = read(&dirs, STATUS_FILE);
    assert!(status.starts_with("Kodama camera: ERROR"), "{status}");
    assert!(status.contains("kodama.toml not found"), "{status}");
    assert!(status.contains("blinks 2 times"), "{status}");
    let id = read(&dirs, NODE_ID_FILE);
    assert!(status.contains(id.trim()), "status names the node id");
}

#[test]
fn invalid_value_names_the_field_in_the_status_file() {
    let (_tmp, dirs) = card();
    fs::write(
        dirs.config_path(),
        format!("{}[video]\nfps = 0\n", valid_toml()),
    )
    .expect("write");
    let err = firstboot::prepare(&dirs, resolve).expect_err("fps 0");
    assert_eq!(err.blink_code(), BlinkCode::ConfigInvalid);
    let status = read(&dirs, STATUS_FILE);
    assert!(status.contains("video.fps"), "{status}");
    assert!(status.contains("blinks 3 times"), "{status}");

    // The user fixes the file: the next boot reports OK.
    fs::write(dirs.config_path(), valid_toml()).expect("fix");
    firstboot::prepare(&dirs, resolve).expect("fixed");
    assert!(read(&dirs, STATUS_FILE).starts_with("Kodama camera: OK"));
}

#[test]
fn typo_in_a_key_is_reported() {
    let (_tmp, dirs) = card();
    fs::write(
        dirs.config_path(),
        format!("{}[video]\nfsp = 30\n", valid_toml()),
    )
    .expect("write");
    let err = firstboot::prepare(&dirs, resolve).expect_err("typo");
    assert!(matches!(err, FirstBootError::Config(_)), "{err}");
    assert!(read(&dirs, STATUS_FILE).contains("fsp"));
}

#[test]
fn oversized_and_binary_files_get_their_own_messages() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), vec![b'#'; 70 * 1024]).expect("write");
    let err = firstboot::prepare(&dirs, resolve).expect_err("too large");
    assert!(
        matches!(err, FirstBootError::ConfigTooLarge { len: 71680, .. }),
        "{err}"
    );
    assert_eq!(err.blink_code(), BlinkCode::ConfigInvalid);

    fs::write(dirs.config_path(), [0xff, 0xfe, b'[', 0x00]).expect("write");
    let err = firstboot::prepare(&dirs, resolve).expect_err("not text");
    assert!(matches!(err, FirstBootError::ConfigNotText { .. }), "{err}");
    assert!(read(&dirs, STATUS_FILE).contains("UTF-8"));
}

#[test]
fn torn_key_is_reported_not_replaced() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), valid_toml()).expect("write");
    fs::create_dir_all(dirs.data.join("kodama")).expect("mkdir");
    fs::write(dirs.data.join(KEY_FILE), [7u8; 5]).expect("torn key");
    let err = firstboot::prepare(&dirs, resolve).expect_err("bad key");
    assert!(
        matches!(err, FirstBootError::KeyCorrupt { len: 5, .. }),
        "{err}"
    );
    assert_eq!(err.blink_code().flashes(), 5);
    // A damaged identity is never silently swapped for a new one: the server
    // would no longer recognise the camera.
    assert_eq!(fs::read(dirs.data.join(KEY_FILE)).expect("key"), [7u8; 5]);
}

#[test]
fn leftover_temporary_key_from_a_power_cut_is_ignored() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), valid_toml()).expect("write");
    fs::create_dir_all(dirs.data.join("kodama")).expect("mkdir");
    // A cut before the rename leaves only the temporary file.
    fs::write(dirs.data.join(format!("{KEY_FILE}.tmp")), [1u8; 3]).expect("tmp");
    let p = firstboot::prepare(&dirs, resolve).expect("prepare");
    assert!(p.first_boot);
    assert_eq!(fs::read(dirs.data.join(KEY_FILE)).expect("key").len(), 32);
}

#[test]
fn unusable_data_partition_blinks_four() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), valid_toml()).expect("write");
    // The data "partition" is a file: nothing can be created under it.
    fs::remove_dir(&dirs.data).expect("rmdir");
    fs::write(&dirs.data, b"not a directory").expect("file");
    let err = firstboot::prepare(&dirs, resolve).expect_err("storage");
    assert!(matches!(err, FirstBootError::Storage { .. }), "{err}");
    assert_eq!(err.blink_code(), BlinkCode::Storage);
    assert!(read(&dirs, STATUS_FILE).contains("blinks 4 times"));
}

#[test]
fn unwritable_boot_partition_does_not_stop_a_good_config() {
    let (_tmp, dirs) = card();
    fs::write(dirs.config_path(), valid_toml()).expect("write");
    // A directory where the status file goes: the write fails, the camera runs.
    fs::create_dir(dirs.boot.join(STATUS_FILE)).expect("mkdir");
    firstboot::prepare(&dirs, resolve).expect("runs without a status file");
}

#[test]
fn write_if_changed_reports_whether_it_wrote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("f.txt");
    assert!(firstboot::write_if_changed(&p, b"a").expect("write"));
    assert!(!firstboot::write_if_changed(&p, b"a").expect("same"));
    assert!(firstboot::write_if_changed(&p, b"b").expect("changed"));
    assert_eq!(fs::read(&p).expect("read"), b"b");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever bytes the user's card holds, the boot steps end in a typed
    /// result and a status file, never a panic.
    #[test]
    fn any_config_bytes_give_a_typed_result(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_tmp, dirs) = card();
        fs::write(dirs.config_path(), &bytes).expect("write");
        let result = firstboot::prepare(&dirs, resolve);
        let status = read(&dirs, STATUS_FILE);
        match result {
            Ok(_) => prop_assert!(status.starts_with("Kodama camera: OK")),
            Err(e) => {
                prop_assert!(status.starts_with("Kodama camera: ERROR"));
                prop_assert!(matches!(e.blink_code(), BlinkCode::ConfigInvalid));
            }
        }
    }
}
