//! The CLIP scorer: image and text embeddings and their scaled cosine similarities, from a
//! folder in transformers' CLIPModel layout (`config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, `preprocessor_config.json`, `vocab.json`, `merges.txt`).

pub mod config;
pub mod preprocess;
pub mod resample;
pub mod text_tower;
pub mod transformer;
pub mod vision_tower;

use crate::error::{EvalError, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear_no_bias, Linear, VarBuilder};
use config::ClipConfig;
use image::RgbImage;
use preprocess::ImagePreprocessor;
use refact_engine::tokenizer::ClipTokenizer;
use std::path::{Path, PathBuf};
use text_tower::TextTower;
use transformer::l2_normalise;
use vision_tower::VisionTower;

/// What `Scorer::score` returns for one image and n texts. Tensors are f32 on the CPU.
#[derive(Debug, Clone)]
pub struct Scores {
    /// [1, projection_dim], L2-normalised.
    pub image_embeds: Tensor,
    /// [n, projection_dim], L2-normalised.
    pub text_embeds: Tensor,
    /// `exp(logit_scale)` × cosine similarity of the image with each text, [n].
    pub logits_per_image: Vec<f32>,
}

/// What `Scorer::score_pixels` returns for b images and n texts (f32, CPU tensors).
#[derive(Debug, Clone)]
pub struct PixelScores {
    /// [b, projection_dim], L2-normalised.
    pub image_embeds: Tensor,
    /// [n, projection_dim], L2-normalised.
    pub text_embeds: Tensor,
    /// [b, n].
    pub logits_per_image: Tensor,
}

/// A loaded CLIP model with its tokenizer and image preprocessing.
pub struct Scorer {
    text: TextTower,
    vision: VisionTower,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: f64,
    tokenizer: ClipTokenizer,
    preprocessor: ImagePreprocessor,
    device: Device,
    dtype: DType,
}

/// The weight files of a folder: `model.safetensors`, or every shard its index names.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(EvalError::Weights(format!(
            "{} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| EvalError::io(&index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EvalError::config(&index, e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| EvalError::config(&index, "no weight_map"))?;
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl Scorer {
    /// Loads the scorer folder onto `device`; the towers run in `dtype` (f32 on the CPU;
    /// f16 or bf16 halves a large scorer's memory on a GPU). Outputs are always f32.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = ClipConfig::from_file(&dir.join("config.json"))?;
        let preprocessor = ImagePreprocessor::from_file(&dir.join("preprocessor_config.json"))?;
        let tokenizer = ClipTokenizer::from_files(
            &dir.join("vocab.json"),
            &dir.join("merges.txt"),
            config.text.max_position_embeddings,
        )?;
        let files = weight_files(dir)?;
        // SAFETY: the weight files are memory-mapped read-only and must not change while
        // the scorer is alive, as for every safetensors loader.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        let weights = |e: candle_core::Error| EvalError::Weights(format!("{}: {e}", dir.display()));
        let text = TextTower::load(vb.pp("text_model"), &config.text, tokenizer.eos_id())?;
        let vision = VisionTower::load(vb.pp("vision_model"), &config.vision)?;
        let text_projection = linear_no_bias(
            config.text.encoder.hidden_size,
            config.projection_dim,
            vb.pp("text_projection"),
        )
        .map_err(weights)?;
        let visual_projection = linear_no_bias(
            config.vision.encoder.hidden_size,
            config.projection_dim,
            vb.pp("visual_projection"),
        )
        .map_err(weights)?;
        let logit_scale = if vb.contains_tensor("logit_scale") {
            vb.get((), "logit_scale")
                .map_err(weights)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?
        } else {
            config.logit_scale_init_value
        };
        Ok(Self {
            text,
            vision,
            text_projection,
            visual_projection,
            logit_scale,
            tokenizer,
            preprocessor,
            device: device.clone(),
            dtype,
        })
    }

    /// The image preprocessing read from the folder.
    pub fn preprocessor(&self) -> &ImagePreprocessor {
        &self.preprocessor
    }

    /// `exp(logit_scale)`, the factor on cosine similarities.
    pub fn logit_scale_exp(&self) -> f64 {
        self.logit_scale.exp()
    }

    /// Token ids [n, context] (u32, padded with EOS) for `texts`.
    pub fn tokenize(&self, texts: &[String]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(EvalError::Invalid("no texts to score".into()));
        }
        let rows = texts
            .iter()
            .map(|t| Ok(self.tokenizer.encode_padded(t)?))
            .collect::<Result<Vec<_>>>()?;
        let context = rows[0].len();
        let flat: Vec<u32> = rows.into_iter().flatten().collect();
        Ok(Tensor::from_vec(
            flat,
            (texts.len(), context),
            &self.device,
        )?)
    }

    /// Pixel values [1, 3, H, W] (f32) of one image.
    pub fn pixel_values(&self, image: &RgbImage) -> Result<Tensor> {
        self.preprocessor.preprocess(image, &self.device)
    }

    /// L2-normalised image embeddings [b, p] (f32, CPU) of pixel values [b, 3, H, W].
    pub fn image_embeds_from_pixels(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pixels = pixel_values.to_device(&self.device)?.to_dtype(self.dtype)?;
        let pooled = self.vision.forward(&pixels)?;
        let projected = self.visual_projection.forward(&pooled)?;
        Ok(l2_normalise(&projected.to_dtype(DType::F32)?)?.to_device(&Device::Cpu)?)
    }

    /// L2-normalised text embeddings [n, p] (f32, CPU) of token ids [n, seq].
    pub fn text_embeds_from_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let pooled = self.text.forward(&input_ids.to_device(&self.device)?)?;
        let projected = self.text_projection.forward(&pooled)?;
        Ok(l2_normalise(&projected.to_dtype(DType::F32)?)?.to_device(&Device::Cpu)?)
    }

    /// L2-normalised embeddings [n, p] of texts.
    pub fn text_embeds(&self, texts: &[String]) -> Result<Tensor> {
        self.text_embeds_from_ids(&self.tokenize(texts)?)
    }

    /// L2-normalised embedding [1, p] of an image.
    pub fn image_embeds(&self, image: &RgbImage) -> Result<Tensor> {
        self.image_embeds_from_pixels(&self.pixel_values(image)?)
    }

    /// `exp(logit_scale)` × cosine similarities [b, n] of normalised image embeddings
    /// [b, p] with normalised text embeddings [n, p].
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok((image_embeds.matmul(&text_embeds.t()?)? * self.logit_scale_exp())?)
    }

    /// Embeddings and logits of one image against `texts`.
    pub fn score(&self, image: &RgbImage, texts: &[String]) -> Result<Scores> {
        let image_embeds = self.image_embeds(image)?;
        let text_embeds = self.text_embeds(texts)?;
        let logits_per_image = self
            .logits(&image_embeds, &text_embeds)?
            .squeeze(0)?
            .to_vec1()?;
        Ok(Scores {
            image_embeds,
            text_embeds,
            logits_per_image,
        })
    }

    /// The lower-level entry: embeddings and logits from pixel values [b, 3, H, W] and
    /// token ids [n, seq], skipping preprocessing and tokenization.
    pub fn score_pixels(&self, pixel_values: &Tensor, input_ids: &Tensor) -> Result<PixelScores> {
        let image_embeds = self.image_embeds_from_pixels(pixel_values)?;
        let text_embeds = self.text_embeds_from_ids(input_ids)?;
        let logits_per_image = self.logits(&image_embeds, &text_embeds)?;
        Ok(PixelScores {
            image_embeds,
            text_embeds,
            logits_per_image,
        })
    }
}
