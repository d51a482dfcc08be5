//! Envelope encryption: the platform key-encryption key (KEK), per-tenant data-encryption keys
//! (DEKs) and the AES-256-GCM object format.
//!
//! Object format: `TNE1 | nonce (12 bytes) | ciphertext+tag`. The associated data binds a
//! ciphertext to its tenant and object path, so bytes copied to another tenant or another path
//! fail to authenticate. Destroying a tenant's wrapped DEK makes every copy of its objects
//! unreadable (crypto-shredding).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const OBJECT_MAGIC: &[u8; 4] = b"TNE1";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext failed to authenticate (wrong key, tenant or path, or tampered bytes)")]
    Authentication,
    #[error("not an encrypted tenantry object (bad header)")]
    Format,
    #[error("wrapped key was made by key-encryption key {found}, this process holds {expected}")]
    WrongKek { expected: String, found: String },
    #[error("master key file {path}: {message}")]
    MasterKey { path: String, message: String },
}

/// 32 bytes of key material, wiped on drop.
#[derive(Clone)]
struct KeyBytes(Zeroizing<[u8; KEY_LEN]>);

impl KeyBytes {
    fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_ref());
        hex::encode(&digest[..8])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("key is 32 bytes")
    }
}

/// Encrypts `plaintext` under `key` with `aad` bound, using a fresh random nonce.
fn seal(key: &KeyBytes, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("aes-gcm encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(OBJECT_MAGIC.len() + NONCE_LEN + ciphertext.len());
    out.extend_from_slice(OBJECT_MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

fn open(key: &KeyBytes, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let header_len = OBJECT_MAGIC.len() + NONCE_LEN;
    if sealed.len() < header_len || &sealed[..OBJECT_MAGIC.len()] != OBJECT_MAGIC {
        return Err(CryptoError::Format);
    }
    let nonce = Nonce::from_slice(&sealed[OBJECT_MAGIC.len()..header_len]);
    key.cipher()
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[header_len..],
                aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)
}

/// The platform key-encryption key. It only ever wraps tenant DEKs and derives MAC keys.
#[derive(Clone)]
pub struct Kek {
    key: KeyBytes,
    id: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    /// Generates a fresh random KEK (tests and `memory://` storage).
    pub fn generate() -> Self {
        let key = KeyBytes::random();
        let id = key.fingerprint();
        Self { key, id }
    }

    /// Loads a KEK from a file holding 64 hex characters or 32 raw bytes.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let error = |message: String| CryptoError::MasterKey {
            path: path.display().to_string(),
            message,
        };
        let raw = Zeroizing::new(std::fs::read(path).map_err(|e| error(e.to_string()))?);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        let text = String::from_utf8_lossy(&raw);
        let trimmed = text.trim();
        if trimmed.len() == KEY_LEN * 2 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode_to_slice(trimmed, bytes.as_mut()).map_err(|e| error(e.to_string()))?;
        } else if raw.len() == KEY_LEN {
            bytes.copy_from_slice(&raw);
        } else {
            return Err(error(
                "expected 64 hex characters or exactly 32 bytes".to_string(),
            ));
        }
        let key = KeyBytes(bytes);
        let id = key.fingerprint();
        Ok(Self { key, id })
    }

    /// Loads the KEK at `path`, generating and saving a new one (mode 0600) when the file is
    /// missing. Returns the key and whether it was generated.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), CryptoError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let kek = Self::generate();
        let error = |message: String| CryptoError::MasterKey {
            path: path.display().to_string(),
            message,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| error(e.to_string()))?;
        }
        let encoded = Zeroizing::new(hex::encode(kek.key.0.as_ref()));
        write_private_file(path, encoded.as_bytes()).map_err(|e| error(e.to_string()))?;
        Ok((kek, true))
    }

    /// Short public fingerprint identifying this KEK (never the key itself).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps a tenant DEK; the tenant id is bound as associated data.
    pub fn wrap(&self, tenant: &str, dek: &Dek) -> WrappedDek {
        let sealed = seal(&self.key, &dek_aad(tenant), dek.key.0.as_ref());
        WrappedDek {
            version: 1,
            kek_id: self.id.clone(),
            dek_fingerprint: dek.fingerprint(),
            sealed: hex::encode(sealed),
        }
    }

    /// Unwraps a tenant DEK; fails when it belongs to another tenant or another KEK.
    pub fn unwrap(&self, tenant: &str, wrapped: &WrappedDek) -> Result<Dek, CryptoError> {
        if wrapped.kek_id != self.id {
            return Err(CryptoError::WrongKek {
                expected: self.id.clone(),
                found: wrapped.kek_id.clone(),
            });
        }
        let sealed = Zeroizing::new(hex::decode(&wrapped.sealed).map_err(|_| CryptoError::Format)?);
        let plain = Zeroizing::new(open(&self.key, &dek_aad(tenant), &sealed)?);
        if plain.len() != KEY_LEN {
            return Err(CryptoError::Format);
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&plain);
        Ok(Dek {
            key: KeyBytes(bytes),
        })
    }

    /// Derives a purpose-specific 32-byte subkey (for example the API-key MAC pepper).
    pub fn derive_subkey(&self, purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.0.as_ref())
            .expect("hmac takes any key length");
        mac.update(b"tenantry/subkey/v1/");
        mac.update(purpose.as_bytes());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }
}

