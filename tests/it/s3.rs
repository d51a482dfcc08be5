//! The `s3://` storage backend against an S3-protocol server on loopback (moto, started by
//! scripts/test at `TENANTRY_TEST_S3`): the whole demo, then onboarding and offboarding.

use std::path::Path;
use std::process::Command;

fn s3_endpoint() -> String {
    std::env::var("TENANTRY_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:19000".to_string())
}

fn tenantry(dir: &Path, bucket: &str, args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .env("TENANTRY_STORAGE_URL", format!("s3://{bucket}/platform"))
        .env("TENANTRY_MASTER_KEY_FILE", dir.join("master.key"))
        .env("AWS_ENDPOINT", s3_endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("cli runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (
        output.status.success(),
        serde_json::from_str(&stdout).unwrap_or_default(),
        stderr,
    )
}

#[tokio::test]
async fn the_platform_runs_on_s3_object_storage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.key"), hex::encode([42u8; 32])).unwrap();
    let bucket = format!("tenantry-{}", uuid::Uuid::now_v7().simple());
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", s3_endpoint()))
        .send()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "the S3 test server at {} is required: {error}",
                s3_endpoint()
            )
        });
    assert!(
        created.status().is_success(),
        "bucket not created: {}",
        created.status()
    );

    let (ok, summary, stderr) = tenantry(dir.path(), &bucket, &["demo"]);
    assert!(ok, "{stderr}");
    for tenant in summary["tenants"].as_array().unwrap() {
        assert_eq!(tenant["cross_tenant_status"], 404, "{tenant}");
        assert_eq!(tenant["job_state"], "succeeded", "{tenant}");
        assert_eq!(tenant["audit_intact"], true, "{tenant}");
    }
    assert_eq!(summary["offboard_remaining_objects"], 0);
    assert!(
        !dir.path().join("data").exists(),
        "bytes went to local disk instead of S3"
    );

    let (ok, created, stderr) = tenantry(
        dir.path(),
        &bucket,
        &["tenant", "create", "umbrella", "--name", "Umbrella"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(created["tenant"]["state"], "active");
    let (ok, _, stderr) = tenantry(
        dir.path(),
        &bucket,
        &["tenant", "create", "umbrella", "--name", "Again"],
    );
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, deleted, stderr) = tenantry(dir.path(), &bucket, &["tenant", "delete", "umbrella"]);
    assert!(ok, "{stderr}");
    assert_eq!(deleted["verified_clean"], true);
}
