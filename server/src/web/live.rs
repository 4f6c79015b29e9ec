//! Live video for browsers: WebSocket → fragmented MP4 → Media Source
//! Extensions.
//!
//! Per connection the server sends, in order:
//! * a text message `{"type":"init","codec":"avc1.PPCCLL[,opus]","audio":…,
//!   "width":…,"height":…,"name":…,"base_capture_us":…}` and then the init
//!   segment (binary) — again whenever the camera's parameter sets change;
//!   for a camera with a microphone it has the Opus track too;
//! * one binary message per video frame: a `moof` + `mdat` fragment holding
//!   that one frame, whose decode time is its capture time minus
//!   `base_capture_us` (so the page turns any media time back into a
//!   capture time, which is how it shows capture-to-display latency);
//! * audio-only fragments with the Opus packets that arrived meanwhile, on
//!   the same capture-clock origin; the audio timeline has no holes
//!   (packets lost on the way are filled with lost-packet markers the
//!   decoder conceals, `kodama_media::opus`), since a media element stops
//!   at a hole in any of its tracks;
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
use kodama_media::fmp4::{
    self, AudioRun, AudioTrack, FragmentHeader, SampleInfo, VideoTrack, AUDIO_TIMESCALE, TIMESCALE,
};
use kodama_media::{h264, opus};
use kodama_proto::{CameraInfo, Channel, Frame};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::hub::{CameraTrack, LiveGroup};

/// A send that takes longer than this means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

fn us_to_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(TIMESCALE) / 1_000_000) as u64
}

fn us_to_audio_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(AUDIO_TIMESCALE) / 1_000_000) as u64
}

