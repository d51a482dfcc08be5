//! Rating a month of usage into an invoice under the billing plans in force, and rendering it
//! deterministically: the same plans and usage give the same bytes, JSON and HTML.
//!
//! Evaluation order (`shared/notes/billing-sla.md` A.3): rate each line (rounded per line to
//! the currency's minor unit, half to even), sum, then the monthly-minimum true-up. A plan
//! change mid-month splits the month into segments: each segment's fixed fees, included
//! quantities and minimum are prorated by its days (`F * d / D`, `Q * d / D`), and its usage
//! is rated under its own plan.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billing::pricing::{
    PricingError, Tier, TierMode, charge, check_tiers, graduated, round_money,
};
use crate::usage::Meter;

/// One priced part of a billing plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Component {
    /// A meter priced per unit through tiers (per-request pricing is this on `api_calls`).
    Metered {
        meter: Meter,
        mode: TierMode,
        tiers: Vec<Tier>,
    },
    /// Tokens priced per million, input and output apart.
    Tokens {
        input_per_million: Decimal,
        output_per_million: Decimal,
    },
    /// A monthly fee including `included` units of `meter`; usage above it priced by
    /// graduated `overage` tiers.
    Subscription {
        fee: Decimal,
        meter: Meter,
        included: Decimal,
        overage: Vec<Tier>,
    },
}

/// A versioned billing plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingPlan {
    pub name: String,
    pub version: u32,
    /// ISO 4217 code.
    pub currency: String,
    /// Digits of the currency's minor unit (2 for USD and EUR).
    #[serde(default = "two")]
    pub minor_units: u32,
    pub components: Vec<Component>,
    /// Usage billed below this is trued up to it.
    #[serde(default)]
    pub monthly_minimum: Option<Decimal>,
}

fn two() -> u32 {
    2
}

impl BillingPlan {
    /// Checks every price list; returns warnings (volume cliffs).
    pub fn check(&self) -> Result<Vec<String>, PricingError> {
        let mut warnings = Vec::new();
        for component in &self.components {
            match component {
                Component::Metered { mode, tiers, .. } => {
                    warnings.extend(check_tiers(tiers, *mode)?)
                }
                Component::Subscription { overage, .. } => {
                    warnings.extend(check_tiers(overage, TierMode::Graduated)?)
                }
                Component::Tokens { .. } => {}
            }
        }
        Ok(warnings)
    }
}

/// Days `first_day..=last_day` of the month under one plan, with the usage measured in them.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub plan: BillingPlan,
    pub first_day: u32,
    pub last_day: u32,
    pub usage: BTreeMap<Meter, Decimal>,
}

