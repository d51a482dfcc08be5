//! Deterministic contract-clause datasets for the demo tenants (`tenantry fixtures generate`).
//!
//! Each tenant has its own vocabulary (parties, law, currency, phrasing), its own label mix
//! and its own source format, and about 2% malformed rows (missing or too-short text, unknown
//! labels, duplicate ids, pages out of range, ids with bad characters) so validation has
//! something to catch:
//! - `acme`: CSV in the platform's contract-clause schema;
//! - `globex`: JSON Lines with its own field names and Title Case categories;
//! - `initech`: Parquet with upper-case names and labels, stray white space and full-width
//!   characters. Its preset (`transforms.initech-source`) normalises them.
//!
//! The same seed gives the same bytes on every machine (own SplitMix64, no float formatting).

use polars::prelude::*;

use crate::dataset::{DatasetFormat, frame_to_parquet, from_parquet};

/// The ten clause types, in the platform's label names.
pub const LABELS: [&str; 10] = [
    "governing_law",
    "termination",
    "confidentiality",
    "indemnification",
    "limitation_of_liability",
    "payment_terms",
    "intellectual_property",
    "force_majeure",
    "warranty",
    "assignment",
];

/// SplitMix64: tiny, seedable, identical everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given integer weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut draw = self.below(total);
        for (index, weight) in weights.iter().enumerate() {
            if draw < *weight {
                return index;
            }
            draw -= weight;
        }
        weights.len() - 1
    }
}

/// What makes a tenant's data its own.
pub struct TenantProfile {
    pub tenant: &'static str,
    pub format: DatasetFormat,
    pub parties: &'static [&'static str],
    pub law: &'static [&'static str],
    pub currency: &'static str,
    /// Label weights, in `LABELS` order.
    pub label_mix: [u64; 10],
    /// Tenant-specific words mixed into clauses.
    pub jargon: &'static [&'static str],
}

pub const PROFILES: [TenantProfile; 3] = [
    TenantProfile {
        tenant: "acme",
        format: DatasetFormat::Csv,
        parties: &[
            "Acme Corp",
            "the Supplier",
            "the Customer",
            "Acme Logistics LLC",
        ],
        law: &[
            "the State of Delaware",
            "the State of New York",
            "the State of California",
        ],
        currency: "USD",
        label_mix: [8, 14, 10, 9, 9, 18, 7, 5, 12, 8],
        jargon: &[
            "Statement of Work",
            "Purchase Order",
            "Service Levels",
            "Deliverables",
        ],
    },
    TenantProfile {
        tenant: "globex",
        format: DatasetFormat::Jsonl,
        parties: &[
            "Globex GmbH",
            "the Licensee",
            "the Licensor",
            "Globex Holding AG",
        ],
        law: &["the Federal Republic of Germany", "Switzerland", "Austria"],
        currency: "EUR",
        label_mix: [12, 8, 16, 6, 10, 6, 20, 8, 6, 8],
        jargon: &[
            "Licensed Software",
            "Source Code",
            "Documentation",
            "Territory",
        ],
    },
    TenantProfile {
        tenant: "initech",
        format: DatasetFormat::Parquet,
        parties: &[
            "Initech Ltd",
            "the Consultant",
            "the Client",
            "Initech Services plc",
        ],
        law: &["England and Wales", "Scotland", "Ireland"],
        currency: "GBP",
        label_mix: [6, 12, 8, 14, 14, 10, 6, 10, 10, 10],
        jargon: &[
            "Consultancy Services",
            "Milestones",
            "Project Plan",
            "Key Personnel",
        ],
    },
];

pub fn profile(tenant: &str) -> Option<&'static TenantProfile> {
    PROFILES.iter().find(|profile| profile.tenant == tenant)
}

