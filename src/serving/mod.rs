//! Online serving of tenant variants (`POST /v1/predict`): one process for every tenant.
//!
//! A request's tenant comes from its key; its variant from the tenant's pin (or the version it
//! names, of its own models only). The shared base is loaded once per process; variants live
//! in a byte-bounded LRU with single-flight loads (`cache`). Admission is per tenant: a token
//! bucket from the plan's API rate and a cap on requests in flight (`limits`), answered at once
//! with 429 + Retry-After or 503. Admitted rows are micro-batched fairly across tenants
//! (`batcher`), timed into per-tenant latency histograms (`stats`) and metered (`meter`).
//! Replicas own tenants by rendezvous hashing (`ring`).
//!
//! What a request needs besides the variant (the key, the tenant's plan and store, the pins and
//! model names) is read from storage at most once per `refresh_ms` per tenant and cached: a
//! revoked key, a plan change or a pin moved by another process is seen within that time; a pin
//! moved through this process's API is seen at once (`invalidate`).

pub mod batcher;
pub mod cache;
pub mod limits;
pub mod meter;
pub mod ring;
pub mod routes;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::model::registry::{DEFAULT_LABEL, Pins};
use crate::model::{LoadedVariant, ModelError, ModelRegistry, best_class};
use crate::platform::{Platform, PlatformError};
use crate::tenant::{Action, AuthError, Principal, TenantId};

pub use batcher::BatchSettings;
pub use cache::{CacheStats, VariantCache, VariantKey};
pub use limits::{Limits, PlanLimits, Refusal};
pub use stats::{LatencyHistogram, Outcome, ServingStats, TenantServing};

/// Serving settings (`[serving]` in `tenantry.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServingSettings {
    /// Bytes of tenant variants kept in memory (the shared base is not counted).
    pub cache_bytes: usize,
    /// Inputs per request at most (413 beyond).
    pub max_inputs: usize,
    /// Bytes of one input text at most (413 beyond).
    pub max_text_bytes: usize,
    /// Bytes of a request body at most (413 beyond).
    pub max_body_bytes: usize,
    pub batch: BatchSettings,
    /// Keys, plans, stores, pins and model names are re-read at most this often per tenant.
    pub refresh_ms: u64,
    /// Every serving replica's name, for routing tenants by rendezvous hashing.
    pub replicas: Vec<String>,
    /// This replica's name (one of `replicas` when there are several).
    pub replica: String,
    /// How often journaled usage becomes Parquet.
    pub usage_flush_ms: u64,
    /// Where this replica journals usage before answering (`<dir>/<replica>/`); in memory
    /// without one (no crash safety: `memory://` storage and tests).
    pub journal_dir: Option<std::path::PathBuf>,
    /// When a journaled event counts as durable.
    pub journal_sync: crate::usage::SyncPolicy,
}

impl Default for ServingSettings {
    fn default() -> Self {
        Self {
            cache_bytes: 256 * 1024 * 1024,
            max_inputs: 256,
            max_text_bytes: 16 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            batch: BatchSettings::default(),
            refresh_ms: 1_000,
            replicas: Vec::new(),
            replica: "local".to_string(),
            // usage is durable in the journal: the interval only sets how fresh usage reports
            // are, and how many small files a day holds
            usage_flush_ms: 60_000,
            journal_dir: None,
            journal_sync: crate::usage::SyncPolicy::Always,
        }
    }
}

/// An input's id, echoed back: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum InputId {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictInput {
    pub id: InputId,
    pub text: String,
}

