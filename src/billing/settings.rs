//! `[billing]` of `tenantry.toml`: how long late usage is folded into its day, how the cron
//! spreads per-tenant work, and what resources cost the platform.

use chrono::Duration;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::billing::costs::UnitPrices;

/// Metering and billing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingSettings {
    /// An event recorded up to this long after its day ended still counts in that day's
    /// rollups and invoice; later ones are reported as late.
    pub grace: Duration,
    /// Daily work (storage samples, day rollups) of the tenants is spread over this window.
    pub daily_spread: Duration,
    /// Month-end work (month rollups, invoices) is spread over this window.
    pub month_end_spread: Duration,
    /// What resources cost the platform (`tenantry report costs`).
    pub unit_prices: UnitPrices,
    /// Whether `tenantry up` / `tenantry scheduler` fire the billing cron.
    pub cron: bool,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            grace: Duration::hours(6),
            daily_spread: Duration::minutes(60),
            month_end_spread: Duration::hours(6),
            unit_prices: UnitPrices::default(),
            cron: true,
        }
    }
}

/// `[billing]` as written; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingFile {
    grace_hours: Option<u32>,
    daily_spread_minutes: Option<u32>,
    month_end_spread_minutes: Option<u32>,
    cron: Option<bool>,
    unit_prices: Option<UnitPricesFile>,
}

/// `[billing.unit_prices]`: decimal strings (`"0.023"`), so prices are exact.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPricesFile {
    cpu_second: Option<Decimal>,
    gpu_second: Option<Decimal>,
    gib_month: Option<Decimal>,
    request: Option<Decimal>,
    shared_per_month: Option<Decimal>,
}

impl BillingFile {
    /// The settings this section gives, over the defaults.
    pub fn settings(self) -> Result<BillingSettings, String> {
        let mut settings = BillingSettings::default();
        if let Some(hours) = self.grace_hours {
            if hours > 24 * 27 {
                return Err(format!(
                    "grace_hours = {hours}: at most 648 (27 days), so a month closes before the next one ends"
                ));
            }
            settings.grace = Duration::hours(i64::from(hours));
        }
        if let Some(minutes) = self.daily_spread_minutes {
            if minutes > 12 * 60 {
                return Err(format!(
                    "daily_spread_minutes = {minutes}: at most 720 (half a day)"
                ));
            }
            settings.daily_spread = Duration::minutes(i64::from(minutes));
        }
        if let Some(minutes) = self.month_end_spread_minutes {
            if minutes > 7 * 24 * 60 {
                return Err(format!(
                    "month_end_spread_minutes = {minutes}: at most 10080 (a week)"
                ));
            }
            settings.month_end_spread = Duration::minutes(i64::from(minutes));
        }
        if let Some(cron) = self.cron {
            settings.cron = cron;
        }
        if let Some(prices) = self.unit_prices {
            let target = &mut settings.unit_prices;
            for (value, slot) in [
                (prices.cpu_second, &mut target.cpu_second),
                (prices.gpu_second, &mut target.gpu_second),
                (prices.gib_month, &mut target.gib_month),
                (prices.request, &mut target.request),
                (prices.shared_per_month, &mut target.shared_per_month),
            ] {
                if let Some(value) = value {
                    if value.is_sign_negative() {
                        return Err(format!("unit price {value} is negative"));
                    }
                    *slot = value;
                }
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_billing_section_overrides_defaults_and_rejects_bad_values() {
        let file: BillingFile = toml::from_str(
            "grace_hours = 2\n[unit_prices]\ngib_month = \"0.02\"\nshared_per_month = \"120.50\"\n",
        )
        .unwrap();
        let settings = file.settings().unwrap();
        assert_eq!(settings.grace, Duration::hours(2));
        assert_eq!(settings.unit_prices.gib_month.to_string(), "0.02");
        assert_eq!(settings.unit_prices.shared_per_month.to_string(), "120.50");
        assert_eq!(
            settings.unit_prices.cpu_second,
            UnitPrices::default().cpu_second
        );
        let negative: BillingFile = toml::from_str("[unit_prices]\nrequest = \"-1\"\n").unwrap();
        assert!(negative.settings().unwrap_err().contains("negative"));
        assert!(toml::from_str::<BillingFile>("grace = 3\n").is_err());
    }
}
