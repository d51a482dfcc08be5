//! Capacity forecasts (`shared/notes/billing-sla.md` A.4): Holt's linear trend on a tenant's
//! daily usage of a meter, the days until its monthly quota is reached, and the alert rule:
//! fire when the quota is projected to be reached within 30 days and before the month ends.
//!
//! Guards: at least 7 days of history; a series whose 14-day coefficient of variation exceeds
//! 1 is too noisy to project ("insufficient signal").

use serde::Serialize;

/// Holt's smoothing parameters, chosen from a small grid by one-step squared error.
const GRID: [f64; 5] = [0.1, 0.3, 0.5, 0.7, 0.9];
pub const MIN_HISTORY_DAYS: usize = 7;
pub const HORIZON_DAYS: u32 = 30;

/// A fitted level and trend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Holt {
    pub alpha: f64,
    pub beta: f64,
    pub level: f64,
    pub trend: f64,
    pub sse: f64,
}

fn run(series: &[f64], alpha: f64, beta: f64) -> Holt {
    let mut level = series[0];
    let mut trend = if series.len() > 1 {
        series[1] - series[0]
    } else {
        0.0
    };
    let mut sse = 0.0;
    for &y in &series[1..] {
        let predicted = level + trend;
        sse += (y - predicted).powi(2);
        let previous = level;
        level = alpha * y + (1.0 - alpha) * (level + trend);
        trend = beta * (level - previous) + (1.0 - beta) * trend;
    }
    Holt {
        alpha,
        beta,
        level,
        trend,
        sse,
    }
}

/// Fits Holt's linear trend (ETS(A,A,N)) by grid search on the one-step error.
pub fn fit(series: &[f64]) -> Option<Holt> {
    if series.len() < 2 {
        return None;
    }
    GRID.iter()
        .flat_map(|&alpha| GRID.iter().map(move |&beta| run(series, alpha, beta)))
        .min_by(|a, b| a.sse.total_cmp(&b.sse))
}

/// Days from now until `used + sum of the next h forecasts` reaches `quota`, if within
/// `horizon` days (the forecast `level + k * trend` floored at zero).
pub fn days_to_quota(holt: &Holt, used: f64, quota: f64, horizon: u32) -> Option<u32> {
    let mut total = used;
    if total >= quota {
        return Some(0);
    }
    for day in 1..=horizon {
        total += (holt.level + f64::from(day) * holt.trend).max(0.0);
        if total >= quota {
            return Some(day);
        }
    }
    None
}

/// Coefficient of variation of the last 14 days (standard deviation over mean).
pub fn variation(series: &[f64]) -> f64 {
    let tail = &series[series.len().saturating_sub(14)..];
    if tail.is_empty() {
        return 0.0;
    }
    let mean = tail.iter().sum::<f64>() / tail.len() as f64;
    if mean <= 0.0 {
        return 0.0;
    }
    let var = tail.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / tail.len() as f64;
    var.sqrt() / mean
}

/// What a projection concluded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Projection {
    /// Not enough days, or too noisy to project.
    InsufficientSignal { reason: String },
    /// The quota is not reached within the horizon or before the month ends.
    Clear { level: f64, trend: f64 },
    /// The quota is projected to be reached in `days` days.
    Exhaustion { days: u32, level: f64, trend: f64 },
}

/// Projects a month so far: `daily` usage from the first of the month to today, `quota` for
/// the month, `days_left` after today.
pub fn project(daily: &[f64], quota: f64, days_left: u32) -> Projection {
    if daily.len() < MIN_HISTORY_DAYS {
        return Projection::InsufficientSignal {
            reason: format!(
                "{} days of history, at least {MIN_HISTORY_DAYS} needed",
                daily.len()
            ),
        };
    }
    if variation(daily) > 1.0 {
        return Projection::InsufficientSignal {
            reason: "the last 14 days vary too much to project".to_string(),
        };
    }
    let Some(holt) = fit(daily) else {
        return Projection::InsufficientSignal {
            reason: "no series".to_string(),
        };
    };
    let used: f64 = daily.iter().sum();
    match days_to_quota(&holt, used, quota, HORIZON_DAYS.min(days_left)) {
        Some(days) => Projection::Exhaustion {
            days,
            level: holt.level,
            trend: holt.trend,
        },
        None => Projection::Clear {
            level: holt.level,
            trend: holt.trend,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rising_series_fires_before_the_month_ends() {
        // the notes' example shape: 4.2M used by day 12, about 420k a day and rising
        let daily: Vec<f64> = (0..12).map(|d| 300_000.0 + 10_000.0 * d as f64).collect();
        match project(&daily, 10_000_000.0, 18) {
            Projection::Exhaustion { days, trend, .. } => {
                assert!(trend > 0.0);
                assert!((10..=16).contains(&days), "{days}");
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
    }

    #[test]
    fn a_flat_series_does_not_fire() {
        let daily = vec![100_000.0; 12];
        assert!(matches!(
            project(&daily, 10_000_000.0, 18),
            Projection::Clear { .. }
        ));
    }

    #[test]
    fn short_or_noisy_series_are_not_projected() {
        assert!(matches!(
            project(&[1.0, 2.0, 3.0], 10.0, 20),
            Projection::InsufficientSignal { .. }
        ));
        let spiky: Vec<f64> = (0..14)
            .map(|d| if d % 7 == 0 { 1_000_000.0 } else { 0.0 })
            .collect();
        assert!(matches!(
            project(&spiky, 10.0, 20),
            Projection::InsufficientSignal { .. }
        ));
    }

    #[test]
    fn a_quota_already_used_up_is_zero_days_away() {
        let holt = fit(&[5.0, 5.0, 5.0]).unwrap();
        assert_eq!(days_to_quota(&holt, 100.0, 50.0, 30), Some(0));
    }
}
