//! Training: the base (embedding table + hidden layer + a head over the pooled corpus) and a
//! tenant variant (a new head over the frozen base, with a held-out split and early stopping).
//!
//! The embedding table is updated sparsely: it is left out of autodiff, the gathered rows are
//! a leaf of their own, and their gradient is added back into the touched rows only. A dense
//! gradient over a 2^17 x 64 table would cost a full table pass per step.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::fixtures::SplitMix;
use crate::model::ModelError;
use crate::model::infer::{BaseWeights, VariantWeights};
use crate::model::metrics::Metrics;
use crate::model::network::{Bags, Encoder, EncoderConfig, Head, Lora};

/// The device training runs on: the Flex CPU backend, or with the `gpu` feature the GPU
/// (burn's wgpu backend on Vulkan) for pools configured with `device = "gpu"`.
pub fn training_device(gpu: bool) -> Result<Device, ModelError> {
    if !gpu {
        return Ok(Device::flex());
    }
    #[cfg(feature = "gpu")]
    {
        Ok(Device::vulkan(DeviceKind::DefaultDevice))
    }
    #[cfg(not(feature = "gpu"))]
    {
        Err(ModelError::Unavailable(
            "this worker was built without GPU support (cargo build --features gpu)".into(),
        ))
    }
}

/// Training parameters (manifest `params` map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Step size of the sparse embedding updates (base training only).
    pub embedding_learning_rate: f32,
    /// Share of rows held out for early stopping and metrics (variants).
    pub holdout: f64,
    /// Epochs without a better holdout accuracy before stopping.
    pub patience: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch: 32,
            learning_rate: 1e-2,
            embedding_learning_rate: 1.0,
            holdout: 0.2,
            patience: 4,
            seed: 7,
        }
    }
}

/// One epoch, as reported to the job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    /// Holdout accuracy (variants) or training accuracy (base).
    pub accuracy: f64,
}

/// Sorted distinct labels and each row's class index.
pub fn index_labels(labels: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let classes = labels
        .iter()
        .map(|label| names.binary_search(label).unwrap_or(0))
        .collect();
    (names, classes)
}

fn shuffled(rows: usize, rng: &mut SplitMix) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    for index in (1..order.len()).rev() {
        let other = rng.below(index as u64 + 1) as usize;
        order.swap(index, other);
    }
    order
}

fn targets(classes: &[usize], rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = rows.iter().map(|&row| classes[row] as i64).collect();
    Tensor::from_data(TensorData::new(values, [rows.len()]), device)
}

fn argmax_rows(logits: Tensor<2>) -> Result<Vec<usize>, ModelError> {
    let predicted = logits
        .argmax(1)
        .try_into_vec_as::<i64>()
        .map_err(|error| ModelError::Tensor(format!("{error:?}")))?;
    Ok(predicted
        .into_iter()
        .map(|class| class.max(0) as usize)
        .collect())
}

/// The base together with the head it is trained with.
#[derive(burn::module::Module, Debug)]
struct BaseTraining {
    encoder: Encoder,
    head: Head,
}

/// Training stopped by its caller (`on_epoch` answered false: the job was cancelled or
/// timed out).
fn stopped(epoch: usize) -> ModelError {
    ModelError::Interrupted(format!("training stopped after epoch {epoch}"))
}

/// An encoder trained with its own head.
pub struct Network {
    pub encoder: Encoder,
    pub head: Head,
    pub labels: Vec<String>,
    pub epochs: Vec<EpochReport>,
}

