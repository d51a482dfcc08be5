//! Cost attribution (`shared/notes/billing-sla.md` A.5): each tenant's direct cost from its
//! measured resources times unit prices, the shared platform cost spread in proportion to
//! direct cost, and the margin against what its invoice bills.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::billing::pricing::round_money;
use crate::usage::Meter;

/// What resources cost the platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitPrices {
    pub cpu_second: Decimal,
    pub gpu_second: Decimal,
    /// Per GiB-month stored (from `storage_bytes` samples).
    pub gib_month: Decimal,
    /// Per online request served.
    pub request: Decimal,
    /// Platform cost not attributable to one tenant (control plane, Redis, idle capacity), per
    /// month.
    pub shared_per_month: Decimal,
}

impl Default for UnitPrices {
    fn default() -> Self {
        let d = |text: &str| Decimal::from_str(text).unwrap_or_default();
        Self {
            // a 2-vCPU machine at about $0.07/h
            cpu_second: d("0.00001"),
            // one GPU at about $2.50/h
            gpu_second: d("0.0007"),
            gib_month: d("0.023"),
            request: d("0.000002"),
            shared_per_month: d("500"),
        }
    }
}

/// One tenant's month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantCost {
    pub tenant: String,
    pub direct: Decimal,
    pub shared: Decimal,
    pub total: Decimal,
    pub revenue: Decimal,
    pub margin: Decimal,
    /// Direct cost per resource.
    pub by_resource: BTreeMap<String, Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub period: String,
    pub prices: UnitPrices,
    pub tenants: Vec<TenantCost>,
    pub direct: Decimal,
    pub shared: Decimal,
    pub revenue: Decimal,
    pub margin: Decimal,
    /// How the shared cost was spread.
    pub method: String,
}

/// A tenant's usage for the month: meter totals, and its average stored GiB over the month.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantMonth {
    pub usage: BTreeMap<Meter, Decimal>,
    pub average_gib: Decimal,
    pub revenue: Decimal,
}

/// Direct cost per tenant, then the shared cost spread by direct cost (evenly when no tenant
/// has any direct cost), rounded to the cent with the last tenant taking the rounding
/// remainder so the parts add up to the whole exactly.
pub fn attribute(
    period: &str,
    prices: &UnitPrices,
    months: &BTreeMap<String, TenantMonth>,
) -> CostReport {
    let used =
        |month: &TenantMonth, meter: Meter| month.usage.get(&meter).copied().unwrap_or_default();
    let mut rows: Vec<TenantCost> = months
        .iter()
        .map(|(tenant, month)| {
            let by_resource: BTreeMap<String, Decimal> = [
                ("cpu", used(month, Meter::CpuSeconds) * prices.cpu_second),
                ("gpu", used(month, Meter::GpuSeconds) * prices.gpu_second),
                ("storage", month.average_gib * prices.gib_month),
                ("requests", used(month, Meter::ApiCalls) * prices.request),
            ]
            .into_iter()
            .map(|(name, cost)| (name.to_string(), round_money(cost, 4)))
            .collect();
            let direct = round_money(by_resource.values().copied().sum(), 2);
            TenantCost {
                tenant: tenant.clone(),
                direct,
                shared: Decimal::ZERO,
                total: Decimal::ZERO,
                revenue: month.revenue,
                margin: Decimal::ZERO,
                by_resource,
            }
        })
        .collect();
    let direct: Decimal = rows.iter().map(|row| row.direct).sum();
    let count = Decimal::from(rows.len().max(1));
    let mut spread = Decimal::ZERO;
    let last = rows.len().saturating_sub(1);
    for (index, row) in rows.iter_mut().enumerate() {
        row.shared = if index == last {
            prices.shared_per_month - spread
        } else if direct.is_zero() {
            round_money(prices.shared_per_month / count, 2)
        } else {
            round_money(prices.shared_per_month * row.direct / direct, 2)
        };
        spread += row.shared;
        row.total = row.direct + row.shared;
        row.margin = row.revenue - row.total;
    }
    let revenue: Decimal = rows.iter().map(|row| row.revenue).sum();
    let shared = if rows.is_empty() {
        Decimal::ZERO
    } else {
        prices.shared_per_month
    };
    CostReport {
        period: period.to_string(),
        prices: prices.clone(),
        direct,
        shared,
        revenue,
        margin: revenue - direct - shared,
        tenants: rows,
        method: "shared cost spread in proportion to direct cost (evenly when none)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn month(cpu: u64, calls: u64, revenue: &str) -> TenantMonth {
        TenantMonth {
            usage: [
                (Meter::CpuSeconds, Decimal::from(cpu)),
                (Meter::ApiCalls, Decimal::from(calls)),
            ]
            .into_iter()
            .collect(),
            average_gib: Decimal::ONE,
            revenue: Decimal::from_str(revenue).unwrap(),
        }
    }

    #[test]
    fn shared_cost_follows_direct_cost_and_margins_add_up() {
        let months: BTreeMap<String, TenantMonth> = [
            ("acme".to_string(), month(3_000_000, 1_000_000, "499")),
            ("globex".to_string(), month(1_000_000, 0, "12.50")),
        ]
        .into_iter()
        .collect();
        let report = attribute("2026-11", &UnitPrices::default(), &months);
        let acme = &report.tenants[0];
        // 3M cpu-s x 0.00001 = 30, 1 GiB x 0.023, 1M calls x 0.000002 = 2
        assert_eq!(acme.direct.to_string(), "32.02");
        assert!(acme.shared > report.tenants[1].shared);
        let shared: Decimal = report.tenants.iter().map(|t| t.shared).sum();
        assert_eq!(shared, report.shared);
        assert_eq!(
            report.margin,
            report.tenants.iter().map(|t| t.margin).sum::<Decimal>()
        );
    }

    proptest! {
        #[test]
        fn the_parts_always_add_up_to_the_whole(cpus in proptest::collection::vec(0u64..10_000_000, 1..20)) {
            let months: BTreeMap<String, TenantMonth> = cpus
                .iter()
                .enumerate()
                .map(|(i, cpu)| (format!("t{i:02}"), month(*cpu, 0, "0")))
                .collect();
            let report = attribute("2026-11", &UnitPrices::default(), &months);
            let shared: Decimal = report.tenants.iter().map(|t| t.shared).sum();
            prop_assert_eq!(shared, report.shared);
            let direct: Decimal = report.tenants.iter().map(|t| t.direct).sum();
            prop_assert_eq!(direct, report.direct);
        }
    }
}
