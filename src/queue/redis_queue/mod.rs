//! The Redis backend: every operation is one call of one Lua script (`queue.lua`), atomic and
//! bounded, on keys that share the pool's hash tag. Workers block on a wake-up list instead of
//! polling, and nothing runs per idle tenant.

mod acks;
mod parse;

use async_trait::async_trait;
use rand::Rng;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use crate::queue::contract::{JobQueue, TenantQueueStats};
use crate::queue::types::{
    DeadLetter, Enqueued, Explanation, FailOutcome, JobSpec, Lease, QueueError, QueueResult,
    QueueState, TenantPolicy,
};
use crate::tenant::TenantId;

const SCRIPT: &str = include_str!("queue.lua");

/// A fair queue for one pool, stored in Redis under `<namespace>:{<pool>}`.
pub struct RedisQueue {
    client: redis::Client,
    invoker: Invoker,
    burst_pool: u32,
    blocking: tokio::sync::Mutex<Vec<MultiplexedConnection>>,
    /// Completions, coalesced into `complete_many` calls (see `acks`).
    acks: tokio::sync::mpsc::UnboundedSender<acks::PendingAck>,
}

/// Runs one operation of the queue script on the shard's keys.
#[derive(Clone)]
struct Invoker {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl Invoker {
    async fn run<T: redis::FromRedisValue>(&self, args: Vec<String>) -> QueueResult<T> {
        let mut invocation = self.script.key(&self.prefix);
        for arg in &args {
            invocation.arg(arg);
        }
        let mut conn = self.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)
    }

    /// One status (`ok`, `stale`, `notfound`) per (job reference, token, measured cost);
    /// `now_ms` dates the completions in the shard's done set.
    async fn complete_many(
        &self,
        rows: &[(String, u64, f64)],
        now_ms: u64,
    ) -> QueueResult<Vec<String>> {
        let mut args = Vec::with_capacity(3 + rows.len() * 3);
        args.push("complete_many".to_string());
        args.push(now_ms.to_string());
        args.push(rows.len().to_string());
        for (reference, token, measured) in rows {
            args.push(reference.clone());
            args.push(token.to_string());
            args.push(measured_cost(*measured).to_string());
        }
        self.run(args).await
    }
}

/// A measured cost as the script takes it: finite and not negative.
fn measured_cost(measured: f64) -> f64 {
    if measured.is_finite() {
        measured.max(0.0)
    } else {
        0.0
    }
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisQueue({})", self.invoker.prefix)
    }
}

fn redis_error(error: redis::RedisError) -> QueueError {
    QueueError::Redis(error.to_string())
}

fn job_ref(tenant: &TenantId, job_id: &str) -> String {
    format!("{tenant}/{job_id}")
}

