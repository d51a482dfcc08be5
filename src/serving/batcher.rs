//! Micro-batching across requests, fair between tenants.
//!
//! Requests wait in one queue per tenant. A batch worker that finds work waits a short window
//! for more (unless a full batch is already queued), then takes up to `max_batch_rows` rows by
//! deficit round robin over the tenants with queued work: each visit adds `quantum_rows` to the
//! tenant's deficit and takes its requests while they fit in it. A tenant sending 256-row
//! batches therefore gets the same rows per round as one sending single rows, whose requests
//! wait at most one round. Inference runs on the blocking pool, never on the async threads.
//! The queue is bounded in rows: when it is full a request is refused at once (503).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::tenant::TenantId;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    /// Rows per batch at most.
    pub max_batch_rows: usize,
    /// How long a worker that found a partial batch waits for more requests.
    pub window: Duration,
    /// Rows waiting in all queues at most; beyond it requests are refused.
    pub max_queued_rows: usize,
    /// Rows a tenant may take per round.
    pub quantum_rows: usize,
    /// Batches scored at once.
    pub workers: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_batch_rows: 256,
            window: Duration::from_micros(500),
            max_queued_rows: 16_384,
            quantum_rows: 32,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// One request's rows: `run` scores them and answers the request.
pub struct Work {
    pub tenant: TenantId,
    pub rows: usize,
    pub run: Box<dyn FnOnce() + Send>,
}

#[derive(Default)]
struct Queues {
    per_tenant: HashMap<TenantId, VecDeque<Work>>,
    /// Tenants with queued work, in round-robin order.
    ring: VecDeque<TenantId>,
    deficit: HashMap<TenantId, usize>,
    rows: usize,
}

impl Queues {
    /// Takes one batch by deficit round robin.
    fn take_batch(&mut self, max_rows: usize, quantum: usize) -> Vec<Work> {
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut idle_visits = 0;
        while rows < max_rows && !self.ring.is_empty() {
            // a whole round took nothing because the batch cannot fit more: it is done
            if rows > 0 && idle_visits >= self.ring.len() {
                break;
            }
            let Some(tenant) = self.ring.pop_front() else {
                break;
            };
            let deficit = self.deficit.entry(tenant.clone()).or_insert(0);
            *deficit += quantum;
            let mut took = false;
            let queue = self.per_tenant.entry(tenant.clone()).or_default();
            while let Some(front) = queue.front() {
                let n = front.rows;
                let fits_batch = rows == 0 || rows + n <= max_rows;
                if n > *deficit || !fits_batch {
                    break;
                }
                *deficit -= n;
                rows += n;
                took = true;
                batch.extend(queue.pop_front());
            }
            if queue.is_empty() {
                self.per_tenant.remove(&tenant);
                self.deficit.remove(&tenant);
            } else {
                self.ring.push_back(tenant);
            }
            idle_visits = if took { 0 } else { idle_visits + 1 };
        }
        self.rows -= rows;
        batch
    }
}

struct Shared {
    settings: BatchSettings,
    queues: Mutex<Queues>,
    notify: Notify,
    /// Set when the last `Batcher` handle is dropped: the workers stop.
    closed: std::sync::atomic::AtomicBool,
}

/// Owned by every `Batcher` clone; the last one dropped stops the workers.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    pub queued_rows: usize,
}

/// The batching front of the scoring workers.
#[derive(Clone)]
pub struct Batcher {
    owner: Arc<Owner>,
}

