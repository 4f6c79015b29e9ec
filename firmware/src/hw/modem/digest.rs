//! The AT digester: a pure, byte-at-a-time splitter of modem output into
//! command responses, unsolicited result codes (URCs) and data prompts.
//!
//! Calling contract (same shape as atat's `Digester`, without its I/O):
//! 1. [`Digester::begin`] when a command has been written (its text is used to
//!    drop the echo and to claim lines carrying the command's `+XXX:` prefix);
//! 2. [`Digester::push`] every chunk read from the port, in order, split anywhere;
//! 3. [`Digester::poll`] until `None` after each push.
//!
//! Framing follows ITU-T V.250 §5.7.1 (`ATV1`): each information line and result
//! code is wrapped in `<CR><LF>`; the echo of a command ends with `<CR>` only.
//! Any run of CR/LF therefore ends a line, and empty lines are skipped. Bytes
//! outside printable ASCII are dropped and counted (UART noise at power-up, a
//! baud-rate mismatch), so garbage never reaches a response parser as control
//! characters. Lines longer than [`MAX_LINE`] are discarded up to the next line
//! end; responses keep at most [`MAX_RESPONSE_LINES`] lines; at most
//! [`MAX_EVENTS`] events wait for `poll` (oldest URCs dropped first). Memory
//! is bounded whatever the modem sends.

use std::collections::VecDeque;
use std::fmt;

/// Longest line kept, in bytes. SIM7600's longest routine answers (`+CPSI:`,
/// `+COPS=?` lists) stay well under this.
pub const MAX_LINE: usize = 1_024;
/// Most information lines kept for one response.
pub const MAX_RESPONSE_LINES: usize = 64;
/// Most events buffered between polls.
pub const MAX_EVENTS: usize = 128;

/// Mobile equipment errors, `+CME ERROR: <err>` (3GPP TS 27.007 §9.2.1; the
/// SIM7600 AT manual's "Summary of CME ERROR codes" uses the same numbers).
/// With `AT+CMEE=2` the modem sends the text instead of the number; both map to
/// the same variant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CmeError {
    /// 0: phone failure.
    PhoneFailure,
    /// 3: operation not allowed.
    OperationNotAllowed,
    /// 4: operation not supported.
    OperationNotSupported,
    /// 10: SIM not inserted.
    SimNotInserted,
    /// 11: SIM PIN required.
    SimPinRequired,
    /// 12: SIM PUK required.
    SimPukRequired,
    /// 13: SIM failure.
    SimFailure,
    /// 14: SIM busy (typically for a few seconds after boot).
    SimBusy,
    /// 15: SIM wrong.
    SimWrong,
    /// 16: incorrect password.
    IncorrectPassword,
    /// 30: no network service.
    NoNetworkService,
    /// 31: network timeout.
    NetworkTimeout,
    /// 100: unknown.
    Unknown,
    /// Any other numeric code.
    Code(u16),
    /// A verbose text the table does not know.
    Text(String),
}

const CME_TABLE: &[(u16, &str, CmeError)] = &[
    (0, "phone failure", CmeError::PhoneFailure),
    (3, "operation not allowed", CmeError::OperationNotAllowed),
    (
        4,
        "operation not supported",
        CmeError::OperationNotSupported,
    ),
    (10, "SIM not inserted", CmeError::SimNotInserted),
    (11, "SIM PIN required", CmeError::SimPinRequired),
    (12, "SIM PUK required", CmeError::SimPukRequired),
    (13, "SIM failure", CmeError::SimFailure),
    (14, "SIM busy", CmeError::SimBusy),
    (15, "SIM wrong", CmeError::SimWrong),
    (16, "incorrect password", CmeError::IncorrectPassword),
    (30, "no network service", CmeError::NoNetworkService),
    (31, "network timeout", CmeError::NetworkTimeout),
    (100, "unknown", CmeError::Unknown),
];

impl CmeError {
    /// Map a numeric code.
    pub fn from_code(code: u16) -> Self {
        CME_TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, _, e)| e.clone())
            .unwrap_or(CmeError::Code(code))
    }

    /// Parse the text after `+CME ERROR:` (a number, or a verbose message).
    pub fn parse(arg: &str) -> Self {
        let arg = arg.trim();
        if let Ok(code) = arg.parse::<u16>() {
            return Self::from_code(code);
        }
        CME_TABLE
            .iter()
            .find(|(_, text, _)| text.eq_ignore_ascii_case(arg))
            .map(|(_, _, e)| e.clone())
            .unwrap_or_else(|| CmeError::Text(arg.to_string()))
    }

    /// The numeric code, when known.
    pub fn code(&self) -> Option<u16> {
        match self {
            CmeError::Code(c) => Some(*c),
            CmeError::Text(_) => None,
            other => CME_TABLE
                .iter()
                .find(|(_, _, e)| e == other)
                .map(|(c, _, _)| *c),
        }
    }
}

