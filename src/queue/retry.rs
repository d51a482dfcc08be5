//! Retry backoff: exponential with full jitter, `min(cap, base * 2^(attempt-1)) * jitter`.

/// First retry's upper bound.
pub const BACKOFF_BASE_MS: u64 = 1_000;
/// Largest backoff.
pub const BACKOFF_CAP_MS: u64 = 300_000;

/// Backoff before retry number `attempt` (1-based) given a jitter draw in [0, 1).
pub fn backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = BACKOFF_BASE_MS
        .saturating_mul(1u64 << exponent)
        .min(BACKOFF_CAP_MS);
    (ceiling as f64 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_under_full_jitter_and_is_capped() {
        assert_eq!(backoff_ms(1, 0.999_999), 999);
        assert_eq!(backoff_ms(3, 0.5), 2_000);
        assert_eq!(backoff_ms(30, 1.0), BACKOFF_CAP_MS);
        assert_eq!(backoff_ms(5, 0.0), 0);
    }
}