/// Trains an encoder and a head on a labelled corpus (the shared base, or a tenant's
/// independent model); returns them ready for inference. `on_epoch` sees every epoch and
/// answers whether to go on.
pub fn train_base(
    config: &EncoderConfig,
    texts: &[String],
    labels: &[String],
    train: &TrainConfig,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochReport) -> bool,
) -> Result<Network, ModelError> {
    if texts.is_empty() || texts.len() != labels.len() {
        return Err(ModelError::Invalid(
            "base training needs labelled texts".into(),
        ));
    }
    let (names, classes) = index_labels(labels);
    let device = device.clone().autodiff();
    device.seed(train.seed);
    let mut encoder = config.init(&device);
    encoder.embedding = encoder.embedding.no_grad();
    let mut model = BaseTraining {
        encoder,
        head: config.init_head(names.len(), &device),
    };
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = SplitMix::new(train.seed);
    let mut reports = Vec::new();
    for epoch in 1..=train.epochs {
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        for batch in shuffled(texts.len(), &mut rng).chunks(train.batch.max(1)) {
            let batch_texts: Vec<&str> = batch.iter().map(|&row| texts[row].as_str()).collect();
            let bags = Bags::of(&config.features, &batch_texts);
            let ids = bags.id_tensor(&device);
            let rows = model
                .encoder
                .embedding
                .weight
                .val()
                .select(0, ids.clone())
                .detach()
                .require_grad();
            let pooled = model.encoder.pool(rows.clone(), &bags, &device);
            let logits = model.head.out.forward(model.encoder.represent(pooled));
            correct += argmax_rows(logits.clone())?
                .iter()
                .zip(batch)
                .filter(|(predicted, row)| **predicted == classes[**row])
                .count();
            let loss = loss_fn.forward(logits, targets(&classes, batch, &device));
            let mut grads = loss.backward();
            let row_grads = rows
                .grad_remove(&mut grads)
                .ok_or_else(|| ModelError::Tensor("no gradient for the embedding rows".into()))?;
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(train.learning_rate, model, grads);
            let delta = row_grads.mul_scalar(-train.embedding_learning_rate);
            model.encoder.embedding.weight = model
                .encoder
                .embedding
                .weight
                .map(|weight| weight.select_assign(0, ids, delta, IndexingUpdateOp::Add));
            loss_sum += f64::from(loss.into_scalar::<f32>()) * batch.len() as f64;
        }
        let report = EpochReport {
            epoch,
            loss: loss_sum / texts.len() as f64,
            accuracy: correct as f64 / texts.len() as f64,
        };
        if !on_epoch(&report) {
            return Err(stopped(epoch));
        }
        reports.push(report);
    }
    let BaseTraining { encoder, head } = model.valid();
    Ok(Network {
        encoder,
        head,
        labels: names,
        epochs: reports,
    })
}

/// A tenant's own model from scratch (plan `isolation: independent`): encoder and head
/// trained on its training rows only, measured on its held-out rows.
pub fn train_independent(
    config: &EncoderConfig,
    texts: &[String],
    labels: &[String],
    train: &TrainConfig,
    device: &Device,
    on_epoch: impl FnMut(&EpochReport) -> bool,
) -> Result<(Encoder, Variant), ModelError> {
    if texts.len() < 2 || texts.len() != labels.len() {
        return Err(ModelError::Invalid(
            "training needs at least two labelled texts".into(),
        ));
    }
    let (training, holdout) = holdout_split(texts.len(), train.holdout, train.seed);
    let pick = |rows: &[usize], from: &[String]| -> Vec<String> {
        rows.iter().map(|&row| from[row].clone()).collect()
    };
    let network = train_base(
        config,
        &pick(&training, texts),
        &pick(&training, labels),
        train,
        device,
        on_epoch,
    )?;
    let base = BaseWeights::of(&network.encoder, config)?;
    let mut variant = Variant {
        head: network.head,
        lora: None,
        labels: network.labels,
        holdout_rows: holdout,
        metrics: Metrics::of(&[], &[], &[]),
        epochs: network.epochs,
    };
    variant.metrics = evaluate(
        &base,
        &variant.weights()?,
        &pick(&variant.holdout_rows, texts),
        &pick(&variant.holdout_rows, labels),
    );
    Ok((network.encoder, variant))
}

