//! Backfill: a GOP the camera recorded while it could not reach the server
//! (with the audio captured during it), uploaded later on its own unidirectional stream ([`Channel::Backfill`],
//! group id = the camera's backlog record id).
//!
//! Its priority is below every live stream's (live video groups are
//! `0..2^30`, audio and telemetry above), so QUIC sends backfill bytes only
//! when live has nothing queued: the live picture keeps its bandwidth and
//! backfill fills what is left. Pacing and the number of groups in flight
//! are the caller's (the camera's backlog uploader).

use std::sync::Arc;

use iroh::endpoint::Connection;
use kodama_proto::{Channel, Frame, StreamHeader};

use crate::error::MediaError;
use crate::media_send::{open_stream, write_frame, SendStats};

/// Stream priority of backfill: below all live video.
pub const PRIORITY_BACKFILL: i32 = -1;

/// Sends one whole GOP as backfill record `id` and finishes the stream.
/// `frames` are the video frames of one GOP (keyframe first) and, if the
/// camera has a microphone, the audio packets captured during it
/// ([`Channel::Audio`], in sequence order). Video goes out on the wire as
/// [`Channel::Backfill`] with its original capture times and sequence
/// numbers, then the audio as [`Channel::Audio`] frames as they were
/// numbered live. Returns the bytes handed to QUIC.
pub async fn send_backfill_group(
    conn: &Connection,
    id: u64,
    frames: &[Arc<Frame>],
) -> Result<u64, MediaError> {
    let header = StreamHeader {
        channel: Channel::Backfill,
        group: id,
    };
    let mut stream = open_stream(conn, header, PRIORITY_BACKFILL).await?;
    let stats = SendStats::default();
    let is_audio = |f: &&Arc<Frame>| f.channel == Channel::Audio;
    // The receiver takes the GOP's audio only after its video.
    for f in frames.iter().filter(|f| !is_audio(f)) {
        let frame = Frame {
            channel: Channel::Backfill,
            ..Frame::clone(f)
        };
        write_frame(&mut stream, &frame, &stats).await?;
    }
    for f in frames.iter().filter(is_audio) {
        write_frame(&mut stream, f, &stats).await?;
    }
    stream.finish().map_err(|_| MediaError::ClosedStream)?;
    Ok(SendStats::get(&stats.bytes_sent))
}

/// Sends one batch of recorded telemetry or event rows as group `id` on a
/// stream of `channel` ([`Channel::Telemetry`] or [`Channel::Event`]) and
/// finishes it: how a relaying server sends an upstream what it recorded
/// while the link was down. Each frame's sequence is the origin's row id
/// (increasing), its capture time the camera's. Same priority as backfill:
/// behind live. Returns the bytes handed to QUIC.
pub async fn send_aux_batch(
    conn: &Connection,
    channel: Channel,
    id: u64,
    frames: &[Frame],
) -> Result<u64, MediaError> {
    let header = StreamHeader { channel, group: id };
    let mut stream = open_stream(conn, header, PRIORITY_BACKFILL).await?;
    let stats = SendStats::default();
    for f in frames {
        write_frame(&mut stream, f, &stats).await?;
    }
    stream.finish().map_err(|_| MediaError::ClosedStream)?;
    Ok(SendStats::get(&stats.bytes_sent))
}
