//! Pairing on first contact: redeem the one-time code from `server.pair`
//! (or from a QR code), then remember on the data partition that it is done
//! and which server it was, so every later start connects as a camera.
//!
//! The record (`<key>.paired.toml`, beside the secret key) is written
//! atomically ([`crate::firstboot::atomic_write`]). A refusal that retrying
//! cannot fix (wrong, expired or used code, revoked key) ends the attempt
//! with the server's reason; an unreachable server is retried with capped
//! backoff until cancelled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kodama_net::pair::{self, PairError};
use kodama_net::{Endpoint, EndpointAddr};
use kodama_proto::pairing::PairingString;
use kodama_proto::Role;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// What the camera remembers after pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairedRecord {
    /// The server's ticket.
    pub server: String,
    /// The name the server gave this camera.
    pub name: String,
    /// The server's own name.
    #[serde(default)]
    pub server_name: String,
}

/// Why pairing did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The pairing string or the server's ticket in it is unusable.
    #[error("server.pair: {0}")]
    BadString(String),
    /// The server refused (the reason says what to do).
    #[error("{0}")]
    Refused(PairError),
    /// The record could not be read or written.
    #[error("pairing record {path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Cancelled before it finished.
    #[error("cancelled")]
    Cancelled,
}

impl PairedRecord {
    /// The record at `path`, if the camera has paired.
    pub fn load(path: &Path) -> Result<Option<Self>, PairingError> {
        let err = |message: String| PairingError::Record {
            path: path.to_owned(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, path: &Path) -> Result<(), PairingError> {
        let err = |message: String| PairingError::Record {
            path: path.to_owned(),
            message,
        };
        let text = toml::to_string(self).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        crate::firstboot::atomic_write(path, text.as_bytes(), 0o600)
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// The server to dial.
    pub fn server_addr(&self) -> Result<EndpointAddr, PairingError> {
        kodama_net::endpoint::dial_addr(Some(&self.server), None, &[])
            .map_err(|e| PairingError::BadString(e.to_string()))
    }
}

/// Redeems the code in `pairing` at its server, retrying while the server
/// cannot be reached, and records success at `record_path`.
pub async fn pair_camera(
    endpoint: &Endpoint,
    pairing: &PairingString,
    suggested_name: &str,
    record_path: &Path,
    cancel: &CancellationToken,
) -> Result<PairedRecord, PairingError> {
    let server = kodama_net::endpoint::dial_addr(Some(&pairing.server), None, &[])
        .map_err(|e| PairingError::BadString(e.to_string()))?;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    // Bounded: about a day of retries at the 30 s cap.
    for attempt in 1..=3000u32 {
        tracing::info!(server = %server.id, attempt, "pairing with the server");
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(PairingError::Cancelled),
            r = pair::pair(endpoint, server.clone(), Role::Camera, &pairing.code, suggested_name) => r,
        };
        match result {
            Ok(paired) => {
                let record = PairedRecord {
                    server: pairing.server.clone(),
                    name: paired.name.clone(),
                    server_name: paired.server,
                };
                record.save(record_path)?;
                tracing::info!(name = %paired.name, "paired; connecting as a camera");
                return Ok(record);
            }
            Err(e) if e.is_retryable() => {
                let wait = backoff.next_delay(rand::random::<f64>());
                tracing::warn!("{e}; retrying in {wait:?}");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(PairingError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                tracing::error!("pairing refused: {e}");
                return Err(PairingError::Refused(e));
            }
        }
    }
    Err(PairingError::Refused(PairError::Unreachable(
        "gave up after 3000 attempts".into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kodama/camera.paired.toml");
        assert_eq!(PairedRecord::load(&path).expect("none"), None);
        let addr = EndpointAddr::new(kodama_net::SecretKey::generate().public());
        let r = PairedRecord {
            server: kodama_net::EndpointTicket::new(addr.clone()).to_string(),
            name: "porch".into(),
            server_name: "box".into(),
        };
        r.save(&path).expect("save");
        assert_eq!(PairedRecord::load(&path).expect("load"), Some(r.clone()));
        assert_eq!(r.server_addr().expect("addr").id, addr.id);
        std::fs::write(&path, "garbage = ").expect("write");
        assert!(PairedRecord::load(&path).is_err());
    }
}
