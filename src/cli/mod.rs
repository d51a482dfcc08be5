//! Command-line interface: argument types and dispatch. Operator commands act on the
//! configured storage directly; servers are started from here.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tenantry::audit::Actor;
use tenantry::tenant::{Role, TenantId};
use tenantry::{Platform, Settings};

use output::Output;

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
    /// Run every component in one process (today: the control-plane API).
    Up,
    /// Serve the control-plane API.
    Api,
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

fn parse_tenant(id: &str) -> anyhow::Result<TenantId> {
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
    let platform = Platform::open(settings.clone())
        .await
        .with_context(|| format!("opening storage {}", settings.storage_url))?;
    match cli.command {
        Command::Demo => {
            let summary = tenantry::demo::run_demo(&platform).await?;
            out.demo(&summary);
        }
        Command::Up | Command::Api => {
            let listener = tokio::net::TcpListener::bind(&settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            tenantry::api::serve(listener, platform, tenantry::shutdown::shutdown_signal()).await?;
        }
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
    }
    Ok(ExitCode::SUCCESS)
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
        TenantCommand::Show { id } => out.tenant(&platform.tenant(&parse_tenant(&id)?).await?),
        TenantCommand::Delete { id } => {
            let report = platform.offboard(&parse_tenant(&id)?, operator()).await?;
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
