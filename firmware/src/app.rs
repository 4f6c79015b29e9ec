//! Wires the camera together: identity, endpoint, video source, capture
//! thread, modem, GNSS, motion detection, telemetry and uplink, all under
//! one cancellation token.

use std::time::Duration;

use anyhow::Context;
use kodama_net::endpoint::{self, EndpointOptions};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backlog::{Backlog, StoreForward};
use crate::config::Config;
use crate::link::{self, LinkSet, LinkSetOptions};
use crate::onboarding::{self, OnboardingState};
use crate::pairing::{self, PairedRecord};
use crate::uplink::{self, LinkState, UplinkIo, UplinkOptions};
use crate::video::{self, MotionSwitch, Overlay, VideoSource};
use crate::{hw, motion, telemetry};

/// Handles the app exposes to tests and the demo.
#[derive(Debug, Clone, Default)]
pub struct AppHandles {
    /// Injects motion into a synthetic source.
    pub motion: MotionSwitch,
    /// Holds a picture (e.g. a pairing QR code) in front of a synthetic source.
    pub overlay: Overlay,
}

/// Builds the configured video source. A source this build does not
/// contain is refused with the reason (see `VideoSourceKind::check_built_in`).
pub fn make_source(config: &Config, handles: &AppHandles) -> anyhow::Result<Box<dyn VideoSource>> {
    let kind = config.video.source;
    if let Err(why) = kind.check_built_in() {
        anyhow::bail!("video.source: {why}");
    }
    let _ = handles;
    match kind {
        #[cfg(feature = "synthetic")]
        crate::config::VideoSourceKind::Synthetic => {
            let scene = match &config.video.synthetic_scene {
                Some(path) => Some(video::synthetic::load_scene(
                    path,
                    config.video.width,
                    config.video.height,
                )?),
                None => None,
            };
            Ok(Box::new(
                video::synthetic::SyntheticSource::new(
                    config.video.settings(),
                    true,
                    handles.motion.clone(),
                )
                .context("starting the synthetic video source")?
                .with_overlay(handles.overlay.clone())
                .with_busy_scene(config.video.busy_scene)
                .with_scene(scene),
            ))
        }
        #[cfg(feature = "pi")]
        crate::config::VideoSourceKind::Pi => {
            let mut pi = video::pi::PiCameraConfig::new(config.video.settings());
            // Adaptive bitrate moves size and frame rate along `pi::tiers` too.
            pi.adaptive_tiers = config.video.abr;
            Ok(Box::new(video::pi::PiCameraSource::open(pi).context(
                "opening the IMX219 camera and the hardware H.264 encoder",
            )?))
        }
        #[allow(unreachable_patterns)]
        other => anyhow::bail!("video.source = {:?} is not built in", other.name()),
    }
}

/// Where [`resolve_server`] leaves the camera.
enum Resolved {
    /// Stream to this server.
    Server(kodama_net::EndpointAddr),
    /// No server: onboard by QR code. `refused` is the server's reason when
    /// it refused the code in `server.pair` (wrong, expired, used).
    Onboard { refused: Option<String> },
}

