//! Uplink failover: the camera prefers its first uplink (Wi-Fi), streams
//! over the next (cellular) when it fails, and returns once the preferred
//! one has been healthy for a while.
//!
//! No reconnect on the critical path: every uplink keeps its own warm QUIC
//! connection to the server, from its own iroh endpoint bound to that
//! interface's address (the image's network script routes each source
//! address out of its interface: `ip rule from ADDR table N`). A failover is
//! one control round trip on a connection that is already up: the hello that
//! makes it the camera's session at the server, then a keyframe.
//!
//! Health comes from the transport and the kernel, not from polling routes:
//! * an interface that goes down (or loses its address) is seen within
//!   [`IFACE_POLL`], and its connection is closed at once;
//! * a silent black hole on the live connection is noticed by the uplink's
//!   silence watchdog ([`kodama_net::link::SILENCE`]), which closes it;
//! * a standby connection lives on rare keep-alives
//!   ([`LinkProfile::Standby`]) and dies by its idle timeout.
//!
//! [`Failover`] is the decision, sans-IO, with `now` passed in; [`LinkSet`]
//! is its driver: one keeper task per uplink and one decider task.
//!
//! Channels: per uplink a `watch` of its ready connection; one `watch` of
//! the active uplink; a `Notify` from keepers to the decider.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodama_net::endpoint::{self, EndpointOptions};
use kodama_net::link::{self as netlink, LinkProfile};
use kodama_net::{codes, Connection, EndpointAddr, SecretKey};
use kodama_proto::ALPN_CAMERA;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::UplinkSection;

/// How often an uplink's interface is checked (carrier, address).
pub const IFACE_POLL: Duration = Duration::from_millis(100);

/// Default for how long a more preferred uplink must be healthy before the
/// camera moves back to it (`network.return_after_s`).
pub const DEFAULT_RETURN_AFTER: Duration = Duration::from_secs(30);

/// Longest a keeper waits for one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the active uplink changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// The first uplink to come up.
    Start,
    /// The active uplink failed.
    Failed,
    /// A more preferred uplink has been healthy for `return_after`.
    Preferred,
}

/// A change of the active uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The uplink now active (index in preference order), or `None` when
    /// no uplink is up.
    pub to: Option<usize>,
    /// Why.
    pub reason: SwitchReason,
}

/// The failover decision, sans-IO. Uplinks are indexed in preference order.
#[derive(Debug, Clone)]
pub struct Failover {
    return_after: Duration,
    /// Per uplink: since when it has had a ready connection.
    up_since: Vec<Option<Instant>>,
    active: Option<usize>,
}

impl Failover {
    /// `uplinks` uplinks, all down.
    pub fn new(uplinks: usize, return_after: Duration) -> Self {
        Self {
            return_after,
            up_since: vec![None; uplinks],
            active: None,
        }
    }

    /// Uplink `i` has a ready connection (from `now`).
    pub fn up(&mut self, i: usize, now: Instant) {
        if let Some(slot) = self.up_since.get_mut(i) {
            slot.get_or_insert(now);
        }
    }

    /// Uplink `i` lost its connection or its interface.
    pub fn down(&mut self, i: usize) {
        if let Some(slot) = self.up_since.get_mut(i) {
            *slot = None;
        }
    }

    /// Whether uplink `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.up_since.get(i).is_some_and(Option::is_some)
    }

    /// The uplink the camera should stream over.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Decides at `now`; returns the switch if the active uplink changes.
    pub fn poll(&mut self, now: Instant) -> Option<Switch> {
        let best_up = self.up_since.iter().position(Option::is_some);
        let next = match self.active {
            Some(a) if self.is_up(a) => {
                // Move back only to an uplink that has proven itself.
                let proven = self.up_since[..a].iter().position(|since| {
                    since.is_some_and(|s| now.saturating_duration_since(s) >= self.return_after)
                });
                proven.map(|p| (Some(p), SwitchReason::Preferred))
            }
            Some(_) => Some((best_up, SwitchReason::Failed)),
            None => best_up.map(|b| (Some(b), SwitchReason::Start)),
        };
        let (to, reason) = next?;
        if to == self.active {
            return None;
        }
        self.active = to;
        Some(Switch { to, reason })
    }

    /// When [`Failover::poll`] may next change its mind without an
    /// up/down event (a preferred uplink completing `return_after`).
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.active?;
        self.up_since[..a]
            .iter()
            .flatten()
            .map(|s| *s + self.return_after)
            .min()
    }
}

