//! Audit verification catches an edited, a deleted, a reordered and a truncated record, both
//! through the API and through `tenantry audit verify`.

use reqwest::StatusCode;
use tenantry::TenantId;
use tenantry::audit::AuditRecord;
use tenantry::storage::{RelativePath, TenantStore};

use crate::support::TestServer;

fn record_path(seq: u64) -> RelativePath {
    RelativePath::parse(&format!("audit/{seq:012}.json")).unwrap()
}

async fn read(store: &TenantStore, seq: u64) -> AuditRecord {
    store.get_json(&record_path(seq)).await.unwrap()
}

/// Onboards a tenant and performs enough actions for a chain of at least six records.
async fn server_with_history() -> (TestServer, String, TenantStore) {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    server.upload_csv(&admin, "one", "id\n1\n").await;
    server.upload_csv(&admin, "two", "id\n2\n").await;
    server.get("/v1/datasets", &admin).await;
    server.key(&admin, "viewer").await;
    server.get("/v1/datasets/one", &admin).await;
    let store = server
        .platform
        .tenant_store(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    (server, admin, store)
}

async fn problems(server: &TestServer, admin: &str) -> Vec<String> {
    let reply = server.get("/v1/audit/verify", admin).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_intact_chain_verifies_and_lists_every_action() {
    let (server, admin, _) = server_with_history().await;
    let records = server.get("/v1/audit", &admin).await.json();
    let actions: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "tenant.onboard",
            "dataset.write",
            "dataset.write",
            "dataset.list",
            "key.create",
            "dataset.read"
        ]
    );
    assert!(problems(&server, &admin).await.is_empty());
}

#[tokio::test]
async fn an_edited_record_is_caught_even_when_re_encrypted_with_the_right_key() {
    let (server, admin, store) = server_with_history().await;
    let mut record = read(&store, 3).await;
    record.action = "dataset.delete".to_string();
    store.put_json(&record_path(3), &record).await.unwrap();
    let found = problems(&server, &admin).await;
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("#3") && p.contains("edited")),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_byte_edited_record_is_caught() {
    let (server, admin, _) = server_with_history().await;
    let file = server
        .data_dir()
        .join("tenants/acme/audit/000000000002.json");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let found = problems(&server, &admin).await;
    assert!(found.iter().any(|p| p.starts_with("#2")), "{found:?}");
}

#[tokio::test]
async fn a_deleted_record_is_caught() {
    let (server, admin, store) = server_with_history().await;
    store.delete(&record_path(4)).await.unwrap();
    let found = problems(&server, &admin).await;
    assert!(found.iter().any(|p| p.contains("missing")), "{found:?}");
}

#[tokio::test]
async fn reordered_records_are_caught() {
    let (server, admin, store) = server_with_history().await;
    let second = read(&store, 2).await;
    let third = read(&store, 3).await;
    store.put_json(&record_path(2), &third).await.unwrap();
    store.put_json(&record_path(3), &second).await.unwrap();
    let found = problems(&server, &admin).await;
    assert!(found.iter().any(|p| p.contains("reordered")), "{found:?}");
}

#[tokio::test]
async fn a_truncated_tail_is_caught_by_the_checkpoint() {
    let (server, admin, store) = server_with_history().await;
    store.delete(&record_path(6)).await.unwrap();
    let found = problems(&server, &admin).await;
    assert!(found.iter().any(|p| p.contains("truncated")), "{found:?}");
}

#[tokio::test]
async fn the_cli_verifier_exits_non_zero_on_a_broken_chain() {
    let (server, _admin, store) = server_with_history().await;
    let run = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["audit", "verify", "--tenant", "acme"])
            .env("TENANTRY_STORAGE_URL", format!("file://{}", dir.display()))
            .env_remove("TENANTRY_MASTER_KEY_FILE")
            .output()
            .expect("cli runs")
    };
    let intact = run(&server.data_dir());
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("intact"));

    store.delete(&record_path(2)).await.unwrap();
    let broken = run(&server.data_dir());
    assert_eq!(broken.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("BROKEN"));
}
