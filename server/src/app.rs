//! Wires the server together and runs it until cancelled; also the
//! subcommands that need the server's data directory (`allow`, `view`, `id`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_proto::{CameraSelector, Role};
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, PeerRole};
use crate::cli::{AllowAction, CameraAction, PairCodeArgs, ViewArgs, ViewerAction};
use crate::config::Config;
use crate::hub::Hub;
use crate::pair_session::PairingService;
use crate::pairing::PairingStore;
use crate::ratelimit::Limits;
use crate::recorder::{Recorder, SystemClock};
use crate::sessions::Sessions;
use crate::transport::{NodeOptions, ServerNode};
use crate::viewer::{self, ViewOptions, ViewerClient};
use crate::{api, feed, web};

/// A running server (for tests and the demo).
#[derive(Debug)]
pub struct Server {
    /// The iroh node.
    pub node: ServerNode,
    /// The live hub.
    pub hub: Arc<Hub>,
    /// The allowlist.
    pub allowlist: Arc<Allowlist>,
    /// Live sessions (revocation, commands).
    pub sessions: Arc<Sessions>,
    /// Pairing codes.
    pub pairing: Arc<PairingService>,
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// The API token file.
    pub api_token: std::path::PathBuf,
    /// The web app's address (`http://…` or `https://…`).
    pub web_url: String,
    /// The one-time first-run setup link, while no web account exists.
    pub setup_link: Option<String>,
    recorder: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<()>,
    /// Forwarders to `[[upstream]]` servers.
    forwarders: tokio::task::JoinSet<()>,
    cancel: CancellationToken,
}

impl Server {
    /// Starts everything in `config`.
    pub async fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
        let secret = endpoint::load_or_create_key(&config.key_path())?;
        let allowlist = Arc::new(Allowlist::new(config.allowlist_path()));
        allowlist.list().context("the allowlist is unreadable")?;

        // The recorder reconciles index and files before anything is accepted.
        let mut recording = config.recording.clone();
        recording.data_dir = config.server.data_dir.clone();
        let mut recorder = Recorder::open(recording, Arc::new(SystemClock::new()))
            .context("opening the recordings")?;
        let (feed, feed_rx) = feed::channel("recorder", RECORDER_QUEUE);
        let recorder_feed = feed.clone();
        let (upstream_feeds, upstreams) = crate::upstream::feeds(&config.upstreams);
        let hub = Hub::new(std::iter::once(feed).chain(upstream_feeds).collect());
        recorder.set_acks(hub.acks().clone());
        know_cameras(&hub, &recorder, &allowlist);

