//! Live video for browsers: WebSocket → fragmented MP4 → Media Source
//! Extensions.
//!
//! Per connection the server sends, in order:
//! * a text message `{"type":"init","codec":"avc1.PPCCLL","width":…,
//!   "height":…,"name":…,"base_capture_us":…}` and then the init segment
//!   (binary) — again whenever the camera's parameter sets change;
//! * one binary message per video frame: a `moof` + `mdat` fragment holding
//!   that one frame, whose decode time is its capture time minus
//!   `base_capture_us` (so the page turns any media time back into a
//!   capture time, which is how it shows capture-to-display latency);
//! * `{"type":"drop","frames":n}` when the client fell behind and the
//!   server skipped it to the newest keyframe (the rest of the old GOP is
//!   never sent); `{"type":"offline"}` / `{"type":"online"}` as the camera
//!   goes and comes.
//!
//! The first fragment is the hub's cached keyframe, so a page shows a
//! picture as soon as it has that GOP. Sending one frame at a time and
//! checking for a newer GOP between frames bounds latency: a client that
//! reads slowly makes `send` wait, and while it waits newer GOPs begin.
//!
//! [`LiveMuxer`] is the sans-IO part (frames → init segment and fragments);
//! [`serve`] runs one socket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use kodama_media::fmp4::{self, FragmentHeader, SampleInfo, VideoTrack, TIMESCALE};
use kodama_media::h264;
use kodama_proto::{CameraInfo, Frame};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hub::{CameraTrack, LiveGroup};

/// A send that takes longer than this means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

fn us_to_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(TIMESCALE) / 1_000_000) as u64
}

/// What the muxer produced for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Muxed {
    /// A new track begins: send this init description and segment first.
    Init {
        /// The JSON text message.
        describe: String,
        /// `ftyp` + `moov`.
        segment: Vec<u8>,
        /// The frame's fragment.
        fragment: Vec<u8>,
    },
    /// A fragment of the current track.
    Fragment(Vec<u8>),
    /// The frame cannot start a track (not a keyframe, or no usable SPS/PPS);
    /// it was not sent.
    Skipped,
}

/// Frames of one camera → fMP4, one frame per fragment.
#[derive(Debug)]
pub struct LiveMuxer {
    name: String,
    fallback: Option<(Vec<u8>, Vec<u8>)>,
    nominal_us: u64,
    track: Option<VideoTrack>,
    base_capture_us: u64,
    next_min_ticks: u64,
    sequence: u32,
}

impl LiveMuxer {
    /// A muxer for a camera described by `info`.
    pub fn new(info: &CameraInfo) -> Self {
        let nominal_us = if info.fps_milli > 0 {
            1_000_000_000 / u64::from(info.fps_milli)
        } else {
            33_333
        };
        LiveMuxer {
            name: info.name.clone(),
            fallback: (!info.sps.is_empty()).then(|| (info.sps.to_vec(), info.pps.to_vec())),
            nominal_us,
            track: None,
            base_capture_us: 0,
            next_min_ticks: 0,
            sequence: 0,
        }
    }

    /// The camera's info changed (reconnect, new parameters).
    pub fn update_info(&mut self, info: &CameraInfo) {
        let track = self.track.take();
        let (base, min, seq) = (self.base_capture_us, self.next_min_ticks, self.sequence);
        *self = Self::new(info);
        self.track = track;
        (self.base_capture_us, self.next_min_ticks, self.sequence) = (base, min, seq);
    }

