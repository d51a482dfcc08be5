//! Onboard, upload, offboard: nothing remains under the prefix, old keys get 401, the key is
//! shredded (an old ciphertext stays unreadable even after the id is reused), a tombstone stays.

use reqwest::{Method, StatusCode};
use tenantry::TenantId;
use tenantry::storage::{RelativePath, StorageError};

use crate::support::{TestServer, canary_csv, files_under};

const CANARY: &str = "CANARY-lifecycle-55c1";

#[tokio::test]
async fn offboarding_leaves_nothing_and_shreds_the_key() {
    let server = TestServer::start().await;
    let admin = server.onboard("initech", "free").await;
    let (_, viewer) = server.key(&admin, "viewer").await;
    assert_eq!(
        server
            .upload_csv(&admin, "clauses", &canary_csv(CANARY))
            .await
            .status,
        StatusCode::CREATED
    );
    let job = server
        .post_json("/v1/jobs", &admin, serde_json::json!({"kind": "noop"}))
        .await;
    let job_id = job.json()["job_id"].as_str().unwrap().to_string();
    let prefix = server.data_dir().join("tenants/initech");
    let kept_ciphertext =
        std::fs::read(prefix.join("datasets/clauses/data.parquet")).expect("stored object");
    assert!(!files_under(&prefix).is_empty());

    let reply = server
        .send(
            Method::DELETE,
            "/v1/tenants/initech",
            Some(&server.admin_token),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let report = reply.json();
    assert_eq!(report["verified_clean"], true);
    assert_eq!(report["remaining_objects"], 0);
    assert_eq!(report["keys_revoked"], 2);
    assert!(report["objects_deleted"].as_u64().unwrap() >= 3);

    assert!(
        files_under(&prefix).is_empty(),
        "objects left: {:?}",
        files_under(&prefix)
    );
    let queue = server.jobs.queue("cpu").unwrap();
    let initech = TenantId::parse("initech").unwrap();
    assert_eq!(
        queue.state(&initech, &job_id).await.unwrap(),
        None,
        "the queued job was not dropped"
    );
    for token in [&admin, &viewer] {
        assert_eq!(
            server.get("/v1/datasets", token).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(!server.data_dir().join("_system/deks/initech.json").exists());
    let tombstones = files_under(&server.data_dir().join("_system/tombstones/initech"));
    assert_eq!(tombstones.len(), 1);
    let tombstone: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tombstones[0]).unwrap()).unwrap();
    assert_eq!(tombstone["verified_clean"], true);
    assert!(tombstone["final_audit_head"]["seq"].as_u64().unwrap() >= 3);

    let shown = server
        .get("/v1/tenants/initech", &server.admin_token)
        .await
        .json();
    assert_eq!(shown["state"], "offboarded");
    let again = server
        .send(
            Method::DELETE,
            "/v1/tenants/initech",
            Some(&server.admin_token),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Reusing the id gets a fresh key: the old ciphertext, put back, cannot be decrypted.
    server.onboard("initech", "free").await;
    let restored = prefix.join("datasets/clauses/data.parquet");
    std::fs::create_dir_all(restored.parent().unwrap()).unwrap();
    std::fs::write(&restored, &kept_ciphertext).unwrap();
    let store = server
        .platform
        .tenant_store(&TenantId::parse("initech").unwrap())
        .await
        .unwrap();
    let read = store
        .get(&RelativePath::parse("datasets/clauses/data.parquet").unwrap())
        .await;
    assert!(matches!(read, Err(StorageError::Crypto { .. })), "{read:?}");
}

#[tokio::test]
async fn onboarding_is_one_call_and_rejects_duplicates_and_bad_ids() {
    let server = TestServer::start().await;
    let reply = server
        .post_json(
            "/v1/tenants",
            &server.admin_token,
            serde_json::json!({"id": "acme", "name": "Acme", "plan": "enterprise"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["tenant"]["state"], "active");
    assert_eq!(body["tenant"]["plan"]["weight"], 16);
    assert!(body["onboarding_ms"].as_f64().unwrap() > 0.0);
    let token = body["admin_key"]["token"].as_str().unwrap();
    assert!(token.starts_with("tnt_"));
    // The smoke-check object is gone; config and the audit record remain.
    let files = files_under(&server.data_dir().join("tenants/acme"));
    assert!(
        files
            .iter()
            .all(|f| !f.to_string_lossy().contains("_smoke")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with("config.json")));
    assert_eq!(
        server
            .get("/v1/audit", token)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let duplicate = server
        .post_json(
            "/v1/tenants",
            &server.admin_token,
            serde_json::json!({"id": "acme", "name": "Again", "plan": "free"}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    for (id, plan) in [("Bad/Id", "free"), ("..", "free"), ("okay-id", "platinum")] {
        let reply = server
            .post_json(
                "/v1/tenants",
                &server.admin_token,
                serde_json::json!({"id": id, "name": "x", "plan": plan}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{id} {plan}: {}",
            reply.text()
        );
    }
}
