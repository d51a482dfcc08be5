//! `TenantId`: the validated tenant slug used in every storage prefix and Redis key.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tenant id {0:?}: use 3-40 lowercase letters, digits or '-', starting and ending with a letter or digit"
)]
pub struct TenantIdError(String);

/// A tenant id: `^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$`, so it can never contain `/`, `*` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Arc<str>);

impl TenantId {
    pub fn parse(input: &str) -> Result<Self, TenantIdError> {
        let bytes = input.as_bytes();
        let valid = (3..=40).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-';
        if !valid {
            let shown: String = input.chars().take(60).collect();
            return Err(TenantIdError(shown));
        }
        Ok(Self(Arc::from(input)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_accepted_and_everything_else_rejected() {
        assert!(TenantId::parse("acme").is_ok());
        assert!(TenantId::parse("acme-legal-2").is_ok());
        for bad in [
            "ab",
            "Acme",
            "a/b",
            "../x",
            "-acme",
            "acme-",
            "a*b",
            "a b",
            "ü-tenant",
            &"a".repeat(41),
        ] {
            assert!(TenantId::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
