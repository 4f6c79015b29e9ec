//! What both binaries share about their configuration files: the one error
//! type (file unreadable, not parseable, a value out of range — each naming
//! the file or the field) and reading a file. What a file holds stays with
//! its binary (`kodama-server.toml`, the camera's `kodama.toml`).

use std::path::{Path, PathBuf};

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (it names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `server.node_id`.
        field: String,
        /// Why.
        message: String,
    },
}

/// Reads a configuration file whole.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a configuration file and parses it with `parse` (TOML in both
/// binaries); a parse error names the file.
pub fn load<T, E: std::fmt::Display>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ConfigError> {
    let text = read(path)?;
    parse(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("kodama-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.toml");
        let err = load(&missing, |_| Ok::<(), String>(())).expect_err("missing file");
        assert!(matches!(&err, ConfigError::Read { path, .. } if path == &missing));
        assert!(err.to_string().contains("missing.toml"), "{err}");

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "x = ").expect("write");
        let err = load(&bad, |text| Err::<(), _>(format!("cannot parse {text:?}")))
            .expect_err("parse error");
        assert!(matches!(&err, ConfigError::Parse { path, .. } if path == &bad));
        assert!(err.to_string().contains("bad.toml: cannot parse"), "{err}");
        assert_eq!(load(&bad, |text| Ok::<_, String>(text.len())).ok(), Some(4));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
