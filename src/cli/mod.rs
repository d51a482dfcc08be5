//! Command-line interface: argument types and dispatch. Operator commands act on the
//! configured storage directly; servers are started from here.

mod args;
mod models;
mod output;
mod pipeline;

use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;
use tenantry::audit::Actor;
use tenantry::clock::SystemClock;
use tenantry::config::PoolConfig;
use tenantry::jobs::{JobService, open_queues};
use tenantry::queue::QueueState;
use tenantry::tenant::{Role, TenantId};
use tenantry::worker::{PoolRunner, run_reaper};
use tenantry::{Platform, Settings};
use tokio_util::sync::CancellationToken;

pub use args::{
    AdminCommand, AuditCommand, BenchCommand, Cli, Command, DlqCommand, FixturesCommand,
    JobsCommand, KeyCommand, LogFormat, ManifestCommand, ModelCommand, ModelsCommand,
    OutputsCommand, ReportCommand, RunsCommand, SchedulesCommand, TenantCommand,
};
use output::Output;

/// Exit code for a failed verification.
const EXIT_VERIFY_FAILED: u8 = 3;

pub fn init_tracing(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}

pub(crate) fn parse_tenant(id: &str) -> anyhow::Result<TenantId> {
    Ok(TenantId::parse(id)?)
}

