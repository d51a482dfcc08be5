//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "tenantry", version, about = "Multi-tenant ML data platform")]
pub struct Cli {
    /// Config file (default: ./tenantry.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the end-to-end demo on embedded defaults.
    Demo,
    /// Run every component in one process: API, every worker pool, reaper, reconciliation.
    Up,
    /// Serve the control-plane API.
    Api,
    /// Serve online predictions (`POST /v1/predict`) alone: a separate serving deployment.
    Serve {
        /// Address to bind (default `[serving] listen`, `TENANTRY_SERVE_LISTEN`, 127.0.0.1:8081).
        #[arg(long)]
        listen: Option<String>,
        /// Print the replica owning this tenant (rendezvous hashing over `[serving] replicas`)
        /// and exit.
        #[arg(long)]
        owner_of: Option<String>,
    },
    /// Run the scheduler role: reconciliation at start, then the lease reaper.
    Scheduler,
    /// Run one worker pool (and a reaper).
    Worker {
        #[arg(long)]
        pool: String,
    },
    /// Re-enqueue every accepted job the queue no longer knows (after Redis lost its state).
    Reconcile,
    /// Jobs of a tenant.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Dead-lettered jobs of a tenant.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Benchmarks (run from a release build).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Tenant onboarding and offboarding.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Platform administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The per-tenant audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Reports: a tenant's invoice for a month.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Pipeline manifests: lint, print the JSON Schema.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Submit a manifest for a tenant: a run, or a schedule when the manifest has one.
    Submit {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
        /// Wait for the run to finish (workers must be running, e.g. `tenantry up`).
        #[arg(long)]
        wait: bool,
    },
    /// Pipeline runs of a tenant.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Outputs of pipeline runs.
    #[command(subcommand)]
    Outputs(OutputsCommand),
    /// Cron schedules of a tenant.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Demo and benchmark data.
    #[command(subcommand)]
    Fixtures(FixturesCommand),
    /// The platform's shared base models (operators): train, list, roll out.
    #[command(subcommand)]
    Model(ModelCommand),
    /// A tenant's models: versions, metrics, pins; promote and roll back.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Train a new version of the shared `ngram` base on the pooled general corpus.
    TrainBase {
        /// Clauses generated per corpus profile.
        #[arg(long, default_value_t = 4_000)]
        rows: usize,
        #[arg(long, default_value_t = 4)]
        epochs: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Publish without making it the base new fine-tunes use.
        #[arg(long)]
        no_current: bool,
    },
    /// List the base versions.
    Bases,
    /// Make base VERSION current and queue a re-fine-tune of every tenant's pinned variant
    /// over it (each pin moves only if the new variant is not worse on its holdout).
    Rollout { version: String },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// A tenant's models with their versions and pins.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Every version of a model: metrics, lineage, promotion decisions; and the pins.
    Show {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Point a label (production by default) at a version.
    Promote {
        #[arg(long)]
        tenant: String,
        name: String,
        version: String,
        #[arg(long, default_value = "production")]
        label: String,
    },
    /// Point a label back at the version it served before its last promotion.
    Rollback {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long, default_value = "production")]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Lint a manifest without submitting it; exits 2 when it is invalid.
    Check { file: PathBuf },
    /// Print the manifest JSON Schema (the source of schemas/manifest.schema.json).
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List a tenant's runs, newest first.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Show a run: each step's state, timings, attempts and outputs.
    Show {
        #[arg(long)]
        tenant: String,
        run: String,
    },
    /// Cancel a run and every step not finished.
    Cancel {
        #[arg(long)]
        tenant: String,
        run: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutputsCommand {
    /// Download every output of a run into DIR/<step>/.
    Get {
        #[arg(long)]
        tenant: String,
        run: String,
        #[arg(long)]
        out: PathBuf,
        /// parquet (default), csv or jsonl for Parquet outputs.
        #[arg(long, default_value = "parquet")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    List {
        #[arg(long)]
        tenant: String,
    },
    Delete {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// Write the deterministic contract-clause datasets of the demo tenants.
    Generate {
        #[arg(long, default_value = "fixtures/generated")]
        out: PathBuf,
        /// Rows per tenant.
        #[arg(long, default_value_t = 2_000)]
        rows: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Onboard a tenant and print its first tenant-admin key (shown once).
    Create {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// List tenants.
    List,
    /// Show one tenant.
    Show { id: String },
    /// Offboard a tenant: delete its data, shred its key, revoke its keys, verify.
    Delete { id: String },
    /// Move a tenant to another plan from now on; this month's invoice bills each plan for
    /// its days (fees and quotas prorated).
    SetPlan { id: String, plan: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue an API key for a tenant (shown once).
    Create(KeyCreateArgs),
    /// List a tenant's keys.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key.
    Revoke {
        #[arg(long)]
        tenant: String,
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    #[arg(long)]
    pub tenant: String,
    /// tenant-admin, developer, viewer or client.
    #[arg(long)]
    pub role: String,
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List a tenant's jobs.
    List {
        #[arg(long)]
        tenant: String,
        /// queued, delayed, running, succeeded, failed, dead_lettered or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show a job and why it is (not) running.
    Show {
        #[arg(long)]
        tenant: String,
        job_id: String,
    },
    /// Cancel a queued or running job.
    Cancel {
        #[arg(long)]
        tenant: String,
        job_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Usage events ingested per second through the serving journal (fdatasync group
    /// commits, duplicates re-sent, Parquet flushes alongside) with exact totals, against one
    /// Parquet file per request; then a month of events rolled up.
    Metering {
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        #[arg(long, default_value_t = 0.1)]
        duplicate_ratio: f64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 5_000)]
        baseline_requests: u64,
        /// Events of the month rolled up (0 skips the rollup).
        #[arg(long, default_value_t = 10_000_000)]
        rollup_events: u64,
    },
    /// Enqueue + lease + ack throughput on Redis with every control on, at several backlogs.
    Queue {
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        backlogs: Vec<u64>,
        #[arg(long, default_value_t = 200_000)]
        jobs: u64,
        #[arg(long, default_value_t = 8)]
        workers: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Skip the apalis-redis baseline.
        #[arg(long)]
        no_baseline: bool,
    },
    /// Fairness with many tenants of mixed weights, a key sprayer and a quiet tenant.
    Fairness {
        /// Use this Redis instead of the in-process backend.
        #[arg(long)]
        redis: Option<String>,
        #[arg(long, default_value_t = 1_000)]
        tenants: usize,
        #[arg(long, default_value_t = 64)]
        slots: usize,
        #[arg(long, default_value_t = 5)]
        windows: u64,
        #[arg(long, default_value_t = 1_000_000)]
        flood: u64,
        #[arg(long, default_value_t = 200)]
        samples: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Largest job cost of the heavy-tailed trace, in milliseconds.
        #[arg(long, default_value_t = 2_000.0)]
        max_cost_ms: f64,
    },
    /// Fine-tune on 10k rows, macro-F1 on held-out rows and scoring rows/s on 1M rows,
    /// against scikit-learn (HashingVectorizer + SGDClassifier) on the same files.
    Model {
        #[arg(long, default_value_t = 10_000)]
        train_rows: usize,
        #[arg(long, default_value_t = 1_000_000)]
        score_rows: usize,
        /// Skip the scikit-learn baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Train on the GPU (a build with `--features gpu`).
        #[arg(long)]
        gpu: bool,
        /// Python interpreter for the scikit-learn baseline.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// The online endpoint from a separate load-generator process: latency at a target rate
    /// over many tenants, a noisy neighbour, memory per tenant against dedicated processes.
    Serving {
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        #[arg(long, default_value_t = 1_000)]
        memory_tenants: usize,
        #[arg(long, default_value_t = 10)]
        dedicated: usize,
        /// Total requests per second of the load run.
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// The serving benchmark's load generator (run by `bench serving` as its own process).
    #[command(hide = true)]
    Loadgen {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate + transform over a generated Parquet dataset, against pandas on the same file.
    Pipeline {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Skip the pandas baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Python interpreter for the pandas baseline.
        #[arg(long, default_value = "python3")]
        python: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Generate (or regenerate: same number, same bytes) a tenant's invoice for a month and
    /// store it as JSON and HTML under the tenant's reports/invoices/.
    Invoice {
        #[arg(long)]
        tenant: String,
        /// `YYYY-MM`.
        #[arg(long)]
        month: String,
    },
    /// Project the tenant's monthly quotas from this month's daily usage; alert (once per
    /// meter and month) when one is projected to run out before the month ends.
    Forecast {
        #[arg(long)]
        tenant: String,
    },
    /// Operators: every tenant's direct cost (measured resources x unit prices from
    /// `[billing.unit_prices]`), its share of the platform's shared cost, revenue and margin
    /// for a month.
    Costs {
        /// `YYYY-MM`.
        #[arg(long)]
        month: String,
    },
    /// Roll up a tenant's usage of a day, ISO week or month (written under usage/rollups/),
    /// with what arrived after the grace period reported.
    Rollup {
        #[arg(long)]
        tenant: String,
        /// `day`, `week` or `month`.
        #[arg(long, default_value = "day")]
        granularity: String,
        /// Any day of the period, `YYYY-MM-DD`.
        #[arg(long)]
        day: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a tenant's dead-lettered jobs.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Put a dead-lettered job back in its queue.
    Redrive {
        #[arg(long)]
        tenant: String,
        job_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a platform-admin key and print it once.
    Init,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify a tenant's hash chain; exits 3 when it is broken.
    Verify {
        #[arg(long)]
        tenant: String,
    },
    /// Print a tenant's audit records.
    Show {
        #[arg(long)]
        tenant: String,
    },
}
