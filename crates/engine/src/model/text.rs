//! The text side of a model: tokenizer + text encoder, all that encoding and ReFACT need.

use super::fingerprint::text_fingerprint;
use super::random_weights::RandomWeights;
use crate::error::Result;
use crate::text_encoder::{ClipTextConfig, ClipTextEncoder};
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device};
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
