//! What the UNet is conditioned on for a prompt, per model family.
//!
//! SD v1.x/2.x: the text encoder's last hidden state. SDXL (diffusers'
//! `StableDiffusionXLPipeline.encode_prompt`): each encoder's states after its
//! second-to-last layer, concatenated along the features, and the second encoder's
//! projected pooled state; with `force_zeros_for_empty_prompt`, an empty negative
//! prompt is all zeros rather than the encoding of "".

use super::PipelineParts;
use crate::deltas::DeltaSet;
use crate::error::Result;
use crate::model::TextModel;
use candle_core::{DType, Device, Tensor};

/// The encoding of `n` prompts.
#[derive(Debug, Clone)]
pub struct PromptEncoding {
    /// The UNet's context [n, tokens, context_dim].
    pub context: Tensor,
    /// SDXL's pooled text embedding [n, projection_dim]; `None` for SD v1.x/2.x.
    pub pooled: Option<Tensor>,
}

impl PromptEncoding {
    /// Prompt `row` alone, in storage of its own (a view would keep every row alive).
    pub fn row(&self, row: usize) -> Result<Self> {
        let own = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(0, row, 1)?.copy()?) };
        Ok(Self {
            context: own(&self.context)?,
            pooled: self.pooled.as_ref().map(own).transpose()?,
        })
    }

    /// The rows of `parts`, in order, as one encoding.
    pub fn cat(parts: &[PromptEncoding]) -> Result<Self> {
        let contexts: Vec<&Tensor> = parts.iter().map(|p| &p.context).collect();
        let pooled: Option<Vec<&Tensor>> = parts.iter().map(|p| p.pooled.as_ref()).collect();
        Ok(Self {
            context: Tensor::cat(&contexts, 0)?,
            pooled: pooled.map(|p| Tensor::cat(&p, 0)).transpose()?,
        })
    }

    /// The same shapes, all zeros (SDXL's empty negative prompt).
    pub fn zeros_like(&self) -> Result<Self> {
        Ok(Self {
            context: self.context.zeros_like()?,
            pooled: self.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        })
    }

    /// Rows `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            context: self.context.narrow(0, start, len)?,
            pooled: self
                .pooled
                .as_ref()
                .map(|p| p.narrow(0, start, len))
                .transpose()?,
        })
    }

    /// Moved to the UNet's device and dtype.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        let cast = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(device)?.to_dtype(dtype)?) };
        Ok(Self {
            context: cast(&self.context)?,
            pooled: self.pooled.as_ref().map(cast).transpose()?,
        })
    }
}

/// Encodes `prompts` at the version `deltas` with the model's text side (each encoder
/// applies the deltas that name it), on the text encoder's device in f32.
pub fn encode(
    parts: &PipelineParts<'_>,
    prompts: &[&str],
    deltas: &DeltaSet,
) -> Result<PromptEncoding> {
    match parts.text_2 {
        None => {
            let ids = parts.text_encoder.padded_ids(parts.tokenizer, prompts)?;
            Ok(PromptEncoding {
                context: parts.text_encoder.forward(&ids, deltas)?.last_hidden_state,
                pooled: None,
            })
        }
        Some(second) => encode_sdxl(parts, second, prompts, deltas),
    }
}

/// SDXL: `[penultimate₁ ‖ penultimate₂]` and the projected pooled state of encoder 2.
fn encode_sdxl(
    parts: &PipelineParts<'_>,
    second: &TextModel,
    prompts: &[&str],
    deltas: &DeltaSet,
) -> Result<PromptEncoding> {
    let ids = parts.text_encoder.padded_ids(parts.tokenizer, prompts)?;
    let first = parts.text_encoder.forward_states(&ids, deltas)?;
    let ids_2 = second.encoder.padded_ids(&second.tokenizer, prompts)?;
    let other = second.encoder.forward_states(&ids_2, deltas)?;
    let penultimate_2 = other.penultimate.to_device(parts.text_encoder.device())?;
    let pooled = second
        .encoder
        .project(&other.output.pooler_output)?
        .ok_or_else(|| {
            crate::EngineError::Numerical("SDXL's second text encoder has no projection".into())
        })?;
    Ok(PromptEncoding {
        context: Tensor::cat(&[&first.penultimate, &penultimate_2], 2)?,
        pooled: Some(pooled.to_device(parts.text_encoder.device())?),
    })
}
