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
    /// Pair, list, rename, remove cameras; send them commands.
    Camera {
        /// What to do.
        #[command(subcommand)]
        action: CameraAction,
    },
    /// Pair, list and remove viewers on other machines.
    Viewer {
        /// What to do.
        #[command(subcommand)]
        action: ViewerAction,
    },
    /// Manage which cameras and viewers may connect, by node id.
    Allow {
        /// What to do.
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Watch a camera live, or save a recorded range (`--from`/`--to`).
    View(ViewArgs),
    /// Relay-only mode: accept this site's cameras and forward them to
    /// the `[[upstream]]` servers; no recording, no HTTP API.
    Relay,
    /// A live dashboard of the running server in this terminal (cameras,
    /// links, bitrates, viewers, recording, recent events).
    Top,
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
        /// With `--role relay`: a camera's node id the relay may forward
        /// here (repeatable; added to what it may already carry).
        #[arg(long = "carry")]
        carries: Vec<String>,
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

/// How a new pairing code is made (shared by `camera add` and `viewer add`).
#[derive(Debug, Args, Clone)]
pub struct PairCodeArgs {
    /// How long the code stays valid (e.g. 90s, 30m, 1h, 2d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub expires: std::time::Duration,
    /// The server's address as the new peer should dial it (HOST:PORT,
    /// repeatable; default: the running server's own ticket).
    #[arg(long = "addr")]
    pub addrs: Vec<SocketAddr>,
    /// Do not print the QR code.
    #[arg(long)]
    pub no_qr: bool,
}

/// `camera` subcommands. Each takes the camera's name on this server.
#[derive(Debug, Subcommand)]
pub enum CameraAction {
    /// Make a one-time pairing code (and QR code) for a new camera.
    Add {
        /// The camera's name on this server (unique).
        name: String,
        /// Code options.
        #[command(flatten)]
        code: PairCodeArgs,
        /// Wi-Fi network for the camera to join (carried in the QR code).
        #[arg(long)]
        wifi_ssid: Option<String>,
        /// Wi-Fi passphrase (with --wifi-ssid).
        #[arg(long, requires = "wifi_ssid")]
        wifi_psk: Option<String>,
        /// Wi-Fi regulatory country, e.g. GB (with --wifi-ssid).
        #[arg(long, requires = "wifi_ssid")]
        wifi_country: Option<String>,
        /// Also write the pairing QR code to this file as a picture (binary
        /// PGM), to print or show on a phone in front of the camera.
        #[arg(long, value_name = "FILE")]
        qr_image: Option<std::path::PathBuf>,
    },
    /// List paired cameras and codes waiting to be used.
    List,
    /// Rename a camera.
    Rename {
        /// Its current name (or node id).
        name: String,
        /// The new name.
        new_name: String,
    },
    /// Remove a camera: its connection is closed at once and its key can
    /// never connect again (a pending code for the name is withdrawn).
    Remove {
        /// Its name (or node id).
        name: String,
    },
    /// Restart the camera (through the running server).
    Reboot {
        /// Its name.
        name: String,
    },
    /// Ask the camera for a keyframe now.
    Keyframe {
        /// Its name.
        name: String,
    },
    /// Take a still picture: the camera makes a keyframe at once.
    Snapshot {
        /// Its name.
        name: String,
    },
    /// Limit the camera's adaptive bitrate: `auto`, `cap N` (at most rung
    /// N) or `pin N` (always rung N). Rungs: 0=360p15 500 kbit/s,
    /// 1=480p15 1 Mbit/s, 2=720p15 2 Mbit/s, 3=720p30 4 Mbit/s.
    Tier {
        /// Its name.
        name: String,
        /// `auto`, `cap` or `pin`.
        #[arg(value_parser = ["auto", "cap", "pin"])]
        mode: String,
        /// The rung, for `cap` and `pin` (0 = the lowest).
        #[arg(required_if_eq_any([("mode", "cap"), ("mode", "pin")]))]
        rung: Option<u8>,
    },
    /// Update the camera's firmware with a signed RAUC bundle
    /// (scripts/build-bundle.sh): sent over the camera's own connection,
    /// resumable, installed into the other slot, committed once the camera
    /// streams from it. Waits for the commit (or rollback) unless --no-wait.
    Update {
        /// Its name.
        name: String,
        /// The bundle (.raucb).
        bundle: std::path::PathBuf,
        /// Return once the server has the bundle.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the commit (e.g. 30m).
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show whether the camera is online, what it runs and where its
    /// update stands.
    Status {
        /// Its name.
        name: String,
    },
}

/// `viewer` subcommands.
#[derive(Debug, Subcommand)]
pub enum ViewerAction {
    /// Make a one-time pairing code for a viewer on another machine
    /// (`kodama-server view --pair STRING` there).
    Add {
        /// The viewer's name on this server (unique).
        name: String,
        /// Code options.
        #[command(flatten)]
        code: PairCodeArgs,
    },
    /// List paired viewers and codes waiting to be used.
    List,
    /// Remove a viewer: closed at once, its key never comes back.
    Remove {
        /// Its name (or node id).
        name: String,
    },
}

/// Parses `90s`, `30m`, `1h`, `2d` (or plain seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    if secs == 0 || secs > 30 * 86_400 {
        return Err(format!("{text:?}: must be between 1 s and 30 days"));
    }
    Ok(std::time::Duration::from_secs(secs))
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
    /// Write the camera's live audio as Ogg Opus to this file (`-` for
    /// stdout). A recorded range's MP4 (`--from`) already carries the audio.
    #[arg(long, conflicts_with = "from")]
    pub audio_output: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many video frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// The viewer's key file (default: <data-dir>/viewer.key).
    #[arg(long)]
    pub key_path: Option<PathBuf>,
    /// Pair this viewer first with a pairing string from `kodama-server
    /// viewer add` (once; later runs reuse the pairing).
    #[arg(long, conflicts_with_all = ["ticket", "server_id"])]
    pub pair: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert_eq!(parse_duration("45"), Ok(std::time::Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("31d").is_err());
    }

    #[test]
    fn camera_commands_parse() {
        let cli = Cli::try_parse_from([
            "kodama-server",
            "camera",
            "add",
            "porch",
            "--expires",
            "10m",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Some(ServerCommand::Camera {
                action: CameraAction::Add { .. }
            })
        ));
        assert!(Cli::try_parse_from(["kodama-server", "camera", "reboot", "porch"]).is_ok());
        let relay = Cli::try_parse_from([
            "kodama-server",
            "allow",
            "add",
            "ID",
            "--role",
            "relay",
            "--carry",
            "A",
            "--carry",
            "B",
        ])
        .expect("relay parses");
        assert!(matches!(
            relay.command,
            Some(ServerCommand::Allow {
                action: AllowAction::Add { role: PeerRole::Relay, ref carries, .. }
            }) if carries == &["A".to_owned(), "B".to_owned()]
        ));
        assert!(matches!(
            Cli::try_parse_from(["kodama-server", "relay"])
                .expect("relay mode")
                .command,
            Some(ServerCommand::Relay)
        ));
        assert!(
            Cli::try_parse_from(["kodama-server", "camera", "add", "x", "--wifi-psk", "p"])
                .is_err()
        );
    }
}
