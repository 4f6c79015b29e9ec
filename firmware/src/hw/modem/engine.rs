//! The sans-IO AT engine: commands as types, one command in flight, per-command
//! deadlines, URCs passed through. No clock reads, no sockets: every input
//! carries `now`, every output is polled (the quinn-proto shape). The tokio
//! driver in [`super::client`] is a thin loop around [`AtCore`].

use std::time::{Duration, Instant};

use super::digest::{DigestStats, Digested, Digester, ResultCodeError};

/// An AT command with its response type, timeout and attempts (atat's
/// `AtatCmd` model).
pub trait AtCommand {
    /// What a successful answer parses into.
    type Response;

    /// The command text without the trailing `\r`, e.g. `AT+CSQ`.
    fn text(&self) -> String;

    /// How long to wait for the final result code (the SIM7600 AT manual gives a
    /// maximum response time per command).
    fn timeout(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// How many times to send it before giving up (each attempt gets the full
    /// timeout).
    fn attempts(&self) -> u8 {
        1
    }

    /// Data sent after the `> ` prompt (terminated with Ctrl-Z by the driver);
    /// `None` for commands without a prompt.
    fn payload(&self) -> Option<&[u8]> {
        None
    }

    /// Parse the information lines of an `OK` answer.
    fn parse(&self, lines: &[String]) -> Result<Self::Response, ParseError>;
}

/// A response that did not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {what}: {line:?}")]
pub struct ParseError {
    /// What was expected (e.g. `+CSQ: <rssi>,<ber>`).
    pub what: &'static str,
    /// The offending line (or the lines joined), truncated to 120 bytes.
    pub line: String,
}

impl ParseError {
    /// A parse error about `line`.
    pub fn new(what: &'static str, line: &str) -> Self {
        let mut line = line.to_string();
        if line.len() > 120 {
            let mut cut = 120;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        Self { what, line }
    }
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The modem refused it with a final result code.
    #[error("{command}: {error}")]
    Rejected {
        /// Command text.
        command: String,
        /// The result code.
        error: ResultCodeError,
    },
    /// No final result code within the command's timeout (on every attempt).
    #[error("{command}: no answer within {timeout:?}")]
    Timeout {
        /// Command text.
        command: String,
        /// The per-attempt timeout.
        timeout: Duration,
    },
    /// `OK`, but the information lines did not parse.
    #[error("{command}: {error}")]
    Parse {
        /// Command text.
        command: String,
        /// What was wrong.
        error: ParseError,
    },
    /// The driver task has stopped (port closed, I/O error, or cancelled).
    #[error("{command}: AT driver stopped")]
    Closed {
        /// Command text.
        command: String,
    },
    /// The caller's cancellation token fired while waiting.
    #[error("{command}: cancelled")]
    Cancelled {
        /// Command text.
        command: String,
    },
}

impl CommandError {
    /// The modem did not answer at all (counts towards recovery).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CommandError::Timeout { .. })
    }

    /// The `+CME ERROR` code, if that is what this is.
    pub fn cme(&self) -> Option<&super::digest::CmeError> {
        match self {
            CommandError::Rejected {
                error: ResultCodeError::Cme(c),
                ..
            } => Some(c),
            _ => None,
        }
    }
}

/// Returned by [`AtCore::start`] when a command is already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an AT command is already in flight")]
pub struct Busy;

/// What the core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// The command in flight finished.
    Response(Result<Vec<String>, ResultCodeError>),
    /// The command in flight reached its deadline; it was abandoned.
    TimedOut,
    /// An unsolicited line.
    Urc(String),
    /// The data prompt for the command in flight: write its payload + Ctrl-Z.
    Prompt,
}

#[derive(Debug)]
struct InFlight {
    deadline: Instant,
}

/// One-command-at-a-time AT state machine around the [`Digester`].
#[derive(Debug, Default)]
pub struct AtCore {
    digester: Digester,
    in_flight: Option<InFlight>,
    timed_out: bool,
}

impl AtCore {
    /// A core with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begin `command` at `now`; returns the bytes to write (`command` + CR,
    /// V.250 §5.2.1: the command line is terminated by S3, default CR).
    pub fn start(
        &mut self,
        command: &str,
        prompt: bool,
        timeout: Duration,
        now: Instant,
    ) -> Result<Vec<u8>, Busy> {
        if self.in_flight.is_some() {
            return Err(Busy);
        }
        self.digester.begin(command, prompt);
        self.in_flight = Some(InFlight {
            deadline: now + timeout,
        });
        let mut out = Vec::with_capacity(command.len() + 1);
        out.extend_from_slice(command.as_bytes());
        out.push(b'\r');
        Ok(out)
    }

    /// Bytes read from the modem.
    pub fn handle_input(&mut self, data: &[u8]) {
        self.digester.push(data);
    }

    /// Time passed; abandons the command in flight if its deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(f) = &self.in_flight {
            if now >= f.deadline {
                self.in_flight = None;
                self.digester.abort();
                self.timed_out = true;
            }
        }
    }

    /// When [`AtCore::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// Whether a command is in flight.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        if std::mem::take(&mut self.timed_out) {
            return Some(CoreEvent::TimedOut);
        }
        Some(match self.digester.poll()? {
            Digested::Response(r) => {
                self.in_flight = None;
                CoreEvent::Response(r)
            }
            Digested::Urc(u) => CoreEvent::Urc(u),
            Digested::Prompt => CoreEvent::Prompt,
        })
    }

    /// Counters of dropped input.
    pub fn stats(&self) -> DigestStats {
        self.digester.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_flight_then_response() {
        let t0 = Instant::now();
        let mut core = AtCore::new();
        let bytes = core
            .start("AT+CSQ", false, Duration::from_secs(1), t0)
            .unwrap();
        assert_eq!(bytes, b"AT+CSQ\r");
        assert_eq!(
            core.start("AT", false, Duration::from_secs(1), t0),
            Err(Busy)
        );
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        core.handle_input(b"\r\n+CSQ: 9,99\r\n\r\nRI");
        assert_eq!(core.poll_event(), None);
        core.handle_input(b"NG\r\n\r\nOK\r\n");
        // The URC arrived after the info line but before OK: reported first.
        assert_eq!(core.poll_event(), Some(CoreEvent::Urc("RING".into())));
        assert_eq!(
            core.poll_event(),
            Some(CoreEvent::Response(Ok(vec!["+CSQ: 9,99".into()])))
        );
        assert!(!core.is_busy());
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn deadline_abandons_command() {
        let t0 = Instant::now();
        let mut core = AtCore::new();
        core.start("AT", false, Duration::from_millis(300), t0)
            .unwrap();
        core.handle_timeout(t0 + Duration::from_millis(299));
        assert!(core.is_busy());
        core.handle_timeout(t0 + Duration::from_millis(300));
        assert_eq!(core.poll_event(), Some(CoreEvent::TimedOut));
        assert!(!core.is_busy());
        // The late OK is stray, and the next command gets its own answer.
        core.handle_input(b"\r\nOK\r\n");
        assert_eq!(core.poll_event(), None);
        core.start("ATE0", false, Duration::from_secs(1), t0)
            .unwrap();
        core.handle_input(b"ATE0\r\r\nOK\r\n");
        assert_eq!(core.poll_event(), Some(CoreEvent::Response(Ok(vec![]))));
        assert_eq!(core.stats().stray_finals, 1);
    }

    #[test]
    fn parse_error_truncates_long_lines() {
        let long = "é".repeat(200);
        let e = ParseError::new("x", &long);
        assert!(e.line.len() <= 120);
    }
}
