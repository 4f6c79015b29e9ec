//! Throughput of the sans-IO wire codecs (`kodama-proto`), each next to a
//! baseline measured in the same run: a plain copy of the same bytes in the
//! same pieces. Encoding a frame is one copy of its payload plus a 22-byte
//! header; decoding is one copy into the decoder's buffer plus zero-copy
//! splits, so a ratio near 1.0 means the codec adds nothing over the copy
//! it cannot avoid.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::{Bytes, BytesMut};
use kodama_proto::{
    CameraInfo, Channel, Codec, Command, CommandResult, Frame, FrameDecoder, FrameFlags, Message,
    MessageDecoder,
};

/// Bytes handed to a decoder per `push`: one QUIC packet's worth of stream
/// data, which is what `read_chunk` returns on a loopback path.
pub const CHUNK: usize = 1200;

/// Roughly how many wire bytes one batch holds: large enough that timer
/// reads are negligible, small enough to stay in the last-level cache.
const BATCH_BYTES: usize = 4 << 20;

/// One measured case.
#[derive(Debug, Clone)]
pub struct CodecResult {
    /// What was measured.
    pub name: String,
    /// Codec bytes per second (wire bytes).
    pub bytes_per_sec: f64,
    /// Items (frames or messages) per second.
    pub items_per_sec: f64,
    /// Baseline bytes per second (plain copy of the same bytes).
    pub baseline_bytes_per_sec: f64,
}

impl CodecResult {
    /// Codec throughput over baseline throughput.
    pub fn ratio(&self) -> f64 {
        self.bytes_per_sec / self.baseline_bytes_per_sec.max(1.0)
    }
}

/// Runs `batch` (which returns the bytes and items it processed) until
/// `time` has passed; returns (bytes/s, items/s).
fn measure(time: Duration, mut batch: impl FnMut() -> (usize, usize)) -> (f64, f64) {
    // One untimed batch warms caches and lets buffers reach their size.
    black_box(batch());
    let start = Instant::now();
    let (mut bytes, mut items) = (0u64, 0u64);
    loop {
        let (b, i) = batch();
        bytes += b as u64;
        items += i as u64;
        if start.elapsed() >= time {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (bytes as f64 / secs, items as f64 / secs)
}

/// A GOP-shaped list of video frames: `payload` bytes each, keyframe first.
fn frames(payload: usize, keyframe: bool) -> Vec<Frame> {
    let count = (BATCH_BYTES / (payload + kodama_proto::FRAME_HEADER_LEN)).max(1);
    // Payload bytes vary so nothing can be special-cased on zeros.
    let body: Bytes = (0..payload)
        .map(|i| (i * 31 + 7) as u8)
        .collect::<Vec<u8>>()
        .into();
    (0..count)
        .map(|i| Frame {
            channel: Channel::Video,
            flags: if keyframe {
                FrameFlags::KEYFRAME | FrameFlags::CODEC_CONFIG
            } else {
                FrameFlags::empty()
            },
            capture_us: 1_700_000_000_000_000 + i as u64 * 33_333,
            sequence: i as u64,
            payload: body.clone(),
        })
        .collect()
}

fn encode_all(frames: &[Frame]) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out)?;
    }
    Ok(out.freeze())
}

/// Frame encode and decode for one payload size.
fn frame_cases(
    label: &str,
    payload: usize,
    keyframe: bool,
    time: Duration,
) -> anyhow::Result<Vec<CodecResult>> {
    let frames = frames(payload, keyframe);
    let wire = encode_all(&frames)?;
    let count = frames.len();

    // Encode: header + payload copy into a reused buffer.
    let mut out = BytesMut::with_capacity(wire.len());
    let mut encode_failed = None;
    let (enc_bps, enc_ips) = measure(time, || {
        out.clear();
        for f in &frames {
            if let Err(e) = f.encode(&mut out) {
                encode_failed = Some(e);
            }
        }
        black_box(&out);
        (out.len(), count)
    });
    if let Some(e) = encode_failed {
        return Err(e).context("frame encode");
    }
    // Baseline: copy each payload into a reused buffer, nothing else.
    let mut copy: Vec<u8> = Vec::with_capacity(wire.len());
    let (enc_base, _) = measure(time, || {
        copy.clear();
        for f in &frames {
            copy.extend_from_slice(&f.payload);
        }
        black_box(&copy);
        (copy.len() + count * kodama_proto::FRAME_HEADER_LEN, count)
    });

    // Decode: QUIC-packet-sized pushes, frames pulled as they complete.
    let mut decoder = FrameDecoder::new();
    let mut decoded_ok = true;
    let (dec_bps, dec_ips) = measure(time, || {
        let mut n = 0;
        for chunk in wire.chunks(CHUNK) {
            decoder.push(chunk);
            loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => {
                        black_box(&f);
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        decoded_ok = false;
                        break;
                    }
                }
            }
        }
        decoded_ok &= n == count;
        (wire.len(), n)
    });
    ensure!(
        decoded_ok,
        "frame decoder lost or rejected frames of its own encoder's output"
    );
    // Baseline: the same pushes into a plain buffer.
    let (dec_base, _) = measure(time, || {
        copy.clear();
        for chunk in wire.chunks(CHUNK) {
            copy.extend_from_slice(chunk);
        }
        black_box(&copy);
        (copy.len(), count)
    });

    Ok(vec![
        CodecResult {
            name: format!("Frame encode, {label}"),
            bytes_per_sec: enc_bps,
            items_per_sec: enc_ips,
            baseline_bytes_per_sec: enc_base,
        },
        CodecResult {
            name: format!("Frame decode, {label}"),
            bytes_per_sec: dec_bps,
            items_per_sec: dec_ips,
            baseline_bytes_per_sec: dec_base,
        },
    ])
}

