//! The model's `config.json` in transformers' CLIPModel layout. Every size comes from the
//! file; keys a file lacks take transformers' own defaults for `CLIPTextConfig` and
//! `CLIPVisionConfig`, so older checkpoints (openai/clip-vit-large-patch14) and newer ones
//! (LAION ViT-bigG/14) load the same way.

use crate::error::{EvalError, Result};
use serde::Deserialize;
use std::path::Path;

/// The activation between the two MLP projections, from `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI's CLIP.
    QuickGelu,
    /// The exact (erf) GELU: transformers' `gelu`, used by the LAION models.
    Gelu,
    /// The tanh approximation: transformers' `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
}

impl Activation {
    fn parse(name: &str, path: &Path) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(EvalError::config(
                path,
                format!("unsupported hidden_act `{other}` (expected quick_gelu, gelu or gelu_new)"),
            )),
        }
    }
}

/// Sizes shared by both towers' transformer encoders.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

/// The text tower: an encoder plus token and position embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub encoder: EncoderConfig,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
}

/// The vision tower: an encoder over image patches plus a class token.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub encoder: EncoderConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
}

impl VisionConfig {
    /// Patches per side of the (square) input image.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// A whole CLIP model: both towers, the shared projection size and the initial logit scale
/// (used only when the weights lack `logit_scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
}

#[derive(Deserialize)]
struct RawText {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

#[derive(Deserialize)]
struct RawVision {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_channels: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

#[derive(Deserialize)]
struct RawClip {
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    projection_dim: Option<usize>,
    logit_scale_init_value: Option<f64>,
}

impl ClipConfig {
    /// Reads `config.json`, naming the file in any error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the JSON text of a `config.json`; `path` only names the file in errors.
    pub fn from_json(json: &str, path: &Path) -> Result<Self> {
        let raw: RawClip =
            serde_json::from_str(json).map_err(|e| EvalError::config(path, e.to_string()))?;
        let t = raw
            .text_config
            .ok_or_else(|| EvalError::config(path, "no `text_config` (not a CLIPModel config?)"))?;
        let v = raw.vision_config.ok_or_else(|| {
            EvalError::config(path, "no `vision_config` (not a CLIPModel config?)")
        })?;
        // Defaults are those of transformers' CLIPTextConfig / CLIPVisionConfig.
        let text = TextConfig {
            encoder: EncoderConfig {
                hidden_size: t.hidden_size.unwrap_or(512),
                intermediate_size: t.intermediate_size.unwrap_or(2048),
                num_hidden_layers: t.num_hidden_layers.unwrap_or(12),
                num_attention_heads: t.num_attention_heads.unwrap_or(8),
                layer_norm_eps: t.layer_norm_eps.unwrap_or(1e-5),
                activation: Activation::parse(
                    t.hidden_act.as_deref().unwrap_or("quick_gelu"),
                    path,
                )?,
            },
            vocab_size: t.vocab_size.unwrap_or(49408),
            max_position_embeddings: t.max_position_embeddings.unwrap_or(77),
        };
        let vision = VisionConfig {
            encoder: EncoderConfig {
                hidden_size: v.hidden_size.unwrap_or(768),
                intermediate_size: v.intermediate_size.unwrap_or(3072),
                num_hidden_layers: v.num_hidden_layers.unwrap_or(12),
                num_attention_heads: v.num_attention_heads.unwrap_or(12),
                layer_norm_eps: v.layer_norm_eps.unwrap_or(1e-5),
                activation: Activation::parse(
                    v.hidden_act.as_deref().unwrap_or("quick_gelu"),
                    path,
                )?,
            },
            image_size: v.image_size.unwrap_or(224),
            patch_size: v.patch_size.unwrap_or(32),
            num_channels: v.num_channels.unwrap_or(3),
        };
        let config = ClipConfig {
            text,
            vision,
            projection_dim: raw.projection_dim.unwrap_or(512),
            logit_scale_init_value: raw.logit_scale_init_value.unwrap_or(2.6592),
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        for (name, e) in [
            ("text", &self.text.encoder),
            ("vision", &self.vision.encoder),
        ] {
            if e.num_attention_heads == 0 || !e.hidden_size.is_multiple_of(e.num_attention_heads) {
                return Err(EvalError::config(
                    path,
                    format!(
                        "{name}: hidden_size {} is not a multiple of num_attention_heads {}",
                        e.hidden_size, e.num_attention_heads
                    ),
                ));
            }
        }
        let v = &self.vision;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(EvalError::config(
                path,
                format!(
                    "image_size {} is not a multiple of patch_size {}",
                    v.image_size, v.patch_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_transformers_defaults() {
        let c = ClipConfig::from_json(
            r#"{"text_config": {"hidden_act": "gelu"}, "vision_config": {"patch_size": 14, "image_size": 224}}"#,
            Path::new("config.json"),
        )
        .unwrap();
        assert_eq!(c.text.encoder.hidden_size, 512);
        assert_eq!(c.text.encoder.activation, Activation::Gelu);
        assert_eq!(c.vision.encoder.activation, Activation::QuickGelu);
        assert_eq!(c.vision.patches_per_side(), 16);
        assert_eq!(c.projection_dim, 512);
    }

    #[test]
    fn unknown_activation_and_bad_patch_size_are_refused() {
        let bad_act = r#"{"text_config": {"hidden_act": "swish"}, "vision_config": {}}"#;
        assert!(ClipConfig::from_json(bad_act, Path::new("c.json")).is_err());
        let bad_patch =
            r#"{"text_config": {}, "vision_config": {"image_size": 30, "patch_size": 8}}"#;
        assert!(ClipConfig::from_json(bad_patch, Path::new("c.json")).is_err());
        assert!(ClipConfig::from_json(r#"{"vision_config": {}}"#, Path::new("c.json")).is_err());
    }
}
