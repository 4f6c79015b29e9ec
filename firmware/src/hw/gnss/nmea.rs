//! Sans-IO NMEA 0183 reader: bytes in, one [`Fix`] per navigation epoch out.
//!
//! Two layers, neither of which touches a clock or a port:
//!
//! * the framer splits a byte stream into sentences (`$` … `\r\n`, NMEA 0183
//!   v4.11 §5.3). It keeps at most [`MAX_SENTENCE_LEN`] bytes: a longer line
//!   is counted as oversized and dropped, a `$` in the middle of a sentence
//!   means the previous one was truncated (a receiver restart or a lost USB
//!   packet). Bytes outside sentences (log comments, binary protocols) are
//!   skipped and counted;
//! * each sentence is decoded by the `nmea` crate (which checks the
//!   `*hh` XOR checksum) and merged into the current epoch. A receiver sends
//!   one burst of sentences per epoch, all stamped with the same UTC time
//!   (GGA, RMC, GNS, GLL, ZDA); a sentence with a different time closes the
//!   epoch and the merged [`Fix`] is handed out. Sentences without a time
//!   (GSA, VTG, GSV) belong to the epoch in progress. The I/O adapter calls
//!   [`NmeaReader::flush`] when the line goes quiet, so the last epoch of a
//!   burst is not held back until the next one.
//!
//! The fix mode follows gpsd's reading of the same sentences, so the result can
//! be checked against gpsd's output: no fix unless every position sentence of
//! the epoch says the data are valid (RMC status `A`, GGA quality 1-5, GLL
//! status `A`, GNS mode not `N`); 3D when the epoch has an altitude, else 2D.

use chrono::{NaiveDate, NaiveTime};
use nmea::sentences::rmc::RmcStatusOfFix;
use nmea::sentences::FixType;
use nmea::ParseResult;

use super::{Fix, FixMode, GnssTime};

/// Longest sentence accepted, without the `\r\n` (the `nmea` crate's limit:
/// NMEA allows 80 characters, real receivers emit up to ~100).
pub const MAX_SENTENCE_LEN: usize = nmea::SENTENCE_MAX_LEN;

/// Knots to metres per second (1 kn = 1852 m / 3600 s).
const KNOTS_TO_MPS: f64 = 1852.0 / 3600.0;

/// What the reader has seen so far. Counters saturate; they never wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NmeaCounts {
    /// Complete sentences framed (`$` to end of line), whatever their fate.
    pub sentences: u64,
    /// Epochs closed and handed out as fixes (with or without a position).
    pub fixes: u64,
    /// Sentences whose `*hh` checksum did not match their contents.
    pub bad_checksums: u64,
    /// Sentences with a good or missing checksum that could not be decoded
    /// (unknown or proprietary type, malformed field, no checksum).
    pub unparsed: u64,
    /// Sentences cut short by the start of another one (or by the end of input).
    pub truncated: u64,
    /// Lines longer than [`MAX_SENTENCE_LEN`], dropped whole.
    pub oversized: u64,
    /// Bytes outside any sentence (comments, binary protocol traffic, noise).
    pub skipped_bytes: u64,
}

/// Framer state: where the next byte goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Between sentences: bytes are skipped until `$`.
    Idle,
    /// Inside a sentence: bytes go to the buffer.
    Sentence,
    /// Inside a line that grew past the limit: bytes are dropped until the line ends.
    Oversized,
}

/// Values gathered from the sentences of one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
struct Epoch {
    time: Option<NaiveTime>,
    date: Option<NaiveDate>,
    /// `Some(false)` as soon as one position sentence says "invalid".
    valid: Option<bool>,
    position: Option<(f64, f64)>,
    alt: Option<f64>,
    speed_mps: Option<f64>,
    course: Option<f64>,
    satellites: Option<u32>,
    hdop: Option<f64>,
    /// Whether any sentence at all was merged (an epoch of nothing is not a fix).
    touched: bool,
}

impl Epoch {
    fn note_validity(&mut self, valid: bool) {
        self.valid = Some(self.valid.unwrap_or(true) && valid);
    }
}

/// Incremental NMEA reader. Feed it bytes in pieces of any size; the fixes it
/// hands out do not depend on where the pieces were split.
///
/// Memory is fixed: one sentence buffer and one epoch.
#[derive(Debug, Clone)]
pub struct NmeaReader {
    buf: [u8; MAX_SENTENCE_LEN],
    len: usize,
    framing: Framing,
    epoch: Epoch,
    /// The last date seen, for epochs whose sentences carry only a time.
    last_date: Option<NaiveDate>,
    counts: NmeaCounts,
}

impl Default for NmeaReader {
    fn default() -> Self {
        Self::new()
    }
}

