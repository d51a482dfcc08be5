//! Tiered prices (`shared/notes/billing-sla.md` A.3): graduated and volume tiers, money
//! rounding, and the checks a price list must pass before a plan can use it.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Rounds to the currency's minor unit, half to even.
pub fn round_money(amount: Decimal, minor_units: u32) -> Decimal {
    let mut rounded =
        amount.round_dp_with_strategy(minor_units, RoundingStrategy::MidpointNearestEven);
    // always written with every minor digit: 375.00, not 375
    rounded.rescale(minor_units);
    rounded
}

/// One price tier: units up to `up_to` (the last tier has none) at `unit_price` each, plus
/// `flat_fee` once when usage enters the tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    #[serde(default)]
    pub up_to: Option<Decimal>,
    pub unit_price: Decimal,
    #[serde(default)]
    pub flat_fee: Decimal,
}

/// How tiers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// Each unit at the price of the tier it falls in.
    Graduated,
    /// Every unit at the price of the tier the total falls in.
    Volume,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    #[error("a price list needs at least one tier")]
    NoTiers,
    #[error("tier {index}: bounds must increase and only the last tier may be open-ended")]
    Bounds { index: usize },
    #[error("tier {index}: prices and fees cannot be negative")]
    Negative { index: usize },
}

/// Checks a price list; returns warnings about volume cliffs (a larger usage charged less).
pub fn check_tiers(tiers: &[Tier], mode: TierMode) -> Result<Vec<String>, PricingError> {
    if tiers.is_empty() {
        return Err(PricingError::NoTiers);
    }
    let mut previous = Decimal::ZERO;
    for (index, tier) in tiers.iter().enumerate() {
        let last = index + 1 == tiers.len();
        match tier.up_to {
            Some(bound) if !last && bound > previous => previous = bound,
            None if last => {}
            _ => return Err(PricingError::Bounds { index }),
        }
        if tier.unit_price.is_sign_negative() || tier.flat_fee.is_sign_negative() {
            return Err(PricingError::Negative { index });
        }
    }
    let mut warnings = Vec::new();
    if mode == TierMode::Volume {
        for tier in &tiers[..tiers.len() - 1] {
            let bound = tier.up_to.unwrap_or_default();
            let at = volume(bound, tiers);
            let above = volume(bound + Decimal::new(1, 6), tiers);
            if above < at {
                warnings.push(format!(
                    "volume cliff at {bound}: {at} for {bound} units but {above} just above"
                ));
            }
        }
    }
    Ok(warnings)
}

/// What one tier contributed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierCharge {
    pub from: Decimal,
    pub to: Option<Decimal>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub flat_fee: Decimal,
    pub amount: Decimal,
}

/// `sum_k p_k * max(0, min(U, hi_k) - lo_k)` (+ the flat fee of every tier entered), unrounded,
/// with the contribution of each tier entered.
pub fn graduated_breakdown(usage: Decimal, tiers: &[Tier]) -> (Decimal, Vec<TierCharge>) {
    let usage = usage.max(Decimal::ZERO);
    let mut total = Decimal::ZERO;
    let mut charges = Vec::new();
    let mut low = Decimal::ZERO;
    for tier in tiers {
        let high = tier.up_to;
        let top = high.map_or(usage, |high| usage.min(high));
        let quantity = (top - low).max(Decimal::ZERO);
        if quantity > Decimal::ZERO {
            let amount = quantity * tier.unit_price + tier.flat_fee;
            total += amount;
            charges.push(TierCharge {
                from: low,
                to: high,
                quantity,
                unit_price: tier.unit_price,
                flat_fee: tier.flat_fee,
                amount,
            });
        }
        match high {
            Some(high) if usage > high => low = high,
            _ => break,
        }
    }
    (total, charges)
}

pub fn graduated(usage: Decimal, tiers: &[Tier]) -> Decimal {
    graduated_breakdown(usage, tiers).0
}

/// `p_j * U (+ f_j)` with `j` the tier holding `U`, unrounded.
pub fn volume(usage: Decimal, tiers: &[Tier]) -> Decimal {
    let usage = usage.max(Decimal::ZERO);
    let tier = tiers
        .iter()
        .find(|tier| tier.up_to.is_none_or(|high| usage <= high))
        .or(tiers.last());
    match tier {
        Some(tier) if usage > Decimal::ZERO => usage * tier.unit_price + tier.flat_fee,
        _ => Decimal::ZERO,
    }
}

pub fn charge(usage: Decimal, tiers: &[Tier], mode: TierMode) -> Decimal {
    match mode {
        TierMode::Graduated => graduated(usage, tiers),
        TierMode::Volume => volume(usage, tiers),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    pub fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    /// The notes' example: 0-100k free, 100k-1M $0.40 per 1k, above $0.25 per 1k.
    pub fn request_tiers() -> Vec<Tier> {
        vec![
            Tier {
                up_to: Some(d("100000")),
                unit_price: d("0"),
                flat_fee: d("0"),
            },
            Tier {
                up_to: Some(d("1000000")),
                unit_price: d("0.0004"),
                flat_fee: d("0"),
            },
            Tier {
                up_to: None,
                unit_price: d("0.00025"),
                flat_fee: d("0"),
            },
        ]
    }

    #[test]
    fn graduated_and_volume_match_the_worked_examples() {
        let tiers = request_tiers();
        assert_eq!(round_money(graduated(d("2500000"), &tiers), 2), d("735.00"));
        assert_eq!(round_money(volume(d("2500000"), &tiers), 2), d("625.00"));
        let (_, breakdown) = graduated_breakdown(d("2500000"), &tiers);
        assert_eq!(breakdown.len(), 3, "{breakdown:?}");
        assert_eq!(breakdown[0].amount, d("0"));
        assert_eq!(breakdown[1].quantity, d("900000"));
        assert_eq!(breakdown[2].quantity, d("1500000"));
    }

    #[test]
    fn the_volume_cliff_is_reported_and_bad_bounds_are_refused() {
        let warnings = check_tiers(&request_tiers(), TierMode::Volume).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("1000000"));
        assert!(
            check_tiers(&request_tiers(), TierMode::Graduated)
                .unwrap()
                .is_empty()
        );
        let mut open_middle = request_tiers();
        open_middle[1].up_to = None;
        assert_eq!(
            check_tiers(&open_middle, TierMode::Graduated),
            Err(PricingError::Bounds { index: 1 })
        );
        assert_eq!(
            check_tiers(&[], TierMode::Volume),
            Err(PricingError::NoTiers)
        );
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(round_money(d("0.125"), 2), d("0.12"));
        assert_eq!(round_money(d("0.135"), 2), d("0.14"));
    }

    proptest! {
        #[test]
        fn graduated_charges_never_fall_as_usage_grows(a in 0u64..5_000_000, b in 0u64..5_000_000) {
            let tiers = request_tiers();
            let (low, high) = (a.min(b), a.max(b));
            prop_assert!(graduated(Decimal::from(low), &tiers) <= graduated(Decimal::from(high), &tiers));
        }

        #[test]
        fn graduated_charges_are_the_sum_of_their_tiers(usage in 0u64..5_000_000) {
            let (total, breakdown) = graduated_breakdown(Decimal::from(usage), &request_tiers());
            prop_assert_eq!(total, breakdown.iter().map(|t| t.amount).sum::<Decimal>());
            prop_assert_eq!(Decimal::from(usage), breakdown.iter().map(|t| t.quantity).sum::<Decimal>());
        }
    }
}
