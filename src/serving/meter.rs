//! Usage of online requests: one `api_calls`, the rows scored and the input tokens per request,
//! with the request id as idempotency id. A request is answered only once its events are in the
//! replica's usage journal (`usage::journal`), which becomes Parquet under each tenant's
//! `usage/date=YYYY-MM-DD/` every few seconds, at shutdown and after a crash.

use crate::clock::SharedClock;
use crate::tenant::TenantId;
use crate::usage::journal::FlushReport;
use crate::usage::{JournalError, MICROS, Meter, UsageEvent, UsageJournal};

pub struct ServingMeter {
    clock: SharedClock,
    /// `serve:<replica>`, the events' source.
    source: String,
    journal: UsageJournal,
}

impl ServingMeter {
    pub fn new(journal: UsageJournal, clock: SharedClock, replica: &str) -> Self {
        Self {
            clock,
            source: format!("serve:{replica}"),
            journal,
        }
    }

    /// Meters one answered request; returns once its events are durable.
    pub async fn record(
        &self,
        tenant: &TenantId,
        request_id: &str,
        rows: usize,
        tokens: usize,
    ) -> Result<(), JournalError> {
        let at = self.clock.now();
        let event = |seq: usize, meter: Meter, quantity: usize| UsageEvent {
            id: format!("{request_id}:{seq}"),
            meter,
            quantity_micros: quantity as i64 * MICROS,
            at,
            source: self.source.clone(),
            recorded_at: at,
        };
        let mut events = vec![
            event(0, Meter::ApiCalls, 1),
            event(1, Meter::RowsScored, rows),
        ];
        if tokens > 0 {
            events.push(event(2, Meter::TokensIn, tokens));
        }
        self.journal.append(tenant, events).await
    }

    /// Journal segments waiting to become Parquet.
    pub fn pending_segments(&self) -> usize {
        self.journal.sealed_segments()
    }

    /// Writes every journaled event as Parquet.
    pub async fn flush(&self) -> Result<FlushReport, JournalError> {
        self.journal.flush().await
    }
}

/// Input tokens of a text: its whitespace-separated words.
pub fn tokens(text: &str) -> usize {
    text.split_whitespace().count()
}