impl fmt::Display for CmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmeError::Code(c) => write!(f, "code {c}"),
            CmeError::Text(t) => f.write_str(t),
            other => {
                let (code, text) = CME_TABLE
                    .iter()
                    .find(|(_, _, e)| e == other)
                    .map(|(c, t, _)| (*c, *t))
                    .unwrap_or((0, "?"));
                write!(f, "{text} ({code})")
            }
        }
    }
}

/// A final result code other than `OK`: how the modem refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResultCodeError {
    /// `ERROR` (V.250 §5.7.1): not accepted, no reason given (`AT+CMEE=0`).
    #[error("modem answered ERROR")]
    Error,
    /// `+CME ERROR: <err>` (3GPP TS 27.007 §9.2): mobile equipment error.
    #[error("+CME ERROR: {0}")]
    Cme(CmeError),
    /// `+CMS ERROR: <err>` (3GPP TS 27.005 §3.2.5): message service error, code.
    #[error("+CMS ERROR: {0}")]
    Cms(u16),
    /// `+CMS ERROR: <text>` in verbose mode.
    #[error("+CMS ERROR: {0}")]
    CmsText(String),
    /// Call-control codes (`NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE`).
    #[error("modem answered {0}")]
    CallControl(String),
    /// The response had more than [`MAX_RESPONSE_LINES`] lines; the surplus was
    /// dropped, so the answer cannot be trusted.
    #[error("response longer than {MAX_RESPONSE_LINES} lines")]
    TooLong,
}

/// What the digester recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digested {
    /// The command begun with [`Digester::begin`] finished: its information
    /// lines (echo removed), or the refusal.
    Response(Result<Vec<String>, ResultCodeError>),
    /// An unsolicited line (a URC, or an unknown line outside a command).
    Urc(String),
    /// The `> ` data prompt (e.g. `AT+CMGS`), only when begun with `prompt`.
    Prompt,
}

/// Counters of what the digester dropped; never reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DigestStats {
    /// Bytes outside printable ASCII dropped from lines.
    pub garbage_bytes: u64,
    /// Lines longer than [`MAX_LINE`] discarded.
    pub overlong_lines: u64,
    /// Final result codes that arrived with no command in flight.
    pub stray_finals: u64,
    /// URCs dropped because nobody polled.
    pub dropped_urcs: u64,
}

#[derive(Debug)]
struct Pending {
    /// Upper-cased command text, for echo matching.
    echo: String,
    echo_seen: bool,
    /// `+CSQ:` for `AT+CSQ`, `$QCRMCALL:` for `AT$QCRMCALL?`…
    prefix: Option<String>,
    prompt: bool,
    lines: Vec<String>,
    overflow: bool,
}

/// The digester. See the module docs for the calling contract.
#[derive(Debug, Default)]
pub struct Digester {
    line: Vec<u8>,
    discarding: bool,
    pending: Option<Pending>,
    events: VecDeque<Digested>,
    stats: DigestStats,
}

/// Prefixes of the unsolicited result codes a SIM7600 sends (its AT manual
/// lists them per command; "Summary of unsolicited result codes"). A line with
/// one of these prefixes is a URC unless it carries the in-flight command's
/// own prefix (e.g. `+CREG:` answering `AT+CREG?`).
pub const URC_PREFIXES: &[&str] = &[
    "RDY",
    "+CPIN:",
    "SMS DONE",
    "PB DONE",
    "+CREG:",
    "+CEREG:",
    "+CGREG:",
    "+CGEV:",
    "+CTZV:",
    "+CTZE:",
    "*PSUTTZ:",
    "DST:",
    "+CMTI:",
    "+CMT:",
    "+CDSI:",
    "RING",
    "+CLIP:",
    "+CRING:",
    "VOICE CALL:",
    "MISSED_CALL:",
    "+CSQ:",
    "+CPSI:",
    "+CGNSSINFO:",
    "+CGPSINFO:",
    "+CPING:",
    "+CIPEVENT:",
    "+CIPCLOSE:",
    "+CNMP:",
    "+SIMCARD:",
    "+STIN:",
    "+CUSD:",
    "$QCRMCALL:",
    "START",
];

