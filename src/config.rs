//! Process settings: `tenantry.toml` (optional) overridden by `TENANTRY_*` environment variables.
//!
//! Settings are operator input for the process, kept apart from tenant manifests (data). Values
//! are never expanded from the environment inside tenant-supplied documents.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::serving::ServingSettings;
use zeroize::Zeroizing;

/// Default object-store URL: a local folder next to the working directory.
pub const DEFAULT_STORAGE_URL: &str = "file://./data";
/// Default queue URL: the embedded, in-process queue.
pub const DEFAULT_QUEUE_URL: &str = "memory://";
/// Default control-plane listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where `tenantry serve` listens by default.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8081";
/// Default cap on a dataset upload body.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

pub const ENV_STORAGE_URL: &str = "TENANTRY_STORAGE_URL";
pub const ENV_QUEUE_URL: &str = "TENANTRY_QUEUE_URL";
pub const ENV_LISTEN: &str = "TENANTRY_LISTEN";
pub const ENV_MASTER_KEY_FILE: &str = "TENANTRY_MASTER_KEY_FILE";
pub const ENV_ADMIN_KEY: &str = "TENANTRY_ADMIN_KEY";
pub const ENV_MAX_UPLOAD_BYTES: &str = "TENANTRY_MAX_UPLOAD_BYTES";
pub const ENV_QUEUE_NAMESPACE: &str = "TENANTRY_QUEUE_NAMESPACE";
pub const ENV_LEASE_MS: &str = "TENANTRY_LEASE_MS";
pub const ENV_DIAGNOSTIC_JOBS: &str = "TENANTRY_DIAGNOSTIC_JOBS";
pub const ENV_SERVE_LISTEN: &str = "TENANTRY_SERVE_LISTEN";
pub const ENV_USAGE_JOURNAL: &str = "TENANTRY_USAGE_JOURNAL";
pub const ENV_USAGE_JOURNAL_SYNC: &str = "TENANTRY_USAGE_JOURNAL_SYNC";
/// Where serving replicas journal usage when storage is in S3 and nothing else is set.
pub const DEFAULT_JOURNAL_DIR: &str = "./journal";

/// Durable storage gets a durable usage journal, so acknowledged usage survives a crash: next
/// to a local storage folder (`file://./data` journals in `./data.journal`), in
/// `./journal` for S3; none for `memory://`.
fn default_journal_dir(storage_url: &str) -> Option<PathBuf> {
    if let Some(path) = storage_url.strip_prefix("file://") {
        let trimmed = path.trim_end_matches('/');
        return Some(PathBuf::from(format!("{trimmed}.journal")));
    }
    (!storage_url.starts_with("memory://")).then(|| PathBuf::from(DEFAULT_JOURNAL_DIR))
}
/// Default lease: a dead worker's job is requeued within about this long (plus one reaper tick).
pub const DEFAULT_LEASE_MS: u64 = 6_000;

/// A worker pool: which job kinds it runs, how many at once, on what device, and for whom.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub kinds: Vec<String>,
    pub concurrency: u32,
    #[serde(default = "default_device")]
    pub device: String,
    /// Dedicated tenants: when non-empty, only these tenants' jobs run here (and theirs run
    /// nowhere else for these kinds).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Per-kind job timeouts in milliseconds; kinds not listed use the runner's default.
    #[serde(default)]
    pub job_timeouts_ms: std::collections::BTreeMap<String, u64>,
    /// Which worker runtime drives the pool.
    #[serde(default)]
    pub runtime: PoolRuntime,
}

/// The worker runtime of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolRuntime {
    /// tenantry's own runner (no apalis in the loop).
    Native,
    /// apalis 1.0's worker runtime (supervision, tower layers) through the queue adapter.
    #[default]
    Apalis,
}

fn default_device() -> String {
    "cpu".to_string()
}

