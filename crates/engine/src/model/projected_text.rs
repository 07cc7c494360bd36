//! SDXL's second text side: `tokenizer_2/` and `text_encoder_2/`, transformers'
//! `CLIPTextModelWithProjection` (OpenCLIP ViT-bigG's shape in the real model): a CLIP
//! text transformer whose pooled state also goes through a bias-free `text_projection`.

use crate::config_file::read_json;
use crate::error::{EngineError, Result};
use crate::text_encoder::ClipTextEncoder;
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::path::Path;

/// Tokenizer, encoder and text projection of `text_encoder_2/`.
#[derive(Debug, Clone)]
pub struct ProjectedTextModel {
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextEncoder,
    /// `text_projection.weight` [projection_dim, hidden], f32.
    projection: Tensor,
}

/// The keys of `text_encoder_2/config.json` beyond what the encoder itself reads.
#[derive(Deserialize)]
struct ProjectionConfig {
    projection_dim: usize,
}

impl ProjectedTextModel {
    /// Loads `tokenizer_2/` and `text_encoder_2/` of a diffusers folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer_2"))?;
        let folder = dir.join("text_encoder_2");
        let encoder = ClipTextEncoder::load(&folder, tokenizer.eos_id(), device)?;
        let config: ProjectionConfig = read_json(&folder.join("config.json"))?;
        let weights = folder.join("model.safetensors");
        let hidden = encoder.config().hidden_size;
        let projection = crate::weights::mapped(&weights, DType::F32, device)?
            .get((config.projection_dim, hidden), "text_projection.weight")
            .map_err(|e| EngineError::Weights(format!("{}: {e}", weights.display())))?;
        Ok(Self {
            tokenizer,
            encoder,
            projection,
        })
    }

    /// The projected text embedding (`text_embeds`) of pooled states [b, hidden] →
    /// [b, projection_dim].
    pub fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(pooled.matmul(&self.projection.t()?)?)
    }

    /// Width of [`Self::project`]'s output.
    pub fn projection_dim(&self) -> usize {
        self.projection.dims()[0]
    }
}