impl NmeaReader {
    /// A reader that has seen nothing.
    pub fn new() -> Self {
        NmeaReader {
            buf: [0; MAX_SENTENCE_LEN],
            len: 0,
            framing: Framing::Idle,
            epoch: Epoch::default(),
            last_date: None,
            counts: NmeaCounts::default(),
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> NmeaCounts {
        self.counts
    }

    /// Consumes `data`, calling `on_fix` for every epoch it closes.
    ///
    /// Never fails: bad input is counted in [`NmeaReader::counts`] and skipped.
    pub fn push(&mut self, data: &[u8], mut on_fix: impl FnMut(Fix)) {
        for &b in data {
            match (self.framing, b) {
                (Framing::Idle, b'$') => self.start_sentence(),
                (Framing::Idle, b'\r' | b'\n') => {}
                (Framing::Idle, _) => bump(&mut self.counts.skipped_bytes),
                (Framing::Sentence | Framing::Oversized, b'$') => {
                    // A new sentence started before the old one ended.
                    bump(&mut self.counts.truncated);
                    self.start_sentence();
                }
                (Framing::Sentence, b'\r' | b'\n') => {
                    self.framing = Framing::Idle;
                    self.finish_sentence(&mut on_fix);
                }
                (Framing::Sentence, _) if self.len == MAX_SENTENCE_LEN => {
                    self.framing = Framing::Oversized;
                    bump(&mut self.counts.oversized);
                }
                (Framing::Sentence, _) => {
                    self.buf[self.len] = b;
                    self.len += 1;
                }
                (Framing::Oversized, b'\r' | b'\n') => self.framing = Framing::Idle,
                (Framing::Oversized, _) => {}
            }
        }
    }

    /// Closes the epoch in progress (the line went quiet, or the input ended)
    /// and returns its fix, if it had any data.
    pub fn flush(&mut self) -> Option<Fix> {
        self.close_epoch()
    }

    /// Marks the end of input: a sentence still being received is counted as
    /// truncated, and the epoch in progress is closed.
    pub fn finish(&mut self) -> Option<Fix> {
        self.reset_framing();
        self.close_epoch()
    }

    /// Drops a partly received sentence (counted as truncated), e.g. after the
    /// port was reopened. The epoch in progress is kept.
    pub fn reset_framing(&mut self) {
        if self.framing == Framing::Sentence {
            bump(&mut self.counts.truncated);
        }
        self.framing = Framing::Idle;
        self.len = 0;
    }

    fn start_sentence(&mut self) {
        self.framing = Framing::Sentence;
        self.buf[0] = b'$';
        self.len = 1;
    }

    fn finish_sentence(&mut self, on_fix: &mut impl FnMut(Fix)) {
        bump(&mut self.counts.sentences);
        let len = std::mem::take(&mut self.len);
        // Copy out so the sentence can be merged while `self` is borrowed mutably.
        let sentence = self.buf;
        match nmea::parse_bytes(&sentence[..len]) {
            Ok(parsed) => {
                if let Some(fix) = self.merge(parsed) {
                    on_fix(fix);
                }
            }
            Err(nmea::Error::ChecksumMismatch { .. }) => bump(&mut self.counts.bad_checksums),
            Err(_) => bump(&mut self.counts.unparsed),
        }
    }

    /// Starts a new epoch if `time` differs from the current one, returning
    /// the fix of the epoch that ended.
    fn enter_epoch(&mut self, time: Option<NaiveTime>) -> Option<Fix> {
        let time = time?;
        match self.epoch.time {
            Some(current) if current != time => {
                let closed = self.close_epoch();
                self.epoch.time = Some(time);
                closed
            }
            Some(_) => None,
            None => {
                self.epoch.time = Some(time);
                None
            }
        }
    }

    fn merge(&mut self, parsed: ParseResult) -> Option<Fix> {
        let closed;
        match parsed {
            // GGA: time, position, quality, satellites in use, HDOP, altitude (MSL).
            ParseResult::GGA(gga) => {
                closed = self.enter_epoch(gga.fix_time);
                let e = &mut self.epoch;
                if let Some(q) = gga.fix_type {
                    e.note_validity(q.is_valid());
                }
                if let (Some(lat), Some(lon)) = (gga.latitude, gga.longitude) {
                    e.position = Some((lat, lon));
                }
                e.alt = gga.altitude.map(f64::from).or(e.alt);
                e.satellites = gga.fix_satellites.or(e.satellites);
                e.hdop = gga.hdop.map(f64::from).or(e.hdop);
            }
            // RMC: time, date, status, position, speed over ground (knots), true course.
            ParseResult::RMC(rmc) => {
                closed = self.enter_epoch(rmc.fix_time);
                let e = &mut self.epoch;
                e.note_validity(rmc.status_of_fix != RmcStatusOfFix::Invalid);
                if let (Some(lat), Some(lon)) = (rmc.lat, rmc.lon) {
                    e.position = Some((lat, lon));
                }
                e.date = rmc.fix_date.or(e.date);
                e.speed_mps = rmc
                    .speed_over_ground
                    .map(|kn| f64::from(kn) * KNOTS_TO_MPS)
                    .or(e.speed_mps);
                e.course = rmc.true_course.map(f64::from).or(e.course);
            }
            // GNS (NMEA 4): the multi-constellation GGA.
            ParseResult::GNS(gns) => {
                closed = self.enter_epoch(gns.fix_time);
                let e = &mut self.epoch;
                e.note_validity(FixType::from(gns.faa_modes).is_valid());
                if let (Some(lat), Some(lon)) = (gns.lat, gns.lon) {
                    e.position = Some((lat, lon));
                }
                e.alt = gns.alt.map(f64::from).or(e.alt);
                e.satellites = e.satellites.or(Some(u32::from(gns.nsattelites)));
                e.hdop = gns.hdop.map(f64::from).or(e.hdop);
            }
            // GLL: position, time and a validity flag.
            ParseResult::GLL(gll) => {
                closed = self.enter_epoch(gll.fix_time);
                let e = &mut self.epoch;
                e.note_validity(gll.valid);
                if let (Some(lat), Some(lon)) = (gll.latitude, gll.longitude) {
                    e.position = Some((lat, lon));
                }
            }
            // ZDA: time and full (four-digit year) date.
            ParseResult::ZDA(zda) => {
                closed = self.enter_epoch(zda.utc_time);
                if let (Some(d), Some(m), Some(y)) = (zda.day, zda.month, zda.year) {
                    let date = NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d));
                    self.epoch.date = date.or(self.epoch.date);
                }
            }
            // VTG: course and speed, no time: belongs to the epoch in progress.
            ParseResult::VTG(vtg) => {
                closed = None;
                let e = &mut self.epoch;
                e.speed_mps = vtg
                    .speed_over_ground
                    .map(|kn| f64::from(kn) * KNOTS_TO_MPS)
                    .or(e.speed_mps);
                e.course = vtg.true_course.map(f64::from).or(e.course);
            }
            // GSA: DOPs of the satellites used; GGA's HDOP takes precedence.
            ParseResult::GSA(gsa) => {
                closed = None;
                let e = &mut self.epoch;
                e.hdop = e.hdop.or(gsa.hdop.map(f64::from));
            }
            // Satellites in view, pseudorange statistics and the rest carry
            // nothing a fix needs; they were decoded, so they count as parsed.
            _ => return None,
        }
        self.epoch.touched = true;
        closed
    }

