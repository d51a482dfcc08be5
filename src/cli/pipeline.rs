//! Pipeline commands: manifest lint and schema, submit, runs, outputs, schedules, fixtures.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tenantry::Platform;
use tenantry::bench::PipelineBenchReport;
use tenantry::dataset::{DatasetFormat, from_parquet};
use tenantry::manifest::{json_schema, parse_manifest};
use tenantry::pipeline::cron::{delete_schedule, list_schedules, register_schedule};
use tenantry::pipeline::{PipelineService, RunState, RunView};
use tenantry::storage::RelativePath;

use crate::cli::output::{Output, print_table};
use crate::cli::{FixturesCommand, ManifestCommand, OutputsCommand, RunsCommand, SchedulesCommand};
use crate::cli::{open_jobs, parse_tenant};

/// Exit code of `manifest check` on an invalid manifest.
const EXIT_INVALID_MANIFEST: u8 = 2;

fn read_manifest_file(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// `manifest check|schema`: needs no storage.
pub fn run_manifest(out: &Output, command: ManifestCommand) -> anyhow::Result<ExitCode> {
    match command {
        ManifestCommand::Schema => {
            print!("{}", json_schema());
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Check { file } => {
            let text = read_manifest_file(&file)?;
            match parse_manifest(&text) {
                Ok(manifest) => {
                    let order: Vec<String> = manifest
                        .order
                        .iter()
                        .map(|&index| manifest.spec.steps[index].id.clone())
                        .collect();
                    out.json_or(
                        &serde_json::json!({"valid": true, "file": file, "order": order, "schedule": manifest.spec.schedule}),
                        |_| format!("{}: valid; steps in order: {}", file.display(), order.join(" -> ")),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    if out.is_json() {
                        crate::cli::output::print_json(
                            &serde_json::json!({"valid": false, "file": file, "issues": error.issues}),
                        );
                    } else {
                        for issue in &error.issues {
                            eprintln!(
                                "{}:{}:{}: {} ({})",
                                file.display(),
                                issue.line,
                                issue.column,
                                issue.message,
                                if issue.pointer.is_empty() {
                                    "/"
                                } else {
                                    &issue.pointer
                                }
                            );
                        }
                    }
                    Ok(ExitCode::from(EXIT_INVALID_MANIFEST))
                }
            }
        }
    }
}

fn print_run(out: &Output, run: &RunView) {
    out.json_or(run, |run| {
        let mut text = format!(
            "run {} of {} ({}): {}\n",
            run.run_id,
            run.pipeline,
            run.created_at.format("%Y-%m-%d %H:%M:%S"),
            format!("{:?}", run.state).to_lowercase()
        );
        for step in &run.steps {
            let seconds = match (step.started_at, step.finished_at) {
                (Some(start), Some(end)) => {
                    format!("{:.2}s", (end - start).num_milliseconds() as f64 / 1000.0)
                }
                _ => "-".into(),
            };
            text.push_str(&format!(
                "  {:<16} {:<10} {:<10} attempts {} time {}{}\n",
                step.id,
                step.stage,
                format!("{:?}", step.state).to_lowercase(),
                step.attempts,
                seconds,
                if step.needs.is_empty() {
                    String::new()
                } else {
                    format!(" needs [{}]", step.needs.join(", "))
                },
            ));
            if let Some(reason) = &step.reason {
                text.push_str(&format!("      {reason}\n"));
            }
            if let Some(progress) = &step.progress {
                text.push_str(&format!("      progress {}\n", progress_line(progress)));
            }
            for output in &step.outputs {
                text.push_str(&format!("      -> {output}\n"));
            }
        }
        text.trim_end().to_string()
    });
}

/// `epoch 3/30 loss 0.412 accuracy 0.913`, `partitions 2/4`, or the raw JSON.
pub(crate) fn progress_line(progress: &serde_json::Value) -> String {
    if let Some(epoch) = progress["epoch"].as_u64() {
        return format!(
            "epoch {epoch}/{} loss {:.3} accuracy {:.3}",
            progress["epochs"].as_u64().unwrap_or(0),
            progress["loss"].as_f64().unwrap_or(f64::NAN),
            progress["accuracy"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(total) = progress["partitions"].as_u64() {
        return format!(
            "partitions {}/{total}",
            progress["partitions_done"].as_u64().unwrap_or(0)
        );
    }
    progress.to_string()
}

pub async fn run_submit(
    platform: &Platform,
    out: &Output,
    tenant: &str,
    file: &Path,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let text = read_manifest_file(file)?;
    let manifest = match parse_manifest(&text) {
        Ok(manifest) => manifest,
        Err(error) => {
            for issue in &error.issues {
                eprintln!(
                    "{}:{}:{}: {}",
                    file.display(),
                    issue.line,
                    issue.column,
                    issue.message
                );
            }
            return Ok(ExitCode::from(EXIT_INVALID_MANIFEST));
        }
    };
    let store = platform.active_tenant_store(&parse_tenant(tenant)?).await?;
    let pipelines = PipelineService::new(open_jobs(platform).await?);
    if manifest.spec.schedule.is_some() {
        let (record, next) =
            register_schedule(platform.system(), &store, &manifest, chrono::Utc::now()).await?;
        out.json_or(
            &serde_json::json!({"schedule": record.name, "cron": record.cron, "next_run": next}),
            |_| {
                format!(
                    "schedule {} registered ({}); next run {}",
                    record.name,
                    record.cron,
                    next.map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into())
                )
            },
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut run = pipelines.submit(&store, &manifest).await?;
    while wait && run.state == RunState::Running {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        run = pipelines.view(&store, &run.run_id).await?;
    }
    print_run(out, &run);
    Ok(if run.state == RunState::Failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn run_runs(
    platform: &Platform,
    out: &Output,
    command: RunsCommand,
) -> anyhow::Result<()> {
    let pipelines = PipelineService::new(open_jobs(platform).await?);
    match command {
        RunsCommand::List { tenant } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let runs = pipelines.list(&store).await?;
            if out.is_json() {
                crate::cli::output::print_json(&runs);
            } else {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|run| {
                        vec![
                            run.run_id.clone(),
                            run.pipeline.clone(),
                            format!("{:?}", run.state).to_lowercase(),
                            run.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            run.steps.len().to_string(),
                        ]
                    })
                    .collect();
                print_table(&["RUN", "PIPELINE", "STATE", "CREATED", "STEPS"], &rows);
            }
        }
        RunsCommand::Show { tenant, run } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            print_run(out, &pipelines.view(&store, &run).await?);
        }
        RunsCommand::Cancel { tenant, run } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            print_run(out, &pipelines.cancel(&store, &run).await?);
        }
    }
    Ok(())
}

pub async fn run_outputs(
    platform: &Platform,
    out: &Output,
    command: OutputsCommand,
) -> anyhow::Result<()> {
    let OutputsCommand::Get {
        tenant,
        run,
        out: dir,
        format,
    } = command;
    let format =
        DatasetFormat::parse(&format).with_context(|| format!("unknown format {format:?}"))?;
    let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
    let pipelines = PipelineService::new(open_jobs(platform).await?);
    let prefix = format!("outputs/{run}/");
    let mut written = Vec::new();
    for entry in pipelines.outputs(&store, &run).await? {
        let Some(relative) = entry.path.strip_prefix(&prefix) else {
            continue;
        };
        let bytes = store.get(&RelativePath::parse(&entry.path)?).await?;
        let (bytes, relative) = match relative.strip_suffix(".parquet") {
            Some(stem) if format != DatasetFormat::Parquet => (
                from_parquet(&bytes, format).map_err(anyhow::Error::msg)?,
                format!("{stem}.{}", format.as_str()),
            ),
            _ => (bytes.to_vec(), relative.to_string()),
        };
        let target = dir.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, &bytes).with_context(|| format!("writing {}", target.display()))?;
        written.push(target.display().to_string());
    }
    out.json_or(&written, |files| {
        format!("{} files written:\n  {}", files.len(), files.join("\n  "))
    });
    Ok(())
}

pub async fn run_schedules(
    platform: &Platform,
    out: &Output,
    command: SchedulesCommand,
) -> anyhow::Result<()> {
    match command {
        SchedulesCommand::List { tenant } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let now = chrono::Utc::now();
            let rows: Vec<serde_json::Value> = list_schedules(&store)
                .await?
                .iter()
                .map(|s| serde_json::json!({"name": s.name, "cron": s.cron, "next_run": s.next_after(now.max(s.not_before))}))
                .collect();
            out.json_or(&rows, |rows| {
                rows.iter()
                    .map(|r| format!("{} {} next {}", r["name"], r["cron"], r["next_run"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SchedulesCommand::Delete { tenant, name } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            delete_schedule(platform.system(), &store, &name).await?;
            out.message(&format!("schedule {name} deleted"));
        }
    }
    Ok(())
}

/// `fixtures generate`: needs no storage.
pub fn run_fixtures(out: &Output, command: FixturesCommand) -> anyhow::Result<()> {
    let FixturesCommand::Generate {
        out: dir,
        rows,
        seed,
    } = command;
    let mut written = Vec::new();
    for profile in &tenantry::fixtures::PROFILES {
        let (bytes, format) =
            tenantry::fixtures::source_bytes(profile, rows, seed).map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let target = dir.join(format!("{}-clauses.{}", profile.tenant, format.as_str()));
        std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
        written.push(target.display().to_string());
    }
    out.json_or(&written, |files| {
        format!(
            "{} rows per tenant, seed {seed}:\n  {}",
            rows,
            files.join("\n  ")
        )
    });
    Ok(())
}

/// Prints `bench pipeline` figures.
pub fn print_pipeline_bench(out: &Output, report: &PipelineBenchReport) {
    out.json_or(report, |report| {
            let mut text = format!(
                "validate + transform, {} rows ({:.1} MB Parquet), read to write:\n",
                report.rows,
                report.input_bytes as f64 / 1e6
            );
            for (index, run) in report.tenantry.iter().enumerate() {
                let phases: Vec<String> = run
                .phases
                .iter()
                .map(|(name, seconds)| format!("{name} {seconds:.2}"))
                .collect();
            text.push_str(&format!(
                "  tenantry run {}: {:.3} s  {:>12.0} rows/s  (errors {}, out {}; {})\n",
                index + 1,
                run.seconds,
                run.rows_per_second,
                run.error_rows,
                run.rows_out,
                phases.join(", ")
            ));
            }
            match (&report.pandas, &report.pandas_error) {
                (Some(run), _) => text.push_str(&format!(
                    "  pandas {}:    {:.3} s  {:>12.0} rows/s  (errors {}, out {})\n  ratio (best tenantry / pandas): {:.1}x; same results: {}",
                    report.pandas_version.as_deref().unwrap_or("?"),
                    run.seconds,
                    run.rows_per_second,
                    run.error_rows,
                    run.rows_out,
                    report.ratio.unwrap_or(f64::NAN),
                    report.same_results.unwrap_or(false)
                )),
                (None, Some(error)) => text.push_str(&format!("  pandas baseline: {error}")),
                (None, None) => text.push_str("  pandas baseline skipped"),
            }
            text
        });
}
