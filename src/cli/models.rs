//! Model commands: the platform's shared bases (`model train-base|bases|rollout`) and a
//! tenant's registry (`models list|show|promote|rollback`).

use tenantry::Platform;
use tenantry::model::base::BASE_NAME;
use tenantry::model::{EncoderConfig, ModelRegistry, TrainConfig};
use tenantry::pipeline::finetune::queue_base_rollout;

use crate::cli::output::{Output, print_json, print_table};
use crate::cli::{ModelCommand, ModelsCommand, open_jobs, parse_tenant};

pub async fn run_model(
    platform: &Platform,
    out: &Output,
    command: ModelCommand,
) -> anyhow::Result<()> {
    let bases = platform.base_models();
    match command {
        ModelCommand::TrainBase {
            rows,
            epochs,
            seed,
            no_current,
        } => {
            let train = TrainConfig {
                epochs,
                seed,
                ..TrainConfig::default()
            };
            let meta = bases
                .train(rows, seed, EncoderConfig::default(), train, !no_current)
                .await?;
            out.json_or(&meta, |meta| {
                let last = meta.epochs.last();
                format!(
                    "base {BASE_NAME} {} trained on {} clauses in {:.1} s (final loss {:.3}, training accuracy {:.3}){}",
                    meta.version,
                    meta.corpus.rows,
                    meta.training_seconds,
                    last.map_or(0.0, |e| e.loss),
                    last.map_or(0.0, |e| e.accuracy),
                    if no_current { "" } else { "; now current" }
                )
            });
        }
        ModelCommand::Bases => {
            let current = bases.current().await?;
            let list = bases.list().await?;
            if out.is_json() {
                print_json(&serde_json::json!({"current": current, "versions": list}));
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|meta| {
                        vec![
                            meta.version.clone(),
                            if current.as_deref() == Some(meta.version.as_str()) {
                                "*".into()
                            } else {
                                String::new()
                            },
                            meta.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            meta.corpus.rows.to_string(),
                            format!("{:.1}", meta.training_seconds),
                        ]
                    })
                    .collect();
                print_table(&["VERSION", "CURRENT", "CREATED", "ROWS", "SECONDS"], &rows);
            }
        }
        ModelCommand::Rollout { version } => {
            bases.set_current(&version).await?;
            let jobs = open_jobs(platform).await?;
            let queued = queue_base_rollout(&jobs, &version).await?;
            out.json_or(&queued, |queued| {
                let mut text = format!(
                    "base {version} is current; {} re-fine-tune job(s) queued (each pin moves only if not worse):\n",
                    queued.len()
                );
                for job in queued {
                    text.push_str(&format!(
                        "  {} {} [{}] from {}: job {}\n",
                        job.tenant, job.model, job.label, job.pinned, job.job_id
                    ));
                }
                text.trim_end().to_string()
            });
        }
    }
    Ok(())
}

pub async fn run_models(
    platform: &Platform,
    out: &Output,
    command: ModelsCommand,
) -> anyhow::Result<()> {
    let registry = |store| ModelRegistry::new(store, platform.base_models().clone());
    match command {
        ModelsCommand::List { tenant } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let models = registry(store).list().await?;
            if out.is_json() {
                print_json(&models);
            } else {
                let rows: Vec<Vec<String>> = models
                    .iter()
                    .map(|model| {
                        let pins: Vec<String> =
                            model.pins.iter().map(|(l, v)| format!("{l}={v}")).collect();
                        vec![model.name.clone(), model.versions.join(","), pins.join(" ")]
                    })
                    .collect();
                print_table(&["MODEL", "VERSIONS", "PINS"], &rows);
            }
        }
        ModelsCommand::Show { tenant, name } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let registry = registry(store);
            let versions = registry.versions(&name).await?;
            let pins = registry.pins(&name).await?;
            if out.is_json() {
                print_json(&serde_json::json!({"name": name, "versions": versions, "pins": pins}));
            } else {
                let rows: Vec<Vec<String>> = versions
                    .iter()
                    .map(|meta| {
                        let pinned: Vec<&str> = pins
                            .labels
                            .iter()
                            .filter(|(_, v)| **v == meta.version)
                            .map(|(l, _)| l.as_str())
                            .collect();
                        vec![
                            meta.version.clone(),
                            meta.base.as_ref().map_or("independent".into(), |b| {
                                format!("{} {}", b.name, b.version)
                            }),
                            meta.lora.map_or("-".into(), |l| format!("r{}", l.rank)),
                            format!("{:.3}", meta.metrics.accuracy),
                            format!("{:.3}", meta.metrics.macro_f1),
                            meta.metrics.rows.to_string(),
                            meta.lineage.dataset.clone(),
                            pinned.join(","),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "VERSION", "BASE", "LORA", "ACCURACY", "MACRO_F1", "HOLDOUT", "DATASET",
                        "PINNED",
                    ],
                    &rows,
                );
            }
        }
        ModelsCommand::Promote {
            tenant,
            name,
            version,
            label,
        } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let pins = registry(store)
                .promote(&name, &version, &label, "promoted from the CLI")
                .await?;
            out.json_or(&pins, |_| format!("{name}: {label} -> {version}"));
        }
        ModelsCommand::Rollback {
            tenant,
            name,
            label,
        } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let pins = registry(store)
                .rollback(&name, &label, "rolled back from the CLI")
                .await?;
            let now = pins.labels.get(&label).cloned().unwrap_or_default();
            out.json_or(&pins, |_| format!("{name}: {label} rolled back to {now}"));
        }
    }
    Ok(())
}

