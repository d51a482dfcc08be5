//! The per-tenant, hash-chained audit log.
//!
//! Records live in the tenant's prefix as `audit/<seq>.json` (encrypted like all tenant data),
//! each carrying `hash = SHA-256("tenantry-audit-v1" | record without hash | prev_hash)`. A
//! checkpoint of the head (`_system/audit-heads/<tenant>.json`) lets verification notice a
//! truncated tail, which a bare chain cannot. Appends use create-if-absent writes, so two
//! writers can never both claim a sequence number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{RelativePath, StorageError, SystemStore, TenantStore};
use crate::tenant::TenantId;

const GENESIS_HASH: &str = "genesis";
const DOMAIN: &[u8] = b"tenantry-audit-v1";
const APPEND_ATTEMPTS: usize = 8;

/// Who did it: a key id and role, or the platform itself (`system`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub key_id: String,
    pub role: String,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            key_id: "system".to_string(),
            role: "system".to_string(),
        }
    }
}

/// What to record; the log adds sequence, time and hashes.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: Actor,
    pub action: &'static str,
    pub resource: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub tenant: String,
    pub actor: Actor,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    fn compute_hash(&self) -> String {
        let mut unsigned = self.clone();
        unsigned.hash = String::new();
        let body = serde_json::to_vec(&unsigned).expect("audit records always serialise");
        let mut digest = Sha256::new();
        digest.update(DOMAIN);
        digest.update(&body);
        digest.update(self.prev_hash.as_bytes());
        hex::encode(digest.finalize())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// One problem found by verification, at a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditProblem {
    pub seq: u64,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditVerification {
    pub tenant: String,
    pub records: usize,
    pub head_seq: u64,
    pub problems: Vec<AuditProblem>,
}

impl AuditVerification {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("audit append kept racing with another writer")]
    Contention,
}

type HeadSlot = Arc<tokio::sync::Mutex<Option<Head>>>;

