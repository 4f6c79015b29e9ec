//! Kodama's network test bed (test equipment; never in the camera image).
//!
//! [`Bed::up`] builds three network namespaces joined by veth pairs:
//!
//! ```text
//!   camera ns                     router ns                        server ns
//!   wifi0 10.77.1.2/24 ──────── rw 10.77.1.1   (relay: delay)
//!   cell0 10.77.2.2/24 ──────── rc 10.77.2.1   (relay: delay)   rs 10.77.9.1 ──── srv0 10.77.9.2/24
//! ```
//!
//! * The camera has two uplinks, each its own subnet, and source policy
//!   routing exactly as the image's network script sets it up: traffic from
//!   10.77.1.2 leaves through wifi0 (`ip rule from … table 101`), from
//!   10.77.2.2 through cell0 (table 102); the main table prefers Wi-Fi.
//! * Impairments per [`Profile`]: rate caps with `tbf` on both ends of each
//!   uplink, random loss with nftables (`numgen random mod 100 < N drop`),
//!   delay and jitter with the userspace [`relay`] in the router namespace
//!   (this kernel has no `sch_netem`). UDP to the server's port is
//!   redirected into the relay, which is invisible to both peers.
//! * Two ways to break a link ([`Cut`]): `ip link set wifi0 down` (the
//!   kernel announces it) and a silent nftables black hole (nothing does).
//! * Processes run inside namespaces with `ip netns exec` ([`Bed::spawn`]);
//!   in-process code can run there on a thread of its own ([`in_namespace`]).
//!
//! Every bed has unique namespace names, everything is removed on drop (also
//! when a test panics), every loop here is bounded, and it touches only its
//! own namespaces. It needs root: [`root_or_skip`] says so, skipping only
//! outside CI.

pub mod relay;
pub mod rig;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use relay::Delay;

/// Why the bed could not be built or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BedError {
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// A command could not be started (tool missing?).
    #[error("cannot run `{command}`: {source} (needs iproute2, nftables; scripts/install-deps.sh installs them)")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else from the OS.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether this process may build namespaces. Outside CI a test without
/// root prints why and returns false (skip); under `CI=true` it panics:
/// CI runs as root, so a skip there would hide a failure.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "tc", "nft"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if root && tools {
        return true;
    }
    let why = if root {
        "needs ip, tc and nft (apt-get install iproute2 nftables; scripts/install-deps.sh does it)"
    } else {
        "needs root for network namespaces (run: sudo -E cargo test -p kodama-testbed)"
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} {why}; CI runs as root with the tools installed, so this is a failure"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// A link's character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Added delay and jitter.
    pub delay: Delay,
    /// Rate cap, kbit/s, each direction.
    pub rate_kbit: u32,
    /// Random loss, percent, each direction.
    pub loss_percent: u8,
}

impl Profile {
    /// Home Wi-Fi: 20 ms, 20 Mbit/s, no loss.
    pub const WIFI: Profile = Profile {
        delay: Delay {
            rtt: Duration::from_millis(20),
            jitter: Duration::ZERO,
        },
        rate_kbit: 20_000,
        loss_percent: 0,
    };
    /// Cellular: 80 ± 30 ms, 2 Mbit/s, 1 % loss.
    pub const CELL: Profile = Profile {
        delay: Delay {
            rtt: Duration::from_millis(80),
            jitter: Duration::from_millis(30),
        },
        rate_kbit: 2_000,
        loss_percent: 1,
    };
}

/// One of the camera's uplinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uplink {
    /// `wifi0`, 10.77.1.2.
    Wifi,
    /// `cell0`, 10.77.2.2.
    Cell,
}