/// The server to stream to: the configured ticket or node id, else the one
/// this camera paired with (neither: onboard by QR code). Pairs first when
/// `server.pair` is set and the camera has not paired yet; a code the
/// server refuses leaves the camera unpaired, saying why (log, status file,
/// LED), and waiting for a pairing QR code — retrying a refused code cannot
/// help, and exiting would only have init restart it into the same refusal.
async fn resolve_server(
    config: &Config,
    ep: &kodama_net::Endpoint,
    cancel: &CancellationToken,
) -> anyhow::Result<Resolved> {
    let record_path = config.paired_record_path();
    let mut record = PairedRecord::load(&record_path)?;
    let mut refused = None;
    if record.is_none() {
        if let Some(text) = &config.server.pair {
            let pairing =
                kodama_proto::pairing::PairingString::parse(text).context("server.pair")?;
            match pairing::pair_camera(ep, &pairing, &config.camera.name, &record_path, cancel)
                .await
            {
                Ok(r) => record = Some(r),
                Err(pairing::PairingError::Refused(e)) => {
                    tracing::error!(
                        "the server refused the pairing code in kodama.toml (server.pair): {e}; \
                         the camera stays unpaired: put a new code in kodama.toml, or hold a pairing QR code in front of the lens"
                    );
                    crate::firstboot::report_pairing(Some(&e.to_string()));
                    refused = Some(e.to_string());
                }
                Err(e) => return Err(anyhow::Error::new(e).context("pairing with the server")),
            }
        }
    } else if config.server.pair.is_some() {
        tracing::info!(record = %record_path.display(), "already paired; server.pair is not used again");
    }
    if config.server.ticket.is_some() || config.server.node_id.is_some() {
        return Ok(Resolved::Server(endpoint::dial_addr(
            config.server.ticket.as_deref(),
            config.server.node_id.as_deref(),
            &config.server.addrs,
        )?));
    }
    Ok(match record {
        Some(r) => Resolved::Server(r.server_addr()?),
        None => Resolved::Onboard { refused },
    })
}

/// How many pairing QR codes a camera tries before giving up (each refused
/// one sends it back to scanning).
const QR_ATTEMPTS: u32 = 20;

/// QR onboarding: scan for a pairing QR code, join its Wi-Fi, pair. Returns
/// the server and the source back, or `None` when cancelled.
async fn onboard(
    config: &Config,
    ep: &kodama_net::Endpoint,
    mut source: Box<dyn VideoSource>,
    refused: Option<String>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(kodama_net::EndpointAddr, Box<dyn VideoSource>)>> {
    tracing::info!("not paired and no server set: hold the pairing QR code from `kodama-server camera add NAME` in front of the lens");
    let first = match refused {
        Some(reason) => OnboardingState::Refused(reason),
        None => OnboardingState::Scanning,
    };
    let (state_tx, state_rx) = watch::channel(first.clone());
    let feedback_cancel = cancel.child_token();
    let feedback = onboarding::spawn_feedback(state_rx, feedback_cancel.clone());
    let state = std::sync::Arc::new(state_tx);
    let result = async {
        if let OnboardingState::Refused(reason) = &first {
            tracing::info!(state = ?first, blink = ?onboarding::blink_for(&first), "onboarding: {reason}");
            if !refused_pause(cancel).await {
                return Ok(None);
            }
        }
        for _ in 0..QR_ATTEMPTS {
            let (st, c) = (state.clone(), cancel.clone());
            let (src, found) =
                tokio::task::spawn_blocking(move || onboarding::scan_for_pairing(source, &st, &c))
                    .await
                    .context("QR scanner thread")??;
            source = src;
            let Some(pairing) = found else {
                return Ok(None);
            };
            if let Some(wifi) = &pairing.wifi {
                apply_wifi(config, wifi).await?;
            }
            match pairing::pair_camera(
                ep,
                &pairing,
                &config.camera.name,
                &config.paired_record_path(),
                cancel,
            )
            .await
            {
                Ok(record) => {
                    state.send_replace(OnboardingState::Paired);
                    crate::firstboot::report_pairing(None);
                    return Ok(Some((record.server_addr()?, source)));
                }
                Err(pairing::PairingError::Cancelled) => return Ok(None),
                Err(e) => {
                    tracing::error!("{e}; show a new pairing QR code");
                    state.send_replace(OnboardingState::Refused(e.to_string()));
                    if !refused_pause(cancel).await {
                        return Ok(None);
                    }
                }
            }
        }
        anyhow::bail!("gave up after {QR_ATTEMPTS} refused pairing QR codes")
    }
    .await;
    feedback_cancel.cancel();
    let _ = feedback.await;
    result
}

/// Gives the owner a moment to see the REFUSED blink code before scanning
/// again; `false` when cancelled.
async fn refused_pause(cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(Duration::from_secs(5)) => true,
    }
}

