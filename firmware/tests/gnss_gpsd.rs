//! The NMEA reader against gpsd, on real receiver logs.
//!
//! `shared/testdata/nmea/*.log` are receiver captures from gpsd's regression
//! suite; each `.log.chk` beside it is gpsd's own output for that log. For
//! every UTC time at which gpsd reports a 2D/3D fix, the reader must report a
//! fix for the same epoch with the same mode, latitude and longitude within
//! 1e-6 degrees, and the same altitude (MSL), speed and track wherever gpsd
//! has them — and it must report no fix at any time gpsd does not.
//!
//! gpsd emits a TPV after each sentence; the last TPV for a time holds the
//! whole epoch, which is what the reader hands out, so that is the one compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kodama_firmware::hw::gnss::{Fix, FixMode, NmeaCounts, NmeaReader};
use serde_json::Value;

fn testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/nmea");
    if dir.is_dir() {
        Some(dir)
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide the shared NMEA logs at {}",
            dir.display()
        );
        println!(
            "SKIPPED: {} is absent (the team's shared/ checkout sits beside the repository)",
            dir.display()
        );
        None
    }
}

fn read(bytes: &[u8], chunk: usize) -> (Vec<Fix>, NmeaCounts) {
    let mut r = NmeaReader::new();
    let mut fixes = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        r.push(c, |f| fixes.push(f));
    }
    fixes.extend(r.finish());
    (fixes, r.counts())
}

/// gpsd's last TPV per time, for TPVs with a time and a 2D/3D mode, and the
/// positions of 2D/3D TPVs that gpsd reported without a time.
fn gpsd_fixes(chk: &str) -> (BTreeMap<String, Value>, Vec<(f64, f64)>) {
    let mut by_time = BTreeMap::new();
    let mut untimed = Vec::new();
    for line in chk.lines().filter(|l| l.starts_with(r#"{"class":"TPV""#)) {
        let tpv: Value = serde_json::from_str(line).expect("gpsd JSON");
        if tpv["mode"].as_u64().unwrap_or(0) < 2 {
            continue;
        }
        match (
            tpv["time"].as_str(),
            tpv["lat"].as_f64(),
            tpv["lon"].as_f64(),
        ) {
            (Some(t), _, _) => {
                by_time.insert(t.to_string(), tpv);
            }
            (None, Some(lat), Some(lon)) => untimed.push((lat, lon)),
            (None, _, _) => {}
        }
    }
    (by_time, untimed)
}

fn close(what: &str, time: &str, ours: Option<f64>, gpsd: &Value, tol: f64) {
    if let Some(want) = gpsd.as_f64() {
        let got = ours.unwrap_or_else(|| panic!("{time}: gpsd has {what} {want}, we have none"));
        assert!(
            (got - want).abs() <= tol,
            "{time}: {what} {got} vs gpsd {want} (tolerance {tol})"
        );
    }
}

#[test]
fn fixes_agree_with_gpsd() {
    let Some(dir) = testdata() else { return };
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .expect("read testdata")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no .log files in {}", dir.display());
    let mut compared = 0;
    for log in &logs {
        let name = log.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(log).expect("read log");
        let chk = std::fs::read_to_string(log.with_extension("log.chk")).expect("read .chk");
        let (fixes, counts) = read(&bytes, usize::MAX);

        // Any way of splitting the bytes gives the same answer.
        for chunk in [1, 7, 64] {
            assert_eq!(
                read(&bytes, chunk),
                (fixes.clone(), counts),
                "{name}: chunk {chunk}"
            );
        }

        let mut ours = BTreeMap::new();
        for f in fixes.iter().filter(|f| f.mode != FixMode::NoFix) {
            let t = f
                .time
                .filter(|t| t.date.is_some())
                .expect("a fix has a dated time");
            ours.insert(t.to_string(), *f);
        }
        let (gpsd, gpsd_untimed) = gpsd_fixes(&chk);
        for time in gpsd.keys() {
            assert!(
                ours.contains_key(time),
                "{name}: gpsd has a fix at {time}, we have none"
            );
        }
        // gpsd reports a time only once it trusts the date: after a cold
        // start (mtk-3301 sent 1980 dates before its first fix) the first
        // fix's TPV has none. Such an epoch must match one of those TPVs by position.
        let mut by_position = 0;
        for (time, f) in ours.iter().filter(|(t, _)| !gpsd.contains_key(*t)) {
            let (lat, lon) = (f.lat.unwrap_or(f64::NAN), f.lon.unwrap_or(f64::NAN));
            assert!(
                gpsd_untimed
                    .iter()
                    .any(|&(a, b)| (a - lat).abs() <= 1e-6 && (b - lon).abs() <= 1e-6),
                "{name}: we report a fix at {time} ({lat}, {lon}) that gpsd never reported"
            );
            by_position += 1;
        }
        for (time, tpv) in &gpsd {
            let f = &ours[time];
            let mode = match f.mode {
                FixMode::Fix2d => 2,
                FixMode::Fix3d => 3,
                FixMode::NoFix => 1,
            };
            assert_eq!(Some(mode), tpv["mode"].as_u64(), "{name} {time}: mode");
            close("lat", time, f.lat, &tpv["lat"], 1e-6);
            close("lon", time, f.lon, &tpv["lon"], 1e-6);
            close("altMSL", time, f.alt, &tpv["altMSL"], 1e-3);
            close("speed", time, f.speed, &tpv["speed"], 1e-3);
            close("track", time, f.course, &tpv["track"], 1e-3);
            compared += 1;
        }
        println!(
            "{name}: {} epochs, {} fixes agree with gpsd ({by_position} more by position only); \
             counts {counts:?}",
            fixes.len(),
            gpsd.len()
        );
    }
    assert!(compared >= 30, "only {compared} fixes compared");
}

/// The Garmin log is demo-mode output (RMC status V, GGA quality 8): gpsd
/// reports no dated fix, and the reader must not invent one.
#[test]
fn garmin_demo_mode_has_no_fix() {
    let Some(dir) = testdata() else { return };
    let bytes = std::fs::read(dir.join("garmin-geko201.log")).expect("read log");
    let (fixes, counts) = read(&bytes, 13);
    assert!(fixes.len() >= 10, "{} epochs", fixes.len());
    assert!(fixes
        .iter()
        .all(|f| f.mode == FixMode::NoFix && f.lat.is_none()));
    assert_eq!(counts.bad_checksums, 0);
}

/// MTK-3301 power-up: `$POLYN` sentences carry no checksum and `$PMTK…` are
/// proprietary: counted as unparsed, never as fixes. Its `$PMTKCHN` lines are
/// ~190 characters, past the sentence limit: counted as oversized.
#[test]
fn mtk_power_up_counts_proprietary_sentences() {
    let Some(dir) = testdata() else { return };
    let bytes = std::fs::read(dir.join("mtk-3301.log")).expect("read log");
    let (_, counts) = read(&bytes, 5);
    let lines = String::from_utf8_lossy(&bytes);
    // Every line holding a `$` is framed, including the header comment
    // "# $POLYN has no checksum." (the reader knows nothing of log comments).
    let sentences = lines.lines().filter(|l| l.contains('$')).count() as u64;
    assert_eq!(counts.sentences + counts.oversized, sentences, "{counts:?}");
    assert_eq!(counts.oversized, 11, "{counts:?}");
    assert!(counts.unparsed >= 3, "{counts:?}");
    assert_eq!(counts.bad_checksums, 0);
}
