//! ReFACT's edits as low-rank terms on `fc2`, so that any number of versions share one
//! copy of the text encoder's weights.
//!
//! A [`Delta`] means `fc2.weight[layer] += v uᵀ`. A [`DeltaSet`] is a version's ordered
//! list of them; the encoder adds `(x · Uᵀ) · V` to `fc2`'s output instead of ever
//! writing the weights, which makes switching versions free and reverting exact.

use crate::error::{EngineError, InvalidKind, Result};
use candle_core::{Device, Tensor};
use std::sync::Arc;

/// One rank-one edit of `fc2.weight` at `layer`: `W += v uᵀ`, `u` of the MLP's inner
/// size (fc2's input), `v` of the hidden size (fc2's output).
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub layer: usize,
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

impl Delta {
    /// Checks the sizes against the encoder: `u` inner-sized, `v` hidden-sized, a real layer,
    /// finite values.
    pub fn check(&self, num_layers: usize, intermediate: usize, hidden: usize) -> Result<()> {
        let bad = |msg: String| EngineError::invalid(InvalidKind::BadShape, "delta", msg);
        if self.layer >= num_layers {
            return Err(EngineError::invalid(
                InvalidKind::LayerOutOfRange,
                "layer",
                format!("layer {} but the encoder has {num_layers}", self.layer),
            ));
        }
        if self.u.len() != intermediate || self.v.len() != hidden {
            return Err(bad(format!(
                "u has {} and v {} values; expected {intermediate} and {hidden}",
                self.u.len(),
                self.v.len()
            )));
        }
        if !self.u.iter().chain(&self.v).all(|x| x.is_finite()) {
            return Err(bad("non-finite value".into()));
        }
        Ok(())
    }
}

/// The ordered deltas of one version. Cloning is cheap: deltas are shared.
#[derive(Debug, Clone, Default)]
pub struct DeltaSet {
    deltas: Vec<Arc<Delta>>,
}

impl DeltaSet {
    /// The base model: no deltas.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn new(deltas: Vec<Arc<Delta>>) -> Self {
        Self { deltas }
    }

    /// This set plus one more delta (an applied edit).
    pub fn with(&self, delta: Arc<Delta>) -> Self {
        let mut deltas = self.deltas.clone();
        deltas.push(delta);
        Self { deltas }
    }

    /// This set without `delta` (a revert). Identity, not equality, decides: two equal
    /// edits applied twice are two deltas.
    pub fn without(&self, delta: &Arc<Delta>) -> Self {
        Self {
            deltas: self
                .deltas
                .iter()
                .filter(|d| !Arc::ptr_eq(d, delta))
                .cloned()
                .collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Delta>> {
        self.deltas.iter()
    }

    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Stacks the deltas per layer into tensors on `device`, ready for the encoder.
    pub fn prepare(&self, num_layers: usize, device: &Device) -> Result<PreparedDeltas> {
        let mut layers: Vec<Option<LowRankTerms>> = vec![None; num_layers];
        for (layer, slot) in layers.iter_mut().enumerate() {
            let at_layer: Vec<&Arc<Delta>> =
                self.deltas.iter().filter(|d| d.layer == layer).collect();
            if at_layer.is_empty() {
                continue;
            }
            let rank = at_layer.len();
            let inner = at_layer[0].u.len();
            let hidden = at_layer[0].v.len();
            let u: Vec<f32> = at_layer.iter().flat_map(|d| d.u.iter().copied()).collect();
            let v: Vec<f32> = at_layer.iter().flat_map(|d| d.v.iter().copied()).collect();
            if u.len() != rank * inner || v.len() != rank * hidden {
                return Err(EngineError::invalid(
                    InvalidKind::BadShape,
                    "delta",
                    format!("deltas at layer {layer} have different sizes"),
                ));
            }
            let u = Tensor::from_vec(u, (rank, inner), device)?;
            let v = Tensor::from_vec(v, (rank, hidden), device)?;
            *slot = Some(LowRankTerms::new(u, v)?);
        }
        if let Some(delta) = self.deltas.iter().find(|d| d.layer >= num_layers) {
            return Err(EngineError::invalid(
                InvalidKind::LayerOutOfRange,
                "layer",
                format!(
                    "delta at layer {} but the encoder has {num_layers}",
                    delta.layer
                ),
            ));
        }
        Ok(PreparedDeltas { layers })
    }
}

/// The sum of a layer's deltas, `Σ v_i u_iᵀ = Vᵀ U`, kept factored.
#[derive(Debug, Clone)]
pub struct LowRankTerms {
    /// `Uᵀ` [inner, rank]: projects fc2's input onto the keys.
    pub(crate) u_t: crate::text_encoder::frozen_matmul::FrozenRhs,
    /// `V` [rank, hidden]: the values written back.
    pub(crate) v: crate::text_encoder::frozen_matmul::FrozenRhs,
}

impl LowRankTerms {
    fn new(u: Tensor, v: Tensor) -> Result<Self> {
        use crate::text_encoder::frozen_matmul::FrozenRhs;
        Ok(Self {
            u_t: FrozenRhs::new(u.t()?)?,
            v: FrozenRhs::new(v)?,
        })
    }

    /// `(x · Uᵀ) · V` for `x` [m, inner].
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.v.apply(&self.u_t.apply(x)?)
    }
}

/// A [`DeltaSet`] stacked per layer on one device.
#[derive(Debug, Clone)]
pub struct PreparedDeltas {
    layers: Vec<Option<LowRankTerms>>,
}

impl PreparedDeltas {
    /// No deltas for an encoder of `num_layers` layers.
    pub fn none(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    pub(crate) fn at(&self, layer: usize) -> Option<&LowRankTerms> {
        self.layers.get(layer).and_then(|t| t.as_ref())
    }
}
