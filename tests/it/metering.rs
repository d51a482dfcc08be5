//! Metering end to end: the billing cron fires each period once across replicas, restarts and
//! outages (its jobs run in the batch band and catch up what was missed), the usage journal
//! survives a crash at any point without losing or doubling an event, totals do not depend on
//! order or duplicates, and a plan change mid-month is prorated.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use proptest::prelude::*;
use tenantry::billing::cron::BillingCron;
use tenantry::clock::{ManualClock, SharedClock};
use tenantry::jobs::JobService;
use tenantry::queue::{Band, QueueState};
use tenantry::storage::TenantStore;
use tenantry::tenant::{TenantId, TenantRecord};
use tenantry::usage::{
    Granularity, MICROS, Meter, SyncPolicy, UsageEvent, UsageJournal, read_events, totals,
    write_events,
};

use crate::support::{TestServer, eventually, test_runner};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn ms(text: &str) -> u64 {
    at(text).timestamp_millis() as u64
}

/// Pretends `tenant` was onboarded at `created` (onboarding stamps the wall clock).
async fn backdate(server: &TestServer, tenant: &str, created: &str) {
    backdate_on(&server.platform, tenant, created).await;
}

async fn backdate_on(platform: &tenantry::Platform, tenant: &str, created: &str) {
    let id = TenantId::parse(tenant).unwrap();
    let mut record = platform.tenant(&id).await.unwrap();
    record.created_at = at(created);
    platform
        .system()
        .put_json(&TenantRecord::registry_key(&id), &record)
        .await
        .unwrap();
}

/// A job service over the server's platform whose time is `clock`.
async fn jobs_at(server: &TestServer, clock: SharedClock) -> JobService {
    let queues = tenantry::jobs::open_queues(server.platform.settings())
        .await
        .unwrap();
    JobService::new(
        server.platform.clone(),
        queues,
        server.platform.settings().pools.clone(),
        clock,
    )
}

async fn store(server: &TestServer, tenant: &str) -> TenantStore {
    server
        .platform
        .tenant_store(&TenantId::parse(tenant).unwrap())
        .await
        .unwrap()
}

fn event(id: &str, meter: Meter, units: i64, when: &str, recorded: &str) -> UsageEvent {
    UsageEvent {
        id: id.to_string(),
        meter,
        quantity_micros: units * MICROS,
        at: at(when),
        source: "test".to_string(),
        recorded_at: at(recorded),
    }
}

/// Runs the cpu pool until every listed job of `tenant` succeeded.
async fn run_until_done(jobs: &JobService, server: &TestServer, tenant: &str, ids: &[String]) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runner = test_runner(jobs, server.pool("cpu"));
    let token = shutdown.clone();
    let pool = tokio::spawn(async move { runner.run_configured(token).await.unwrap() });
    let store = store(server, tenant).await;
    let done = eventually(|| async {
        let records = jobs.list(&store, None).await.unwrap();
        ids.iter().all(|id| {
            records
                .iter()
                .any(|r| &r.job_id == id && r.state == QueueState::Succeeded)
        })
    })
    .await;
    shutdown.cancel();
    pool.await.unwrap();
    assert!(done, "billing jobs {ids:?} of {tenant} did not all succeed");
}