    fn close_epoch(&mut self) -> Option<Fix> {
        let e = std::mem::take(&mut self.epoch);
        if !e.touched {
            return None;
        }
        if e.date.is_some() {
            self.last_date = e.date;
        }
        let mode = match (e.valid, e.position) {
            (Some(true), Some(_)) if e.alt.is_some() => FixMode::Fix3d,
            (Some(true), Some(_)) => FixMode::Fix2d,
            _ => FixMode::NoFix,
        };
        let has_fix = mode != FixMode::NoFix;
        bump(&mut self.counts.fixes);
        Some(Fix {
            time: e.time.map(|time| GnssTime {
                date: e.date.or(self.last_date),
                time,
            }),
            mode,
            lat: e.position.filter(|_| has_fix).map(|p| p.0),
            lon: e.position.filter(|_| has_fix).map(|p| p.1),
            alt: e.alt.filter(|_| mode == FixMode::Fix3d),
            speed: e.speed_mps.filter(|_| has_fix),
            course: e.course.filter(|_| has_fix),
            satellites: e.satellites,
            hdop: e.hdop,
        })
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Appends the `*hh\r\n` trailer (XOR of the bytes between `$` and `*`, NMEA
/// 0183 §5.3.1) to a sentence body such as `$GPGGA,...`.
pub fn with_checksum(body: &str) -> String {
    let sum = body
        .bytes()
        .skip_while(|&b| b == b'$' || b == b'!')
        .fold(0u8, |acc, b| acc ^ b);
    format!("{body}*{sum:02X}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GGA: &str =
        "$GPGGA,150119.000,5104.0859,N,11405.7387,W,2,8,0.94,1102.4,M,-17.5,M,,*53\r\n";
    const RMC: &str = "$GPRMC,150119.000,A,5104.0859,N,11405.7387,W,0.09,194.17,090322,,,D*73\r\n";
    const RMC_NEXT: &str =
        "$GPRMC,150120.000,A,5104.0859,N,11405.7388,W,0.13,194.17,090322,,,D*7D\r\n";

    fn read_all(chunks: &[&[u8]]) -> (Vec<Fix>, NmeaCounts) {
        let mut r = NmeaReader::new();
        let mut fixes = Vec::new();
        for c in chunks {
            r.push(c, |f| fixes.push(f));
        }
        fixes.extend(r.finish());
        (fixes, r.counts())
    }

    #[test]
    fn merges_an_epoch_and_closes_it_on_the_next_time() {
        let input = format!("{RMC}{GGA}{RMC_NEXT}");
        let mut r = NmeaReader::new();
        let mut fixes = Vec::new();
        r.push(input.as_bytes(), |f| fixes.push(f));
        assert_eq!(fixes.len(), 1, "the second epoch is still open");
        let f = &fixes[0];
        assert_eq!(f.mode, FixMode::Fix3d);
        assert_eq!(
            f.time.map(|t| t.to_string()).as_deref(),
            Some("2022-03-09T15:01:19.000Z")
        );
        assert!((f.lat.unwrap() - 51.068098333).abs() < 1e-6);
        assert!((f.lon.unwrap() + 114.095645).abs() < 1e-6);
        assert!((f.alt.unwrap() - 1102.4).abs() < 1e-3);
        assert!((f.speed.unwrap() - 0.09 * KNOTS_TO_MPS).abs() < 1e-6);
        assert!((f.course.unwrap() - 194.17).abs() < 1e-3);
        assert_eq!(f.satellites, Some(8));
        assert!((f.hdop.unwrap() - 0.94).abs() < 1e-6);
        let last = r.flush().expect("second epoch");
        assert_eq!(last.mode, FixMode::Fix2d, "no GGA altitude in that epoch");
        assert_eq!(r.counts().fixes, 2);
    }

    #[test]
    fn counts_bad_checksums_and_unknown_sentences() {
        let bad = GGA.replace("*53", "*54");
        let input = format!("{bad}$POLYN,TIME,RESTART_OCCURRED\r\n$PMTK010,001*2E\r\n");
        let (fixes, counts) = read_all(&[input.as_bytes()]);
        assert!(fixes.is_empty());
        assert_eq!(counts.sentences, 3);
        assert_eq!(counts.bad_checksums, 1);
        assert_eq!(counts.unparsed, 2);
    }

    #[test]
    fn truncated_and_oversized_sentences_are_dropped() {
        let long = format!("$GPTXT,{}*00\r\n", "A".repeat(200));
        let input = format!("$GPGGA,1501{long}{RMC}$GPGG");
        let (fixes, counts) = read_all(&[input.as_bytes()]);
        assert_eq!(
            counts.truncated, 2,
            "one cut by '$', one by the end of input"
        );
        assert_eq!(counts.oversized, 1);
        assert_eq!(counts.sentences, 1);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].mode, FixMode::Fix2d);
    }

    #[test]
    fn invalid_status_means_no_fix() {
        // Garmin demo mode: RMC status V and GGA quality 8 (simulated).
        let input = "$GPRMC,214350,V,4023.8600,N,00339.1630,W,10.8,0.0,140605,2.5,W,S*21\r\n\
                     $GPGGA,214350,4023.8600,N,00339.1630,W,8,09,2.0,695.7,M,51.6,M,,*5A\r\n";
        let (fixes, _) = read_all(&[input.as_bytes()]);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].mode, FixMode::NoFix);
        assert_eq!(fixes[0].lat, None);
        assert_eq!(fixes[0].satellites, Some(9));
    }

