//! Wires the camera together: identity, endpoint, video source, capture
//! thread, modem, GNSS, motion detection, telemetry and uplink, all under
//! one cancellation token.

use std::time::Duration;

use anyhow::Context;
use kodama_net::endpoint::{self, EndpointOptions};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, VideoSourceKind};
use crate::link::{self, LinkSet, LinkSetOptions};
use crate::uplink::{self, LinkState, UplinkIo, UplinkOptions};
use crate::video::synthetic::{MotionSwitch, SyntheticSource};
use crate::video::{self, VideoSource};
use crate::{hw, motion, telemetry};

/// Handles the app exposes to tests and the demo.
#[derive(Debug, Clone, Default)]
pub struct AppHandles {
    /// Injects motion into a synthetic source.
    pub motion: MotionSwitch,
}

/// Builds the configured video source.
pub fn make_source(config: &Config, motion: MotionSwitch) -> anyhow::Result<Box<dyn VideoSource>> {
    match config.video.source {
        VideoSourceKind::Synthetic => Ok(Box::new(
            SyntheticSource::new(config.video.settings(), true, motion)
                .context("starting the synthetic video source")?,
        )),
        #[cfg(feature = "pi")]
        VideoSourceKind::Pi => Ok(Box::new(
            video::pi::PiCameraSource::open(video::pi::PiCameraConfig::new(
                config.video.settings(),
            ))
            .context("opening the IMX219 camera and the hardware H.264 encoder")?,
        )),
        #[cfg(not(feature = "pi"))]
        VideoSourceKind::Pi => {
            anyhow::bail!("video.source = \"pi\" needs a firmware built with the `pi` feature")
        }
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
    let gnss = hw::gnss::spawn(&config.gnss, cancel.clone()).context("starting GNSS")?;
    let (motion_tx, motion_active) = watch::channel(false);
    let motion_task = tokio::spawn(motion::run(
        config.motion.clone(),
        capture.luma,
        aux_tx.clone(),
        motion_tx,
        cancel.clone(),
    ));
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
        links,
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
    let _ = gnss.task.await;
    modem.join().await;
    match tokio::task::spawn_blocking(move || capture.thread.join()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e).context("video source failed"),
        Ok(Err(_)) | Err(_) => anyhow::bail!("capture thread panicked"),
    }
}
