//! GNSS simulator: test equipment that speaks NMEA 0183 like a receiver.
//!
//! It sends one burst of sentences per epoch (every [`SimGnss::period`], on
//! tokio's clock, so `start_paused` tests are exact), either replayed from a
//! real receiver log or synthesised for a vehicle driving a circle. It is
//! used in-process through the [`Gnss`] trait, or over a pseudo-terminal
//! ([`serve_pty`]) so the real serial driver reads it as it would read
//! `/dev/ttyUSB1`.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use kodama_firmware::hw::gnss::nmea::with_checksum;
use kodama_firmware::hw::gnss::{Gnss, GnssError};

/// Metres per degree of latitude (WGS 84 mean).
const M_PER_DEG_LAT: f64 = 111_320.0;

/// A synthetic track: a vehicle driving a circle at constant speed.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Centre of the circle, degrees latitude.
    pub lat: f64,
    /// Centre of the circle, degrees longitude.
    pub lon: f64,
    /// Altitude above mean sea level, metres.
    pub alt: f64,
    /// Radius, metres.
    pub radius_m: f64,
    /// Speed, metres per second.
    pub speed_mps: f64,
    /// UTC time of the first epoch.
    pub start: NaiveDateTime,
    /// Epochs without a fix before the first fix (a cold start).
    pub acquisition_epochs: u32,
}

impl Track {
    /// A 100 m circle at 5 m/s around (`lat`, `lon`), starting
    /// 2024-01-01T00:00:00Z after three epochs without a fix.
    pub fn circle(lat: f64, lon: f64) -> Self {
        Track {
            lat,
            lon,
            alt: 40.0,
            radius_m: 100.0,
            speed_mps: 5.0,
            start: NaiveDate::from_ymd_opt(2024, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default(),
            acquisition_epochs: 3,
        }
    }

    /// The sentences (GGA, RMC, GSA, VTG) of epoch `n`.
    pub fn epoch(&self, n: u64) -> String {
        let t = self.start + TimeDelta::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2));
        let hms = t.format("%H%M%S%.3f");
        let dmy = t.format("%d%m%y");
        if n < u64::from(self.acquisition_epochs) {
            return [
                with_checksum(&format!("$GPGGA,{hms},,,,,0,00,99.99,,,,,,")),
                with_checksum(&format!("$GPRMC,{hms},V,,,,,,,{dmy},,,N")),
                with_checksum("$GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
            ]
            .concat();
        }
        // Angle travelled along the circle; heading is tangent to it
        // (clockwise when seen from above: north, then east, ...).
        let angle = self.speed_mps * n as f64 / self.radius_m.max(1.0);
        let north = self.radius_m * angle.cos();
        let east = self.radius_m * angle.sin();
        let lat = self.lat + north / M_PER_DEG_LAT;
        let lon = self.lon + east / (M_PER_DEG_LAT * self.lat.to_radians().cos().max(1e-6));
        let course = (angle.to_degrees() + 90.0).rem_euclid(360.0);
        let knots = self.speed_mps * 3600.0 / 1852.0;
        let (lat_s, ns) = ddmm(lat, 2, 'N', 'S');
        let (lon_s, ew) = ddmm(lon, 3, 'E', 'W');
        let sats = 8;
        let hdop = 0.9;
        [
            with_checksum(&format!(
                "$GPGGA,{hms},{lat_s},{ns},{lon_s},{ew},1,{sats:02},{hdop:.1},{:.1},M,30.0,M,,",
                self.alt
            )),
            with_checksum(&format!(
                "$GPRMC,{hms},A,{lat_s},{ns},{lon_s},{ew},{knots:.3},{course:.2},{dmy},,,A"
            )),
            with_checksum(&format!(
                "$GPGSA,A,3,02,05,07,13,15,18,20,29,,,,,1.6,{hdop:.1},1.3"
            )),
            with_checksum(&format!(
                "$GPVTG,{course:.2},T,,M,{knots:.3},N,{:.3},K,A",
                self.speed_mps * 3.6
            )),
        ]
        .concat()
    }
}

/// `ddmm.mmmmmm` (or `dddmm.mmmmmm`) and hemisphere, NMEA 0183 §6.2 field
/// formats for latitude and longitude.
fn ddmm(deg: f64, width: usize, pos: char, neg: char) -> (String, char) {
    let hemi = if deg < 0.0 { neg } else { pos };
    let a = deg.abs();
    let whole = a.trunc();
    let minutes = (a - whole) * 60.0;
    (format!("{:0width$}{minutes:09.6}", whole as u32), hemi)
}