    #[test]
    fn checksum_helper_matches_real_sentences() {
        let body = GGA.split('*').next().unwrap();
        assert_eq!(with_checksum(body), GGA);
    }

    #[test]
    fn comments_and_noise_are_skipped() {
        let mut input = b"# a log comment\r\n\x00\xff".to_vec();
        input.extend_from_slice(GGA.as_bytes());
        let (fixes, counts) = read_all(&[&input]);
        assert_eq!(fixes.len(), 1);
        assert_eq!(counts.skipped_bytes, "# a log comment".len() as u64 + 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut r = NmeaReader::new();
            let mut n = 0u64;
            r.push(&data, |_| n += 1);
            n += u64::from(r.finish().is_some());
            let c = r.counts();
            prop_assert_eq!(c.fixes, n);
            prop_assert!(c.bad_checksums + c.unparsed <= c.sentences);
        }

        #[test]
        fn any_split_gives_the_same_fixes(
            noise in proptest::collection::vec(any::<u8>(), 0..64),
            splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut input = format!("{RMC}{GGA}").into_bytes();
            input.extend_from_slice(&noise);
            input.extend_from_slice(format!("\r\n{RMC_NEXT}").as_bytes());
            let (whole, whole_counts) = read_all(&[&input]);
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&input[at..c]);
                at = c;
            }
            pieces.push(&input[at..]);
            let (split, split_counts) = read_all(&pieces);
            prop_assert_eq!(whole, split);
            prop_assert_eq!(whole_counts, split_counts);
        }
    }
}
