//! Onboarding and offboarding: one call each, with a check that proves the result.

use std::time::Instant;

use chrono::Utc;
use rand::RngCore;
use serde::Serialize;

use crate::audit::Actor;
use crate::platform::{Platform, PlatformError, PlatformResult};
use crate::storage::{RelativePath, StorageError};
use crate::tenant::{
    IssuedKey, Role, TenantConfig, TenantId, TenantRecord, TenantState, builtin_plan,
};

/// What onboarding did; `admin_key` holds the only copy of the first key's secret.
#[derive(Debug)]
pub struct OnboardReport {
    pub tenant: TenantRecord,
    pub admin_key: IssuedKey,
    pub smoke_check_ms: f64,
    pub elapsed_ms: f64,
}

/// What offboarding did and what its final check found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OffboardReport {
    pub tenant: String,
    pub objects_deleted: usize,
    pub keys_revoked: usize,
    pub dek_fingerprint: String,
    pub dek_destroyed: bool,
    pub remaining_objects: usize,
    pub active_keys_remaining: usize,
    pub tombstone: String,
    pub verified_clean: bool,
    pub elapsed_ms: f64,
}

/// Where a tenant's configuration lives in its store.
pub const CONFIG_PATH: &str = "config.json";

impl Platform {
    /// Onboards a tenant: registry record, DEK, default config, first tenant-admin key, then a
    /// smoke check (write, read back, delete) before the tenant is marked active.
    pub async fn onboard(
        &self,
        id: &TenantId,
        name: &str,
        plan_name: &str,
        actor: Actor,
    ) -> PlatformResult<OnboardReport> {
        let started = Instant::now();
        let plan =
            builtin_plan(plan_name).ok_or_else(|| PlatformError::UnknownPlan(plan_name.into()))?;
        let now = Utc::now();
        let mut record = TenantRecord {
            id: id.clone(),
            name: name.to_string(),
            plan,
            state: TenantState::Provisioning,
            created_at: now,
            updated_at: now,
            pool_placement: "shared".to_string(),
            plan_since: None,
            plan_history: Vec::new(),
        };
        let key = TenantRecord::registry_key(id);
        match self.tenant(id).await {
            // An offboarded id may be onboarded again: it gets a fresh key and an empty prefix.
            Ok(existing) if existing.state == TenantState::Offboarded => {
                self.save_tenant(&record).await?
            }
            Ok(_) => return Err(PlatformError::TenantExists(id.clone())),
            Err(PlatformError::TenantNotFound(_)) => {
                match self.system().create_json(&key, &record).await {
                    Ok(()) => {}
                    Err(StorageError::AlreadyExists(_)) => {
                        return Err(PlatformError::TenantExists(id.clone()));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error),
        }
        self.store_new_dek(id).await?;
        let store = self.tenant_store(id).await?;
        store
            .put_json(
                &RelativePath::parse(CONFIG_PATH).map_err(StorageError::from)?,
                &TenantConfig::default(),
            )
            .await?;
        let admin_key = self
            .keys()
            .issue(Some(id), Role::TenantAdmin, "onboarding")
            .await?;

        let smoke_started = Instant::now();
        smoke_check(&store)
            .await
            .map_err(|message| PlatformError::SmokeCheck {
                tenant: id.clone(),
                message,
            })?;
        let smoke_check_ms = smoke_started.elapsed().as_secs_f64() * 1000.0;

        record.state = TenantState::Active;
        record.updated_at = Utc::now();
        self.save_tenant(&record).await?;
        self.record_audit(&store, actor, "tenant.onboard", id.to_string(), "ok")
            .await?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(tenant = %id, plan = %record.plan.name, elapsed_ms, "tenant onboarded");
        Ok(OnboardReport {
            tenant: record,
            admin_key,
            smoke_check_ms,
            elapsed_ms,
        })
    }

    /// Moves an active tenant to another plan from `at`: the current plan goes into its
    /// history, and invoices of the month bill each plan for its days (prorated). Weights,
    /// caps and limits follow at the next read of the record.
    pub async fn change_plan(
        &self,
        id: &TenantId,
        plan_name: &str,
        at: chrono::DateTime<Utc>,
        actor: Actor,
    ) -> PlatformResult<TenantRecord> {
        let plan =
            builtin_plan(plan_name).ok_or_else(|| PlatformError::UnknownPlan(plan_name.into()))?;
        let mut record = self.tenant(id).await?;
        if record.state != TenantState::Active {
            return Err(PlatformError::TenantNotActive {
                id: id.clone(),
                state: record.state,
            });
        }
        if record.plan == plan {
            return Ok(record);
        }
        let since = record.plan_since.unwrap_or(record.created_at);
        let previous = std::mem::replace(&mut record.plan, plan);
        record.plan_history.push(crate::tenant::PlanPeriod {
            plan: previous,
            from: since,
            until: at,
        });
        record.plan_since = Some(at);
        record.updated_at = at;
        self.save_tenant(&record).await?;
        let store = self.tenant_store(id).await?;
        self.record_audit(
            &store,
            actor,
            "tenant.plan",
            format!("{id} {plan_name} v{}", record.plan.version),
            "ok",
        )
        .await?;
        tracing::info!(tenant = %id, plan = plan_name, %at, "plan changed");
        Ok(record)
    }

    /// Offboards a tenant: refuse new requests, revoke keys, delete every object under the
    /// prefix, destroy the wrapped DEK, write a tombstone, then verify nothing is left.
    pub async fn offboard(&self, id: &TenantId, actor: Actor) -> PlatformResult<OffboardReport> {
        let started = Instant::now();
        let mut record = self.tenant(id).await?;
        if record.state == TenantState::Offboarded {
            return Err(PlatformError::TenantNotFound(id.clone()));
        }
        record.state = TenantState::Offboarding;
        record.updated_at = Utc::now();
        self.save_tenant(&record).await?;
        let keys_revoked = self.keys().revoke_all(id).await?;

        let (objects_deleted, dek_fingerprint) = if self.dek_exists(id).await? {
            let store = self.tenant_store(id).await?;
            self.record_audit(
                &store,
                actor.clone(),
                "tenant.offboard",
                id.to_string(),
                "started",
            )
            .await?;
            let fingerprint = self.dek_fingerprint_of(id).await?;
            (store.delete_prefix(None).await?, fingerprint)
        } else {
            (0, String::new())
        };
        let final_head = self.audit().checkpoint(id).await?;
        self.destroy_dek(id).await?;
        self.audit().drop_checkpoint(id).await?;

        let offboarded_at = Utc::now();
        let tombstone = format!(
            "tombstones/{id}/{}.json",
            offboarded_at.format("%Y%m%dT%H%M%S%.6fZ")
        );
        let remaining_objects = self.count_raw_objects(id).await?;
        let active_keys_remaining = self
            .keys()
            .list(id)
            .await?
            .iter()
            .filter(|key| key.revoked_at.is_none())
            .count();
        let dek_destroyed = !self.dek_exists(id).await?;
        let verified_clean = remaining_objects == 0 && active_keys_remaining == 0 && dek_destroyed;
        self.system()
            .put_json(
                &tombstone,
                &serde_json::json!({
                    "tenant": id,
                    "name": record.name,
                    "offboarded_at": offboarded_at,
                    "actor": actor,
                    "objects_deleted": objects_deleted,
                    "keys_revoked": keys_revoked,
                    "dek_fingerprint": dek_fingerprint,
                    "kek_id": self.kek().id(),
                    "final_audit_head": final_head.map(|(seq, hash)| serde_json::json!({"seq": seq, "hash": hash})),
                    "verified_clean": verified_clean,
                }),
            )
            .await?;
        record.state = TenantState::Offboarded;
        record.updated_at = Utc::now();
        self.save_tenant(&record).await?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(tenant = %id, objects_deleted, keys_revoked, verified_clean, "tenant offboarded");
        Ok(OffboardReport {
            tenant: id.to_string(),
            objects_deleted,
            keys_revoked,
            dek_fingerprint,
            dek_destroyed,
            remaining_objects,
            active_keys_remaining,
            tombstone: format!("_system/{tombstone}"),
            verified_clean,
            elapsed_ms,
        })
    }

    async fn dek_fingerprint_of(&self, id: &TenantId) -> PlatformResult<String> {
        let wrapped: crate::crypto::WrappedDek =
            self.system().get_json(&format!("deks/{id}.json")).await?;
        Ok(wrapped.dek_fingerprint)
    }
}

/// Writes a random object, reads it back, deletes it and checks it is gone.
async fn smoke_check(store: &crate::storage::TenantStore) -> Result<(), String> {
    let mut payload = [0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut payload);
    let path = RelativePath::parse(&format!("_smoke/{}", uuid::Uuid::now_v7()))
        .map_err(|error| error.to_string())?;
    store
        .put(&path, payload)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let read = store
        .get(&path)
        .await
        .map_err(|e| format!("read back: {e}"))?;
    if read.as_ref() != payload {
        return Err("read back different bytes".to_string());
    }
    store
        .delete(&path)
        .await
        .map_err(|e| format!("delete: {e}"))?;
    if store
        .exists(&path)
        .await
        .map_err(|e| format!("check: {e}"))?
    {
        return Err("object still present after delete".to_string());
    }
    Ok(())
}
