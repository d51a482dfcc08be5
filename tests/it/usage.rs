//! The usage API: a tenant's exact usage series by day, week and month, nothing of another
//! tenant's, and the operators' view across tenants.

use std::sync::Arc;

use reqwest::StatusCode;
use tenantry::clock::ManualClock;
use tenantry::tenant::TenantId;
use tenantry::usage::{Meter, UsageRecorder};

use crate::support::TestServer;

/// 2026-11-02 (a Monday) 10:00 UTC.
const MONDAY_MS: u64 = 1_793_613_600_000;
const DAY_MS: u64 = 86_400_000;

async fn record(
    server: &TestServer,
    tenant: &str,
    job: &str,
    day: u64,
    meter: Meter,
    quantity: f64,
) {
    let clock = ManualClock::new(MONDAY_MS + day * DAY_MS);
    let recorder = UsageRecorder::for_job(job, 1, "score", clock as Arc<_>);
    recorder.record(meter, quantity);
    let store = server
        .platform
        .tenant_store(&TenantId::parse(tenant).unwrap())
        .await
        .unwrap();
    recorder.flush(&store, true).await.unwrap();
}

#[tokio::test]
async fn usage_is_bucketed_exactly_and_each_tenant_sees_only_its_own() {
    let server = TestServer::start().await;
    let acme = server.onboard("acme", "pro").await;
    let globex = server.onboard("globex", "pro").await;
    // Monday, Tuesday and the next Monday; a fraction kept exactly
    record(&server, "acme", "j1", 0, Meter::RowsScored, 1_000.0).await;
    record(&server, "acme", "j2", 1, Meter::RowsScored, 250.5).await;
    record(&server, "acme", "j3", 7, Meter::RowsScored, 4.0).await;
    record(&server, "acme", "j4", 1, Meter::CpuSeconds, 2.25).await;
    record(&server, "globex", "g1", 1, Meter::RowsScored, 99.0).await;
    // the same attempt flushed again adds nothing
    record(&server, "acme", "j1", 0, Meter::RowsScored, 1_000.0).await;

    let range = "from=2026-11-01&to=2026-11-30";
    let days = server
        .get(&format!("/v1/usage?meter=rows_scored&{range}"), &acme)
        .await;
    assert_eq!(days.status, StatusCode::OK, "{}", days.text());
    let points = days.json()["points"].as_array().unwrap().clone();
    let pairs: Vec<(String, String)> = points
        .iter()
        .map(|p| {
            (
                p["start"].as_str().unwrap().to_string(),
                p["quantity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("2026-11-02".to_string(), "1000".to_string()),
            ("2026-11-03".to_string(), "250.5".to_string()),
            ("2026-11-09".to_string(), "4".to_string()),
        ]
    );
    let weeks = server
        .get(
            &format!("/v1/usage?meter=rows_scored&granularity=week&{range}"),
            &acme,
        )
        .await
        .json();
    assert_eq!(weeks["points"][0]["quantity"], "1250.5");
    assert_eq!(weeks["points"][1]["start"], "2026-11-09");
    let month = server
        .get(&format!("/v1/usage?granularity=month&{range}"), &acme)
        .await
        .json();
    let month_points = month["points"].as_array().unwrap();
    assert_eq!(month_points.len(), 2, "{month}");
    assert_eq!(month_points[0]["meter"], "rows_scored");
    assert_eq!(month_points[0]["quantity"], "1254.5");
    assert_eq!(month_points[1]["meter"], "cpu_seconds");

    // globex sees its own 99 rows and nothing of acme's
    let theirs = server
        .get(&format!("/v1/usage?granularity=month&{range}"), &globex)
        .await
        .json();
    assert_eq!(theirs["tenant"], "globex");
    assert_eq!(theirs["points"][0]["quantity"], "99");
    assert_eq!(theirs["points"].as_array().unwrap().len(), 1);

    let bad = server.get("/v1/usage?meter=bananas", &acme).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("api_calls"));
    let backwards = server
        .get("/v1/usage?from=2026-11-30&to=2026-11-01", &acme)
        .await;
    assert_eq!(backwards.status, StatusCode::BAD_REQUEST);
    // tenants cannot use the operators' view; operators see every tenant
    assert_eq!(
        server.get("/v1/admin/usage", &acme).await.status,
        StatusCode::FORBIDDEN
    );
    let all = server
        .get(
            &format!("/v1/admin/usage?granularity=month&{range}"),
            &server.admin_token,
        )
        .await
        .json();
    let tenants: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants.len(), 2);
    assert!(tenants.contains(&"acme") && tenants.contains(&"globex"));
}

