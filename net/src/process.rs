//! Process plumbing both binaries share: how they log and when they stop.
//! It lives here because `kodama-net` is the one crate `kodama-server` and
//! `kodama-camera` both build on at run time.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The log filter when `RUST_LOG` is not set: our own info, iroh's and
/// QUIC's warnings only.
pub const DEFAULT_LOG_FILTER: &str = "info,iroh=warn,noq=warn";

/// Logs to stderr (colours only on a terminal), filtered by `RUST_LOG` or
/// [`DEFAULT_LOG_FILTER`]; `extra` sees the same events (the server's
/// recent-events layer for `kodama-server top`).
///
/// `RUST_LOG` is a comma-separated list of `level` and `target=level`
/// directives (`info,kodama_firmware::uplink=debug,iroh=warn`), the usual
/// `env_logger`/`EnvFilter` form without span and field filters: those
/// need a regex engine, which the camera firmware leaves out for size. A
/// value that does not parse is reported and the default used instead.
pub fn init_logging(extra: Option<Box<dyn Layer<Registry> + Send + Sync>>) {
    let from_env = std::env::var("RUST_LOG").ok();
    let (filter, rejected) = log_filter(from_env.as_deref());
    let print = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(extra)
        .with(print)
        .with(filter)
        .init();
    if let Some(reason) = rejected {
        tracing::warn!(
            "RUST_LOG={:?} is not a log filter ({reason}); logging with {DEFAULT_LOG_FILTER:?}",
            from_env.unwrap_or_default()
        );
    }
}

/// The filter for a `RUST_LOG` value (`None`: unset), and why the value was
/// rejected if it was.
fn log_filter(value: Option<&str>) -> (Targets, Option<String>) {
    let default = || {
        DEFAULT_LOG_FILTER
            .parse::<Targets>()
            .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
    };
    match value.map(str::trim) {
        None | Some("") => (default(), None),
        // `Targets` would read `target[span]=debug` as a target named
        // `target[span]` and never match it: say so instead.
        Some(text) if text.contains(['[', ']', '{', '}']) => (
            default(),
            Some("span and field filters are not supported, only target=level".to_owned()),
        ),
        Some(text) => match text.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (default(), Some(e.to_string())),
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;
    use tracing::Level;

    fn level_of(filter: &Targets, target: &str) -> Option<Level> {
        [
            Level::TRACE,
            Level::DEBUG,
            Level::INFO,
            Level::WARN,
            Level::ERROR,
        ]
        .into_iter()
        .find(|level| filter.would_enable(target, level))
    }

    #[test]
    fn unset_or_empty_rust_log_logs_our_info_and_iroh_warnings() {
        for value in [None, Some(""), Some("  ")] {
            let (filter, rejected) = log_filter(value);
            assert_eq!(rejected, None);
            assert_eq!(
                level_of(&filter, "kodama_firmware::uplink"),
                Some(Level::INFO)
            );
            assert_eq!(level_of(&filter, "iroh::socket"), Some(Level::WARN));
            // A target is a prefix, as in `EnvFilter`: `noq` covers `noq_proto`.
            assert_eq!(
                level_of(&filter, "noq_proto::connection"),
                Some(Level::WARN)
            );
            assert_eq!(level_of(&filter, "rustls::client"), Some(Level::INFO));
            assert_eq!(level_of(&filter, "noq::endpoint"), Some(Level::WARN));
        }
    }

    #[test]
    fn rust_log_targets_and_levels_are_honoured() {
        let (filter, rejected) = log_filter(Some(
            "warn,kodama_firmware::uplink=debug,iroh=off,noq_proto=trace",
        ));
        assert_eq!(rejected, None);
        assert_eq!(
            level_of(&filter, "kodama_firmware::uplink"),
            Some(Level::DEBUG)
        );
        assert_eq!(level_of(&filter, "kodama_firmware::app"), Some(Level::WARN));
        assert_eq!(level_of(&filter, "iroh::socket"), None);
        assert_eq!(
            level_of(&filter, "noq_proto::connection"),
            Some(Level::TRACE)
        );
        assert_eq!(filter.default_level(), Some(LevelFilter::WARN));

        let (filter, _) = log_filter(Some("debug"));
        assert_eq!(level_of(&filter, "kodama_server::hub"), Some(Level::DEBUG));
    }

    #[test]
    fn a_malformed_rust_log_falls_back_to_the_default_with_a_reason() {
        for bad in [
            "kodama=loud",
            "iroh=warn=debug",
            "kodama_firmware[uplink]=debug",
            "iroh{peer=x}=trace",
        ] {
            let (filter, rejected) = log_filter(Some(bad));
            assert!(rejected.is_some(), "{bad:?} was accepted");
            assert_eq!(
                level_of(&filter, "kodama_firmware"),
                Some(Level::INFO),
                "{bad:?}"
            );
            assert_eq!(level_of(&filter, "iroh"), Some(Level::WARN), "{bad:?}");
        }
    }
}
