//! `tenantry bench serving`: the online endpoint under load, measured from a separate load
//! generator process over loopback HTTP.
//!
//! Setup (not timed): a scratch platform on a temporary folder, a shared base, and N tenants
//! on the `pro` plan each with a fine-tuned variant (every other one with LoRA adapters) pinned
//! as production. Then, each against a fresh `tenantry serve` process:
//! - load: 100 tenants, mixed request sizes, Poisson arrivals at the target rate in all:
//!   throughput, p50/p95/p99;
//! - noisy neighbour: the others' p95 without and with one tenant sending 10x its rate limit;
//! - cost per tenant: resident memory of one process after it has served all N tenants'
//!   variants, against dedicated single-tenant processes in the same run; variant cold loads.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::Actor;
use crate::bench::loadgen::{LoadPlan, LoadResult, Stream};
use crate::config::Settings;
use crate::model::base::BASE_NAME;
use crate::model::registry::{BaseRef, DEFAULT_LABEL, Lineage, NewVersion};
use crate::model::train::{LoraConfig, TrainConfig, finetune};
use crate::model::{EncoderConfig, ModelError, ModelRegistry, VersionMeta, blocking};
use crate::platform::Platform;
use crate::tenant::{Role, TenantId};

#[derive(Debug, Clone)]
pub struct ServingBenchOptions {
    /// Tenants in the load and noisy-neighbour runs.
    pub tenants: usize,
    /// Tenants whose variants the memory run loads into one process.
    pub memory_tenants: usize,
    /// Dedicated single-tenant processes measured beside it.
    pub dedicated: usize,
    /// Total request rate of the load run.
    pub rate: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyFigures {
    pub requests_ok: u64,
    pub throughput_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Status code -> responses, all streams.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub transport_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServingBenchReport {
    pub setup_seconds: f64,
    pub tenants: usize,
    pub target_rate: f64,
    pub mean_rows_per_request: f64,
    pub load: LatencyFigures,
    pub noisy_rate: f64,
    pub others_without_noisy: LatencyFigures,
    pub others_with_noisy: LatencyFigures,
    /// How much the others' p95 grew with the noisy tenant, in percent.
    pub others_p95_increase_pct: f64,
    pub noisy_tenant_statuses: std::collections::BTreeMap<u16, u64>,
    pub memory_tenants: usize,
    pub shared_rss_warm_mb: f64,
    pub shared_rss_all_loaded_mb: f64,
    pub added_kb_per_variant: f64,
    pub shared_kb_per_tenant: f64,
    pub dedicated_rss_mb: Vec<f64>,
    pub dedicated_kb_per_tenant: f64,
    pub cold_loads: u64,
    pub cold_load_p50_ms: f64,
    pub cold_load_p99_ms: f64,
}

/// Request sizes drawn in turn: mostly single rows, some batches (mean 11.5 rows).
const SIZES: [usize; 8] = [1, 4, 1, 16, 1, 4, 64, 1];

/// Fine-tunes `name` for the registry's tenant over the current shared base, stores it and
/// pins it as `production`.
pub async fn tune_variant(
    registry: &ModelRegistry,
    name: &str,
    texts: Vec<String>,
    labels: Vec<String>,
    train: TrainConfig,
    lora: Option<LoraConfig>,
) -> Result<VersionMeta, ModelError> {
    let bases = registry.bases();
    let base_version = bases.require_current().await?;
    let base = bases.load(&base_version).await?;
    let encoder = base.config;
    let started = Instant::now();
    let (variant, texts, labels) = {
        let base = base.clone();
        blocking(move || {
            let device = crate::model::training_device(false)?;
            let variant = finetune(&base, &texts, &labels, &train, lora, &device, |_| true)?;
            Ok((variant, texts, labels))
        })
        .await?
    };
    let (holdout_texts, holdout_labels) = (variant.holdout_of(&texts), variant.holdout_of(&labels));
    let saved = registry
        .save(
            name,
            NewVersion {
                variant,
                own_encoder: None,
                base: Some(BaseRef {
                    name: BASE_NAME.to_string(),
                    version: base_version,
                }),
                encoder,
                lineage: Lineage {
                    dataset: "generated".to_string(),
                    rows: texts.len(),
                    text_column: "text".to_string(),
                    label_column: "label".to_string(),
                    train,
                    job_id: "bench".to_string(),
                    run_id: None,
                    code_version: env!("CARGO_PKG_VERSION").to_string(),
                },
                holdout_texts,
                holdout_labels,
                training_seconds: started.elapsed().as_secs_f64(),
            },
        )
        .await?;
    registry
        .promote(name, &saved.version, DEFAULT_LABEL, "tuned for serving")
        .await?;
    Ok(saved)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn figures<'a>(
    streams: impl Iterator<Item = &'a crate::bench::loadgen::StreamResult>,
    seconds: f64,
) -> LatencyFigures {
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    let mut transport_errors = 0;
    for stream in streams {
        latencies.extend_from_slice(&stream.latencies_ms);
        for (status, count) in &stream.statuses {
            *statuses.entry(*status).or_default() += count;
        }
        transport_errors += stream.transport_errors;
    }
    latencies.sort_by(f64::total_cmp);
    LatencyFigures {
        requests_ok: latencies.len() as u64,
        throughput_per_sec: latencies.len() as f64 / seconds.max(1e-9),
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        statuses,
        transport_errors,
    }
}

fn bench_error(message: impl std::fmt::Display) -> String {
    message.to_string()
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(bench_error)?;
    Ok(listener.local_addr().map_err(bench_error)?.port())
}

/// Resident memory of a process, in KiB.
fn rss_kb(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(bench_error)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc status".to_string())
}

/// A `tenantry serve` child process, killed on drop.
struct Server {
    child: tokio::process::Child,
    address: String,
}

impl Server {
    async fn start(dir: &Path, storage_url: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(bench_error)?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let child = tokio::process::Command::new(exe)
            .arg("serve")
            .arg("--listen")
            .arg(&address)
            .current_dir(dir)
            .env("TENANTRY_STORAGE_URL", storage_url)
            // each server its own usage journal: a killed one's lock never blocks the next
            .env(
                "TENANTRY_USAGE_JOURNAL",
                dir.join(format!("journal-{}", uuid::Uuid::now_v7())),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(bench_error)?;
        let server = Self { child, address };
        // setup, not a measurement: wait for the listener with a deadline
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(&server.address)
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "tenantry serve did not listen on {}",
                    server.address
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    fn pid(&self) -> Result<u32, String> {
        self.child
            .id()
            .ok_or_else(|| "the server exited".to_string())
    }

    /// One request per token, in order; every answer must be 200.
    async fn touch(&self, tokens: &[String], text: &str) -> Result<(), String> {
        for token in tokens {
            let status = crate::bench::loadgen::post_once(&self.address, token, text)
                .await
                .map_err(bench_error)?;
            if status != 200 {
                return Err(format!("a warm-up request answered {status}"));
            }
        }
        Ok(())
    }

    async fn metrics(&self, admin: &str) -> Result<String, String> {
        crate::bench::loadgen::get_text(&self.address, "/metrics", admin)
            .await
            .map_err(bench_error)
    }
}

/// Runs the load generator as its own process on `plan`.
async fn run_loadgen(dir: &Path, plan: &LoadPlan) -> Result<LoadResult, String> {
    let plan_path = dir.join(format!("plan-{}.json", uuid::Uuid::now_v7()));
    let out_path = plan_path.with_extension("out.json");
    std::fs::write(&plan_path, serde_json::to_vec(plan).map_err(bench_error)?)
        .map_err(bench_error)?;
    let exe = std::env::current_exe().map_err(bench_error)?;
    let status = tokio::process::Command::new(exe)
        .args(["bench", "loadgen", "--plan"])
        .arg(&plan_path)
        .arg("--out")
        .arg(&out_path)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .map_err(bench_error)?;
    if !status.success() {
        return Err(format!("the load generator failed: {status}"));
    }
    let bytes = std::fs::read(&out_path).map_err(bench_error)?;
    serde_json::from_slice(&bytes).map_err(bench_error)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn run_serving_bench(
    options: &ServingBenchOptions,
) -> Result<ServingBenchReport, String> {
    let setup_started = Instant::now();
    let scratch = Scratch {
        dir: std::env::temp_dir().join(format!("tenantry-bench-serving-{}", uuid::Uuid::now_v7())),
    };
    let dir = scratch.dir.clone();
    std::fs::create_dir_all(dir.join("data")).map_err(bench_error)?;
    let storage_url = format!("file://{}", dir.join("data").display());
    let settings = Settings {
        storage_url: storage_url.clone(),
        ..Settings::default()
    };
    let platform = Platform::open(settings).await.map_err(bench_error)?;
    platform
        .base_models()
        .train(
            400,
            1,
            EncoderConfig::compact(),
            TrainConfig {
                epochs: 2,
                ..TrainConfig::default()
            },
            true,
        )
        .await
        .map_err(bench_error)?;
    let admin = platform
        .keys()
        .issue(None, Role::PlatformAdmin, "bench")
        .await
        .map_err(bench_error)?
        .token
        .expose()
        .to_string();
    let count = options
        .tenants
        .max(options.memory_tenants)
        .max(options.dedicated);
    let profiles = ["acme", "globex", "initech"];
    let mut tokens = Vec::with_capacity(count);
    let mut sample_texts = Vec::new();
    for n in 0..count {
        let id = TenantId::parse(&format!("bench-{n:04}")).map_err(bench_error)?;
        platform
            .onboard(&id, &format!("Bench {n}"), "pro", Actor::system())
            .await
            .map_err(bench_error)?;
        let client = platform
            .keys()
            .issue(Some(&id), Role::Client, "bench")
            .await
            .map_err(bench_error)?;
        tokens.push(client.token.expose().to_string());
        let profile =
            crate::fixtures::profile(profiles[n % profiles.len()]).ok_or("no fixture profile")?;
        let (texts, labels): (Vec<String>, Vec<String>) =
            crate::fixtures::clauses(profile, 160, 1_000 + n as u64)
                .into_iter()
                .filter_map(|clause| Some((clause.text?, clause.label?)))
                .unzip();
        if sample_texts.len() < 256 {
            sample_texts.extend(texts.iter().take(8).cloned());
        }
        let store = platform.tenant_store(&id).await.map_err(bench_error)?;
        let registry = ModelRegistry::new(store, platform.base_models().clone());
        let lora = (n % 2 == 0).then_some(LoraConfig {
            rank: 4,
            alpha: 8.0,
        });
        let train = TrainConfig {
            epochs: 3,
            seed: n as u64,
            ..TrainConfig::default()
        };
        tune_variant(&registry, "clauses", texts, labels, train, lora)
            .await
            .map_err(bench_error)?;
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    tracing::info!(tenants = count, setup_seconds, "serving benchmark set up");

    // load: every tenant warm, then the target rate spread over the tenants
    let tenants = options.tenants.max(2).min(count);
    let per_tenant = options.rate / tenants as f64;
    let stream = |n: usize, rate: f64| Stream {
        name: format!("bench-{n:04}"),
        token: tokens[n].clone(),
        rate_per_sec: rate,
        sizes: SIZES.to_vec(),
        seed: n as u64,
    };
    let plan = |streams: Vec<Stream>, target: &str| LoadPlan {
        target: target.to_string(),
        seconds: options.seconds,
        streams,
        texts: sample_texts.clone(),
    };
    let server = Server::start(&dir, &storage_url).await?;
    server.touch(&tokens[..tenants], &sample_texts[0]).await?;
    let result = run_loadgen(
        &dir,
        &plan(
            (0..tenants).map(|n| stream(n, per_tenant)).collect(),
            &server.address,
        ),
    )
    .await?;
    let load = figures(result.streams.iter(), result.seconds);

    // noisy neighbour: the same others, without and then with tenant 0 at 10x its limit
    let noisy_rate =
        10.0 * f64::from(crate::tenant::builtin_plan("pro").map_or(100, |p| p.rate_limit_per_sec));
    let others: Vec<Stream> = (1..tenants).map(|n| stream(n, per_tenant)).collect();
    let without = run_loadgen(&dir, &plan(others.clone(), &server.address)).await?;
    let mut with_streams = others;
    with_streams.push(stream(0, noisy_rate));
    let with = run_loadgen(&dir, &plan(with_streams, &server.address)).await?;
    let noisy_name = "bench-0000";
    let others_without_noisy = figures(without.streams.iter(), without.seconds);
    let others_with_noisy = figures(
        with.streams.iter().filter(|s| s.name != noisy_name),
        with.seconds,
    );
    let noisy_tenant_statuses = with
        .streams
        .iter()
        .find(|s| s.name == noisy_name)
        .map(|s| s.statuses.clone())
        .unwrap_or_default();
    drop(server);

    // cost per tenant: one process serving every tenant's variant
    let memory_tenants = options.memory_tenants.max(2).min(count);
    let shared = Server::start(&dir, &storage_url).await?;
    shared.touch(&tokens[..1], &sample_texts[0]).await?;
    let warm_kb = rss_kb(shared.pid()?)?;
    shared
        .touch(&tokens[1..memory_tenants], &sample_texts[0])
        .await?;
    let loaded_kb = rss_kb(shared.pid()?)?;
    let metrics = shared.metrics(&admin).await?;
    drop(shared);
    let mut dedicated_rss_mb = Vec::new();
    for token in tokens.iter().take(options.dedicated) {
        let single = Server::start(&dir, &storage_url).await?;
        single
            .touch(std::slice::from_ref(token), &sample_texts[0])
            .await?;
        dedicated_rss_mb.push(rss_kb(single.pid()?)? / 1024.0);
    }
    let dedicated_kb_per_tenant = if dedicated_rss_mb.is_empty() {
        0.0
    } else {
        dedicated_rss_mb.iter().sum::<f64>() * 1024.0 / dedicated_rss_mb.len() as f64
    };
    let mean_rows = SIZES.iter().sum::<usize>() as f64 / SIZES.len() as f64;
    drop(scratch);
    Ok(ServingBenchReport {
        setup_seconds,
        tenants,
        target_rate: options.rate,
        mean_rows_per_request: mean_rows,
        load,
        noisy_rate,
        others_p95_increase_pct: (others_with_noisy.p95_ms / others_without_noisy.p95_ms.max(1e-9)
            - 1.0)
            * 100.0,
        others_without_noisy,
        others_with_noisy,
        noisy_tenant_statuses,
        memory_tenants,
        shared_rss_warm_mb: warm_kb / 1024.0,
        shared_rss_all_loaded_mb: loaded_kb / 1024.0,
        added_kb_per_variant: (loaded_kb - warm_kb) / (memory_tenants - 1) as f64,
        shared_kb_per_tenant: loaded_kb / memory_tenants as f64,
        dedicated_rss_mb,
        dedicated_kb_per_tenant,
        cold_loads: metric(&metrics, "tenantry_variant_loads_total") as u64,
        cold_load_p50_ms: metric(&metrics, "tenantry_variant_load_p50_seconds") * 1000.0,
        cold_load_p99_ms: metric(&metrics, "tenantry_variant_load_p99_seconds") * 1000.0,
    })
}
