//! API keys and roles.
//!
//! Format: `tnt_<key id>_<secret>`: a 12-character public key id (`[a-z0-9]`) for the O(1)
//! lookup and 32 random bytes of secret (64 hex characters). Only HMAC-SHA256(pepper, secret)
//! is stored, under `_system/keys/<key id>.json`; the pepper is derived from the platform KEK.
//! Verification compares MACs in constant time and answers every failure the same way.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::Secret;
use crate::storage::{StorageError, SystemStore};
use crate::tenant::TenantId;

const KEY_PREFIX: &str = "tnt";
const KEY_ID_LEN: usize = 12;
const SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    Developer,
    Viewer,
    Client,
}

impl Role {
    pub fn parse(input: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(input.to_string())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Client => "client",
        }
    }

    /// The role x action table; anything not listed is denied.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::PlatformAdmin => matches!(action, ManageTenants),
            Role::TenantAdmin => matches!(
                action,
                ManageKeys | ReadData | WriteData | ReadAudit | Predict
            ),
            Role::Developer => matches!(action, ReadData | WriteData | Predict),
            Role::Viewer => matches!(action, ReadData),
            Role::Client => matches!(action, Predict),
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ManageTenants,
    ManageKeys,
    ReadData,
    WriteData,
    ReadAudit,
    Predict,
}

/// A stored key: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    /// `None` only for platform-admin keys.
    pub tenant: Option<TenantId>,
    pub role: Role,
    pub label: String,
    /// Hex HMAC-SHA256 of the secret under the platform pepper.
    pub mac: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    fn storage_key(key_id: &str) -> String {
        format!("keys/{key_id}.json")
    }
}

/// A newly issued key; `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key_id: String,
    pub token: Secret,
    pub role: Role,
    pub tenant: Option<TenantId>,
}

/// Who is calling: derived from a verified key, never from the request body.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub tenant_opt: Option<TenantId>,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Malformed, unknown, wrong or revoked key: one answer for all, so nothing leaks.
    #[error("invalid or revoked api key")]
    InvalidKey,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Issues, verifies, lists and revokes API keys.
#[derive(Clone)]
pub struct KeyService {
    system: SystemStore,
    pepper: std::sync::Arc<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyService")
    }
}

struct ParsedToken<'a> {
    key_id: &'a str,
    secret: &'a str,
}

fn parse_token(token: &str) -> Option<ParsedToken<'_>> {
    let rest = token.strip_prefix(KEY_PREFIX)?.strip_prefix('_')?;
    let (key_id, secret) = rest.split_once('_')?;
    let key_id_ok = key_id.len() == KEY_ID_LEN
        && key_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok =
        secret.len() == SECRET_BYTES * 2 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    (key_id_ok && secret_ok).then_some(ParsedToken { key_id, secret })
}

impl KeyService {
    pub fn new(system: SystemStore, pepper: Zeroizing<[u8; 32]>) -> Self {
        Self {
            system,
            pepper: std::sync::Arc::new(pepper),
        }
    }

    fn mac(&self, secret: &str) -> String {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.pepper[..])
            .expect("hmac takes any key length");
        mac.update(secret.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Issues a new key for `tenant_opt` (None for platform-admin) and stores its MAC.
    pub async fn issue(
        &self,
        tenant_opt: Option<&TenantId>,
        role: Role,
        label: &str,
    ) -> Result<IssuedKey, StorageError> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rngs::OsRng;
        let key_id: String = (0..KEY_ID_LEN)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        let mut secret_bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        rng.fill(secret_bytes.as_mut_slice());
        let secret = Zeroizing::new(hex::encode(secret_bytes.as_ref()));
        let token = Secret::new(format!("{KEY_PREFIX}_{key_id}_{}", secret.as_str()));
        self.store_record(&key_id, tenant_opt, role, label, &secret)
            .await?;
        Ok(IssuedKey {
            key_id,
            token,
            role,
            tenant: tenant_opt.cloned(),
        })
    }

    /// Registers a key supplied by the operator (`TENANTRY_ADMIN_KEY`); idempotent.
    pub async fn register(
        &self,
        token: &Secret,
        tenant_opt: Option<&TenantId>,
        role: Role,
        label: &str,
    ) -> Result<String, AuthError> {
        let parsed = parse_token(token.expose()).ok_or(AuthError::InvalidKey)?;
        if let Some(existing) = self
            .system
            .get_json_opt::<KeyRecord>(&KeyRecord::storage_key(parsed.key_id))
            .await?
        {
            let same = existing
                .mac
                .as_bytes()
                .ct_eq(self.mac(parsed.secret).as_bytes());
            if bool::from(same) && existing.role == role && existing.revoked_at.is_none() {
                return Ok(existing.key_id);
            }
            return Err(AuthError::InvalidKey);
        }
        self.store_record(parsed.key_id, tenant_opt, role, label, parsed.secret)
            .await?;
        Ok(parsed.key_id.to_string())
    }

    async fn store_record(
        &self,
        key_id: &str,
        tenant_opt: Option<&TenantId>,
        role: Role,
        label: &str,
        secret: &str,
    ) -> Result<(), StorageError> {
        let record = KeyRecord {
            key_id: key_id.to_string(),
            tenant: tenant_opt.cloned(),
            role,
            label: label.to_string(),
            mac: self.mac(secret),
            created_at: Utc::now(),
            revoked_at: None,
        };
        self.system
            .create_json(&KeyRecord::storage_key(key_id), &record)
            .await
    }

