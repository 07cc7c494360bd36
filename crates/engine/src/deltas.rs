//! ReFACT's edits as low-rank terms on `fc2`, so that any number of versions share one
//! copy of the text encoder's weights.
//!
//! A [`Delta`] means `fc2.weight[layer] += Vᵀ U`: rank r, `U` [r × inner] and `V`
//! [r × hidden]. One edit gives a rank-one delta; a batch of n facts gives one rank-n
//! delta. A [`DeltaSet`] is a version's ordered list of them; the encoder adds
//! `(x · Uᵀ) · V` to `fc2`'s output instead of ever writing the weights, which makes
//! switching versions free and reverting exact.
//!
//! A version's deltas of one layer are composed when the version is prepared: their
//! factors are stacked into one pair (one product per token, whatever the number of
//! edits), and once the stacked rank is so high that the factored product costs more
//! than a dense one (r·(inner + hidden) ≥ inner·hidden, rank 615 for SD v1.x) into one
//! dense `ΔWᵀ` [inner × hidden]. Either way the prepared form is built from the list,
//! so removing a delta (a revert) rebuilds it exactly.
//!
//! SDXL has two text encoders; each delta names the one it edits ([`TextEncoderId`]),
//! and each encoder prepares and applies only its own.

use crate::error::{EngineError, InvalidKind, Result};
use crate::text_encoder::frozen_matmul::FrozenRhs;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// Which text encoder of a pipeline: `text` (SD v1.x/2.x's only one, SDXL's CLIP ViT-L)
/// or `text_2` (SDXL's OpenCLIP bigG). The names are the diffusers folders'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TextEncoderId {
    #[default]
    #[serde(rename = "text")]
    Text,
    #[serde(rename = "text_2")]
    Text2,
}

impl TextEncoderId {
    /// Both, in pipeline order.
    pub const ALL: [TextEncoderId; 2] = [TextEncoderId::Text, TextEncoderId::Text2];

    /// `text` or `text_2`, as stored and as the API names them.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEncoderId::Text => "text",
            TextEncoderId::Text2 => "text_2",
        }
    }

    /// The id a stored name means, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|id| id.as_str() == name)
    }

    fn index(self) -> usize {
        match self {
            TextEncoderId::Text => 0,
            TextEncoderId::Text2 => 1,
        }
    }
}

impl std::fmt::Display for TextEncoderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One edit of `fc2.weight` at `layer`: `W += Vᵀ U` = `Σ_j v_j u_jᵀ`, with `u_j` of the
/// MLP's inner size (fc2's input) and `v_j` of the hidden size (fc2's output), stored
/// row after row.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The text encoder it edits.
    pub encoder: TextEncoderId,
    pub layer: usize,
    /// Number of (u, v) pairs; at least 1.
    pub rank: usize,
    /// `U`, row-major [rank × inner].
    pub u: Vec<f32>,
    /// `V`, row-major [rank × hidden].
    pub v: Vec<f32>,
}

impl Delta {
    /// The rank-one delta `W += v uᵀ` of a single edit.
    pub fn rank_one(layer: usize, u: Vec<f32>, v: Vec<f32>) -> Self {
        Self {
            encoder: TextEncoderId::Text,
            layer,
            rank: 1,
            u,
            v,
        }
    }

    /// Checks the sizes against the encoder: rows of `u` inner-sized, rows of `v`
    /// hidden-sized, a real layer, finite values.
    pub fn check(&self, num_layers: usize, intermediate: usize, hidden: usize) -> Result<()> {
        let bad = |msg: String| EngineError::invalid(InvalidKind::BadShape, "delta", msg);
        if self.layer >= num_layers {
            return Err(EngineError::invalid(
                InvalidKind::LayerOutOfRange,
                "layer",
                format!("layer {} but the encoder has {num_layers}", self.layer),
            ));
        }
        if self.rank == 0
            || self.u.len() != self.rank * intermediate
            || self.v.len() != self.rank * hidden
        {
            return Err(bad(format!(
                "rank {} with {} values of u and {} of v; expected rank × {intermediate} and \
                 rank × {hidden}",
                self.rank,
                self.u.len(),
                self.v.len()
            )));
        }
        if !self.u.iter().chain(&self.v).all(|x| x.is_finite()) {
            return Err(bad("non-finite value".into()));
        }
        Ok(())
    }

    /// Size of one row of `u` (the MLP's inner size), from the stored lengths.
    fn inner(&self) -> usize {
        self.u.len() / self.rank.max(1)
    }

    /// Size of one row of `v` (the hidden size).
    fn hidden(&self) -> usize {
        self.v.len() / self.rank.max(1)
    }
}

/// The ordered deltas of one version. Cloning is cheap: deltas are shared, and so is
/// the prepared (tensor) form once built: a version kept by a server and cloned per
/// request stacks its vectors once, not on every request.
#[derive(Debug, Clone, Default)]
pub struct DeltaSet {
    deltas: Vec<Arc<Delta>>,
    /// Per text encoder ([`TextEncoderId::index`]).
    prepared: Arc<[OnceLock<PreparedDeltas>; 2]>,
}