/// What the simulator sends.
#[derive(Debug, Clone)]
enum Script {
    Track(Track),
    /// Epoch bursts of a recorded log, replayed in order.
    Replay {
        bursts: Vec<String>,
        looping: bool,
    },
}

/// The simulated receiver.
#[derive(Debug, Clone)]
pub struct SimGnss {
    script: Script,
    period: Duration,
    epoch: u64,
    pending: Vec<u8>,
    sent: usize,
    /// When the next burst is due; kept across calls so that a read
    /// cancelled by a timeout does not restart the wait.
    next_at: Option<tokio::time::Instant>,
}

impl SimGnss {
    /// A receiver driving `track`, one epoch per second.
    pub fn track(track: Track) -> Self {
        Self::with_script(Script::Track(track))
    }

    /// A receiver replaying a recorded NMEA log, one epoch per period.
    /// Lines not starting with `$` (comments) are dropped; with `looping` it
    /// starts again at the end, otherwise the stream ends.
    pub fn replay(log: &str, looping: bool) -> Self {
        Self::with_script(Script::Replay {
            bursts: split_epochs(log),
            looping,
        })
    }

    fn with_script(script: Script) -> Self {
        SimGnss {
            script,
            period: Duration::from_secs(1),
            epoch: 0,
            pending: Vec::new(),
            sent: 0,
            next_at: None,
        }
    }

    /// Changes the time between epochs (default one second).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The bytes of the next epoch, or `None` at the end of a non-looping log.
    fn next_burst(&mut self) -> Option<String> {
        let n = self.epoch;
        self.epoch += 1;
        match &self.script {
            Script::Track(t) => Some(t.epoch(n)),
            Script::Replay { bursts, looping } => {
                if bursts.is_empty() {
                    return None;
                }
                let len = bursts.len() as u64;
                if n >= len && !looping {
                    return None;
                }
                usize::try_from(n % len)
                    .ok()
                    .and_then(|i| bursts.get(i))
                    .cloned()
            }
        }
    }
}

impl Gnss for SimGnss {
    /// Cancel-safe: dropping the future loses no bytes and does not delay the next epoch.
    async fn read_nmea(&mut self, buf: &mut [u8]) -> Result<usize, GnssError> {
        if self.sent == self.pending.len() {
            // Cancel-safe: the deadline is stored before waiting on it.
            let due = *self.next_at.get_or_insert_with(tokio::time::Instant::now);
            tokio::time::sleep_until(due).await;
            self.next_at = Some(due + self.period);
            let Some(burst) = self.next_burst() else {
                return Ok(0);
            };
            self.pending = burst.into_bytes();
            self.sent = 0;
        }
        let n = buf.len().min(self.pending.len() - self.sent);
        buf[..n].copy_from_slice(&self.pending[self.sent..self.sent + n]);
        self.sent += n;
        Ok(n)
    }
}

/// The UTC time field of a timed sentence (GGA, RMC, GNS, ZDA: field 1; GLL: field 5).
fn sentence_time(line: &str) -> Option<&str> {
    let kind = line.get(3..6)?;
    let field = match kind {
        "GGA" | "RMC" | "GNS" | "ZDA" => 1,
        "GLL" => 5,
        _ => return None,
    };
    let body = line.split('*').next()?;
    body.split(',').nth(field).filter(|t| !t.is_empty())
}

/// Splits a log into epoch bursts: a new burst starts at a timed sentence
/// whose time differs from the burst's.
fn split_epochs(log: &str) -> Vec<String> {
    let mut bursts = Vec::new();
    let mut current = String::new();
    let mut time: Option<&str> = None;
    for line in log
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with('$'))
    {
        if let Some(t) = sentence_time(line) {
            if time.is_some_and(|cur| cur != t) && !current.is_empty() {
                bursts.push(std::mem::take(&mut current));
            }
            time = Some(t);
        }
        current.push_str(line);
        current.push_str("\r\n");
    }
    if !current.is_empty() {
        bursts.push(current);
    }
    bursts
}

/// Why the pty could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PtyError {
    /// `openpty(3)` or configuring the terminal failed.
    #[error("cannot create a pseudo-terminal: {0}")]
    Open(#[from] nix::Error),
}

/// Serves `sim` on a new pseudo-terminal until it ends or `cancel` fires.
/// Returns the path of the terminal to open (as the real driver opens
/// `/dev/ttyUSB1`) and the task writing to it.
pub fn serve_pty(
    sim: SimGnss,
    cancel: CancellationToken,
) -> Result<(PathBuf, JoinHandle<()>), PtyError> {
    serve_pty_while(sim, || true, cancel)
}

/// How often a gated receiver checks whether it may stream.
const GATE_POLL: Duration = Duration::from_millis(200);

