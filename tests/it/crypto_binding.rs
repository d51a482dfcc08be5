//! Ciphertext is bound to its tenant and path: bytes copied on disk to another tenant's prefix
//! or to another path of the same tenant fail to decrypt, and nothing is served in clear.

use reqwest::StatusCode;
use tenantry::TenantId;
use tenantry::storage::{RelativePath, StorageError};

use crate::support::{TestServer, canary_csv, files_under};

const CANARY: &str = "CANARY-crypto-91ab";

fn copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

#[tokio::test]
async fn ciphertext_moved_to_another_tenant_or_path_fails_to_decrypt() {
    let server = TestServer::start().await;
    let acme = server.onboard("acme", "free").await;
    let globex = server.onboard("globex", "free").await;
    assert_eq!(
        server
            .upload_csv(&acme, "secret", &canary_csv(CANARY))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        server
            .upload_csv(&acme, "other", "id,x\n1,2\n")
            .await
            .status,
        StatusCode::CREATED
    );
    let root = server.data_dir().join("tenants");

    // Nothing on disk holds the canary in clear.
    for file in files_under(&server.data_dir()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "{} stores tenant data in clear",
            file.display()
        );
    }

    // Move acme's dataset (data and metadata) into globex's prefix.
    for file in ["data.parquet", "meta.json"] {
        copy(
            &root.join("acme/datasets/secret").join(file),
            &root.join("globex/datasets/secret").join(file),
        );
    }
    let stolen = server.get("/v1/datasets/secret?format=csv", &globex).await;
    assert!(!stolen.status.is_success(), "moved ciphertext was served");
    assert!(!stolen.text().contains(CANARY));
    let globex_store = server
        .platform
        .tenant_store(&TenantId::parse("globex").unwrap())
        .await
        .unwrap();
    let direct = globex_store
        .get(&RelativePath::parse("datasets/secret/data.parquet").unwrap())
        .await;
    assert!(
        matches!(direct, Err(StorageError::Crypto { .. })),
        "{direct:?}"
    );

    // Move one of acme's objects onto another of its paths.
    copy(
        &root.join("acme/datasets/secret/data.parquet"),
        &root.join("acme/datasets/other/data.parquet"),
    );
    let swapped = server.get("/v1/datasets/other?format=csv", &acme).await;
    assert!(!swapped.status.is_success());
    assert!(!swapped.text().contains(CANARY));

    // The original is still readable by its owner.
    let original = server.get("/v1/datasets/secret?format=csv", &acme).await;
    assert_eq!(original.status, StatusCode::OK);
    assert!(original.text().contains(CANARY));
}
