//! Training on the generated clause fixtures: a base on the pooled corpus, a variant per
//! tenant, save and reload.

use crate::fixtures::{PROFILES, clauses, profile};
use crate::model::train::{evaluate, train_independent};
use crate::model::*;

fn corpus(tenant: &str, rows: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    clauses(profile(tenant).unwrap(), rows, seed)
        .into_iter()
        .filter_map(|clause| Some((clause.text?, clause.label?)))
        .filter(|(text, label)| text.len() >= 10 && label != "miscellaneous")
        .unzip()
}

fn pooled_corpus(rows: usize) -> (Vec<String>, Vec<String>) {
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for profile in &PROFILES {
        let (t, l) = corpus(profile.tenant, rows, 11);
        texts.extend(t);
        labels.extend(l);
    }
    (texts, labels)
}

#[test]
fn a_variant_over_a_shared_base_classifies_held_out_clauses_and_reloads_identically() {
    let config = EncoderConfig::compact();
    let (texts, labels) = pooled_corpus(400);
    let train = TrainConfig {
        epochs: 4,
        ..TrainConfig::default()
    };
    let mut seen = Vec::new();
    let cpu = burn::prelude::Device::flex();
    let network = train_base(&config, &texts, &labels, &train, &cpu, |e| {
        seen.push(e.epoch);
        true
    })
    .unwrap();
    assert_eq!(seen, [1, 2, 3, 4]);
    // A caller that says stop (a cancelled job) ends training after that epoch.
    let mut stopped_at = Vec::new();
    let stopped = train_base(&config, &texts, &labels, &train, &cpu, |e| {
        stopped_at.push(e.epoch);
        e.epoch < 2
    });
    assert!(matches!(stopped, Err(ModelError::Interrupted(_))));
    assert_eq!(stopped_at, [1, 2]);
    let epochs = &network.epochs;
    assert!(epochs.last().unwrap().loss < epochs[0].loss, "{epochs:?}");
    let base = BaseWeights::of(&network.encoder, &config).unwrap();

    let (acme_texts, acme_labels) = corpus("acme", 600, 99);
    let tune = TrainConfig {
        epochs: 30,
        ..TrainConfig::default()
    };
    let variant = finetune(&base, &acme_texts, &acme_labels, &tune, None, &cpu, |_| {
        true
    })
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

    // The plain inference path computes what the burn modules compute.
    let reference = predict(&network.encoder, &variant.head, &config, &acme_texts[..50]).unwrap();
    let weights = variant.weights().unwrap();
    let classes = weights.labels.len();
    let fast = weights.probabilities(&base, &acme_texts[..50]);
    for ((class, probabilities), row) in reference.iter().zip(fast.chunks_exact(classes)) {
        assert_eq!(*class, best_class(row).0);
        for (a, b) in probabilities.iter().zip(row) {
            assert!((a - b).abs() < 1e-4, "{probabilities:?} vs {row:?}");
        }
    }

    let encoder_bytes = to_bytes(network.encoder.clone()).unwrap();
    let head_bytes = to_bytes(variant.head.clone()).unwrap();
    let device = burn::prelude::Device::flex();
    let encoder2 = from_bytes(config.init(&device), encoder_bytes).unwrap();
    let head2 = from_bytes(config.init_head(variant.labels.len(), &device), head_bytes).unwrap();
    let reloaded = VariantWeights::of(&head2, None, variant.labels.clone()).unwrap();
    let base2 = BaseWeights::of(&encoder2, &config).unwrap();
    assert_eq!(
        fast,
        reloaded.probabilities(&base2, &acme_texts[..50]),
        "a reloaded variant predicts exactly the same"
    );
    assert!(
        fast.chunks_exact(classes)
            .all(|p| (p.iter().sum::<f32>() - 1.0).abs() < 1e-4)
    );
    assert!(from_bytes(config.init_head(3, &device), b"not weights".to_vec()).is_err());
}

#[test]
fn lora_adapters_train_with_the_head_and_independent_models_need_no_base() {
    let config = EncoderConfig::compact();
    let (texts, labels) = pooled_corpus(300);
    let cpu = burn::prelude::Device::flex();
    let network = train_base(
        &config,
        &texts,
        &labels,
        &TrainConfig {
            epochs: 2,
            ..TrainConfig::default()
        },
        &cpu,
        |_| true,
    )
    .unwrap();
    let base = BaseWeights::of(&network.encoder, &config).unwrap();
    let (globex_texts, globex_labels) = corpus("globex", 600, 5);
    let tune = TrainConfig {
        epochs: 20,
        ..TrainConfig::default()
    };
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
    };
    let variant = finetune(
        &base,
        &globex_texts,
        &globex_labels,
        &tune,
        Some(lora),
        &cpu,
        |_| true,
    )
    .unwrap();
    let (adapters, used) = variant.lora.as_ref().expect("LoRA adapters were trained");
    assert_eq!(*used, lora);
    assert_eq!(adapters.a.dims(), [config.dim, 4]);
    assert!(variant.metrics.accuracy >= 0.9, "{:?}", variant.metrics);
    let weights = variant.weights().unwrap();
    let holdout: Vec<String> = variant
        .holdout_rows
        .iter()
        .map(|&r| globex_texts[r].clone())
        .collect();
    let truth: Vec<String> = variant
        .holdout_rows
        .iter()
        .map(|&r| globex_labels[r].clone())
        .collect();
    assert_eq!(
        evaluate(&base, &weights, &holdout, &truth),
        variant.metrics,
        "the adapters are part of inference"
    );

    let (own_encoder, own) = train_independent(
        &config,
        &globex_texts,
        &globex_labels,
        &TrainConfig {
            epochs: 6,
            ..TrainConfig::default()
        },
        &cpu,
        |_| true,
    )
    .unwrap();
    assert!(own.metrics.accuracy >= 0.8, "{:?}", own.metrics);
    let own_base = BaseWeights::of(&own_encoder, &config).unwrap();
    assert_ne!(own_base.embedding, base.embedding);
}
