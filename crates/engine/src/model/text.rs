//! The text side of a model: tokenizer + text encoder, all that encoding and ReFACT need.

use super::fingerprint::text_fingerprint;
use super::random_weights::RandomWeights;
use crate::config_file::read_json;
use crate::deltas::TextEncoderId;
use crate::error::{EngineError, Result};
use crate::text_encoder::{ClipTextConfig, ClipTextEncoder, Readout};
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device};
use serde::Deserialize;
use std::path::Path;

/// Tokenizer and text encoder of a diffusers folder, with the model's fingerprint.
#[derive(Debug, Clone)]
pub struct TextModel {
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextEncoder,
    /// sha256 of the text encoder and tokenizer files.
    pub fingerprint: String,
}

impl TextModel {
    /// Loads `tokenizer/` and `text_encoder/` from a diffusers folder. The text encoder
    /// runs in f32 on every device (ReFACT optimises through it).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer"))?;
        let encoder = ClipTextEncoder::load(&dir.join("text_encoder"), tokenizer.eos_id(), device)?;
        let fingerprint = text_fingerprint(dir)?;
        Ok(Self {
            tokenizer,
            encoder,
            fingerprint,
        })
    }

    /// Every text side of a diffusers folder, in pipeline order, as `model_index.json`
    /// says: one for SD v1.x/2.x; for SDXL, `tokenizer/` + `text_encoder/` (CLIP ViT-L
    /// in the real model), read at its penultimate layer, and `tokenizer_2/` +
    /// `text_encoder_2/` (transformers' `CLIPTextModelWithProjection`, OpenCLIP bigG),
    /// read at its penultimate layer and through its `text_projection`. Every side
    /// carries the folder's fingerprint, which covers both encoders.
    pub fn load_all(dir: &Path, device: &Device) -> Result<Vec<Self>> {
        if super::family::ModelIndex::read(dir)?.is_sdxl() {
            let (first, second) = Self::load_sdxl(dir, device)?;
            Ok(vec![first, second])
        } else {
            Ok(vec![Self::load(dir, device)?])
        }
    }

    fn load_sdxl(dir: &Path, device: &Device) -> Result<(Self, Self)> {
        let mut first = Self::load(dir, device)?;
        first.encoder = first
            .encoder
            .in_pipeline(TextEncoderId::Text, Readout::Penultimate);
        let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer_2"))?;
        let folder = dir.join("text_encoder_2");
        let encoder = ClipTextEncoder::load(&folder, tokenizer.eos_id(), device)?;
        let projection = text_projection(&folder, encoder.config().hidden_size, device)?;
        let second = Self {
            tokenizer,
            encoder: encoder.in_pipeline(
                TextEncoderId::Text2,
                Readout::PenultimateAndProjection(projection),
            ),
            fingerprint: first.fingerprint.clone(),
        };
        Ok((first, second))
    }

    /// A text encoder of `config`'s sizes with seeded random weights (f32) and CLIP's
    /// tokenizer from `bpe_dir` (`vocab.json`, `merges.txt`; the repository ships them in
    /// `assets/clip-bpe`): a model's text side at its real size where its weights cannot
    /// be fetched, for benchmarks and reports. The fingerprint names the seed.
    pub fn random(
        config: ClipTextConfig,
        seed: u64,
        bpe_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_files(
            &bpe_dir.join("vocab.json"),
            &bpe_dir.join("merges.txt"),
            config.max_position_embeddings,
        )?;
        let vb = RandomWeights::new(seed).var_builder(DType::F32, device);
        let encoder = ClipTextEncoder::new(vb, config, tokenizer.eos_id())?;
        Ok(Self {
            tokenizer,
            encoder,
            fingerprint: format!("random-weights-seed-{seed}"),
        })
    }
}

/// The key of `text_encoder_2/config.json` beyond what the encoder itself reads.
#[derive(Deserialize)]
struct ProjectionConfig {
    projection_dim: usize,
}

/// `text_projection.weight` [projection_dim, hidden] of a `CLIPTextModelWithProjection`
/// folder, f32.
fn text_projection(folder: &Path, hidden: usize, device: &Device) -> Result<candle_core::Tensor> {
    let config: ProjectionConfig = read_json(&folder.join("config.json"))?;
    let weights = folder.join("model.safetensors");
    crate::weights::mapped(&weights, DType::F32, device)?
        .get((config.projection_dim, hidden), "text_projection.weight")
        .map_err(|e| EngineError::Weights(format!("{}: {e}", weights.display())))
}
