//! CLIP's text tower (transformers' `CLIPTextTransformer`): token + position embeddings,
//! the causal encoder, the final layer norm, pooled at each row's first EOS token.

use super::config::TextConfig;
use super::transformer::{causal_mask, Encoder};
use crate::error::{EvalError, Result};
use candle_core::{Module, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};

/// The text tower, loaded from the `text_model.*` tensors.
#[derive(Debug, Clone)]
pub struct TextTower {
    token_embedding: Embedding,
    position_embedding: Embedding,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    max_positions: usize,
    eos_id: u32,
}

impl TextTower {
    /// Loads the tower; `eos_id` is the id pooling looks for (`<|endoftext|>`, 49407).
    pub fn load(vb: VarBuilder, config: &TextConfig, eos_id: u32) -> Result<Self> {
        let d = config.encoder.hidden_size;
        Ok(Self {
            token_embedding: embedding(config.vocab_size, d, vb.pp("embeddings.token_embedding"))?,
            position_embedding: embedding(
                config.max_position_embeddings,
                d,
                vb.pp("embeddings.position_embedding"),
            )?,
            encoder: Encoder::load(vb.pp("encoder"), &config.encoder)?,
            final_layer_norm: layer_norm(
                d,
                config.encoder.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            max_positions: config.max_position_embeddings,
            eos_id,
        })
    }

    /// The longest input the position embeddings allow (77 for CLIP).
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Pooled outputs [n, hidden] of `input_ids` [n, seq] (u32): the final-layer-norm
    /// state at each row's first EOS. Every row needs an EOS.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (n, seq) = input_ids.dims2()?;
        if seq > self.max_positions {
            return Err(EvalError::Invalid(format!(
                "input has {seq} tokens; the text tower takes at most {}",
                self.max_positions
            )));
        }
        let rows = input_ids
            .to_dtype(candle_core::DType::U32)?
            .to_vec2::<u32>()?;
        let eos: Vec<usize> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter().position(|&t| t == self.eos_id).ok_or_else(|| {
                    EvalError::Invalid(format!("text {i} has no end-of-text token {}", self.eos_id))
                })
            })
            .collect::<Result<_>>()?;
        // With a causal mask nothing after a row's EOS changes its pooled state, so the
        // batch can stop at the last EOS instead of running all 77 positions.
        let len = eos.iter().max().map_or(1, |m| m + 1);
        let ids = input_ids.narrow(1, 0, len)?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, len as u32, device)?;
        let x = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(len, x.dtype(), device)?;
        let x = self.encoder.forward(&x, Some(&mask))?;
        let x = self.final_layer_norm.forward(&x)?;
        let flat_index: Vec<u32> = eos
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * len + p) as u32)
            .collect();
        let index = Tensor::new(flat_index, device)?;
        let d = x.dim(2)?;
        Ok(x.reshape((n * len, d))?.index_select(&index, 0)?)
    }
}