/// The default pools: `cpu` for data and report work, `train` for fine-tuning.
pub fn default_pools() -> Vec<PoolConfig> {
    let kinds = |list: &[&str]| list.iter().map(|k| k.to_string()).collect();
    vec![
        PoolConfig {
            name: "cpu".to_string(),
            kinds: kinds(&[
                "validate",
                "transform",
                "score",
                "migrate",
                "rollup",
                "invoice",
                "storage_sample",
                "sla_report",
                "noop",
                "sleep",
                "smoke",
                "crash",
            ]),
            concurrency: 4,
            device: "cpu".to_string(),
            tenants: Vec::new(),
            job_timeouts_ms: [("smoke", 60_000), ("noop", 60_000)]
                .into_iter()
                .map(|(kind, ms)| (kind.to_string(), ms))
                .collect(),
            runtime: PoolRuntime::Apalis,
        },
        PoolConfig {
            name: "train".to_string(),
            kinds: kinds(&["finetune"]),
            concurrency: 1,
            device: "cpu".to_string(),
            tenants: Vec::new(),
            job_timeouts_ms: [("finetune".to_string(), 6 * 3_600_000)]
                .into_iter()
                .collect(),
            runtime: PoolRuntime::Apalis,
        },
    ]
}

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
    queue_namespace: Option<String>,
    lease_ms: Option<u64>,
    #[serde(default)]
    pools: Vec<PoolConfig>,
    serving: Option<ServingFile>,
    billing: Option<crate::billing::settings::BillingFile>,
}

/// `[serving]` of `tenantry.toml`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServingFile {
    listen: Option<String>,
    cache_mb: Option<usize>,
    max_inputs: Option<usize>,
    max_text_bytes: Option<usize>,
    batch_window_us: Option<u64>,
    max_batch_rows: Option<usize>,
    max_queued_rows: Option<usize>,
    refresh_ms: Option<u64>,
    replicas: Option<Vec<String>>,
    replica: Option<String>,
    journal_dir: Option<PathBuf>,
    journal_sync: Option<crate::usage::SyncPolicy>,
    usage_flush_ms: Option<u64>,
}