impl DeltaSet {
    /// The base model: no deltas.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn new(deltas: Vec<Arc<Delta>>) -> Self {
        Self {
            deltas,
            prepared: Arc::default(),
        }
    }

    /// This set plus one more delta (an applied edit).
    pub fn with(&self, delta: Arc<Delta>) -> Self {
        let mut deltas = self.deltas.clone();
        deltas.push(delta);
        Self::new(deltas)
    }

    /// This set without `delta` (a revert). Identity, not equality, decides: two equal
    /// edits applied twice are two deltas.
    pub fn without(&self, delta: &Arc<Delta>) -> Self {
        Self::new(
            self.deltas
                .iter()
                .filter(|d| !Arc::ptr_eq(d, delta))
                .cloned()
                .collect(),
        )
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

    /// Stacks the deltas of `encoder` per layer into tensors on `device`, ready for that
    /// encoder. The first result is kept (and shared by clones); a later call for
    /// another encoder shape or device builds a fresh one.
    pub fn prepare_for(
        &self,
        encoder: TextEncoderId,
        num_layers: usize,
        device: &Device,
    ) -> Result<PreparedDeltas> {
        let slot = &self.prepared[encoder.index()];
        if let Some(prepared) = slot.get() {
            if prepared.fits(num_layers, device) {
                return Ok(prepared.clone());
            }
            return self.stack(encoder, num_layers, device);
        }
        let prepared = self.stack(encoder, num_layers, device)?;
        let _ = slot.set(prepared.clone());
        Ok(prepared)
    }

    /// Identifies this set and its clones (not sets of equal contents): the address of
    /// their shared prepared form. Valid while one of them is alive.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.prepared) as usize
    }

    /// True once [`DeltaSet::prepare_for`] has built the first encoder's tensors.
    pub fn is_prepared(&self) -> bool {
        self.prepared[TextEncoderId::Text.index()].get().is_some()
    }

    fn stack(
        &self,
        encoder: TextEncoderId,
        num_layers: usize,
        device: &Device,
    ) -> Result<PreparedDeltas> {
        let own: Vec<&Arc<Delta>> = self
            .deltas
            .iter()
            .filter(|d| d.encoder == encoder)
            .collect();
        if let Some(delta) = own.iter().find(|d| d.layer >= num_layers) {
            return Err(EngineError::invalid(
                InvalidKind::LayerOutOfRange,
                "layer",
                format!(
                    "delta at layer {} but the encoder has {num_layers}",
                    delta.layer
                ),
            ));
        }
        let mut layers: Vec<Option<LowRankTerms>> = vec![None; num_layers];
        for (layer, slot) in layers.iter_mut().enumerate() {
            let at_layer: Vec<&Arc<Delta>> =
                own.iter().copied().filter(|d| d.layer == layer).collect();
            let Some(first) = at_layer.first() else {
                continue;
            };
            let (inner, hidden) = (first.inner(), first.hidden());
            let rank: usize = at_layer.iter().map(|d| d.rank).sum();
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
        Ok(PreparedDeltas {
            layers,
            device: device.clone(),
        })
    }
}

/// The rank from which one dense product `x · ΔWᵀ` costs no more than the factored
/// `(x · Uᵀ) · V`: r·(inner + hidden) ≥ inner·hidden.
pub(crate) fn dense_from_rank(inner: usize, hidden: usize) -> usize {
    (inner * hidden).div_ceil(inner + hidden).max(1)
}

/// The sum of a layer's deltas, `Σ v_i u_iᵀ = Vᵀ U`, in the cheaper of two forms.
#[derive(Debug, Clone)]
pub struct LowRankTerms {
    form: TermsForm,
}

#[derive(Debug, Clone)]
enum TermsForm {
    /// Kept factored: `Uᵀ` [inner, rank] projects fc2's input onto the keys, `V`
    /// [rank, hidden] writes the values back.
    Factored { u_t: FrozenRhs, v: FrozenRhs },
    /// Multiplied out: `ΔWᵀ = Uᵀ V` [inner, hidden].
    Dense { delta_t: FrozenRhs },
}

impl LowRankTerms {
    fn new(u: Tensor, v: Tensor) -> Result<Self> {
        let (rank, inner) = u.dims2()?;
        let hidden = v.dim(1)?;
        let form = if rank >= dense_from_rank(inner, hidden) {
            TermsForm::Dense {
                delta_t: FrozenRhs::new(u.t()?.matmul(&v)?)?,
            }
        } else {
            TermsForm::Factored {
                u_t: FrozenRhs::new(u.t()?)?,
                v: FrozenRhs::new(v)?,
            }
        };
        Ok(Self { form })
    }

