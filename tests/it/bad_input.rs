//! Bad input gets a clear 4xx JSON error, stores nothing, and the server keeps serving.

use reqwest::{Method, StatusCode};

use crate::support::{TEST_UPLOAD_LIMIT, TestServer, canary_csv};

#[tokio::test]
async fn malformed_requests_get_clear_errors_and_store_nothing() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;

    let malformed = server
        .send(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some("application/json"),
            b"{\"role\": ".to_vec(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "bad_request");

    let wrong_type = server
        .send(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some("text/plain"),
            b"{\"role\":\"viewer\"}".to_vec(),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(wrong_type.error_code(), "unsupported_media_type");

    let bad_role = server
        .post_json("/v1/keys", &admin, serde_json::json!({"role": "superuser"}))
        .await;
    assert_eq!(bad_role.status, StatusCode::UNPROCESSABLE_ENTITY);

    let dataset_type = server
        .send(
            Method::PUT,
            "/v1/datasets/x",
            Some(&admin),
            Some("application/pdf"),
            b"%PDF".to_vec(),
        )
        .await;
    assert_eq!(dataset_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let bad_format = server.get("/v1/datasets/x?format=xlsx", &admin).await;
    assert_eq!(bad_format.status, StatusCode::BAD_REQUEST);

    let oversize = vec![b'a'; TEST_UPLOAD_LIMIT + 1];
    let too_big = server
        .send(
            Method::PUT,
            "/v1/datasets/big",
            Some(&admin),
            Some("text/csv"),
            oversize,
        )
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.error_code(), "payload_too_large");

    // A valid Parquet file, then the same file truncated and garbled.
    let good = server.upload_csv(&admin, "good", &canary_csv("ok")).await;
    assert_eq!(good.status, StatusCode::CREATED);
    let parquet = server.get("/v1/datasets/good", &admin).await.body;
    assert_eq!(&parquet[..4], b"PAR1");
    let mut corrupt_cases = vec![
        parquet[..parquet.len() / 2].to_vec(),
        b"PAR1garbagePAR1".to_vec(),
        Vec::new(),
    ];
    let mut garbled = parquet.clone();
    for byte in garbled.iter_mut().skip(4).step_by(5).take(200) {
        *byte = byte.wrapping_add(91);
    }
    corrupt_cases.push(garbled);
    for (index, body) in corrupt_cases.into_iter().enumerate() {
        let reply = server
            .send(
                Method::PUT,
                &format!("/v1/datasets/corrupt-{index}"),
                Some(&admin),
                Some("application/vnd.apache.parquet"),
                body,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "case {index}: {}",
            reply.text()
        );
        assert_eq!(reply.error_code(), "invalid_dataset");
    }
    let bad_csv = server
        .send(
            Method::PUT,
            "/v1/datasets/bad-csv",
            Some(&admin),
            Some("text/csv"),
            b"a,b\n1,2,3,4\n\"unterminated".to_vec(),
        )
        .await;
    assert!(bad_csv.status.is_client_error(), "{}", bad_csv.status);

    // Only the good dataset exists, and the server still serves.
    let listing = server.get("/v1/datasets", &admin).await.json();
    let names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["good"]);
    let health = server
        .send(Method::GET, "/healthz", None, None, Vec::new())
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let unknown = server.get("/v1/nope", &admin).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "not_found");
}

#[tokio::test]
async fn datasets_download_in_all_three_formats() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let jsonl = "{\"id\":1,\"text\":\"alpha\"}\n{\"id\":2,\"text\":\"beta\"}\n";
    let upload = server
        .send(
            Method::PUT,
            "/v1/datasets/lines",
            Some(&admin),
            Some("application/x-ndjson"),
            jsonl.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.text());
    assert_eq!(upload.json()["rows"], 2);

    let csv = server.get("/v1/datasets/lines?format=csv", &admin).await;
    assert_eq!(csv.text(), "id,text\n1,alpha\n2,beta\n");
    let lines = server.get("/v1/datasets/lines?format=jsonl", &admin).await;
    assert_eq!(lines.text(), jsonl);
    let parquet = server.get("/v1/datasets/lines", &admin).await;
    assert_eq!(&parquet.body[..4], b"PAR1");

    let deleted = server
        .send(
            Method::DELETE,
            "/v1/datasets/lines",
            Some(&admin),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/v1/datasets/lines", &admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn openapi_health_and_readiness_are_served() {
    let server = TestServer::start().await;
    let spec = server
        .send(Method::GET, "/openapi.json", None, None, Vec::new())
        .await
        .json();
    let paths = spec["paths"].as_object().unwrap();
    for route in [
        "/v1/tenants",
        "/v1/tenants/{id}",
        "/v1/keys",
        "/v1/datasets",
        "/v1/datasets/{name}",
        "/v1/audit",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(route), "{route} missing from openapi");
    }
    assert_eq!(
        server
            .send(Method::GET, "/readyz", None, None, Vec::new())
            .await
            .status,
        StatusCode::OK
    );
}
