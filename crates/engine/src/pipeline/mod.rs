//! Text to image: diffusers' `StableDiffusionPipeline.__call__` (SD v1.x, 2.x) and
//! `StableDiffusionXLPipeline.__call__` (SDXL), at any version of the text encoder
//! (a [`DeltaSet`]).

mod batch;
pub mod conditioning;
mod latents;
mod params;

pub mod text_cache;
pub use batch::{generate_batch, BatchRow, BatchShape};
pub use conditioning::PromptEncoding;
pub use latents::{checked_latents, seeded_noise};
pub use params::GenerateParams;
pub use text_cache::TextEmbeddingCache;

use crate::deltas::DeltaSet;
use crate::error::{EngineError, Result};
use crate::model::TextModel;
use crate::scheduler::SchedulerConfig;
use crate::text_encoder::ClipTextEncoder;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet2DConditionModel;
use crate::vae::Vae;
use candle_core::{DType, Device, Tensor};

/// Everything `generate` runs: the model's parts and the folder's scheduler settings.
pub struct PipelineParts<'a> {
    pub text_encoder: &'a ClipTextEncoder,
    pub tokenizer: &'a ClipTokenizer,
    /// SDXL's second text encoder; `None` for SD v1.x/2.x.
    pub text_2: Option<&'a TextModel>,
    /// SDXL's `force_zeros_for_empty_prompt`: an empty negative prompt conditions on zeros.
    pub zeros_for_empty_negative: bool,
    pub unet: &'a UNet2DConditionModel,
    pub vae: &'a Vae,
    pub scheduler_config: &'a SchedulerConfig,
    /// Text-encoder outputs kept between calls; `None` encodes every prompt.
    pub text_cache: Option<&'a TextEmbeddingCache>,
}

/// Generates one image [H, W, 3] (f32 in [0, 1], on the CPU) for `params` with the text
/// encoder at the version `deltas` describes. One text encoder (SD v1.x/2.x); SDXL's
/// parts go through [`generate_with`].
///
/// `progress(done, total)` is called before the first denoising step (done = 0) and
/// after each one; returning `false` stops the run with `EngineError::Cancelled`.
/// `total` is the number of UNet evaluations (PNDM takes one more than `steps`).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    text_encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    unet: &UNet2DConditionModel,
    vae: &Vae,
    scheduler_config: &SchedulerConfig,
    params: &GenerateParams,
    deltas: &DeltaSet,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor> {
    let parts = PipelineParts {
        text_encoder,
        tokenizer,
        text_2: None,
        zeros_for_empty_negative: false,
        unet,
        vae,
        scheduler_config,
        text_cache: None,
    };
    generate_with(&parts, params, deltas, progress)
}

/// [`generate`] with the model's parts in one struct: a batch of one row (see
/// [`generate_batch`]), so that an image made alone and one made in a batch run the
/// same code.
pub fn generate_with(
    parts: &PipelineParts<'_>,
    params: &GenerateParams,
    deltas: &DeltaSet,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor> {
    let mut images = generate_batch(parts, &[BatchRow { params, deltas }], progress)?;
    images
        .pop()
        .ok_or_else(|| EngineError::Numerical("a batch of one gave no image".into()))
}

/// [1, latent channels, H/f, W/f] with f the VAE's downsampling factor (8 for SD).
fn latent_shape(parts: &PipelineParts<'_>, params: &GenerateParams) -> Result<Vec<usize>> {
    let factor = parts.vae.config().downsampling_factor();
    for (field, value) in [("width", params.width), ("height", params.height)] {
        if value % factor != 0 {
            return Err(EngineError::invalid(
                crate::InvalidKind::BadGenerationSetting,
                field,
                format!("must be a multiple of {factor} for this model, got {value}"),
            ));
        }
    }
    Ok(vec![
        1,
        parts.unet.config().in_channels,
        params.height / factor,
        params.width / factor,
    ])
}

/// The UNet's conditioning: [uncond, cond] when guided, else [cond], from the f32 text
/// encoder(s), cast to the UNet's dtype on its device.
fn encode_prompts(
    parts: &PipelineParts<'_>,
    params: &GenerateParams,
    deltas: &DeltaSet,
    device: &Device,
    dtype: DType,
) -> Result<PromptEncoding> {
    let zero_negative = parts.zeros_for_empty_negative && params.negative_prompt.is_empty();
    let mut prompts = Vec::with_capacity(2);
    if params.uses_guidance() && !zero_negative {
        prompts.push(params.negative_prompt.as_str());
    }
    prompts.push(params.prompt.as_str());
    let encode = |prompts: &[&str]| conditioning::encode(parts, prompts, deltas);
    let mut encoded = match parts.text_cache {
        Some(cache) => PromptEncoding::cat(&cache.encodings(deltas, &prompts, encode)?)?,
        None => encode(&prompts)?,
    };
    if params.uses_guidance() && zero_negative {
        encoded = PromptEncoding::cat(&[encoded.zeros_like()?, encoded])?;
    }
    encoded.to(device, dtype)
}

/// VAE decode, then diffusers' post-processing: `(x / 2 + 0.5).clamp(0, 1)`, one
/// [H, W, 3] f32 image on the CPU per latent of the batch.
///
/// The decoder keeps the rows of a batch apart, so a batched image is the image; rows go
/// through it in groups of at most [`DECODE_PIXELS_PER_CALL`] output pixels, which bounds
/// the activations' memory (a 512 px decode peaks near 2 GiB on the CPU).
fn decode_images(vae: &Vae, latents: &Tensor) -> Result<Vec<Tensor>> {
    let (rows, _, h, w) = latents.dims4()?;
    let scale = vae.config().downsampling_factor();
    let pixels_per_row = (h * scale * w * scale).max(1);
    let rows_per_call = (DECODE_PIXELS_PER_CALL / pixels_per_row).clamp(1, rows.max(1));
    let mut images = Vec::with_capacity(rows);
    for first in (0..rows).step_by(rows_per_call) {
        let group = latents.narrow(0, first, rows_per_call.min(rows - first))?;
        let decoded = vae.decode(&group)?;
        let decoded = ((decoded.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        for row in 0..decoded.dim(0)? {
            images.push(
                decoded
                    .get(row)?
                    .permute((1, 2, 0))?
                    .contiguous()?
                    .to_device(&Device::Cpu)?,
            );
        }
    }
    Ok(images)
}

/// Output pixels decoded per VAE call: two 512 px images, eight at 256 px.
const DECODE_PIXELS_PER_CALL: usize = 2 * 512 * 512;
