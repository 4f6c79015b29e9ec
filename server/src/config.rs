//! The server's configuration: `kodama-server.toml`, environment, flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use kodama_net::config::ConfigError;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Name shown to cameras and viewers.
    pub name: String,
    /// Where keys, the allowlist and recordings live.
    pub data_dir: PathBuf,
    /// UDP socket address for QUIC (default 0.0.0.0:7070).
    pub listen: SocketAddr,
    /// No relays, address lookup or port mapping.
    pub offline: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            name: "kodama".into(),
            data_dir: PathBuf::from("kodama-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            offline: false,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerSection,
    /// `[recording]` (its `data_dir` comes from `[server] data_dir`).
    pub recording: crate::recorder::RecorderConfig,
    /// `[api]`
    pub api: crate::api::ApiConfig,
    /// `[[upstream]]`: servers this one forwards cameras to.
    #[serde(rename = "upstream")]
    pub upstreams: Vec<crate::upstream::UpstreamConfig>,
    /// `[metrics]`
    pub metrics: crate::metrics::MetricsConfig,
}

impl Config {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        kodama_net::config::load(path, |text| toml::from_str(text))
    }

    /// Checks every value, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.server.name;
        if name.is_empty() || name.len() > 64 {
            return Err(ConfigError::Invalid {
                field: "server.name".into(),
                message: format!("must be 1..=64 bytes, got {}", name.len()),
            });
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                field: "server.data_dir".into(),
                message: "must not be empty".into(),
            });
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            u.validate(i)?;
        }
        Ok(())
    }

    /// The node's secret key file.
    pub fn key_path(&self) -> PathBuf {
        self.server.data_dir.join("server.key")
    }

    /// The allowlist file.
    pub fn allowlist_path(&self) -> PathBuf {
        self.server.data_dir.join("allowlist.toml")
    }

    /// The pending pairing codes (hashed).
    pub fn pairing_path(&self) -> PathBuf {
        self.server.data_dir.join("pairing.toml")
    }

    /// The running server's ticket, written at start for `camera add`.
    pub fn ticket_path(&self) -> PathBuf {
        self.server.data_dir.join("server-ticket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[server]\nlisten = \"nope\"\n").expect("write");
        let err = Config::load(&path).expect_err("bad addr");
        assert!(err.to_string().contains("listen"), "{err}");
        std::fs::write(&path, "[server]\nnmae = \"x\"\n").expect("write");
        assert!(Config::load(&path)
            .expect_err("typo")
            .to_string()
            .contains("nmae"));
        std::fs::write(&path, "[server]\nname = \"\"\n").expect("write");
        let c = Config::load(&path).expect("parses");
        assert!(c
            .validate()
            .expect_err("empty")
            .to_string()
            .starts_with("server.name"));
    }
}
