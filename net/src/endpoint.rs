//! Node identity and endpoint construction.
//!
//! Offline mode turns off everything in iroh that talks to the wider network:
//! relays, address lookup (DNS/pkarr publishing and resolving), the port
//! mapper (UPnP/PCP/NAT-PMP probes of the LAN gateway) and net-report's HTTPS
//! probes. Peers then dial each other's direct socket addresses. Tests, the
//! benchmark and the demo always run offline. Default mode uses iroh's N0
//! preset, so a camera behind NAT or on cellular still reaches its server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use iroh::endpoint::{presets, EndpointHooks, PortmapperConfig, QuicTransportConfig, VarInt};
use iroh::{Endpoint, EndpointAddr, EndpointId, NetReportConfig, RelayMode, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;

pub use crate::error::EndpointError;

/// How an endpoint is built.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// No relays, address lookup or port mapping; direct addresses only.
    pub offline: bool,
    /// Socket address to bind; `None` lets iroh pick (all interfaces, random port).
    pub bind: Option<SocketAddr>,
    /// ALPNs this endpoint accepts (servers); empty for dial-only endpoints.
    pub alpns: Vec<Vec<u8>>,
}

/// How long a silent connection lives. Short, so a camera notices a dead
/// server (or a lost link) within seconds and fails over / reconnects.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive interval; well under [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Most media streams a peer may have open at once: one per in-flight GOP
/// plus audio, telemetry and events. Bounds what a flood can make us hold.
pub const MAX_UNI_STREAMS: u32 = 32;

/// Loads the node's secret key from `path`, creating it (mode 0600) on first use.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, EndpointError> {
    let key_err = |source| EndpointError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let read = || match std::fs::read(path) {
        Ok(bytes) => {
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| EndpointError::BadKey {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
            Ok(Some(SecretKey::from_bytes(&arr)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(key_err(e)),
    };
    if let Some(key) = read()? {
        return Ok(key);
    }
    // Written whole under a temporary name and linked into place: two
    // processes starting at once (the demo's `id` and `run`) agree on one
    // key, and neither sees a half-written file.
    let key = SecretKey::generate();
    if crate::durable::create_once(path, &key.to_bytes(), 0o600).map_err(key_err)? {
        tracing::info!(path = %path.display(), id = %key.public(), "created a new node identity");
        return Ok(key);
    }
    read()?.ok_or_else(|| {
        key_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "key file vanished while being created",
        ))
    })
}

/// Unread bytes a peer may have in flight on one stream. Enough for 20 Mbit/s
/// at 100 ms RTT; small enough that a stalled reader pushes back within a
/// fraction of a second, so senders drop stale GOPs instead of queueing them.
pub const STREAM_WINDOW: u32 = 256 * 1024;

/// Unread bytes a peer may have in flight on the whole connection.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The transport settings every Kodama connection shares (stream limits,
/// flow-control windows); callers add keep-alive and idle timeout.
pub(crate) fn transport_config_builder() -> iroh::endpoint::QuicTransportConfigBuilder {
    QuicTransportConfig::builder()
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
}

/// The endpoint's default transport settings. An endpoint that accepts
/// (a server) sends no keep-alives of its own: every Kodama client dials
/// with the keep-alive its link affords ([`crate::link::LinkProfile`]), and
/// a server pinging every [`KEEP_ALIVE`] as well would cost each camera's
/// metered standby link 30 round trips a minute.
fn transport_config(accepts: bool) -> QuicTransportConfig {
    let builder = transport_config_builder();
    let builder = if accepts {
        builder
    } else {
        builder.keep_alive_interval(KEEP_ALIVE)
    };
    builder
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .unwrap_or_else(|_| VarInt::from_u32(10_000).into()),
        ))
        .build()
}

/// Binds an endpoint without connection hooks.
pub async fn bind(secret: SecretKey, opts: &EndpointOptions) -> Result<Endpoint, EndpointError> {
    bind_with_hooks(secret, opts, None::<NoHooks>).await
}

/// Hooks that accept everything (for endpoints without an allowlist).
#[derive(Debug)]
struct NoHooks;
impl EndpointHooks for NoHooks {}

