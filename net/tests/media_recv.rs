//! `receive_media` never hangs: not when its caller stops reading and the
//! session is cancelled, and not when the connection ends while readers are
//! blocked on a full hand-over channel (regression: readers used to be joined
//! before that channel was drained, and a reader blocked in `send` ignored
//! cancellation).
//!
//! `MediaSender`'s group writer, which hands queued frames to QUIC in
//! batches: a burst arrives whole and in order with the counters matching,
//! and a group superseded mid-write on a stalled stream is reset, its
//! unsent frames counted and the group reported incomplete.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::media_recv::{receive_media, Received};
use kodama_net::media_send::{MediaSender, SendOutcome, SendStats};
use kodama_net::{Connection, Endpoint, EndpointAddr, SecretKey};
use kodama_proto::{Channel, Frame, FrameFlags};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ALPN: &[u8] = b"kodama/test/1";

async fn endpoint(alpns: Vec<Vec<u8>>) -> Endpoint {
    endpoint::bind(
        SecretKey::generate(),
        &EndpointOptions {
            offline: true,
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            alpns,
        },
    )
    .await
    .expect("endpoint")
}

/// A connected pair: (sender side, receiver side, endpoints to keep alive).
async fn pair() -> (Connection, Connection, Endpoint, Endpoint) {
    let server = endpoint(vec![ALPN.to_vec()]).await;
    let client = endpoint(Vec::new()).await;
    let addr = server
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .expect("bound");
    let dial = EndpointAddr::new(server.id()).with_ip_addr(addr);
    let accept = async {
        let incoming = server.accept().await.expect("incoming");
        incoming.await.expect("accepted")
    };
    let (sent, received) = tokio::join!(client.connect(dial, ALPN), accept);
    (sent.expect("connected"), received, client, server)
}

fn frame(seq: u64, key: bool) -> Arc<Frame> {
    Arc::new(Frame {
        channel: Channel::Video,
        flags: if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::empty()
        },
        capture_us: seq,
        sequence: seq,
        payload: Bytes::from(vec![0x42; 2000]),
    })
}

/// Sends `groups` GOPs of `per_group` frames and finishes every stream.
async fn send_groups(conn: &Connection, groups: u64, per_group: u64) {
    let mut media = MediaSender::new(conn.clone(), CancellationToken::new());
    for g in 0..groups {
        for i in 0..per_group {
            media.send(frame(g * per_group + i, i == 0));
        }
        // Let the group's frames reach QUIC before the next keyframe
        // supersedes it (superseding only drops what was not handed over).
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    media.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_receiving_even_when_nobody_reads() {
    let (tx_conn, rx_conn, _a, _b) = pair().await;
    // Capacity 1 and never read: the hand-over and every reader block.
    let (tx, _rx) = mpsc::channel::<Received>(1);
    let cancel = CancellationToken::new();
    let receiving = tokio::spawn(receive_media(rx_conn, tx, cancel.clone()));
    send_groups(&tx_conn, 6, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!receiving.is_finished(), "blocked on the unread channel");
    cancel.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(2), receiving).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "cancel must end receive_media promptly: {ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_end_delivers_everything_then_returns() {
    // The dialler's endpoint stays up: dropping it right after `close` can
    // discard the CONNECTION_CLOSE frame, and the receiver would then learn
    // of the end only from the idle timeout.
    let (tx_conn, rx_conn, _client, _server) = pair().await;
    let (tx, mut rx) = mpsc::channel::<Received>(1);
    let receiving = tokio::spawn(receive_media(rx_conn, tx, CancellationToken::new()));
    // More items than every internal buffer together, while nobody reads.
    send_groups(&tx_conn, 4, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx_conn.close(kodama_net::codes::NORMAL, b"done");
    // Now read slowly: everything sent arrives, in order, then the call ends.
    let mut frames = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = rx.recv().await {
            if let Received::Frame(_, f) = item {
                frames.push(f.sequence);
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "receive_media hung after the connection ended"
    );
    let ended = tokio::time::timeout(Duration::from_secs(2), receiving)
        .await
        .expect("returned");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    assert!(!frames.is_empty(), "frames were delivered");
    assert!(
        frames.windows(2).all(|w| w[0] < w[1]),
        "in order: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_written_whole_and_in_order() {
    let (tx_conn, rx_conn, _client, _server) = pair().await;
    let (tx, mut rx) = mpsc::channel::<Received>(256);
    let receiving = tokio::spawn(receive_media(rx_conn, tx, CancellationToken::new()));
    let mut media = MediaSender::new(tx_conn.clone(), CancellationToken::new());
    let stats = media.stats();
    // Queued faster than one write completes, so the writer takes several
    // frames per write.
    for seq in 0..100 {
        assert_eq!(media.send(frame(seq, seq == 0)), SendOutcome::Queued);
    }
    media.finish().await;
    let mut frames = Vec::new();
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        while frames.len() < 100 {
            match rx.recv().await {
                Some(Received::Frame(_, f)) => frames.push(f.sequence),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(
        received.is_ok(),
        "only {} of 100 frames arrived",
        frames.len()
    );
    assert_eq!(frames, (0..100).collect::<Vec<u64>>());
    assert_eq!(SendStats::get(&stats.frames_sent), 100);
    assert_eq!(
        SendStats::get(&stats.bytes_sent),
        100 * frame(0, false).encoded_len() as u64
    );
    assert_eq!(SendStats::get(&stats.frames_dropped), 0);
    assert_eq!(SendStats::get(&stats.video_bytes_queued), 0);
    assert_eq!(stats.groups_dropped(), 0);
    tx_conn.close(kodama_net::codes::NORMAL, b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), receiving).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_superseded_mid_write_is_reset_and_reported_incomplete() {
    // Nobody accepts the receiver's streams: the first group stalls once
    // the stream's flow-control window (256 KiB) is full.
    let (tx_conn, _rx_conn, _client, _server) = pair().await;
    let mut media = MediaSender::new(tx_conn.clone(), CancellationToken::new());
    let stats = media.stats();
    for seq in 0..200 {
        assert_eq!(
            media.send(frame(1_000 + seq, seq == 0)),
            SendOutcome::Queued
        );
    }
    // Bounded wait until the writer has handed over what the window takes.
    for _ in 0..100 {
        if SendStats::get(&stats.frames_sent) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A newer keyframe supersedes the stalled group.
    assert_eq!(media.send(frame(5_000, true)), SendOutcome::Queued);
    let mut incomplete = Vec::new();
    for _ in 0..250 {
        incomplete.extend(media.take_incomplete());
        if !incomplete.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(incomplete, vec![1_000], "the first group's keyframe time");
    assert_eq!(SendStats::get(&stats.groups_superseded), 1);
    let dropped = SendStats::get(&stats.frames_dropped);
    assert!(dropped > 0, "the stalled group's unsent frames are counted");
    // Every frame is accounted for once the new group's keyframe (on its
    // own stream, not stalled) is written: 200 + 1.
    let mut sent = 0;
    for _ in 0..250 {
        sent = SendStats::get(&stats.frames_sent);
        if sent + dropped >= 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent < 200, "the window cannot take 400 kB: {sent} sent");
    assert_eq!(sent + dropped, 201, "every frame is sent or dropped, once");
    assert_eq!(SendStats::get(&stats.video_bytes_queued), 0);
    assert!(media.take_incomplete().is_empty(), "the new group is whole");
    tx_conn.close(kodama_net::codes::NORMAL, b"done");
}