#[tokio::test]
async fn the_billing_cron_fires_each_period_once_across_replicas_and_restarts() {
    let server = TestServer::start().await;
    for tenant in ["acme", "globex"] {
        server.onboard(tenant, "pro").await;
        backdate(&server, tenant, "2026-09-15T08:00:00Z").await;
    }
    // October's usage of acme, on time
    let acme = store(&server, "acme").await;
    write_events(
        &acme,
        "october.parquet",
        &[
            event(
                "a",
                Meter::ApiCalls,
                3,
                "2026-10-07T10:00:00Z",
                "2026-10-07T10:00:00Z",
            ),
            event(
                "b",
                Meter::RowsScored,
                7_000_000,
                "2026-10-31T23:00:00Z",
                "2026-11-01T01:00:00Z",
            ),
        ],
    )
    .await
    .unwrap();

    // November 1st, 13:00: October's rollups and invoices are due (grace 6 h + spread 6 h)
    let clock = ManualClock::new(ms("2026-11-01T13:00:00Z"));
    let jobs = jobs_at(&server, clock.clone()).await;
    let replica = || BillingCron::new(jobs.clone(), clock.clone());
    let (first, second) = (replica(), replica());
    let (a, b) = tokio::join!(first.tick(), second.tick());
    let (a, b) = (a.unwrap(), b.unwrap());
    let fired: Vec<&String> = a.fired.iter().chain(&b.fired).collect();
    let unique: HashSet<&String> = fired.iter().copied().collect();
    assert_eq!(fired.len(), unique.len(), "a period fired twice: {fired:?}");
    for tenant in ["acme", "globex"] {
        for job in [
            "billing-storage-2026-11-01",
            "billing-rollup-day-2026-10-31",
            // the week of October 19th-25th: October 26th-November 1st is due tomorrow
            "billing-rollup-week-2026-10-19",
            "billing-rollup-month-2026-10-01",
            "billing-invoice-2026-10",
        ] {
            assert!(
                unique.contains(&format!("{tenant}/{job}")),
                "{tenant}/{job} not fired: {fired:?}"
            );
        }
    }
    assert_eq!(fired.len(), 10);
    assert_eq!(
        a.skipped + b.skipped,
        10,
        "each replica skipped what the other fired"
    );
    // every firing is a batch-band job
    for record in jobs.list(&acme, None).await.unwrap() {
        assert_eq!(record.band, Band::Batch, "{}", record.job_id);
    }

    // a restarted scheduler, knowing nothing of what was fired, fires nothing again
    let restarted = replica();
    let again = restarted.tick().await.unwrap();
    assert!(again.fired.is_empty(), "{again:?}");
    assert_eq!(again.skipped, 10);
    assert!(first.tick().await.unwrap().fired.is_empty());

    // the jobs run: October's invoice, rollups and a storage sample
    let acme_jobs: Vec<String> = unique
        .iter()
        .filter_map(|id| id.strip_prefix("acme/").map(str::to_string))
        .collect();
    run_until_done(&jobs, &server, "acme", &acme_jobs).await;
    let invoice = tenantry::billing::service::stored_invoice(&acme, "2026-10", "json")
        .await
        .unwrap()
        .expect("october's invoice stored");
    let invoice: serde_json::Value = serde_json::from_slice(&invoice).unwrap();
    assert_eq!(invoice["number"], "INV-2026-10-0001");
    let (month, late) = tenantry::billing::rollup::stored(
        &acme,
        Granularity::Month,
        NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
    )
    .await
    .unwrap()
    .expect("october rolled up");
    assert_eq!(
        month[&Meter::RowsScored].quantity_micros,
        7_000_000 * MICROS
    );
    assert!(late.is_empty());
    let sampled = totals(&read_events(&acme).await.unwrap());
    assert!(sampled[&Meter::StorageBytes] > 0, "storage was sampled");

    // a day later the daily work is due again, and the week that ended yesterday
    clock.advance(86_400_000);
    let next_day = first.tick().await.unwrap();
    let mut names: Vec<&str> = next_day
        .fired
        .iter()
        .filter_map(|id| id.strip_prefix("acme/"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "billing-rollup-day-2026-11-01",
            "billing-rollup-week-2026-10-26",
            "billing-storage-2026-11-02"
        ]
    );
}