    /// Verifies a presented token; every failure is `InvalidKey`.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let Some(parsed) = parse_token(token) else {
            return Err(AuthError::InvalidKey);
        };
        let record_opt = self
            .system
            .get_json_opt::<KeyRecord>(&KeyRecord::storage_key(parsed.key_id))
            .await?;
        // Compute the MAC even for unknown ids so timing does not reveal which ids exist.
        let presented = self.mac(parsed.secret);
        let Some(record) = record_opt else {
            return Err(AuthError::InvalidKey);
        };
        let matches: bool = presented.as_bytes().ct_eq(record.mac.as_bytes()).into();
        if !matches || record.revoked_at.is_some() {
            return Err(AuthError::InvalidKey);
        }
        Ok(Principal {
            key_id: record.key_id,
            tenant_opt: record.tenant,
            role: record.role,
        })
    }

    /// Every key of `tenant`, revoked ones included (no secrets).
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<KeyRecord>, StorageError> {
        let mut records = Vec::new();
        for key in self.system.list_keys("keys").await? {
            let record: KeyRecord = self.system.get_json(&key).await?;
            if record.tenant.as_ref() == Some(tenant) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Fetches one key record if it belongs to `tenant`.
    pub async fn get_for_tenant(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, StorageError> {
        let valid_id = key_id.len() == KEY_ID_LEN
            && key_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_id {
            return Ok(None);
        }
        let record_opt = self
            .system
            .get_json_opt::<KeyRecord>(&KeyRecord::storage_key(key_id))
            .await?;
        Ok(record_opt.filter(|record| record.tenant.as_ref() == Some(tenant)))
    }

    /// Revokes one key of `tenant`; returns false when it has no such key.
    pub async fn revoke(&self, tenant: &TenantId, key_id: &str) -> Result<bool, StorageError> {
        let Some(mut record) = self.get_for_tenant(tenant, key_id).await? else {
            return Ok(false);
        };
        if record.revoked_at.is_none() {
            record.revoked_at = Some(Utc::now());
            self.system
                .put_json(&KeyRecord::storage_key(&record.key_id), &record)
                .await?;
        }
        Ok(true)
    }

    /// Revokes every key of `tenant`; returns how many were active.
    pub async fn revoke_all(&self, tenant: &TenantId) -> Result<usize, StorageError> {
        let mut revoked = 0;
        for mut record in self.list(tenant).await? {
            if record.revoked_at.is_none() {
                record.revoked_at = Some(Utc::now());
                self.system
                    .put_json(&KeyRecord::storage_key(&record.key_id), &record)
                    .await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;

    fn service() -> KeyService {
        KeyService::new(
            SystemStore::new(Arc::new(InMemory::new())),
            Zeroizing::new([7u8; 32]),
        )
    }

    #[tokio::test]
    async fn issued_keys_authenticate_and_revoked_ones_do_not() {
        let keys = service();
        let tenant = TenantId::parse("acme").unwrap();
        let issued = keys
            .issue(Some(&tenant), Role::Developer, "ci")
            .await
            .unwrap();
        let principal = keys.authenticate(issued.token.expose()).await.unwrap();
        assert_eq!(principal.role, Role::Developer);
        assert_eq!(principal.tenant_opt, Some(tenant.clone()));
        assert!(keys.revoke(&tenant, &issued.key_id).await.unwrap());
        assert!(keys.authenticate(issued.token.expose()).await.is_err());
    }

    #[tokio::test]
    async fn tampered_and_malformed_tokens_are_rejected_alike() {
        let keys = service();
        let tenant = TenantId::parse("acme").unwrap();
        let issued = keys.issue(Some(&tenant), Role::Viewer, "x").await.unwrap();
        let token = issued.token.expose();
        let mut tampered = token.to_string();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        for bad in [
            tampered.as_str(),
            "",
            "tnt_",
            &token[..20],
            "tnt_../../x_00",
            "Bearer x",
        ] {
            assert!(
                matches!(keys.authenticate(bad).await, Err(AuthError::InvalidKey)),
                "accepted {bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn stored_records_never_contain_the_secret() {
        let keys = service();
        let issued = keys.issue(None, Role::PlatformAdmin, "root").await.unwrap();
        let secret = issued
            .token
            .expose()
            .rsplit('_')
            .next()
            .unwrap()
            .to_string();
        let stored = keys
            .system
            .get_json::<serde_json::Value>(&KeyRecord::storage_key(&issued.key_id))
            .await
            .unwrap();
        assert!(!stored.to_string().contains(&secret));
    }

    #[test]
    fn the_role_table_denies_by_default() {
        assert!(Role::Client.allows(Action::Predict));
        assert!(!Role::Client.allows(Action::ReadData));
        assert!(!Role::Viewer.allows(Action::WriteData));
        assert!(!Role::PlatformAdmin.allows(Action::ReadData));
        assert!(Role::TenantAdmin.allows(Action::ManageKeys));
        assert!(!Role::Developer.allows(Action::ManageKeys));
    }
}