fn is_urc(line: &str) -> bool {
    URC_PREFIXES
        .iter()
        .any(|p| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p))
}

/// The information-response prefix of a command: `AT+CSQ` → `+CSQ:`,
/// `AT$QCRMCALL=1,1` → `$QCRMCALL:`; basic commands (`ATE0`, `ATI`) have none.
pub fn response_prefix(command: &str) -> Option<String> {
    let rest = command.get(2..)?;
    if !command[..2].eq_ignore_ascii_case("AT") {
        return None;
    }
    let first = rest.chars().next()?;
    if !matches!(first, '+' | '$' | '*' | '^' | '#') {
        return None;
    }
    let name: String = rest
        .chars()
        .take_while(|c| !matches!(c, '=' | '?' | ';'))
        .collect();
    if name.len() < 2 {
        return None;
    }
    Some(format!("{}:", name.to_ascii_uppercase()))
}

enum Final {
    Ok,
    Err(ResultCodeError),
}

fn final_code(line: &str) -> Option<Final> {
    let upper = line.to_ascii_uppercase();
    match upper.as_str() {
        "OK" => return Some(Final::Ok),
        "ERROR" => return Some(Final::Err(ResultCodeError::Error)),
        "NO CARRIER" | "BUSY" | "NO ANSWER" | "NO DIALTONE" => {
            return Some(Final::Err(ResultCodeError::CallControl(upper)))
        }
        _ => {}
    }
    if upper.starts_with("+CME ERROR:") {
        let arg = &line["+CME ERROR:".len()..];
        return Some(Final::Err(ResultCodeError::Cme(CmeError::parse(arg))));
    }
    if upper.starts_with("+CMS ERROR:") {
        let arg = line["+CMS ERROR:".len()..].trim();
        return Some(Final::Err(match arg.parse::<u16>() {
            Ok(c) => ResultCodeError::Cms(c),
            Err(_) => ResultCodeError::CmsText(arg.to_string()),
        }));
    }
    None
}

impl Digester {
    /// A fresh digester with no command in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// A command was written; `command` is its text without the trailing CR.
    /// `prompt`: the command answers with a `> ` data prompt before its result.
    /// A previous unfinished command is abandoned.
    pub fn begin(&mut self, command: &str, prompt: bool) {
        self.pending = Some(Pending {
            echo: command.trim().to_ascii_uppercase(),
            echo_seen: false,
            prefix: response_prefix(command.trim()),
            prompt,
            lines: Vec::new(),
            overflow: false,
        });
    }

    /// Abandon the command in flight (it timed out); returns whether one was.
    /// Its late result code will be counted as stray.
    pub fn abort(&mut self) -> bool {
        self.pending.take().is_some()
    }

    /// Whether a command is in flight.
    pub fn in_flight(&self) -> bool {
        self.pending.is_some()
    }

    /// Counters of dropped input.
    pub fn stats(&self) -> DigestStats {
        self.stats
    }

    /// Assert the memory bounds (for fuzz targets and property tests).
    ///
    /// # Panics
    /// If the line buffer, the event queue or a pending response exceeds its bound.
    pub fn check_invariants(&self) {
        assert!(self.line.len() <= MAX_LINE, "line buffer over MAX_LINE");
        assert!(
            self.events.len() <= MAX_EVENTS,
            "event queue over MAX_EVENTS"
        );
        if let Some(p) = &self.pending {
            assert!(
                p.lines.len() <= MAX_RESPONSE_LINES,
                "response over MAX_RESPONSE_LINES"
            );
        }
    }

    /// Feed bytes read from the modem.
    pub fn push(&mut self, data: &[u8]) {
        for &b in data {
            self.push_byte(b);
        }
    }

    /// The next recognised event, if any.
    pub fn poll(&mut self) -> Option<Digested> {
        self.events.pop_front()
    }

    fn push_byte(&mut self, b: u8) {
        match b {
            b'\r' | b'\n' => {
                if self.discarding {
                    self.discarding = false;
                    self.stats.overlong_lines += 1;
                } else if !self.line.is_empty() {
                    let raw = std::mem::take(&mut self.line);
                    self.complete_line(&raw);
                }
            }
            0x20..=0x7e | b'\t' => {
                if self.discarding {
                    return;
                }
                if self.line.len() >= MAX_LINE {
                    self.line.clear();
                    self.discarding = true;
                    return;
                }
                self.line.push(b);
                if self.line == b"> " && self.pending.as_ref().is_some_and(|p| p.prompt) {
                    self.line.clear();
                    self.emit(Digested::Prompt);
                }
            }
            _ => self.stats.garbage_bytes += 1,
        }
    }

