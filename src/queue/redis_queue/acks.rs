//! Completion coalescing: concurrent `complete` calls on one queue go to Redis together as one
//! `complete_many` script call. Nothing waits for a batch to fill: while one batch is in
//! flight the next one gathers whatever completions arrive, so a lone completion costs one
//! round trip and a busy pool pays the script's per-call overhead once per batch.

use tokio::sync::{mpsc, oneshot};

use crate::queue::types::{QueueError, QueueResult};

use super::Invoker;

/// The most completions sent in one script call.
const MAX_BATCH: usize = 512;

pub(super) struct PendingAck {
    pub reference: String,
    pub token: u64,
    pub measured: f64,
    pub now_ms: u64,
    pub reply: oneshot::Sender<QueueResult<String>>,
}

/// Starts the coalescing task; it ends when every sender is dropped.
pub(super) fn spawn(invoker: Invoker) -> mpsc::UnboundedSender<PendingAck> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PendingAck>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let rows: Vec<(String, u64, f64)> = batch
                .iter()
                .map(|ack| (ack.reference.clone(), ack.token, ack.measured))
                .collect();
            // the batch is dated by its latest completion
            let now_ms = batch.iter().map(|ack| ack.now_ms).max().unwrap_or(0);
            match invoker.complete_many(&rows, now_ms).await {
                Ok(statuses) if statuses.len() == batch.len() => {
                    for (ack, status) in batch.drain(..).zip(statuses) {
                        let _ = ack.reply.send(Ok(status));
                    }
                }
                Ok(statuses) => {
                    let error = QueueError::Corrupt(format!(
                        "complete_many answered {} statuses for {} completions",
                        statuses.len(),
                        batch.len()
                    ));
                    for ack in batch.drain(..) {
                        let _ = ack.reply.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    for ack in batch.drain(..) {
                        let _ = ack.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    });
    tx
}