/// Metrics of a variant on labelled texts; labels the variant does not know count as errors.
pub fn evaluate(
    base: &BaseWeights,
    variant: &VariantWeights,
    texts: &[String],
    labels: &[String],
) -> Metrics {
    let mut names = variant.labels.clone();
    let unknown = names.len();
    let truth: Vec<usize> = labels
        .iter()
        .map(|label| {
            variant
                .labels
                .iter()
                .position(|name| name == label)
                .unwrap_or(unknown)
        })
        .collect();
    if truth.contains(&unknown) {
        names.push("(unknown label)".to_string());
    }
    let classes = variant.head.outputs.max(1);
    let predicted: Vec<usize> = variant
        .probabilities(base, texts)
        .chunks_exact(classes)
        .map(|row| crate::model::infer::best_class(row).0)
        .collect();
    Metrics::of(&names, &truth, &predicted)
}

/// LoRA adapters on the hidden layer: their rank and `alpha` (scale = alpha / rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank.max(1) as f32
    }
}

/// A trained variant (a head, and LoRA adapters when asked) and how it did on the rows held
/// out from training.
pub struct Variant {
    pub head: Head,
    pub lora: Option<(Lora, LoraConfig)>,
    pub labels: Vec<String>,
    pub holdout_rows: Vec<usize>,
    pub metrics: Metrics,
    pub epochs: Vec<EpochReport>,
}

impl Variant {
    /// The values of `from` (one per training row) at the held-out rows.
    pub fn holdout_of(&self, from: &[String]) -> Vec<String> {
        self.holdout_rows
            .iter()
            .map(|&row| from[row].clone())
            .collect()
    }

    /// The variant as plain weights for scoring.
    pub fn weights(&self) -> Result<VariantWeights, ModelError> {
        VariantWeights::of(
            &self.head,
            self.lora
                .as_ref()
                .map(|(lora, config)| (lora, config.scale())),
            self.labels.clone(),
        )
    }
}

/// Rows held out: the first share of a seeded shuffle, at least one when there are two or
/// more rows, and never all of them.
pub fn holdout_split(rows: usize, share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let order = shuffled(rows, &mut SplitMix::new(seed ^ 0x00b0_1d00));
    let held = ((rows as f64 * share.clamp(0.0, 0.9)).round() as usize)
        .max(usize::from(rows >= 2))
        .min(rows.saturating_sub(1));
    let (holdout, training) = order.split_at(held);
    (training.to_vec(), holdout.to_vec())
}

/// What a variant trains: a head alone, or LoRA adapters of the hidden layer with a head.
#[derive(burn::module::Module, Debug)]
struct Adapted {
    lora: Option<Lora>,
    head: Head,
}

impl Adapted {
    /// Logits of input rows: hidden representations (head only) or pooled embeddings (LoRA,
    /// through the frozen hidden layer `frozen`).
    fn forward(
        &self,
        input: Tensor<2>,
        frozen: Option<&(Tensor<2>, Tensor<1>)>,
        scale: f32,
    ) -> Tensor<2> {
        let hidden = match (&self.lora, frozen) {
            (Some(lora), Some((weight, bias))) => {
                let pre = input.clone().matmul(weight.clone()) + bias.clone().unsqueeze::<2>();
                burn::tensor::activation::relu(pre + lora.delta(input, scale))
            }
            _ => input,
        };
        self.head.out.forward(hidden)
    }
}