/// The IPv4 address of `interface` if it is up with carrier.
pub fn interface_address(interface: &str) -> Option<Ipv4Addr> {
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut found = None;
    for ifa in addrs {
        if ifa.interface_name != interface {
            continue;
        }
        let running = ifa
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING);
        if !running {
            return None;
        }
        if let Some(v4) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            found = Some(v4.ip());
        }
    }
    found
}

/// A connection ready on one uplink.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The connection to the server.
    pub conn: Connection,
    /// The uplink's index.
    pub uplink: usize,
}

/// What the uplinks need to reach the server.
#[derive(Debug, Clone)]
pub struct LinkSetOptions {
    /// The uplinks, most preferred first.
    pub uplinks: Vec<UplinkSection>,
    /// The camera's identity (every uplink's endpoint uses it).
    pub secret: SecretKey,
    /// Offline mode (no relays, address lookup, port mapping).
    pub offline: bool,
    /// The server.
    pub server: EndpointAddr,
    /// How long a preferred uplink must be healthy before moving back.
    pub return_after: Duration,
    /// Reconnect backoff bounds per uplink.
    pub backoff: (Duration, Duration),
    /// The congestion controller of every uplink's connection.
    pub congestion: netlink::Congestion,
}

/// The running failover: keepers and decider.
#[derive(Debug)]
pub struct LinkSet {
    names: Vec<String>,
    slots: Vec<watch::Sender<Option<Ready>>>,
    active: watch::Sender<Option<usize>>,
    failover: Mutex<Failover>,
    changed: Notify,
    /// Bumped whenever a slot changes (for waiters on any slot).
    version: watch::Sender<u64>,
}

impl LinkSet {
    /// Starts one keeper per uplink and the decider; they stop with `cancel`.
    pub fn start(opts: LinkSetOptions, cancel: CancellationToken) -> Arc<Self> {
        let n = opts.uplinks.len();
        let set = Arc::new(Self {
            names: opts.uplinks.iter().map(|u| u.name.clone()).collect(),
            slots: (0..n).map(|_| watch::channel(None).0).collect(),
            active: watch::channel(None).0,
            failover: Mutex::new(Failover::new(n, opts.return_after)),
            changed: Notify::new(),
            version: watch::channel(0).0,
        });
        let opts = Arc::new(opts);
        for i in 0..n {
            tokio::spawn(keep(set.clone(), opts.clone(), i, cancel.clone()));
        }
        tokio::spawn(decide(set.clone(), cancel));
        set
    }

    /// The name of uplink `i`.
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }

    /// Watches the active uplink.
    pub fn active(&self) -> watch::Receiver<Option<usize>> {
        self.active.subscribe()
    }

    /// Whether a usable connection is ready on the active uplink now.
    pub fn ready_now(&self) -> bool {
        self.ready_active().is_some()
    }

    fn ready_active(&self) -> Option<Ready> {
        let i = (*self.active.borrow())?;
        let ready = self.slots.get(i)?.borrow().clone()?;
        ready.conn.close_reason().is_none().then_some(ready)
    }

    /// Waits (up to `within`) for a ready connection on the active uplink.
    pub async fn connection(&self, within: Duration) -> Option<Ready> {
        let mut active = self.active.subscribe();
        let mut version = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(ready) = self.ready_active() {
                return Some(ready);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                r = active.changed() => r.ok()?,
                r = version.changed() => r.ok()?,
            }
        }
    }

    /// Resolves when the active uplink is no longer `uplink`.
    pub async fn moved_from(&self, uplink: usize) -> Option<usize> {
        let mut active = self.active.subscribe();
        let moved = active.wait_for(|a| *a != Some(uplink)).await.map(|a| *a);
        match moved {
            Ok(to) => to,
            Err(_) => std::future::pending().await,
        }
    }

    fn mark(&self, i: usize, ready: Option<Ready>) {
        {
            let mut f = self.failover.lock().unwrap_or_else(|p| p.into_inner());
            match &ready {
                Some(_) => f.up(i, Instant::now()),
                None => f.down(i),
            }
        }
        if let Some(slot) = self.slots.get(i) {
            slot.send_replace(ready);
        }
        self.version.send_modify(|v| *v += 1);
        self.changed.notify_one();
    }
}

