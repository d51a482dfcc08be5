//! The CLI end to end: onboarding, keys, listing, offboarding and the demo, with `--json`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn tenantry(dir: &Path, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(args)
        .arg("--json")
        .env("TENANTRY_STORAGE_URL", format!("file://{}", dir.display()))
        .env("TENANTRY_USAGE_JOURNAL", dir.join("usage-journal"))
        .env_remove("TENANTRY_MASTER_KEY_FILE")
        .env_remove("TENANTRY_ADMIN_KEY")
        .output()
        .expect("cli runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.success(), json, stderr)
}

#[test]
fn operators_onboard_issue_keys_and_offboard_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, created, stderr) = tenantry(
        dir.path(),
        &[
            "tenant", "create", "acme", "--name", "Acme", "--plan", "pro",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(created["tenant"]["state"], "active");
    assert!(
        created["admin_key"]["token"]
            .as_str()
            .unwrap()
            .starts_with("tnt_")
    );
    assert!(created["onboarding_ms"].as_f64().is_some());
    // The generated master key warning names the data directory, never a key.
    assert!(
        stderr.contains("generated a platform master key"),
        "{stderr}"
    );

    let (ok, key, stderr) = tenantry(
        dir.path(),
        &["key", "create", "--tenant", "acme", "--role", "viewer"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(key["role"], "viewer");
    let (ok, refused, _) = tenantry(
        dir.path(),
        &[
            "key",
            "create",
            "--tenant",
            "acme",
            "--role",
            "platform-admin",
        ],
    );
    assert!(!ok, "{refused}");

    let (ok, listed, _) = tenantry(dir.path(), &["tenant", "list"]);
    assert!(ok);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (ok, keys, _) = tenantry(dir.path(), &["key", "list", "--tenant", "acme"]);
    assert!(ok);
    assert_eq!(keys.as_array().unwrap().len(), 2);

    let (ok, deleted, stderr) = tenantry(dir.path(), &["tenant", "delete", "acme"]);
    assert!(ok, "{stderr}");
    assert_eq!(deleted["verified_clean"], true);
    assert_eq!(deleted["keys_revoked"], 2);

    let (ok, _, stderr) = tenantry(
        dir.path(),
        &["tenant", "create", "Not/Valid", "--name", "x"],
    );
    assert!(!ok);
    assert!(stderr.contains("invalid tenant id"), "{stderr}");
}

#[test]
fn the_demo_isolates_tenants_and_offboards_one_cleanly_twice_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let (ok, summary, stderr) = tenantry(dir.path(), &["demo"]);
        assert!(ok, "{stderr}");
        // The shared base is trained by the first run only; the second reuses it.
        assert_eq!(summary["base_version"], "v1");
        assert_eq!(summary["base_trained_now"], run == 0);
        let tenants = summary["tenants"].as_array().unwrap();
        assert_eq!(tenants.len(), 3);
        for tenant in tenants {
            // Each tenant has its clauses and its inbox; initech's migration also stores its
            // mapped data as `clauses`.
            let datasets = if tenant["tenant"] == "initech" { 3 } else { 2 };
            assert_eq!(tenant["datasets_visible"], datasets, "{tenant}");
            assert_eq!(tenant["rows_uploaded"], 2000, "{tenant}");
            assert_eq!(tenant["pipeline"]["state"], "succeeded", "{tenant}");
            assert_eq!(tenant["cross_tenant_status"], 404, "{tenant}");
            assert_eq!(tenant["audit_intact"], true, "{tenant}");
            assert_eq!(tenant["job_state"], "succeeded", "{tenant}");
            let model = &tenant["model"];
            assert_eq!(model["version"], "v1", "{tenant}");
            assert!(model["accuracy"].as_f64().unwrap() >= 0.9, "{tenant}");
            assert_eq!(model["scored_rows"], 500, "{tenant}");
        }
        assert_eq!(summary["offboard_remaining_objects"], 0);
        assert_eq!(summary["offboard_old_key_status"], 401);
    }
}
