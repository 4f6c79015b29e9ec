//! Per-channel receive statistics for viewers: rate, bitrate, latency from
//! the capture timestamp, and frames lost (sequence gaps).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kodama_proto::Frame;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Counters for one channel over a reporting window.
#[derive(Debug, Default, Clone)]
pub struct ChannelStats {
    frames: u64,
    bytes: u64,
    latencies_us: Vec<u64>,
    last_sequence: Option<u64>,
    missed: u64,
    total_frames: u64,
}

/// Latency samples kept per window; enough for p99 at 30 fps over 10 s.
const MAX_SAMPLES: usize = 4096;

impl ChannelStats {
    /// Records a received frame at `now_us`.
    pub fn record(&mut self, frame: &Frame, now_us: u64) {
        self.frames += 1;
        self.total_frames += 1;
        self.bytes += frame.payload.len() as u64;
        if self.latencies_us.len() < MAX_SAMPLES {
            self.latencies_us
                .push(now_us.saturating_sub(frame.capture_us));
        }
        if let Some(prev) = self.last_sequence {
            if frame.sequence > prev + 1 {
                self.missed += frame.sequence - prev - 1;
            }
        }
        self.last_sequence = Some(frame.sequence);
    }

    /// Frames missed (sequence gaps) since the start.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// A one-line report for the window, resetting it; `None` if nothing arrived.
    pub fn report(&mut self, window: Duration) -> Option<String> {
        if self.frames == 0 {
            return None;
        }
        let secs = window.as_secs_f64().max(1e-3);
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        let line = format!(
            "{:6.1} fps {:8.1} kbit/s  latency p50 {:6.1} ms p99 {:6.1} ms  missed {}",
            self.frames as f64 / secs,
            self.bytes as f64 * 8.0 / secs / 1000.0,
            pct(0.5),
            pct(0.99),
            self.missed
        );
        self.frames = 0;
        self.bytes = 0;
        self.latencies_us.clear();
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::{Channel, FrameFlags};

    #[test]
    fn counts_gaps_and_latency() {
        let mut s = ChannelStats::default();
        for (seq, cap) in [(1, 1000), (2, 2000), (5, 3000)] {
            s.record(
                &Frame {
                    channel: Channel::Video,
                    flags: FrameFlags::empty(),
                    capture_us: cap,
                    sequence: seq,
                    payload: Bytes::from_static(&[0; 125]),
                },
                cap + 10_000,
            );
        }
        assert_eq!(s.missed(), 2);
        let line = s.report(Duration::from_secs(1)).expect("report");
        assert!(line.contains("3.0 fps"), "{line}");
        assert!(line.contains("3.0 kbit/s"), "{line}");
        assert!(line.contains("p50   10.0 ms"), "{line}");
        assert!(s.report(Duration::from_secs(1)).is_none());
    }
}