    /// `x · ΔWᵀ` for `x` [m, inner].
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.form {
            TermsForm::Factored { u_t, v } => v.apply(&u_t.apply(x)?),
            TermsForm::Dense { delta_t } => delta_t.apply(x),
        }
    }

    /// True when the terms were multiplied out into one dense matrix.
    #[cfg(test)]
    fn is_dense(&self) -> bool {
        matches!(self.form, TermsForm::Dense { .. })
    }
}

/// A [`DeltaSet`] stacked per layer on one device.
#[derive(Debug, Clone)]
pub struct PreparedDeltas {
    layers: Vec<Option<LowRankTerms>>,
    device: Device,
}

impl PreparedDeltas {
    /// No deltas for an encoder of `num_layers` layers.
    pub fn none(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            device: Device::Cpu,
        }
    }

    fn fits(&self, num_layers: usize, device: &Device) -> bool {
        self.layers.len() == num_layers && self.device.same_device(device)
    }

    /// The composed terms of `layer`, if any delta touches it.
    pub(crate) fn at(&self, layer: usize) -> Option<&LowRankTerms> {
        self.layers.get(layer).and_then(|t| t.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(layer: usize, seed: f32) -> Arc<Delta> {
        Arc::new(Delta {
            encoder: TextEncoderId::Text,
            layer,
            rank: 1,
            u: (0..6).map(|i| seed + i as f32).collect(),
            v: (0..4).map(|i| seed - i as f32).collect(),
        })
    }

    /// The first encoder's prepared form (every delta here edits it).
    fn prepare(set: &DeltaSet, num_layers: usize) -> Result<PreparedDeltas> {
        set.prepare_for(TextEncoderId::Text, num_layers, &Device::Cpu)
    }

    fn applied(prepared: &PreparedDeltas, layer: usize) -> Vec<f32> {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 6))
            .unwrap();
        let y = prepared.at(layer).unwrap().apply(&x).unwrap();
        y.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_version_is_prepared_once_and_shared_by_its_clones() {
        let version = DeltaSet::new(vec![delta(1, 0.5), delta(1, -2.0)]);
        let per_request = version.clone();
        assert!(!version.is_prepared());
        let first = prepare(&per_request, 3).unwrap();
        assert!(
            version.is_prepared(),
            "the clone's preparation is the version's"
        );
        let again = prepare(&version, 3).unwrap();
        assert_eq!(applied(&first, 1), applied(&again, 1));
        // The cached form equals a fresh stack of the same deltas.
        let fresh = DeltaSet::new(version.iter().cloned().collect());
        assert_eq!(applied(&prepare(&fresh, 3).unwrap(), 1), applied(&first, 1));
        // Another encoder depth gets its own tensors (and the layer check).
        assert!(prepare(&version, 1).is_err());
    }

    #[test]
    fn past_the_dense_rank_the_terms_are_multiplied_out_with_the_same_product() {
        // inner 6, hidden 4: the dense product is the cheaper one from rank 3.
        assert_eq!(dense_from_rank(6, 4), 3);
        let two = DeltaSet::new(vec![delta(1, 0.5), delta(1, -2.0)]);
        let three = two.with(delta(1, 1.25));
        let factored = prepare(&two, 2).unwrap();
        let dense = prepare(&three, 2).unwrap();
        assert!(!factored.at(1).unwrap().is_dense());
        assert!(dense.at(1).unwrap().is_dense());
        // x·ΔWᵀ of three deltas = that of the first two plus the third's x·u v.
        let third = DeltaSet::new(vec![three.iter().last().unwrap().clone()]);
        let third = prepare(&third, 2).unwrap();
        let expected: Vec<f32> = applied(&factored, 1)
            .iter()
            .zip(applied(&third, 1))
            .map(|(a, b)| a + b)
            .collect();
        for (got, want) in applied(&dense, 1).iter().zip(&expected) {
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "dense {got} vs factored {want}"
            );
        }
        // A revert back under the threshold is factored again, and exact.
        let reverted = three.without(three.iter().last().unwrap());
        let reverted = prepare(&reverted, 2).unwrap();
        assert!(!reverted.at(1).unwrap().is_dense());
        assert_eq!(applied(&reverted, 1), applied(&factored, 1));
    }

    #[test]
    fn a_child_version_prepares_its_own_terms() {
        let parent = DeltaSet::new(vec![delta(0, 1.0)]);
        prepare(&parent, 2).unwrap();
        let child = parent.with(delta(0, 3.0));
        assert!(!child.is_prepared());
        let both = applied(&prepare(&child, 2).unwrap(), 0);
        assert_ne!(both, applied(&prepare(&parent, 2).unwrap(), 0));
        let reverted = child.without(child.iter().last().unwrap());
        assert_eq!(
            applied(&prepare(&reverted, 2).unwrap(), 0),
            applied(&prepare(&parent, 2).unwrap(), 0)
        );
    }
}
