//! Cross-tenant isolation at the API: every route that takes a name or id, called by another
//! tenant's keys of every role, answers 403/404 with no byte of the owner's data.

use reqwest::{Method, StatusCode};

use crate::support::{TestServer, canary_csv};

const CANARY: &str = "CANARY-acme-7f3e9";
const ROLES: [&str; 4] = ["tenant-admin", "developer", "viewer", "client"];

/// Substitutes the owner's real object ids into a route template from the OpenAPI document.
/// Real object names of the owner's, by path parameter.
struct Owned<'a> {
    owner: &'a str,
    dataset: &'a str,
    key_id: &'a str,
    job_id: &'a str,
    run_id: &'a str,
    period: &'a str,
}

fn concrete(path: &str, owned: &Owned<'_>) -> String {
    let Owned {
        owner,
        dataset,
        key_id,
        job_id,
        run_id,
        period,
    } = *owned;
    let id = if path.starts_with("/v1/tenants/") {
        owner
    } else {
        job_id
    };
    path.replace("{id}", id)
        .replace("{name}", dataset)
        .replace("{key_id}", key_id)
        .replace("{run}", run_id)
        .replace("{step}", "copy")
        .replace("{file}", "data.parquet")
        .replace("{period}", period)
}

#[tokio::test]
async fn another_tenants_keys_of_every_role_get_404_for_every_routed_object() {
    let server = TestServer::start().await;
    let acme_admin = server.onboard("acme", "pro").await;
    let globex_admin = server.onboard("globex", "pro").await;
    let upload = server
        .upload_csv(&acme_admin, "secret-a", &canary_csv(CANARY))
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.text());
    let (acme_key_id, acme_viewer) = server.key(&acme_admin, "viewer").await;
    let job = server
        .post_json(
            "/v1/jobs",
            &acme_admin,
            serde_json::json!({"kind": "noop", "payload": {"note": CANARY}}),
        )
        .await;
    let acme_job_id = job.json()["job_id"].as_str().unwrap().to_string();
    // A finished pipeline run whose outputs carry the canary.
    let manifest = "apiVersion: tenantry/v1\nkind: Pipeline\nmetadata: {name: copy}\ninputs: {src: {dataset: secret-a}}\nsteps:\n  - id: copy\n    transform: {input: src, ops: [{select: [clause_id, text]}]}\n";
    let run = server
        .send(
            Method::POST,
            "/v1/pipelines",
            Some(&acme_admin),
            Some("application/yaml"),
            manifest.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.text());
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pool = server.start_pool("cpu", shutdown.clone());
    let run_path = format!("/v1/pipelines/{run_id}");
    assert!(
        crate::support::eventually(|| async {
            server.get(&run_path, &acme_admin).await.json()["state"] == "succeeded"
        })
        .await,
        "{}",
        server.get(&run_path, &acme_admin).await.text()
    );
    shutdown.cancel();
    pool.await.unwrap();
    let output = server
        .get(
            &format!("{run_path}/outputs/copy/data.parquet?format=csv"),
            &acme_admin,
        )
        .await;
    assert!(
        output.text().contains(CANARY),
        "the probe targets a real object"
    );
    // A model of acme's under the same name, so model routes probe a real one.
    crate::models::save_small_model(&server, "acme", "secret-a").await;
    assert_eq!(
        server.get("/v1/models/secret-a", &acme_admin).await.status,
        StatusCode::OK
    );
    // An invoice of acme's for this month, so the invoice route probes a real one.
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    tenantry::billing::service::generate_invoice(
        &server.platform,
        &tenantry::tenant::TenantId::parse("acme").unwrap(),
        &period,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        server
            .get(&format!("/v1/invoices/{period}"), &acme_admin)
            .await
            .status,
        StatusCode::OK
    );
    let owned = Owned {
        owner: "acme",
        dataset: "secret-a",
        key_id: &acme_key_id,
        job_id: &acme_job_id,
        run_id: &run_id,
        period: &period,
    };

    let mut globex_tokens = vec![globex_admin.clone()];
    for role in &ROLES[1..] {
        globex_tokens.push(server.key(&globex_admin, role).await.1);
    }

    // The matrix comes from the OpenAPI document, so a new route cannot escape it.
    let spec = server.get("/openapi.json", &globex_admin).await.json();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        if !path.contains('{') {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            // PUT writes into the caller's own namespace; checked separately below.
            if method == "put" {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let uri = concrete(path, &owned);
            for token in &globex_tokens {
                let reply = server
                    .send(method.clone(), &uri, Some(token), None, Vec::new())
                    .await;
                assert!(
                    matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
                    "{method} {uri} answered {}",
                    reply.status
                );
                assert!(!reply.text().contains(CANARY), "{method} {uri} leaked data");
                checked += 1;
            }
        }
    }
    assert!(checked >= 8 * 4, "only {checked} route/role pairs checked");

    // Listing shows nothing of acme's to any of globex's reading roles.
    for token in &globex_tokens[..3] {
        for listing_path in ["/v1/datasets", "/v1/pipelines", "/v1/schedules"] {
            let listing = server.get(listing_path, token).await;
            assert_eq!(listing.status, StatusCode::OK, "{listing_path}");
            assert_eq!(
                listing.json().as_array().unwrap().len(),
                0,
                "{listing_path}"
            );
        }
    }

    // Globex writing the same name creates its own dataset; acme's is untouched.
    let own = server
        .upload_csv(&globex_admin, "secret-a", "id,x\n1,2\n")
        .await;
    assert_eq!(own.status, StatusCode::CREATED);
    let acme_copy = server
        .get("/v1/datasets/secret-a?format=csv", &acme_viewer)
        .await;
    assert_eq!(acme_copy.status, StatusCode::OK);
    assert!(acme_copy.text().contains(CANARY));
    let globex_copy = server
        .get("/v1/datasets/secret-a?format=csv", &globex_admin)
        .await;
    assert!(!globex_copy.text().contains(CANARY));

    // Acme's key still works after every probe.
    assert_eq!(
        server.get("/v1/datasets", &acme_viewer).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn client_keys_cannot_list_or_download_and_viewers_cannot_write() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    server
        .upload_csv(&admin, "clauses", &canary_csv(CANARY))
        .await;
    let (_, client) = server.key(&admin, "client").await;
    let (_, viewer) = server.key(&admin, "viewer").await;

    let list = server.get("/v1/datasets", &client).await;
    assert_eq!(list.status, StatusCode::FORBIDDEN);
    assert_eq!(list.error_code(), "forbidden");
    let download = server.get("/v1/datasets/clauses", &client).await;
    assert_eq!(download.status, StatusCode::FORBIDDEN);
    assert!(!download.text().contains(CANARY));

    let write = server.upload_csv(&viewer, "clauses", "a\n1\n").await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    let keys = server
        .post_json(
            "/v1/keys",
            &viewer,
            serde_json::json!({"role": "developer"}),
        )
        .await;
    assert_eq!(keys.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.get("/v1/datasets/clauses", &viewer).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoked_and_unknown_keys_get_401_and_tenant_keys_cannot_manage_tenants() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let (key_id, developer) = server.key(&admin, "developer").await;
    assert_eq!(
        server.get("/v1/datasets", &developer).await.status,
        StatusCode::OK
    );

    let revoke = server
        .send(
            Method::DELETE,
            &format!("/v1/keys/{key_id}"),
            Some(&admin),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let after = server.get("/v1/datasets", &developer).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.error_code(), "unauthorized");

    for bad in ["", "tnt_x", "tnt_aaaaaaaaaaaa_00", &format!("{developer}0")] {
        let reply = server.get("/v1/datasets", bad).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    let missing = server
        .send(Method::GET, "/v1/datasets", None, None, Vec::new())
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);

    let escalate = server
        .post_json(
            "/v1/tenants",
            &admin,
            serde_json::json!({"id": "evil", "name": "x", "plan": "free"}),
        )
        .await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN);
    let platform_key = server
        .post_json(
            "/v1/keys",
            &admin,
            serde_json::json!({"role": "platform-admin"}),
        )
        .await;
    assert_eq!(platform_key.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_tenant_comes_from_the_key_never_from_the_body() {
    let server = TestServer::start().await;
    let acme = server.onboard("acme", "free").await;
    server.onboard("globex", "free").await;
    // A body naming another tenant is rejected outright (unknown field), not obeyed.
    let reply = server
        .post_json(
            "/v1/keys",
            &acme,
            serde_json::json!({"role": "viewer", "tenant": "globex"}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    let keys = server.get("/v1/keys", &acme).await.json();
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "only the onboarding key exists"
    );
}