fn operator() -> Actor {
    Actor {
        key_id: "cli".to_string(),
        role: "operator".to_string(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref()).context("loading configuration")?;
    let out = Output::new(cli.json);
    // Commands that need no storage.
    let command = match cli.command {
        Command::Manifest(command) => return pipeline::run_manifest(&out, command),
        Command::Fixtures(command) => {
            pipeline::run_fixtures(&out, command)?;
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    let platform = Platform::open(settings.clone())
        .await
        .with_context(|| format!("opening storage {}", settings.storage_url))?;
    match command {
        Command::Demo => {
            let jobs = open_jobs(&platform).await?;
            let summary = tenantry::demo::run_demo(&jobs).await?;
            out.demo(&summary);
        }
        Command::Up => serve(&platform, true, None).await?,
        Command::Api => serve(&platform, false, None).await?,
        Command::Serve { listen, owner_of } => {
            serve_predictions(&platform, &out, listen, owner_of).await?
        }
        Command::Worker { pool } => serve(&platform, false, Some(pool)).await?,
        Command::Scheduler => {
            let jobs = open_jobs(&platform).await?;
            let report = jobs.reconcile().await?;
            tracing::info!(
                requeued = report.requeued,
                checked = report.records_checked,
                "reconciled at start"
            );
            let shutdown = CancellationToken::new();
            let cron = start_pipeline_scheduler(&jobs, shutdown.clone()).await?;
            let reaper = tokio::spawn(run_reaper(jobs, shutdown.clone()));
            tenantry::shutdown::shutdown_signal().await;
            shutdown.cancel();
            let _ = reaper.await;
            let _ = cron.await;
        }
        Command::Reconcile => {
            let jobs = open_jobs(&platform).await?;
            out.json_or(&jobs.reconcile().await?, |report| {
                format!(
                    "checked {} job records of {} tenants: {} requeued, {} already queued",
                    report.records_checked, report.tenants, report.requeued, report.already_queued
                )
            });
        }
        Command::Jobs(command) => run_jobs(&platform, &out, command).await?,
        Command::Bench(command) => run_bench(&out, command).await?,
        Command::Dlq(command) => run_dlq(&platform, &out, command).await?,
        Command::Tenant(command) => run_tenant(&platform, &out, command).await?,
        Command::Key(command) => run_key(&platform, &out, command).await?,
        Command::Admin(AdminCommand::Init) => {
            let issued = platform
                .keys()
                .issue(None, Role::PlatformAdmin, "admin init")
                .await?;
            out.new_key(&issued, "platform-admin key created");
        }
        Command::Audit(command) => return run_audit(&platform, &out, command).await,
        Command::Report(ReportCommand::Forecast { tenant }) => {
            let tenant = parse_tenant(&tenant)?;
            let forecasts = tenantry::billing::service::check_quotas(
                &platform,
                &tenant,
                chrono::Utc::now().date_naive(),
            )
            .await?;
            out.json_or(&forecasts, |forecasts| {
                forecasts
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: {} of {} used this month; {}{}",
                            f.meter.as_str(),
                            f.used,
                            f.quota,
                            serde_json::to_string(&f.projection).unwrap_or_default(),
                            if f.new_alert.is_some() {
                                " (alert raised)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Report(ReportCommand::Rollup {
            tenant,
            granularity,
            day,
        }) => {
            let tenant = parse_tenant(&tenant)?;
            let granularity =
                tenantry::usage::Granularity::parse(&granularity).with_context(|| {
                    format!("--granularity {granularity:?}: expected day, week or month")
                })?;
            let day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .with_context(|| format!("--day {day:?}: expected YYYY-MM-DD"))?;
            let store = platform.tenant_store(&tenant).await?;
            let rollup = tenantry::billing::rollup::roll_up(
                &store,
                granularity,
                day,
                chrono::Utc::now(),
                platform.settings().billing.grace,
            )
            .await?;
            out.json_or(&rollup, |rollup| {
                let mut text = format!(
                    "{} {:?} rollup {}..{} ({})\n",
                    tenant,
                    rollup.granularity,
                    rollup.start,
                    rollup.last,
                    if rollup.is_final {
                        "final"
                    } else {
                        "within the grace period"
                    }
                )
                .to_lowercase();
                let counted = rollup.totals.iter().map(|row| ("", row));
                let late = rollup
                    .late_outside_grace
                    .iter()
                    .map(|row| ("late, not counted: ", row));
                for (label, (meter, total)) in counted.chain(late) {
                    text.push_str(&format!(
                        "  {label}{:<18} {:>20} ({} events)\n",
                        meter.as_str(),
                        tenantry::usage::decimal_string(total.quantity_micros),
                        total.events
                    ));
                }
                text.trim_end().to_string()
            });
        }
        Command::Report(ReportCommand::Costs { month }) => {
            let prices = platform.settings().billing.unit_prices.clone();
            let report =
                tenantry::billing::service::cost_report(&platform, &month, &prices).await?;
            out.json_or(&report, |report| {
                let mut text = format!(
                    "costs for {} (USD; {}):\n  {:<24} {:>12} {:>12} {:>12} {:>12} {:>12}\n",
                    report.period,
                    report.method,
                    "TENANT",
                    "DIRECT",
                    "SHARED",
                    "TOTAL",
                    "REVENUE",
                    "MARGIN"
                );
                for row in &report.tenants {
                    text.push_str(&format!(
                        "  {:<24} {:>12} {:>12} {:>12} {:>12} {:>12}\n",
                        row.tenant, row.direct, row.shared, row.total, row.revenue, row.margin
                    ));
                }
                text.push_str(&format!(
                    "  {:<24} {:>12} {:>12} {:>12} {:>12} {:>12}",
                    "all",
                    report.direct,
                    report.shared,
                    report.direct + report.shared,
                    report.revenue,
                    report.margin
                ));
                text
            });
        }
        Command::Report(ReportCommand::Invoice { tenant, month }) => {
            let tenant = parse_tenant(&tenant)?;
            let invoice = tenantry::billing::service::generate_invoice(
                &platform,
                &tenant,
                &month,
                chrono::Utc::now(),
            )
            .await?;
            out.json_or(&invoice, |invoice| {
                let mut text = format!(
                    "invoice {} for {} ({}), plans: {}\n",
                    invoice.number,
                    invoice.tenant,
                    invoice.period,
                    invoice.plans.join(", ")
                );
                for line in &invoice.lines {
                    text.push_str(&format!(
                        "  {:<48} {:>16} {:>12} {}\n",
                        line.description,
                        line.quantity.normalize(),
                        line.amount,
                        invoice.currency
                    ));
                }
                if !invoice.minimum_true_up.is_zero() {
                    text.push_str(&format!(
                        "  {:<48} {:>16} {:>12} {}\n",
                        "monthly minimum true-up", "", invoice.minimum_true_up, invoice.currency
                    ));
                }
                text.push_str(&format!(
                    "  total {} {} (stored under tenants/{}/reports/invoices/{}.json and .html)",
                    invoice.total, invoice.currency, invoice.tenant, invoice.period
                ));
                text
            });
        }
        Command::Submit { tenant, file, wait } => {
            return pipeline::run_submit(&platform, &out, &tenant, &file, wait).await;
        }
        Command::Runs(command) => pipeline::run_runs(&platform, &out, command).await?,
        Command::Outputs(command) => pipeline::run_outputs(&platform, &out, command).await?,
        Command::Schedules(command) => pipeline::run_schedules(&platform, &out, command).await?,
        Command::Model(command) => models::run_model(&platform, &out, command).await?,
        Command::Models(command) => models::run_models(&platform, &out, command).await?,
        Command::Manifest(_) | Command::Fixtures(_) => unreachable!("handled before storage opens"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenantry serve`: the serving endpoint alone, with usage flushed at shutdown.
async fn serve_predictions(
    platform: &Platform,
    out: &Output,
    listen: Option<String>,
    owner_of: Option<String>,
) -> anyhow::Result<()> {
    let settings = platform.settings().clone();
    if let Some(tenant) = owner_of {
        let tenant = TenantId::parse(&tenant)?;
        let owner = tenantry::serving::ring::owner(&settings.serving.replicas, &tenant)
            .unwrap_or(&settings.serving.replica)
            .to_string();
        out.json_or(
            &serde_json::json!({"tenant": tenant, "replica": owner}),
            |_| owner.clone(),
        );
        return Ok(());
    }
    let address = listen.unwrap_or(settings.serve_listen.clone());
    let serving = tenantry::serving::Serving::start(
        platform.clone(),
        settings.serving.clone(),
        std::sync::Arc::new(tenantry::clock::SystemClock),
    )
    .context("opening the usage journal")?;
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(addr = %listener.local_addr()?, replica = %settings.serving.replica, "serving predictions");
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, tenantry::serving::routes::router(serving.clone()))
        .with_graceful_shutdown(tenantry::shutdown::shutdown_signal())
        .await?;
    let report = serving
        .flush_usage()
        .await
        .context("serving usage left in the journal for the next start")?;
    tracing::info!(events = report.events, "serving usage flushed");
    Ok(())
}

pub(crate) async fn open_jobs(platform: &Platform) -> anyhow::Result<JobService> {
    let settings = platform.settings();
    let queues = open_queues(settings)
        .await
        .with_context(|| format!("opening the queue at {}", settings.queue_url))?;
    Ok(JobService::new(
        platform.clone(),
        queues,
        settings.pools.clone(),
        Arc::new(SystemClock),
    ))
}

/// Releases steps of unfinished pipeline runs (a crash between a step's success and the
/// release of the next), then fires cron schedules every second and the billing cron
/// (storage samples, rollups, invoices) every five, until `shutdown`.
async fn start_pipeline_scheduler(
    jobs: &JobService,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tenantry::billing::cron::BillingCron;
    use tenantry::pipeline::{CronLock, CronScheduler, PipelineService};
    let settings = jobs.platform().settings().clone();
    let pipelines = PipelineService::new(jobs.clone());
    let released = pipelines.reconcile_runs().await?;
    tracing::info!(released, "pipeline runs reconciled at start");
    let lock = if settings.queue_url.starts_with("redis://") {
        CronLock::redis(&settings.queue_url, &settings.queue_namespace)
            .await
            .context("connecting the cron lock to redis")?
    } else {
        CronLock::local()
    };
    let scheduler = CronScheduler::new(pipelines, lock, Arc::new(SystemClock));
    let billing = settings
        .billing
        .cron
        .then(|| BillingCron::new(jobs.clone(), Arc::new(SystemClock)));
    Ok(tokio::spawn(async move {
        let pipelines = scheduler.run(std::time::Duration::from_secs(1), shutdown.clone());
        match billing {
            Some(billing) => {
                let billing = billing.run(std::time::Duration::from_secs(5), shutdown);
                tokio::join!(pipelines, billing);
            }
            None => pipelines.await,
        }
    }))
}

/// Runs the API (unless `only_pool` is set), worker pools (all with `with_workers`, or the one
/// named) and the reaper, until ctrl-c or SIGTERM; then drains.
async fn serve(
    platform: &Platform,
    with_workers: bool,
    only_pool: Option<String>,
) -> anyhow::Result<()> {
    let settings = platform.settings().clone();
    let jobs = open_jobs(platform).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let pools: Vec<PoolConfig> = match &only_pool {
        Some(name) => vec![
            settings
                .pools
                .iter()
                .find(|pool| &pool.name == name)
                .cloned()
                .with_context(|| format!("no pool named {name:?} in the configuration"))?,
        ],
        None if with_workers => settings.pools.clone(),
        None => Vec::new(),
    };
    if with_workers {
        let report = jobs.reconcile().await?;
        tracing::info!(requeued = report.requeued, "reconciled at start");
        let cron = start_pipeline_scheduler(&jobs, shutdown.clone()).await?;
        tasks.spawn(async move {
            let _ = cron.await;
            Ok(())
        });
    }
    let handlers = tenantry::pipeline::handler_registry(settings.diagnostic_jobs);
    for pool in pools.iter().cloned() {
        let worker_id = format!(
            "{}-{}-{}",
            pool.name,
            std::process::id(),
            uuid::Uuid::now_v7()
        );
        let runner = PoolRunner::new(jobs.clone(), pool, handlers.clone(), worker_id);
        let token = shutdown.clone();
        tasks.spawn(async move {
            runner
                .run_configured(token)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if !pools.is_empty() {
        let (jobs, token) = (jobs.clone(), shutdown.clone());
        tasks.spawn(async move {
            run_reaper(jobs, token).await;
            Ok(())
        });
    }
    if only_pool.is_none() {
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let (jobs, token) = (jobs.clone(), shutdown.clone());
        tasks.spawn(async move {
            tenantry::api::serve(listener, jobs, async move { token.cancelled().await })
                .await
                .map_err(anyhow::Error::from)
        });
    }
    tenantry::shutdown::shutdown_signal().await;
    shutdown.cancel();
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

async fn run_bench(out: &Output, command: BenchCommand) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        tracing::warn!("benchmarks from a debug build are not representative; use --release");
    }
    match command {
        BenchCommand::Queue {
            redis,
            backlogs,
            jobs,
            workers,
            batch,
            tenants,
            no_baseline,
        } => {
            let options = tenantry::bench::QueueBenchOptions {
                redis_url: redis,
                backlogs,
                jobs,
                workers,
                batch,
                tenants,
                baseline: !no_baseline,
            };
            out.bench_queue(&tenantry::bench::run_queue_bench(&options).await?);
        }
        BenchCommand::Fairness {
            redis,
            tenants,
            slots,
            windows,
            flood,
            samples,
            seed,
            max_cost_ms,
        } => {
            let options = tenantry::bench::FairnessOptions {
                redis_url_opt: redis,
                tenants,
                slots,
                windows,
                flood_jobs: flood,
                quiet_samples: samples,
                seed,
                max_cost_ms,
            };
            out.bench_fairness(&tenantry::bench::run_fairness(&options).await?);
        }
        BenchCommand::Pipeline {
            rows,
            no_baseline,
            python,
        } => {
            let python_opt = (!no_baseline).then_some(python);
            let report = tokio::task::spawn_blocking(move || {
                tenantry::bench::run_pipeline_bench(rows, python_opt.as_deref())
            })
            .await?
            .map_err(anyhow::Error::msg)?;
            pipeline::print_pipeline_bench(out, &report);
        }
        BenchCommand::Serving {
            tenants,
            memory_tenants,
            dedicated,
            rate,
            seconds,
        } => {
            let options = tenantry::bench::ServingBenchOptions {
                tenants,
                memory_tenants,
                dedicated,
                rate,
                seconds,
            };
            let report = tenantry::bench::run_serving_bench(&options)
                .await
                .map_err(anyhow::Error::msg)?;
            models::print_serving_bench(out, &report);
        }
        BenchCommand::Metering {
            requests,
            tenants,
            duplicate_ratio,
            concurrency,
            baseline_requests,
            rollup_events,
        } => {
            let options = tenantry::bench::MeteringBenchOptions {
                requests,
                tenants,
                duplicate_ratio: duplicate_ratio.clamp(0.0, 1.0),
                concurrency: concurrency.max(1),
                baseline_requests,
                rollup_events,
            };
            let report = tenantry::bench::run_metering_bench(&options)
                .await
                .map_err(anyhow::Error::msg)?;
            out.json_or(&report, |r| {
                let run = |run: &tenantry::bench::metering::IngestRun| {
                    format!(
                        "{}: {} requests, {} events sent ({} unique) in {:.2} s = {:.0} events/s, totals exact: {}",
                        run.method,
                        run.requests,
                        run.events_sent,
                        run.unique_events,
                        run.seconds,
                        run.events_per_second,
                        run.exact
                    )
                };
                let mut text = format!(
                    "{}\n{}\njournal / write-through: {:.1}x",
                    run(&r.journal),
                    run(&r.write_through),
                    r.ratio
                );
                if let Some(rollup) = &r.rollup {
                    text.push_str(&format!(
                        "\nrollup of a month of {} events in {} files: {:.2} s ({:.0} events/s); 31 day rollups {:.2} s; days add up to the month: {}; totals exact: {} (generated in {:.1} s)",
                        rollup.events,
                        rollup.files,
                        rollup.month_seconds,
                        rollup.month_events_per_second,
                        rollup.days_seconds,
                        rollup.days_sum_to_month,
                        rollup.exact,
                        rollup.generate_seconds
                    ));
                }
                text
            });
        }
        BenchCommand::Loadgen { plan, out: path } => {
            let plan: tenantry::bench::loadgen::LoadPlan =
                serde_json::from_slice(&std::fs::read(&plan)?)?;
            let result = tenantry::bench::loadgen::run_load(plan).await;
            std::fs::write(&path, serde_json::to_vec(&result)?)?;
        }
        BenchCommand::Model {
            train_rows,
            score_rows,
            no_baseline,
            gpu,
            python,
        } => {
            let python_opt = (!no_baseline).then_some(python);
            let report = tokio::task::spawn_blocking(move || {
                tenantry::bench::run_model_bench(train_rows, score_rows, python_opt.as_deref(), gpu)
            })
            .await?
            .map_err(anyhow::Error::msg)?;
            models::print_model_bench(out, &report);
        }
    }
    Ok(())
}

fn parse_state(text: Option<&str>) -> anyhow::Result<Option<QueueState>> {
    text.map(|t| QueueState::parse(t).with_context(|| format!("unknown job state {t:?}")))
        .transpose()
}

async fn run_jobs(platform: &Platform, out: &Output, command: JobsCommand) -> anyhow::Result<()> {
    let jobs = open_jobs(platform).await?;
    match command {
        JobsCommand::List { tenant, state } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            out.jobs(&jobs.list(&store, parse_state(state.as_deref())?).await?);
        }
        JobsCommand::Show { tenant, job_id } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let record = jobs.get(&store, &job_id).await?;
            let explain = jobs.explain(&store, &job_id).await?;
            out.job(&record, explain.as_ref());
        }
        JobsCommand::Cancel { tenant, job_id } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let record = jobs.cancel(&store, &job_id).await?;
            out.job(&record, None);
        }
    }
    Ok(())
}

async fn run_dlq(platform: &Platform, out: &Output, command: DlqCommand) -> anyhow::Result<()> {
    let jobs = open_jobs(platform).await?;
    match command {
        DlqCommand::List { tenant } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            out.dead_letters(&jobs.dead_letters(&store).await?);
        }
        DlqCommand::Redrive { tenant, job_id } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            anyhow::ensure!(
                jobs.redrive(&store, &job_id).await?,
                "job {job_id} is not dead-lettered"
            );
            out.message(&format!("job {job_id} redriven"));
        }
    }
    Ok(())
}

async fn run_tenant(
    platform: &Platform,
    out: &Output,
    command: TenantCommand,
) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { id, name, plan } => {
            let id = parse_tenant(&id)?;
            let report = platform.onboard(&id, &name, &plan, operator()).await?;
            out.onboarded(&report);
        }
        TenantCommand::List => out.tenants(&platform.list_tenants().await?),
        TenantCommand::SetPlan { id, plan } => {
            let id = parse_tenant(&id)?;
            let record = platform
                .change_plan(&id, &plan, chrono::Utc::now(), operator())
                .await?;
            out.tenant(&record);
        }
        TenantCommand::Show { id } => out.tenant(&platform.tenant(&parse_tenant(&id)?).await?),
        TenantCommand::Delete { id } => {
            let id = parse_tenant(&id)?;
            platform.tenant(&id).await?;
            let cancelled = open_jobs(platform).await?.forget_tenant(&id).await?;
            tracing::info!(tenant = %id, cancelled, "queue state of the tenant dropped");
            let report = platform.offboard(&id, operator()).await?;
            out.offboarded(&report);
            anyhow::ensure!(
                report.verified_clean,
                "offboarding left data or keys behind"
            );
        }
    }
    Ok(())
}

async fn run_key(platform: &Platform, out: &Output, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create(args) => {
            let tenant = parse_tenant(&args.tenant)?;
            let role = Role::parse(&args.role)
                .filter(|role| *role != Role::PlatformAdmin)
                .with_context(|| {
                    format!(
                        "unknown role {:?} (tenant-admin, developer, viewer, client)",
                        args.role
                    )
                })?;
            let store = platform.active_tenant_store(&tenant).await?;
            let issued = platform
                .keys()
                .issue(Some(&tenant), role, &args.label)
                .await?;
            platform
                .record_audit(
                    &store,
                    operator(),
                    "key.create",
                    format!("key/{}", issued.key_id),
                    "ok",
                )
                .await?;
            out.new_key(&issued, "key created");
        }
        KeyCommand::List { tenant } => {
            out.keys(&platform.keys().list(&parse_tenant(&tenant)?).await?)
        }
        KeyCommand::Revoke { tenant, key_id } => {
            let tenant = parse_tenant(&tenant)?;
            anyhow::ensure!(
                platform.keys().revoke(&tenant, &key_id).await?,
                "tenant {tenant} has no key {key_id}"
            );
            out.message(&format!("key {key_id} revoked"));
        }
    }
    Ok(())
}

async fn run_audit(
    platform: &Platform,
    out: &Output,
    command: AuditCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { tenant } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            let report = platform.audit().verify(&store).await?;
            out.audit_verification(&report);
            if !report.is_intact() {
                return Ok(ExitCode::from(EXIT_VERIFY_FAILED));
            }
        }
        AuditCommand::Show { tenant } => {
            let store = platform.tenant_store(&parse_tenant(&tenant)?).await?;
            out.audit_records(&platform.audit().read(&store).await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