/// The Opus track a camera's hello announces, if it has a microphone.
fn audio_track(info: &CameraInfo) -> Option<AudioTrack> {
    info.audio.map(|a| AudioTrack {
        channels: a.channels,
        pre_skip: a.pre_skip,
        input_sample_rate: a.sample_rate,
    })
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
    /// The camera's audio track (from its info).
    audio: Option<AudioTrack>,
    /// The tracks of the init segment sent last.
    track: Option<(VideoTrack, Option<AudioTrack>)>,
    base_capture_us: u64,
    next_min_ticks: u64,
    /// Where the next audio sample starts (48 kHz, from `base_capture_us`).
    next_audio_ticks: Option<u64>,
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
            audio: audio_track(info),
            track: None,
            base_capture_us: 0,
            next_min_ticks: 0,
            next_audio_ticks: None,
            sequence: 0,
        }
    }

    /// The camera's info changed (reconnect, new parameters).
    pub fn update_info(&mut self, info: &CameraInfo) {
        let track = self.track.take();
        let (base, min, seq) = (self.base_capture_us, self.next_min_ticks, self.sequence);
        let audio_at = self.next_audio_ticks;
        *self = Self::new(info);
        self.track = track;
        (self.base_capture_us, self.next_min_ticks, self.sequence) = (base, min, seq);
        self.next_audio_ticks = audio_at;
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
                (Some(t), Some(cur)) if (&t, &self.audio) == (&cur.0, &cur.1) => {}
                (Some(t), _) => {
                    if self.track.is_none() {
                        self.base_capture_us = frame.capture_us;
                    }
                    let codec = match &self.audio {
                        Some(a) => format!("{},{}", t.codec_string(), a.codec_string()),
                        None => t.codec_string(),
                    };
                    let describe = json!({
                        "type": "init",
                        "codec": codec,
                        "audio": self.audio.is_some(),
                        "width": t.width,
                        "height": t.height,
                        "name": self.name,
                        "base_capture_us": self.base_capture_us,
                    })
                    .to_string();
                    init = Some((describe, fmp4::init_segment_av(&t, self.audio.as_ref())));
                    self.track = Some((t, self.audio));
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

    /// Muxes audio packets (in arrival order) into audio-only fragments:
    /// one, or two around a jump of the camera's clock. Empty when there is
    /// nothing to send: no init segment with an audio track sent yet, or
    /// only packets from before the stream's start.
    pub fn push_audio(&mut self, packets: &[Arc<Frame>]) -> Result<Vec<Vec<u8>>, fmp4::Mp4Error> {
        let mut out = Vec::new();
        if !self.track.as_ref().is_some_and(|(_, a)| a.is_some()) {
            return Ok(out);
        }
        let mut run = AudioRun {
            base_decode_time: 0,
            samples: Vec::new(),
        };
        let mut data = Vec::new();
        for f in packets {
            let Some(n) = opus::packet_samples(&f.payload) else {
                continue;
            };
            let Some(since_base) = f.capture_us.checked_sub(self.base_capture_us) else {
                continue;
            };
            let at = us_to_audio_ticks(since_base);
            let (mut t, lost) = match self.next_audio_ticks {
                None => (at, 0),
                // Behind (jitter, a clock step back): stay contiguous.
                Some(next) if at <= next => (next, 0),
                Some(next) => match opus::lost_packets(at - next, n) {
                    // A hole: filled from where it began.
                    0 if at - next > opus::MAX_FILL_SAMPLES => (at, 0),
                    lost => (next, lost),
                },
            };
            if self.next_audio_ticks.is_some_and(|next| t != next) && !run.samples.is_empty() {
                // The clock jumped (a restarted camera; video jumps too): the
                // samples so far end one fragment.
                out.push(self.audio_fragment(&run, &data)?);
                run.samples.clear();
                data.clear();
            }
            if run.samples.is_empty() {
                run.base_decode_time = t;
            }
            for _ in 0..lost {
                data.push(opus::lost_packet_marker(f.payload[0]));
                run.samples.push(SampleInfo {
                    duration: n,
                    size: 1,
                    keyframe: true,
                });
                t += u64::from(n);
            }
            data.extend_from_slice(&f.payload);
            run.samples.push(SampleInfo {
                duration: n,
                size: u32::try_from(f.payload.len()).unwrap_or(u32::MAX),
                keyframe: true,
            });
            self.next_audio_ticks = Some(t + u64::from(n));
        }
        if !run.samples.is_empty() {
            out.push(self.audio_fragment(&run, &data)?);
        }
        Ok(out)
    }

    fn audio_fragment(&mut self, run: &AudioRun, data: &[u8]) -> Result<Vec<u8>, fmp4::Mp4Error> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut out = fmp4::audio_fragment_header(self.sequence, run)?;
        out.extend_from_slice(data);
        Ok(out)
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

/// Takes the audio packets waiting in `aux`, after `first` (telemetry and
/// events there are for viewer sessions; a lag loses only packets, which the
/// muxer conceals).
fn waiting_audio(
    aux: &mut broadcast::Receiver<Arc<Frame>>,
    first: Option<Arc<Frame>>,
) -> Vec<Arc<Frame>> {
    let mut packets: Vec<Arc<Frame>> = first.into_iter().collect();
    loop {
        match aux.try_recv() {
            Ok(f) => packets.push(f),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    packets.retain(|f| f.channel == Channel::Audio);
    packets
}

/// Sends `packets` as audio fragments; false when the socket is gone.
async fn send_audio(
    socket: &mut WebSocket,
    muxer: &mut LiveMuxer,
    packets: &[Arc<Frame>],
    track: &CameraTrack,
) -> bool {
    if packets.is_empty() {
        return true;
    }
    match muxer.push_audio(packets) {
        Ok(fragments) => {
            for f in fragments {
                if !send(socket, Message::Binary(f.into())).await {
                    return false;
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(camera = %track.id, "live audio fragment: {e}");
            true
        }
    }
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
    let mut aux = track.aux();
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
            // Audio keeps pace while a burst of video frames goes out.
            let audio = waiting_audio(&mut aux, None);
            if !send_audio(&mut socket, &mut muxer, &audio, &track).await {
                break;
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
            a = aux.recv() => match a {
                Ok(f) => {
                    let audio = waiting_audio(&mut aux, Some(f));
                    if !send_audio(&mut socket, &mut muxer, &audio, &track).await { break }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
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
            audio: None,
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

    fn audio_packet(capture_us: u64) -> Arc<Frame> {
        // A CELT fullband 20 ms packet.
        let mut payload = vec![0u8; 40];
        payload[0] = 31 << 3;
        Arc::new(Frame {
            channel: Channel::Audio,
            flags: FrameFlags::empty(),
            capture_us,
            sequence: 0,
            payload: Bytes::from(payload),
        })
    }

    /// (tfdt, [(duration, size)]) of an audio-only fragment, read by mp4-atom.
    fn audio_run_of(fragment: &[u8]) -> (u64, Vec<(u32, u32)>) {
        use mp4_atom::{Any, Decode};
        let mut cursor = std::io::Cursor::new(fragment);
        let Any::Moof(moof) = Any::decode(&mut cursor).expect("moof") else {
            panic!("expected moof");
        };
        let Any::Mdat(mdat) = Any::decode(&mut cursor).expect("mdat") else {
            panic!("expected mdat");
        };
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.track_id, 2);
        let samples: Vec<(u32, u32)> = traf.trun[0]
            .entries
            .iter()
            .map(|e| (e.duration.unwrap_or(0), e.size.unwrap_or(0)))
            .collect();
        let total: u32 = samples.iter().map(|s| s.1).sum();
        assert_eq!(mdat.data.len(), total as usize);
        let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
        (tfdt, samples)
    }

    #[test]
    fn audio_rides_in_the_init_and_in_gapless_fragments() {
        let frames = encoded_frames(1);
        let mut with_audio = info();
        with_audio.audio = Some(kodama_proto::AudioInfo {
            codec: kodama_proto::AudioCodec::Opus,
            sample_rate: 48_000,
            channels: 1,
            pre_skip: 312,
        });
        let mut m = LiveMuxer::new(&with_audio);
        // No init segment yet: nothing to put audio in.
        assert!(m
            .push_audio(&[audio_packet(1_990_000)])
            .expect("mux")
            .is_empty());
        let Muxed::Init {
            describe, segment, ..
        } = m
            .push(&frame(true, 2_000_000, frames[0].1.clone()))
            .expect("mux")
        else {
            panic!("expected an init");
        };
        let v: serde_json::Value = serde_json::from_str(&describe).expect("json");
        assert_eq!(v["audio"], true);
        let init = fmp4::parse_init(&segment).expect("init parses");
        assert_eq!(v["codec"], format!("{},opus", init.track.codec_string()));
        assert_eq!(init.audio.map(|a| (a.channels, a.pre_skip)), Some((1, 312)));

        // Before the stream's start: dropped. Then on the video's clock.
        let out = m
            .push_audio(&[
                audio_packet(1_999_000),
                audio_packet(2_000_000),
                audio_packet(2_020_000),
            ])
            .expect("mux");
        assert_eq!(out.len(), 1);
        assert_eq!(audio_run_of(&out[0]), (0, vec![(960, 40), (960, 40)]));
        // 60 ms lost on the way: three concealed packets keep the timeline whole.
        let out = m.push_audio(&[audio_packet(2_100_000)]).expect("mux");
        assert_eq!(
            audio_run_of(&out[0]),
            (1920, vec![(960, 1), (960, 1), (960, 1), (960, 40)])
        );
        // Early by 15 ms (jitter): contiguous all the same.
        let out = m.push_audio(&[audio_packet(2_105_000)]).expect("mux");
        assert_eq!(audio_run_of(&out[0]), (5760, vec![(960, 40)]));
        // A camera clock a minute on (a restart): a new fragment there.
        let out = m
            .push_audio(&[audio_packet(2_125_000), audio_packet(62_000_000)])
            .expect("mux");
        assert_eq!(out.len(), 2);
        assert_eq!(audio_run_of(&out[0]), (6720, vec![(960, 40)]));
        assert_eq!(audio_run_of(&out[1]), (60 * 48_000, vec![(960, 40)]));

        // A camera without a microphone: no audio track, audio ignored.
        let mut plain = LiveMuxer::new(&info());
        let Muxed::Init { describe, .. } = plain
            .push(&frame(true, 2_000_000, frames[0].1.clone()))
            .expect("mux")
        else {
            panic!("expected an init");
        };
        assert!(!describe.contains("opus"));
        assert!(plain
            .push_audio(&[audio_packet(2_000_000)])
            .expect("mux")
            .is_empty());
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