impl Uplink {
    /// The camera-side interface.
    pub fn interface(self) -> &'static str {
        match self {
            Uplink::Wifi => "wifi0",
            Uplink::Cell => "cell0",
        }
    }

    fn router_interface(self) -> &'static str {
        match self {
            Uplink::Wifi => "rw",
            Uplink::Cell => "rc",
        }
    }

    fn subnet(self) -> u8 {
        match self {
            Uplink::Wifi => 1,
            Uplink::Cell => 2,
        }
    }

    /// The camera's address on this uplink.
    pub fn camera_addr(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet(), 2)
    }

    fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet(), 1)
    }

    fn table(self) -> u32 {
        100 + u32::from(self.subnet())
    }

    fn metric(self) -> u32 {
        match self {
            Uplink::Wifi => 10,
            Uplink::Cell => 100,
        }
    }

    /// Both, Wi-Fi first.
    pub const ALL: [Uplink; 2] = [Uplink::Wifi, Uplink::Cell];
}

/// How a link is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// `ip link set DEV down`: the kernel announces it.
    LinkDown,
    /// Every packet dropped silently (nftables), in both directions.
    Blackhole,
}

/// Which namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// The camera's.
    Camera,
    /// The router's (relays, cuts, loss).
    Router,
    /// The server's.
    Server,
}

/// The server's address in the server namespace.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 2);

const ROUTER_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);

/// UDP port the relays listen on in the router (one per uplink).
fn relay_port(uplink: Uplink) -> u16 {
    17_000 + u16::from(uplink.subnet())
}

/// A built test bed. Dropping it stops its relays and processes and
/// deletes its namespaces.
#[derive(Debug)]
pub struct Bed {
    /// Unique tag in every namespace name.
    pub tag: String,
    /// The server's UDP port that is relayed.
    pub server_port: u16,
    relays: CancellationToken,
    relay_threads: Vec<std::thread::JoinHandle<()>>,
    created: Vec<String>,
}

