//! The server under test: the real `kodama-server` binary as a child process
//! (so its CPU time and memory can be read from `/proc/<pid>` apart from the
//! cameras' and viewers'), or, when that binary is not built, the library's
//! [`Server`] inside this process (throughput and latency only).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use kodama_net::EndpointAddr;
use kodama_server::app::Server;
use kodama_server::config::{Config, ServerSection};
use kodama_server::upstream::UpstreamConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long the child may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(15);

/// How long the child may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Where the server runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The `kodama-server` binary at this path, as a child process.
    Child(PathBuf),
    /// [`Server::start`] in this process.
    InProcess,
}

/// `kodama-server` next to this executable (same target dir and profile),
/// if it was built.
pub fn sibling_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join("kodama-server");
    path.is_file().then_some(path)
}

/// A running server.
#[derive(Debug)]
pub enum Running {
    /// A child process.
    Child {
        /// The process.
        child: Box<Child>,
        /// Its id, for `/proc/<pid>`.
        pid: u32,
        /// Where its stderr goes (shown when it fails).
        log: PathBuf,
    },
    /// In this process.
    InProcess(Box<Server>),
}

/// A port on 127.0.0.1 that was free a moment ago (the child binds it; the
/// gap between releasing and rebinding is the only race, and it is tiny).
fn free_udp_port() -> anyhow::Result<u16> {
    let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("probing for a free UDP port")?;
    Ok(sock.local_addr()?.port())
}

impl Running {
    /// Starts a server on 127.0.0.1, offline, keeping its data in `data_dir`
    /// (whose `server.key` and `allowlist.toml` the caller has prepared).
    /// Returns it and the address to dial.
    /// Starts a server on 127.0.0.1, offline, keeping its data in `data_dir`
    /// (whose `server.key` and `allowlist.toml` the caller has prepared),
    /// forwarding every camera to `upstream` (an `[[upstream]]` with its
    /// node id and address) when given. Returns it and the address to dial.
    pub async fn start(
        mode: &Mode,
        data_dir: &Path,
        upstream: Option<&EndpointAddr>,
        cancel: CancellationToken,
    ) -> anyhow::Result<(Self, EndpointAddr)> {
        let upstreams: Vec<UpstreamConfig> = upstream
            .map(|u| UpstreamConfig {
                node_id: Some(u.id.to_string()),
                addrs: u.ip_addrs().copied().collect(),
                ..UpstreamConfig::default()
            })
            .into_iter()
            .collect();
        let config = Config {
            upstreams: upstreams.clone(),
            server: ServerSection {
                name: "kodama-bench".into(),
                data_dir: data_dir.to_owned(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                offline: true,
            },
            ..Config::default()
        };
        let id = kodama_net::endpoint::load_or_create_key(&config.key_path())?.public();
        match mode {
            Mode::InProcess => {
                let server = Server::start(&config, cancel).await?;
                let addr = server
                    .node
                    .endpoint()
                    .bound_sockets()
                    .first()
                    .copied()
                    .context("the server has no bound socket")?;
                Ok((
                    Running::InProcess(Box::new(server)),
                    EndpointAddr::new(id).with_ip_addr(addr),
                ))
            }
            Mode::Child(bin) => {
                let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
                let log = data_dir.join("server.log");
                // The child reads its `[[upstream]]` from a config file.
                let config_file = data_dir.join("kodama-server.toml");
                let mut text = String::new();
                for u in &upstreams {
                    text.push_str(&format!(
                        "[[upstream]]\nnode_id = \"{}\"\naddrs = [{}]\n",
                        u.node_id.as_deref().unwrap_or_default(),
                        u.addrs
                            .iter()
                            .map(|a| format!("\"{a}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                std::fs::write(&config_file, text)
                    .with_context(|| format!("writing {}", config_file.display()))?;
                let stderr = std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?;
                let mut child = Command::new(bin)
                    .arg("--config")
                    .arg(&config_file)
                    .arg("--data-dir")
                    .arg(data_dir)
                    .arg("--listen")
                    .arg(listen.to_string())
                    .arg("--offline")
                    .arg("--api-listen")
                    .arg("127.0.0.1:0")
                    .arg("run")
                    .env("RUST_LOG", "warn,iroh=error,noq=error")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(stderr)
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                let pid = child.id().context("the server exited at once")?;
                let stdout = child.stdout.take().context("no stdout pipe")?;
                let mut lines = BufReader::new(stdout).lines();
                // The server prints "listening on: <addr>" once its endpoint is bound.
                let ready = tokio::time::timeout(START_LIMIT, async {
                    while let Some(line) = lines.next_line().await? {
                        if line.trim_start().starts_with("listening on:") {
                            return Ok(true);
                        }
                    }
                    std::io::Result::Ok(false)
                })
                .await;
                let running = Running::Child {
                    child: Box::new(child),
                    pid,
                    log: log.clone(),
                };
                match ready {
                    Ok(Ok(true)) => {}
                    other => {
                        let tail = std::fs::read_to_string(&log).unwrap_or_default();
                        running.stop().await;
                        bail!("kodama-server did not start ({other:?}); its log:\n{tail}");
                    }
                }
                // Keep draining stdout so the child never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok((running, EndpointAddr::new(id).with_ip_addr(listen)))
            }
        }
    }

    /// The child's pid (`None` in process).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Running::Child { pid, .. } => Some(*pid),
            Running::InProcess(_) => None,
        }
    }

    /// The child's log file.
    pub fn log(&self) -> Option<&Path> {
        match self {
            Running::Child { log, .. } => Some(log),
            Running::InProcess(_) => None,
        }
    }

    /// Stops the server: SIGTERM (its graceful path) and a bounded wait,
    /// then SIGKILL.
    pub async fn stop(self) {
        match self {
            Running::InProcess(server) => server.node.shutdown().await,
            Running::Child { mut child, pid, .. } => {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
                }
                match tokio::time::timeout(STOP_LIMIT, child.wait()).await {
                    Ok(Ok(status)) if !status.success() => {
                        tracing::warn!("kodama-server exited with {status}");
                    }
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(
                            "kodama-server ignored SIGTERM for {STOP_LIMIT:?}; killing it"
                        );
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
}
