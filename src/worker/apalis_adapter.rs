//! Runs the fair queue under apalis 1.0's worker runtime (supervision, tower layers) through
//! its `Persistence` seam wrapped in `Persisted`. The queue protocol knows nothing of apalis:
//! dropping apalis later means deleting this file.
//!
//! Task arguments are the `Lease` itself (JSON), its task id is `<tenant>/<job id>`. After an
//! empty fetch a task blocks on the queue's wake-up list and wakes the parked worker, so an idle apalis worker picks
//! up new work at once instead of at its next heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_codec::json::JsonCodec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::persistence::{Persisted, Persistence, TaskEvent, TaskPersistLayer};
use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use serde_json::Value;

use crate::clock::SharedClock;
use crate::jobs::JobService;
use crate::queue::{FailOutcome, JobQueue, Lease, QueueError};

/// A handler error whose message starts with this is not retried (apalis carries only the
/// error's text from the handler to the backend).
pub const PERMANENT_ERROR_PREFIX: &str = "permanent: ";

/// The persistence half: lease, heartbeat, complete and fail through `JobQueue`.
#[derive(Clone)]
pub struct QueuePersistence {
    queue: Arc<dyn JobQueue>,
    clock: SharedClock,
    lease_ms: u64,
    batch: usize,
    held: Arc<Mutex<HashMap<String, Lease>>>,
    /// When set, job records are updated with every acknowledged outcome.
    records_opt: Option<JobService>,
}

fn task_key(lease: &Lease) -> String {
    format!("{}/{}", lease.tenant, lease.job_id)
}

impl QueuePersistence {
    fn take(&self, task_id: &TaskId) -> Option<Lease> {
        self.held
            .lock()
            .expect("held leases poisoned")
            .remove(&task_id.to_string())
    }

    async fn lease_batch(&self, worker: &WorkerContext) -> Result<Vec<Lease>, QueueError> {
        let now = self.clock.now_ms();
        self.queue
            .lease(worker.name(), self.batch, self.lease_ms, now)
            .await
    }

    fn to_tasks(&self, leases: Vec<Lease>) -> Result<Vec<Task<Vec<u8>>>, QueueError> {
        let mut held = self.held.lock().expect("held leases poisoned");
        leases
            .into_iter()
            .map(|lease| {
                let bytes =
                    serde_json::to_vec(&lease).map_err(|e| QueueError::Corrupt(e.to_string()))?;
                let task = TaskBuilder::new(bytes)
                    .task_id(TaskId::from(task_key(&lease)))
                    // apalis increments the attempt it is handed when the task starts.
                    .attempt(lease.attempt.saturating_sub(1) as usize)
                    .max_attempts(lease.max_attempts as usize)
                    .build();
                held.insert(task_key(&lease), lease);
                Ok(task)
            })
            .collect()
    }
}

impl QueuePersistence {
    async fn record_success(&self, lease: &Lease, output: &Value) {
        let Some(jobs) = &self.records_opt else {
            return;
        };
        let Ok(store) = jobs.platform().tenant_store(&lease.tenant).await else {
            return;
        };
        let location = output["output_location"].as_str().map(str::to_string);
        let continuation = serde_json::from_value(output["continuation"].clone()).ok();
        if let Err(error) = jobs
            .record_success(&store, &lease.job_id, location, continuation)
            .await
        {
            tracing::warn!(job_id = %lease.job_id, %error, "cannot record the success");
        }
    }

    async fn record_failure(&self, lease: &Lease, message: &str, outcome: &FailOutcome) {
        let Some(jobs) = &self.records_opt else {
            return;
        };
        let Ok(store) = jobs.platform().tenant_store(&lease.tenant).await else {
            return;
        };
        let _ = jobs
            .record_failure(&store, &lease.job_id, message, outcome)
            .await;
    }
}

impl Persistence for QueuePersistence {
    type Compact = Vec<u8>;
    type Response = Value;
    type Error = QueueError;

    async fn register(&mut self, _worker: &WorkerContext) -> Result<(), QueueError> {
        Ok(())
    }

