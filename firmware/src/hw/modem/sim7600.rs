//! SIM7600 commands and their response parsers.
//!
//! References are to the *SIM7500_SIM7600 Series AT Command Manual* (V1.10 /
//! V2.00 chapter titles; the numbering shifts between versions, the titles do
//! not) and to 3GPP TS 27.007 for the standard commands. Timeouts are
//! conservative upper bounds; the supervisor may cap them
//! ([`super::ModemConfig::command_timeout_ms`]).

use std::time::Duration;

use serde::Serialize;

use super::engine::{AtCommand, ParseError};

/// Find the first line starting with `prefix` and return the rest, trimmed.
fn find<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let head = l.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| l[prefix.len()..].trim())
    })
}

fn need<'a>(lines: &'a [String], prefix: &str, what: &'static str) -> Result<&'a str, ParseError> {
    find(lines, prefix).ok_or_else(|| ParseError::new(what, &lines.join(" | ")))
}

/// Split a parameter list on commas outside double quotes; quotes removed.
pub fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// `AT` — synchronise with the module (V.250; manual ch. "AT Commands According
/// to V.25TER"). The module also uses the first `AT` to detect the baud rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sync;

impl AtCommand for Sync {
    type Response = ();
    fn text(&self) -> String {
        "AT".into()
    }
    fn timeout(&self) -> Duration {
        Duration::from_millis(500)
    }
    fn attempts(&self) -> u8 {
        3
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// `ATE0` / `ATE1` — command echo (manual §3.16 "ATE Enable command echo").
#[derive(Debug, Clone, Copy)]
pub struct Echo(pub bool);

impl AtCommand for Echo {
    type Response = ();
    fn text(&self) -> String {
        format!("ATE{}", u8::from(self.0))
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn attempts(&self) -> u8 {
        2
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// `ATI` — product identification (manual §3.11 "ATI Display product
/// identification information"); the raw lines.
#[derive(Debug, Clone, Copy)]
pub struct Identify;

impl AtCommand for Identify {
    type Response = Vec<String>;
    fn text(&self) -> String {
        "ATI".into()
    }
    fn parse(&self, lines: &[String]) -> Result<Vec<String>, ParseError> {
        Ok(lines.to_vec())
    }
}

/// `AT+CMEE=<n>` — error reporting format (manual ch. "AT Commands for Status
/// Control", AT+CMEE; 3GPP TS 27.007 §9.1). 1 = numeric `+CME ERROR: <n>`.
#[derive(Debug, Clone, Copy)]
pub struct Cmee(pub u8);

impl AtCommand for Cmee {
    type Response = ();
    fn text(&self) -> String {
        format!("AT+CMEE={}", self.0)
    }
    fn attempts(&self) -> u8 {
        2
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// SIM card state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SimState {
    /// Not queried yet.
    #[default]
    Unknown,
    /// `READY`: no PIN pending.
    Ready,
    /// `+CME ERROR: 10`.
    Absent,
    /// `SIM PIN`.
    PinRequired,
    /// `SIM PUK`.
    PukRequired,
    /// Anything else the modem said (e.g. `PH-NET PIN`, SIM failure).
    Other(String),
}

/// `AT+CPIN?` — SIM state (manual §4.2 "AT+CPIN Enter PIN"; 3GPP TS 27.007
/// §8.3). A missing SIM answers `+CME ERROR: 10`, which the caller maps.
#[derive(Debug, Clone, Copy)]
pub struct CpinQuery;

impl AtCommand for CpinQuery {
    type Response = SimState;
    fn text(&self) -> String {
        "AT+CPIN?".into()
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn parse(&self, lines: &[String]) -> Result<SimState, ParseError> {
        let v = need(lines, "+CPIN:", "+CPIN: <code>")?;
        Ok(parse_cpin(v))
    }
}

fn parse_cpin(v: &str) -> SimState {
    match v.trim().to_ascii_uppercase().as_str() {
        "READY" => SimState::Ready,
        "SIM PIN" => SimState::PinRequired,
        "SIM PUK" => SimState::PukRequired,
        _ => SimState::Other(v.trim().to_string()),
    }
}

/// `+CSQ: <rssi>,<ber>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalQuality {
    /// 0–31, 99 = unknown; 100–191 = TD-SCDMA extended range.
    pub rssi: u8,
    /// Bit error rate class, 99 = unknown.
    pub ber: u8,
}

impl SignalQuality {
    /// RSSI in dBm (manual ch. "AT Commands for Status Control", AT+CSQ table):
    /// 0 → ≤ -113, 1 → -111, 2..=30 → -109..=-53 in 2 dB steps, 31 → ≥ -51,
    /// 100..=191 → -116..=-25 (TD-SCDMA), 99/199 → unknown.
    pub fn dbm(&self) -> Option<i32> {
        let r = i32::from(self.rssi);
        match self.rssi {
            0..=31 => Some(-113 + 2 * r),
            100..=191 => Some(r - 216),
            _ => None,
        }
    }
}

/// `AT+CSQ` — signal quality (manual ch. "AT Commands for Status Control",
/// "AT+CSQ Query signal quality").
#[derive(Debug, Clone, Copy)]
pub struct Csq;

impl AtCommand for Csq {
    type Response = SignalQuality;
    fn text(&self) -> String {
        "AT+CSQ".into()
    }
    fn parse(&self, lines: &[String]) -> Result<SignalQuality, ParseError> {
        let v = need(lines, "+CSQ:", "+CSQ: <rssi>,<ber>")?;
        let p = split_params(v);
        let num = |i: usize| p.get(i).and_then(|s| s.parse::<u8>().ok());
        match (num(0), num(1)) {
            (Some(rssi), Some(ber)) => Ok(SignalQuality { rssi, ber }),
            _ => Err(ParseError::new("+CSQ: <rssi>,<ber>", v)),
        }
    }
}

/// `+CPSI:` — UE system information.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SystemInfo {
    /// `<System Mode>`: `NO SERVICE`, `GSM`, `WCDMA`, `LTE`, `CDMA`, `EVDO`…
    pub technology: String,
    /// `<Operation Mode>`: `Online`, `Offline`, `Low Power Mode`…
    pub operation_mode: String,
    /// `<MCC>-<MNC>` when in service.
    pub mcc_mnc: Option<String>,
    /// Band name: `EUTRAN-BAND3`, `WCDMA IMT 2000`, `EGSM 900`…
    pub band: Option<String>,
}

impl SystemInfo {
    /// The modem has service.
    pub fn in_service(&self) -> bool {
        !self.technology.eq_ignore_ascii_case("NO SERVICE")
    }
}

/// `AT+CPSI?` — UE system information (manual ch. "AT Commands for Network",
/// "AT+CPSI Inquiring UE system information"). Formats by system mode:
/// - LTE: `LTE,<op>,<MCC>-<MNC>,<TAC>,<SCellID>,<PCellID>,<band>,<earfcn>,…`
/// - WCDMA: `WCDMA,<op>,<MCC>-<MNC>,<LAC>,<CellID>,<band>,…`
/// - GSM: `GSM,<op>,<MCC>-<MNC>,<LAC>,<CellID>,<Absolute RF Ch Num> <band>,…`
/// - `NO SERVICE,<op>`
#[derive(Debug, Clone, Copy)]
pub struct Cpsi;

impl AtCommand for Cpsi {
    type Response = SystemInfo;
    fn text(&self) -> String {
        "AT+CPSI?".into()
    }
    fn parse(&self, lines: &[String]) -> Result<SystemInfo, ParseError> {
        let v = need(lines, "+CPSI:", "+CPSI: <System Mode>,<Operation Mode>,…")?;
        parse_cpsi(v)
    }
}

/// Parse the parameters of a `+CPSI:` line.
pub fn parse_cpsi(v: &str) -> Result<SystemInfo, ParseError> {
    let p = split_params(v);
    let technology = p.first().cloned().unwrap_or_default();
    if technology.is_empty() {
        return Err(ParseError::new("+CPSI: <System Mode>", v));
    }
    let operation_mode = p.get(1).cloned().unwrap_or_default();
    let mcc_mnc = p
        .get(2)
        .filter(|s| s.contains('-') && s.chars().all(|c| c.is_ascii_digit() || c == '-'))
        .cloned();
    let band = match technology.to_ascii_uppercase().as_str() {
        "LTE" => p.get(6).cloned(),
        "WCDMA" | "TDS" | "TD-SCDMA" => p.get(5).cloned(),
        // "<ARFCN> <band name>"
        "GSM" => p
            .get(5)
            .and_then(|s| s.split_once(' ').map(|(_, b)| b.trim().to_string())),
        _ => None,
    }
    .filter(|b| !b.is_empty());
    Ok(SystemInfo {
        technology,
        operation_mode,
        mcc_mnc,
        band,
    })
}

/// Network registration state (3GPP TS 27.007 §7.2 `<stat>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Not queried yet.
    #[default]
    Unknown,
    /// 0: not registered, not searching.
    NotRegistered,
    /// 1: registered, home network.
    Home,
    /// 2: not registered, searching.
    Searching,
    /// 3: registration denied.
    Denied,
    /// 4: unknown (e.g. out of coverage).
    OutOfCoverage,
    /// 5: registered, roaming.
    Roaming,
}

impl Registration {
    /// From `<stat>`.
    pub fn from_stat(stat: u8) -> Self {
        match stat {
            0 => Self::NotRegistered,
            1 => Self::Home,
            2 => Self::Searching,
            3 => Self::Denied,
            5 => Self::Roaming,
            _ => Self::OutOfCoverage,
        }
    }

    /// Home or roaming.
    pub fn registered(self) -> bool {
        matches!(self, Self::Home | Self::Roaming)
    }

    /// The better of two (a module can be registered on LTE but not CS).
    pub fn best(self, other: Self) -> Self {
        if self.registered() {
            self
        } else if other.registered() {
            other
        } else if other == Self::Unknown {
            self
        } else {
            other
        }
    }
}

/// `AT+CREG?` (CS/GSM-WCDMA registration; manual ch. "AT Commands for
/// Network", "AT+CREG Network registration") and `AT+CEREG?` (EPS/LTE
/// registration, "AT+CEREG EPS network registration status"). Both answer
/// `+C(E)REG: <n>,<stat>[,…]`.
#[derive(Debug, Clone, Copy)]
pub struct RegQuery {
    /// `true` for `AT+CEREG?`.
    pub eps: bool,
}

impl AtCommand for RegQuery {
    type Response = Registration;
    fn text(&self) -> String {
        if self.eps { "AT+CEREG?" } else { "AT+CREG?" }.into()
    }
    fn parse(&self, lines: &[String]) -> Result<Registration, ParseError> {
        let prefix = if self.eps { "+CEREG:" } else { "+CREG:" };
        let v = need(lines, prefix, "+CREG: <n>,<stat>")?;
        let p = split_params(v);
        p.get(1)
            .and_then(|s| s.parse::<u8>().ok())
            .map(Registration::from_stat)
            .ok_or_else(|| ParseError::new("+CREG: <n>,<stat>", v))
    }
}

/// `+COPS:` read answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operator {
    /// Operator name (long alphanumeric with `<format>` 0), if registered.
    pub name: Option<String>,
    /// Access technology `<AcT>`: 0 GSM, 2 UTRAN, 7 E-UTRAN…
    pub act: Option<u8>,
}

/// `AT+COPS?` — current operator (manual ch. "AT Commands for Network",
/// "AT+COPS Operator selection"; 3GPP TS 27.007 §7.3). Unregistered modules
/// answer `+COPS: <mode>` only.
#[derive(Debug, Clone, Copy)]
pub struct CopsQuery;

impl AtCommand for CopsQuery {
    type Response = Operator;
    fn text(&self) -> String {
        "AT+COPS?".into()
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn parse(&self, lines: &[String]) -> Result<Operator, ParseError> {
        let v = need(lines, "+COPS:", "+COPS: <mode>[,<format>,<oper>[,<AcT>]]")?;
        let p = split_params(v);
        if p.first().and_then(|m| m.parse::<u8>().ok()).is_none() {
            return Err(ParseError::new("+COPS: <mode>", v));
        }
        Ok(Operator {
            name: p.get(2).filter(|s| !s.is_empty()).cloned(),
            act: p.get(3).and_then(|s| s.parse().ok()),
        })
    }
}

/// Errors building a command from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// The APN has characters that cannot go inside an AT string parameter
    /// (quotes, control characters) or is longer than 100 bytes (3GPP TS 23.003
    /// §9.1 caps an APN at 100 octets).
    #[error("invalid APN {0:?}: use letters, digits, '.', '-', '_' (max 100)")]
    Apn(String),
}

/// `AT+CGDCONT=<cid>,"IP","<apn>"` — define the PDP context (manual ch. "AT
/// Commands for Packet Domain", "AT+CGDCONT Define PDP context").
#[derive(Debug, Clone)]
pub struct SetApn {
    apn: String,
}

impl SetApn {
    /// Context 1, IPv4 (the SIM7600 RMNET call below brings up context 1).
    pub fn new(apn: &str) -> Result<Self, ArgError> {
        let ok = !apn.is_empty()
            && apn.len() <= 100
            && apn
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !ok {
            return Err(ArgError::Apn(apn.to_string()));
        }
        Ok(Self {
            apn: apn.to_string(),
        })
    }
}

impl AtCommand for SetApn {
    type Response = ();
    fn text(&self) -> String {
        format!("AT+CGDCONT=1,\"IP\",\"{}\"", self.apn)
    }
    fn attempts(&self) -> u8 {
        2
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// `AT$QCRMCALL?` — is the RMNET data call (the USB `wwan0` interface of the
/// qmi_wwan driver) up? Answers `$QCRMCALL: 1,V4` per active IP family, or
/// just `OK` when none (manual ch. "AT Commands for Packet Domain",
/// "AT$QCRMCALL Start/stop RMNET call").
///
/// Why `$QCRMCALL` and not `+CGACT`: on the SIM7600 in its default USB
/// composition (PID 9001, qmi_wwan) `+CGACT=1,1` activates the PDP context in
/// the modem but does not bind it to the host's network interface;
/// `$QCRMCALL=1,1` does both, after which DHCP on `wwan0` gets an address.
#[derive(Debug, Clone, Copy)]
pub struct RmnetQuery;

impl AtCommand for RmnetQuery {
    type Response = bool;
    fn text(&self) -> String {
        "AT$QCRMCALL?".into()
    }
    fn parse(&self, lines: &[String]) -> Result<bool, ParseError> {
        Ok(find(lines, "$QCRMCALL:")
            .map(|v| split_params(v).first().is_some_and(|s| s == "1"))
            .unwrap_or(false))
    }
}

/// `AT$QCRMCALL=1,1` — start the IPv4 RMNET call on context 1 (see
/// [`RmnetQuery`]).
#[derive(Debug, Clone, Copy)]
pub struct RmnetStart;

impl AtCommand for RmnetStart {
    type Response = ();
    fn text(&self) -> String {
        "AT$QCRMCALL=1,1".into()
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// `AT+CGPS?` — is the GNSS session running (manual ch. "AT Commands for GPS",
/// "AT+CGPS Start/Stop GPS session"). Answers `+CGPS: <on>,<mode>`.
#[derive(Debug, Clone, Copy)]
pub struct CgpsQuery;

impl AtCommand for CgpsQuery {
    type Response = bool;
    fn text(&self) -> String {
        "AT+CGPS?".into()
    }
    fn parse(&self, lines: &[String]) -> Result<bool, ParseError> {
        let v = need(lines, "+CGPS:", "+CGPS: <on/off>,<mode>")?;
        Ok(split_params(v).first().is_some_and(|s| s == "1"))
    }
}

/// `AT+CGPS=1` — start a standalone GNSS session; NMEA then streams on the
/// modem's NMEA port (`/dev/ttyUSB1`). Starting an already-running session
/// answers `ERROR`, so the supervisor asks [`CgpsQuery`] first.
#[derive(Debug, Clone, Copy)]
pub struct CgpsStart;

impl AtCommand for CgpsStart {
    type Response = ();
    fn text(&self) -> String {
        "AT+CGPS=1".into()
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// `AT+CTZU=1` — update the RTC and time zone from the network (NITZ)
/// (manual ch. "AT Commands for Network", "AT+CTZU Automatic time and time
/// zone update").
#[derive(Debug, Clone, Copy)]
pub struct CtzuOn;

impl AtCommand for CtzuOn {
    type Response = ();
    fn text(&self) -> String {
        "AT+CTZU=1".into()
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// `AT+CCLK?` — the module's real-time clock (manual ch. "AT Commands for
/// Status Control", "AT+CCLK Real time clock management"): `+CCLK:
/// "yy/MM/dd,hh:mm:ss±zz"`, `zz` in quarter hours. `None` when the clock has
/// not been set by the network (it then counts from its 1980/2080 default).
#[derive(Debug, Clone, Copy)]
pub struct Cclk;

impl AtCommand for Cclk {
    type Response = Option<String>;
    fn text(&self) -> String {
        "AT+CCLK?".into()
    }
    fn parse(&self, lines: &[String]) -> Result<Option<String>, ParseError> {
        let v = need(lines, "+CCLK:", "+CCLK: \"yy/MM/dd,hh:mm:ss±zz\"")?;
        parse_cclk(v)
    }
}

/// Parse a `+CCLK:` value into RFC 3339 (`2024-06-01T12:00:00+08:00`);
/// `Ok(None)` for an unset clock (year ≥ 70, i.e. the module's default epoch).
pub fn parse_cclk(v: &str) -> Result<Option<String>, ParseError> {
    const WHAT: &str = "+CCLK: \"yy/MM/dd,hh:mm:ss±zz\"";
    let s = v.trim().trim_matches('"');
    let b = s.as_bytes();
    if b.len() != 20
        || b[2] != b'/'
        || b[5] != b'/'
        || b[8] != b','
        || b[11] != b':'
        || b[14] != b':'
    {
        return Err(ParseError::new(WHAT, v));
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (Some(yy), Some(mo), Some(dd), Some(hh), Some(mi), Some(ss), Some(qh)) = (
        num(0..2),
        num(3..5),
        num(6..8),
        num(9..11),
        num(12..14),
        num(15..17),
        num(18..20),
    ) else {
        return Err(ParseError::new(WHAT, v));
    };
    let sign = match b[17] {
        b'+' => '+',
        b'-' => '-',
        _ => return Err(ParseError::new(WHAT, v)),
    };
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&dd)
        || hh > 23
        || mi > 59
        || ss > 60
        || qh > 56
    {
        return Err(ParseError::new(WHAT, v));
    }
    if yy >= 70 {
        return Ok(None);
    }
    let off_min = qh * 15;
    Ok(Some(format!(
        "20{yy:02}-{mo:02}-{dd:02}T{hh:02}:{mi:02}:{ss:02}{sign}{:02}:{:02}",
        off_min / 60,
        off_min % 60
    )))
}

/// `AT+CFUN=1,1` — reset the module (manual §4.1 "AT+CFUN Set phone
/// functionality": `<rst>`=1 resets before setting full functionality). The
/// module answers `OK`, reboots and announces itself with `RDY`.
#[derive(Debug, Clone, Copy)]
pub struct CfunReset;

impl AtCommand for CfunReset {
    type Response = ();
    fn text(&self) -> String {
        "AT+CFUN=1,1".into()
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(9)
    }
    fn parse(&self, _: &[String]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// An unsolicited result code, typed where the firmware cares.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Urc {
    /// `RDY`: the module finished booting (after power-on or `+CFUN=1,1`).
    Ready,
    /// `+CPIN: <code>`: SIM state changed.
    Sim(SimState),
    /// `SMS DONE` / `PB DONE`: SIM phonebook and SMS storage initialised.
    SimInitDone,
    /// `+CREG: <stat>…` / `+CEREG: <stat>…` (when enabled with `=1`/`=2`).
    Registration(Registration),
    /// `+CTZV:` / `*PSUTTZ:` / `DST:`: network time-zone update (NITZ).
    TimeZone(String),
    /// Anything else.
    Other(String),
}

impl Urc {
    /// Classify a URC line.
    pub fn parse(line: &str) -> Self {
        let upper = line.to_ascii_uppercase();
        let rest = |p: &str| line[p.len()..].trim().to_string();
        if upper == "RDY" {
            Urc::Ready
        } else if upper.starts_with("+CPIN:") {
            Urc::Sim(parse_cpin(&rest("+CPIN:")))
        } else if upper == "SMS DONE" || upper == "PB DONE" {
            Urc::SimInitDone
        } else if upper.starts_with("+CREG:") || upper.starts_with("+CEREG:") {
            let p = line.find(':').map(|i| &line[i + 1..]).unwrap_or("");
            match split_params(p).first().and_then(|s| s.parse::<u8>().ok()) {
                Some(stat) => Urc::Registration(Registration::from_stat(stat)),
                None => Urc::Other(line.to_string()),
            }
        } else if upper.starts_with("+CTZV:")
            || upper.starts_with("*PSUTTZ:")
            || upper.starts_with("DST:")
        {
            Urc::TimeZone(line.to_string())
        } else {
            Urc::Other(line.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn l(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn csq_to_dbm() {
        let q = |rssi| SignalQuality { rssi, ber: 99 }.dbm();
        assert_eq!(q(0), Some(-113));
        assert_eq!(q(1), Some(-111));
        assert_eq!(q(2), Some(-109));
        assert_eq!(q(30), Some(-53));
        assert_eq!(q(31), Some(-51));
        assert_eq!(q(99), None);
        assert_eq!(q(100), Some(-116));
        assert_eq!(q(191), Some(-25));
        assert_eq!(q(199), None);
        assert_eq!(
            Csq.parse(&l(&["+CSQ: 23,99"])),
            Ok(SignalQuality { rssi: 23, ber: 99 })
        );
        assert!(Csq.parse(&l(&["+CSQ: x"])).is_err());
        assert!(Csq.parse(&l(&[])).is_err());
    }

    #[test]
    fn cpsi_variants() {
        let lte = parse_cpsi(
            "LTE,Online,460-00,0x1816,27316237,320,EUTRAN-BAND3,1650,5,5,-94,-969,-659,14",
        )
        .unwrap();
        assert_eq!(lte.technology, "LTE");
        assert_eq!(lte.mcc_mnc.as_deref(), Some("460-00"));
        assert_eq!(lte.band.as_deref(), Some("EUTRAN-BAND3"));
        let gsm = parse_cpsi("GSM,Online,460-00,0x182d,12401,27 EGSM 900,-64,2110,42-42").unwrap();
        assert_eq!(gsm.band.as_deref(), Some("EGSM 900"));
        let wcdma =
            parse_cpsi("WCDMA,Online,001-01,0xC000,0,WCDMA IMT 2000,128,8268,0,0.5,62,33,29,500")
                .unwrap();
        assert_eq!(wcdma.band.as_deref(), Some("WCDMA IMT 2000"));
        let none = parse_cpsi("NO SERVICE,Online").unwrap();
        assert!(!none.in_service());
        assert_eq!(none.band, None);
        assert_eq!(none.mcc_mnc, None);
        assert!(parse_cpsi("").is_err());
    }

    #[test]
    fn registration_and_operator() {
        let r = RegQuery { eps: false };
        assert_eq!(r.parse(&l(&["+CREG: 0,1"])), Ok(Registration::Home));
        assert_eq!(
            r.parse(&l(&["+CREG: 2,5,\"1816\",\"0A2B\""])),
            Ok(Registration::Roaming)
        );
        let e = RegQuery { eps: true };
        assert_eq!(e.text(), "AT+CEREG?");
        assert_eq!(e.parse(&l(&["+CEREG: 0,2"])), Ok(Registration::Searching));
        assert!(e.parse(&l(&["+CREG: 0,1"])).is_err());
        assert_eq!(
            Registration::Searching.best(Registration::Home),
            Registration::Home
        );
        assert_eq!(
            Registration::Unknown.best(Registration::Denied),
            Registration::Denied
        );
        assert_eq!(
            CopsQuery.parse(&l(&["+COPS: 0,0,\"CHINA MOBILE CMCC\",7"])),
            Ok(Operator {
                name: Some("CHINA MOBILE CMCC".into()),
                act: Some(7)
            })
        );
        assert_eq!(CopsQuery.parse(&l(&["+COPS: 0"])), Ok(Operator::default()));
        assert!(CopsQuery.parse(&l(&["+COPS: x"])).is_err());
    }

    #[test]
    fn cclk() {
        assert_eq!(
            parse_cclk("\"24/06/01,12:00:05+32\""),
            Ok(Some("2024-06-01T12:00:05+08:00".into()))
        );
        assert_eq!(
            parse_cclk("\"23/12/31,23:59:59-14\""),
            Ok(Some("2023-12-31T23:59:59-03:30".into()))
        );
        assert_eq!(parse_cclk("\"80/01/06,00:00:12+00\""), Ok(None));
        assert!(parse_cclk("\"24/13/01,12:00:05+32\"").is_err());
        assert!(parse_cclk("garbage").is_err());
    }

    #[test]
    fn misc_commands() {
        assert_eq!(CpinQuery.parse(&l(&["+CPIN: READY"])), Ok(SimState::Ready));
        assert_eq!(
            CpinQuery.parse(&l(&["+CPIN: SIM PIN"])),
            Ok(SimState::PinRequired)
        );
        assert_eq!(RmnetQuery.parse(&l(&["$QCRMCALL: 1, V4"])), Ok(true));
        assert_eq!(RmnetQuery.parse(&l(&[])), Ok(false));
        assert_eq!(CgpsQuery.parse(&l(&["+CGPS: 1,1"])), Ok(true));
        assert_eq!(CgpsQuery.parse(&l(&["+CGPS: 0,1"])), Ok(false));
        assert_eq!(
            SetApn::new("internet.example").unwrap().text(),
            "AT+CGDCONT=1,\"IP\",\"internet.example\""
        );
        assert!(SetApn::new("bad\"apn").is_err());
        assert!(SetApn::new("").is_err());
        assert_eq!(Echo(false).text(), "ATE0");
        assert_eq!(split_params("0,0,\"A,B\",7"), vec!["0", "0", "A,B", "7"]);
    }

    #[test]
    fn urcs() {
        assert_eq!(Urc::parse("RDY"), Urc::Ready);
        assert_eq!(Urc::parse("+CPIN: READY"), Urc::Sim(SimState::Ready));
        assert_eq!(Urc::parse("PB DONE"), Urc::SimInitDone);
        assert_eq!(
            Urc::parse("+CEREG: 5"),
            Urc::Registration(Registration::Roaming)
        );
        assert!(matches!(Urc::parse("+CTZV: +32,0"), Urc::TimeZone(_)));
        assert!(matches!(Urc::parse("RING"), Urc::Other(_)));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(line in "\\PC{0,200}") {
            let lines = vec![line.clone()];
            let _ = parse_cpsi(&line);
            let _ = parse_cclk(&line);
            let _ = Urc::parse(&line);
            let _ = Csq.parse(&lines);
            let _ = CopsQuery.parse(&lines);
            let _ = RegQuery { eps: true }.parse(&lines);
            let _ = CpinQuery.parse(&lines);
        }

        #[test]
        fn prefixed_lines_never_panic(
            prefix in prop_oneof![Just("+CSQ: "), Just("+CPSI: "), Just("+CCLK: "), Just("+COPS: "), Just("+CREG: "), Just("+CEREG: ")],
            rest in "[0-9a-zA-Z,\"/:+\\- .]{0,80}",
        ) {
            let line = format!("{prefix}{rest}");
            let lines = vec![line.clone()];
            let _ = Csq.parse(&lines);
            let _ = Cpsi.parse(&lines);
            let _ = Cclk.parse(&lines);
            let _ = CopsQuery.parse(&lines);
            let _ = RegQuery { eps: false }.parse(&lines);
            let _ = RegQuery { eps: true }.parse(&lines);
        }
    }
}
