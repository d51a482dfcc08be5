//! Idle tenants cost nothing: an idle worker's Redis traffic per cycle is the same with one
//! registered tenant or a thousand, and never names any of them (observed with MONITOR).

use futures::StreamExt;
use tenantry::TenantId;
use tenantry::queue::{JobQueue, RedisQueue, TenantPolicy};

const CYCLES: usize = 5;

fn redis_url() -> String {
    std::env::var("TENANTRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// Registers `tenants` idle tenants, then runs idle worker cycles and returns every command
/// Redis saw for this queue's keys during them.
async fn idle_traffic(tenants: usize) -> Vec<String> {
    let namespace = format!("tenantry-idle-{}", uuid::Uuid::now_v7());
    let queue = RedisQueue::connect(&redis_url(), &namespace, "cpu", 4)
        .await
        .expect("redis is required");
    for n in 0..tenants {
        let tenant = TenantId::parse(&format!("idle-tenant-{n:04}")).unwrap();
        queue
            .set_policy(&tenant, TenantPolicy::default())
            .await
            .unwrap();
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let marker = format!("{namespace}:end-of-test");
    let prefix = queue.prefix().to_string();
    let collector = {
        let marker = marker.clone();
        tokio::spawn(async move {
            let mut lines = Vec::new();
            let mut stream = monitor.into_on_message::<String>();
            while let Some(line) = stream.next().await {
                if line.contains(&marker) {
                    break;
                }
                if line.contains(&prefix) {
                    lines.push(line);
                }
            }
            lines
        })
    };
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // MONITOR is live once a command sent after it shows up; ping through a key of ours.
    let _: Option<String> = redis::cmd("GET")
        .arg(format!("{}:warm-up", queue.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    for _ in 0..CYCLES {
        assert!(
            queue
                .lease("idle-worker", 8, 10_000, 1)
                .await
                .unwrap()
                .is_empty()
        );
        queue.wait_for_work(20).await.unwrap();
    }
    let _: Option<String> = redis::cmd("GET")
        .arg(&marker)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut lines = collector.await.unwrap();
    lines.retain(|line| !line.contains("warm-up"));
    tenantry::bench::drop_namespace(&redis_url(), &namespace)
        .await
        .unwrap();
    lines
}

#[tokio::test]
async fn idle_tenants_cause_no_redis_traffic() {
    let one = idle_traffic(1).await;
    let thousand = idle_traffic(1_000).await;
    assert!(
        one.len() >= 2 * CYCLES,
        "the monitor saw too little: {one:?}"
    );
    assert_eq!(
        one.len(),
        thousand.len(),
        "per-cycle traffic grew with idle tenants:\n{}",
        thousand.join("\n")
    );
    assert!(
        thousand.iter().all(|line| !line.contains("idle-tenant-")),
        "an idle tenant was touched"
    );
}