/// `POST /v1/predict` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub inputs: Vec<PredictInput>,
    /// One of the tenant's models; optional when the tenant has exactly one.
    #[serde(default)]
    pub model: Option<String>,
    /// A version of that model; the `production` pin when omitted.
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    pub id: InputId,
    pub label: String,
    /// Probability of every label.
    pub probabilities: BTreeMap<String, f32>,
    pub model: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictResponse {
    pub model: String,
    pub version: String,
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("missing, invalid or revoked api key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("rate limit exceeded: retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    pub fn outcome(&self) -> Outcome {
        match self {
            ServeError::RateLimited { .. } => Outcome::RateLimited,
            ServeError::Overloaded(_) => Outcome::Overloaded,
            ServeError::Unavailable(_) | ServeError::Internal(_) => Outcome::PlatformError,
            _ => Outcome::ClientError,
        }
    }
}

impl From<ModelError> for ServeError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::NotFound(what) => ServeError::NotFound(what),
            ModelError::Invalid(message) => ServeError::BadRequest(message),
            ModelError::Unavailable(message) | ModelError::Interrupted(message) => {
                ServeError::Unavailable(message)
            }
            other => ServeError::Internal(other.to_string()),
        }
    }
}

impl From<PlatformError> for ServeError {
    fn from(error: PlatformError) -> Self {
        match error {
            // the key was valid a moment ago: the tenant is gone or suspended
            PlatformError::TenantNotFound(_) | PlatformError::TenantNotActive { .. } => {
                ServeError::Unauthorized
            }
            other => ServeError::Internal(other.to_string()),
        }
    }
}

/// A cached read with the time it was made.
#[derive(Debug, Clone)]
struct Fresh<T> {
    value: T,
    read_ms: u64,
}

/// A small map of reads, each trusted for `refresh_ms`.
#[derive(Debug)]
struct FreshMap<K, V> {
    entries: Mutex<HashMap<K, Fresh<V>>>,
}

impl<K: Eq + Hash, V: Clone> FreshMap<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K, now_ms: u64, refresh_ms: u64) -> Option<V> {
        let entries = self.entries.lock().expect("cache poisoned");
        entries
            .get(key)
            .filter(|fresh| now_ms.saturating_sub(fresh.read_ms) < refresh_ms)
            .map(|fresh| fresh.value.clone())
    }

    fn put(&self, key: K, value: V, now_ms: u64) {
        self.entries.lock().expect("cache poisoned").insert(
            key,
            Fresh {
                value,
                read_ms: now_ms,
            },
        );
    }

    fn remove_where(&self, predicate: impl Fn(&K) -> bool) {
        self.entries
            .lock()
            .expect("cache poisoned")
            .retain(|key, _| !predicate(key));
    }
}

/// What serving needs of a tenant: its limits, whether its variants are pinned in the cache,
/// and its model registry.
#[derive(Debug, Clone)]
struct TenantView {
    limits: PlanLimits,
    pinned: bool,
    registry: ModelRegistry,
}

struct Inner {
    platform: Platform,
    settings: ServingSettings,
    clock: SharedClock,
    cache: VariantCache,
    batcher: batcher::Batcher,
    limits: Limits,
    stats: ServingStats,
    meter: meter::ServingMeter,
    keys: FreshMap<[u8; 32], Principal>,
    tenants: FreshMap<TenantId, TenantView>,
    pins: FreshMap<(TenantId, String), Pins>,
    models: FreshMap<TenantId, Vec<String>>,
}

/// The serving service of one process.
#[derive(Clone)]
pub struct Serving {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Serving({})", self.inner.settings.replica)
    }
}

/// A replica name as it may appear in a file name.
fn file_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if safe.is_empty() {
        "local".to_string()
    } else {
        safe
    }
}