/// Stores Wi-Fi credentials from a pairing QR code beside the key (0600, on
/// the data partition) and runs `system.wifi_command` to join the network.
async fn apply_wifi(
    config: &Config,
    wifi: &kodama_proto::pairing::WifiCredentials,
) -> anyhow::Result<()> {
    let path = config.qr_wifi_path();
    #[derive(serde::Serialize)]
    struct Section<'a> {
        wifi: Wifi<'a>,
    }
    #[derive(serde::Serialize)]
    struct Wifi<'a> {
        ssid: &'a str,
        psk: &'a str,
        country: &'a str,
    }
    let text = toml::to_string(&Section {
        wifi: Wifi {
            ssid: &wifi.ssid,
            psk: &wifi.psk,
            country: &wifi.country,
        },
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::firstboot::atomic_write(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(ssid = %wifi.ssid, file = %path.display(), "Wi-Fi from the pairing QR code");
    if let Some((program, args)) = config.system.wifi_command.split_first() {
        let status = tokio::process::Command::new(program)
            .args(args)
            .status()
            .await
            .with_context(|| format!("running system.wifi_command {program}"))?;
        if !status.success() {
            tracing::warn!(%status, "system.wifi_command failed; pairing will keep retrying");
        }
    }
    Ok(())
}

/// Wall-clock µs since the Unix epoch.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Test equipment (`video.synthetic_motion`): holds the synthetic source's
/// moving block in front of the lens for `for_s` out of every `every_s`
/// seconds (here: `on` after `off`, repeated), so the motion detector, the
/// recorder's events and the web app's events list have something to show in
/// the demo and the browser tests.
async fn run_synthetic_motion(
    on: Duration,
    off: Duration,
    motion: MotionSwitch,
    cancel: CancellationToken,
) {
    loop {
        for (state, hold) in [(false, off), (true, on)] {
            motion.set(state);
            tokio::select! {
                () = cancel.cancelled() => {
                    motion.set(false);
                    return;
                }
                () = tokio::time::sleep(hold) => {}
            }
        }
    }
}

/// Starts the PIR sensor (`motion.pir_gpio`) as a second source of motion
/// events next to the picture; `None` when no PIR is configured.
fn spawn_pir(
    cfg: &motion::MotionConfig,
    events: mpsc::Sender<uplink::AuxMessage>,
    cancel: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(pin) = cfg.pir_gpio else {
        return Ok(None);
    };
    #[cfg(feature = "pi")]
    {
        let input = hw::gpio::pi::input(pin)
            .with_context(|| format!("opening the PIR sensor on GPIO {pin}"))?;
        let (edge_tx, edge_rx) = mpsc::channel(8);
        let period = Duration::from_millis(cfg.pir_poll_ms);
        let watch_cancel = cancel.clone();
        let watcher = tokio::spawn(async move {
            if let Err(e) = hw::gpio::watch_pir(input, period, edge_tx, watch_cancel).await {
                tracing::warn!(error = %e, "PIR sensor stopped");
            }
        });
        Ok(Some(tokio::spawn(async move {
            motion::run_pir(edge_rx, events, wall_us, cancel).await;
            let _ = watcher.await;
        })))
    }
    #[cfg(not(feature = "pi"))]
    {
        let _ = (events, cancel, wall_us);
        anyhow::bail!("motion.pir_gpio = {pin} needs a firmware built with the `pi` feature")
    }
}

/// Runs the camera until `cancel` fires.
pub async fn run(
    config: Config,
    handles: AppHandles,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let secret = endpoint::load_or_create_key(&config.camera.key_path)?;
    let link_secret = secret.clone();
    let ep = endpoint::bind(
        secret,
        &EndpointOptions {
            offline: config.network.offline,
            bind: config.network.bind,
            alpns: Vec::new(),
        },
    )
    .await?;
    // Closed on every path, errors included: the server sees a goodbye, not
    // a peer that vanished (and iroh does not abort it ungracefully).
    let result = run_on(config, handles, &ep, link_secret, &cancel).await;
    ep.close().await;
    result
}

async fn run_on(
    config: Config,
    handles: AppHandles,
    ep: &kodama_net::Endpoint,
    link_secret: kodama_net::SecretKey,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let cancel = cancel.clone();
    let ep = ep.clone();
    let mut source = make_source(&config, &handles)?;
    let server = match resolve_server(&config, &ep, &cancel).await {
        Ok(Resolved::Server(s)) => s,
        Ok(Resolved::Onboard { refused }) => {
            match onboard(&config, &ep, source, refused, &cancel).await {
                Ok(Some((s, src))) => {
                    source = src;
                    s
                }
                Ok(None) => {
                    ep.close().await;
                    return Ok(());
                }
                Err(e) => {
                    ep.close().await;
                    return Err(e);
                }
            }
        }
        Err(e) => {
            ep.close().await;
            return Err(e);
        }
    };
    tracing::info!(id = %ep.id(), name = %config.camera.name, server = %server.id, "camera starting");

    let format = source.format();
    let capture = video::spawn_capture(source, cancel.clone())?;
    let (aux_tx, aux_rx) = mpsc::channel(64);

    // Hardware around the video: each part is the real driver or its
    // simulator, as the config says; all report into telemetry.
    let modem = hw::modem::start(&config.modem, cancel.clone())
        .await
        .context("starting the modem")?;
    let clock_task = tokio::spawn(hw::modem::netclock::run(
        modem.status.clone(),
        hw::modem::netclock::system_now_unix,
        hw::modem::netclock::set_system_clock,
        cancel.clone(),
    ));
    let gnss = hw::gnss::spawn(&config.gnss, cancel.clone()).context("starting GNSS")?;
    let (motion_tx, motion_active) = watch::channel(false);
    let motion_task = tokio::spawn(motion::run(
        config.motion.clone(),
        capture.luma,
        aux_tx.clone(),
        motion_tx,
        cancel.clone(),
    ));
    let pir_task = spawn_pir(&config.motion, aux_tx.clone(), cancel.clone())?;
    let audio_task = if config.audio.enabled {
        let mic = crate::audio::open_capture(&config.audio).context("opening the microphone")?;
        let encoder = crate::audio::OpusPacketizer::new(config.audio.bitrate_kbps)
            .context("starting the Opus encoder")?;
        Some(crate::audio::spawn_audio(
            mic,
            encoder,
            aux_tx.clone(),
            cancel.clone(),
        )?)
    } else {
        None
    };
    let synthetic_motion_task = config.video.synthetic_motion.map(|schedule| {
        tokio::spawn(run_synthetic_motion(
            Duration::from_secs(u64::from(schedule.for_s)),
            Duration::from_secs(u64::from(schedule.every_s - schedule.for_s)),
            handles.motion.clone(),
            cancel.clone(),
        ))
    });
    let (stream_tx, stream_rx) = watch::channel(uplink::StreamStatus::default());
    let mut backlog_cfg = config.backlog.clone();
    if backlog_cfg.dir.is_none() {
        // Beside the key: on the image that is the data partition (firstboot
        // sets it explicitly), in a developer's run the working directory.
        backlog_cfg.dir = config.camera.key_path.parent().map(|p| p.join("backlog"));
    }
    let backlog = if backlog_cfg.enabled {
        Some(Backlog::open(&backlog_cfg).context("opening the backlog (store-and-forward)")?)
    } else {
        None
    };
    let sampler = telemetry::spawn_sampler(
        config.telemetry.clone(),
        telemetry::Inputs {
            modem: Some(modem.status.clone()),
            gnss: Some(gnss.fix.clone()),
            bitrate_kbps: None,
            motion: Some(motion_active),
            backlog: backlog.as_ref().map(|(b, _)| b.status()),
            stream: Some(stream_rx),
        },
        aux_tx.clone(),
        cancel.clone(),
    );
    let (state_tx, _state_rx) = watch::channel(LinkState::Connecting { attempt: 0 });
    // Updates live beside the key: on the image, the data partition, which
    // every update leaves alone.
    let update_dir = config.update.dir.clone().unwrap_or_else(|| {
        config
            .camera
            .key_path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("update")
    });
    let (updater, update_task) = crate::update::spawn(
        config.update.clone(),
        update_dir,
        crate::update::UpdaterIo {
            link: state_tx.subscribe(),
            events: Some(aux_tx),
            reboot_command: config.system.reboot_command.clone(),
        },
        cancel.clone(),
    )
    .context("starting the updater")?;
    let (initial, max) = config.reconnect_bounds();
    let links = (!config.network.uplinks.is_empty()).then(|| {
        LinkSet::start(
            LinkSetOptions {
                uplinks: config.network.uplinks.clone(),
                secret: link_secret,
                offline: config.network.offline,
                server: server.clone(),
                return_after: config
                    .network
                    .return_after_s
                    .map_or(link::DEFAULT_RETURN_AFTER, Duration::from_secs_f64),
                backoff: (Duration::from_millis(initial), Duration::from_millis(max)),
                congestion: config.network.congestion.to_net(),
            },
            cancel.clone(),
        )
    });
    let opts = UplinkOptions {
        server,
        name: config.camera.name.clone(),
        format,
        bitrate_kbps: config.video.bitrate_kbps,
        backoff_initial: Duration::from_millis(initial),
        backoff_max: Duration::from_millis(max),
        reboot_command: config.system.reboot_command.clone(),
        links,
        audio: audio_task.as_ref().map(|a| a.info),
        abr: config.video.abr,
        congestion: config.network.congestion.to_net(),
    };
    let io = UplinkIo {
        frames: capture.frames,
        aux: aux_rx,
        control: capture.control,
        state: state_tx,
        store: backlog.map(|(b, _)| StoreForward::new(b, &backlog_cfg)),
        tier: capture.tier,
        status: stream_tx,
        updates: Some(updater),
    };
    uplink::run(ep.clone(), opts, io, cancel.clone()).await;
    cancel.cancel();
    ep.close().await;
    let _ = sampler.await;
    let _ = update_task.await;
    let _ = motion_task.await;
    if let Some(t) = pir_task {
        let _ = t.await;
    }
    if let Some(t) = synthetic_motion_task {
        let _ = t.await;
    }
    let _ = gnss.task.await;
    let _ = clock_task.await;
    if let Some(a) = audio_task {
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.join()).await {
            tracing::warn!("audio stopped: {e}");
        }
    }
    modem.join().await;
    match tokio::task::spawn_blocking(move || capture.thread.join()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e).context("video source failed"),
        Ok(Err(_)) | Err(_) => anyhow::bail!("capture thread panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `motion` until it reads `want`, for at most `within`.
    async fn reaches(motion: &MotionSwitch, want: bool, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < end {
            if motion.get() == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn synthetic_motion_comes_and_goes_on_its_schedule_and_stops_on_cancel() {
        let motion = MotionSwitch::default();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_synthetic_motion(
            Duration::from_millis(150),
            Duration::from_millis(150),
            motion.clone(),
            cancel.clone(),
        ));
        let second = Duration::from_secs(1);
        assert!(
            reaches(&motion, true, second).await,
            "motion starts after the quiet part"
        );
        assert!(
            reaches(&motion, false, second).await,
            "and ends after its part"
        );
        assert!(reaches(&motion, true, second).await, "and repeats");
        cancel.cancel();
        tokio::time::timeout(second, task)
            .await
            .expect("stops")
            .expect("no panic");
        assert!(!motion.get(), "cancelled with the block off");
    }
}