    /// Muxes one video frame.
    pub fn push(&mut self, frame: &Frame) -> Result<Muxed, fmp4::Mp4Error> {
        let mut init = None;
        if frame.is_keyframe() {
            let track = match h264::parameter_sets(&frame.payload) {
                (Some(sps), Some(pps)) => VideoTrack::new(sps, pps).ok(),
                _ => self
                    .fallback
                    .as_ref()
                    .and_then(|(s, p)| VideoTrack::new(s, p).ok()),
            };
            match (track, &self.track) {
                (Some(t), Some(cur)) if &t == cur => {}
                (Some(t), _) => {
                    if self.track.is_none() {
                        self.base_capture_us = frame.capture_us;
                    }
                    let describe = json!({
                        "type": "init",
                        "codec": t.codec_string(),
                        "width": t.width,
                        "height": t.height,
                        "name": self.name,
                        "base_capture_us": self.base_capture_us,
                    })
                    .to_string();
                    init = Some((describe, fmp4::init_segment(&t)));
                    self.track = Some(t);
                }
                (None, None) => return Ok(Muxed::Skipped),
                (None, Some(_)) => {}
            }
        } else if self.track.is_none() {
            return Ok(Muxed::Skipped);
        }
        let mut data = Vec::with_capacity(frame.payload.len());
        let size = fmp4::append_sample(&frame.payload, &mut data);
        let ticks = us_to_ticks(frame.capture_us.saturating_sub(self.base_capture_us))
            .max(self.next_min_ticks);
        let duration = us_to_ticks(self.nominal_us).max(1);
        self.next_min_ticks = ticks + 1;
        self.sequence = self.sequence.wrapping_add(1);
        let mut out = fmp4::fragment_header(&FragmentHeader {
            sequence: self.sequence,
            base_decode_time: ticks,
            wall_time_us: Some(frame.capture_us as i64),
            samples: vec![SampleInfo {
                duration: u32::try_from(duration).unwrap_or(u32::MAX),
                size: u32::try_from(size).unwrap_or(u32::MAX),
                keyframe: frame.is_keyframe(),
            }],
        })?;
        out.extend_from_slice(&data);
        Ok(match init {
            Some((describe, segment)) => Muxed::Init {
                describe,
                segment,
                fragment: out,
            },
            None => Muxed::Fragment(out),
        })
    }
}

async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    send(socket, Message::Text(v.to_string().into())).await
}

/// Counters of one live socket (logged when it ends).
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveStats {
    /// Frames sent.
    pub sent: u64,
    /// Frames skipped because the client was behind.
    pub dropped: u64,
    /// Times the client was skipped to a newer keyframe.
    pub skips: u64,
}