impl Serving {
    /// Opens the replica's usage journal (writing out what an earlier run left in it at the
    /// first flush), then starts the batch workers and the usage flusher on the current
    /// runtime.
    pub fn start(
        platform: Platform,
        settings: ServingSettings,
        clock: SharedClock,
    ) -> Result<Self, crate::usage::JournalError> {
        let replica = file_safe(&settings.replica);
        let journal = crate::usage::UsageJournal::open(
            platform.clone(),
            clock.clone(),
            &replica,
            settings.journal_dir.as_ref().map(|dir| dir.join(&replica)),
            settings.journal_sync,
        )?;
        let meter = meter::ServingMeter::new(journal, clock.clone(), &replica);
        let inner = Arc::new(Inner {
            cache: VariantCache::new(settings.cache_bytes),
            batcher: batcher::Batcher::start(settings.batch),
            limits: Limits::default(),
            stats: ServingStats::default(),
            meter,
            keys: FreshMap::new(),
            tenants: FreshMap::new(),
            pins: FreshMap::new(),
            models: FreshMap::new(),
            platform,
            settings,
            clock,
        });
        let weak = Arc::downgrade(&inner);
        let every = Duration::from_millis(inner.settings.usage_flush_ms.max(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            // the first tick is at once: segments left by a crash are written at start
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = inner.meter.flush().await {
                    tracing::warn!(%error, "serving usage not written yet: kept in the journal");
                }
            }
        });
        Ok(Self { inner })
    }

    pub fn settings(&self) -> &ServingSettings {
        &self.inner.settings
    }

    pub fn cache(&self) -> &VariantCache {
        &self.inner.cache
    }

    pub fn stats(&self) -> &ServingStats {
        &self.inner.stats
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The replica that owns `tenant` (this one when no replica list is configured).
    pub fn owner_of(&self, tenant: &TenantId) -> String {
        ring::owner(&self.inner.settings.replicas, tenant)
            .unwrap_or(&self.inner.settings.replica)
            .to_string()
    }

    /// Verifies an API key (cached for `refresh_ms`; unknown keys are never cached).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ServeError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = self.now_ms();
        if let Some(principal) = self
            .inner
            .keys
            .get(&digest, now, self.inner.settings.refresh_ms)
        {
            return Ok(principal);
        }
        let principal =
            self.inner
                .platform
                .authenticate(token)
                .await
                .map_err(|error| match error {
                    AuthError::InvalidKey => ServeError::Unauthorized,
                    other => ServeError::Internal(other.to_string()),
                })?;
        self.inner.keys.put(digest, principal.clone(), now);
        Ok(principal)
    }

    async fn tenant_view(&self, tenant: &TenantId) -> Result<TenantView, ServeError> {
        let now = self.now_ms();
        let refresh = self.inner.settings.refresh_ms;
        if let Some(view) = self.inner.tenants.get(tenant, now, refresh) {
            return Ok(view);
        }
        let record = self.inner.platform.tenant(tenant).await?;
        let store = self.inner.platform.active_tenant_store(tenant).await?;
        let plan = &record.plan;
        let view = TenantView {
            limits: PlanLimits {
                rate_per_sec: f64::from(plan.rate_limit_per_sec),
                burst: f64::from(plan.rate_limit_burst),
                max_in_flight: plan.max_inflight_requests,
            },
            pinned: plan.serving_pinned,
            registry: ModelRegistry::new(store, self.inner.platform.base_models().clone()),
        };
        self.inner.tenants.put(tenant.clone(), view.clone(), now);
        Ok(view)
    }

    async fn model_name(
        &self,
        tenant: &TenantId,
        view: &TenantView,
        requested: Option<&str>,
    ) -> Result<String, ServeError> {
        if let Some(name) = requested {
            return Ok(name.to_string());
        }
        let now = self.now_ms();
        let names = match self
            .inner
            .models
            .get(tenant, now, self.inner.settings.refresh_ms)
        {
            Some(names) => names,
            None => {
                let names: Vec<String> = view
                    .registry
                    .list()
                    .await?
                    .into_iter()
                    .map(|summary| summary.name)
                    .collect();
                self.inner.models.put(tenant.clone(), names.clone(), now);
                names
            }
        };
        match names.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ServeError::NotFound("a model of this tenant".to_string())),
            several => Err(ServeError::BadRequest(format!(
                "this tenant has {} models: name one in \"model\" ({})",
                several.len(),
                several.join(", ")
            ))),
        }
    }

    async fn version(
        &self,
        tenant: &TenantId,
        view: &TenantView,
        model: &str,
        requested: Option<&str>,
    ) -> Result<String, ServeError> {
        if let Some(version) = requested {
            return Ok(version.to_string());
        }
        let now = self.now_ms();
        let key = (tenant.clone(), model.to_string());
        let pins = match self
            .inner
            .pins
            .get(&key, now, self.inner.settings.refresh_ms)
        {
            Some(pins) => pins,
            None => {
                let pins = view.registry.pins(model).await?;
                self.inner.pins.put(key, pins.clone(), now);
                pins
            }
        };
        pins.labels.get(DEFAULT_LABEL).cloned().ok_or_else(|| {
            ServeError::NotFound(format!(
                "a version of model {model:?} pinned as {DEFAULT_LABEL:?}"
            ))
        })
    }

    /// The variant for a request: from the cache, or loaded once for every concurrent miss.
    async fn variant(
        &self,
        tenant: &TenantId,
        view: &TenantView,
        model: &str,
        version: &str,
    ) -> Result<Arc<LoadedVariant>, ServeError> {
        let key = VariantKey {
            tenant: tenant.clone(),
            model: model.to_string(),
            version: version.to_string(),
        };
        let registry = view.registry.clone();
        let variant = self
            .inner
            .cache
            .get_or_load(&key, view.pinned, || async move {
                registry.load(model, version).await
            })
            .await?;
        Ok(variant)
    }

    /// Forgets what this process cached about `model` of `tenant` (its pin moved).
    pub fn invalidate(&self, tenant: &TenantId, model: &str) {
        self.inner
            .pins
            .remove_where(|(t, m)| t == tenant && m == model);
        self.inner.models.remove_where(|t| t == tenant);
        self.inner.cache.invalidate(tenant, model);
    }

    fn check(&self, request: &PredictRequest) -> Result<(), ServeError> {
        let settings = &self.inner.settings;
        if request.inputs.is_empty() {
            return Err(ServeError::BadRequest(
                "\"inputs\" is empty: send at least one {\"id\", \"text\"}".to_string(),
            ));
        }
        if request.inputs.len() > settings.max_inputs {
            return Err(ServeError::TooLarge(format!(
                "{} inputs in one request; at most {} are accepted",
                request.inputs.len(),
                settings.max_inputs
            )));
        }
        for (index, input) in request.inputs.iter().enumerate() {
            if input.text.len() > settings.max_text_bytes {
                return Err(ServeError::TooLarge(format!(
                    "inputs[{index}].text is {} bytes; at most {} are accepted",
                    input.text.len(),
                    settings.max_text_bytes
                )));
            }
        }
        Ok(())
    }

    /// Answers one prediction request of `principal`'s tenant. Every outcome is counted and
    /// every answered request metered.
    pub async fn predict(
        &self,
        principal: &Principal,
        request: PredictRequest,
        request_id: &str,
    ) -> Result<PredictResponse, ServeError> {
        let started = Instant::now();
        if !principal.role.allows(Action::Predict) {
            return Err(ServeError::Forbidden(format!(
                "role {} may not call predict",
                principal.role.as_str()
            )));
        }
        let tenant = principal
            .tenant_opt
            .clone()
            .ok_or_else(|| ServeError::Forbidden("this key is not bound to a tenant".into()))?;
        let rows = request.inputs.len();
        let result = self.predict_for(&tenant, request, request_id).await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(error) => error.outcome(),
        };
        self.inner
            .stats
            .record(&tenant, outcome, rows, started.elapsed().as_secs_f64());
        result
    }

    async fn predict_for(
        &self,
        tenant: &TenantId,
        request: PredictRequest,
        request_id: &str,
    ) -> Result<PredictResponse, ServeError> {
        self.check(&request)?;
        let view = self.tenant_view(tenant).await?;
        let _slot = self
            .inner
            .limits
            .admit(tenant, view.limits, self.now_ms())
            .map_err(|refusal| match refusal {
                Refusal::RateLimited { retry_after_ms } => {
                    ServeError::RateLimited { retry_after_ms }
                }
                Refusal::TooManyInFlight { cap } => ServeError::Overloaded(format!(
                    "this tenant already has {cap} requests in flight"
                )),
            })?;
        let model = self
            .model_name(tenant, &view, request.model.as_deref())
            .await?;
        let version = self
            .version(tenant, &view, &model, request.version.as_deref())
            .await?;
        let variant = self.variant(tenant, &view, &model, &version).await?;
        let (ids, texts): (Vec<InputId>, Vec<String>) = request
            .inputs
            .into_iter()
            .map(|input| (input.id, input.text))
            .unzip();
        let tokens: usize = texts.iter().map(|text| meter::tokens(text)).sum();
        let rows = texts.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let scorer = variant.clone();
        self.inner
            .batcher
            .submit(batcher::Work {
                tenant: tenant.clone(),
                rows,
                run: Box::new(move || {
                    let _ = reply.send(scorer.probabilities(&texts));
                }),
            })
            .map_err(|full| {
                ServeError::Overloaded(format!(
                    "the scoring queue is full ({} rows waiting)",
                    full.queued_rows
                ))
            })?;
        let probabilities = answer
            .await
            .map_err(|_| ServeError::Internal("a scoring batch failed".to_string()))?;
        let labels = &variant.weights.labels;
        let classes = labels.len().max(1);
        let predictions = ids
            .into_iter()
            .zip(probabilities.chunks(classes))
            .map(|(id, row)| {
                let (best, _) = best_class(row);
                Prediction {
                    id,
                    label: labels.get(best).cloned().unwrap_or_default(),
                    probabilities: labels.iter().cloned().zip(row.iter().copied()).collect(),
                    model: model.clone(),
                    version: version.clone(),
                }
            })
            .collect();
        self.inner
            .meter
            .record(tenant, request_id, rows, tokens)
            .await
            .map_err(|error| ServeError::Internal(format!("usage not recorded: {error}")))?;
        Ok(PredictResponse {
            model,
            version,
            predictions,
        })
    }

    /// Writes journaled usage as Parquet now (shutdown, tests).
    pub async fn flush_usage(
        &self,
    ) -> Result<crate::usage::journal::FlushReport, crate::usage::JournalError> {
        self.inner.meter.flush().await
    }

    /// Journal segments sealed and not yet written as Parquet.
    pub fn pending_usage(&self) -> usize {
        self.inner.meter.pending_segments()
    }

    /// Prometheus text of the serving figures and the variant cache.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        self.inner.stats.render(&mut out);
        let cache = self.inner.cache.stats();
        let loads = self.inner.cache.load_seconds();
        let mut histogram = LatencyHistogram::default();
        for seconds in &loads {
            histogram.observe(*seconds);
        }
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP tenantry_variant_cache_bytes Bytes of tenant variants cached.\n# TYPE tenantry_variant_cache_bytes gauge\ntenantry_variant_cache_bytes {}\n# HELP tenantry_variant_cache_entries Tenant variants cached.\n# TYPE tenantry_variant_cache_entries gauge\ntenantry_variant_cache_entries {}\n# HELP tenantry_variant_cache_evictions_total Variants evicted to stay under the byte bound.\n# TYPE tenantry_variant_cache_evictions_total counter\ntenantry_variant_cache_evictions_total {}",
            cache.bytes, cache.entries, cache.evictions
        );
        let _ = writeln!(
            out,
            "# HELP tenantry_variant_load_seconds Cold-load time of a tenant variant.\n# TYPE tenantry_variant_load_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, count) in stats::LATENCY_BUCKETS.iter().zip(histogram.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "tenantry_variant_load_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "tenantry_variant_load_seconds_bucket{{le=\"+Inf\"}} {}\ntenantry_variant_load_seconds_sum {}\ntenantry_variant_load_seconds_count {}",
            histogram.count, histogram.sum_seconds, histogram.count
        );
        let mut sorted = loads;
        sorted.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        let _ = writeln!(
            out,
            "# HELP tenantry_variant_loads_total Cold loads of tenant variants.\n# TYPE tenantry_variant_loads_total counter\ntenantry_variant_loads_total {}\n# HELP tenantry_variant_load_p50_seconds Median cold-load time of the recent loads.\n# TYPE tenantry_variant_load_p50_seconds gauge\ntenantry_variant_load_p50_seconds {}\n# HELP tenantry_variant_load_p99_seconds 99th percentile cold-load time of the recent loads.\n# TYPE tenantry_variant_load_p99_seconds gauge\ntenantry_variant_load_p99_seconds {}",
            cache.loads,
            quantile(0.5),
            quantile(0.99)
        );
        out
    }
}
