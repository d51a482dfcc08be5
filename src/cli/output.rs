//! Human and JSON renderings of command results (stdout only; logs go to stderr).

use serde::Serialize;
use tenantry::audit::{AuditRecord, AuditVerification};
use tenantry::bench::{FairnessReport, QueueBenchReport};
use tenantry::demo::DemoSummary;
use tenantry::jobs::JobRecord;
use tenantry::queue::{DeadLetter, Explanation};
use tenantry::tenant::{IssuedKey, KeyRecord, OffboardReport, OnboardReport, TenantRecord};

pub struct Output {
    json: bool,
}

pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot render json: {error}"),
    }
}

/// Prints rows as a left-aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.clone());
    }
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn message(&self, text: &str) {
        if self.json {
            print_json(&serde_json::json!({ "message": text }));
        } else {
            println!("{text}");
        }
    }

    /// JSON in `--json` mode, otherwise the given one-line rendering.
    pub fn json_or<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            print_json(value);
        } else {
            println!("{}", human(value));
        }
    }

    pub fn bench_queue(&self, report: &QueueBenchReport) {
        if self.json {
            print_json(report);
            return;
        }
        println!(
            "{}: {} workers, batch {}, {} tenants (weights, caps, rate limits, bands, groups on)",
            report.implementation, report.workers, report.batch, report.tenants
        );
        let rows: Vec<Vec<String>> = report
            .runs
            .iter()
            .map(|r| {
                let apalis = match &r.apalis_opt {
                    None => "not run".to_string(),
                    Some(run) => match &run.error_opt {
                        Some(error) => format!("failed: {error}"),
                        None => format!("{:.0}", run.jobs_per_sec),
                    },
                };
                vec![
                    r.backlog.to_string(),
                    r.jobs.to_string(),
                    format!("{:.2}", r.seconds),
                    format!("{:.0}", r.jobs_per_sec),
                    apalis,
                    r.ratio_opt
                        .map(|x| format!("{x:.2}x"))
                        .unwrap_or_else(|| "-".to_string()),
                ]
            })
            .collect();
        print_table(
            &[
                "BACKLOG",
                "JOBS",
                "SECONDS",
                "TENANTRY JOBS/S",
                "APALIS-REDIS JOBS/S",
                "RATIO",
            ],
            &rows,
        );
        for run in &report.runs {
            let calls: Vec<String> = run
                .redis
                .top_calls
                .iter()
                .map(|(command, per_job)| format!("{command} {per_job:.2}"))
                .collect();
            println!(
                "backlog {}: Redis {:.0}% busy, {:.1} us of script and {:.1} calls per job ({})",
                run.backlog,
                run.redis.cpu_share * 100.0,
                run.redis.script_usec_per_job,
                run.redis.calls_per_job,
                calls.join(", ")
            );
        }
        println!(
            "10k-job burst in one call: {} dispatched in {:.3} s",
            report.burst_10k_dispatched, report.burst_10k_seconds
        );
    }

    pub fn bench_fairness(&self, report: &FairnessReport) {
        if self.json {
            print_json(report);
            return;
        }
        println!(
            "{} tenants on {} slots ({} backend), {} dispatches, job costs 5 ms to {} ms (Pareto 1.5)",
            report.tenants, report.slots, report.backend, report.dispatches, report.max_cost_ms
        );
        let windows: Vec<String> = report
            .jain_per_window
            .iter()
            .map(|j| format!("{j:.4}"))
            .collect();
        println!(
            "Jain index of cost/weight per 60 s window: {} (min {:.4})",
            windows.join(" "),
            report.jain_min
        );
        println!(
            "largest normalised lag: {:.3} cost-seconds per unit weight",
            report.max_normalised_lag
        );
        println!(
            "key-spraying tenant's share / fair share: {:.3}",
            report.sprayer_share_ratio
        );
        println!(
            "quiet tenant first-job wait behind a {}-job flood: p50 {:.3} ms, p99 {:.3} ms",
            report.flood_jobs, report.quiet_wait_ms_p50, report.quiet_wait_ms_p99
        );
    }

    pub fn jobs(&self, jobs: &[JobRecord]) {
        if self.json {
            print_json(&jobs);
            return;
        }
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.job_id.clone(),
                    j.kind.clone(),
                    j.pool.clone(),
                    j.state.as_str().to_string(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    j.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(
            &[
                "JOB", "KIND", "POOL", "STATE", "ATTEMPTS", "CREATED", "ERROR",
            ],
            &rows,
        );
    }

    pub fn job(&self, job: &JobRecord, explain: Option<&Explanation>) {
        if self.json {
            print_json(&serde_json::json!({"job": job, "explain": explain}));
            return;
        }
        println!(
            "job {} ({}) of tenant {} on pool {}",
            job.job_id, job.kind, job.tenant, job.pool
        );
        println!(
            "state {}, attempt {}/{}, band {:?}",
            job.state.as_str(),
            job.attempts,
            job.max_attempts,
            job.band
        );
        if let Some(error) = &job.error {
            println!("last error: {error}");
        }
        if let Some(output) = &job.output_location {
            println!("output: {output}");
        }
        if let Some(progress) = &job.progress {
            println!(
                "progress: {}",
                crate::cli::pipeline::progress_line(progress)
            );
        }
        if let Some(continuation) = &job.continuation {
            println!(
                "fanned out into {} partition job(s), merged by {}",
                continuation.parts.len(),
                continuation.merge
            );
        }
        if let Some(explain) = explain {
            if let Some(position) = explain.position_opt {
                println!("position in the tenant's queue: {position}");
            }
            println!("blocked by: {} ({})", explain.blocked_by, explain.detail);
        }
    }

    pub fn dead_letters(&self, letters: &[DeadLetter]) {
        if self.json {
            print_json(&letters);
            return;
        }
        for letter in letters {
            println!(
                "{} ({}): {} attempts",
                letter.job_id,
                letter.kind,
                letter.attempts.len()
            );
            for attempt in &letter.attempts {
                println!(
                    "  #{} at {} ms: {}",
                    attempt.attempt, attempt.at_ms, attempt.error
                );
            }
        }
    }

    pub fn new_key(&self, key: &IssuedKey, what: &str) {
        if self.json {
            print_json(&serde_json::json!({
                "key_id": key.key_id,
                "token": key.token.expose(),
                "role": key.role,
                "tenant": key.tenant,
            }));
            return;
        }
        println!("{what}: {} ({})", key.key_id, key.role.as_str());
        println!("token (shown once, store it now): {}", key.token.expose());
    }

    pub fn onboarded(&self, report: &OnboardReport) {
        if self.json {
            print_json(&serde_json::json!({
                "tenant": report.tenant,
                "admin_key": {
                    "key_id": report.admin_key.key_id,
                    "token": report.admin_key.token.expose(),
                    "role": report.admin_key.role,
                },
                "onboarding_ms": report.elapsed_ms,
                "smoke_check_ms": report.smoke_check_ms,
            }));
            return;
        }
        let tenant = &report.tenant;
        println!(
            "tenant {} ({}) is active on plan {} (weight {}, {} req/s)",
            tenant.id,
            tenant.name,
            tenant.plan.name,
            tenant.plan.weight,
            tenant.plan.rate_limit_per_sec
        );
        println!(
            "onboarded in {:.1} ms (smoke check {:.1} ms)",
            report.elapsed_ms, report.smoke_check_ms
        );
        println!(
            "tenant-admin key {} (shown once, store it now): {}",
            report.admin_key.key_id,
            report.admin_key.token.expose()
        );
    }

    pub fn offboarded(&self, report: &OffboardReport) {
        if self.json {
            print_json(report);
            return;
        }
        println!(
            "tenant {} offboarded in {:.1} ms: {} objects deleted, {} keys revoked, data key {} destroyed",
            report.tenant,
            report.elapsed_ms,
            report.objects_deleted,
            report.keys_revoked,
            report.dek_fingerprint
        );
        println!(
            "verification: {} objects left, {} active keys left, key destroyed: {} -> {}",
            report.remaining_objects,
            report.active_keys_remaining,
            report.dek_destroyed,
            if report.verified_clean {
                "nothing remains"
            } else {
                "NOT CLEAN"
            }
        );
        println!("tombstone: {}", report.tombstone);
    }

    pub fn tenants(&self, tenants: &[TenantRecord]) {
        if self.json {
            print_json(&tenants);
            return;
        }
        let rows: Vec<Vec<String>> = tenants
            .iter()
            .map(|t| {
                vec![
                    t.id.to_string(),
                    t.name.clone(),
                    t.plan.name.clone(),
                    format!("{:?}", t.state).to_lowercase(),
                    t.created_at.format("%Y-%m-%d %H:%M").to_string(),
                ]
            })
            .collect();
        print_table(&["TENANT", "NAME", "PLAN", "STATE", "CREATED"], &rows);
    }

    pub fn tenant(&self, tenant: &TenantRecord) {
        if self.json {
            print_json(tenant);
        } else {
            self.tenants(std::slice::from_ref(tenant));
        }
    }

    pub fn keys(&self, keys: &[KeyRecord]) {
        if self.json {
            let views: Vec<_> = keys
                .iter()
                .map(|k| serde_json::json!({"key_id": k.key_id, "role": k.role, "label": k.label, "created_at": k.created_at, "revoked_at": k.revoked_at}))
                .collect();
            print_json(&views);
            return;
        }
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|k| {
                vec![
                    k.key_id.clone(),
                    k.role.as_str().to_string(),
                    k.label.clone(),
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                    .to_string(),
                ]
            })
            .collect();
        print_table(&["KEY", "ROLE", "LABEL", "STATUS"], &rows);
    }

    pub fn audit_verification(&self, report: &AuditVerification) {
        if self.json {
            print_json(report);
            return;
        }
        if report.is_intact() {
            println!(
                "audit chain of {} intact: {} records, head #{}",
                report.tenant, report.records, report.head_seq
            );
            return;
        }
        println!("audit chain of {} is BROKEN:", report.tenant);
        for problem in &report.problems {
            println!("  #{}: {}", problem.seq, problem.problem);
        }
    }

    pub fn audit_records(&self, records: &[AuditRecord]) {
        if self.json {
            print_json(&records);
            return;
        }
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    r.seq.to_string(),
                    r.ts.format("%Y-%m-%d %H:%M:%S").to_string(),
                    format!("{}:{}", r.actor.role, r.actor.key_id),
                    r.action.clone(),
                    r.resource.clone(),
                    r.outcome.clone(),
                ]
            })
            .collect();
        print_table(
            &["SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME"],
            &rows,
        );
    }

    pub fn demo(&self, summary: &DemoSummary) {
        if self.json {
            print_json(summary);
            return;
        }
        println!("tenantry demo on {}", summary.storage_url);
        if summary.base_trained_now {
            println!(
                "shared base ngram {} trained on the pooled general corpus in {:.0} ms",
                summary.base_version, summary.base_training_ms
            );
        } else {
            println!(
                "shared base ngram {} (already trained)",
                summary.base_version
            );
        }
        let rows: Vec<Vec<String>> = summary
            .tenants
            .iter()
            .map(|t| {
                vec![
                    t.tenant.clone(),
                    t.plan.clone(),
                    format!("{:.1}", t.onboarding_ms),
                    t.rows_uploaded.to_string(),
                    t.datasets_visible.to_string(),
                    t.cross_tenant_status.to_string(),
                    t.job_state.clone(),
                    format!(
                        "{} ({})",
                        t.audit_records,
                        if t.audit_intact { "intact" } else { "BROKEN" }
                    ),
                    t.state.clone(),
                ]
            })
            .collect();
        print_table(
            &[
                "TENANT",
                "PLAN",
                "ONBOARD MS",
                "ROWS",
                "SEES DATASETS",
                "OTHER'S DATA",
                "SMOKE JOB",
                "AUDIT",
                "STATE",
            ],
            &rows,
        );
        println!();
        for tenant in &summary.tenants {
            let run = &tenant.pipeline;
            println!(
                "{} pipeline run {}: {} ({} output files under tenants/{}/{})",
                tenant.tenant, run.run_id, run.state, run.output_files, tenant.tenant, run.outputs
            );
            for step in &run.steps {
                println!("    {step}");
            }
            let model = &tenant.model;
            if !model.version.is_empty() {
                println!(
                    "    model {} {} over base {}: accuracy {:.3}, macro-F1 {:.3} on {} held-out rows; scored {} inbox rows ({} need review) -> tenants/{}/{}",
                    model.name,
                    model.version,
                    model.base,
                    model.accuracy,
                    model.macro_f1,
                    model.holdout_rows,
                    model.scored_rows,
                    model.needs_review,
                    tenant.tenant,
                    model.scored_output
                );
            }
            let online = &tenant.online;
            println!(
                "    online POST /v1/predict (client key): {} in {:.1} ms, {} {}; a version it does not have: {}",
                online.status,
                online.latency_ms,
                model.name,
                online.version,
                online.foreign_version_status
            );
            for (text, label, probability) in &online.predictions {
                let shown: String = text.chars().take(60).collect();
                println!("      {label:<16} {probability:.3}  {shown}...");
            }
            let usage: Vec<String> = tenant
                .usage
                .iter()
                .map(|(meter, quantity)| format!("{meter} {quantity}"))
                .collect();
            println!("    usage this month: {}", usage.join(", "));
            let invoice = &tenant.invoice;
            println!(
                "    invoice {} ({}): {} {}",
                invoice.number,
                invoice.plans.join(", "),
                invoice.total,
                invoice.currency
            );
            for (description, amount) in &invoice.lines {
                println!("      {description:<52} {amount:>10}");
            }
            if tenant.state == "active" {
                println!(
                    "    download: tenantry outputs get {} --tenant {} --out out/{} --format csv",
                    run.run_id, tenant.tenant, tenant.tenant
                );
            }
        }
        println!();
        println!(
            "offboarded {}: {} objects deleted, {} left, old key now answers {}",
            summary.offboarded,
            summary.offboard_objects_deleted,
            summary.offboard_remaining_objects,
            summary.offboard_old_key_status
        );
        println!(
            "operators' cost view of the month so far (USD; shared platform cost spread by direct cost):"
        );
        for (tenant, direct, shared, revenue, margin) in &summary.costs {
            println!(
                "    {tenant:<10} direct {direct:>8}  shared {shared:>8}  revenue {revenue:>8}  margin {margin:>9}"
            );
        }
        println!("demo finished in {:.0} ms", summary.elapsed_ms);
    }
}