impl Batcher {
    /// Starts `settings.workers` batch workers on the current runtime.
    pub fn start(settings: BatchSettings) -> Self {
        let shared = Arc::new(Shared {
            settings,
            queues: Mutex::new(Queues::default()),
            notify: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        for _ in 0..settings.workers.max(1) {
            tokio::spawn(worker(shared.clone()));
        }
        Self {
            owner: Arc::new(Owner(shared)),
        }
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// Queues a request's rows, or refuses at once when the queue is full.
    pub fn submit(&self, work: Work) -> Result<(), QueueFull> {
        let n = work.rows;
        {
            let mut queues = self.shared().queues.lock().expect("batcher poisoned");
            if queues.rows + n > self.shared().settings.max_queued_rows {
                return Err(QueueFull {
                    queued_rows: queues.rows,
                });
            }
            queues.rows += n;
            let tenant = work.tenant.clone();
            let queue = queues.per_tenant.entry(tenant.clone()).or_default();
            queue.push_back(work);
            if queue.len() == 1 {
                queues.ring.push_back(tenant);
            }
        }
        self.shared().notify.notify_one();
        Ok(())
    }

    /// Rows waiting now.
    pub fn queued_rows(&self) -> usize {
        self.shared().queues.lock().expect("batcher poisoned").rows
    }
}

async fn worker(shared: Arc<Shared>) {
    use std::sync::atomic::Ordering;
    loop {
        let notified = shared.notify.notified();
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let queued = shared.queues.lock().expect("batcher poisoned").rows;
        if queued == 0 {
            notified.await;
            continue;
        }
        let settings = shared.settings;
        if queued < settings.max_batch_rows && !settings.window.is_zero() {
            tokio::time::sleep(settings.window).await;
        }
        let (batch, more) = {
            let mut queues = shared.queues.lock().expect("batcher poisoned");
            let batch = queues.take_batch(settings.max_batch_rows, settings.quantum_rows);
            (batch, queues.rows > 0)
        };
        // more work than this batch: let another worker start on it
        if more {
            shared.notify.notify_one();
        }
        if batch.is_empty() {
            continue;
        }
        let scored = tokio::task::spawn_blocking(move || {
            for work in batch {
                (work.run)();
            }
        })
        .await;
        if let Err(error) = scored {
            tracing::error!(%error, "a scoring batch failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues_with(requests: &[(&str, usize)]) -> Queues {
        let mut queues = Queues::default();
        for (tenant, rows) in requests {
            let tenant = TenantId::parse(tenant).unwrap();
            let work = Work {
                tenant: tenant.clone(),
                rows: *rows,
                run: Box::new(|| {}),
            };
            queues.rows += rows;
            let queue = queues.per_tenant.entry(tenant.clone()).or_default();
            queue.push_back(work);
            if queue.len() == 1 {
                queues.ring.push_back(tenant);
            }
        }
        queues
    }

    fn rows_by_tenant(batch: &[Work]) -> HashMap<String, usize> {
        let mut rows = HashMap::new();
        for work in batch {
            *rows.entry(work.tenant.to_string()).or_default() += work.rows;
        }
        rows
    }

    #[test]
    fn large_batches_of_one_tenant_do_not_starve_small_requests_of_another() {
        // the bulk tenant queued first, eight 256-row requests; then one single-row request
        let mut requests = vec![("bulk", 256); 8];
        requests.push(("quiet", 1));
        let mut queues = queues_with(&requests);
        let first = queues.take_batch(256, 32);
        let second = queues.take_batch(256, 32);
        let served: Vec<_> = [first, second].iter().map(|b| rows_by_tenant(b)).collect();
        assert!(
            served.iter().any(|rows| rows.get("quiet") == Some(&1)),
            "the quiet tenant waits behind at most one bulk batch: {served:?}"
        );
        assert_eq!(
            queues.rows,
            8 * 256 + 1 - served.iter().flat_map(|r| r.values()).sum::<usize>()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_every_queued_request_is_answered() {
        let batcher = Batcher::start(BatchSettings {
            max_batch_rows: 4,
            window: Duration::ZERO,
            max_queued_rows: 8,
            quantum_rows: 4,
            workers: 1,
        });
        let acme = TenantId::parse("acme").unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        // the first request holds the only worker until the gate opens
        let done = done_tx.clone();
        batcher
            .submit(Work {
                tenant: acme.clone(),
                rows: 1,
                run: Box::new(move || {
                    let _ = started_tx.send(());
                    let _ = gate_rx.recv();
                    let _ = done.send(0);
                }),
            })
            .unwrap();
        started_rx.await.unwrap();
        for n in 1..=2 {
            let done = done_tx.clone();
            batcher
                .submit(Work {
                    tenant: acme.clone(),
                    rows: 4,
                    run: Box::new(move || {
                        let _ = done.send(n);
                    }),
                })
                .unwrap();
        }
        let refused = batcher.submit(Work {
            tenant: acme.clone(),
            rows: 1,
            run: Box::new(|| {}),
        });
        assert_eq!(refused.err(), Some(QueueFull { queued_rows: 8 }));
        gate_tx.send(()).unwrap();
        let mut answered = Vec::new();
        for _ in 0..3 {
            answered.push(done_rx.recv().await.unwrap());
        }
        answered.sort();
        assert_eq!(answered, vec![0, 1, 2]);
        assert_eq!(batcher.queued_rows(), 0);
    }

    #[test]
    fn equal_demand_gets_equal_rows() {
        let mut requests = Vec::new();
        for _ in 0..64 {
            requests.push(("acme", 8));
            requests.push(("globex", 8));
        }
        let mut queues = queues_with(&requests);
        let batch = queues.take_batch(256, 32);
        let rows = rows_by_tenant(&batch);
        assert_eq!(rows.values().sum::<usize>(), 256);
        assert_eq!(rows["acme"], rows["globex"]);
    }

    #[test]
    fn a_batch_never_exceeds_its_row_bound_and_an_oversized_request_goes_alone() {
        let mut queues = queues_with(&[("acme", 200), ("globex", 100), ("acme", 600)]);
        let first = queues.take_batch(256, 1_000);
        assert!(first.iter().map(|w| w.rows).sum::<usize>() <= 256);
        let mut total = first.iter().map(|w| w.rows).sum::<usize>();
        while queues.rows > 0 {
            let batch = queues.take_batch(256, 1_000);
            assert!(!batch.is_empty(), "every request is eventually taken");
            let rows: usize = batch.iter().map(|w| w.rows).sum();
            assert!(rows <= 256 || batch.len() == 1);
            total += rows;
        }
        assert_eq!(total, 900);
    }
}
