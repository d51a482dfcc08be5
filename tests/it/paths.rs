//! Path traversal and malformed names (security notes, table B3) get 400 at the API.

use reqwest::StatusCode;

use crate::support::TestServer;

#[tokio::test]
async fn traversal_and_malformed_dataset_names_get_400() {
    let server = TestServer::start().await;
    let admin = server.onboard("acme", "free").await;
    let long = "a".repeat(200);
    let cases = [
        "..",
        "..%2Fglobex",
        "..%2f..%2f_system%2fkeys",
        "%2e%2e",
        "%2e%2e%2fx",
        "%252e%252e",
        "%252e%252e%252fx",
        "..%5Cx",
        "a%5Cb",
        "a%00b",
        "a%0Ab",
        "a%2Fb",
        "%2Fetc%2Fpasswd",
        ".hidden",
        "trailing.",
        "trailing%20",
        "caf%C3%A9",
        "cafe%CC%81",
        long.as_str(),
    ];
    for case in cases {
        for method in ["GET", "DELETE", "PUT"] {
            let reply = server
                .send_raw(method, &format!("/v1/datasets/{case}"), &admin, b"id\n1\n")
                .await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{method} {case}: {}",
                reply.text()
            );
            assert_eq!(reply.error_code(), "bad_request");
        }
    }
    // Nothing was written by any of them.
    let listing = server.get("/v1/datasets", &admin).await.json();
    assert_eq!(listing.as_array().unwrap().len(), 0);
}