/// The decider: applies [`Failover::poll`] on every change and deadline.
async fn decide(set: Arc<LinkSet>, cancel: CancellationToken) {
    loop {
        let deadline = {
            let mut f = set.failover.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(switch) = f.poll(Instant::now()) {
                let to = switch.to.map_or("none", |i| set.name(i));
                match switch.reason {
                    SwitchReason::Failed => {
                        tracing::warn!(uplink = to, "active uplink failed; failing over")
                    }
                    SwitchReason::Preferred => {
                        tracing::info!(uplink = to, "preferred uplink healthy again; moving back")
                    }
                    SwitchReason::Start => tracing::info!(uplink = to, "streaming over"),
                }
                set.active.send_replace(switch.to);
            }
            f.next_deadline()
        };
        let wake = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = set.changed.notified() => {}
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

/// One uplink's keeper: waits for its interface, binds an endpoint to its
/// address, keeps a connection to the server, and reports up/down.
async fn keep(set: Arc<LinkSet>, opts: Arc<LinkSetOptions>, i: usize, cancel: CancellationToken) {
    let uplink = &opts.uplinks[i];
    let name = uplink.name.as_str();
    // The preferred uplink carries video most of the time: frequent
    // keep-alives cost nothing there. The others wait on rare ones.
    let profile = if i == 0 {
        LinkProfile::Live
    } else {
        LinkProfile::Standby
    };
    let mut backoff = Backoff::new(opts.backoff.0, opts.backoff.1);
    let mut waiting_logged = false;
    loop {
        // Bounded: each wait is one poll interval, and `cancel` ends it.
        let addr = loop {
            if let Some(a) = interface_address(&uplink.interface) {
                break a;
            }
            if !waiting_logged {
                tracing::info!(uplink = name, interface = %uplink.interface, "uplink interface is down or has no address");
                waiting_logged = true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(IFACE_POLL) => {}
            }
        };
        waiting_logged = false;
        let ep = match endpoint::bind(
            opts.secret.clone(),
            &EndpointOptions {
                offline: opts.offline,
                bind: Some(SocketAddr::V4(SocketAddrV4::new(addr, 0))),
                alpns: Vec::new(),
            },
        )
        .await
        {
            Ok(ep) => ep,
            Err(e) => {
                tracing::warn!(uplink = name, "cannot bind to {addr}: {e}");
                if pause(&mut backoff, &cancel).await {
                    return;
                }
                continue;
            }
        };
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            netlink::connect_with(
                &ep,
                opts.server.clone(),
                ALPN_CAMERA,
                profile,
                opts.congestion,
            ),
        );
        let conn = tokio::select! {
            _ = cancel.cancelled() => { ep.close().await; return; }
            c = attempt => c,
        };
        let conn = match conn {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(uplink = name, "connecting over {addr}: {e}");
                ep.close().await;
                if pause(&mut backoff, &cancel).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::debug!(
                    uplink = name,
                    "no answer over {addr} within {CONNECT_TIMEOUT:?}"
                );
                ep.close().await;
                if pause(&mut backoff, &cancel).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        tracing::info!(uplink = name, %addr, rtt = ?netlink::selected_rtt(&conn), "uplink connected");
        set.mark(
            i,
            Some(Ready {
                conn: conn.clone(),
                uplink: i,
            }),
        );
        // Up until the connection ends or the interface changes under it.
        let why = loop {
            tokio::select! {
                _ = cancel.cancelled() => break None,
                r = conn.closed() => break Some(format!("connection ended: {r}")),
                _ = tokio::time::sleep(IFACE_POLL) => {
                    match interface_address(&uplink.interface) {
                        Some(a) if a == addr => {}
                        Some(a) => break Some(format!("address changed to {a}")),
                        None => break Some(format!("interface {} down", uplink.interface)),
                    }
                }
            }
        };
        set.mark(i, None);
        match why {
            None => {
                // Stopping: the uplink session closes the active connection politely.
                ep.close().await;
                return;
            }
            Some(why) => {
                tracing::warn!(uplink = name, "uplink lost: {why}");
                conn.close(codes::NORMAL, b"uplink lost");
                // Closing waits for the close to be sent; a dead link must not hold us up.
                let _ = tokio::time::timeout(Duration::from_millis(200), ep.close()).await;
            }
        }
    }
}

/// Sleeps for the next backoff delay; true if cancelled.
async fn pause(backoff: &mut Backoff, cancel: &CancellationToken) -> bool {
    let delay = backoff.next_delay(rand::random::<f64>());
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A table of events on a virtual clock and the switches they cause.
    #[test]
    fn failover_table() {
        #[derive(Debug)]
        enum Ev {
            Up(usize),
            Down(usize),
            Tick,
        }
        use Ev::*;
        let switch = |to, reason| Some(Switch { to, reason });
        // (seconds, event, expected switch after polling)
        let table: &[(u64, Ev, Option<Switch>)] = &[
            (0, Tick, None),
            // Cellular comes up first: stream over it rather than nothing.
            (0, Up(1), switch(Some(1), SwitchReason::Start)),
            // Wi-Fi comes up: not trusted yet.
            (1, Up(0), None),
            (5, Tick, None),
            // …after return_after (10 s) of health, move back.
            (11, Tick, switch(Some(0), SwitchReason::Preferred)),
            // Wi-Fi fails: cellular at once, no waiting.
            (20, Down(0), switch(Some(1), SwitchReason::Failed)),
            // Wi-Fi flaps: each recovery restarts its clock.
            (21, Up(0), None),
            (25, Down(0), None),
            (26, Up(0), None),
            (35, Tick, None),
            (36, Tick, switch(Some(0), SwitchReason::Preferred)),
            // Cellular (standby) dying changes nothing while Wi-Fi is active.
            (40, Down(1), None),
            // Both down: nothing to stream over.
            (41, Down(0), switch(None, SwitchReason::Failed)),
            // Whatever comes back first is used at once.
            (50, Up(1), switch(Some(1), SwitchReason::Start)),
        ];
        let t0 = Instant::now();
        let mut f = Failover::new(2, s(10));
        for (at, ev, expected) in table {
            let now = t0 + s(*at);
            match ev {
                Up(i) => f.up(*i, now),
                Down(i) => f.down(*i),
                Tick => {}
            }
            assert_eq!(f.poll(now), *expected, "at {at} s after {ev:?}");
        }
    }

    #[test]
    fn the_next_deadline_is_when_the_preferred_uplink_has_proven_itself() {
        let t0 = Instant::now();
        let mut f = Failover::new(3, s(10));
        f.up(2, t0);
        f.poll(t0);
        assert_eq!(f.next_deadline(), None, "nothing better is up");
        f.up(1, t0 + s(2));
        f.up(0, t0 + s(4));
        assert_eq!(f.next_deadline(), Some(t0 + s(12)));
        assert_eq!(f.poll(t0 + s(12)).map(|w| w.to), Some(Some(1)));
        assert_eq!(f.poll(t0 + s(14)).map(|w| w.to), Some(Some(0)));
        assert_eq!(f.next_deadline(), None);
    }

    #[test]
    fn loopback_is_an_interface_with_an_address() {
        assert_eq!(interface_address("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(interface_address("no-such-if0"), None);
    }
}
