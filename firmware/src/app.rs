//! Wires the camera together: identity, endpoint, video source, capture
//! thread, modem, GNSS, motion detection, telemetry and uplink, all under
//! one cancellation token.

use std::time::Duration;

use anyhow::Context;
use kodama_net::endpoint::{self, EndpointOptions};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::uplink::{self, LinkState, UplinkIo, UplinkOptions};
use crate::video::{self, MotionSwitch, VideoSource};
use crate::{hw, motion, telemetry};

/// Handles the app exposes to tests and the demo.
#[derive(Debug, Clone, Default)]
pub struct AppHandles {
    /// Injects motion into a synthetic source.
    pub motion: MotionSwitch,
}

/// Builds the configured video source. A source this build does not
/// contain is refused with the reason (see `VideoSourceKind::check_built_in`).
pub fn make_source(config: &Config, motion: MotionSwitch) -> anyhow::Result<Box<dyn VideoSource>> {
    let kind = config.video.source;
    if let Err(why) = kind.check_built_in() {
        anyhow::bail!("video.source: {why}");
    }
    let _ = &motion;
    match kind {
        #[cfg(feature = "synthetic")]
        crate::config::VideoSourceKind::Synthetic => Ok(Box::new(
            video::synthetic::SyntheticSource::new(config.video.settings(), true, motion)
                .context("starting the synthetic video source")?,
        )),
        #[cfg(feature = "pi")]
        crate::config::VideoSourceKind::Pi => Ok(Box::new(
            video::pi::PiCameraSource::open(video::pi::PiCameraConfig::new(
                config.video.settings(),
            ))
            .context("opening the IMX219 camera and the hardware H.264 encoder")?,
        )),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!("video.source = {:?} is not built in", other.name()),
    }
}

/// Wall-clock µs since the Unix epoch.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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
    let server = endpoint::dial_addr(
        config.server.ticket.as_deref(),
        config.server.node_id.as_deref(),
        &config.server.addrs,
    )?;
    let ep = endpoint::bind(
        secret,
        &EndpointOptions {
            offline: config.network.offline,
            bind: config.network.bind,
            alpns: Vec::new(),
        },
    )
    .await?;
    tracing::info!(id = %ep.id(), name = %config.camera.name, server = %server.id, "camera starting");

    let source = make_source(&config, handles.motion.clone())?;
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
    let (_bitrate_tx, bitrate) = watch::channel(config.video.bitrate_kbps);
    let sampler = telemetry::spawn_sampler(
        config.telemetry.clone(),
        telemetry::Inputs {
            modem: Some(modem.status.clone()),
            gnss: Some(gnss.fix.clone()),
            bitrate_kbps: Some(bitrate),
            motion: Some(motion_active),
        },
        aux_tx,
        cancel.clone(),
    );
    let (state_tx, _state_rx) = watch::channel(LinkState::Connecting { attempt: 0 });
    let (initial, max) = config.reconnect_bounds();
    let opts = UplinkOptions {
        server,
        name: config.camera.name.clone(),
        format,
        bitrate_kbps: config.video.bitrate_kbps,
        backoff_initial: Duration::from_millis(initial),
        backoff_max: Duration::from_millis(max),
    };
    let io = UplinkIo {
        frames: capture.frames,
        aux: aux_rx,
        control: capture.control,
        state: state_tx,
    };
    uplink::run(ep.clone(), opts, io, cancel.clone()).await;
    cancel.cancel();
    ep.close().await;
    let _ = sampler.await;
    let _ = motion_task.await;
    if let Some(t) = pir_task {
        let _ = t.await;
    }
    let _ = gnss.task.await;
    let _ = clock_task.await;
    modem.join().await;
    match tokio::task::spawn_blocking(move || capture.thread.join()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e).context("video source failed"),
        Ok(Err(_)) | Err(_) => anyhow::bail!("capture thread panicked"),
    }
}
