//! Link liveness: knowing within about a second that the peer (or the path
//! to it) is gone, instead of after QUIC's idle timeout.
//!
//! A camera's live connection carries video all the time and the server
//! acknowledges it within milliseconds; when idle, QUIC keep-alives
//! ([`LinkProfile::Live`]) make the server answer every
//! [`LIVE_KEEP_ALIVE`]. So "no datagram from the peer for [`SILENCE`]" means
//! the server died or the path is a black hole — nothing announces either.
//! [`Silence`] is that rule, sans-IO; [`until_silent`] drives it from the
//! connection's receive counter.
//!
//! A standby connection (a warm spare over a second uplink) must cost little
//! on a metered link, so it keeps alive rarely ([`LinkProfile::Standby`]).
//!
//! The uplink's congestion controller is chosen per connection
//! ([`Congestion`]): BBRv3 by default, because it estimates the path's
//! bandwidth, which the rate controller uses to step straight to the tier
//! that fits (docs/design/abr.md has the evaluation against Cubic).
//! [`path_sample`] reads the selected path's statistics for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::endpoint::{ConnectOptions, Connection, QuicTransportConfig, VarInt};
use iroh::{Endpoint, EndpointAddr};

use crate::endpoint::{transport_config_builder, EndpointError};
use crate::policy::rate::PathSample;

/// The congestion controller a connection's sender runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// BBRv3: paces to a measured bottleneck bandwidth and reports it
    /// (`PathStats::bandwidth_estimate`), so the camera knows which tier fits.
    #[default]
    Bbr3,
    /// Cubic (QUIC's default): loss-based, no bandwidth estimate.
    Cubic,
}

impl Congestion {
    /// Parses `bbr3` or `cubic`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bbr3" => Some(Congestion::Bbr3),
            "cubic" => Some(Congestion::Cubic),
            _ => None,
        }
    }

    /// The name [`Congestion::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Bbr3 => "bbr3",
            Congestion::Cubic => "cubic",
        }
    }
}

/// Keep-alive on a live uplink: a few per [`SILENCE`], so one lost packet
/// never looks like a dead peer.
pub const LIVE_KEEP_ALIVE: Duration = Duration::from_millis(200);

/// Idle timeout of a live uplink: the transport's own backstop behind
/// [`SILENCE`] (the effective value is the smaller of both peers').
pub const LIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Keep-alive on a standby uplink: rare (each costs a ~60-byte packet and
/// its acknowledgement on a metered link), inside carrier NAT mapping
/// timeouts (30 s and up), and the longest iroh allows per path (5 s).
pub const STANDBY_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Idle timeout of a standby uplink: three keep-alives (iroh's per-path
/// maximum, 15 s).
pub const STANDBY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// No datagram from the peer for this long on a live uplink means it is gone.
pub const SILENCE: Duration = Duration::from_millis(900);

/// How often [`until_silent`] reads the connection's counters.
pub const POLL: Duration = Duration::from_millis(50);

/// How a connection is used, which sets how it keeps itself alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProfile {
    /// Carries the live stream: frequent keep-alives, short idle timeout.
    Live,
    /// A warm spare: rare keep-alives, long idle timeout.
    Standby,
}

impl LinkProfile {
    /// (keep-alive interval, idle timeout).
    pub fn timing(self) -> (Duration, Duration) {
        match self {
            LinkProfile::Live => (LIVE_KEEP_ALIVE, LIVE_IDLE_TIMEOUT),
            LinkProfile::Standby => (STANDBY_KEEP_ALIVE, STANDBY_IDLE_TIMEOUT),
        }
    }

    fn transport_config(self, congestion: Congestion) -> QuicTransportConfig {
        let (keep_alive, idle) = self.timing();
        let idle_ms = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX);
        // iroh keeps each path alive on its own timer too (multipath):
        // both get the profile's numbers.
        let builder = transport_config_builder()
            .keep_alive_interval(keep_alive)
            .default_path_keep_alive_interval(keep_alive)
            .max_idle_timeout(Some(VarInt::from_u32(idle_ms).into()))
            .default_path_max_idle_timeout(idle);
        match congestion {
            Congestion::Bbr3 => builder
                .congestion_controller_factory(Arc::new(
                    noq_proto::congestion::Bbr3Config::default(),
                ))
                .build(),
            Congestion::Cubic => builder.build(),
        }
    }
}

/// Dials `addr` for `alpn` with the keep-alive and idle timeout of `profile`
/// and the default congestion controller.
pub async fn connect(
    endpoint: &Endpoint,
    addr: EndpointAddr,
    alpn: &[u8],
    profile: LinkProfile,
) -> Result<Connection, EndpointError> {
    connect_with(endpoint, addr, alpn, profile, Congestion::default()).await
}