/// One invoice line with how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub description: String,
    pub quantity: Decimal,
    pub amount: Decimal,
    /// The evaluation trace: formula and inputs, so the line can be recomputed by hand.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invoice {
    pub number: String,
    pub tenant: String,
    /// `YYYY-MM`.
    pub period: String,
    pub currency: String,
    /// `name vN (days a-b)` of every plan in force.
    pub plans: Vec<String>,
    pub lines: Vec<Line>,
    pub subtotal: Decimal,
    pub minimum: Decimal,
    pub minimum_true_up: Decimal,
    pub total: Decimal,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BillingError {
    #[error("invalid period {0:?} (expected YYYY-MM)")]
    Period(String),
    #[error("segments must be days within 1..={days} of {period}, in order, without gaps")]
    Segments { period: String, days: u32 },
    #[error("plans of one invoice must share a currency")]
    Currency,
    #[error(transparent)]
    Pricing(#[from] PricingError),
}

/// Days in the month of `period` (`YYYY-MM`).
pub fn days_in_month(period: &str) -> Result<u32, BillingError> {
    let invalid = || BillingError::Period(period.to_string());
    let (year, month) = period.split_once('-').ok_or_else(invalid)?;
    let (year, month): (i32, u32) = (
        year.parse().map_err(|_| invalid())?,
        month.parse().map_err(|_| invalid())?,
    );
    let first = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(invalid)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .ok_or_else(invalid)?;
    Ok(next.signed_duration_since(first).num_days() as u32)
}

fn quantity(usage: &BTreeMap<Meter, Decimal>, meter: Meter) -> Decimal {
    usage.get(&meter).copied().unwrap_or_default()
}

/// Rates `segments` (consecutive days of the month, in order) into an invoice.
pub fn rate(
    number: &str,
    tenant: &str,
    period: &str,
    segments: &[Segment],
) -> Result<Invoice, BillingError> {
    let days = days_in_month(period)?;
    // a tenant that started or left mid-month has segments covering only its days
    let covered = segments.first().is_some_and(|s| s.first_day >= 1)
        && segments.last().is_some_and(|s| s.last_day <= days)
        && segments
            .windows(2)
            .all(|w| w[1].first_day == w[0].last_day + 1)
        && segments.iter().all(|s| s.first_day <= s.last_day);
    if !covered {
        return Err(BillingError::Segments {
            period: period.to_string(),
            days,
        });
    }
    let currency = segments[0].plan.currency.clone();
    if segments.iter().any(|s| s.plan.currency != currency) {
        return Err(BillingError::Currency);
    }
    let minor = segments[0].plan.minor_units;
    let whole = segments.len() == 1;
    let mut lines = Vec::new();
    let mut minimum = Decimal::ZERO;
    let mut plans = Vec::new();
    for segment in segments {
        let plan = &segment.plan;
        plan.check()?;
        let active = Decimal::from(segment.last_day - segment.first_day + 1);
        let share = active / Decimal::from(days);
        let span = format!("days {}-{}", segment.first_day, segment.last_day);
        plans.push(format!("{} v{} ({span})", plan.name, plan.version));
        let suffix = if whole {
            String::new()
        } else {
            format!(", {} v{}, {span}", plan.name, plan.version)
        };
        for component in &plan.components {
            match component {
                Component::Metered { meter, mode, tiers } => {
                    let used = quantity(&segment.usage, *meter);
                    let amount = round_money(charge(used, tiers, *mode), minor);
                    lines.push(Line {
                        description: format!("{}{suffix}", meter.as_str()),
                        quantity: used,
                        amount,
                        detail: format!("{mode:?} tiers over {used} units").to_lowercase(),
                    });
                }
                Component::Tokens {
                    input_per_million,
                    output_per_million,
                } => {
                    let million = Decimal::from(1_000_000);
                    for (meter, price) in [
                        (Meter::TokensIn, input_per_million),
                        (Meter::TokensOut, output_per_million),
                    ] {
                        let used = quantity(&segment.usage, meter);
                        lines.push(Line {
                            description: format!("{}{suffix}", meter.as_str()),
                            quantity: used,
                            amount: round_money(used / million * *price, minor),
                            detail: format!("{used} / 1,000,000 x {price}"),
                        });
                    }
                }
                Component::Subscription {
                    fee,
                    meter,
                    included,
                    overage,
                } => {
                    let fee_due = round_money(*fee * share, minor);
                    let quota = *included * share;
                    lines.push(Line {
                        description: format!("subscription {}{suffix}", plan.name),
                        quantity: active,
                        amount: fee_due,
                        detail: format!("{fee} x {active}/{days} days"),
                    });
                    let used = quantity(&segment.usage, *meter);
                    let over = (used - quota).max(Decimal::ZERO);
                    lines.push(Line {
                        description: format!(
                            "{} over the included {}{suffix}",
                            meter.as_str(),
                            quota.round_dp(2).normalize()
                        ),
                        quantity: over,
                        amount: round_money(graduated(over, overage), minor),
                        detail: format!(
                            "max(0, {used} - {included} x {active}/{days}) through graduated tiers"
                        ),
                    });
                }
            }
        }
        if let Some(plan_minimum) = plan.monthly_minimum {
            minimum += plan_minimum * share;
        }
    }
    let minimum = round_money(minimum, minor);
    let subtotal: Decimal = lines.iter().map(|line| line.amount).sum();
    let minimum_true_up = (minimum - subtotal).max(Decimal::ZERO);
    Ok(Invoice {
        number: number.to_string(),
        tenant: tenant.to_string(),
        period: period.to_string(),
        currency,
        plans,
        lines,
        subtotal,
        minimum,
        minimum_true_up,
        total: subtotal + minimum_true_up,
    })
}

impl Invoice {
    /// Pretty JSON with a fixed field order and decimals as strings: the same invoice is
    /// always the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// A readable, self-contained HTML page.
    pub fn to_html(&self) -> String {
        let escape = |text: &str| {
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let money = |amount: Decimal| format!("{} {}", amount, escape(&self.currency));
        let mut rows = String::new();
        for line in &self.lines {
            rows.push_str(&format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"d\">{}</td></tr>\n",
                escape(&line.description),
                line.quantity.normalize(),
                money(line.amount),
                escape(&line.detail)
            ));
        }
        if self.minimum_true_up > Decimal::ZERO {
            rows.push_str(&format!(
                "<tr><td>monthly minimum true-up</td><td class=\"n\"></td><td class=\"n\">{}</td><td class=\"d\">max(0, {} - {})</td></tr>\n",
                money(self.minimum_true_up),
                self.minimum,
                self.subtotal
            ));
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Invoice {number}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ccc;padding:4px 10px;text-align:left}}.n{{text-align:right}}.d{{color:#666;font-size:smaller}}</style></head>\n<body>\n<h1>Invoice {number}</h1>\n<p>Tenant <b>{tenant}</b>, period {period}; plans: {plans}</p>\n<table>\n<tr><th>item</th><th>quantity</th><th>amount</th><th>how</th></tr>\n{rows}<tr><th>total</th><th></th><th class=\"n\">{total}</th><th></th></tr>\n</table>\n</body></html>\n",
            number = escape(&self.number),
            tenant = escape(&self.tenant),
            period = escape(&self.period),
            plans = escape(&self.plans.join(", ")),
            total = money(self.total),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::pricing::tests::{d, request_tiers};

    fn plan(components: Vec<Component>, minimum: Option<&str>) -> BillingPlan {
        BillingPlan {
            name: "test".to_string(),
            version: 1,
            currency: "USD".to_string(),
            minor_units: 2,
            components,
            monthly_minimum: minimum.map(d),
        }
    }

    fn month(plan: BillingPlan, usage: &[(Meter, &str)]) -> Vec<Segment> {
        vec![Segment {
            plan,
            first_day: 1,
            last_day: 30,
            usage: usage.iter().map(|(m, q)| (*m, d(q))).collect(),
        }]
    }

    #[test]
    fn per_request_graduated_golden() {
        let requests = plan(
            vec![Component::Metered {
                meter: Meter::ApiCalls,
                mode: TierMode::Graduated,
                tiers: request_tiers(),
            }],
            None,
        );
        let invoice = rate(
            "INV-1",
            "acme",
            "2026-11",
            &month(requests, &[(Meter::ApiCalls, "2500000")]),
        )
        .unwrap();
        assert_eq!(invoice.total, d("735.00"));
        assert_eq!(invoice.lines.len(), 1);
    }

    #[test]
    fn per_token_golden_rounds_each_line() {
        let tokens = plan(
            vec![Component::Tokens {
                input_per_million: d("3"),
                output_per_million: d("15"),
            }],
            None,
        );
        let invoice = rate(
            "INV-2",
            "acme",
            "2026-11",
            &month(
                tokens,
                &[(Meter::TokensIn, "12345678"), (Meter::TokensOut, "2000001")],
            ),
        )
        .unwrap();
        assert_eq!(invoice.lines[0].amount, d("37.04"));
        assert_eq!(invoice.lines[1].amount, d("30.00"));
        assert_eq!(invoice.total, d("67.04"));
    }

    fn gpu_subscription() -> BillingPlan {
        plan(
            vec![Component::Subscription {
                fee: d("499"),
                meter: Meter::GpuSeconds,
                included: d("360000"),
                overage: vec![Tier {
                    up_to: None,
                    unit_price: d("2.20") / d("3600"),
                    flat_fee: d("0"),
                }],
            }],
            None,
        )
    }

    #[test]
    fn subscription_with_overage_golden() {
        // 100 GPU-hours included, 137.5 used
        let invoice = rate(
            "INV-3",
            "acme",
            "2026-11",
            &month(gpu_subscription(), &[(Meter::GpuSeconds, "495000")]),
        )
        .unwrap();
        assert_eq!(invoice.total, d("581.50"));
    }

    #[test]
    fn usage_below_the_minimum_is_trued_up() {
        let usage = plan(
            vec![Component::Metered {
                meter: Meter::RowsScored,
                mode: TierMode::Graduated,
                tiers: vec![Tier {
                    up_to: None,
                    unit_price: d("0.0001"),
                    flat_fee: d("0"),
                }],
            }],
            Some("1000"),
        );
        let invoice = rate(
            "INV-4",
            "acme",
            "2026-11",
            &month(usage, &[(Meter::RowsScored, "6124000")]),
        )
        .unwrap();
        assert_eq!(invoice.subtotal, d("612.40"));
        assert_eq!(invoice.minimum_true_up, d("387.60"));
        assert_eq!(invoice.total, d("1000.00"));
    }

    #[test]
    fn a_mid_month_plan_change_is_prorated_by_days() {
        // 10 days without a subscription, then the GPU subscription for the last 20 of 30
        let before = plan(
            vec![Component::Metered {
                meter: Meter::GpuSeconds,
                mode: TierMode::Graduated,
                tiers: vec![Tier {
                    up_to: None,
                    unit_price: d("3") / d("3600"),
                    flat_fee: d("0"),
                }],
            }],
            None,
        );
        let segments = vec![
            Segment {
                plan: before,
                first_day: 1,
                last_day: 10,
                usage: [(Meter::GpuSeconds, d("36000"))].into_iter().collect(),
            },
            Segment {
                plan: gpu_subscription(),
                first_day: 11,
                last_day: 30,
                usage: [(Meter::GpuSeconds, d("360000"))].into_iter().collect(),
            },
        ];
        let invoice = rate("INV-5", "acme", "2026-11", &segments).unwrap();
        // 10 h at $3 = 30.00; fee 499 x 20/30 = 332.67; quota 66.67 h, 100 h used: 33.33 h x 2.20
        assert_eq!(invoice.lines[0].amount, d("30.00"));
        assert_eq!(invoice.lines[1].amount, d("332.67"));
        assert_eq!(invoice.lines[2].amount, d("73.33"));
        assert_eq!(invoice.total, d("436.00"));
        assert_eq!(invoice.plans.len(), 2);
    }

    #[test]
    fn regenerating_gives_the_same_bytes_and_bad_months_are_refused() {
        let segments = month(gpu_subscription(), &[(Meter::GpuSeconds, "495000")]);
        let a = rate("INV-6", "acme", "2026-11", &segments).unwrap();
        let b = rate("INV-6", "acme", "2026-11", &segments).unwrap();
        assert_eq!(a.to_json(), b.to_json());
        assert_eq!(a.to_html(), b.to_html());
        assert!(a.to_html().contains("581.50 USD"));
        assert_eq!(days_in_month("2026-02").unwrap(), 28);
        assert_eq!(days_in_month("2028-02").unwrap(), 29);
        assert!(matches!(
            days_in_month("2026-13"),
            Err(BillingError::Period(_))
        ));
        let mut gap = segments.clone();
        gap[0].last_day = 10;
        gap.push(Segment {
            first_day: 12,
            last_day: 30,
            ..segments[0].clone()
        });
        assert!(matches!(
            rate("INV-7", "acme", "2026-11", &gap),
            Err(BillingError::Segments { .. })
        ));
    }
}