/// Binds an endpoint, installing `hooks` (e.g. the server's allowlist).
pub async fn bind_with_hooks<H: EndpointHooks + 'static>(
    secret: SecretKey,
    opts: &EndpointOptions,
    hooks: Option<H>,
) -> Result<Endpoint, EndpointError> {
    let mut builder = if opts.offline {
        Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(NetReportConfig::minimal())
    } else {
        Endpoint::builder(presets::N0)
    };
    builder = builder
        .secret_key(secret)
        .alpns(opts.alpns.clone())
        .transport_config(transport_config(!opts.alpns.is_empty()));
    if let Some(hooks) = hooks {
        builder = builder.hooks(hooks);
    }
    let addr_text = opts
        .bind
        .map_or_else(|| "default addresses".to_owned(), |a| a.to_string());
    if let Some(addr) = opts.bind {
        builder =
            builder
                .clear_ip_transports()
                .bind_addr(addr)
                .map_err(|e| EndpointError::Bind {
                    addr: addr_text.clone(),
                    message: e.to_string(),
                })?;
    }
    builder.bind().await.map_err(|e| EndpointError::Bind {
        addr: addr_text,
        message: e.to_string(),
    })
}

/// Parses a node id (the public key string iroh prints).
pub fn parse_endpoint_id(value: &str) -> Result<EndpointId, EndpointError> {
    EndpointId::from_str(value.trim()).map_err(|e| EndpointError::Parse {
        what: "node id",
        value: value.to_owned(),
        message: e.to_string(),
    })
}

/// Parses a connection ticket.
pub fn parse_ticket(value: &str) -> Result<EndpointTicket, EndpointError> {
    EndpointTicket::from_str(value.trim()).map_err(|e| EndpointError::Parse {
        what: "ticket",
        value: value.to_owned(),
        message: e.to_string(),
    })
}

/// Builds the address to dial from a ticket, or a node id plus direct addresses.
pub fn dial_addr(
    ticket: Option<&str>,
    node_id: Option<&str>,
    direct: &[SocketAddr],
) -> Result<EndpointAddr, EndpointError> {
    let mut addr = match (ticket, node_id) {
        (Some(t), _) => EndpointAddr::from(parse_ticket(t)?),
        (None, Some(id)) => EndpointAddr::new(parse_endpoint_id(id)?),
        (None, None) => {
            return Err(EndpointError::Parse {
                what: "server address",
                value: String::new(),
                message: "give a ticket or a node id".into(),
            })
        }
    };
    for a in direct {
        addr = addr.with_ip_addr(*a);
    }
    Ok(addr)
}

/// The ticket others use to reach `endpoint` (its id and current addresses).
pub fn ticket(endpoint: &Endpoint) -> EndpointTicket {
    EndpointTicket::new(endpoint.addr())
}

/// Where a node keeps its identity by default, under `dir`.
pub fn default_key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/node.key");
        let a = load_or_create_key(&path).expect("created");
        let b = load_or_create_key(&path).expect("loaded");
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Several processes (here threads: the same file-system race) start
    /// at once on a fresh data directory: all succeed with the same key.
    #[test]
    fn racing_creators_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("node.key");
            let ids: Vec<EndpointId> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..6)
                    .map(|_| s.spawn(|| load_or_create_key(&path).map(|k| k.public())))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread").expect("key"))
                    .collect()
            });
            assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
            assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        }
    }

    #[test]
    fn corrupt_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        std::fs::write(&path, b"short").expect("write");
        let err = load_or_create_key(&path).expect_err("bad key");
        assert!(err.to_string().contains("not a 32-byte key"), "{err}");
    }

    #[test]
    fn dial_addr_needs_an_identity() {
        assert!(dial_addr(None, None, &[]).is_err());
        let id = SecretKey::generate().public().to_string();
        let a: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let addr = dial_addr(None, Some(&id), &[a]).expect("valid");
        assert_eq!(addr.ip_addrs().copied().collect::<Vec<_>>(), vec![a]);
        assert!(dial_addr(None, Some("zzz"), &[]).is_err());
        let t = EndpointTicket::new(addr.clone()).to_string();
        assert_eq!(dial_addr(Some(&t), None, &[]).expect("ticket").id, addr.id);
    }
}
