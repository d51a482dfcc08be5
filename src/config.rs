//! Process settings: `tenantry.toml` (optional) overridden by `TENANTRY_*` environment variables.
//!
//! Settings are operator input for the process, kept apart from tenant manifests (data). Values
//! are never expanded from the environment inside tenant-supplied documents.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Default object-store URL: a local folder next to the working directory.
pub const DEFAULT_STORAGE_URL: &str = "file://./data";
/// Default queue URL: the embedded, in-process queue.
pub const DEFAULT_QUEUE_URL: &str = "memory://";
/// Default control-plane listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default cap on a dataset upload body.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

pub const ENV_STORAGE_URL: &str = "TENANTRY_STORAGE_URL";
pub const ENV_QUEUE_URL: &str = "TENANTRY_QUEUE_URL";
pub const ENV_LISTEN: &str = "TENANTRY_LISTEN";
pub const ENV_MASTER_KEY_FILE: &str = "TENANTRY_MASTER_KEY_FILE";
pub const ENV_ADMIN_KEY: &str = "TENANTRY_ADMIN_KEY";
pub const ENV_MAX_UPLOAD_BYTES: &str = "TENANTRY_MAX_UPLOAD_BYTES";

/// A secret string: zeroed on drop, never printed by `Debug`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// Returns the secret value; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The `tenantry.toml` file as written by operators.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    storage_url: Option<String>,
    queue_url: Option<String>,
    listen: Option<String>,
    master_key_file: Option<PathBuf>,
    max_upload_bytes: Option<usize>,
}

/// Validated process settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `file://PATH`, `memory://` or `s3://bucket/prefix`.
    pub storage_url: String,
    /// `memory://` or `redis://HOST:PORT`.
    pub queue_url: String,
    /// Address the HTTP servers bind.
    pub listen: String,
    /// File holding the 32-byte platform key-encryption key (hex or raw).
    pub master_key_file_opt: Option<PathBuf>,
    /// A platform-admin API key to register at start (`TENANTRY_ADMIN_KEY`).
    pub admin_key_opt: Option<Secret>,
    /// Largest accepted dataset upload, in bytes (413 beyond).
    pub max_upload_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            storage_url: DEFAULT_STORAGE_URL.to_string(),
            queue_url: DEFAULT_QUEUE_URL.to_string(),
            listen: DEFAULT_LISTEN.to_string(),
            master_key_file_opt: None,
            admin_key_opt: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

impl Settings {
    /// Loads settings from an optional config file and the process environment.
    ///
    /// Without `--config`, `./tenantry.toml` is read when it exists.
    pub fn load(config_path_opt: Option<&Path>) -> Result<Self, ConfigError> {
        let default_path = Path::new("tenantry.toml");
        let (path_opt, required) = match config_path_opt {
            Some(path) => (Some(path), true),
            None => (default_path.exists().then_some(default_path), false),
        };
        let file_text_opt = match path_opt {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some((path.to_path_buf(), text)),
                Err(source) if required || source.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                Err(_) => None,
            },
            None => None,
        };
        Self::from_sources(file_text_opt, &|key| std::env::var(key).ok())
    }

    /// Builds settings from a config file's text and an environment lookup (testable).
    pub fn from_sources(
        file_opt: Option<(PathBuf, String)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match file_opt {
            Some((path, text)) => {
                toml::from_str::<FileConfig>(&text).map_err(|error| ConfigError::Parse {
                    path,
                    message: error.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let defaults = Settings::default();
        let lookup = |key: &'static str, sensitive: bool| -> Option<String> {
            let value = env(key).filter(|value| !value.is_empty())?;
            let shown = if sensitive { "***" } else { value.as_str() };
            tracing::debug!(key, value = shown, "setting from environment");
            Some(value)
        };
        let max_upload_bytes = match lookup(ENV_MAX_UPLOAD_BYTES, false) {
            Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
                key: ENV_MAX_UPLOAD_BYTES,
                message: format!("expected a byte count, got {text:?}"),
            })?,
            None => file.max_upload_bytes.unwrap_or(defaults.max_upload_bytes),
        };
        let settings = Settings {
            storage_url: lookup(ENV_STORAGE_URL, false)
                .or(file.storage_url)
                .unwrap_or(defaults.storage_url),
            queue_url: lookup(ENV_QUEUE_URL, false)
                .or(file.queue_url)
                .unwrap_or(defaults.queue_url),
            listen: lookup(ENV_LISTEN, false)
                .or(file.listen)
                .unwrap_or(defaults.listen),
            master_key_file_opt: lookup(ENV_MASTER_KEY_FILE, false)
                .map(PathBuf::from)
                .or(file.master_key_file),
            admin_key_opt: lookup(ENV_ADMIN_KEY, true).map(Secret::new),
            max_upload_bytes,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.queue_url.starts_with("memory://") || self.queue_url.starts_with("redis://")) {
            return Err(ConfigError::Invalid {
                key: ENV_QUEUE_URL,
                message: format!(
                    "unsupported queue url {:?} (expected memory:// or redis://HOST:PORT)",
                    self.queue_url
                ),
            });
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: ENV_LISTEN,
                message: format!("expected HOST:PORT, got {:?}", self.listen),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_and_defaults_fill_the_rest() {
        let file = Some((
            PathBuf::from("tenantry.toml"),
            "storage_url = \"memory://\"\nlisten = \"127.0.0.1:9000\"\n".to_string(),
        ));
        let env = |key: &str| (key == ENV_LISTEN).then(|| "127.0.0.1:9100".to_string());
        let settings = Settings::from_sources(file, &env).unwrap();
        assert_eq!(settings.storage_url, "memory://");
        assert_eq!(settings.listen, "127.0.0.1:9100");
        assert_eq!(settings.queue_url, DEFAULT_QUEUE_URL);
    }

    #[test]
    fn unknown_config_keys_are_rejected_with_the_key_name() {
        let file = Some((PathBuf::from("t.toml"), "storage = \"x\"\n".to_string()));
        let error = Settings::from_sources(file, &|_| None).unwrap_err();
        assert!(error.to_string().contains("storage"), "{error}");
    }

    #[test]
    fn the_admin_key_is_never_printed() {
        let env = |key: &str| (key == ENV_ADMIN_KEY).then(|| "tnt_abc_supersecret".to_string());
        let settings = Settings::from_sources(None, &env).unwrap();
        assert!(!format!("{settings:?}").contains("supersecret"));
    }
}
