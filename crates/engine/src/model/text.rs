//! The text side of a model: tokenizer + text encoder, all that encoding and ReFACT need.

use super::fingerprint::text_fingerprint;
use crate::error::Result;
use crate::text_encoder::ClipTextEncoder;
use crate::tokenizer::ClipTokenizer;
use candle_core::Device;
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
}
