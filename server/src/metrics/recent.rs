//! The server's recent log, kept in memory for `kodama-server top`: a
//! `tracing` layer that copies every Kodama event at INFO or above (cameras
//! and viewers coming and going, recorder trouble, errors) into a bounded
//! ring the API serves as `events` in `/api/v1/overview`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Entries kept; older ones are forgotten.
pub const CAPACITY: usize = 200;

/// Longest message kept (a telemetry line can be long).
const MAX_MESSAGE: usize = 300;

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When, µs since the Unix epoch.
    pub at_us: u64,
    /// `ERROR`, `WARN` or `INFO`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields (`key=value`).
    pub message: String,
}

/// The process's ring: logging is process-wide, so is its memory.
fn ring() -> &'static Mutex<VecDeque<LogEntry>> {
    static RING: OnceLock<Mutex<VecDeque<LogEntry>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(CAPACITY)))
}

/// The newest `n` entries, oldest first.
pub fn latest(n: usize) -> Vec<LogEntry> {
    let ring = ring().lock().unwrap_or_else(|p| p.into_inner());
    ring.iter()
        .skip(ring.len().saturating_sub(n))
        .cloned()
        .collect()
}

fn push(entry: LogEntry) {
    let mut ring = ring().lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == CAPACITY {
        ring.pop_front();
    }
    ring.push_back(entry);
}

/// The layer `kodama-server` installs beside its log output.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecentLayer;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() >= MAX_MESSAGE {
            return;
        }
        if field.name() == "message" {
            let mut text = format!("{value:?}");
            if !self.0.is_empty() {
                text.push(' ');
                text.push_str(&self.0);
            }
            self.0 = text;
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || !meta.target().starts_with("kodama") {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let mut text = message.0;
        if text.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        push(LogEntry {
            at_us: crate::stats::now_us(),
            level: meta.level().to_string(),
            target: meta.target().to_owned(),
            message: text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_kodama_events_at_info_and_above_with_their_fields() {
        let subscriber = tracing_subscriber::registry().with(RecentLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "kodama_server::camera_session", camera = "porch", "camera connected");
            tracing::debug!(target: "kodama_server::hub", "not kept: debug");
            tracing::warn!(target: "iroh::magicsock", "not kept: not ours");
            tracing::error!(target: "kodama_server::recorder", "disk full: {}", "/data");
        });
        let all = latest(CAPACITY);
        let ours: Vec<_> = all
            .iter()
            .filter(|e| e.target.starts_with("kodama_server::"))
            .collect();
        assert!(ours
            .iter()
            .any(|e| e.level == "INFO" && e.message == "camera connected camera=\"porch\""));
        assert!(ours
            .iter()
            .any(|e| e.level == "ERROR" && e.message == "disk full: /data"));
        assert!(!all.iter().any(|e| e.message.starts_with("not kept")));
        for _ in 0..CAPACITY + 10 {
            push(LogEntry {
                at_us: 0,
                level: "INFO".into(),
                target: "kodama".into(),
                message: "x".into(),
            });
        }
        assert_eq!(latest(usize::MAX).len(), CAPACITY);
    }
}