        // Update jobs are kept in the index beside the recordings, so they
        // carry on after a restart.
        let update_jobs = crate::db::Db::open(&crate::recorder::db_path(&config.server.data_dir))
            .context("opening the index for update jobs")?;
        let sessions = Sessions::new(
            crate::updates::Updates::open(config.server.data_dir.join("updates"), update_jobs)
                .context("loading update jobs")?,
        );
        let pairing = Arc::new(PairingService::new(
            PairingStore::new(config.pairing_path()),
            allowlist.clone(),
            Limits::default(),
        ));
        let live: Arc<dyn api::LiveStatus> = Arc::new(LiveView {
            hub: hub.clone(),
            allowlist: allowlist.clone(),
            sessions: sessions.clone(),
            snapshots: config.server.data_dir.join("snapshots"),
        });
        let api_state = api::ApiState::open(
            &config.server.data_dir,
            &config.api,
            live,
            recorder.status(),
        )
        .context("opening the HTTP API")?;
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {}", config.api.listen))?;
        let api_addr = listener.local_addr()?;
        let api_token = api_state.token_path().to_owned();
        let tls = match (&config.api.tls_cert, &config.api.tls_key) {
            (Some(cert), Some(key)) => Some(web::tls::acceptor(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("api.tls_cert and api.tls_key go together: set both or neither"),
        };
        let web_url = format!(
            "{}://{}",
            if tls.is_some() { "https" } else { "http" },
            api_addr
        );
        let setup_link = api_state
            .accounts()
            .begin_setup(&web_url)
            .context("preparing the web app's first-run setup")?;
        let metrics = Arc::new(crate::metrics::Sources {
            name: config.server.name.clone(),
            hub: hub.clone(),
            allowlist: allowlist.clone(),
            recorder: recorder.stats(),
            recording: recorder.status(),
            recorder_feed,
            data_dir: config.server.data_dir.clone(),
            started: std::time::Instant::now(),
            config: config.metrics.clone(),
        });
        let metrics_router = crate::metrics::router(metrics, api_state.clone());
        let own = cancel.child_token();
        let recorder = tokio::spawn(recorder.run(feed_rx, own.child_token()));
        let api_cancel = own.child_token();
        let web_state = web::WebState::new(
            api_state,
            hub.clone(),
            allowlist.clone(),
            &config.server.data_dir,
            &config.api,
            api_cancel.clone(),
        );
        tracing::info!(addr = %api_addr, tls = tls.is_some(), "HTTP API and web app listening");
        let api = tokio::spawn(async move {
            let routes = web::router(web_state).merge(metrics_router);
            if let Err(e) = web::tls::serve(listener, routes, tls, api_cancel).await {
                tracing::error!("HTTP API stopped: {e}");
            }
        });
        let node = ServerNode::start(
            NodeOptions::for_config(
                config,
                secret,
                allowlist.clone(),
                sessions.clone(),
                pairing.clone(),
            ),
            hub.clone(),
            own.clone(),
        )
        .await?;
        let forwarders = upstreams.start(
            node.endpoint().clone(),
            hub.clone(),
            allowlist.clone(),
            crate::upstream::Origin::Recorder {
                data_dir: config.server.data_dir.clone(),
            },
            own.child_token(),
        )?;
        // `camera add` (another process) puts this in pairing strings.
        let ticket = node.ticket().to_string();
        if let Err(e) = std::fs::write(config.ticket_path(), format!("{ticket}\n")) {
            tracing::warn!("cannot write {}: {e}", config.ticket_path().display());
        }
        Ok(Self {
            node,
            hub,
            allowlist,
            sessions,
            pairing,
            api_addr,
            api_token,
            web_url,
            setup_link,
            recorder,
            api,
            forwarders,
            cancel: own,
        })
    }

    /// Stops accepting, closes sessions, lets the recorder write what it has
    /// queued and close its segments, and stops the API.
    pub async fn shutdown(mut self) {
        self.node.shutdown().await;
        // The hub (and so the recorder's feed) lives until the sessions end.
        self.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(10), self.recorder)
            .await
            .is_err()
        {
            tracing::warn!("the recorder did not finish within 10 s");
        }
        while self.forwarders.join_next().await.is_some() {}
        let _ = self.api.await;
    }
}

/// The live side as the HTTP API sees it: the hub's cameras under the
/// names on the server's record, name resolution, and admins' commands.
struct LiveView {
    hub: Arc<Hub>,
    allowlist: Arc<Allowlist>,
    sessions: Arc<Sessions>,
    snapshots: std::path::PathBuf,
}

/// How long the server waits for a snapshot's keyframe to reach the hub
/// after the camera acknowledged it.
const SNAPSHOT_ARRIVAL: Duration = Duration::from_secs(5);

/// `seq=N` in a keyframe/snapshot acknowledgement.
fn acked_sequence(detail: &str) -> Option<u64> {
    detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix("seq="))
        .and_then(|n| n.parse().ok())
}

