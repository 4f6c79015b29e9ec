//! Field diagnostics (`kodama-camera diag …`): what an installer runs on a
//! camera when something is wrong. Each command is a function over a reader
//! and a writer, so tests drive it without a process; `main.rs` maps errors
//! to a message and a non-zero exit code.
//!
//! # Layout
//! * [`nmea`]: `diag nmea FILE|-`: one JSON line per GNSS epoch, then the counts.
//! * [`h264`]: `diag h264 FILE|-`: profile, level, resolution, frames, IDR indices.
//! * [`telemetry`]: `diag telemetry [--root DIR]`: one telemetry sample.
//! * `diag modem` lives with the modem driver (`hw::modem::diag`).

pub mod h264;
pub mod nmea;
pub mod telemetry;

use std::io::Read;
use std::path::Path;

/// Why a diagnostic failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiagError {
    /// The input file could not be opened: check the path and permissions.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path given.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading the input failed.
    #[error("reading input failed: {0}")]
    Read(#[source] std::io::Error),
    /// Writing the report failed (e.g. the pipe was closed).
    #[error("writing output failed: {0}")]
    Write(#[source] std::io::Error),
    /// The input holds no H.264 sequence parameter set nor any picture:
    /// not an Annex-B stream (an MP4 file must be converted first).
    #[error("no H.264 found in {bytes} bytes (expected an Annex-B elementary stream)")]
    NotH264 {
        /// Bytes read.
        bytes: u64,
    },
}

/// Opens `path` for reading; `-` is standard input.
pub fn open_input(path: &str) -> Result<Box<dyn Read + Send>, DiagError> {
    if path == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    std::fs::File::open(Path::new(path))
        .map(|f| Box::new(f) as Box<dyn Read + Send>)
        .map_err(|source| DiagError::Open {
            path: path.to_string(),
            source,
        })
}

/// Reads `input` in 64 KiB pieces, handing each to `f`; returns the byte count.
fn for_each_chunk(mut input: impl Read, mut f: impl FnMut(&[u8])) -> Result<u64, DiagError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n as u64;
                f(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DiagError::Read(e)),
        }
    }
}

/// Writes one JSON value and a newline.
fn write_json_line(
    out: &mut impl std::io::Write,
    v: &impl serde::Serialize,
) -> Result<(), DiagError> {
    serde_json::to_writer(&mut *out, v).map_err(|e| DiagError::Write(e.into()))?;
    out.write_all(b"\n").map_err(DiagError::Write)
}