fn dek_aad(tenant: &str) -> Vec<u8> {
    format!("tenantry/dek/v1|{tenant}").into_bytes()
}

fn object_aad(tenant: &str, path: &str) -> Vec<u8> {
    format!("tenantry/object/v1|{tenant}|{path}").into_bytes()
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A tenant's data-encryption key.
#[derive(Clone)]
pub struct Dek {
    key: KeyBytes,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dek({})", self.fingerprint())
    }
}

impl Dek {
    pub fn generate() -> Self {
        Self {
            key: KeyBytes::random(),
        }
    }

    /// Public fingerprint for audit records (never the key).
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    /// Encrypts an object of `tenant` stored at `path` (path relative to the tenant root).
    pub fn seal_object(&self, tenant: &str, path: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.key, &object_aad(tenant, path), plaintext)
    }

    /// Decrypts an object; fails if it was sealed for another tenant, path or key.
    pub fn open_object(
        &self,
        tenant: &str,
        path: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        open(&self.key, &object_aad(tenant, path), sealed)
    }
}

/// A DEK wrapped by the KEK, as stored under `_system/deks/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrappedDek {
    pub version: u32,
    pub kek_id: String,
    pub dek_fingerprint: String,
    pub sealed: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_bound_to_tenant_and_path() {
        let dek = Dek::generate();
        let sealed = dek.seal_object("acme", "datasets/a/data.parquet", b"secret rows");
        assert_eq!(
            dek.open_object("acme", "datasets/a/data.parquet", &sealed)
                .unwrap(),
            b"secret rows"
        );
        assert!(
            dek.open_object("globex", "datasets/a/data.parquet", &sealed)
                .is_err()
        );
        assert!(
            dek.open_object("acme", "datasets/b/data.parquet", &sealed)
                .is_err()
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            dek.open_object("acme", "datasets/a/data.parquet", &flipped)
                .is_err()
        );
    }

    #[test]
    fn a_wrapped_dek_only_unwraps_for_its_tenant_and_kek() {
        let kek = Kek::generate();
        let dek = Dek::generate();
        let wrapped = kek.wrap("acme", &dek);
        assert_eq!(
            kek.unwrap("acme", &wrapped).unwrap().fingerprint(),
            dek.fingerprint()
        );
        assert!(kek.unwrap("globex", &wrapped).is_err());
        assert!(Kek::generate().unwrap("acme", &wrapped).is_err());
    }

    #[test]
    fn a_generated_master_key_is_reloaded_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let (first, generated) = Kek::load_or_generate(&path).unwrap();
        assert!(generated);
        let (second, generated_again) = Kek::load_or_generate(&path).unwrap();
        assert!(!generated_again);
        assert_eq!(first.id(), second.id());
    }
}