fn templates(label: &str) -> &'static [&'static str] {
    match label {
        "governing_law" => &[
            "This Agreement shall be governed by and construed in accordance with the laws of {law}.",
            "Any dispute arising out of the {jargon} shall be subject to the exclusive jurisdiction of the courts of {law}.",
            "The parties submit to the laws of {law}, excluding its conflict of laws rules.",
        ],
        "termination" => &[
            "Either party may terminate this Agreement upon {days} days written notice to the other party.",
            "{party} may terminate immediately if the other party materially breaches the {jargon}.",
            "This Agreement terminates automatically if {party} becomes insolvent or enters administration.",
        ],
        "confidentiality" => &[
            "Each party shall keep the other's Confidential Information secret for {years} years after disclosure.",
            "{party} shall not disclose any information relating to the {jargon} without prior written consent.",
            "Confidential Information may be shared only with employees who need to know it for the {jargon}.",
        ],
        "indemnification" => &[
            "{party} shall indemnify and hold harmless the other party against all claims arising from the {jargon}.",
            "The indemnifying party shall defend any third-party claim alleging that the {jargon} infringes its rights.",
            "{party} shall compensate all losses, damages and costs caused by its breach of this Agreement.",
        ],
        "limitation_of_liability" => &[
            "The total liability of {party} shall not exceed {amount} {currency} in any contract year.",
            "Neither party shall be liable for indirect, special or consequential damages under the {jargon}.",
            "Liability for loss of profit is excluded, save for fraud and wilful misconduct of {party}.",
        ],
        "payment_terms" => &[
            "Invoices are payable within {days} days of receipt in {currency}.",
            "{party} shall pay the fees for the {jargon} monthly in arrears, {amount} {currency} per month.",
            "Late payments bear interest at {rate} percent per annum above the base rate.",
        ],
        "intellectual_property" => &[
            "All intellectual property created under the {jargon} vests in {party}.",
            "{party} grants a non-exclusive, non-transferable licence to use the {jargon}.",
            "Nothing in this Agreement transfers ownership of pre-existing intellectual property of {party}.",
        ],
        "force_majeure" => &[
            "Neither party is liable for delay caused by events beyond its reasonable control, including flood, fire or epidemic.",
            "If a force majeure event continues for more than {days} days, {party} may terminate the {jargon}.",
            "The affected party shall notify the other promptly of any force majeure event affecting the {jargon}.",
        ],
        "warranty" => &[
            "{party} warrants that the {jargon} will conform to its specification for {days} days.",
            "The {jargon} is provided with reasonable skill and care and free from material defects.",
            "Except as expressly stated, {party} gives no warranty, express or implied, of fitness for purpose.",
        ],
        _ => &[
            "Neither party may assign this Agreement without the prior written consent of the other party.",
            "{party} may assign its rights under the {jargon} to an affiliate upon written notice.",
            "This Agreement binds the parties and their permitted successors and assigns.",
        ],
    }
}

/// One clause in the platform's canonical shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub clause_id: String,
    pub contract_id: String,
    pub text: Option<String>,
    pub label: Option<String>,
    pub page: Option<i64>,
}

fn fill(template: &str, profile: &TenantProfile, rng: &mut SplitMix) -> String {
    let days = [7, 10, 14, 30, 45, 60, 90][rng.below(7) as usize];
    template
        .replace("{party}", rng.pick::<&str>(profile.parties))
        .replace("{law}", rng.pick::<&str>(profile.law))
        .replace("{jargon}", rng.pick::<&str>(profile.jargon))
        .replace("{currency}", profile.currency)
        .replace("{days}", &days.to_string())
        .replace("{years}", &(2 + rng.below(8)).to_string())
        .replace("{amount}", &((1 + rng.below(500)) * 1000).to_string())
        .replace("{rate}", &(1 + rng.below(8)).to_string())
}

/// The clauses of one tenant, canonical shape, malformed rows included.
pub fn clauses(profile: &TenantProfile, rows: usize, seed: u64) -> Vec<Clause> {
    let tenant_seed = profile.tenant.bytes().fold(seed, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let mut rng = SplitMix::new(tenant_seed);
    let mut out = Vec::with_capacity(rows);
    for index in 0..rows {
        let label = LABELS[rng.weighted(&profile.label_mix)];
        let template = *rng.pick(templates(label));
        let mut clause = Clause {
            clause_id: format!("{}-{:06}", profile.tenant, index + 1),
            contract_id: format!("{}-c{:04}", profile.tenant, 1 + index / 12),
            text: Some(fill(template, profile, &mut rng)),
            label: Some(label.to_string()),
            page: Some(1 + (index % 12) as i64 * 2 + rng.below(2) as i64),
        };
        // About 2% of rows are malformed, each in one way.
        if rng.below(50) == 0 {
            match rng.below(6) {
                0 => clause.text = None,
                1 => clause.text = Some("See above.".chars().take(8).collect()),
                2 => clause.label = Some("miscellaneous".to_string()),
                3 if index > 0 => clause.clause_id = format!("{}-{:06}", profile.tenant, index),
                4 => clause.page = Some(0),
                _ => clause.clause_id = format!("{} {:06}!", profile.tenant, index + 1),
            }
        }
        out.push(clause);
    }
    out
}

fn title_case(label: &str) -> String {
    label
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fullwidth forms of ASCII letters for a word: what copy-paste from some PDFs produces.
fn fullwidth(word: &str) -> String {
    word.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
            other => other,
        })
        .collect()
}

