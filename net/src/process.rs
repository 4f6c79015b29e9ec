//! Process plumbing both binaries share: how they log and when they stop.
//! It lives here because `kodama-net` is the one crate `kodama-server` and
//! `kodama-camera` both build on at run time.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The log filter when `RUST_LOG` is not set: our own info, iroh's and
/// QUIC's warnings only.
pub const DEFAULT_LOG_FILTER: &str = "info,iroh=warn,noq=warn";

/// Logs to stderr (colours only on a terminal), filtered by `RUST_LOG` or
/// [`DEFAULT_LOG_FILTER`]; `extra` sees the same events (the server's
/// recent-events layer for `kodama-server top`).
pub fn init_logging(extra: Option<Box<dyn Layer<Registry> + Send + Sync>>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let print = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(extra)
        .with(print)
        .with(filter)
        .init();
}

/// Resolves on SIGTERM (systemd, `kill`) or Ctrl-C.
pub async fn shutdown_signal() {
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
