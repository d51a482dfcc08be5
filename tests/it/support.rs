//! Test harness: a real control-plane server on 127.0.0.1:0 over a file store in a temp dir.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tenantry::tenant::Role;
use tenantry::{Platform, Settings};
use tokio::sync::oneshot;

/// Upload limit used by test servers, small enough to test 413 cheaply.
pub const TEST_UPLOAD_LIMIT: usize = 256 * 1024;

pub struct TestServer {
    pub base: String,
    pub platform: Platform,
    pub jobs: tenantry::jobs::JobService,
    pub dir: TempDir,
    runtime_opt: Option<tenantry::config::PoolRuntime>,
    pub admin_token: String,
    pub client: reqwest::Client,
    shutdown_opt: Option<oneshot::Sender<()>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not json ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// Asserts the body is our JSON error shape and returns its code.
    pub fn error_code(&self) -> String {
        let body = self.json();
        assert!(
            body["error"]["message"].is_string(),
            "no error message: {body}"
        );
        body["error"]["code"]
            .as_str()
            .expect("error code")
            .to_string()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings {
            storage_url: format!("file://{}", dir.path().display()),
            max_upload_bytes: TEST_UPLOAD_LIMIT,
            ..Settings::default()
        };
        let platform = Platform::open(settings).await.expect("platform opens");
        let admin = platform
            .keys()
            .issue(None, Role::PlatformAdmin, "tests")
            .await
            .expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let queues = tenantry::jobs::open_queues(platform.settings())
            .await
            .expect("queues");
        let jobs = tenantry::jobs::JobService::new(
            platform.clone(),
            queues,
            platform.settings().pools.clone(),
            std::sync::Arc::new(tenantry::clock::SystemClock),
        );
        let serving = jobs.clone();
        tokio::spawn(async move {
            tenantry::api::serve(listener, serving, async {
                let _ = shutdown_rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            base,
            jobs,
            platform,
            dir,
            admin_token: admin.token.expose().to_string(),
            runtime_opt: None,
            client: reqwest::Client::new(),
            shutdown_opt: Some(shutdown_tx),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Sends a request with an optional bearer token, content type and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token_opt: Option<&str>,
        content_type_opt: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = token_opt {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type_opt {
            request = request.header("content-type", content_type);
        }
        let response = request.body(body).send().await.expect("request sent");
        let status = response.status();
        let body = response.bytes().await.expect("body").to_vec();
        Reply { status, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None, Vec::new())
            .await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(
            Method::POST,
            path,
            Some(token),
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn put_json(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(
            Method::PUT,
            path,
            Some(token),
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Onboards a tenant through the API and returns its tenant-admin token.
    pub async fn onboard(&self, id: &str, plan: &str) -> String {
        let reply = self
            .post_json(
                "/v1/tenants",
                &self.admin_token,
                json!({"id": id, "name": format!("{id} inc"), "plan": plan}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()["admin_key"]["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Issues a key of `role` with a tenant-admin token; returns (key id, token).
    pub async fn key(&self, admin_token: &str, role: &str) -> (String, String) {
        let reply = self
            .post_json(
                "/v1/keys",
                admin_token,
                json!({"role": role, "label": "test"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        let body = reply.json();
        (
            body["key_id"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn upload_csv(&self, token: &str, name: &str, csv: &str) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v1/datasets/{name}"),
            Some(token),
            Some("text/csv"),
            csv.as_bytes().to_vec(),
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown_opt.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A small dataset carrying a canary string that must never reach another tenant.
pub fn canary_csv(canary: &str) -> String {
    format!(
        "clause_id,text,label\n1,\"{canary} governed by Delaware law\",governing_law\n2,\"{canary} may terminate on notice\",termination\n"
    )
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

impl TestServer {
    /// Sends a request with the exact request-target given (no client-side URL normalisation),
    /// over a plain TCP connection; returns the status and body.
    pub async fn send_raw(&self, method: &str, target: &str, token: &str, body: &[u8]) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read response");
        let text = String::from_utf8_lossy(&response).to_string();
        let status_code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body_start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(text.len());
        Reply {
            status: StatusCode::from_u16(status_code).unwrap(),
            body: text.as_bytes()[body_start..].to_vec(),
        }
    }
}

/// Waits (up to 30 s, checking every 20 ms) for an asynchronous worker to reach a state.
/// The deadline only prevents a hang; no assertion depends on how long it took.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

impl TestServer {
    /// Runs one configured pool in-process until `shutdown`, on `runtime_opt` when set.
    pub fn start_pool(
        &self,
        pool: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        start_pool_on(&self.jobs, pool, self.runtime_opt, shutdown)
    }

    /// Makes `start_pool` use this worker runtime instead of the pool's configured one.
    pub fn set_runtime(&mut self, runtime: tenantry::config::PoolRuntime) {
        self.runtime_opt = Some(runtime);
    }
}

pub fn start_pool(
    jobs: &tenantry::jobs::JobService,
    pool: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    start_pool_on(jobs, pool, None, shutdown)
}

fn start_pool_on(
    jobs: &tenantry::jobs::JobService,
    pool: &str,
    runtime_opt: Option<tenantry::config::PoolRuntime>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut config = jobs
        .pools()
        .iter()
        .find(|p| p.name == pool)
        .cloned()
        .expect("pool exists");
    if let Some(runtime) = runtime_opt {
        config.runtime = runtime;
    }
    let runner = test_runner(jobs, config);
    tokio::spawn(async move {
        runner.run_configured(shutdown).await.expect("pool runs");
    })
}

/// A runner for tests: built-in handlers, a one-minute job timeout and a 5 s drain.
pub fn test_runner(
    jobs: &tenantry::jobs::JobService,
    pool: tenantry::config::PoolConfig,
) -> tenantry::worker::PoolRunner {
    let handlers = tenantry::pipeline::handler_registry(false);
    let worker_id = format!("test-{}", uuid::Uuid::now_v7());
    let mut runner = tenantry::worker::PoolRunner::new(jobs.clone(), pool, handlers, worker_id);
    runner.job_timeout = std::time::Duration::from_secs(60);
    runner.drain_timeout = std::time::Duration::from_secs(5);
    runner
}

impl TestServer {
    /// The configured pool `name`, for tests that adjust it before running it.
    pub fn pool(&self, name: &str) -> tenantry::config::PoolConfig {
        self.jobs
            .pools()
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .expect("pool exists")
    }
}
