//! Training on the generated clause fixtures: a base on the pooled corpus, a variant per
//! tenant, save and reload.

use crate::fixtures::{PROFILES, clauses, profile};
use crate::model::*;

fn corpus(tenant: &str, rows: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    clauses(profile(tenant).unwrap(), rows, seed)
        .into_iter()
        .filter_map(|clause| Some((clause.text?, clause.label?)))
        .filter(|(text, label)| text.len() >= 10 && label != "miscellaneous")
        .unzip()
}

fn small() -> EncoderConfig {
    EncoderConfig {
        features: FeatureConfig {
            buckets: 1 << 14,
            max_ids: 256,
        },
        dim: 32,
        hidden: 32,
    }
}

#[test]
fn a_variant_over_a_shared_base_classifies_held_out_clauses_and_reloads_identically() {
    let config = small();
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for profile in &PROFILES {
        let (t, l) = corpus(profile.tenant, 400, 11);
        texts.extend(t);
        labels.extend(l);
    }
    let train = TrainConfig {
        epochs: 4,
        ..TrainConfig::default()
    };
    let mut seen = Vec::new();
    let (encoder, epochs) =
        train_base(&config, &texts, &labels, &train, |e| seen.push(e.epoch)).unwrap();
    assert_eq!(seen, [1, 2, 3, 4]);
    assert!(epochs.last().unwrap().loss < epochs[0].loss, "{epochs:?}");

    let (acme_texts, acme_labels) = corpus("acme", 600, 99);
    let variant = finetune_head(
        &encoder,
        &config,
        &acme_texts,
        &acme_labels,
        &TrainConfig {
            epochs: 30,
            ..TrainConfig::default()
        },
        |_| {},
    )
    .unwrap();
    assert!(
        variant.metrics.accuracy >= 0.9,
        "{:?} {:?} base {epochs:?}",
        variant.metrics,
        variant.epochs
    );
    assert!(variant.metrics.macro_f1 >= 0.85, "{:?}", variant.metrics);
    assert_eq!(variant.metrics.rows, variant.holdout_rows.len());
    assert!(variant.epochs.len() <= 30);

    let before = predict(&encoder, &variant.head, &config, &acme_texts[..20]).unwrap();
    let encoder_bytes = to_bytes(encoder.clone()).unwrap();
    let head_bytes = to_bytes(variant.head.clone()).unwrap();
    let device = burn::prelude::Device::flex();
    let encoder2 = from_bytes(config.init(&device), encoder_bytes).unwrap();
    let head2 = from_bytes(config.init_head(variant.labels.len(), &device), head_bytes).unwrap();
    let after = predict(&encoder2, &head2, &config, &acme_texts[..20]).unwrap();
    assert_eq!(
        before, after,
        "a reloaded variant predicts exactly the same"
    );
    assert!(
        before
            .iter()
            .all(|(_, p)| (p.iter().sum::<f32>() - 1.0).abs() < 1e-4)
    );
    assert!(from_bytes(config.init_head(3, &device), b"not weights".to_vec()).is_err());
}
