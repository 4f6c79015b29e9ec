//! `kodama-server`: the recording server's entry point.

use clap::Parser;
use kodama_server::app;
use kodama_server::cli::{Cli, ServerCommand, TokenAction};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,iroh=warn,noq=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        // Recent events for `kodama-server top` (GET /api/v1/overview).
        .with(kodama_server::metrics::recent::RecentLayer)
        .init();
    let cli = Cli::parse();
    let config = cli.common.resolve()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let signals = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            signals.cancel();
        });
        match cli.command.unwrap_or(ServerCommand::Run) {
            ServerCommand::Run => app::run(config, cancel).await,
            ServerCommand::Id => app::print_id(&config),
            ServerCommand::Relay => kodama_server::relay_mode::run(config, cancel).await,
            ServerCommand::Allow { action } => app::allow(&config, action),
            ServerCommand::Camera { action } => app::camera(&config, action).await,
            ServerCommand::Viewer { action } => app::viewer_cmd(&config, action),
            ServerCommand::View(args) => app::view(&config, args, cancel).await,
            ServerCommand::Token {
                action: TokenAction::Rotate,
            } => app::rotate_token(&config),
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