impl ServingFile {
    fn apply(self, settings: &mut ServingSettings) {
        if let Some(mb) = self.cache_mb {
            settings.cache_bytes = mb * 1024 * 1024;
        }
        if let Some(n) = self.max_inputs {
            settings.max_inputs = n;
        }
        if let Some(n) = self.max_text_bytes {
            settings.max_text_bytes = n;
        }
        if let Some(us) = self.batch_window_us {
            settings.batch.window = std::time::Duration::from_micros(us);
        }
        if let Some(n) = self.max_batch_rows {
            settings.batch.max_batch_rows = n;
        }
        if let Some(n) = self.max_queued_rows {
            settings.batch.max_queued_rows = n;
        }
        if let Some(ms) = self.refresh_ms {
            settings.refresh_ms = ms;
        }
        if let Some(replicas) = self.replicas {
            settings.replicas = replicas;
        }
        if let Some(replica) = self.replica {
            settings.replica = replica;
        }
        if let Some(dir) = self.journal_dir {
            settings.journal_dir = Some(dir);
        }
        if let Some(policy) = self.journal_sync {
            settings.journal_sync = policy;
        }
        if let Some(ms) = self.usage_flush_ms {
            settings.usage_flush_ms = ms;
        }
    }
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
    /// Prefix of every Redis key of the queue.
    pub queue_namespace: String,
    /// Job lease length; workers heartbeat at a third of it.
    pub lease_ms: u64,
    /// Worker pools (`[[pools]]`); the defaults when none are configured.
    pub pools: Vec<PoolConfig>,
    /// Enables the `crash` diagnostic job kind (fault-injection tests only).
    pub diagnostic_jobs: bool,
    /// Online serving (`[serving]`).
    pub serving: ServingSettings,
    /// Address `tenantry serve` binds (`[serving] listen`, `TENANTRY_SERVE_LISTEN`).
    pub serve_listen: String,
    /// Metering and billing (`[billing]`): grace period, cron spread, unit prices.
    pub billing: crate::billing::settings::BillingSettings,
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
            queue_namespace: "tenantry".to_string(),
            lease_ms: DEFAULT_LEASE_MS,
            pools: default_pools(),
            diagnostic_jobs: false,
            serving: ServingSettings::default(),
            serve_listen: DEFAULT_SERVE_LISTEN.to_string(),
            billing: Default::default(),
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
        let lease_ms = match lookup(ENV_LEASE_MS, false) {
            Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
                key: ENV_LEASE_MS,
                message: format!("expected milliseconds, got {text:?}"),
            })?,
            None => file.lease_ms.unwrap_or(defaults.lease_ms),
        };
        let mut serving = defaults.serving.clone();
        let serve_listen_file = file.serving.as_ref().and_then(|s| s.listen.clone());
        if let Some(section) = file.serving {
            section.apply(&mut serving);
        }
        let storage_url = lookup(ENV_STORAGE_URL, false)
            .or(file.storage_url)
            .unwrap_or(defaults.storage_url);
        if let Some(dir) = lookup(ENV_USAGE_JOURNAL, false) {
            serving.journal_dir = Some(PathBuf::from(dir));
        } else if serving.journal_dir.is_none() {
            serving.journal_dir = default_journal_dir(&storage_url);
        }
        if let Some(policy) = lookup(ENV_USAGE_JOURNAL_SYNC, false) {
            serving.journal_sync = match policy.as_str() {
                "always" => crate::usage::SyncPolicy::Always,
                "os" => crate::usage::SyncPolicy::Os,
                other => {
                    return Err(ConfigError::Invalid {
                        key: ENV_USAGE_JOURNAL_SYNC,
                        message: format!("expected always or os, got {other:?}"),
                    });
                }
            };
        }
        let billing = match file.billing {
            Some(section) => section.settings().map_err(|message| ConfigError::Invalid {
                key: "billing",
                message,
            })?,
            None => defaults.billing,
        };
        let settings = Settings {
            billing,
            serving,
            serve_listen: lookup(ENV_SERVE_LISTEN, false)
                .or(serve_listen_file)
                .unwrap_or(defaults.serve_listen),
            storage_url,
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
            queue_namespace: lookup(ENV_QUEUE_NAMESPACE, false)
                .or(file.queue_namespace)
                .unwrap_or(defaults.queue_namespace),
            lease_ms,
            pools: if file.pools.is_empty() {
                defaults.pools
            } else {
                file.pools
            },
            diagnostic_jobs: lookup(ENV_DIAGNOSTIC_JOBS, false)
                .is_some_and(|v| v == "1" || v == "true"),
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
        if self.lease_ms < 300 {
            return Err(ConfigError::Invalid {
                key: ENV_LEASE_MS,
                message: format!("lease of {} ms is too short (at least 300)", self.lease_ms),
            });
        }
        let mut names = std::collections::HashSet::new();
        for pool in &self.pools {
            if pool.concurrency == 0 || !names.insert(pool.name.as_str()) || pool.name.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "pools",
                    message: format!(
                        "pool {:?} needs a unique name and a concurrency above 0",
                        pool.name
                    ),
                });
            }
        }
        if self.serving.max_inputs == 0
            || self.serving.batch.max_batch_rows == 0
            || self.serving.batch.max_queued_rows < self.serving.max_inputs
        {
            return Err(ConfigError::Invalid {
                key: "serving",
                message: "max_inputs and max_batch_rows must be above 0, and max_queued_rows at least max_inputs".to_string(),
            });
        }
        if self.serve_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: ENV_SERVE_LISTEN,
                message: format!("expected HOST:PORT, got {:?}", self.serve_listen),
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
    fn the_example_config_parses_with_its_serving_section() {
        let text = include_str!("../tenantry.example.toml").to_string();
        let settings =
            Settings::from_sources(Some(("tenantry.example.toml".into(), text)), &|_| None)
                .unwrap();
        assert_eq!(settings.serve_listen, "127.0.0.1:8081");
        assert_eq!(settings.serving.cache_bytes, 256 * 1024 * 1024);
        assert_eq!(
            settings.serving.batch.window,
            std::time::Duration::from_micros(500)
        );
        assert_eq!(settings.billing.grace, chrono::Duration::hours(6));
        assert_eq!(settings.billing.unit_prices.gib_month.to_string(), "0.023");
        // the example's file store journals usage next to it
        assert_eq!(
            settings.serving.journal_dir,
            Some(PathBuf::from("./data.journal"))
        );
        let bad = "[serving]\nmax_inputs = 0\n".to_string();
        let error = Settings::from_sources(Some(("t.toml".into(), bad)), &|_| None).unwrap_err();
        assert!(error.to_string().contains("serving"), "{error}");
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