#[tokio::test]
async fn a_scheduler_down_for_months_fires_once_and_its_jobs_catch_up() {
    let server = TestServer::start().await;
    server.onboard("acme", "free").await;
    backdate(&server, "acme", "2026-06-10T08:00:00Z").await;
    let acme = store(&server, "acme").await;
    for (n, day) in ["2026-06-20", "2026-07-20", "2026-08-20", "2026-09-20"]
        .iter()
        .enumerate()
    {
        let when = format!("{day}T12:00:00Z");
        write_events(
            &acme,
            &format!("m{n}.parquet"),
            &[event(
                &format!("e{n}"),
                Meter::ApiCalls,
                20_000,
                &when,
                &when,
            )],
        )
        .await
        .unwrap();
    }
    // the scheduler comes back on October 2nd, having fired nothing since June
    let clock = ManualClock::new(ms("2026-10-02T13:00:00Z"));
    let jobs = jobs_at(&server, clock.clone()).await;
    let cron = BillingCron::new(jobs.clone(), clock.clone());
    let tick = cron.tick().await.unwrap();
    let invoices: Vec<&String> = tick
        .fired
        .iter()
        .filter(|id| id.contains("invoice"))
        .collect();
    assert_eq!(
        invoices,
        vec!["acme/billing-invoice-2026-09"],
        "one firing, the latest"
    );
    assert!(cron.tick().await.unwrap().fired.is_empty());

    let ids: Vec<String> = tick
        .fired
        .iter()
        .filter_map(|id| id.strip_prefix("acme/").map(str::to_string))
        .collect();
    run_until_done(&jobs, &server, "acme", &ids).await;
    // the one invoice job issued every missing month, numbered without gaps
    let listed = tenantry::billing::service::list_invoices(&acme)
        .await
        .unwrap();
    let periods: Vec<&str> = listed.iter().map(|i| i.period.as_str()).collect();
    assert_eq!(periods, vec!["2026-06", "2026-07", "2026-08", "2026-09"]);
    assert!(
        listed.iter().all(|i| i.number.ends_with("-0001")),
        "{listed:?}"
    );
    // 20,000 calls a month: 10,000 free, 10,000 at $0.0005
    assert!(listed.iter().all(|i| i.total == "5.00"), "{listed:?}");
    // and the one month-rollup job rolled up every month since the tenant began
    for month in 6..=9 {
        let start = NaiveDate::from_ymd_opt(2026, month, 1).unwrap();
        let (totals, _) = tenantry::billing::rollup::stored(&acme, Granularity::Month, start)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("month {month} not rolled up"));
        assert_eq!(totals[&Meter::ApiCalls].quantity_micros, 20_000 * MICROS);
    }
}

#[tokio::test]
async fn a_crash_between_the_parquet_write_and_the_acknowledgement_loses_nothing_and_doubles_nothing()
 {
    let server = TestServer::start().await;
    for tenant in ["acme", "globex"] {
        server.onboard(tenant, "pro").await;
        backdate(&server, tenant, "2026-11-01T00:00:00Z").await;
    }
    let journal_root = tempfile::tempdir().unwrap();
    let journal_dir = journal_root.path().join("replica-0");
    let open = || {
        UsageJournal::open(
            server.platform.clone(),
            Arc::new(tenantry::clock::SystemClock),
            "replica-0",
            Some(journal_dir.clone()),
            SyncPolicy::Always,
        )
        .unwrap()
    };
    let acme = TenantId::parse("acme").unwrap();
    let globex = TenantId::parse("globex").unwrap();
    let request = |n: u32| {
        vec![
            event(
                &format!("r{n}:0"),
                Meter::ApiCalls,
                1,
                "2026-11-20T10:00:00Z",
                "2026-11-20T10:00:00Z",
            ),
            event(
                &format!("r{n}:1"),
                Meter::RowsScored,
                5,
                "2026-11-20T10:00:00Z",
                "2026-11-20T10:00:00Z",
            ),
        ]
    };
    {
        let journal = open();
        // a second process on the same journal is refused
        let refused = UsageJournal::open(
            server.platform.clone(),
            Arc::new(tenantry::clock::SystemClock),
            "replica-0",
            Some(journal_dir.clone()),
            SyncPolicy::Always,
        );
        assert!(refused.is_err());
        for n in 0..50 {
            journal.append(&acme, request(n)).await.unwrap();
            journal.append(&globex, request(1000 + n)).await.unwrap();
        }
        // half of a flush: the Parquet is written, then the process dies before the segment
        // is acknowledged
        journal.seal().await.unwrap();
        assert_eq!(journal.write_sealed().await.unwrap(), 200);
        // and requests acknowledged after the seal are in the open segment only
        for n in 50..60 {
            journal.append(&acme, request(n)).await.unwrap();
        }
    }
    let written_before = totals(&read_events(&store(&server, "acme").await).await.unwrap());
    assert_eq!(written_before[&Meter::ApiCalls], 50 * MICROS);

    let recovered = open();
    assert_eq!(
        recovered.sealed_segments(),
        2,
        "both segments found at start"
    );
    let report = recovered.flush().await.unwrap();
    assert_eq!(report.segments, 2);
    for (tenant, calls) in [("acme", 60), ("globex", 50)] {
        let usage = totals(&read_events(&store(&server, tenant).await).await.unwrap());
        assert_eq!(usage[&Meter::ApiCalls], calls * MICROS, "{tenant}");
        assert_eq!(usage[&Meter::RowsScored], 5 * calls * MICROS, "{tenant}");
    }
    // acknowledged segments are gone: a second recovery writes nothing more
    drop(recovered);
    let again = open();
    assert_eq!(again.sealed_segments(), 0);
    assert_eq!(again.flush().await.unwrap().events, 0);
}