/// The tenant's clauses in its own source shape, as a DataFrame.
pub fn source_frame(profile: &TenantProfile, rows: usize, seed: u64) -> PolarsResult<DataFrame> {
    let clauses = clauses(profile, rows, seed);
    let ids: Vec<String> = clauses.iter().map(|c| c.clause_id.clone()).collect();
    let contracts: Vec<String> = clauses.iter().map(|c| c.contract_id.clone()).collect();
    let pages: Vec<Option<i64>> = clauses.iter().map(|c| c.page).collect();
    match profile.tenant {
        "globex" => {
            let texts: Vec<Option<String>> = clauses.iter().map(|c| c.text.clone()).collect();
            let labels: Vec<Option<String>> = clauses
                .iter()
                .map(|c| c.label.as_deref().map(title_case))
                .collect();
            DataFrame::new_infer_height(vec![
                Column::new("id".into(), ids),
                Column::new("contract".into(), contracts),
                Column::new("clause_text".into(), texts),
                Column::new("category".into(), labels),
                Column::new("page_no".into(), pages),
            ])
        }
        "initech" => {
            let mut rng = SplitMix::new(seed ^ 0x001A_17EC);
            let texts: Vec<Option<String>> = clauses
                .iter()
                .map(|c| {
                    c.text.as_ref().map(|text| {
                        let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
                        if rng.below(4) == 0 {
                            let at = rng.below(words.len() as u64) as usize;
                            words[at] = fullwidth(&words[at]);
                        }
                        let spacing = if rng.below(3) == 0 { "  " } else { " " };
                        format!("  {}\u{a0}", words.join(spacing))
                    })
                })
                .collect();
            let labels: Vec<Option<String>> = clauses
                .iter()
                .map(|c| c.label.as_ref().map(|label| label.to_uppercase()))
                .collect();
            let upper_ids: Vec<String> = ids.iter().map(|id| id.to_uppercase()).collect();
            DataFrame::new_infer_height(vec![
                Column::new("ClauseID".into(), upper_ids),
                Column::new("DocRef".into(), contracts),
                Column::new("Body".into(), texts),
                Column::new("Type".into(), labels),
                Column::new("Page".into(), pages),
            ])
        }
        _ => {
            let texts: Vec<Option<String>> = clauses.iter().map(|c| c.text.clone()).collect();
            let labels: Vec<Option<String>> = clauses.iter().map(|c| c.label.clone()).collect();
            DataFrame::new_infer_height(vec![
                Column::new("clause_id".into(), ids),
                Column::new("contract_id".into(), contracts),
                Column::new("text".into(), texts),
                Column::new("label".into(), labels),
                Column::new("page".into(), pages),
            ])
        }
    }
}

/// The bytes of a tenant's dataset in its source format, and that format.
pub fn source_bytes(
    profile: &TenantProfile,
    rows: usize,
    seed: u64,
) -> Result<(Vec<u8>, DatasetFormat), String> {
    let mut frame = source_frame(profile, rows, seed).map_err(|e| e.to_string())?;
    let parquet = frame_to_parquet(&mut frame)?;
    let bytes = match profile.format {
        DatasetFormat::Parquet => parquet,
        other => from_parquet(&parquet, other)?,
    };
    Ok((bytes, profile.format))
}

/// The transform preset that maps a tenant's source shape onto the contract-clause schema
/// (what an operator puts in the tenant's configuration at onboarding).
pub fn source_preset(tenant: &str) -> serde_json::Value {
    match tenant {
        "globex" => {
            let mapping: serde_json::Map<String, serde_json::Value> = LABELS
                .iter()
                .map(|label| {
                    (
                        title_case(label),
                        serde_json::Value::String(label.to_string()),
                    )
                })
                .collect();
            serde_json::json!([
                {"rename": {"id": "clause_id", "contract": "contract_id", "clause_text": "text", "category": "label", "page_no": "page"}},
                {"mapValues": {"column": "label", "mapping": mapping}},
            ])
        }
        "initech" => serde_json::json!([
            {"rename": {"ClauseID": "clause_id", "DocRef": "contract_id", "Body": "text", "Type": "label", "Page": "page"}},
            {"normalizeText": {"columns": ["text"], "unicode": "nfkc", "collapseWhitespace": true}},
            {"normalizeText": {"columns": ["clause_id", "label"], "lowercase": true}},
        ]),
        _ => serde_json::json!([]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_tenant_specific() {
        let acme = profile("acme").unwrap();
        assert_eq!(clauses(acme, 300, 1), clauses(acme, 300, 1));
        assert_ne!(clauses(acme, 300, 1), clauses(acme, 300, 2));
        let globex = clauses(profile("globex").unwrap(), 300, 1);
        assert!(globex[0].clause_id.starts_with("globex-"));
        let text: String = globex.iter().filter_map(|c| c.text.clone()).collect();
        assert!(text.contains("EUR") || text.contains("Globex"));
        assert!(!text.contains("Delaware"), "globex has its own vocabulary");
    }

    #[test]
    fn label_mix_and_malformed_rows() {
        let rows = clauses(profile("acme").unwrap(), 5_000, 3);
        let labels: std::collections::BTreeSet<_> =
            rows.iter().filter_map(|c| c.label.clone()).collect();
        assert!(labels.len() >= 10);
        let malformed = rows
            .iter()
            .filter(|c| {
                c.text.as_ref().is_none_or(|t| t.len() < 10)
                    || c.label.as_deref() == Some("miscellaneous")
                    || c.page == Some(0)
                    || c.clause_id.contains(' ')
            })
            .count();
        assert!((20..300).contains(&malformed), "{malformed} malformed rows");
    }
}