#[tokio::test]
async fn invoices_are_numbered_without_gaps_regenerate_identically_and_stay_private() {
    use tenantry::billing::service::generate_invoice;
    let server = TestServer::start().await;
    let acme = server.onboard("acme", "free").await;
    let globex = server.onboard("globex", "pro").await;
    let now = chrono::Utc::now();
    let period = now.format("%Y-%m").to_string();
    // free plan: 10k calls free, then $0.50 per 1k; 100k rows free, then $0.10 per 1k
    let day = (now.timestamp_millis() as u64 - MONDAY_MS) / DAY_MS;
    record(&server, "acme", "a1", day, Meter::ApiCalls, 12_000.0).await;
    record(&server, "acme", "a2", day, Meter::RowsScored, 150_000.0).await;
    let acme_id = TenantId::parse("acme").unwrap();
    let globex_id = TenantId::parse("globex").unwrap();

    // the month is still running: a draft
    let draft = generate_invoice(&server.platform, &acme_id, &period, now)
        .await
        .unwrap();
    assert!(draft.number.starts_with("DRAFT-"), "{}", draft.number);
    assert_eq!(draft.total.to_string(), "6.00");

    // after the month: numbered by tenant id among the month's tenants, the same on every run
    let after = now + chrono::Duration::days(40);
    let first = generate_invoice(&server.platform, &acme_id, &period, after)
        .await
        .unwrap();
    let again = generate_invoice(&server.platform, &acme_id, &period, after)
        .await
        .unwrap();
    let other = generate_invoice(&server.platform, &globex_id, &period, after)
        .await
        .unwrap();
    assert_eq!(first.number, format!("INV-{period}-0001"));
    assert_eq!(other.number, format!("INV-{period}-0002"));
    assert_eq!(first.to_json(), again.to_json());
    // pro: the subscription fee prorated over the days it was a tenant
    assert!(other.lines[0].description.starts_with("subscription pro"));

    let listed = server.get("/v1/invoices", &acme).await.json();
    assert_eq!(listed[0]["number"], format!("INV-{period}-0001"));
    assert_eq!(listed[0]["total"], "6.00");
    let json = server.get(&format!("/v1/invoices/{period}"), &acme).await;
    assert_eq!(json.status, StatusCode::OK);
    assert_eq!(json.body, first.to_json());
    let html = server
        .get(&format!("/v1/invoices/{period}?format=html"), &acme)
        .await;
    assert!(html.text().contains("6.00 USD"));
    // globex has its own invoice for the month; an absent month is a 404; a bad one a 400
    assert_eq!(
        server
            .get(&format!("/v1/invoices/{period}"), &globex)
            .await
            .json()["tenant"],
        "globex"
    );
    assert_eq!(
        server.get("/v1/invoices/2001-01", &acme).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/v1/invoices/2001-13", &acme).await.status,
        StatusCode::BAD_REQUEST
    );
    // a tenant is not billed for a month before it existed
    assert!(
        generate_invoice(&server.platform, &acme_id, "2001-01", after)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_cost_report_splits_the_shared_cost_by_measured_use() {
    use tenantry::billing::costs::UnitPrices;
    use tenantry::billing::service::cost_report;
    let server = TestServer::start().await;
    server.onboard("acme", "pro").await;
    server.onboard("globex", "free").await;
    let now = chrono::Utc::now();
    let period = now.format("%Y-%m").to_string();
    let day = (now.timestamp_millis() as u64 - MONDAY_MS) / DAY_MS;
    record(&server, "acme", "c1", day, Meter::CpuSeconds, 300_000.0).await;
    record(&server, "globex", "c2", day, Meter::CpuSeconds, 100_000.0).await;
    let report = cost_report(&server.platform, &period, &UnitPrices::default())
        .await
        .unwrap();
    assert_eq!(report.tenants.len(), 2);
    let (acme, globex) = (&report.tenants[0], &report.tenants[1]);
    assert_eq!(acme.tenant, "acme");
    assert_eq!(acme.direct.to_string(), "3.00");
    assert_eq!(globex.direct.to_string(), "1.00");
    // three quarters of the direct cost, three quarters of the shared $500
    assert_eq!(acme.shared.to_string(), "375.00");
    assert_eq!(globex.shared.to_string(), "125.00");
    // acme pays its prorated pro subscription; globex's free allowance covers it
    assert!(acme.revenue > rust_decimal::Decimal::ZERO);
    assert!(globex.revenue.is_zero());
    assert_eq!(report.margin, acme.margin + globex.margin);
}

#[tokio::test]
async fn a_rising_month_raises_one_quota_alert_and_a_flat_one_none() {
    use tenantry::billing::forecast::Projection;
    use tenantry::billing::service::check_quotas;
    let server = TestServer::start().await;
    server.onboard("acme", "pro").await;
    server.onboard("globex", "pro").await;
    // pro includes 5M rows a month. Days 1-12 of 2026-11 (2026-11-02 is day 0 here).
    for day in 0..12u64 {
        let rising = 250_000.0 + 15_000.0 * day as f64;
        record(
            &server,
            "acme",
            &format!("r{day}"),
            day,
            Meter::RowsScored,
            rising,
        )
        .await;
        record(
            &server,
            "globex",
            &format!("f{day}"),
            day,
            Meter::RowsScored,
            50_000.0,
        )
        .await;
    }
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 13).unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let first = check_quotas(&server.platform, &acme, today).await.unwrap();
    let rows = first.iter().find(|f| f.meter == Meter::RowsScored).unwrap();
    assert!(
        matches!(rows.projection, Projection::Exhaustion { .. }),
        "{:?}",
        rows.projection
    );
    let alert = rows.new_alert.as_ref().expect("a first alert");
    assert!(alert.projected_date <= chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
    // the same day again: the alert is not raised twice
    let again = check_quotas(&server.platform, &acme, today).await.unwrap();
    assert!(again.iter().all(|f| f.new_alert.is_none()));
    let flat = check_quotas(&server.platform, &TenantId::parse("globex").unwrap(), today)
        .await
        .unwrap();
    assert!(
        flat.iter()
            .all(|f| matches!(f.projection, Projection::Clear { .. }))
    );
}

#[tokio::test]
async fn daily_rollups_add_up_to_the_month_and_late_events_are_folded_or_reported() {
    use chrono::NaiveDate;
    use tenantry::billing::rollup::roll_up;
    use tenantry::usage::Granularity;
    let server = TestServer::start().await;
    server.onboard("acme", "pro").await;
    for day in 0..20u64 {
        let quantity = 1_000.0 + day as f64 * 0.125;
        record(
            &server,
            "acme",
            &format!("d{day}"),
            day,
            Meter::RowsScored,
            quantity,
        )
        .await;
    }
    let store = server
        .platform
        .tenant_store(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let grace = server.platform.settings().billing.grace;
    let now: chrono::DateTime<chrono::Utc> = "2026-12-10T00:00:00Z".parse().unwrap();
    let month = roll_up(&store, Granularity::Month, day(2), now, grace)
        .await
        .unwrap();
    let mut days_sum = 0;
    for d in 1..=30 {
        let daily = roll_up(&store, Granularity::Day, day(d), now, grace)
            .await
            .unwrap();
        days_sum += daily
            .totals
            .get(&Meter::RowsScored)
            .map_or(0, |t| t.quantity_micros);
    }
    assert_eq!(days_sum, month.totals[&Meter::RowsScored].quantity_micros);
    assert_eq!(month.totals[&Meter::RowsScored].events, 20);
    assert!(month.is_final);

    // an event of 2026-11-02 recorded at 03:00 the next day, inside the 6 h grace period, is
    // folded in when the day is rolled again
    let late = |job: &str, recorded_ms: u64, quantity: f64| {
        let clock = ManualClock::new(MONDAY_MS);
        let recorder = UsageRecorder::for_job(job, 1, "score", clock.clone() as Arc<_>);
        recorder.record(Meter::RowsScored, quantity);
        clock.set(recorded_ms);
        let store = store.clone();
        async move { recorder.flush(&store, true).await.unwrap() }
    };
    late("late1", MONDAY_MS + 17 * 3_600_000, 5.0).await;
    let refolded = roll_up(&store, Granularity::Day, day(2), now, grace)
        .await
        .unwrap();
    assert!(refolded.written);
    assert_eq!(refolded.totals[&Meter::RowsScored].events, 2);
    // one recorded at 07:00 the next day is past the grace period: reported, not added, in the
    // day and in the month alike
    late("late2", MONDAY_MS + 21 * 3_600_000, 7.0).await;
    let reported = roll_up(&store, Granularity::Day, day(2), now, grace)
        .await
        .unwrap();
    assert_eq!(reported.totals[&Meter::RowsScored].events, 2);
    let late = reported.late_outside_grace[&Meter::RowsScored];
    assert_eq!((late.events, late.quantity_micros), (1, 7_000_000));
    let month = roll_up(&store, Granularity::Month, day(2), now, grace)
        .await
        .unwrap();
    assert_eq!(month.totals[&Meter::RowsScored].events, 21);
    assert_eq!(month.late_outside_grace[&Meter::RowsScored].events, 1);
    let stored = tenantry::billing::rollup::stored(&store, Granularity::Day, day(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.1[&Meter::RowsScored].events,
        1,
        "the late usage is kept in the rollup"
    );
}
