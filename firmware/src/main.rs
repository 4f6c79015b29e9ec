//! `kodama-camera`: the camera firmware's entry point.

use clap::Parser;
use kodama_firmware::app::{self, AppHandles};
use kodama_firmware::cli::{CameraCommand, Cli, DiagCommand};
use kodama_firmware::diag;
use kodama_net::process::{init_logging, shutdown_signal};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    init_logging(None);
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(CameraCommand::Run) {
            CameraCommand::Id => {
                let path = cli
                    .run
                    .key_path
                    .clone()
                    .or_else(|| {
                        cli.run
                            .config
                            .as_ref()
                            .and_then(|p| kodama_firmware::config::Config::load(p).ok())
                            .map(|c| c.camera.key_path)
                    })
                    .or_else(|| {
                        // On the SD-card image the key lives on the data partition.
                        kodama_firmware::firstboot::BootDirs::from_env().map(|d| d.key_path())
                    })
                    .unwrap_or_else(|| "camera.key".into());
                let key = kodama_net::endpoint::load_or_create_key(&path)?;
                println!("{}", key.public());
                Ok(())
            }
            CameraCommand::Diag { what } => run_diag(what).await,
            CameraCommand::Run => {
                let cancel = CancellationToken::new();
                let signals = cancel.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                    signals.cancel();
                });
                // On the SD-card image (KODAMA_BOOT_DIR/KODAMA_DATA_DIR set): key on
                // the data partition, node id and status files on the boot partition.
                let config = match kodama_firmware::firstboot::BootDirs::from_env() {
                    Some(dirs) => {
                        kodama_firmware::firstboot::prepare_or_signal(
                            &dirs,
                            |_| cli.run.resolve(),
                            &cancel,
                        )
                        .await?
                    }
                    None => cli.run.resolve()?,
                };
                app::run(config, AppHandles::default(), cancel).await
            }
        }
    })
}

async fn run_diag(what: DiagCommand) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    match what {
        DiagCommand::Modem {
            port,
            baud,
            timeout,
        } => {
            let report = kodama_firmware::hw::modem::diag::diag_modem(
                &port,
                baud,
                std::time::Duration::from_secs(timeout),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        DiagCommand::Nmea { input } => {
            diag::nmea::run(diag::open_input(&input)?, stdout.lock())?;
        }
        DiagCommand::H264 { input } => {
            diag::h264::run(diag::open_input(&input)?, stdout.lock())?;
        }
        DiagCommand::Telemetry { root } => {
            let mut cfg = kodama_firmware::telemetry::TelemetryConfig::default();
            if let Some(root) = root {
                cfg.root = root;
            }
            diag::telemetry::run(&cfg, std::time::Duration::from_secs(1), stdout.lock()).await?;
        }
    }
    Ok(())
}
