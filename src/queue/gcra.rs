//! GCRA (virtual scheduling) rate limiting, shared by the memory backend and mirrored in Lua.
//!
//! T = 1000 / rate ms is the emission interval, tau = (burst - 1) * T the tolerance. Starting
//! from an empty cell, `burst` dispatches at the same instant conform and the next is refused;
//! afterwards the rate is one per T.

/// Checks one unit of work against a cell's theoretical arrival time (TAT).
/// Returns `Ok(new_tat)` when it conforms, `Err(retry_at_ms)` otherwise.
pub fn check(tat_opt: Option<f64>, now_ms: u64, rate_per_sec: f64, burst: u32) -> Result<f64, u64> {
    let now = now_ms as f64;
    if rate_per_sec <= 0.0 {
        return Ok(now);
    }
    let interval = 1000.0 / rate_per_sec;
    let tolerance = f64::from(burst.max(1) - 1) * interval;
    let tat = tat_opt.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let allow_at = new_tat - tolerance - interval;
    if now < allow_at {
        return Err(allow_at.ceil() as u64);
    }
    Ok(new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_conforms_then_the_rate_applies() {
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(check(tat, 1_000, 10.0, 5).expect("burst conforms"));
        }
        let retry_at = check(tat, 1_000, 10.0, 5).expect_err("sixth is refused");
        assert_eq!(retry_at, 1_100);
        assert!(check(tat, 1_100, 10.0, 5).is_ok());
    }

    #[test]
    fn a_zero_rate_means_unlimited() {
        assert!(check(Some(1e12), 0, 0.0, 1).is_ok());
    }
}