/// Appends, reads and verifies tenants' audit chains.
#[derive(Clone)]
pub struct AuditLog {
    system: SystemStore,
    heads: Arc<Mutex<HashMap<TenantId, HeadSlot>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

fn record_path(seq: u64) -> RelativePath {
    RelativePath::parse(&format!("audit/{seq:012}.json")).expect("audit paths are valid")
}

fn checkpoint_key(tenant: &TenantId) -> String {
    format!("audit-heads/{tenant}.json")
}

impl AuditLog {
    pub fn new(system: SystemStore) -> Self {
        Self {
            system,
            heads: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn slot(&self, tenant: &TenantId) -> HeadSlot {
        let mut heads = self.heads.lock().expect("audit head map poisoned");
        heads.entry(tenant.clone()).or_default().clone()
    }

    /// Forgets cached state for a tenant (after offboarding).
    pub fn forget(&self, tenant: &TenantId) {
        self.heads
            .lock()
            .expect("audit head map poisoned")
            .remove(tenant);
    }

    async fn load_head(&self, store: &TenantStore) -> Result<Head, AuditError> {
        let entries = store
            .list(Some(&RelativePath::parse("audit").expect("valid")))
            .await?;
        let Some(last) = entries.last() else {
            return Ok(Head {
                seq: 0,
                hash: GENESIS_HASH.to_string(),
            });
        };
        let path = RelativePath::parse(&last.path).map_err(StorageError::from)?;
        let record: AuditRecord = store.get_json(&path).await?;
        Ok(Head {
            seq: record.seq,
            hash: record.hash,
        })
    }

    /// Appends one record to the tenant's chain and returns it.
    pub async fn append(
        &self,
        store: &TenantStore,
        entry: AuditEntry,
    ) -> Result<AuditRecord, AuditError> {
        let slot = self.slot(store.tenant());
        let mut head_guard = slot.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            let head = match head_guard.take() {
                Some(head) => head,
                None => self.load_head(store).await?,
            };
            let mut record = AuditRecord {
                seq: head.seq + 1,
                ts: Utc::now(),
                tenant: store.tenant().to_string(),
                actor: entry.actor.clone(),
                action: entry.action.to_string(),
                resource: entry.resource.clone(),
                outcome: entry.outcome.to_string(),
                prev_hash: head.hash.clone(),
                hash: String::new(),
            };
            record.hash = record.compute_hash();
            let bytes = serde_json::to_vec(&record).expect("audit records always serialise");
            match store.put_if_absent(&record_path(record.seq), bytes).await {
                Ok(()) => {
                    let new_head = Head {
                        seq: record.seq,
                        hash: record.hash.clone(),
                    };
                    self.system
                        .put_json(&checkpoint_key(store.tenant()), &new_head)
                        .await?;
                    *head_guard = Some(new_head);
                    return Ok(record);
                }
                // Another process appended first: reload the head and try again.
                Err(StorageError::AlreadyExists(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(AuditError::Contention)
    }

    /// Reads the readable records of a tenant's chain in sequence order.
    pub async fn read(&self, store: &TenantStore) -> Result<Vec<AuditRecord>, AuditError> {
        let mut records = Vec::new();
        for entry in store
            .list(Some(&RelativePath::parse("audit").expect("valid")))
            .await?
        {
            let path = RelativePath::parse(&entry.path).map_err(StorageError::from)?;
            records.push(store.get_json::<AuditRecord>(&path).await?);
        }
        Ok(records)
    }

    /// Checks the whole chain: every record readable, numbered without gaps, linked to its
    /// predecessor, hashing to its stored hash, and ending at the checkpointed head.
    pub async fn verify(&self, store: &TenantStore) -> Result<AuditVerification, AuditError> {
        let tenant = store.tenant();
        let entries = store
            .list(Some(&RelativePath::parse("audit").expect("valid")))
            .await?;
        let mut problems = Vec::new();
        let mut expected_seq = 1u64;
        let mut prev_hash = GENESIS_HASH.to_string();
        let mut head_seq = 0;
        for entry in &entries {
            let path = RelativePath::parse(&entry.path).map_err(StorageError::from)?;
            let file_seq = entry
                .path
                .trim_start_matches("audit/")
                .trim_end_matches(".json")
                .parse::<u64>()
                .unwrap_or(0);
            let record = match store.get_json::<AuditRecord>(&path).await {
                Ok(record) => record,
                Err(error) => {
                    problems.push(AuditProblem {
                        seq: file_seq,
                        problem: format!("record unreadable (edited or moved): {error}"),
                    });
                    expected_seq = file_seq + 1;
                    prev_hash = String::new();
                    continue;
                }
            };
            if file_seq > expected_seq {
                problems.push(AuditProblem {
                    seq: expected_seq,
                    problem: format!(
                        "records {expected_seq}..{} are missing (deleted)",
                        file_seq - 1
                    ),
                });
            }
            if record.seq != file_seq {
                problems.push(AuditProblem {
                    seq: file_seq,
                    problem: format!("record claims seq {} (reordered)", record.seq),
                });
            }
            if record.tenant != tenant.as_str() {
                problems.push(AuditProblem {
                    seq: file_seq,
                    problem: "record belongs to another tenant".to_string(),
                });
            }
            if record.compute_hash() != record.hash {
                problems.push(AuditProblem {
                    seq: file_seq,
                    problem: "hash mismatch (record edited)".to_string(),
                });
            } else if !prev_hash.is_empty() && record.prev_hash != prev_hash {
                problems.push(AuditProblem {
                    seq: file_seq,
                    problem: "does not link to the previous record (deleted or reordered)"
                        .to_string(),
                });
            }
            expected_seq = file_seq + 1;
            prev_hash = record.hash.clone();
            head_seq = file_seq;
        }
        if let Some(checkpoint) = self
            .system
            .get_json_opt::<Head>(&checkpoint_key(tenant))
            .await?
        {
            if checkpoint.seq > head_seq {
                problems.push(AuditProblem {
                    seq: head_seq + 1,
                    problem: format!(
                        "records {}..{} are missing from the tail (truncated)",
                        head_seq + 1,
                        checkpoint.seq
                    ),
                });
            } else if checkpoint.seq == head_seq && checkpoint.hash != prev_hash {
                problems.push(AuditProblem {
                    seq: head_seq,
                    problem: "head differs from the checkpoint".to_string(),
                });
            }
        }
        Ok(AuditVerification {
            tenant: tenant.to_string(),
            records: entries.len(),
            head_seq,
            problems,
        })
    }

    /// The checkpointed head (seq, hash) of a tenant's chain, if any.
    pub async fn checkpoint(&self, tenant: &TenantId) -> Result<Option<(u64, String)>, AuditError> {
        let head = self
            .system
            .get_json_opt::<Head>(&checkpoint_key(tenant))
            .await?;
        Ok(head.map(|head| (head.seq, head.hash)))
    }

    /// Removes the checkpoint (offboarding keeps the final head in the tombstone instead).
    pub async fn drop_checkpoint(&self, tenant: &TenantId) -> Result<(), AuditError> {
        self.system.delete(&checkpoint_key(tenant)).await?;
        self.forget(tenant);
        Ok(())
    }
}