impl RedisQueue {
    /// Connects to `url` (`redis://HOST:PORT`); keys live under `<namespace>:{<pool>}`.
    pub async fn connect(
        url: &str,
        namespace: &str,
        pool: &str,
        burst_pool: u32,
    ) -> QueueResult<Self> {
        let client = redis::Client::open(url).map_err(redis_error)?;
        // Large batches (a 10k-job enqueue is one call) may run longer than the client's
        // default half-second response timeout.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(30)));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(redis_error)?;
        let invoker = Invoker {
            conn,
            prefix: format!("{namespace}:{{{pool}}}"),
            script: redis::Script::new(SCRIPT),
        };
        Ok(Self {
            client,
            acks: acks::spawn(invoker.clone()),
            invoker,
            burst_pool,
            blocking: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// The key prefix (with hash tag) of this shard.
    pub fn prefix(&self) -> &str {
        &self.invoker.prefix
    }

    async fn run<T: redis::FromRedisValue>(&self, args: Vec<String>) -> QueueResult<T> {
        self.invoker.run(args).await
    }

    fn lease_status(status: &str, lease: &Lease) -> QueueResult<()> {
        match status {
            "ok" => Ok(()),
            "notfound" => Err(QueueError::NotFound(lease.job_id.clone())),
            _ => Err(QueueError::StaleLease {
                job_id: lease.job_id.clone(),
                token: lease.token,
            }),
        }
    }
}

fn ops(op: &str) -> Vec<String> {
    vec![op.to_string()]
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn set_policy(&self, tenant: &TenantId, policy: TenantPolicy) -> QueueResult<()> {
        let mut args = ops("set_policy");
        args.extend([
            tenant.to_string(),
            policy.weight.max(1e-9).to_string(),
            policy.cap_floor.to_string(),
            policy.cap_max.to_string(),
            policy.rate_per_sec.max(0.0).to_string(),
            policy.rate_burst.max(1).to_string(),
        ]);
        let _: String = self.run(args).await?;
        Ok(())
    }

    async fn enqueue(&self, specs: Vec<JobSpec>, now_ms: u64) -> QueueResult<Vec<Enqueued>> {
        let mut args = ops("enqueue");
        args.push(now_ms.to_string());
        args.push(specs.len().to_string());
        for spec in &specs {
            args.extend([
                spec.job_id.clone(),
                spec.tenant.to_string(),
                spec.group.clone(),
                spec.band.index().to_string(),
                spec.cost_estimate.max(0.0).to_string(),
                spec.idempotency_key_opt.clone().unwrap_or_default(),
                spec.run_at_ms_opt.unwrap_or(0).to_string(),
                parse::job_record(spec.max_attempts.max(1), &spec.payload, &spec.kind),
            ]);
        }
        let flat: Vec<String> = self.run(args).await?;
        Ok(flat
            .chunks(2)
            .map(|pair| Enqueued {
                job_id: pair[0].clone(),
                existing: pair.get(1).is_some_and(|flag| flag == "1"),
            })
            .collect())
    }

    async fn lease(
        &self,
        _worker: &str,
        max: usize,
        lease_ms: u64,
        now_ms: u64,
    ) -> QueueResult<Vec<Lease>> {
        let mut args = ops("lease");
        args.extend([
            now_ms.to_string(),
            max.to_string(),
            lease_ms.to_string(),
            self.burst_pool.to_string(),
        ]);
        let flat: Vec<String> = self.run(args).await?;
        parse::leases(&flat)
    }

    async fn wait_for_work(&self, wait_ms: u64) -> QueueResult<()> {
        let pooled = self.blocking.lock().await.pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            // BLPOP blocks for up to `wait_ms`: no client-side response timeout on this
            // connection (the server's own timeout bounds the wait).
            None => self
                .client
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new().set_response_timeout(None),
                )
                .await
                .map_err(redis_error)?,
        };
        let timeout_secs = (wait_ms.max(1) as f64) / 1000.0;
        let result: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
            .arg(format!("{}:wake", self.invoker.prefix))
            .arg(timeout_secs)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => {
                self.blocking.lock().await.push(conn);
                Ok(())
            }
            Err(error) => Err(redis_error(error)),
        }
    }

    async fn heartbeat(&self, lease: &Lease, lease_ms: u64, now_ms: u64) -> QueueResult<()> {
        let mut args = ops("heartbeat");
        args.extend([
            job_ref(&lease.tenant, &lease.job_id),
            lease.token.to_string(),
            (now_ms + lease_ms).to_string(),
        ]);
        let status: String = self.run(args).await?;
        Self::lease_status(&status, lease)
    }