/// Fine-tunes a variant over the frozen `base` (its features computed once), stopping early
/// when the holdout accuracy stops improving; keeps the best epoch's weights.
pub fn finetune(
    base: &BaseWeights,
    texts: &[String],
    labels: &[String],
    train: &TrainConfig,
    lora: Option<LoraConfig>,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochReport) -> bool,
) -> Result<Variant, ModelError> {
    if texts.len() < 2 || texts.len() != labels.len() {
        return Err(ModelError::Invalid(
            "fine-tuning needs at least two labelled texts".into(),
        ));
    }
    let config = &base.config;
    let (names, classes) = index_labels(labels);
    let (inputs, width) = match lora {
        Some(_) => (base.pooled(texts), config.dim),
        None => (base.represent(texts), config.hidden),
    };
    let (training, holdout) = holdout_split(texts.len(), train.holdout, train.seed);
    let plain = device.clone();
    let device = device.clone().autodiff();
    device.seed(train.seed);
    let rows_tensor = |rows: &[usize], device: &Device| {
        let mut values = Vec::with_capacity(rows.len() * width);
        for &row in rows {
            values.extend_from_slice(&inputs[row * width..(row + 1) * width]);
        }
        Tensor::<2>::from_data(TensorData::new(values, [rows.len(), width]), device)
    };
    let frozen_on = |device: &Device| {
        (
            Tensor::<2>::from_data(
                TensorData::new(base.hidden.weight.clone(), [config.dim, config.hidden]),
                device,
            ),
            Tensor::<1>::from_data(
                TensorData::new(base.hidden.bias.clone(), [config.hidden]),
                device,
            ),
        )
    };
    let (frozen, frozen_plain) = (frozen_on(&device), frozen_on(&plain));
    let scale = lora.map_or(1.0, |l| l.scale());
    let holdout_x = rows_tensor(&holdout, &plain);
    let holdout_truth: Vec<usize> = holdout.iter().map(|&row| classes[row]).collect();
    let mut model = Adapted {
        lora: lora.map(|l| Lora::new(config.dim, config.hidden, l.rank.max(1), &device)),
        head: base.config.init_head(names.len(), &device),
    };
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = SplitMix::new(train.seed);
    let (mut best, mut best_accuracy, mut stale) = (model.valid(), -1.0, 0);
    let mut epochs = Vec::new();
    for epoch in 1..=train.epochs {
        let mut loss_sum = 0.0;
        let mut order = shuffled(training.len(), &mut rng);
        order.iter_mut().for_each(|index| *index = training[*index]);
        for batch in order.chunks(train.batch.max(1)) {
            let logits = model.forward(rows_tensor(batch, &device), Some(&frozen), scale);
            let loss = loss_fn.forward(logits, targets(&classes, batch, &device));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(train.learning_rate, model, grads);
            loss_sum += f64::from(loss.into_scalar::<f32>()) * batch.len() as f64;
        }
        let current = model.valid();
        let predicted =
            argmax_rows(current.forward(holdout_x.clone(), Some(&frozen_plain), scale))?;
        let accuracy = Metrics::of(&names, &holdout_truth, &predicted).accuracy;
        let report = EpochReport {
            epoch,
            loss: loss_sum / training.len().max(1) as f64,
            accuracy,
        };
        if !on_epoch(&report) {
            return Err(stopped(epoch));
        }
        epochs.push(report);
        if accuracy > best_accuracy {
            (best, best_accuracy, stale) = (current, accuracy, 0);
        } else {
            stale += 1;
            if stale >= train.patience.max(1) {
                break;
            }
        }
    }
    let predicted = argmax_rows(best.forward(holdout_x, Some(&frozen_plain), scale))?;
    let metrics = Metrics::of(&names, &holdout_truth, &predicted);
    let Adapted {
        lora: trained_lora,
        head,
    } = best;
    Ok(Variant {
        head,
        lora: trained_lora.zip(lora),
        labels: names,
        holdout_rows: holdout,
        metrics,
        epochs,
    })
}

/// Class index and class probabilities of each text.
pub fn predict<S: AsRef<str>>(
    encoder: &Encoder,
    head: &Head,
    config: &EncoderConfig,
    texts: &[S],
) -> Result<Vec<(usize, Vec<f32>)>, ModelError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let device = Device::flex();
    let logits = head
        .out
        .forward(encoder.encode(&Bags::of(&config.features, texts), &device));
    let classes = logits.dims()[1];
    let probabilities = softmax(logits, 1)
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|error| ModelError::Tensor(format!("{error:?}")))?;
    Ok(probabilities
        .chunks(classes)
        .map(|row| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(class, _)| class);
            (best, row.to_vec())
        })
        .collect())
}
