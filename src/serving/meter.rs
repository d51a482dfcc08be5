//! Usage of online requests: one `api_calls`, the rows scored and the input tokens per request,
//! with the request id as idempotency id, buffered per tenant and written as Parquet under the
//! tenant's `usage/date=YYYY-MM-DD/` every few seconds and at shutdown. A failed write keeps the
//! events for the next flush.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::DateTime;

use crate::clock::SharedClock;
use crate::platform::Platform;
use crate::tenant::TenantId;
use crate::usage::{MICROS, Meter, UsageEvent, write_events};

pub struct ServingMeter {
    platform: Platform,
    clock: SharedClock,
    replica: String,
    /// `serve:<replica>`, the events' source.
    source: String,
    buffer: Mutex<HashMap<TenantId, Vec<UsageEvent>>>,
}

impl ServingMeter {
    pub fn new(platform: Platform, clock: SharedClock, replica: String) -> Self {
        Self {
            platform,
            clock,
            source: format!("serve:{replica}"),
            replica,
            buffer: Mutex::new(HashMap::new()),
        }
    }

    /// Meters one answered request.
    pub fn record(&self, tenant: &TenantId, request_id: &str, rows: usize, tokens: usize) {
        let at = DateTime::from_timestamp_millis(self.clock.now_ms() as i64).unwrap_or_default();
        let event = |seq: usize, meter: Meter, quantity: usize| UsageEvent {
            id: format!("{request_id}:{seq}"),
            meter,
            quantity_micros: quantity as i64 * MICROS,
            at,
            source: self.source.clone(),
        };
        let mut buffer = self.buffer.lock().expect("meter poisoned");
        let events = buffer.entry(tenant.clone()).or_default();
        events.push(event(0, Meter::ApiCalls, 1));
        events.push(event(1, Meter::RowsScored, rows));
        if tokens > 0 {
            events.push(event(2, Meter::TokensIn, tokens));
        }
    }

    /// Events waiting to be written.
    pub fn pending(&self) -> usize {
        self.buffer
            .lock()
            .expect("meter poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Writes every buffered event, one file per tenant and day; returns how many were
    /// written. Events of a tenant whose write fails go back into the buffer.
    pub async fn flush(&self) -> usize {
        let taken: Vec<(TenantId, Vec<UsageEvent>)> = {
            let mut buffer = self.buffer.lock().expect("meter poisoned");
            buffer.drain().collect()
        };
        let mut written = 0;
        for (tenant, events) in taken {
            let mut by_day: BTreeMap<String, Vec<UsageEvent>> = BTreeMap::new();
            for event in events {
                by_day
                    .entry(event.at.format("%Y-%m-%d").to_string())
                    .or_default()
                    .push(event);
            }
            let store = match self.platform.tenant_store(&tenant).await {
                Ok(store) => store,
                Err(error) => {
                    // an offboarded tenant's usage has nowhere to go
                    tracing::warn!(%tenant, %error, "dropping serving usage of an unknown tenant");
                    continue;
                }
            };
            for (_, day) in by_day {
                let file = format!("serve-{}-{}.parquet", self.replica, uuid::Uuid::now_v7());
                match write_events(&store, &file, &day).await {
                    Ok(count) => written += count,
                    Err(error) => {
                        tracing::warn!(%tenant, %error, "serving usage not written: kept for the next flush");
                        self.buffer
                            .lock()
                            .expect("meter poisoned")
                            .entry(tenant.clone())
                            .or_default()
                            .extend(day);
                    }
                }
            }
        }
        written
    }
}

/// Input tokens of a text: its whitespace-separated words.
pub fn tokens(text: &str) -> usize {
    text.split_whitespace().count()
}
