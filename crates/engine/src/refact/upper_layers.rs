//! The part of the encoder that δ flows through: layers l+1..end and the final norm.
//!
//! δ is added to fc2's output at layer l, i.e. to the residual stream right after layer
//! l, at each rewriting prompt's subject position. The stream after layer l without δ is
//! computed once; every optimisation step re-runs only the layers above it. In the last
//! layer only the EOS rows are read, so only they are computed (their attention still
//! sees every earlier row).

use crate::deltas::PreparedDeltas;
use crate::error::Result;
use crate::text_encoder::layer::causal_mask;
use crate::text_encoder::{ClipTextEncoder, Mode};
use candle_core::Tensor;

/// Runs δ from the cached residual stream to pooled outputs, differentiably.
pub(crate) struct UpperLayers<'a> {
    encoder: &'a ClipTextEncoder,
    deltas: &'a PreparedDeltas,
    /// First layer above the edited one.
    start: usize,
    /// Residual stream after the edited layer, without δ [b, t, d].
    base: Tensor,
    /// 1 at each prompt's subject position, 0 elsewhere [b, t, 1].
    subject_onehot: Tensor,
    /// Row of each prompt's first EOS in the flattened [b·t, d] stream.
    eos_flat: Tensor,
    /// Causal mask [t, t].
    causal: Tensor,
    /// For the last layer's EOS queries: 0 up to each prompt's EOS, the minimum after [b, 1, 1, t].
    eos_mask: Tensor,
}

impl<'a> UpperLayers<'a> {
    /// `base` is the stream after layer `edited_layer`; `subject_positions[i]` and
    /// `eos_positions[i]` index prompt i's rows.
    pub(crate) fn new(
        encoder: &'a ClipTextEncoder,
        deltas: &'a PreparedDeltas,
        edited_layer: usize,
        base: Tensor,
        subject_positions: &[usize],
        eos_positions: &[usize],
    ) -> Result<Self> {
        let (b, t, _) = base.dims3()?;
        let dtype = base.dtype();
        let device = base.device().clone();
        let mut onehot = vec![0f32; b * t];
        for (i, &p) in subject_positions.iter().enumerate() {
            onehot[i * t + p] = 1.0;
        }
        let subject_onehot = Tensor::from_vec(onehot, (b, t, 1), &device)?.to_dtype(dtype)?;
        let eos_flat: Vec<u32> = eos_positions
            .iter()
            .enumerate()
            .map(|(i, &e)| (i * t + e) as u32)
            .collect();
        let eos_flat = Tensor::from_vec(eos_flat, b, &device)?;
        let mut eos_mask = vec![0f32; b * t];
        for (i, &e) in eos_positions.iter().enumerate() {
            for j in e + 1..t {
                eos_mask[i * t + j] = f32::MIN;
            }
        }
        let eos_mask = Tensor::from_vec(eos_mask, (b, 1, 1, t), &device)?.to_dtype(dtype)?;
        Ok(Self {
            encoder,
            deltas,
            start: edited_layer + 1,
            causal: causal_mask(t, dtype, &device)?,
            base,
            subject_onehot,
            eos_flat,
            eos_mask,
        })
    }

    /// Pooled outputs [b, d] with `delta` [d] added at the subject positions.
    pub(crate) fn pooled(&self, delta: &Tensor) -> Result<Tensor> {
        let mode = Mode::Differentiable;
        let (b, t, d) = self.base.dims3()?;
        let mut hidden = self
            .base
            .broadcast_add(&self.subject_onehot.broadcast_mul(delta)?)?;
        let layers = self.encoder.num_layers();
        if self.start < layers {
            for index in self.start..layers - 1 {
                hidden = self.encoder.layer(index).forward(
                    &hidden,
                    &self.causal,
                    self.deltas.at(index),
                    mode,
                    None,
                )?;
            }
        }
        let eos_rows = hidden
            .reshape((b * t, d))?
            .index_select(&self.eos_flat, 0)?;
        let out = if self.start < layers {
            let last = layers - 1;
            self.encoder.layer(last).forward_rows(
                &eos_rows.reshape((b, 1, d))?,
                &hidden,
                &self.eos_mask,
                self.deltas.at(last),
                mode,
            )?
        } else {
            eos_rows.reshape((b, 1, d))?
        };
        Ok(self
            .encoder
            .final_layer_norm()
            .forward(&out, mode)?
            .reshape((b, d))?)
    }
}
