//! `kodama-server`: the recording server's entry point.

use clap::Parser;
use kodama_net::process::{init_logging, shutdown_signal};
use kodama_server::app;
use kodama_server::cli::{Cli, ServerCommand, TokenAction};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    // Recent events for `kodama-server top` (GET /api/v1/overview).
    init_logging(Some(Box::new(kodama_server::metrics::recent::RecentLayer)));
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
            ServerCommand::Top => {
                kodama_server::top::run(&config.server.data_dir, &config.api, cancel).await
            }
            ServerCommand::Token {
                action: TokenAction::Rotate,
            } => app::rotate_token(&config),
        }
    })
}
