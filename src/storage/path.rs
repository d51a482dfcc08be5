//! Validation of user-supplied object paths (relative to a tenant root).
//!
//! Every rule here answers one case of the security notes' table B3: traversal (`..`, encoded
//! or not), absolute paths, backslashes, NUL and control characters, confusable Unicode,
//! trailing dots or spaces, empty segments and over-long keys are rejected, never rewritten.

use std::fmt;

/// Longest accepted relative path in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a user path was rejected; the message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {shown:?}: {reason}")]
pub struct PathError {
    shown: String,
    reason: &'static str,
}

impl PathError {
    fn new(input: &str, reason: &'static str) -> Self {
        let shown: String = input
            .chars()
            .take(80)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        Self { shown, reason }
    }
}

/// A validated path relative to a tenant root: ASCII segments of `[A-Za-z0-9._=-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(String);

impl RelativePath {
    /// Parses user input, rejecting anything that could escape or alias another key.
    pub fn parse(input: &str) -> Result<Self, PathError> {
        if input.is_empty() {
            return Err(PathError::new(input, "path is empty"));
        }
        if input.len() > MAX_PATH_BYTES {
            return Err(PathError::new(input, "path is longer than 1024 bytes"));
        }
        if input.starts_with('/') {
            return Err(PathError::new(input, "absolute paths are not allowed"));
        }
        for c in input.chars() {
            let reason = match c {
                '\\' => "backslashes are not allowed",
                '%' => "percent-encoding is not allowed",
                c if c.is_control() => "control characters are not allowed",
                c if !c.is_ascii() => {
                    "only ASCII letters, digits, '.', '_', '=' and '-' are allowed"
                }
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | '/') => {
                    continue;
                }
                _ => "only ASCII letters, digits, '.', '_', '=' and '-' are allowed",
            };
            return Err(PathError::new(input, reason));
        }
        for segment in input.split('/') {
            let reason = match segment {
                "" => "empty path segments are not allowed",
                "." | ".." => "'.' and '..' segments are not allowed",
                s if s.starts_with('.') => "segments may not start with '.'",
                s if s.ends_with('.') => "segments may not end with '.'",
                _ => continue,
            };
            return Err(PathError::new(input, reason));
        }
        // Defence in depth: object_store's own parser must agree.
        if object_store::path::Path::parse(input).is_err() {
            return Err(PathError::new(
                input,
                "rejected by the object store path parser",
            ));
        }
        Ok(Self(input.to_string()))
    }

    /// Parses a single segment name (a dataset or model name).
    pub fn parse_name(input: &str) -> Result<Self, PathError> {
        if input.contains('/') {
            return Err(PathError::new(input, "names may not contain '/'"));
        }
        if input.len() > 128 {
            return Err(PathError::new(input, "names are at most 128 bytes"));
        }
        Self::parse(input)
    }

    /// Joins a trusted suffix built by the platform (never user input) onto this path.
    pub fn join(&self, suffix: &str) -> Result<Self, PathError> {
        Self::parse(&format!("{}/{}", self.0, suffix))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_malformed_paths_are_rejected() {
        let long = "a".repeat(1025);
        let cases = [
            "../x",
            "..%2fx",
            "%2e%2e/x",
            "%252e%252e/x",
            "/x",
            "..\\x",
            "a\\b",
            "a\0b",
            "a\nb",
            "tenants/a/../b/x",
            "caf\u{e9}",
            "cafe\u{301}",
            "a./b",
            "a /b",
            "a//b",
            "a/",
            "",
            ".",
            "./a",
            ".hidden",
            long.as_str(),
        ];
        for case in cases {
            assert!(RelativePath::parse(case).is_err(), "accepted {case:?}");
        }
    }

    #[test]
    fn ordinary_paths_are_accepted() {
        for case in [
            "datasets/clauses/data.parquet",
            "usage/date=2026-11-28/a.parquet",
            "a-b_c.d",
        ] {
            assert_eq!(RelativePath::parse(case).unwrap().as_str(), case);
        }
    }

    #[test]
    fn names_are_single_segments() {
        assert!(RelativePath::parse_name("clauses").is_ok());
        assert!(RelativePath::parse_name("a/b").is_err());
    }
}
