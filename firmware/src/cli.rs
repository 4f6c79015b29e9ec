//! Command-line flags and environment variables, layered over the TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Kodama camera firmware.
#[derive(Debug, Parser)]
#[command(name = "kodama-camera", version, about)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<CameraCommand>,
    /// Settings for `run` (also accepted without the subcommand).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CameraCommand {
    /// Stream to the server (the default).
    Run,
    /// Print this camera's node id (creating its key if needed) and exit.
    Id,
    /// Field diagnostics: check one part of the hardware and print JSON.
    Diag {
        /// Which part.
        #[command(subcommand)]
        what: DiagCommand,
    },
}

/// `kodama-camera diag …`
#[derive(Debug, Subcommand)]
pub enum DiagCommand {
    /// Bring up the modem on a serial port and print its state as JSON.
    Modem {
        /// Serial port (the SIM7600's AT port, usually /dev/ttyUSB2).
        #[arg(long)]
        port: PathBuf,
        /// Baud rate.
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Parse NMEA (a file or `-` for stdin): one JSON line per fix, then counts.
    Nmea {
        /// Input file, or `-`.
        input: String,
    },
    /// Analyse an H.264 Annex-B stream (a file or `-`): profile, level, resolution, frames, IDRs.
    H264 {
        /// Input file, or `-`.
        input: String,
    },
    /// Print one telemetry sample as JSON.
    Telemetry {
        /// Read /proc and /sys under this directory instead of /.
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

/// Overrides for the configuration file, each also settable by environment.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "KODAMA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Camera name.
    #[arg(long, env = "KODAMA_CAMERA_NAME", global = true)]
    pub name: Option<String>,
    /// Secret key file.
    #[arg(long, env = "KODAMA_KEY_PATH", global = true)]
    pub key_path: Option<PathBuf>,
    /// Server connection ticket.
    #[arg(long, env = "KODAMA_SERVER_TICKET", global = true)]
    pub server_ticket: Option<String>,
    /// Pairing string from `kodama-server camera add NAME` (first contact).
    #[arg(long, env = "KODAMA_SERVER_PAIR", global = true)]
    pub server_pair: Option<String>,
    /// Server node id.
    #[arg(long, env = "KODAMA_SERVER_ID", global = true)]
    pub server_id: Option<String>,
    /// Server direct address (repeatable; comma-separated in the env var).
    #[arg(long, env = "KODAMA_SERVER_ADDR", value_delimiter = ',', global = true)]
    pub server_addr: Vec<SocketAddr>,
    /// Offline mode: no relays, address lookup or port mapping.
    #[arg(long, env = "KODAMA_OFFLINE", global = true)]
    pub offline: bool,
    /// Video width.
    #[arg(long, env = "KODAMA_VIDEO_WIDTH", global = true)]
    pub width: Option<u32>,
    /// Video height.
    #[arg(long, env = "KODAMA_VIDEO_HEIGHT", global = true)]
    pub height: Option<u32>,
    /// Frames per second.
    #[arg(long, env = "KODAMA_VIDEO_FPS", global = true)]
    pub fps: Option<u32>,
    /// Target bitrate in kbit/s.
    #[arg(long, env = "KODAMA_VIDEO_BITRATE_KBPS", global = true)]
    pub bitrate_kbps: Option<u32>,
    /// Frames per GOP.
    #[arg(long, env = "KODAMA_VIDEO_KEYFRAME_INTERVAL", global = true)]
    pub keyframe_interval: Option<u32>,
}

impl RunArgs {
    /// The file (if any) with every override applied, validated.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.name {
            c.camera.name = v.clone();
        }
        if let Some(v) = &self.key_path {
            c.camera.key_path = v.clone();
        }
        if let Some(v) = &self.server_ticket {
            c.server.ticket = Some(v.clone());
        }
        if let Some(v) = &self.server_pair {
            c.server.pair = Some(v.clone());
        }
        if let Some(v) = &self.server_id {
            c.server.node_id = Some(v.clone());
        }
        if !self.server_addr.is_empty() {
            c.server.addrs = self.server_addr.clone();
        }
        if self.offline {
            c.network.offline = true;
        }
        let v = &mut c.video;
        for (slot, value) in [
            (&mut v.width, self.width),
            (&mut v.height, self.height),
            (&mut v.fps, self.fps),
            (&mut v.bitrate_kbps, self.bitrate_kbps),
            (&mut v.keyframe_interval, self.keyframe_interval),
        ] {
            if let Some(value) = value {
                *slot = value;
            }
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kodama.toml");
        let id = kodama_net::SecretKey::generate().public().to_string();
        std::fs::write(
            &path,
            format!("[camera]\nname = \"file\"\n[server]\nnode_id = \"{id}\"\n[video]\nfps = 15\n"),
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "kodama-camera",
            "--config",
            path.to_str().expect("utf8"),
            "--name",
            "flag",
            "--fps",
            "25",
        ])
        .expect("parses");
        let c = cli.run.resolve().expect("valid");
        assert_eq!(c.camera.name, "flag");
        assert_eq!(c.video.fps, 25);
        let cli = Cli::try_parse_from([
            "kodama-camera",
            "--config",
            path.to_str().expect("utf8"),
            "--fps",
            "0",
        ])
        .expect("parses");
        assert!(cli
            .run
            .resolve()
            .expect_err("bad")
            .to_string()
            .starts_with("video.fps"));
    }
}
