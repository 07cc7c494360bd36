//! Several images in one denoising loop. Rows that share a [`BatchShape`] (size, steps,
//! scheduler, whether guidance is on) run every UNet step and the VAE decode together;
//! each keeps its own prompt, negative prompt, seed (its own noise, never drawn from
//! the batch position), guidance scale and text-encoder version. A version changes only
//! the text encoder, so rows at different versions share everything else.

use super::{checked_latents, seeded_noise, GenerateParams};
use super::{decode_images, encode_prompts, latent_shape, PipelineParts, PromptEncoding};
use crate::deltas::DeltaSet;
use crate::error::{EngineError, InvalidKind, Result};
use crate::scheduler::{self, SchedulerKind};
use crate::unet::AddedConditioning;
use candle_core::{DType, Device, Tensor};

/// One image of a batch: its settings and the version its text is encoded at.
#[derive(Debug, Clone, Copy)]
pub struct BatchRow<'a> {
    pub params: &'a GenerateParams,
    pub deltas: &'a DeltaSet,
}

/// What the rows of one batch must have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchShape {
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    /// Classifier-free guidance on (scale > 1): the UNet then sees two inputs per row.
    pub guided: bool,
}

impl BatchShape {
    /// The shape `params` asks for.
    pub fn of(params: &GenerateParams) -> Self {
        BatchShape {
            width: params.width,
            height: params.height,
            steps: params.steps,
            scheduler: params.scheduler,
            guided: params.uses_guidance(),
        }
    }
}

/// Generates one image [H, W, 3] (f32 in [0, 1], on the CPU) per row, in row order.
/// Every row must have the first row's [`BatchShape`]. `progress(done, total)` is as for
/// [`super::generate`], for the batch as a whole.
pub fn generate_batch(
    parts: &PipelineParts<'_>,
    rows: &[BatchRow<'_>],
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<Tensor>> {
    let first = rows
        .first()
        .ok_or_else(|| EngineError::Numerical("a batch needs at least one row".into()))?;
    let shape = BatchShape::of(first.params);
    for row in rows {
        row.params.validate()?;
        if BatchShape::of(row.params) != shape {
            return Err(EngineError::invalid(
                InvalidKind::BadGenerationSetting,
                "batch",
                format!(
                    "rows of one batch must share size, steps, scheduler and guidance; \
                     {:?} differs from {shape:?}",
                    BatchShape::of(row.params)
                ),
            ));
        }
    }
    let unet = parts.unet;
    let device = unet.device().clone();
    let dtype = unet.dtype();
    let latent_shape = latent_shape(parts, first.params)?;
    let n = rows.len();

    // Text: each row at its own version, [uncond, cond] (or [cond]) per row.
    let mut uncond = Vec::with_capacity(n);
    let mut cond = Vec::with_capacity(n);
    for row in rows {
        let encoded = encode_prompts(parts, row.params, row.deltas, &device, dtype)?;
        if shape.guided {
            uncond.push(encoded.narrow(0, 1)?);
            cond.push(encoded.narrow(1, 1)?);
        } else {
            cond.push(encoded);
        }
    }
    // The UNet's batch: every row's unconditional input, then every row's conditional one.
    let encoded = PromptEncoding::cat(&[uncond, cond].concat())?;
    let added = added_conditioning(parts, &encoded, &shape, &device, dtype)?;
    let context = encoded.context;

    let mut scheduler = scheduler::build(shape.scheduler, parts.scheduler_config, shape.steps)?;
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    let noise = rows
        .iter()
        .map(|row| match &row.params.init_latents {
            Some(latents) => checked_latents(latents, &latent_shape, &device, dtype),
            None => seeded_noise(row.params.seed, &latent_shape, &device, dtype),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut latents = (Tensor::cat(&noise, 0)? * scheduler.init_noise_sigma())?;
    let guidance: Vec<f32> = rows
        .iter()
        .map(|row| row.params.guidance_scale as f32)
        .collect();
    let guidance = Tensor::from_vec(guidance, (n, 1, 1, 1), &device)?.to_dtype(dtype)?;

    if !progress(0, total) {
        return Err(EngineError::Cancelled);
    }
    for (index, &t) in timesteps.iter().enumerate() {
        let model_input = if shape.guided {
            Tensor::cat(&[&latents, &latents], 0)?
        } else {
            latents.clone()
        };
        let model_input = scheduler.scale_model_input(&model_input, index)?;
        let noise_pred = unet.forward_with(&model_input, t, &context, added.as_ref())?;
        let noise_pred = if shape.guided {
            let uncond = noise_pred.narrow(0, 0, n)?;
            let cond = noise_pred.narrow(0, n, n)?;
            (&uncond + (cond - &uncond)?.broadcast_mul(&guidance)?)?
        } else {
            noise_pred
        };
        latents = scheduler.step(&noise_pred, index, &latents)?;
        if !progress(index + 1, total) {
            return Err(EngineError::Cancelled);
        }
    }
    decode_images(parts.vae, &latents)
}

/// SDXL's added conditioning for every input of the UNet's batch: each prompt's pooled
/// embedding, and the size numbers diffusers uses by default (original size = target
/// size = the image's, no crop).
fn added_conditioning(
    parts: &PipelineParts<'_>,
    encoded: &PromptEncoding,
    shape: &BatchShape,
    device: &Device,
    dtype: DType,
) -> Result<Option<AddedConditioning>> {
    if !parts.unet.takes_added_conditioning() {
        return Ok(None);
    }
    let text_embeds = encoded.pooled.clone().ok_or_else(|| {
        EngineError::Numerical(
            "the UNet takes a pooled text embedding (SDXL) but the model has no second text \
             encoder"
                .into(),
        )
    })?;
    let rows = text_embeds.dim(0)?;
    let (h, w) = (shape.height as f32, shape.width as f32);
    let sizes: Vec<f32> = (0..rows).flat_map(|_| [h, w, 0.0, 0.0, h, w]).collect();
    let time_ids = Tensor::from_vec(sizes, (rows, 6), device)?.to_dtype(dtype)?;
    Ok(Some(AddedConditioning {
        text_embeds,
        time_ids,
    }))
}
