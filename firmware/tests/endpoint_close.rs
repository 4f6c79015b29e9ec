//! `kodama-camera run` closes its iroh endpoint on every exit path: an error
//! after the endpoint is bound ends with that error, never with iroh's
//! "Endpoint dropped without calling Endpoint::close. Aborting ungracefully."

use std::process::Command;

#[test]
fn a_start_up_error_after_binding_still_closes_the_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("camera.key");
    // A paired record that cannot be read: the camera fails once its
    // endpoint exists, before any network traffic.
    std::fs::write(dir.path().join("camera.paired.toml"), "this is = [not toml").expect("write");
    let server = kodama_net::SecretKey::generate().public().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kodama-camera"))
        .arg("--key-path")
        .arg(&key)
        .args([
            "--server-id",
            &server,
            "--server-addr",
            "127.0.0.1:9",
            "--offline",
            "run",
        ])
        .env("RUST_LOG", "info")
        .env_remove("KODAMA_CONFIG")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        key.exists(),
        "the endpoint's key was created (it was bound): {stderr}"
    );
    assert!(stderr.contains("paired"), "says what failed: {stderr}");
    assert!(
        !stderr.contains("Endpoint dropped without calling"),
        "{stderr}"
    );
}
