//! `diag telemetry [--root DIR]`: one telemetry sample, as the camera would
//! send it, with CPU usage measured over one second.

use std::io::Write;
use std::time::Duration;

use super::{write_json_line, DiagError};
use crate::telemetry::{sample_now, Inputs, Sample, TelemetryConfig};

/// Samples `cfg.root`, waits `cpu_window`, samples again and prints the
/// second sample (whose CPU percentage covers the window).
pub async fn run(
    cfg: &TelemetryConfig,
    cpu_window: Duration,
    mut out: impl Write,
) -> Result<Sample, DiagError> {
    let mut reader = cfg.reader();
    let inputs = Inputs::<serde_json::Value>::default();
    let _ = reader.sample();
    tokio::time::sleep(cpu_window).await;
    let sample = sample_now(&mut reader, &inputs);
    write_json_line(&mut out, &sample)?;
    out.flush().map_err(DiagError::Write)?;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn prints_a_sample_of_a_fixture_tree() {
        let cfg = TelemetryConfig {
            root: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/telemetry/pi-zero-2w-wifi"),
            ..TelemetryConfig::default()
        };
        let mut out = Vec::new();
        let s = run(&cfg, Duration::from_millis(10), &mut out)
            .await
            .expect("diag");
        let json: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            json["soc_temp_c"].as_f64().map(|t| (t * 1000.0).round()),
            Some(48312.0)
        );
        assert_eq!(json["link"]["kind"], "wifi");
        assert_eq!(json["memory"]["total_kb"], 439_928);
        assert_eq!(s.system.uptime_s, Some(955.43));
    }

    /// This machine's own /proc: CPU usage over the window is a percentage.
    #[tokio::test]
    async fn live_system_has_cpu_usage() {
        let mut out = Vec::new();
        let s = run(
            &TelemetryConfig::default(),
            Duration::from_millis(200),
            &mut out,
        )
        .await
        .expect("diag");
        let cpu = s.system.cpu_percent.expect("Linux /proc/stat");
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        assert!(s.system.memory.is_some());
    }
}