    async fn complete(&self, lease: &Lease, measured_cost: f64, now_ms: u64) -> QueueResult<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = acks::PendingAck {
            reference: job_ref(&lease.tenant, &lease.job_id),
            token: lease.token,
            measured: measured_cost,
            now_ms,
            reply,
        };
        if self.acks.send(pending).is_err() {
            return Err(QueueError::Redis(
                "the completion task has stopped".to_string(),
            ));
        }
        let status = answer.await.map_err(|_| {
            QueueError::Redis("the completion task dropped a completion".to_string())
        })??;
        Self::lease_status(&status, lease)
    }

    async fn complete_many(
        &self,
        done: &[(Lease, f64)],
        now_ms: u64,
    ) -> QueueResult<Vec<QueueResult<()>>> {
        let rows: Vec<(String, u64, f64)> = done
            .iter()
            .map(|(lease, cost)| (job_ref(&lease.tenant, &lease.job_id), lease.token, *cost))
            .collect();
        let statuses = self.invoker.complete_many(&rows, now_ms).await?;
        if statuses.len() != done.len() {
            return Err(QueueError::Corrupt(format!(
                "complete_many answered {} statuses for {} completions",
                statuses.len(),
                done.len()
            )));
        }
        Ok(done
            .iter()
            .zip(statuses)
            .map(|((lease, _), status)| Self::lease_status(&status, lease))
            .collect())
    }

    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retryable: bool,
        now_ms: u64,
    ) -> QueueResult<FailOutcome> {
        let jitter: f64 = rand::thread_rng().r#gen();
        let mut args = ops("fail");
        args.extend([
            job_ref(&lease.tenant, &lease.job_id),
            lease.token.to_string(),
            error.to_string(),
            if retryable { "1" } else { "0" }.to_string(),
            now_ms.to_string(),
            jitter.to_string(),
        ]);
        let reply: Vec<String> = self.run(args).await?;
        match reply.first().map(String::as_str) {
            Some("retry") | Some("dead") => parse::fail_outcome(&reply),
            Some(status) => {
                Self::lease_status(status, lease).map(|_| unreachable!("non-ok status"))
            }
            None => Err(QueueError::Corrupt("empty fail reply".to_string())),
        }
    }

    async fn reap(&self, now_ms: u64) -> QueueResult<Vec<(TenantId, String, FailOutcome)>> {
        let seed: u32 = rand::thread_rng().gen_range(1..i32::MAX as u32);
        let mut args = ops("reap");
        args.extend([now_ms.to_string(), seed.to_string()]);
        let flat: Vec<String> = self.run(args).await?;
        flat.chunks(5)
            .map(|row| {
                if row.len() != 5 {
                    return Err(QueueError::Corrupt(format!("short reap row {row:?}")));
                }
                let tenant =
                    TenantId::parse(&row[1]).map_err(|e| QueueError::Corrupt(e.to_string()))?;
                Ok((tenant, row[0].clone(), parse::fail_outcome(&row[2..])?))
            })
            .collect()
    }

    async fn cancel(&self, tenant: &TenantId, job_id: &str) -> QueueResult<Option<QueueState>> {
        let mut args = ops("cancel");
        args.push(job_ref(tenant, job_id));
        let previous: String = self.run(args).await?;
        parse::state_opt(&previous)
    }

    async fn state(&self, tenant: &TenantId, job_id: &str) -> QueueResult<Option<QueueState>> {
        let mut args = ops("state");
        args.push(job_ref(tenant, job_id));
        let state: String = self.run(args).await?;
        parse::state_opt(&state)
    }

    async fn dead_letters(&self, tenant: &TenantId) -> QueueResult<Vec<DeadLetter>> {
        let mut args = ops("dead_letters");
        args.push(tenant.to_string());
        let flat: Vec<String> = self.run(args).await?;
        parse::dead_letters(&flat)
    }

    async fn redrive(&self, tenant: &TenantId, job_id: &str, _now_ms: u64) -> QueueResult<bool> {
        let mut args = ops("redrive");
        args.push(job_ref(tenant, job_id));
        let redriven: i64 = self.run(args).await?;
        Ok(redriven == 1)
    }

    async fn explain(
        &self,
        tenant: &TenantId,
        job_id: &str,
        now_ms: u64,
    ) -> QueueResult<Option<Explanation>> {
        let mut args = ops("explain");
        args.extend([job_ref(tenant, job_id), now_ms.to_string()]);
        let fields: Vec<String> = self.run(args).await?;
        parse::explanation(job_id, &fields)
    }

    async fn forget_tenant(&self, tenant: &TenantId) -> QueueResult<u64> {
        let mut cancelled = 0;
        // Bounded batches: each call cancels and deletes at most 1,000 jobs of the tenant.
        loop {
            let mut args = ops("forget_tenant");
            args.push(tenant.to_string());
            let (done, removed): (i64, u64) = self.run(args).await?;
            cancelled += removed;
            if done == 1 {
                return Ok(cancelled);
            }
        }
    }

    async fn tenant_stats(&self, tenant: &TenantId) -> QueueResult<TenantQueueStats> {
        let mut args = ops("stats");
        args.push(tenant.to_string());
        let fields: Vec<String> = self.run(args).await?;
        parse::stats(&fields)
    }
}
