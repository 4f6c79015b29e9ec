//! Command-line interface of `kodama-server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::allowlist::PeerRole;
use crate::config::{Config, ConfigError};

/// Kodama recording server.
#[derive(Debug, Parser)]
#[command(name = "kodama-server", version, about)]
pub struct Cli {
    /// What to do (default: run the server).
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Settings layered over the config file.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "KODAMA_SERVER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (keys, allowlist, recordings).
    #[arg(long, env = "KODAMA_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// UDP address to listen on for QUIC.
    #[arg(long, env = "KODAMA_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Offline mode: no relays, address lookup or port mapping.
    #[arg(long, env = "KODAMA_OFFLINE", global = true)]
    pub offline: bool,
    /// Server name shown to peers.
    #[arg(long, env = "KODAMA_SERVER_NAME", global = true)]
    pub name: Option<String>,
    /// TCP address of the HTTP API (port 0: any free port).
    #[arg(long, env = "KODAMA_API_LISTEN", global = true)]
    pub api_listen: Option<SocketAddr>,
}

impl CommonArgs {
    /// The file (if any) with every override applied, validated.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            c.server.data_dir = v.clone();
        }
        if let Some(v) = self.listen {
            c.server.listen = v;
        }
        if self.offline {
            c.server.offline = true;
        }
        if let Some(v) = &self.name {
            c.server.name = v.clone();
        }
        if let Some(v) = self.api_listen {
            c.api.listen = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the server (the default).
    Run,
    /// Print this server's node id (creating its key if needed).
    Id,
    /// Manage which cameras and viewers may connect.
    Allow {
        /// What to do.
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Watch a camera live, or save a recorded range (`--from`/`--to`).
    View(ViewArgs),
    /// Manage the HTTP API token.
    Token {
        /// What to do.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Replace `<data>/api-token` with a new random token (old one stops working).
    Rotate,
}

/// `allow` subcommands.
#[derive(Debug, Subcommand)]
pub enum AllowAction {
    /// Allow a node id.
    Add {
        /// The peer's node id (printed by `kodama-camera id`).
        id: String,
        /// What it may connect as.
        #[arg(long, value_enum, default_value = "camera")]
        role: PeerRole,
        /// Shorthand for `--role camera`.
        #[arg(long, conflicts_with = "role")]
        camera: bool,
        /// A label for humans.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List allowed peers.
    List,
    /// Remove a node id.
    Remove {
        /// The peer's node id.
        id: String,
        /// Only this role (default: every role).
        #[arg(long, value_enum)]
        role: Option<PeerRole>,
    },
}

/// `view` options.
#[derive(Debug, Args, Clone)]
pub struct ViewArgs {
    /// Server ticket (default: the local server in --data-dir).
    #[arg(long, env = "KODAMA_SERVER_TICKET")]
    pub ticket: Option<String>,
    /// Server node id (with --server-addr).
    #[arg(long, env = "KODAMA_SERVER_ID")]
    pub server_id: Option<String>,
    /// Server direct address (default: 127.0.0.1 and the listen port).
    #[arg(long, value_delimiter = ',')]
    pub server_addr: Vec<SocketAddr>,
    /// Camera name or node id (default: the first online camera).
    #[arg(long)]
    pub camera: Option<String>,
    /// Write the H.264 elementary stream (live) or MP4 (recorded) to this file (`-` for stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many video frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// The viewer's key file (default: <data-dir>/viewer.key).
    #[arg(long)]
    pub key_path: Option<PathBuf>,
    /// Seconds between statistics lines.
    #[arg(long, default_value_t = 2.0)]
    pub stats_every: f64,
    /// Seconds to wait for a known camera that is offline (e.g. right after
    /// a server restart) before giving up.
    #[arg(long, default_value_t = 30.0)]
    pub wait: f64,
    /// Play back a recording from this time (RFC 3339) instead of live video.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End of the recorded range (RFC 3339).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
}
