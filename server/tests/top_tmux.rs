//! `kodama-server top` in a real terminal: tmux runs the binary against a
//! server with simulated cameras; the test reads the screen
//! (`capture-pane`) and types (`send-keys`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use kodama_net::SecretKey;

/// One tmux server of our own (its own socket), killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok, "send-keys {keys:?}");
    }

    fn alive(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", "top"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits (bounded) until the screen satisfies `ok`; returns it.
    async fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        for _ in 0..150 {
            screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the dashboard never showed {what}:\n{screen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The line of the camera table row for `name`.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(&format!(" {name} ")) && l.contains("line"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_cameras_and_follows_the_keyboard_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is needed (scripts/install-deps.sh installs it)"
        );
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let server = TestServer::start().await;
    let (alpha, beta) = (SecretKey::generate(), SecretKey::generate());
    server.allow_camera(&alpha, "alpha");
    server.allow_camera(&beta, "beta");
    let mut cam = start_camera("alpha", server.dial_addr(), alpha).await;
    let mut other = start_camera("beta", server.dial_addr(), beta).await;
    cam.wait_streaming(Duration::from_secs(10)).await;
    other.wait_streaming(Duration::from_secs(10)).await;
    let (_viewer, _viewer_ep) = viewer(&server, "alpha").await;

    let tmux = Tmux {
        socket: format!("kodama-top-{}", std::process::id()),
    };
    let command = format!(
        "{} --data-dir {} --api-listen {} top",
        env!("CARGO_BIN_EXE_kodama-server"),
        server.config.server.data_dir.display(),
        server.server.api_addr,
    );
    let ok = tmux
        .cmd()
        .args(["new-session", "-d", "-s", "top", "-x", "140", "-y", "40"])
        .arg(&command)
        .env("TERM", "xterm-256color")
        .status()
        .expect("tmux new-session")
        .success();
    assert!(ok, "tmux starts {command}");

    // Both cameras listed and streaming, alpha with its viewer.
    let screen = tmux
        .wait_for("both cameras online with a frame rate", |s| {
            ["alpha", "beta"].iter().all(|name| {
                row(s, name).is_some_and(|r| r.contains("online") && !r.contains(" 0.0 "))
            })
        })
        .await;
    let alpha_row = row(&screen, "alpha").expect("alpha row");
    assert!(
        alpha_row.contains('▶'),
        "alpha is selected first:\n{screen}"
    );
    assert!(alpha_row.contains(" 1 "), "one viewer:\n{screen}");
    assert!(alpha_row.contains("rec"), "recording:\n{screen}");
    assert!(screen.contains("cameras 2/2 online"), "{screen}");
    assert!(screen.contains("events and errors"), "{screen}");
    assert!(
        screen.contains("INFO  viewer watching"),
        "recent events:\n{screen}"
    );

    // ↓ selects beta: the table marker and the detail pane follow.
    tmux.keys(&["Down"]);
    tmux.wait_for("beta selected", |s| {
        row(s, "beta").is_some_and(|r| r.contains('▶')) && s.lines().any(|l| l.contains(" beta · "))
    })
    .await;
    tmux.keys(&["Up"]);
    tmux.wait_for("alpha selected again", |s| {
        row(s, "alpha").is_some_and(|r| r.contains('▶'))
    })
    .await;

    // A camera leaving shows up as offline.
    other.stop();
    cam.stop();
    tmux.wait_for("both offline", |s| {
        row(s, "alpha").is_some_and(|r| r.contains("offline"))
            && row(s, "beta").is_some_and(|r| r.contains("offline"))
    })
    .await;

    // q quits: the terminal's program ends and tmux closes the session.
    tmux.keys(&["q"]);
    for _ in 0..50 {
        if !tmux.alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!tmux.alive(), "top quits on q:\n{}", tmux.screen());
    server.stop().await;
}