#[tokio::test]
async fn a_plan_change_mid_month_bills_each_plan_for_its_days() {
    let server = TestServer::start().await;
    server.onboard("acme", "free").await;
    backdate(&server, "acme", "2026-09-20T08:00:00Z").await;
    let id = TenantId::parse("acme").unwrap();
    server
        .platform
        .change_plan(
            &id,
            "pro",
            at("2026-10-16T09:30:00Z"),
            tenantry::audit::Actor::system(),
        )
        .await
        .unwrap();
    let acme = store(&server, "acme").await;
    write_events(
        &acme,
        "calls.parquet",
        &[
            // on the free plan: 12,000 calls, 2,000 over its free 10,000
            event(
                "f",
                Meter::ApiCalls,
                12_000,
                "2026-10-05T10:00:00Z",
                "2026-10-05T10:00:00Z",
            ),
            // on pro from the 16th (the day of the change): 6M rows
            event(
                "p",
                Meter::RowsScored,
                6_000_000,
                "2026-10-16T08:00:00Z",
                "2026-10-16T08:00:00Z",
            ),
        ],
    )
    .await
    .unwrap();
    let invoice = tenantry::billing::service::generate_invoice(
        &server.platform,
        &id,
        "2026-10",
        at("2026-11-02T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(
        invoice.plans,
        vec!["free v1 (days 1-15)", "pro v1 (days 16-31)"]
    );
    let line = |prefix: &str| {
        invoice
            .lines
            .iter()
            .find(|l| l.description.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}: {:?}", invoice.lines))
            .amount
            .to_string()
    };
    // 2,000 x $0.0005
    assert_eq!(line("api_calls, free"), "1.00");
    // $499 x 16/31 = 257.548... -> 257.55; quota 5M x 16/31 = 2,580,645.16 rows included
    assert_eq!(line("subscription pro"), "257.55");
    // 6,000,000 - 2,580,645.16 = 3,419,354.84 over, at $0.00008
    assert_eq!(line("rows_scored over"), "273.55");
    assert_eq!(invoice.total.to_string(), "532.10");
    // a tenant's history is in its record
    let record = server.platform.tenant(&id).await.unwrap();
    assert_eq!(record.plan_history.len(), 1);
    assert_eq!(record.plan_history[0].plan.name, "free");
}

/// Runs `work` on a fresh current-thread runtime (proptest cases are synchronous).
fn block_on<F: std::future::Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

/// A platform on `memory://` storage with one tenant, `prop`.
async fn memory_tenant() -> (tenantry::Platform, TenantId, TenantStore) {
    let settings = tenantry::Settings {
        storage_url: "memory://".to_string(),
        ..tenantry::Settings::default()
    };
    let platform = tenantry::Platform::open(settings).await.unwrap();
    let id = TenantId::parse("prop").unwrap();
    platform
        .onboard(&id, "Prop", "pro", tenantry::audit::Actor::system())
        .await
        .unwrap();
    let store = platform.tenant_store(&id).await.unwrap();
    (platform, id, store)
}

/// Writes `events` into `files` files in the given order (duplicates included) and reads the
/// totals back.
fn write_and_total(events: Vec<UsageEvent>, files: usize) -> BTreeMap<Meter, i64> {
    block_on(async {
        let (_platform, _, store) = memory_tenant().await;
        let mut by_file: BTreeMap<(usize, NaiveDate), Vec<UsageEvent>> = BTreeMap::new();
        for (index, event) in events.into_iter().enumerate() {
            by_file
                .entry((index % files.max(1), event.at.date_naive()))
                .or_default()
                .push(event);
        }
        for ((file, _), events) in by_file {
            write_events(&store, &format!("f{file}.parquet"), &events)
                .await
                .unwrap();
        }
        totals(&read_events(&store).await.unwrap())
    })
}

fn arbitrary_events() -> impl Strategy<Value = Vec<UsageEvent>> {
    prop::collection::vec((0..4usize, 1i64..5_000_000, 0i64..30 * 24), 1..60).prop_map(|rows| {
        let meters = [
            Meter::ApiCalls,
            Meter::RowsScored,
            Meter::TokensIn,
            Meter::CpuSeconds,
        ];
        rows.into_iter()
            .enumerate()
            .map(|(n, (meter, micros, hour))| {
                let when = at("2026-11-01T00:00:00Z") + Duration::hours(hour);
                UsageEvent {
                    id: format!("e{n}"),
                    meter: meters[meter],
                    quantity_micros: micros,
                    at: when,
                    source: "prop".to_string(),
                    recorded_at: when,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn totals_do_not_depend_on_order_or_duplicates(
        events in arbitrary_events(),
        seed in any::<u64>(),
        duplicated in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        files in 1usize..5,
    ) {
        let expected = totals(&events);
        let mut shuffled = events.clone();
        for index in &duplicated {
            shuffled.push(events[index.index(events.len())].clone());
        }
        // a deterministic shuffle from the seed
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(write_and_total(shuffled, files), expected);
    }

    #[test]
    fn daily_rollups_add_up_to_the_monthly_one_whatever_arrives_late(
        events in arbitrary_events(),
        delays in prop::collection::vec(0i64..72, 60),
    ) {
        let (days, month) = block_on(async {
            let (_platform, _, store) = memory_tenant().await;
            for (n, mut event) in events.into_iter().enumerate() {
                // some arrive hours or days after their day ended
                event.recorded_at = event.at + Duration::hours(delays[n % delays.len()]);
                write_events(&store, &format!("e{n}.parquet"), &[event]).await.unwrap();
            }
            let now = at("2026-12-15T00:00:00Z");
            let grace = Duration::hours(6);
            let start = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
            let mut days: BTreeMap<Meter, (i64, u64)> = BTreeMap::new();
            for d in 0..30 {
                let rollup = tenantry::billing::rollup::roll_up(&store, Granularity::Day, start + Duration::days(d), now, grace).await.unwrap();
                for (meter, total) in rollup.totals {
                    let sum = days.entry(meter).or_default();
                    sum.0 += total.quantity_micros;
                    sum.1 += total.events;
                }
            }
            let month = tenantry::billing::rollup::roll_up(&store, Granularity::Month, start, now, grace).await.unwrap();
            let month: BTreeMap<Meter, (i64, u64)> = month.totals.into_iter().map(|(m, t)| (m, (t.quantity_micros, t.events))).collect();
            (days, month)
        });
        prop_assert_eq!(days, month);
    }
}

#[test]
fn the_journal_needs_no_directory_to_work_in_memory() {
    block_on(async {
        let (platform, id, store) = memory_tenant().await;
        backdate_on(&platform, "prop", "2026-11-01T00:00:00Z").await;
        let journal = UsageJournal::open(
            platform.clone(),
            Arc::new(tenantry::clock::SystemClock),
            "r",
            None,
            SyncPolicy::Always,
        )
        .unwrap();
        let events = vec![event(
            "x:0",
            Meter::ApiCalls,
            1,
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:00:00Z",
        )];
        journal.append(&id, events.clone()).await.unwrap();
        // the same request metered twice counts once
        journal.append(&id, events).await.unwrap();
        // usage dated before the tenant existed (a previous owner of a reused id) is dropped
        let earlier = event(
            "old:0",
            Meter::ApiCalls,
            5,
            "2026-10-20T10:00:00Z",
            "2026-10-20T10:00:00Z",
        );
        journal.append(&id, vec![earlier]).await.unwrap();
        let report = journal.flush().await.unwrap();
        assert_eq!((report.events, report.dropped), (1, 1));
        assert_eq!(
            totals(&read_events(&store).await.unwrap())[&Meter::ApiCalls],
            MICROS
        );
    });
}

/// The CLI on `dir`'s store and journal.
fn tenantry_in(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"));
    command
        .env(
            "TENANTRY_STORAGE_URL",
            format!("file://{}", dir.join("data").display()),
        )
        .env("TENANTRY_USAGE_JOURNAL", dir.join("journal"))
        .env_remove("TENANTRY_MASTER_KEY_FILE")
        .env_remove("TENANTRY_ADMIN_KEY");
    command
}

/// Runs the CLI on `dir`'s store and journal; returns its JSON output.
fn cli(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let output = tenantry_in(dir)
        .args(args)
        .arg("--json")
        .output()
        .expect("cli runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

fn serve(dir: &std::path::Path, port: u16) -> std::process::Child {
    // journaled usage is written at start, then not for an hour: what a kill leaves behind is
    // only in the journal
    let config = dir.join("serve.toml");
    std::fs::write(&config, "[serving]\nusage_flush_ms = 3600000\n").unwrap();
    tenantry_in(dir)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts")
}

#[tokio::test]
async fn a_serving_process_killed_with_sigkill_loses_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    cli(dir.path(), &["demo"]);
    let token = cli(
        dir.path(),
        &["key", "create", "--tenant", "acme", "--role", "client"],
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let calls = |dir: &std::path::Path| {
        cli(
            dir,
            &["report", "rollup", "--tenant", "acme", "--day", &today],
        )["totals"]["api_calls"]["quantity_micros"]
            .as_i64()
            .unwrap_or(0)
            / MICROS
    };
    let before = calls(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/predict");
    let predict = || {
        client
            .post(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({"inputs": [{"id": 1, "text": "Either party may terminate this agreement."}]}))
            .send()
    };
    let mut first = serve(dir.path(), port);
    assert!(
        eventually(|| async { predict().await.is_ok_and(|r| r.status().is_success()) }).await,
        "serve answers"
    );
    let mut answered = 1;
    for _ in 0..20 {
        assert!(predict().await.unwrap().status().is_success());
        answered += 1;
    }
    // killed with SIGKILL: the answered requests are only in its journal
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(calls(dir.path()), before);
    // the next start writes them out, once
    let mut second = serve(dir.path(), port);
    assert!(
        eventually(|| async { calls(dir.path()) == before + answered }).await,
        "the journal was recovered at start: {} calls of {}",
        calls(dir.path()),
        before + answered
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn a_job_retried_after_a_crash_between_its_usage_write_and_its_ack_bills_its_rows_once() {
    let server = TestServer::start().await;
    server.onboard("acme", "pro").await;
    let acme = store(&server, "acme").await;
    let clock = ManualClock::new(ms("2026-11-20T10:00:00Z"));
    let attempt = |n: u32| {
        let recorder = tenantry::usage::UsageRecorder::for_job("job-1", n, "score", clock.clone());
        recorder.record(Meter::RowsScored, 500.0);
        recorder.record(Meter::CpuSeconds, 1.5);
        recorder
    };
    // attempt 1 fails: it consumed CPU, delivered nothing
    attempt(1).flush(&acme, false).await.unwrap();
    // attempt 2 succeeds and its usage is written, then its worker dies before the ack
    attempt(2).flush(&acme, true).await.unwrap();
    // attempt 3 does the work again and succeeds
    attempt(3).flush(&acme, true).await.unwrap();
    let usage = totals(&read_events(&acme).await.unwrap());
    assert_eq!(usage[&Meter::RowsScored], 500 * MICROS, "rows billed once");
    assert_eq!(
        usage[&Meter::CpuSeconds],
        4_500_000,
        "every attempt's CPU counted"
    );
}

#[tokio::test]
async fn operators_change_a_plan_over_the_api_and_only_operators_may() {
    let server = TestServer::start().await;
    let acme = server.onboard("acme", "free").await;
    let admin = server.admin_token.clone();
    let change = |tenant: &'static str, token: String, plan: &'static str| {
        let server = &server;
        async move {
            server
                .put_json(
                    &format!("/v1/tenants/{tenant}/plan"),
                    &token,
                    serde_json::json!({ "plan": plan }),
                )
                .await
        }
    };
    let changed = change("acme", admin.clone(), "pro").await;
    assert_eq!(
        changed.status,
        reqwest::StatusCode::OK,
        "{}",
        changed.text()
    );
    let view = changed.json();
    assert_eq!(view["plan"]["name"], "pro");
    assert_eq!(view["plan_history"][0]["plan"]["name"], "free");
    // the tenant's own admin may not move itself to another plan
    let refused = change("acme", acme.clone(), "enterprise").await;
    assert_eq!(refused.status, reqwest::StatusCode::FORBIDDEN);
    let unknown = change("nobody", admin.clone(), "pro").await;
    assert_eq!(unknown.status, reqwest::StatusCode::NOT_FOUND);
    let bad = change("acme", admin.clone(), "platinum").await;
    assert_eq!(bad.status, reqwest::StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("platinum"), "{}", bad.text());
    // a tenant cannot create billing jobs (regenerate its invoice, inject storage samples)
    let injected = server
        .post_json(
            "/v1/jobs",
            &acme,
            serde_json::json!({"kind": "invoice", "payload": {"task": "invoice", "period": "2026-01"}}),
        )
        .await;
    assert_eq!(
        injected.status,
        reqwest::StatusCode::BAD_REQUEST,
        "{}",
        injected.text()
    );
    assert!(
        injected.text().contains("billing cron"),
        "{}",
        injected.text()
    );
    // the queue and serving read the new plan's limits from the record
    let record = server
        .platform
        .tenant(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    assert_eq!(record.plan.name, "pro");
}

#[tokio::test]
async fn a_billing_kind_no_pool_runs_is_reported_once_per_period_not_every_tick() {
    let server = TestServer::start().await;
    server.onboard("acme", "pro").await;
    backdate(&server, "acme", "2026-09-15T08:00:00Z").await;
    // pools configured without the billing kinds
    let pools: Vec<_> = server
        .platform
        .settings()
        .pools
        .iter()
        .filter(|pool| pool.name == "train")
        .cloned()
        .collect();
    let queues = tenantry::jobs::open_queues(server.platform.settings())
        .await
        .unwrap();
    let clock = ManualClock::new(ms("2026-11-01T13:00:00Z"));
    let jobs = JobService::new(server.platform.clone(), queues, pools, clock.clone());
    let cron = BillingCron::new(jobs, clock.clone());
    let first = cron.tick().await.unwrap();
    assert!(first.fired.is_empty());
    assert_eq!(first.failed, 5, "each of acme's five tasks reported");
    let second = cron.tick().await.unwrap();
    assert_eq!((second.failed, second.fired.len()), (0, 0));
}