/// Like [`serve_pty`], but sentences flow only while `engine_on()` says the
/// receiver is running: the SIM7600's NMEA port is silent until its GNSS
/// engine is started with `AT+CGPS=1` on the AT port.
pub fn serve_pty_while(
    mut sim: SimGnss,
    engine_on: impl Fn() -> bool + Send + 'static,
    cancel: CancellationToken,
) -> Result<(PathBuf, JoinHandle<()>), PtyError> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let pty = nix::pty::openpty(None, None)?;
    // Raw mode: no echo back into the master, no CR/LF translation.
    let mut t = tcgetattr(&pty.slave)?;
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t)?;
    let path = nix::unistd::ttyname(&pty.slave)?;
    let mut master = tokio::fs::File::from_std(std::fs::File::from(pty.master));
    // The slave stays open in the task so the master never sees a hang-up
    // while the driver reopens the port.
    let slave = pty.slave;
    let task = tokio::spawn(async move {
        let _slave = slave;
        let mut buf = [0u8; 512];
        loop {
            if !engine_on() {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(GATE_POLL) => continue,
                }
            }
            let n = tokio::select! {
                () = cancel.cancelled() => break,
                r = sim.read_nmea(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
            };
            if let Err(e) = master.write_all(&buf[..n]).await {
                tracing::warn!(error = %e, "GNSS simulator: pty write failed");
                break;
            }
        }
    });
    Ok((path, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodama_firmware::hw::gnss::{FixMode, NmeaReader};

    fn fixes_of(text: &str) -> Vec<kodama_firmware::hw::gnss::Fix> {
        let mut r = NmeaReader::new();
        let mut out = Vec::new();
        r.push(text.as_bytes(), |f| out.push(f));
        out.extend(r.finish());
        assert_eq!(r.counts().bad_checksums + r.counts().unparsed, 0);
        out
    }

    #[test]
    fn track_acquires_then_moves_at_its_speed() {
        let t = Track::circle(35.0, 139.0);
        let text: String = (0..10).map(|n| t.epoch(n)).collect();
        let fixes = fixes_of(&text);
        assert_eq!(fixes.len(), 10);
        assert!(fixes[..3].iter().all(|f| f.mode == FixMode::NoFix));
        let f = &fixes[3];
        assert_eq!(f.mode, FixMode::Fix3d);
        assert_eq!(
            f.time.map(|t| t.to_string()).as_deref(),
            Some("2024-01-01T00:00:03.000Z")
        );
        assert!((f.speed.unwrap_or_default() - 5.0).abs() < 1e-3);
        // Consecutive positions are ~5 m apart (1 s at 5 m/s along a 100 m circle).
        let (a, b) = (&fixes[4], &fixes[5]);
        let dn = (b.lat.unwrap_or_default() - a.lat.unwrap_or_default()) * M_PER_DEG_LAT;
        let de = (b.lon.unwrap_or_default() - a.lon.unwrap_or_default())
            * M_PER_DEG_LAT
            * 35f64.to_radians().cos();
        let d = (dn * dn + de * de).sqrt();
        assert!((d - 5.0).abs() < 0.05, "moved {d} m");
    }

    #[test]
    fn ddmm_formats_like_receivers() {
        assert_eq!(ddmm(51.068098333, 2, 'N', 'S'), ("5104.085900".into(), 'N'));
        assert_eq!(
            ddmm(-3.652716667, 3, 'E', 'W'),
            ("00339.163000".into(), 'W')
        );
    }

    #[test]
    fn replay_splits_a_log_into_epochs() {
        let log = "# comment\n\
                   $GPZDA,150119.000,09,03,2022,,*53\n\
                   $GPRMC,150119.000,A,5104.0859,N,11405.7387,W,0.09,194.17,090322,,,D*73\n\
                   $GPGSA,A,3,04,09,16,26,07,03,27,02,,,,,1.21,0.94,0.76*01\n\
                   $GPRMC,150120.000,A,5104.0859,N,11405.7388,W,0.13,194.17,090322,,,D*7D\n";
        let bursts = split_epochs(log);
        assert_eq!(bursts.len(), 2);
        assert_eq!(bursts[0].lines().count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_paces_epochs_and_ends() {
        let log = "$GPRMC,150119.000,A,5104.0859,N,11405.7387,W,0.09,194.17,090322,,,D*73\n\
                   $GPRMC,150120.000,A,5104.0859,N,11405.7388,W,0.13,194.17,090322,,,D*7D\n";
        let mut sim = SimGnss::replay(log, false);
        let start = tokio::time::Instant::now();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let n = sim.read_nmea(&mut buf).await.expect("sim");
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, log.len() + 2, "lines re-terminated with CRLF");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
