//! Online serving over real HTTP (the standalone `tenantry serve` router) with real variants
//! fine-tuned over a real shared base, and an injected clock for rate limits and refreshes.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::bench::serving::tune_variant;
use tenantry::clock::ManualClock;
use tenantry::model::{EncoderConfig, ModelRegistry, TrainConfig};
use tenantry::serving::{InputId, PredictInput, PredictRequest, Serving, ServingSettings};
use tenantry::tenant::{Role, TenantId};
use tenantry::usage::{MICROS, Meter, read_events, totals};
use tenantry::{Platform, Settings};

struct Harness {
    platform: Platform,
    serving: Serving,
    clock: Arc<ManualClock>,
    base_url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Harness {
    async fn start(tune: impl FnOnce(&mut ServingSettings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            storage_url: format!("file://{}", dir.path().display()),
            ..Settings::default()
        };
        let platform = Platform::open(settings).await.unwrap();
        platform
            .base_models()
            .train(
                150,
                1,
                EncoderConfig::compact(),
                TrainConfig {
                    epochs: 1,
                    ..TrainConfig::default()
                },
                true,
            )
            .await
            .unwrap();
        let mut serving_settings = ServingSettings::default();
        tune(&mut serving_settings);
        let clock = ManualClock::new(1_800_000_000_000);
        let serving = Serving::start(platform.clone(), serving_settings, clock.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let app = tenantry::serving::routes::router(serving.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            platform,
            serving,
            clock,
            base_url,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// Onboards `id` on `plan` with a variant of `model` tuned on `profile`'s clauses; returns
    /// a `client` key.
    async fn tenant(&self, id: &str, plan: &str, model: &str, profile: &str) -> String {
        let tenant = TenantId::parse(id).unwrap();
        self.platform
            .onboard(&tenant, id, plan, Actor::system())
            .await
            .unwrap();
        self.tune(id, model, profile, 1).await;
        self.platform
            .keys()
            .issue(Some(&tenant), Role::Client, "test client")
            .await
            .unwrap()
            .token
            .expose()
            .to_string()
    }

    async fn registry(&self, id: &str) -> ModelRegistry {
        let store = self
            .platform
            .tenant_store(&TenantId::parse(id).unwrap())
            .await
            .unwrap();
        ModelRegistry::new(store, self.platform.base_models().clone())
    }

    /// Tunes and pins a new version of `model` for `id`; returns the version.
    async fn tune(&self, id: &str, model: &str, profile: &str, seed: u64) -> String {
        let profile = tenantry::fixtures::profile(profile).unwrap();
        let (texts, labels): (Vec<String>, Vec<String>) =
            tenantry::fixtures::clauses(profile, 120, seed)
                .into_iter()
                .filter_map(|c| Some((c.text?, c.label?)))
                .unzip();
        let train = TrainConfig {
            epochs: 2,
            seed,
            ..TrainConfig::default()
        };
        tune_variant(&self.registry(id).await, model, texts, labels, train, None)
            .await
            .unwrap()
            .version
    }

    async fn raw(&self, token: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = self
            .client
            .post(format!("{}/v1/predict", self.base_url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = response.bytes().await.unwrap();
        Reply {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn predict(&self, token: &str, body: Value) -> Reply {
        self.raw(Some(token), body.to_string().into_bytes()).await
    }
}

fn texts(profile: &str, n: usize) -> Vec<String> {
    let profile = tenantry::fixtures::profile(profile).unwrap();
    tenantry::fixtures::clauses(profile, n, 99)
        .into_iter()
        .filter_map(|c| c.text)
        .collect()
}

fn inputs(texts: &[String]) -> Value {
    json!(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"id": format!("r{i}"), "text": t}))
            .collect::<Vec<_>>()
    )
}

fn labels_of(reply: &Reply) -> Vec<String> {
    reply.body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn each_tenant_is_served_by_its_own_variant_and_cannot_reach_another() {
    let h = Harness::start(|_| {}).await;
    let acme = h.tenant("acme", "pro", "clauses", "acme").await;
    let globex = h.tenant("globex", "pro", "clauses", "globex").await;
    // acme alone has a second model
    h.tune("acme", "secret-model", "acme", 3).await;

    let sample = texts("acme", 4);
    let a = h
        .predict(
            &acme,
            json!({"inputs": inputs(&sample), "model": "clauses"}),
        )
        .await;
    let g = h.predict(&globex, json!({"inputs": inputs(&sample)})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    assert_eq!(a.body["predictions"][0]["id"], "r0");
    assert_eq!(a.body["predictions"][0]["model"], "clauses");
    assert_eq!(a.body["predictions"][0]["version"], "v1");
    // two tenants, one model name: two variants (trained on different data), two cache entries
    assert_ne!(
        a.body["predictions"][0]["probabilities"],
        g.body["predictions"][0]["probabilities"]
    );
    assert_eq!(h.serving.cache().stats().entries, 2);

    // globex naming acme's other model: a plain 404 that says nothing about acme
    let probe = h
        .predict(
            &globex,
            json!({"inputs": inputs(&sample), "model": "secret-model"}),
        )
        .await;
    assert_eq!(probe.status, StatusCode::NOT_FOUND);
    assert!(!probe.body.to_string().contains("acme"));
    // a version globex does not have is a 404 too
    let version = h
        .predict(&globex, json!({"inputs": inputs(&sample), "version": "v7"}))
        .await;
    assert_eq!(version.status, StatusCode::NOT_FOUND);
    // acme has two models: it must name one
    let ambiguous = h.predict(&acme, json!({"inputs": inputs(&sample)})).await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST);
    assert!(
        ambiguous.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret-model")
    );
}

#[tokio::test]
async fn a_moved_pin_is_served_after_the_refresh_or_at_once_when_invalidated() {
    let h = Harness::start(|s| s.refresh_ms = 1_000).await;
    let client = h.tenant("acme", "pro", "clauses", "acme").await;
    let body = json!({"inputs": inputs(&texts("acme", 2))});
    assert_eq!(h.predict(&client, body.clone()).await.body["version"], "v1");

    // another process promotes v2: this one serves it once its pin read is older than 1 s
    let v2 = h.tune("acme", "clauses", "acme", 2).await;
    assert_eq!(v2, "v2");
    assert_eq!(h.predict(&client, body.clone()).await.body["version"], "v1");
    h.clock.advance(1_000);
    assert_eq!(h.predict(&client, body.clone()).await.body["version"], "v2");

    // a rollback through this process's API invalidates at once, no waiting
    h.registry("acme")
        .await
        .rollback("clauses", "production", "test")
        .await
        .unwrap();
    h.serving
        .invalidate(&TenantId::parse("acme").unwrap(), "clauses");
    assert_eq!(h.predict(&client, body.clone()).await.body["version"], "v1");
    // naming a version serves it whatever the pin
    let named = h
        .predict(
            &client,
            json!({"inputs": inputs(&texts("acme", 2)), "version": "v2"}),
        )
        .await;
    assert_eq!(named.body["version"], "v2");
}

#[tokio::test]
async fn eviction_and_reload_give_identical_predictions() {
    // room for about one variant: every switch of tenant evicts the other
    let h = Harness::start(|s| s.cache_bytes = 2_000).await;
    let acme = h.tenant("acme", "pro", "clauses", "acme").await;
    let globex = h.tenant("globex", "pro", "clauses", "globex").await;
    let body = json!({"inputs": inputs(&texts("acme", 8))});
    let first = h.predict(&acme, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        h.predict(&globex, body.clone()).await.status,
        StatusCode::OK
    );
    let again = h.predict(&acme, body.clone()).await;
    let stats = h.serving.cache().stats();
    assert!(stats.evictions >= 2, "{stats:?}");
    assert_eq!(stats.loads, 3, "acme was loaded twice: {stats:?}");
    assert!(stats.bytes <= stats.capacity_bytes);
    assert_eq!(first.body["predictions"], again.body["predictions"]);
}

#[tokio::test]
async fn concurrent_misses_load_a_variant_once() {
    let h = Harness::start(|_| {}).await;
    let client = h.tenant("acme", "enterprise", "clauses", "acme").await;
    let body = json!({"inputs": inputs(&texts("acme", 3))});
    let calls = (0..16).map(|_| h.predict(&client, body.clone()));
    for reply in futures::future::join_all(calls).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(h.serving.cache().stats().loads, 1);
}

#[tokio::test]
async fn over_the_rate_limit_answers_429_with_retry_after_until_tokens_return() {
    let h = Harness::start(|_| {}).await;
    // free plan: 10 requests/s, bursts of 20
    let client = h.tenant("acme", "free", "clauses", "acme").await;
    let body = json!({"inputs": inputs(&texts("acme", 1))});
    for n in 0..20 {
        assert_eq!(
            h.predict(&client, body.clone()).await.status,
            StatusCode::OK,
            "request {n}"
        );
    }
    let limited = h.predict(&client, body.clone()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    // a tenant's throttling does not touch another tenant
    let other = h.tenant("globex", "free", "clauses", "globex").await;
    assert_eq!(h.predict(&other, body.clone()).await.status, StatusCode::OK);
    // 100 ms later one token is back
    h.clock.advance(100);
    assert_eq!(
        h.predict(&client, body.clone()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.predict(&client, body.clone()).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let figures = h.serving.stats().tenant(&TenantId::parse("acme").unwrap());
    assert_eq!(figures.outcomes.get("rate_limited"), Some(&2));
    assert_eq!(figures.outcomes.get("ok"), Some(&21));
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_answers_and_the_server_keeps_serving() {
    let h = Harness::start(|s| {
        s.max_inputs = 8;
        s.max_text_bytes = 200;
    })
    .await;
    let client = h.tenant("acme", "pro", "clauses", "acme").await;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "empty inputs",
            br#"{"inputs": []}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "too many inputs",
            json!({"inputs": inputs(&vec!["a".to_string(); 9])})
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most 8",
        ),
        (
            "oversize text",
            json!({"inputs": [{"id": 1, "text": "x".repeat(201)}]})
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "inputs[0].text",
        ),
        (
            "wrong type",
            br#"{"inputs": [{"id": 1, "text": 5}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "inputs[0].text",
        ),
        (
            "invalid UTF-8",
            b"{\"inputs\": [{\"id\": 1, \"text\": \"caf\xff\"}]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid body",
        ),
        (
            "not JSON",
            b"inputs=1".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid body",
        ),
        (
            "unknown field",
            br#"{"inputs": [{"id": 1, "text": "a"}], "tenant": "globex"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "tenant",
        ),
    ];
    for (name, body, status, needle) in cases {
        let reply = h.raw(Some(&client), body).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{name}: {message}");
    }
    let anonymous = h
        .raw(None, br#"{"inputs": [{"id": 1, "text": "a"}]}"#.to_vec())
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let wrong_key = h
        .raw(
            Some("tnt_nokey_secret"),
            br#"{"inputs": [{"id": 1, "text": "a"}]}"#.to_vec(),
        )
        .await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);
    let fine = h
        .predict(
            &client,
            json!({"inputs": [{"id": 7, "text": "Either party may terminate"}]}),
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(fine.body["predictions"][0]["id"], 7);
}

#[tokio::test]
async fn every_answered_request_is_metered_in_the_tenants_usage() {
    let h = Harness::start(|_| {}).await;
    let client = h.tenant("acme", "pro", "clauses", "acme").await;
    let sample = texts("acme", 5);
    for _ in 0..3 {
        let reply = h.predict(&client, json!({"inputs": inputs(&sample)})).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // a refused request is not metered
    let bad = h.predict(&client, json!({"inputs": []})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(h.serving.flush_usage().await.unwrap().events > 0);
    assert_eq!(h.serving.pending_usage(), 0);
    let store = h
        .platform
        .tenant_store(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let sums = totals(&read_events(&store).await.unwrap());
    assert_eq!(sums.get(&Meter::ApiCalls), Some(&(3 * MICROS)));
    assert_eq!(sums.get(&Meter::RowsScored), Some(&(15 * MICROS)));
    let words: usize = sample.iter().map(|t| t.split_whitespace().count()).sum();
    assert_eq!(
        sums.get(&Meter::TokensIn),
        Some(&(3 * words as i64 * MICROS))
    );
}

#[tokio::test]
async fn the_library_call_and_the_http_answer_agree() {
    let h = Harness::start(|_| {}).await;
    let client = h.tenant("acme", "pro", "clauses", "acme").await;
    let sample = texts("acme", 3);
    let http = h.predict(&client, json!({"inputs": inputs(&sample)})).await;
    let principal = h.serving.authenticate(&client).await.unwrap();
    let request = PredictRequest {
        inputs: sample
            .iter()
            .enumerate()
            .map(|(i, text)| PredictInput {
                id: InputId::Text(format!("r{i}")),
                text: text.clone(),
            })
            .collect(),
        model: None,
        version: None,
    };
    let direct = h
        .serving
        .predict(&principal, request, "req-1")
        .await
        .unwrap();
    assert_eq!(
        labels_of(&http),
        direct
            .predictions
            .iter()
            .map(|p| p.label.clone())
            .collect::<Vec<_>>()
    );
}