static NEXT_BED: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<String, BedError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BedError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BedError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Bed {
    /// Builds the namespaces, links, routes, impairments and relays;
    /// `server_port` is the UDP port the server will listen on.
    pub fn up(wifi: Profile, cell: Profile, server_port: u16) -> Result<Bed, BedError> {
        let n = NEXT_BED.fetch_add(1, Ordering::Relaxed);
        let tag = format!("kb{}-{n}", std::process::id());
        let mut bed = Bed {
            tag,
            server_port,
            relays: CancellationToken::new(),
            relay_threads: Vec::new(),
            created: Vec::new(),
        };
        // Any failure from here drops `bed`, which removes what was built.
        bed.build(wifi, cell)?;
        Ok(bed)
    }

    /// The name of namespace `ns`.
    pub fn ns(&self, ns: Ns) -> String {
        let suffix = match ns {
            Ns::Camera => "cam",
            Ns::Router => "rtr",
            Ns::Server => "srv",
        };
        format!("{}-{suffix}", self.tag)
    }

    fn ip(&self, ns: Ns, args: &[&str]) -> Result<String, BedError> {
        let name = self.ns(ns);
        let mut all = vec!["ip", "-n", name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    fn exec(&self, ns: Ns, args: &[&str]) -> Result<String, BedError> {
        let name = self.ns(ns);
        let mut all = vec!["ip", "netns", "exec", name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    fn nft(&self, rule: &str) -> Result<String, BedError> {
        self.exec(Ns::Router, &["nft", rule])
    }

    fn build(&mut self, wifi: Profile, cell: Profile) -> Result<(), BedError> {
        for ns in [Ns::Camera, Ns::Router, Ns::Server] {
            let name = self.ns(ns);
            run(&["ip", "netns", "add", &name])?;
            self.created.push(name);
            self.ip(ns, &["link", "set", "lo", "up"])?;
        }
        let rtr = self.ns(Ns::Router);
        let srv = self.ns(Ns::Server);
        for uplink in Uplink::ALL {
            let (dev, peer) = (uplink.interface(), uplink.router_interface());
            self.ip(
                Ns::Camera,
                &[
                    "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", &rtr,
                ],
            )?;
            let cam_addr = format!("{}/24", uplink.camera_addr());
            let gw_addr = format!("{}/24", uplink.gateway());
            self.ip(Ns::Camera, &["addr", "add", &cam_addr, "dev", dev])?;
            self.ip(Ns::Router, &["addr", "add", &gw_addr, "dev", peer])?;
            self.ip(Ns::Router, &["link", "set", peer, "up"])?;
            self.ip(Ns::Camera, &["link", "set", dev, "up"])?;
            self.routes(uplink)?;
            let from = uplink.camera_addr().to_string();
            let table = uplink.table().to_string();
            self.ip(Ns::Camera, &["rule", "add", "from", &from, "table", &table])?;
        }
        self.ip(
            Ns::Router,
            &[
                "link", "add", "rs", "type", "veth", "peer", "name", "srv0", "netns", &srv,
            ],
        )?;
        self.ip(Ns::Router, &["addr", "add", "10.77.9.1/24", "dev", "rs"])?;
        self.ip(Ns::Router, &["link", "set", "rs", "up"])?;
        self.ip(
            Ns::Server,
            &["addr", "add", &format!("{SERVER_ADDR}/24"), "dev", "srv0"],
        )?;
        self.ip(Ns::Server, &["link", "set", "srv0", "up"])?;
        self.ip(
            Ns::Server,
            &[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_SERVER_SIDE.to_string(),
            ],
        )?;
        self.exec(Ns::Router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

        // nftables: loss, cuts (empty chains until a cut), relay redirects.
        self.nft("add table inet kodama")?;
        for uplink in Uplink::ALL {
            let peer = uplink.router_interface();
            self.nft(&format!(
                "add chain inet kodama cut_in_{peer} {{ type filter hook prerouting priority -400; }}"
            ))?;
            self.nft(&format!(
                "add chain inet kodama cut_out_{peer} {{ type filter hook postrouting priority 400; }}"
            ))?;
        }
        self.nft("add chain inet kodama loss_in { type filter hook prerouting priority -300; }")?;
        self.nft("add chain inet kodama loss_out { type filter hook postrouting priority 300; }")?;
        self.nft("add table ip kodama_nat")?;
        self.nft("add chain ip kodama_nat pre { type nat hook prerouting priority -100; }")?;
        for (uplink, profile) in [(Uplink::Wifi, wifi), (Uplink::Cell, cell)] {
            let peer = uplink.router_interface();
            if profile.loss_percent > 0 {
                let p = profile.loss_percent;
                self.nft(&format!(
                    "add rule inet kodama loss_in iifname \"{peer}\" numgen random mod 100 < {p} drop"
                ))?;
                self.nft(&format!(
                    "add rule inet kodama loss_out oifname \"{peer}\" numgen random mod 100 < {p} drop"
                ))?;
            }
            self.nft(&format!(
                "add rule ip kodama_nat pre iifname \"{peer}\" udp dport {} redirect to :{}",
                self.server_port,
                relay_port(uplink)
            ))?;
            self.rate(uplink, profile.rate_kbit)?;
            self.start_relay(uplink, profile.delay)?;
        }
        Ok(())
    }

    /// Routes of an uplink (re-added when a downed link comes back, as the
    /// image's DHCP script does on a new lease).
    fn routes(&self, uplink: Uplink) -> Result<(), BedError> {
        let (dev, gw) = (uplink.interface(), uplink.gateway().to_string());
        let table = uplink.table().to_string();
        let metric = uplink.metric().to_string();
        self.ip(
            Ns::Camera,
            &[
                "route", "replace", "default", "via", &gw, "dev", dev, "table", &table,
            ],
        )?;
        self.ip(
            Ns::Camera,
            &[
                "route", "replace", "default", "via", &gw, "dev", dev, "metric", &metric,
            ],
        )?;
        Ok(())
    }

    /// Caps `uplink` at `kbit` kbit/s each way (`tbf`), replacing its
    /// profile's rate until called again: a congested link.
    pub fn cap(&self, uplink: Uplink, kbit: u32) -> Result<(), BedError> {
        self.rate(uplink, kbit)
    }

    fn rate(&self, uplink: Uplink, kbit: u32) -> Result<(), BedError> {
        // Burst: 10 ms at the rate, at least a few full-size packets.
        let burst = (kbit / 8 * 10).max(6_000).to_string();
        let rate = format!("{kbit}kbit");
        for (ns, dev) in [
            (Ns::Camera, uplink.interface()),
            (Ns::Router, uplink.router_interface()),
        ] {
            self.exec(
                ns,
                &[
                    "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                    &burst, "latency", "200ms",
                ],
            )?;
        }
        Ok(())
    }

    fn start_relay(&mut self, uplink: Uplink, delay: Delay) -> Result<(), BedError> {
        let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, relay_port(uplink)));
        let target = SocketAddr::V4(SocketAddrV4::new(SERVER_ADDR, self.server_port));
        let stop = self.relays.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = in_namespace(&self.ns(Ns::Router), move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::UdpSocket::bind(listen).await {
                    Ok(front) => {
                        let _ = ready_tx.send(Ok(()));
                        relay::run(front, target, delay, stop).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        })?;
        self.relay_threads.push(thread);
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BedError::Io {
                what: format!("relay for {uplink:?}"),
                source: std::io::Error::other(e),
            }),
            Err(_) => Err(BedError::Io {
                what: format!("relay for {uplink:?}"),
                source: std::io::Error::other("did not start within 5 s"),
            }),
        }
    }

    /// Breaks `uplink` the way `how` says.
    pub fn cut(&self, uplink: Uplink, how: Cut) -> Result<(), BedError> {
        match how {
            Cut::LinkDown => {
                self.ip(Ns::Camera, &["link", "set", uplink.interface(), "down"])?;
            }
            Cut::Blackhole => {
                let peer = uplink.router_interface();
                self.nft(&format!(
                    "add rule inet kodama cut_in_{peer} iifname \"{peer}\" drop"
                ))?;
                self.nft(&format!(
                    "add rule inet kodama cut_out_{peer} oifname \"{peer}\" drop"
                ))?;
            }
        }
        Ok(())
    }

    /// Mends what [`Bed::cut`] broke.
    pub fn restore(&self, uplink: Uplink, how: Cut) -> Result<(), BedError> {
        match how {
            Cut::LinkDown => {
                self.ip(Ns::Camera, &["link", "set", uplink.interface(), "up"])?;
                self.routes(uplink)?;
            }
            Cut::Blackhole => {
                let peer = uplink.router_interface();
                self.nft(&format!("flush chain inet kodama cut_in_{peer}"))?;
                self.nft(&format!("flush chain inet kodama cut_out_{peer}"))?;
            }
        }
        Ok(())
    }

    /// Bytes (sent, received) so far on the camera's interface of `uplink`.
    pub fn counters(&self, uplink: Uplink) -> Result<(u64, u64), BedError> {
        let dev = uplink.interface();
        let read = |what: &str| -> Result<u64, BedError> {
            let path = format!("/sys/class/net/{dev}/statistics/{what}");
            let text = self.exec(Ns::Camera, &["cat", &path])?;
            text.trim().parse().map_err(|_| BedError::Command {
                command: format!("cat {path}"),
                stderr: format!("not a number: {text:?}"),
            })
        };
        Ok((read("tx_bytes")?, read("rx_bytes")?))
    }

    /// Starts `program` inside namespace `ns`, output to `log`.
    pub fn spawn(
        &self,
        ns: Ns,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<NsChild, BedError> {
        let file = std::fs::File::create(log).map_err(|source| BedError::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let err = file.try_clone().map_err(|source| BedError::Io {
            what: "log file".into(),
            source,
        })?;
        let name = self.ns(ns);
        let child = Command::new("ip")
            .args(["netns", "exec", &name])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| BedError::Spawn {
                command: format!("ip netns exec {name} {}", program.display()),
                source,
            })?;
        Ok(NsChild {
            child: Some(child),
            log: log.to_owned(),
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.relays.cancel();
        for t in self.relay_threads.drain(..) {
            let _ = t.join();
        }
        for name in self.created.drain(..).rev() {
            if let Err(e) = run(&["ip", "netns", "del", &name]) {
                eprintln!("test bed cleanup: {e}");
            }
        }
    }
}

/// A process in a namespace; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct NsChild {
    child: Option<Child>,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl NsChild {
    /// Sends SIGTERM and waits (bounded) for it to exit; SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // `ip netns exec` execs the program, so this pid is the program.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills it at once (SIGKILL): a crash, as far as its peers can tell.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` on a new thread that has joined network namespace `name`
/// (sockets it creates live there, whichever thread uses them later).
pub fn in_namespace<F>(name: &str, f: F) -> Result<std::thread::JoinHandle<()>, BedError>
where
    F: FnOnce() + Send + 'static,
{
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|source| BedError::Io {
        what: format!("opening {path}"),
        source,
    })?;
    std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("cannot enter network namespace: {e}");
                return;
            }
            f();
        })
        .map_err(|source| BedError::Io {
            what: "spawning a namespace thread".into(),
            source,
        })
}

/// The workspace's `kodama-server` and `kodama-camera`, brought up to date.
/// `cargo test --workspace` has already built both (the server's and the
/// firmware's integration tests need them), so when they are newer than
/// every source file they are used as they are; otherwise they are built
/// with the synthetic source (test equipment: the namespaces have no camera).
/// Building from inside a test run with other packages or features than
/// the run's own would recompile much of the dependency tree.
pub fn workspace_binaries() -> Result<(PathBuf, PathBuf), BedError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dir = target.join("debug");
    let bins = (dir.join("kodama-server"), dir.join("kodama-camera"));
    if binaries_are_fresh(&root, &[&bins.0, &bins.1]) {
        return Ok(bins);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Two builds: `--features kodama-firmware/synthetic` beside another `-p`
    // would name the server's dependency, not the camera package.
    let builds: [&[&str]; 2] = [
        &["build", "--quiet", "-p", "kodama-server", "--bins"],
        // The camera streams the test pattern (test equipment; these
        // namespaces have no camera).
        &[
            "build",
            "--quiet",
            "-p",
            "kodama-firmware",
            "--bins",
            "--features",
            "synthetic",
        ],
    ];
    for args in builds {
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(&root)
            .status()
            .map_err(|source| BedError::Spawn {
                command: format!("{cargo} {}", args.join(" ")),
                source,
            })?;
        if !status.success() {
            return Err(BedError::Command {
                command: format!("{cargo} {}", args.join(" ")),
                stderr: format!("exit status {status}"),
            });
        }
    }
    Ok(bins)
}

/// Whether every binary in `bins` exists and is newer than every Rust
/// source and manifest of the crates it is built from.
fn binaries_are_fresh(root: &Path, bins: &[&Path]) -> bool {
    let built = bins
        .iter()
        .map(|b| std::fs::metadata(b).and_then(|m| m.modified()).ok())
        .collect::<Option<Vec<_>>>()
        .and_then(|times| times.into_iter().min());
    let Some(built) = built else {
        return false;
    };
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    // Bounded walk: the crates' source trees only.
    let mut stack: Vec<PathBuf> = ["proto", "media", "net", "firmware", "server", "sim"]
        .iter()
        .map(|c| root.join(c))
        .chain([root.join("Cargo.lock")])
        .collect();
    let mut visited = 0usize;
    while let Some(path) = stack.pop() {
        visited += 1;
        if visited > 20_000 {
            return false;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "node_modules")
            {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "toml" || e == "lock" || e == "sql")
        {
            if let Ok(t) = meta.modified() {
                newest = newest.max(t);
            }
        }
    }
    built >= newest
}