    /// Extends every lease this worker holds; a stale one (cancelled or reaped) is dropped.
    async fn heartbeat(&mut self, _worker: &WorkerContext) -> Result<(), QueueError> {
        let leases: Vec<Lease> = self
            .held
            .lock()
            .expect("held leases poisoned")
            .values()
            .cloned()
            .collect();
        for lease in leases {
            match self
                .queue
                .heartbeat(&lease, self.lease_ms, self.clock.now_ms())
                .await
            {
                Ok(()) => {}
                Err(QueueError::StaleLease { .. }) | Err(QueueError::NotFound(_)) => {
                    self.held
                        .lock()
                        .expect("held leases poisoned")
                        .remove(&task_key(&lease));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Never blocks: an empty result parks the apalis worker, and `ApalisQueueBackend`
    /// arranges the wake-up (see `poll_next`).
    async fn fetch_next(
        &mut self,
        worker: &WorkerContext,
    ) -> Result<Vec<Task<Vec<u8>>>, QueueError> {
        let leases = self.lease_batch(worker).await?;
        self.to_tasks(leases)
    }

    /// Tasks fetched but never started (the worker is stopping) go back through a failed
    /// attempt, which the queue retries.
    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Vec<u8>>>,
        _worker: &WorkerContext,
    ) -> Result<u64, QueueError> {
        let mut released = 0;
        for task in tasks {
            let Some(task_id) = task.task_id() else {
                continue;
            };
            if let Some(lease) = self.take(task_id) {
                self.queue
                    .fail(
                        &lease,
                        "released by a stopping worker",
                        true,
                        self.clock.now_ms(),
                    )
                    .await?;
                released += 1;
            }
        }
        Ok(released)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Value>>,
        _worker: &WorkerContext,
    ) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        for event in events {
            let TaskEvent::Complete(result) = event else {
                continue;
            };
            let Some(lease) = self.take(&result.task_id) else {
                continue;
            };
            let acknowledged = match (&result.status, &result.result) {
                (Status::Done, Ok(output)) => {
                    let ran_ms =
                        now.saturating_sub(lease.expires_at_ms.saturating_sub(self.lease_ms));
                    let done = self
                        .queue
                        .complete(&lease, ran_ms as f64 / 1000.0, now)
                        .await;
                    if done.is_ok() {
                        self.record_success(&lease, output).await;
                    }
                    done
                }
                (status, result) => {
                    let text = match result {
                        Err(message) => message.clone(),
                        Ok(_) => format!("ended as {status:?}"),
                    };
                    let (retryable, message) = match text.strip_prefix(PERMANENT_ERROR_PREFIX) {
                        Some(rest) => (false, rest.to_string()),
                        None => (true, text),
                    };
                    match self.queue.fail(&lease, &message, retryable, now).await {
                        Ok(outcome) => {
                            self.record_failure(&lease, &message, &outcome).await;
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
            };
            match acknowledged {
                Ok(()) | Err(QueueError::StaleLease { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn push_tasks(&mut self, _tasks: Vec<Task<Vec<u8>>>) -> Result<(), QueueError> {
        Err(QueueError::Corrupt(
            "submit jobs through JobService, not through apalis".to_string(),
        ))
    }
}

/// An apalis backend over one pool's fair queue.
pub struct ApalisQueueBackend {
    persisted: Persisted<QueuePersistence>,
    /// True while a task waits on the queue's wake-up list to wake this parked worker.
    wake_armed: Arc<std::sync::atomic::AtomicBool>,
    codec: JsonCodec<Vec<u8>>,
    heartbeat: Duration,
    batch: usize,
}

impl ApalisQueueBackend {
    /// Job records are updated with each outcome when `records_opt` is given.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        clock: SharedClock,
        lease_ms: u64,
        batch: usize,
        records_opt: Option<JobService>,
    ) -> Self {
        let persistence = QueuePersistence {
            queue,
            clock,
            lease_ms,
            batch: batch.max(1),
            held: Arc::new(Mutex::new(HashMap::new())),
            records_opt,
        };
        Self {
            persisted: Persisted::new(persistence),
            wake_armed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            codec: JsonCodec::default(),
            heartbeat: Duration::from_millis((lease_ms / 3).max(100)),
            batch: batch.max(1),
        }
    }
}

impl Backend for ApalisQueueBackend {
    type Task = Task<Vec<u8>>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.persisted.poll_ready(cx, worker, self.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, QueueError>>> {
        let polled = self.persisted.poll_next(cx, worker);
        // After an empty fetch apalis parks the worker until something wakes it, which can be
        // its next heartbeat or much later. Wake it as soon as the queue signals new work (or
        // after one heartbeat interval, so heartbeats and acks keep flowing).
        if polled.is_pending()
            && matches!(
                self.persisted.state(),
                apalis_core::backend::persistence::State::Ready
            )
            && !self
                .wake_armed
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let queue = self.persisted.queue.clone();
            let armed = self.wake_armed.clone();
            let waker = cx.waker().clone();
            let wait_ms = self.heartbeat.as_millis() as u64;
            tokio::spawn(async move {
                let _ = queue.wait_for_work(wait_ms).await;
                armed.store(false, std::sync::atomic::Ordering::SeqCst);
                waker.wake();
            });
        }
        polled
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.persisted.poll_close(cx, worker)
    }
}

impl BackendConfig for ApalisQueueBackend {
    type Args = Lease;
    type Id = String;
    type Kind = Durable;
    type Config = ();
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        self.persisted
            .layer(JsonCodec::<Value>::default(), self.batch)
            .persist_results(true)
            .lock_tasks(false)
    }
}

impl WireFormatBackend for ApalisQueueBackend {
    type Codec = JsonCodec<Vec<u8>>;
    type Compact = Vec<u8>;

    fn codec(&self) -> &Self::Codec {
        &self.codec
    }
}