pub fn print_model_bench(out: &Output, report: &tenantry::bench::ModelBenchReport) {
    out.json_or(report, |report| {
        let ours = &report.tenantry;
        let mut text = format!(
            "ngram base: {} corpus rows, trained in {:.1} s; {} threads, training on {}\n",
            report.base_rows, report.base_training_seconds, report.threads, report.device
        );
        let line = |name: &str, side: &tenantry::bench::ModelSide| {
            format!(
                "  {name:<22} fine-tune {:>6} rows {:>7.2} s   macro-F1 {:.4} (accuracy {:.4}, {} test rows)   scoring {:>9.0} rows/s ({} rows, {:.2} s)\n",
                side.train_rows,
                side.finetune_seconds,
                side.macro_f1,
                side.accuracy,
                side.test_rows,
                side.score_rows_per_second,
                side.score_rows,
                side.score_seconds
            )
        };
        text.push_str(&line(
            &format!("tenantry ({} epochs)", report.epochs_run),
            ours,
        ));
        match (&report.sklearn, &report.sklearn_error) {
            (Some(side), _) => {
                text.push_str(&line(
                    &format!(
                        "scikit-learn {}",
                        report.sklearn_version.as_deref().unwrap_or("?")
                    ),
                    side,
                ));
                text.push_str(&format!(
                    "  ratios: fine-tune {:.2}x faster, scoring {:.2}x the rows/s, macro-F1 {:+.4}",
                    report.finetune_speedup.unwrap_or(f64::NAN),
                    report.scoring_ratio.unwrap_or(f64::NAN),
                    report.macro_f1_delta.unwrap_or(f64::NAN)
                ));
            }
            (None, Some(error)) => text.push_str(&format!("  scikit-learn baseline: {error}")),
            (None, None) => text.push_str("  scikit-learn baseline skipped"),
        }
        text
    });
}

pub fn print_serving_bench(out: &Output, report: &tenantry::bench::ServingBenchReport) {
    if out.is_json() {
        print_json(report);
        return;
    }
    let load = &report.load;
    println!(
        "setup: {} tenants onboarded with fine-tuned variants in {:.1} s",
        report.memory_tenants.max(report.tenants),
        report.setup_seconds
    );
    println!(
        "load: {} tenants at {:.0} req/s ({:.1} rows/request): {:.0} ok/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, statuses {:?}, transport errors {}",
        report.tenants,
        report.target_rate,
        report.mean_rows_per_request,
        load.throughput_per_sec,
        load.p50_ms,
        load.p95_ms,
        load.p99_ms,
        load.statuses,
        load.transport_errors
    );
    println!(
        "noisy neighbour at {:.0} req/s (10x its limit; answers {:?}): others' p95 {:.2} ms without, {:.2} ms with ({:+.1}%); p99 {:.2} -> {:.2} ms",
        report.noisy_rate,
        report.noisy_tenant_statuses,
        report.others_without_noisy.p95_ms,
        report.others_with_noisy.p95_ms,
        report.others_p95_increase_pct,
        report.others_without_noisy.p99_ms,
        report.others_with_noisy.p99_ms
    );
    println!(
        "memory: one process serving {} variants: {:.1} MB warm, {:.1} MB with all loaded = {:.1} KB added per variant, {:.1} KB per tenant in all; dedicated single-tenant processes: {:.1} MB each ({} measured)",
        report.memory_tenants,
        report.shared_rss_warm_mb,
        report.shared_rss_all_loaded_mb,
        report.added_kb_per_variant,
        report.shared_kb_per_tenant,
        report.dedicated_kb_per_tenant / 1024.0,
        report.dedicated_rss_mb.len()
    );
    println!(
        "variant cold loads: {} , p50 {:.2} ms, p99 {:.2} ms",
        report.cold_loads, report.cold_load_p50_ms, report.cold_load_p99_ms
    );
}