/// The control messages a session exchanges, in a realistic mix.
fn messages() -> Vec<Message> {
    let info = CameraInfo {
        name: "front-door".into(),
        codec: Codec::H264,
        width: 1280,
        height: 720,
        fps_milli: 30_000,
        bitrate_kbps: 4000,
        // Sizes of a real OpenH264 720p SPS and PPS.
        sps: Bytes::from_static(&[
            0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0, 0x0f, 0x08, 0x84, 0x6a,
        ]),
        pps: Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
        firmware: "0.1.0".into(),
        audio: None,
    };
    vec![
        Message::CameraHello {
            version: kodama_proto::PROTOCOL_VERSION,
            info: info.clone(),
        },
        Message::Welcome {
            version: kodama_proto::PROTOCOL_VERSION,
            server: "kodama".into(),
        },
        Message::StreamInfo {
            camera: [7; 32],
            info,
        },
        Message::CameraState {
            camera: [7; 32],
            online: true,
        },
        Message::Command {
            id: 9,
            command: Command::SetBitrate { kbps: 2500 },
        },
        Message::CommandAck {
            id: 9,
            result: CommandResult::Ok,
            detail: String::new(),
        },
    ]
}

/// Control message encode and decode.
fn message_cases(time: Duration) -> anyhow::Result<Vec<CodecResult>> {
    let mix = messages();
    let one_round: usize = mix.iter().map(|m| m.to_bytes().len()).sum();
    let rounds = (BATCH_BYTES / 16 / one_round).max(1);
    let batch: Vec<Message> = (0..rounds).flat_map(|_| mix.iter().cloned()).collect();
    let count = batch.len();
    let mut out = BytesMut::new();
    for m in &batch {
        m.encode(&mut out);
    }
    let wire = out.clone().freeze();

    let (enc_bps, enc_ips) = measure(time, || {
        out.clear();
        for m in &batch {
            m.encode(&mut out);
        }
        black_box(&out);
        (out.len(), count)
    });
    let mut copy: Vec<u8> = Vec::with_capacity(wire.len());
    let (base, _) = measure(time, || {
        copy.clear();
        for chunk in wire.chunks(CHUNK) {
            copy.extend_from_slice(chunk);
        }
        black_box(&copy);
        (copy.len(), count)
    });
    let mut decoder = MessageDecoder::new();
    let mut decoded_ok = true;
    let (dec_bps, dec_ips) = measure(time, || {
        let mut n = 0;
        for chunk in wire.chunks(CHUNK) {
            decoder.push(chunk);
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => {
                        black_box(&m);
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        decoded_ok = false;
                        break;
                    }
                }
            }
        }
        decoded_ok &= n == count;
        (wire.len(), n)
    });
    ensure!(
        decoded_ok,
        "message decoder lost or rejected its own encoder's output"
    );
    Ok(vec![
        CodecResult {
            name: "Message encode, control mix".into(),
            bytes_per_sec: enc_bps,
            items_per_sec: enc_ips,
            baseline_bytes_per_sec: base,
        },
        CodecResult {
            name: "Message decode, control mix".into(),
            bytes_per_sec: dec_bps,
            items_per_sec: dec_ips,
            baseline_bytes_per_sec: base,
        },
    ])
}

/// Every codec case, each timed for `time` (and its baseline as long).
pub fn run(time: Duration) -> anyhow::Result<Vec<CodecResult>> {
    let mut results = frame_cases("4 KB P-frames", 4 * 1024, false, time)?;
    results.extend(frame_cases("60 KB keyframes", 60 * 1024, true, time)?);
    results.extend(message_cases(time)?);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_runs_and_reports_positive_rates() {
        let results = run(Duration::from_millis(5)).expect("codecs round-trip");
        assert_eq!(results.len(), 6);
        for r in results {
            assert!(
                r.bytes_per_sec > 0.0 && r.baseline_bytes_per_sec > 0.0,
                "{r:?}"
            );
        }
    }
}
