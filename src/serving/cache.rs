//! Tenant variants in memory: an LRU bounded in bytes, loaded on first use with single-flight
//! (concurrent misses for one variant load it once), with pinned tenants never evicted. The
//! key always carries the tenant, so two tenants' models of the same name are two entries.
//! The shared base is not charged here: it is loaded once per process by `BaseModels`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

use crate::model::{LoadedVariant, ModelError};
use crate::tenant::TenantId;

/// One variant of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VariantKey {
    pub tenant: TenantId,
    pub model: String,
    pub version: String,
}

/// Bytes a cached variant is charged: its own weights (and its own encoder when it does not
/// run over the shared base), plus the bookkeeping of the entry.
pub fn charged_bytes(key: &VariantKey, variant: &LoadedVariant) -> usize {
    const ENTRY_OVERHEAD: usize = 512;
    let own_encoder = if variant.meta.base.is_none() {
        variant.base.bytes()
    } else {
        0
    };
    variant.weights.bytes()
        + own_encoder
        + key.model.len() * 2
        + key.version.len() * 2
        + key.tenant.as_str().len() * 2
        + ENTRY_OVERHEAD
}

#[derive(Debug)]
struct Entry {
    variant: Arc<LoadedVariant>,
    bytes: usize,
    pinned: bool,
    /// Position in the recency index.
    tick: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<VariantKey, Entry>,
    /// tick -> key, least recently used first (pinned entries are not indexed).
    recency: BTreeMap<u64, VariantKey>,
    next_tick: u64,
    bytes: usize,
    evictions: u64,
}

impl State {
    fn touch(&mut self, key: &VariantKey) -> Option<Arc<LoadedVariant>> {
        let tick = self.next_tick;
        let entry = self.entries.get_mut(key)?;
        if !entry.pinned {
            self.recency.remove(&entry.tick);
            self.recency.insert(tick, key.clone());
        }
        entry.tick = tick;
        self.next_tick += 1;
        Some(entry.variant.clone())
    }

    fn remove(&mut self, key: &VariantKey) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.recency.remove(&entry.tick);
                self.bytes -= entry.bytes;
                true
            }
            None => false,
        }
    }
}

/// What the cache holds, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
    pub evictions: u64,
    pub loads: u64,
}

type Flight = Arc<OnceCell<Arc<LoadedVariant>>>;

/// Cold-load durations kept (the most recent).
const MAX_LOAD_SAMPLES: usize = 100_000;

/// The variant cache of one serving process.
#[derive(Debug)]
pub struct VariantCache {
    capacity_bytes: usize,
    state: Mutex<State>,
    flights: Mutex<HashMap<VariantKey, Flight>>,
    /// Cold-load durations in seconds, for the metrics and the benchmark.
    load_seconds: Mutex<Vec<f64>>,
    loads: std::sync::atomic::AtomicU64,
}

impl VariantCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            state: Mutex::new(State::default()),
            flights: Mutex::new(HashMap::new()),
            load_seconds: Mutex::new(Vec::new()),
            loads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The cached variant, marked as just used.
    pub fn get(&self, key: &VariantKey) -> Option<Arc<LoadedVariant>> {
        self.state.lock().expect("cache poisoned").touch(key)
    }

    /// The cached variant, or loads it with `load`: concurrent callers for one key share one
    /// load. A failed load is not cached (the next caller tries again).
    pub async fn get_or_load<F, Fut>(
        &self,
        key: &VariantKey,
        pinned: bool,
        load: F,
    ) -> Result<Arc<LoadedVariant>, ModelError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LoadedVariant, ModelError>>,
    {
        if let Some(hit) = self.get(key) {
            return Ok(hit);
        }
        let flight = {
            let mut flights = self.flights.lock().expect("cache poisoned");
            flights.entry(key.clone()).or_default().clone()
        };
        let result = flight
            .get_or_try_init(|| async {
                let started = Instant::now();
                let variant = Arc::new(load().await?);
                let mut loads = self.load_seconds.lock().expect("cache poisoned");
                // a bounded record of recent loads
                if loads.len() >= MAX_LOAD_SAMPLES {
                    loads.drain(..MAX_LOAD_SAMPLES / 2);
                }
                loads.push(started.elapsed().as_secs_f64());
                drop(loads);
                self.loads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.insert(key.clone(), variant.clone(), pinned);
                Ok::<_, ModelError>(variant)
            })
            .await
            .cloned();
        let mut flights = self.flights.lock().expect("cache poisoned");
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(key);
        }
        result
    }

    fn insert(&self, key: VariantKey, variant: Arc<LoadedVariant>, pinned: bool) {
        let bytes = charged_bytes(&key, &variant);
        let mut state = self.state.lock().expect("cache poisoned");
        state.remove(&key);
        let tick = state.next_tick;
        state.next_tick += 1;
        if !pinned {
            state.recency.insert(tick, key.clone());
        }
        state.bytes += bytes;
        state.entries.insert(
            key,
            Entry {
                variant,
                bytes,
                pinned,
                tick,
            },
        );
        // Evict the least recently used unpinned entries until the cache fits. Pinned
        // entries may keep it above capacity: pinning is a promise to those tenants.
        while state.bytes > self.capacity_bytes {
            let Some((_, victim)) = state.recency.pop_first() else {
                break;
            };
            if state.remove(&victim) {
                state.evictions += 1;
            }
        }
    }

    /// Drops every cached version of `model` of `tenant` (its pin moved).
    pub fn invalidate(&self, tenant: &TenantId, model: &str) -> usize {
        let mut state = self.state.lock().expect("cache poisoned");
        let keys: Vec<VariantKey> = state
            .entries
            .keys()
            .filter(|key| &key.tenant == tenant && key.model == model)
            .cloned()
            .collect();
        keys.iter().filter(|key| state.remove(key)).count()
    }

    /// Drops everything of `tenant` (offboarding).
    pub fn forget_tenant(&self, tenant: &TenantId) -> usize {
        let mut state = self.state.lock().expect("cache poisoned");
        let keys: Vec<VariantKey> = state
            .entries
            .keys()
            .filter(|key| &key.tenant == tenant)
            .cloned()
            .collect();
        keys.iter().filter(|key| state.remove(key)).count()
    }

    pub fn contains(&self, key: &VariantKey) -> bool {
        self.state
            .lock()
            .expect("cache poisoned")
            .entries
            .contains_key(key)
    }

    pub fn stats(&self) -> CacheStats {
        let state = self.state.lock().expect("cache poisoned");
        CacheStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            capacity_bytes: self.capacity_bytes,
            evictions: state.evictions,
            loads: self.loads.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Recent cold-load durations (up to 100,000), in seconds.
    pub fn load_seconds(&self) -> Vec<f64> {
        self.load_seconds.lock().expect("cache poisoned").clone()
    }
}