    fn emit(&mut self, event: Digested) {
        if self.events.len() >= MAX_EVENTS {
            if let Some(pos) = self
                .events
                .iter()
                .position(|e| matches!(e, Digested::Urc(_)))
            {
                self.events.remove(pos);
                self.stats.dropped_urcs += 1;
            } else if matches!(event, Digested::Urc(_)) {
                self.stats.dropped_urcs += 1;
                return;
            }
        }
        self.events.push_back(event);
    }

    fn complete_line(&mut self, raw: &[u8]) {
        // Only printable ASCII reaches here, so this is lossless.
        let text = String::from_utf8_lossy(raw);
        let line = text.trim();
        if line.is_empty() {
            return;
        }
        let Some(p) = self.pending.as_mut() else {
            if final_code(line).is_some() {
                self.stats.stray_finals += 1;
            } else {
                self.emit(Digested::Urc(line.to_string()));
            }
            return;
        };
        let upper = line.to_ascii_uppercase();
        // Echo (ATE1): the command text, possibly after noise on the same line.
        if !p.echo_seen && !p.echo.is_empty() && upper.ends_with(&p.echo) {
            p.echo_seen = true;
            return;
        }
        if let Some(fin) = final_code(line) {
            let Some(p) = self.pending.take() else {
                return;
            };
            let result = match fin {
                Final::Ok if p.overflow => Err(ResultCodeError::TooLong),
                Final::Ok => Ok(p.lines),
                Final::Err(e) => Err(e),
            };
            self.emit(Digested::Response(result));
            return;
        }
        let own = p
            .prefix
            .as_deref()
            .is_some_and(|pre| upper.starts_with(pre));
        if !own && is_urc(line) {
            self.emit(Digested::Urc(line.to_string()));
            return;
        }
        if p.lines.len() >= MAX_RESPONSE_LINES {
            p.overflow = true;
        } else {
            p.lines.push(line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(cmd: Option<&str>, input: &[u8]) -> Vec<Digested> {
        let mut d = Digester::new();
        if let Some(c) = cmd {
            d.begin(c, false);
        }
        d.push(input);
        std::iter::from_fn(|| d.poll()).collect()
    }

    fn ok(lines: &[&str]) -> Digested {
        Digested::Response(Ok(lines.iter().map(|s| s.to_string()).collect()))
    }

    fn urc(s: &str) -> Digested {
        Digested::Urc(s.to_string())
    }

    #[test]
    fn table() {
        use ResultCodeError as R;
        type Case<'a> = (&'a str, Option<&'a str>, &'a [u8], Vec<Digested>);
        let cases: Vec<Case> =
            vec![
            ("plain OK", Some("AT"), b"\r\nOK\r\n", vec![ok(&[])]),
            ("echo on", Some("AT"), b"AT\r\r\nOK\r\n", vec![ok(&[])]),
            (
                "echo + info",
                Some("AT+CSQ"),
                b"AT+CSQ\r\r\n+CSQ: 23,99\r\n\r\nOK\r\n",
                vec![ok(&["+CSQ: 23,99"])],
            ),
            (
                "no echo + info",
                Some("AT+CSQ"),
                b"\r\n+CSQ: 23,99\r\n\r\nOK\r\n",
                vec![ok(&["+CSQ: 23,99"])],
            ),
            ("ERROR", Some("AT+FOO"), b"\r\nERROR\r\n", vec![Digested::Response(Err(R::Error))]),
            (
                "CME numeric",
                Some("AT+CPIN?"),
                b"\r\n+CME ERROR: 10\r\n",
                vec![Digested::Response(Err(R::Cme(CmeError::SimNotInserted)))],
            ),
            (
                "CME verbose",
                Some("AT+CPIN?"),
                b"\r\n+CME ERROR: SIM not inserted\r\n",
                vec![Digested::Response(Err(R::Cme(CmeError::SimNotInserted)))],
            ),
            (
                "CME unknown code",
                Some("AT+CPIN?"),
                b"\r\n+CME ERROR: 999\r\n",
                vec![Digested::Response(Err(R::Cme(CmeError::Code(999))))],
            ),
            (
                "CMS",
                Some("AT+CMGS=\"1\""),
                b"\r\n+CMS ERROR: 305\r\n",
                vec![Digested::Response(Err(R::Cms(305)))],
            ),
            (
                "URC between info and OK",
                Some("AT+CPSI?"),
                b"\r\n+CPSI: LTE,Online\r\n\r\n+CMTI: \"SM\",1\r\n\r\nOK\r\n",
                vec![urc("+CMTI: \"SM\",1"), ok(&["+CPSI: LTE,Online"])],
            ),
            (
                "own prefix is response, not URC",
                Some("AT+CREG?"),
                b"\r\n+CREG: 0,1\r\n\r\nOK\r\n",
                vec![ok(&["+CREG: 0,1"])],
            ),
            (
                "URC with no command",
                None,
                b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n",
                vec![urc("RDY"), urc("+CPIN: READY"), urc("SMS DONE"), urc("PB DONE")],
            ),
            ("stray OK ignored", None, b"\r\nOK\r\n", vec![]),
            (
                "garbage bytes dropped",
                Some("AT+CSQ"),
                b"\x00\xff\r\n+CSQ: \x8023,99\r\n\xfe\r\nOK\r\n",
                vec![ok(&["+CSQ: 23,99"])],
            ),
            (
                "noise before echo",
                Some("AT+CSQ"),
                b"#!AT+CSQ\r\r\n+CSQ: 5,99\r\n\r\nOK\r\n",
                vec![ok(&["+CSQ: 5,99"])],
            ),
            (
                "plain info lines (ATI)",
                Some("ATI"),
                b"\r\nManufacturer: SIMCOM INCORPORATED\r\nModel: SIMCOM_SIM7600E-H\r\n\r\nOK\r\n",
                vec![ok(&["Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600E-H"])],
            ),
            (
                "dollar prefix",
                Some("AT$QCRMCALL=1,1"),
                b"\r\n$QCRMCALL: 1, V4\r\n\r\nOK\r\n",
                vec![ok(&["$QCRMCALL: 1, V4"])],
            ),
            ("incomplete: nothing yet", Some("AT+CSQ"), b"\r\n+CSQ: 23,99\r\n\r\nO", vec![]),
            (
                "NO CARRIER",
                Some("ATD123;"),
                b"\r\nNO CARRIER\r\n",
                vec![Digested::Response(Err(R::CallControl("NO CARRIER".into())))],
            ),
        ];
        for (name, cmd, input, want) in cases {
            assert_eq!(run(cmd, input), want, "case {name}");
        }
    }

    #[test]
    fn prompt_only_when_expected() {
        let mut d = Digester::new();
        d.begin("AT+CMGS=\"123\"", true);
        d.push(b"AT+CMGS=\"123\"\r\r\n> ");
        assert_eq!(d.poll(), Some(Digested::Prompt));
        d.push(b"\r\n+CMGS: 7\r\n\r\nOK\r\n");
        assert_eq!(d.poll(), Some(ok(&["+CMGS: 7"])));

        let got = run(Some("AT"), b"\r\n> \r\nOK\r\n");
        assert_eq!(
            got,
            vec![ok(&[">"])],
            "a '> ' line is plain text when no prompt is expected"
        );
    }

    #[test]
    fn overlong_line_discarded_and_counted() {
        let mut d = Digester::new();
        d.begin("AT+CSQ", false);
        let mut input = vec![b'A'; MAX_LINE * 3];
        input.extend_from_slice(b"\r\n+CSQ: 1,99\r\n\r\nOK\r\n");
        d.push(&input);
        assert_eq!(d.poll(), Some(ok(&["+CSQ: 1,99"])));
        assert_eq!(d.stats().overlong_lines, 1);
    }

    #[test]
    fn too_many_lines_is_an_error() {
        let mut d = Digester::new();
        d.begin("AT+COPS=?", false);
        for i in 0..(MAX_RESPONSE_LINES + 5) {
            d.push(format!("\r\nline {i}\r\n").as_bytes());
        }
        d.push(b"\r\nOK\r\n");
        assert_eq!(
            d.poll(),
            Some(Digested::Response(Err(ResultCodeError::TooLong)))
        );
    }

    #[test]
    fn unpolled_urcs_are_bounded() {
        let mut d = Digester::new();
        for _ in 0..(MAX_EVENTS * 2) {
            d.push(b"\r\nRING\r\n");
        }
        assert_eq!(d.stats().dropped_urcs, MAX_EVENTS as u64);
        assert_eq!(std::iter::from_fn(|| d.poll()).count(), MAX_EVENTS);
    }

    #[test]
    fn abort_makes_late_final_stray() {
        let mut d = Digester::new();
        d.begin("AT+COPS?", false);
        assert!(d.abort());
        d.push(b"\r\nOK\r\n");
        assert_eq!(d.poll(), None);
        assert_eq!(d.stats().stray_finals, 1);
    }

    #[test]
    fn cme_codes_round_trip() {
        for (code, text, err) in CME_TABLE {
            assert_eq!(CmeError::from_code(*code), *err);
            assert_eq!(CmeError::parse(text), *err);
            assert_eq!(err.code(), Some(*code));
        }
        assert_eq!(CmeError::parse("  10 "), CmeError::SimNotInserted);
        assert_eq!(CmeError::parse("weird"), CmeError::Text("weird".into()));
    }

    #[test]
    fn prefixes() {
        assert_eq!(response_prefix("AT+CSQ").as_deref(), Some("+CSQ:"));
        assert_eq!(response_prefix("AT+cpsi?").as_deref(), Some("+CPSI:"));
        assert_eq!(
            response_prefix("AT$QCRMCALL=1,1").as_deref(),
            Some("$QCRMCALL:")
        );
        assert_eq!(response_prefix("ATE0"), None);
        assert_eq!(response_prefix("AT"), None);
        assert_eq!(response_prefix("A"), None);
        assert_eq!(response_prefix("AT&W"), None);
    }

    const TRANSCRIPT: &[u8] = b"AT+CPSI?\r\r\n+CPSI: LTE,Online,001-01,0x1A2B,27316237,320,EUTRAN-BAND3,1650,5,5,-94,-969,-659,14\r\n\x00\r\n+CTZV: +32,0\r\n\r\nOK\r\n\r\nRING\r\n";

    fn digest_split(cmd: &str, input: &[u8], cuts: &[usize]) -> Vec<Digested> {
        let mut d = Digester::new();
        d.begin(cmd, false);
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain(std::iter::once(input.len())) {
            d.push(&input[start..c.max(start)]);
            start = c.max(start);
            out.extend(std::iter::from_fn(|| d.poll()));
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            cmd in proptest::option::of("[A-Z+$?=0-9,\"]{0,20}"),
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let mut d = Digester::new();
            if let Some(c) = &cmd { d.begin(c, true); }
            for c in &chunks {
                d.push(c);
                prop_assert!(d.events.len() <= MAX_EVENTS);
                prop_assert!(d.line.len() <= MAX_LINE);
                while let Some(ev) = d.poll() {
                    if let Digested::Urc(u) = ev { prop_assert!(u.len() <= MAX_LINE); }
                }
            }
        }

        #[test]
        fn any_split_gives_same_result(cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let whole = digest_split("AT+CPSI?", TRANSCRIPT, &[]);
            prop_assert_eq!(whole.len(), 3);
            prop_assert_eq!(digest_split("AT+CPSI?", TRANSCRIPT, &cuts), whole);
        }

        #[test]
        fn generated_transcripts_round_trip(
            echo in any::<bool>(),
            info in proptest::collection::vec("\\+CSQ: [0-9]{1,2},[0-9]{1,2}", 0..4),
            urcs in proptest::collection::vec(prop_oneof![Just("RING"), Just("+CMTI: \"SM\",2"), Just("+CTZV: +8,0")], 0..3),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut t = Vec::new();
            if echo { t.extend_from_slice(b"AT+CSQ\r"); }
            for (i, l) in info.iter().enumerate() {
                t.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
                if let Some(u) = urcs.get(i) { t.extend_from_slice(format!("\r\n{u}\r\n").as_bytes()); }
            }
            t.extend_from_slice(b"\r\nOK\r\n");
            let got = digest_split("AT+CSQ", &t, &cuts);
            let resp: Vec<&Digested> = got.iter().filter(|e| matches!(e, Digested::Response(_))).collect();
            prop_assert_eq!(resp.len(), 1);
            prop_assert_eq!(resp[0], &Digested::Response(Ok(info.clone())));
            let n_urc = got.iter().filter(|e| matches!(e, Digested::Urc(_))).count();
            prop_assert_eq!(n_urc, urcs.len().min(info.len()));
        }
    }
}