/// Streams `track` to `socket` until either side ends.
pub async fn serve(
    mut socket: WebSocket,
    track: Arc<CameraTrack>,
    cancel: CancellationToken,
) -> LiveStats {
    let _watching = track.viewer_guard();
    let mut status = track.status();
    let mut groups = track.groups();
    let first = status.borrow_and_update().clone();
    let mut muxer = LiveMuxer::new(&first.info);
    let mut online = first.online;
    if !online && !send_json(&mut socket, json!({"type": "offline"})).await {
        return LiveStats::default();
    }
    let mut stats = LiveStats::default();
    let mut current: Option<(Arc<LiveGroup>, usize)> = None;
    let mut frames_rx: Option<tokio::sync::watch::Receiver<usize>> = None;
    loop {
        let newest = groups.borrow_and_update().clone();
        if let Some(newest) = newest {
            if current.as_ref().is_none_or(|(g, _)| newest.id > g.id) {
                let behind = current
                    .as_ref()
                    .map_or(0, |(g, next)| g.len().saturating_sub(*next) as u64);
                if behind > 0 {
                    stats.dropped += behind;
                    stats.skips += 1;
                    if !send_json(&mut socket, json!({"type": "drop", "frames": behind})).await {
                        break;
                    }
                }
                frames_rx = Some(newest.subscribe().0);
                current = Some((newest, 0));
            }
        }
        if let Some(rx) = &mut frames_rx {
            rx.borrow_and_update();
        }
        // One frame, then look for a newer GOP again.
        let next_frame = current.as_ref().and_then(|(g, n)| g.get(*n));
        if let Some(frame) = next_frame {
            if let Some((_, n)) = &mut current {
                *n += 1;
            }
            let ok = match muxer.push(&frame) {
                Ok(Muxed::Init {
                    describe,
                    segment,
                    fragment,
                }) => {
                    send(&mut socket, Message::Text(describe.into())).await
                        && send(&mut socket, Message::Binary(segment.into())).await
                        && send(&mut socket, Message::Binary(fragment.into())).await
                }
                Ok(Muxed::Fragment(f)) => send(&mut socket, Message::Binary(f.into())).await,
                Ok(Muxed::Skipped) => true,
                Err(e) => {
                    tracing::warn!(camera = %track.id, "live fragment: {e}");
                    true
                }
            };
            if !ok {
                break;
            }
            stats.sent += 1;
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            r = groups.changed() => if r.is_err() { break },
            _ = async {
                match &mut frames_rx {
                    Some(rx) => { let _ = rx.changed().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            r = status.changed() => {
                if r.is_err() { break }
                let s = status.borrow_and_update().clone();
                muxer.update_info(&s.info);
                if s.online != online {
                    online = s.online;
                    let kind = if online { "online" } else { "offline" };
                    if !send_json(&mut socket, json!({"type": kind})).await { break }
                }
            }
            m = socket.recv() => match m {
                // The page sends nothing but pings; a close or an error ends it.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kodama_proto::{Channel, Codec, FrameFlags};

    /// `n` frames of the firmware's synthetic picture, GOPs of 3.
    pub(crate) fn encoded_frames(n: usize) -> Vec<(bool, Vec<u8>)> {
        use kodama_firmware::video::synthetic::{MotionSwitch, SyntheticSource};
        use kodama_firmware::video::{VideoSettings, VideoSource};
        let settings = VideoSettings {
            width: 64,
            height: 48,
            fps: 30,
            bitrate_kbps: 100,
            keyframe_interval: 3,
        };
        let mut src =
            SyntheticSource::new(settings, false, MotionSwitch::default()).expect("source");
        (0..n)
            .map(|_| {
                let f = src.next_frame().expect("frame");
                (f.keyframe, f.data.to_vec())
            })
            .collect()
    }

    fn frame(key: bool, capture_us: u64, payload: Vec<u8>) -> Frame {
        Frame {
            channel: Channel::Video,
            flags: if key {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::empty()
            },
            capture_us,
            sequence: 0,
            payload: Bytes::from(payload),
        }
    }

    fn info() -> CameraInfo {
        CameraInfo {
            name: "porch".into(),
            codec: Codec::H264,
            width: 64,
            height: 48,
            fps_milli: 30_000,
            bitrate_kbps: 100,
            sps: Bytes::new(),
            pps: Bytes::new(),
            firmware: String::new(),
        }
    }

    #[test]
    fn starts_at_a_keyframe_then_one_fragment_per_frame() {
        let frames = encoded_frames(5);
        assert!(frames[0].0 && !frames[1].0 && frames[3].0);
        let mut m = LiveMuxer::new(&info());
        // A delta frame cannot start the stream.
        assert_eq!(
            m.push(&frame(false, 1_000_000, frames[1].1.clone()))
                .expect("mux"),
            Muxed::Skipped
        );
        let mut times = Vec::new();
        let mut init_seen = 0;
        for (i, (key, data)) in frames.iter().enumerate() {
            let out = m
                .push(&frame(*key, 2_000_000 + i as u64 * 33_333, data.clone()))
                .expect("mux");
            let fragment = match out {
                Muxed::Init {
                    describe,
                    segment,
                    fragment,
                } => {
                    init_seen += 1;
                    let v: serde_json::Value = serde_json::from_str(&describe).expect("json");
                    assert_eq!(v["type"], "init");
                    assert_eq!(v["base_capture_us"], 2_000_000);
                    assert_eq!(
                        (v["width"].as_u64(), v["height"].as_u64()),
                        (Some(64), Some(48))
                    );
                    let parsed = fmp4::parse_init(&segment).expect("init parses");
                    assert_eq!(v["codec"], parsed.track.codec_string());
                    fragment
                }
                Muxed::Fragment(f) => f,
                Muxed::Skipped => panic!("frame {i} skipped"),
            };
            let info = fmp4::parse_fragment(&fragment, 0)
                .expect("parses")
                .expect("whole");
            assert_eq!(info.len as usize, fragment.len());
            assert_eq!(info.header.samples.len(), 1);
            assert_eq!(info.header.samples[0].keyframe, *key);
            times.push(info.header.base_decode_time);
        }
        // The same parameter sets at the second keyframe: no new init.
        assert_eq!(init_seen, 1);
        assert_eq!(times[0], 0);
        assert_eq!(times[3], us_to_ticks(3 * 33_333));
        assert!(times.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn decode_times_never_go_back() {
        let frames = encoded_frames(2);
        let mut m = LiveMuxer::new(&info());
        m.push(&frame(true, 5_000_000, frames[0].1.clone()))
            .expect("mux");
        // A capture clock that steps back (camera restart) must not make the
        // decode time decrease: MSE would drop the frames.
        let Muxed::Fragment(f) = m
            .push(&frame(false, 4_000_000, frames[1].1.clone()))
            .expect("mux")
        else {
            panic!("expected a fragment");
        };
        let info = fmp4::parse_fragment(&f, 0).expect("parses").expect("whole");
        assert_eq!(info.header.base_decode_time, 1);
    }
}