/// Waits for the keyframe the camera acknowledged and writes it (an
/// Annex-B access unit with SPS and PPS: `ffmpeg -i X.h264 X.jpg` makes a
/// picture of it) under `dir`; returns the file.
async fn save_snapshot(
    hub: &Hub,
    camera: kodama_net::EndpointId,
    name: &str,
    sequence: u64,
    dir: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let track = hub
        .find(&CameraSelector::Id(*camera.as_bytes()))
        .context("the camera left the hub")?;
    let mut groups = track.groups();
    let frame = tokio::time::timeout(SNAPSHOT_ARRIVAL, async {
        loop {
            let current = groups.borrow_and_update().clone();
            if let Some(first) = current.and_then(|g| g.get(0)) {
                if first.sequence == sequence {
                    return Some(first);
                }
                if first.sequence > sequence {
                    return None;
                }
            }
            if groups.changed().await.is_err() {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten()
    .context("the snapshot's keyframe did not arrive")?;
    std::fs::create_dir_all(dir)?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
        .replace(':', "-");
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{safe}-{stamp}.h264"));
    std::fs::write(&path, &frame.payload)?;
    Ok(path)
}

impl api::LiveStatus for LiveView {
    fn cameras(&self) -> Vec<api::CameraStatus> {
        self.hub
            .cameras()
            .into_iter()
            .map(|c| api::CameraStatus {
                endpoint: c.id.to_string(),
                name: self
                    .allowlist
                    .name_of(&c.id, PeerRole::Camera)
                    .unwrap_or(c.info.name),
                online: c.online,
                last_seen_us: c
                    .last_seen
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_micros() as i64),
            })
            .collect()
    }

    fn resolve_camera(&self, name: &str) -> Option<String> {
        self.allowlist
            .resolve(PeerRole::Camera, name)
            .map(|p| p.id)
            .or_else(|| crate::relay_session::forwarded_by_name(&self.hub, &self.allowlist, name))
            .map(|id| id.to_string())
    }

    fn updates(&self) -> Option<Arc<crate::updates::Updates>> {
        Some(self.sessions.updates().clone())
    }

    fn command(&self, endpoint: &str, command: kodama_proto::Command) -> api::CommandFuture {
        let sent = endpoint::parse_endpoint_id(endpoint)
            .map_err(|e| api::CommandFailure::Unavailable(e.to_string()))
            .and_then(|id| {
                self.sessions
                    .send_command(&id, command)
                    .map_err(|e| api::CommandFailure::Unavailable(e.to_string()))
            });
        let snapshot = (command == kodama_proto::Command::Snapshot).then(|| {
            let id = endpoint::parse_endpoint_id(endpoint).ok();
            let name = id.and_then(|id| self.allowlist.name_of(&id, PeerRole::Camera));
            (self.hub.clone(), id, name, self.snapshots.clone())
        });
        Box::pin(async move {
            let mut outcome = sent?.await.map_err(|_| {
                api::CommandFailure::Unavailable("the camera disconnected before answering".into())
            })?;
            if let (Some((hub, Some(id), name, dir)), kodama_proto::CommandResult::Ok) =
                (snapshot, outcome.result)
            {
                let name = name.unwrap_or_else(|| id.to_string());
                let saved = match acked_sequence(&outcome.detail) {
                    Some(seq) => save_snapshot(&hub, id, &name, seq, &dir).await,
                    None => Err(anyhow::anyhow!("the camera did not say which keyframe")),
                };
                match saved {
                    Ok(path) => {
                        outcome.detail = format!("{}; saved {}", outcome.detail, path.display())
                    }
                    Err(e) => {
                        outcome.result = kodama_proto::CommandResult::Failed;
                        outcome.detail = format!("{}; not saved: {e:#}", outcome.detail);
                    }
                }
            }
            Ok(outcome)
        })
    }
}

/// Tells the hub about every camera the server's own records name (the
/// allowlist first — its names are the record — then cameras only the
/// recording index still knows), so that right after a restart viewers find
/// them by name and wait for them to reconnect.
fn know_cameras(hub: &Hub, recorder: &Recorder, allowlist: &Allowlist) {
    for peer in allowlist.list().unwrap_or_default() {
        if peer.role != PeerRole::Camera {
            continue;
        }
        if let Ok(id) = endpoint::parse_endpoint_id(&peer.id) {
            let name = if peer.label.is_empty() {
                &peer.id
            } else {
                &peer.label
            };
            hub.know(id, name, std::time::UNIX_EPOCH);
        }
    }
    for row in recorder.known_cameras() {
        if let Ok(id) = endpoint::parse_endpoint_id(&row.endpoint) {
            let seen = std::time::UNIX_EPOCH
                + Duration::from_micros(u64::try_from(row.last_seen_us).unwrap_or(0));
            hub.know(id, &row.name, seen);
        }
    }
}

/// GOPs queued for the recorder before whole GOPs are dropped (about a
/// minute of video from 8 cameras at 1 s GOPs).
const RECORDER_QUEUE: usize = 512;

/// `kodama-server run`.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let server = Server::start(&config, cancel.clone()).await?;
    let id = server.node.endpoint().id();
    let addrs: Vec<String> = server
        .node
        .endpoint()
        .bound_sockets()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("kodama-server {} is running", env!("CARGO_PKG_VERSION"));
    println!("  node id: {id}");
    println!("  listening on: {}", addrs.join(", "));
    println!("  ticket: {}", server.node.ticket());
    println!("  data: {}", config.server.data_dir.display());
    println!(
        "  recordings: {}",
        config.server.data_dir.join("recordings").display()
    );
    println!(
        "  HTTP API: curl -H \"Authorization: Bearer $(cat {})\" http://{}/api/v1/cameras",
        server.api_token.display(),
        server.api_addr
    );
    println!("  web app: {}/", server.web_url);
    if let Some(link) = &server.setup_link {
        println!("  first-run setup (one-time link, creates the admin account): {link}");
    }
    println!(
        "  allowed peers: {} (add a camera with: kodama-server allow add <camera-node-id>)",
        server.allowlist.list().map(|l| l.len()).unwrap_or(0)
    );
    cancel.cancelled().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// `kodama-server id`.
pub fn print_id(config: &Config) -> anyhow::Result<()> {
    let key = endpoint::load_or_create_key(&config.key_path())?;
    println!("{}", key.public());
    Ok(())
}

/// `kodama-server allow …`.
pub fn allow(config: &Config, action: AllowAction) -> anyhow::Result<()> {
    let list = Allowlist::new(config.allowlist_path());
    match action {
        AllowAction::Add {
            id,
            role,
            camera,
            label,
            carries,
        } => {
            let role = if camera { PeerRole::Camera } else { role };
            let added = match role {
                PeerRole::Relay => list.add_relay(&id, &label, &carries)?,
                _ if !carries.is_empty() => {
                    anyhow::bail!("--carry is for relays: add --role relay")
                }
                _ => list.add(&id, role, &label)?,
            };
            println!(
                "{} {id} as {role}",
                if added { "allowed" } else { "updated" }
            );
            if role == PeerRole::Relay && carries.is_empty() {
                println!("note: it may forward no camera yet; add --carry CAMERA_ID");
            }
        }
        AllowAction::List => {
            for p in list.list()? {
                let role = p.role.to_string();
                let carries = if p.carries.is_empty() {
                    String::new()
                } else {
                    format!(" (carries {})", p.carries.join(", "))
                };
                println!("{} {role:6} {}{carries}", p.id, p.label);
            }
        }
        AllowAction::Remove { id, role } => {
            let n = list.remove(&id, role)?;
            if n == 0 {
                anyhow::bail!("{id} is not on the allowlist");
            }
            println!("removed {n} entr{}", if n == 1 { "y" } else { "ies" });
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The ticket to put in a pairing string: from `--addr`, else the one the
/// running server wrote at start, else the node id and the listen address.
fn pairing_ticket(config: &Config, addrs: &[SocketAddr]) -> anyhow::Result<String> {
    let key = endpoint::load_or_create_key(&config.key_path())?;
    if !addrs.is_empty() {
        let addr = endpoint::dial_addr(None, Some(&key.public().to_string()), addrs)?;
        return Ok(kodama_net::EndpointTicket::new(addr).to_string());
    }
    if let Ok(text) = std::fs::read_to_string(config.ticket_path()) {
        let ticket = text.trim();
        // Only a ticket of this server's own key will do.
        if endpoint::parse_ticket(ticket)
            .is_ok_and(|t| kodama_net::EndpointAddr::from(t).id == key.public())
        {
            return Ok(ticket.to_owned());
        }
    }
    let listen = config.server.listen;
    anyhow::ensure!(
        !listen.ip().is_unspecified(),
        "the server has not written its ticket yet ({}): start it once, or give --addr HOST:PORT (the address cameras should dial)",
        config.ticket_path().display()
    );
    let addr = endpoint::dial_addr(None, Some(&key.public().to_string()), &[listen])?;
    Ok(kodama_net::EndpointTicket::new(addr).to_string())
}

/// Makes a code and prints it, the pairing string and its QR code.
fn add_with_code(
    config: &Config,
    role: PeerRole,
    name: &str,
    args: &PairCodeArgs,
    wifi: Option<kodama_proto::pairing::WifiCredentials>,
    qr_image: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let list = Allowlist::new(config.allowlist_path());
    let store = PairingStore::new(config.pairing_path());
    let server = pairing_ticket(config, &args.addrs)?;
    if let Some(w) = &wifi {
        w.validate()?;
    }
    let made = store.create(&list, role, name, args.expires, unix_now())?;
    let pairing = kodama_proto::pairing::PairingString {
        code: made.code.clone(),
        server,
        wifi,
    };
    let text = pairing.to_string();
    println!(
        "pairing code for {role} {name:?}: {}",
        kodama_proto::pairing::format_code(&made.code)
    );
    let secs = args.expires.as_secs();
    let valid_for = if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    };
    println!("valid for {valid_for}, once; pairing string:\n\n{text}\n");
    match role {
        PeerRole::Camera => println!(
            "put it in the camera's kodama.toml as  [server] pair = \"…\"  or hold the QR code in front of its lens at first boot"
        ),
        PeerRole::Viewer => println!("on the viewer's machine run:  kodama-server view --pair '{text}'"),
        PeerRole::Relay => {}
    }
    if let Some(path) = qr_image {
        let image = crate::pairing::qr_image(&text, crate::pairing::QR_MODULE_PX)
            .map_err(|e| anyhow::anyhow!("cannot make a QR code: {e}"))?;
        std::fs::write(path, image.to_pgm())
            .with_context(|| format!("writing the QR code picture {}", path.display()))?;
        println!(
            "QR code picture ({}x{} PGM) written to {}",
            image.width,
            image.height,
            path.display()
        );
    }
    if !args.no_qr {
        let qr = qrcode::QrCode::new(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot make a QR code: {e}"))?;
        let art = qr
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build();
        println!("\n{art}");
    }
    Ok(())
}

fn list_role(config: &Config, role: PeerRole) -> anyhow::Result<()> {
    let list = Allowlist::new(config.allowlist_path());
    let store = PairingStore::new(config.pairing_path());
    for p in list.named()?.into_iter().filter(|p| p.role == role) {
        println!("{:24} paired   {}", p.name, p.id);
    }
    for p in store
        .pending(unix_now())?
        .into_iter()
        .filter(|p| p.role == role)
    {
        let mins = p.expires_at.saturating_sub(unix_now()).div_ceil(60);
        println!("{:24} waiting  (code expires in {mins} min)", p.name);
    }
    Ok(())
}

fn remove_role(config: &Config, role: PeerRole, name: &str) -> anyhow::Result<()> {
    let list = Allowlist::new(config.allowlist_path());
    let store = PairingStore::new(config.pairing_path());
    let cancelled = store.cancel(role, name)?;
    match list.remove_named(role, name) {
        Ok(gone) => println!(
            "removed {role} {:?} ({}); its key can never connect again",
            gone.name, gone.id
        ),
        Err(crate::allowlist::AllowlistError::Unknown { .. }) if cancelled > 0 => {
            println!("withdrew the pairing code for {role} {name:?}")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `kodama-server camera …`.
pub async fn camera(config: &Config, action: CameraAction) -> anyhow::Result<()> {
    let role = PeerRole::Camera;
    let command = match action {
        CameraAction::Add {
            name,
            code,
            wifi_ssid,
            wifi_psk,
            wifi_country,
            qr_image,
        } => {
            let wifi = wifi_ssid.map(|ssid| kodama_proto::pairing::WifiCredentials {
                ssid,
                psk: wifi_psk.unwrap_or_default(),
                country: wifi_country.unwrap_or_default(),
            });
            return add_with_code(config, role, &name, &code, wifi, qr_image.as_deref());
        }
        CameraAction::List => return list_role(config, role),
        CameraAction::Rename { name, new_name } => {
            let list = Allowlist::new(config.allowlist_path());
            let renamed = list.rename(role, &name, &new_name)?;
            println!("camera {} is now {:?}", renamed.id, renamed.name);
            return Ok(());
        }
        CameraAction::Remove { name } => return remove_role(config, role, &name),
        CameraAction::Reboot { name } => (name, "reboot", None),
        CameraAction::Keyframe { name } => (name, "keyframe", None),
        CameraAction::Snapshot { name } => (name, "snapshot", None),
        CameraAction::Tier { name, mode, rung } => (
            name,
            "tier",
            Some(serde_json::json!({ "command": "tier", "mode": mode, "rung": rung })),
        ),
        CameraAction::Update {
            name,
            bundle,
            no_wait,
            timeout,
        } => return camera_update(config, &name, &bundle, no_wait, timeout).await,
        CameraAction::Status { name } => return camera_status(config, &name).await,
    };
    let (name, what, body) = command;
    let body = body.unwrap_or_else(|| serde_json::json!({ "command": what }));
    let answer =
        api::client::command_with(&config.server.data_dir, &config.api, &name, body).await?;
    let result = answer["result"].as_str().unwrap_or("?");
    let detail = answer["detail"].as_str().unwrap_or("");
    println!(
        "{name}: {what}: {result}{}{detail}",
        if detail.is_empty() { "" } else { ": " }
    );
    anyhow::ensure!(result == "ok", "the camera did not do it");
    Ok(())
}

/// `kodama-server camera update NAME BUNDLE`: uploads the bundle to the
/// running server and follows the camera's phases to the commit.
async fn camera_update(
    config: &Config,
    name: &str,
    bundle: &std::path::Path,
    no_wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (data, api) = (&config.server.data_dir, &config.api);
    let started = std::time::Instant::now();
    let answer = api::client::start_update(data, api, name, bundle).await?;
    println!(
        "{name}: update {} ({} bytes) stored; {}",
        answer["bundle"].as_str().unwrap_or("?"),
        answer["size"],
        if answer["online"].as_bool() == Some(true) {
            "sending it to the camera"
        } else {
            "it goes out when the camera connects"
        }
    );
    if no_wait {
        return Ok(());
    }
    let mut last = (String::new(), String::new());
    let mut last_progress = std::time::Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "no commit within {timeout:?}; `kodama-server camera status {name}` shows where it stands"
        );
        let s = api::client::update_status(data, api, name).await?;
        let phase = s["phase"].as_str().unwrap_or("?").to_owned();
        let detail = s["detail"].as_str().unwrap_or("").to_owned();
        let secs = started.elapsed().as_secs_f64();
        if phase == "receiving" {
            if last.0 != phase || last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = std::time::Instant::now();
                let size = s["size"].as_u64().unwrap_or(0).max(1);
                let have = s["progress"].as_u64().unwrap_or(0);
                println!(
                    "{name}: [{secs:6.1} s] receiving {have}/{size} bytes ({}%)",
                    have * 100 / size
                );
            }
        } else if (phase.as_str(), detail.as_str()) != (last.0.as_str(), last.1.as_str()) {
            println!("{name}: [{secs:6.1} s] {phase}: {detail}");
        }
        match phase.as_str() {
            "committed" => {
                println!("{name}: update committed in {secs:.1} s");
                return Ok(());
            }
            "rolled-back" => anyhow::bail!("the camera rolled back to its old slot: {detail}"),
            "failed" => anyhow::bail!("the update failed: {detail}"),
            _ => {}
        }
        last = (phase, detail);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `kodama-server camera status NAME`.
async fn camera_status(config: &Config, name: &str) -> anyhow::Result<()> {
    let s = api::client::update_status(&config.server.data_dir, &config.api, name).await?;
    println!("camera:  {name} ({})", s["camera"].as_str().unwrap_or("?"));
    println!(
        "online:  {}",
        if s["online"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    );
    if let Some(running) = s["running"].as_str() {
        println!("running: {running}");
    }
    match s["bundle"].as_str() {
        None => println!("update:  none"),
        Some(bundle) => {
            println!(
                "update:  {} — {} ({} bytes, {:.0} s ago)",
                s["phase"].as_str().unwrap_or("?"),
                s["detail"].as_str().unwrap_or(""),
                s["size"],
                s["elapsed_s"].as_f64().unwrap_or(0.0)
            );
            println!("bundle:  {bundle}");
            for h in s["history"].as_array().into_iter().flatten() {
                println!(
                    "  {:8.1} s  {:12} {}",
                    h["at_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                    h["phase"].as_str().unwrap_or("?"),
                    h["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// `kodama-server viewer …`.
pub fn viewer_cmd(config: &Config, action: ViewerAction) -> anyhow::Result<()> {
    let role = PeerRole::Viewer;
    match action {
        ViewerAction::Add { name, code } => add_with_code(config, role, &name, &code, None, None),
        ViewerAction::List => list_role(config, role),
        ViewerAction::Remove { name } => remove_role(config, role, &name),
    }
}

/// Pairs the viewer key at `key_path` with the pairing string (once: a
/// record beside the key says it is done) and returns the server to dial.
async fn pair_viewer(
    config: &Config,
    secret: &kodama_net::SecretKey,
    key_path: &std::path::Path,
    pairing: &str,
) -> anyhow::Result<kodama_net::EndpointAddr> {
    let p = kodama_proto::pairing::PairingString::parse(pairing)?;
    let server = endpoint::dial_addr(Some(&p.server), None, &[])?;
    let record = key_path.with_extension(format!("paired-{}", server.id.fmt_short()));
    if record.exists() {
        return Ok(server);
    }
    let ep = endpoint::bind(
        secret.clone(),
        &EndpointOptions {
            offline: config.server.offline,
            bind: None,
            alpns: Vec::new(),
        },
    )
    .await?;
    let paired = kodama_net::pair::pair(&ep, server.clone(), Role::Viewer, &p.code, "viewer").await;
    ep.close().await;
    let paired = paired?;
    std::fs::write(&record, format!("{}\n{}\n", paired.name, p.server))
        .with_context(|| format!("recording the pairing in {}", record.display()))?;
    eprintln!("paired with {} as viewer {:?}", paired.server, paired.name);
    Ok(server)
}

/// `kodama-server token rotate`.
pub fn rotate_token(config: &Config) -> anyhow::Result<()> {
    let path = api::client::rotate_token(&config.server.data_dir, &config.api)?;
    println!("new API token written to {}", path.display());
    Ok(())
}

/// `kodama-server view …`.
pub async fn view(
    config: &Config,
    args: ViewArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(from) = &args.from {
        let to = args
            .to
            .as_deref()
            .context("--from needs --to (RFC 3339, e.g. 2026-11-25T10:00:00Z)")?;
        let (written_to, bytes) = api::client::view(
            &config.server.data_dir,
            &config.api,
            args.camera.as_deref(),
            from,
            to,
            args.output.as_deref(),
        )
        .await?;
        eprintln!("wrote {bytes} bytes of MP4 to {written_to}");
        return Ok(());
    }
    let key_path = args
        .key_path
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("viewer.key"));
    let secret = endpoint::load_or_create_key(&key_path)?;
    let server = if let Some(pairing) = &args.pair {
        pair_viewer(config, &secret, &key_path, pairing).await?
    } else if args.ticket.is_some() || args.server_id.is_some() {
        endpoint::dial_addr(
            args.ticket.as_deref(),
            args.server_id.as_deref(),
            &args.server_addr,
        )?
    } else {
        // The local server: whoever can read its data directory owns it, so
        // the viewer may put itself on the allowlist.
        let server_key = endpoint::load_or_create_key(&config.key_path())
            .context("no --ticket or --server-id given and no local server in --data-dir")?;
        let list = Allowlist::new(config.allowlist_path());
        if !list.allows(&secret.public(), Role::Viewer) {
            list.add(&secret.public().to_string(), PeerRole::Viewer, "")?;
        }
        let addrs = if args.server_addr.is_empty() {
            // Its listen address, or loopback when it listens on every address.
            vec![api::client::connect_addr(config.server.listen)]
        } else {
            args.server_addr.clone()
        };
        endpoint::dial_addr(None, Some(&server_key.public().to_string()), &addrs)?
    };
    let ep = endpoint::bind(
        secret,
        &EndpointOptions {
            offline: config.server.offline,
            bind: None,
            alpns: Vec::new(),
        },
    )
    .await?;
    // Closed on every path, so the server sees a goodbye rather than a
    // vanished peer (and iroh does not abort the endpoint ungracefully).
    let watched = watch_live(&ep, server, &args, cancel).await;
    ep.close().await;
    watched
}

async fn watch_live(
    ep: &kodama_net::Endpoint,
    server: kodama_net::EndpointAddr,
    args: &ViewArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let selector = match &args.camera {
        None => CameraSelector::FirstOnline,
        Some(c) => match endpoint::parse_endpoint_id(c) {
            Ok(id) => CameraSelector::Id(*id.as_bytes()),
            Err(_) => CameraSelector::Name(c.clone()),
        },
    };
    let wait = Duration::from_secs_f64(args.wait.max(0.0));
    let client = ViewerClient::connect_waiting(ep, server, selector, wait, |camera| {
        eprintln!(
            "camera {camera} is offline; waiting up to {:.0} s for it to connect (--wait)",
            wait.as_secs_f64()
        );
    })
    .await?;
    viewer::watch(
        client,
        ViewOptions {
            output: args.output.clone(),
            audio_output: args.audio_output.clone(),
            duration: args.duration.map(Duration::from_secs_f64),
            frames: args.frames,
            stats_every: Duration::from_secs_f64(args.stats_every.max(0.1)),
        },
        cancel,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_dials_the_listen_address_unless_it_is_unspecified() {
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            api::client::connect_addr(at("10.1.2.3:7070")),
            at("10.1.2.3:7070")
        );
        assert_eq!(
            api::client::connect_addr(at("0.0.0.0:7070")),
            at("127.0.0.1:7070")
        );
        assert_eq!(api::client::connect_addr(at("[::]:7071")), at("[::1]:7071"));
        assert_eq!(
            api::client::connect_addr(at("[fd00::5]:7072")),
            at("[fd00::5]:7072")
        );
    }
}