/// [`connect`] with a chosen congestion controller.
pub async fn connect_with(
    endpoint: &Endpoint,
    addr: EndpointAddr,
    alpn: &[u8],
    profile: LinkProfile,
    congestion: Congestion,
) -> Result<Connection, EndpointError> {
    let opts = ConnectOptions::new().with_transport_config(profile.transport_config(congestion));
    let connecting = endpoint
        .connect_with_opts(addr, alpn, opts)
        .await
        .map_err(|e| EndpointError::Connect(e.to_string()))?;
    connecting
        .await
        .map_err(|e| EndpointError::Connect(e.to_string()))
}

/// The silence rule, sans-IO: feed it the peer's datagram counter with the
/// time; it says when nothing has arrived for `threshold`.
#[derive(Debug, Clone)]
pub struct Silence {
    threshold: Duration,
    last_count: u64,
    last_heard: Instant,
}

impl Silence {
    /// Starts watching at `now` with the counter at `count`.
    pub fn new(now: Instant, count: u64, threshold: Duration) -> Self {
        Self {
            threshold,
            last_count: count,
            last_heard: now,
        }
    }

    /// Records the counter at `now`; returns how long the peer has been
    /// silent if that is at least the threshold.
    pub fn observe(&mut self, now: Instant, count: u64) -> Option<Duration> {
        if count != self.last_count {
            self.last_count = count;
            self.last_heard = now;
            return None;
        }
        let quiet = now.saturating_duration_since(self.last_heard);
        (quiet >= self.threshold).then_some(quiet)
    }

    /// When the peer was last heard from.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }
}

/// Datagrams received from the peer on `conn` so far.
pub fn datagrams_received(conn: &Connection) -> u64 {
    conn.stats().udp_rx.datagrams
}

/// Resolves when nothing has arrived on `conn` for `threshold` (returns how
/// long it was silent). Never resolves while the peer keeps talking; drop it
/// to stop watching.
pub async fn until_silent(conn: &Connection, threshold: Duration) -> Duration {
    let mut silence = Silence::new(Instant::now(), datagrams_received(conn), threshold);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(quiet) = silence.observe(Instant::now(), datagrams_received(conn)) {
            return quiet;
        }
    }
}

/// The round-trip time of the path carrying application data, if known.
pub fn selected_rtt(conn: &Connection) -> Option<Duration> {
    conn.paths()
        .iter()
        .find(|p| p.is_selected())
        .map(|p| p.rtt())
}

/// The selected path's statistics as the rate controller's input, at `now`
/// (any monotonic origin). The sender's own numbers (bytes waiting in its
/// queues, groups it dropped, stream bytes it handed to QUIC) come from the
/// caller. `None` when no path is
/// selected (the connection is between paths or closed).
pub fn path_sample(
    conn: &Connection,
    now: Duration,
    send_queue_bytes: u64,
    groups_dropped: u64,
    handed_bytes: u64,
) -> Option<PathSample> {
    let paths = conn.paths();
    let selected = paths.iter().find(|p| p.is_selected())?;
    let s = selected.stats();
    Some(PathSample {
        now,
        rtt: s.rtt,
        cwnd: s.cwnd,
        sent_packets: s.sent_packets,
        lost_packets: s.lost_packets,
        lost_bytes: s.lost_bytes,
        congestion_events: s.congestion_events,
        send_queue_bytes,
        groups_dropped,
        bandwidth_bps: s.bandwidth_estimate,
        handed_bytes,
        wire_bytes: s.sent_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_reported_only_after_the_threshold_without_traffic() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Silence::new(t0, 10, ms(900));
        // Traffic keeps it alive, however long the session.
        for i in 1..100u64 {
            assert_eq!(s.observe(t0 + ms(50 * i), 10 + i), None);
        }
        let heard = t0 + ms(50 * 99);
        assert_eq!(s.last_heard(), heard);
        // Then nothing: quiet but not yet silent…
        assert_eq!(s.observe(heard + ms(850), 109), None);
        // …silent at the threshold.
        assert_eq!(s.observe(heard + ms(900), 109), Some(ms(900)));
        // A late datagram revives it.
        assert_eq!(s.observe(heard + ms(950), 110), None);
    }

    #[test]
    fn congestion_names_round_trip() {
        for c in [Congestion::Bbr3, Congestion::Cubic] {
            assert_eq!(Congestion::parse(c.name()), Some(c));
        }
        assert_eq!(Congestion::parse("reno"), None);
        assert_eq!(Congestion::default(), Congestion::Bbr3);
    }

    #[test]
    fn standby_keeps_alive_rarely_and_live_often() {
        let (live_ka, live_idle) = LinkProfile::Live.timing();
        let (sb_ka, sb_idle) = LinkProfile::Standby.timing();
        assert!(
            live_ka * 4 <= SILENCE,
            "several keep-alives per silence window"
        );
        assert!(SILENCE < live_idle);
        assert!(sb_ka * 3 <= sb_idle);
        assert!(sb_ka >= live_ka * 10);
    }
}
