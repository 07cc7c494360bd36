//! Which Stable Diffusion family a diffusers folder holds, from its `model_index.json`.
//!
//! The pipeline class decides the text side: `StableDiffusionPipeline` (SD v1.x and 2.x:
//! one CLIP text encoder, its last hidden state is the context) or
//! `StableDiffusionXLPipeline` (two encoders whose penultimate states are concatenated,
//! plus a pooled, projected embedding and size conditioning for the UNet). SD 2.x differs
//! from v1.x only in sizes and settings the configs carry (OpenCLIP's exact GELU, linear
//! projections, v-prediction), so it is told apart by its text encoder's activation,
//! for display only.

use crate::config_file::read_json;
use crate::error::{EngineError, Result};
use crate::text_encoder::{Activation, ClipTextConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A model family, as `/info` and the CLI name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// SD v1.x: CLIP ViT-L text encoder (quick GELU).
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H text encoder (exact GELU), same pipeline as v1.x.
    Sd2,
    /// SDXL: two text encoders, pooled text embedding and size conditioning.
    Sdxl,
}

/// The keys of `model_index.json` the engine reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// SDXL: an empty negative prompt means zero conditioning, not the encoded "".
    /// diffusers' default for SDXL pipelines is true.
    #[serde(default)]
    pub force_zeros_for_empty_prompt: Option<bool>,
}

pub const SD_PIPELINE: &str = "StableDiffusionPipeline";
pub const SDXL_PIPELINE: &str = "StableDiffusionXLPipeline";

impl ModelIndex {
    /// Reads `model_index.json` of a diffusers folder.
    pub fn read(folder: &Path) -> Result<Self> {
        Self::read_file(&folder.join("model_index.json"))
    }

    /// Reads a `model_index.json` file.
    pub fn read_file(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Whether the folder holds an SDXL pipeline (two text encoders).
    pub fn is_sdxl(&self) -> bool {
        self.class_name.as_deref() == Some(SDXL_PIPELINE)
    }

    /// The family, refusing pipeline classes the engine does not build. A file without
    /// a class is taken as SD v1.x/2.x, the layout every such folder shares.
    pub fn family(&self, folder: &Path, text: &ClipTextConfig) -> Result<ModelFamily> {
        match self.class_name.as_deref() {
            Some(SDXL_PIPELINE) => Ok(ModelFamily::Sdxl),
            None | Some(SD_PIPELINE) => Ok(match text.hidden_act {
                Activation::QuickGelu => ModelFamily::Sd1,
                Activation::Gelu | Activation::GeluTanh => ModelFamily::Sd2,
            }),
            Some(other) => Err(EngineError::config(
                folder.join("model_index.json"),
                format!(
                    "`_class_name` = \"{other}\" is not supported \
                     (expected \"{SD_PIPELINE}\" or \"{SDXL_PIPELINE}\")"
                ),
            )),
        }
    }

    /// diffusers' `force_zeros_for_empty_prompt`, with its default for the class.
    pub fn zeros_for_empty_negative(&self) -> bool {
        self.force_zeros_for_empty_prompt.unwrap_or(self.is_sdxl())
    }
}

impl ModelFamily {
    /// "sd1", "sd2" or "sdxl".
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Sd1 => "sd1",
            ModelFamily::Sd2 => "sd2",
            ModelFamily::Sdxl => "sdxl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: &str) -> ModelIndex {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_class_and_the_activation_decide_the_family() {
        let folder = Path::new("model");
        let mut text = ClipTextConfig::vit_l14();
        let sd = index(r#"{"_class_name": "StableDiffusionPipeline"}"#);
        assert_eq!(sd.family(folder, &text).unwrap(), ModelFamily::Sd1);
        text.hidden_act = Activation::Gelu;
        assert_eq!(sd.family(folder, &text).unwrap(), ModelFamily::Sd2);
        let xl = index(r#"{"_class_name": "StableDiffusionXLPipeline"}"#);
        assert_eq!(xl.family(folder, &text).unwrap(), ModelFamily::Sdxl);
        let other = index(r#"{"_class_name": "KandinskyPipeline"}"#);
        let err = other.family(folder, &text).unwrap_err().to_string();
        assert!(err.contains("KandinskyPipeline"), "{err}");
    }

    #[test]
    fn zeros_for_an_empty_negative_default_to_sdxl_only() {
        assert!(!index(r#"{"_class_name": "StableDiffusionPipeline"}"#).zeros_for_empty_negative());
        assert!(index(r#"{"_class_name": "StableDiffusionXLPipeline"}"#).zeros_for_empty_negative());
        let off = index(
            r#"{"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": false}"#,
        );
        assert!(!off.zeros_for_empty_negative());
    }
}
