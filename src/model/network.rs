//! The networks: the shared base **encoder** (hashed n-gram embedding bag -> hidden layer) and
//! the per-tenant **head** (hidden -> classes). A tenant variant is a head over a frozen base,
//! so it is small and quick to train; the base is loaded once per process.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Distribution, IndexingUpdateOp};
use serde::{Deserialize, Serialize};

use crate::model::ModelError;
use crate::model::features::FeatureConfig;

/// Shape of the base encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EncoderConfig {
    pub features: FeatureConfig,
    pub dim: usize,
    pub hidden: usize,
}

impl EncoderConfig {
    /// A compact encoder (2^14 buckets, 32 dimensions, 256 ids a text) for small corpora.
    pub fn compact() -> Self {
        Self {
            features: FeatureConfig {
                buckets: 1 << 14,
                max_ids: 256,
            },
            dim: 32,
            hidden: 32,
        }
    }
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            features: FeatureConfig::default(),
            dim: 64,
            hidden: 64,
        }
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub embedding: Embedding,
    pub hidden: Linear,
    pub activation: Relu,
}

#[derive(Module, Debug)]
pub struct Head {
    pub out: Linear,
}

/// Low-rank adapters of the hidden layer: `hidden(x) + scale * (x A) B`, with `A` of
/// `[dim, rank]` and `B` of `[rank, hidden]` (zero at the start, so training starts from the
/// base's own representation). The base's weights stay frozen.
#[derive(Module, Debug)]
pub struct Lora {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
}

impl Lora {
    pub fn new(dim: usize, hidden: usize, rank: usize, device: &Device) -> Self {
        let bound = 1.0 / (dim as f64).sqrt();
        Self {
            a: Param::from_tensor(Tensor::random(
                [dim, rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([rank, hidden], device)),
        }
    }

    /// The adapter's contribution to the hidden layer's pre-activation.
    pub fn delta(&self, pooled: Tensor<2>, scale: f32) -> Tensor<2> {
        pooled
            .matmul(self.a.val())
            .matmul(self.b.val())
            .mul_scalar(scale)
    }
}

/// Texts as one flat list of bucket ids, the bag each id belongs to, and bag sizes.
pub struct Bags {
    pub ids: Vec<i64>,
    pub bag_of: Vec<i64>,
    pub counts: Vec<f32>,
}

impl Bags {
    pub fn of<S: AsRef<str>>(features: &FeatureConfig, texts: &[S]) -> Self {
        let mut bags = Bags {
            ids: Vec::new(),
            bag_of: Vec::new(),
            counts: Vec::with_capacity(texts.len()),
        };
        for (index, text) in texts.iter().enumerate() {
            let ids = features.ids(text.as_ref());
            bags.counts.push(ids.len() as f32);
            bags.bag_of
                .extend(std::iter::repeat_n(index as i64, ids.len()));
            bags.ids.extend(ids.into_iter().map(i64::from));
        }
        bags
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn id_tensor(&self, device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(self.ids.clone(), [self.ids.len()]), device)
    }
}

impl EncoderConfig {
    pub fn init(&self, device: &Device) -> Encoder {
        Encoder {
            embedding: EmbeddingConfig::new(self.features.buckets as usize, self.dim).init(device),
            hidden: LinearConfig::new(self.dim, self.hidden).init(device),
            activation: Relu::new(),
        }
    }

    pub fn init_head(&self, classes: usize, device: &Device) -> Head {
        Head {
            out: LinearConfig::new(self.hidden, classes.max(1)).init(device),
        }
    }
}

impl Encoder {
    /// Mean of the bag's embedding rows, given the rows already gathered (`[ids, dim]`).
    pub fn pool(&self, rows: Tensor<2>, bags: &Bags, device: &Device) -> Tensor<2> {
        let dim = rows.dims()[1];
        let bag = Tensor::<1, Int>::from_data(
            TensorData::new(bags.bag_of.clone(), [bags.bag_of.len()]),
            device,
        );
        let sums = Tensor::<2>::zeros([bags.len(), dim], device).select_assign(
            0,
            bag,
            rows,
            IndexingUpdateOp::Add,
        );
        sums / Tensor::<2>::from_data(
            TensorData::new(bags.counts.clone(), [bags.len(), 1]),
            device,
        )
    }

    /// The hidden representation of pooled embeddings.
    pub fn represent(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.activation.forward(self.hidden.forward(pooled))
    }

    /// Hidden representations of texts (inference).
    pub fn encode(&self, bags: &Bags, device: &Device) -> Tensor<2> {
        let rows = self
            .embedding
            .weight
            .val()
            .select(0, bags.id_tensor(device));
        self.represent(self.pool(rows, bags, device))
    }
}

/// Serialises a module's weights (burnpack).
pub fn to_bytes<M: Module>(module: M) -> Result<Vec<u8>, ModelError> {
    Ok(module
        .into_record()
        .into_bytes()
        .map_err(|error| ModelError::Record(error.to_string()))?
        .to_vec())
}

/// Loads weights saved by [`to_bytes`] into a module of the same shape.
pub fn from_bytes<M: Module>(module: M, bytes: Vec<u8>) -> Result<M, ModelError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|error| ModelError::Record(error.to_string()))?;
    module
        .try_load_record(record)
        .map_err(|error| ModelError::Record(error.to_string()))
}
