//! `diag nmea FILE|-`: replays NMEA (a capture of `/dev/ttyUSB1`, or the
//! port itself) through the reader the camera uses and prints one JSON line
//! per epoch, then a line with the counters.

use std::io::{Read, Write};

use serde::Serialize;

use super::{for_each_chunk, write_json_line, DiagError};
use crate::hw::gnss::{NmeaCounts, NmeaReader};

/// The final line: `{"counts":{...}}`.
#[derive(Serialize)]
struct CountsLine {
    counts: NmeaCounts,
}

/// Reads NMEA from `input` to its end, writing one [`crate::hw::gnss::Fix`]
/// per line to `out` (epochs without a fix too, with `"mode":"none"`), then
/// the counters. Returns the counters.
pub fn run(input: impl Read, mut out: impl Write) -> Result<NmeaCounts, DiagError> {
    let mut reader = NmeaReader::new();
    let mut write_err = None;
    for_each_chunk(input, |chunk| {
        reader.push(chunk, |fix| {
            if write_err.is_none() {
                write_err = write_json_line(&mut out, &fix).err();
            }
        });
    })?;
    if let Some(e) = write_err {
        return Err(e);
    }
    if let Some(fix) = reader.finish() {
        write_json_line(&mut out, &fix)?;
    }
    let counts = reader.counts();
    write_json_line(&mut out, &CountsLine { counts })?;
    out.flush().map_err(DiagError::Write)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_fixes_then_counts() {
        let input = "$GPRMC,150119.000,A,5104.0859,N,11405.7387,W,0.09,194.17,090322,,,D*73\r\n\
                     $GPGGA,150119.000,5104.0859,N,11405.7387,W,2,8,0.94,1102.4,M,-17.5,M,,*53\r\n\
                     $GPGGA,150120.000,5104.0859,N,11405.7388,W,2,8,0.94,1102.3,M,-17.5,M,,*51\r\n\
                     $GPGGA,bad*00\r\n";
        let mut out = Vec::new();
        let counts = run(input.as_bytes(), &mut out).expect("diag");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["utc"], "2022-03-09T15:01:19.000Z");
        assert_eq!(lines[0]["mode"], "3d");
        assert_eq!(lines[0]["satellites"], 8);
        for key in ["lat", "lon", "alt", "speed", "course", "hdop"] {
            assert!(lines[0][key].is_number(), "{key} in {}", lines[0]);
        }
        assert_eq!(
            lines[1]["utc"], "2022-03-09T15:01:20.000Z",
            "date carried over"
        );
        assert_eq!(lines[2]["counts"]["sentences"], 4);
        assert_eq!(lines[2]["counts"]["fixes"], 2);
        assert_eq!(lines[2]["counts"]["bad_checksums"], 1);
        assert_eq!(counts.fixes, 2);
    }
}
