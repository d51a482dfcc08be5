//! The serving benchmark's load generator: a separate process (`tenantry bench loadgen`) that
//! sends `POST /v1/predict` over loopback HTTP/1.1 keep-alive connections on an open-loop
//! schedule: each stream's requests arrive as a Poisson process (exponential gaps, mean
//! `1 / rate`, seeded per stream), due whether or not earlier ones have answered, and a
//! request's latency is measured from its due time, so a slow server cannot hide its queueing
//! (no coordinated omission). Streams are independent, as tenants are: no two streams tick
//! together.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One tenant's traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stream {
    pub name: String,
    pub token: String,
    pub rate_per_sec: f64,
    /// Rows per request, drawn in turn.
    pub sizes: Vec<usize>,
    /// Seed of the stream's arrival times.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadPlan {
    /// `HOST:PORT` of the server.
    pub target: String,
    pub seconds: f64,
    pub streams: Vec<Stream>,
    /// Texts the inputs are drawn from.
    pub texts: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamResult {
    pub name: String,
    /// Status code -> responses.
    pub statuses: BTreeMap<u16, u64>,
    /// Latency of each 200 answer, in milliseconds, from its due time.
    pub latencies_ms: Vec<f64>,
    /// Requests that failed at the transport level.
    pub transport_errors: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub seconds: f64,
    pub streams: Vec<StreamResult>,
}

/// A keep-alive HTTP/1.1 connection that reads `Content-Length` bodies.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    async fn open(target: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request and reads the answer; returns the status and body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        target: &str,
        token: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("connection closed in the headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await?;
        Ok((status, body))
    }

    async fn post(&mut self, target: &str, token: &str, body: &[u8]) -> std::io::Result<u16> {
        let (status, _) = self
            .send("POST", "/v1/predict", target, token, body)
            .await?;
        Ok(status)
    }
}

/// One single-row prediction on a fresh connection; returns the status.
pub async fn post_once(target: &str, token: &str, text: &str) -> std::io::Result<u16> {
    let mut connection = Connection::open(target).await?;
    connection
        .post(target, token, &request_body(&[text.to_string()], 1, 0))
        .await
}

/// `GET path` on a fresh connection; returns the body as text.
pub async fn get_text(target: &str, path: &str, token: &str) -> std::io::Result<String> {
    let mut connection = Connection::open(target).await?;
    let (status, body) = connection.send("GET", path, target, token, &[]).await?;
    if status != 200 {
        return Err(std::io::Error::other(format!(
            "GET {path} answered {status}"
        )));
    }
    Ok(String::from_utf8_lossy(&body).to_string())
}

fn request_body(texts: &[String], rows: usize, offset: usize) -> Vec<u8> {
    let inputs: Vec<serde_json::Value> = (0..rows)
        .map(|i| {
            let text = &texts[(offset + i) % texts.len()];
            serde_json::json!({"id": i, "text": text})
        })
        .collect();
    serde_json::json!({ "inputs": inputs })
        .to_string()
        .into_bytes()
}

async fn run_stream(
    target: Arc<str>,
    stream: Stream,
    texts: Arc<Vec<String>>,
    seconds: f64,
) -> StreamResult {
    let result = Arc::new(Mutex::new(StreamResult {
        name: stream.name.clone(),
        ..StreamResult::default()
    }));
    let pool: Arc<Mutex<Vec<Connection>>> = Arc::new(Mutex::new(Vec::new()));
    let token: Arc<str> = Arc::from(stream.token.as_str());
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(stream.seed);
    let rate = stream.rate_per_sec.max(1e-9);
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut at = 0.0;
    for i in 0u64.. {
        // exponential gap: -ln(U) / rate
        let uniform: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
        at += -uniform.ln() / rate;
        if at >= seconds {
            break;
        }
        let due = started + Duration::from_secs_f64(at);
        tokio::time::sleep_until(due).await;
        let rows = stream.sizes[(i as usize) % stream.sizes.len()];
        let body = request_body(&texts, rows, i as usize * 7);
        let (target, token, pool, result) =
            (target.clone(), token.clone(), pool.clone(), result.clone());
        let due = due.into_std();
        tasks.spawn(async move {
            let pooled = pool.lock().expect("pool poisoned").pop();
            let connection = match pooled {
                Some(connection) => Ok(connection),
                None => Connection::open(&target).await,
            };
            let outcome = match connection {
                Ok(mut connection) => match connection.post(&target, &token, &body).await {
                    Ok(status) => {
                        pool.lock().expect("pool poisoned").push(connection);
                        Ok(status)
                    }
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            let latency_ms = Instant::now().saturating_duration_since(due).as_secs_f64() * 1000.0;
            let mut result = result.lock().expect("result poisoned");
            match outcome {
                Ok(status) => {
                    *result.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        result.latencies_ms.push(latency_ms);
                    }
                }
                Err(_) => result.transport_errors += 1,
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    result.lock().expect("result poisoned").clone()
}

/// Runs every stream of `plan` at once.
pub async fn run_load(plan: LoadPlan) -> LoadResult {
    let started = Instant::now();
    let target: Arc<str> = Arc::from(plan.target.as_str());
    // a plan without texts or sizes still sends well-formed single-row requests
    let mut texts = plan.texts;
    if texts.is_empty() {
        texts.push("hello".to_string());
    }
    let texts = Arc::new(texts);
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in plan.streams {
        if stream.sizes.is_empty() {
            stream.sizes.push(1);
        }
        tasks.spawn(run_stream(
            target.clone(),
            stream,
            texts.clone(),
            plan.seconds,
        ));
    }
    let mut streams = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(result) = done {
            streams.push(result);
        }
    }
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    LoadResult {
        seconds: started.elapsed().as_secs_f64(),
        streams,
    }
}
