//! A whole Stable Diffusion pipeline (v1.x, 2.x or XL), loaded once and shared by every
//! version.

use super::demo::is_demo_folder;
use super::family::{ModelFamily, ModelIndex};
use super::source::ModelSource;
use super::text::TextModel;
use crate::deltas::DeltaSet;
use crate::error::Result;
use crate::pipeline::{
    generate_batch, generate_with, BatchRow, GenerateParams, PipelineParts, TextEmbeddingCache,
};
use crate::scheduler::{SchedulerConfig, SchedulerKind};
use crate::unet::UNet2DConditionModel;
use crate::vae::Vae;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to load and where to run it.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub source: ModelSource,
    pub device: Device,
    /// UNet and VAE precision (the text encoder is always f32).
    pub dtype: DType,
    /// Holds the demo model (and, for callers, statistics caches).
    pub data_dir: PathBuf,
    /// Read hub models from the local cache only.
    pub offline: bool,
}

/// Facts about a loaded model, for logs, the API and the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// As the user named it.
    pub name: String,
    pub folder: PathBuf,
    /// sha256 of the text encoder and tokenizer files.
    pub fingerprint: String,
    /// The built-in random-weight model: its images are noise.
    pub is_demo: bool,
    /// sd1, sd2 or sdxl.
    pub family: ModelFamily,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// The UNet's native image size (sample_size × 8), width and height.
    pub default_size: (usize, usize),
    /// The scheduler the folder's config names.
    pub default_scheduler: Option<SchedulerKind>,
    pub device: String,
    pub dtype: String,
}

/// Tokenizer, text encoder, UNet, VAE and scheduler settings of one model.
pub struct StableDiffusion {
    /// The text side that versions edit (SDXL: the first encoder).
    pub text: TextModel,
    /// SDXL's second tokenizer and encoder; `None` for SD v1.x/2.x.
    pub text_2: Option<TextModel>,
    /// SDXL: an empty negative prompt conditions on zeros.
    pub zeros_for_empty_negative: bool,
    pub unet: UNet2DConditionModel,
    pub vae: Vae,
    pub scheduler_config: SchedulerConfig,
    pub info: ModelInfo,
    /// Prompts encoded at a version, kept for the next image (see [`TextEmbeddingCache`]).
    pub text_cache: TextEmbeddingCache,
}

impl StableDiffusion {
    /// Resolves the source to a folder (creating the demo model or downloading if
    /// needed) and loads every part.
    pub fn load(spec: &ModelSpec) -> Result<Self> {
        let folder = super::resolve_folder(&spec.source, &spec.data_dir, spec.offline)?;
        Self::load_folder(
            &folder,
            &spec.source.display_name(),
            &spec.device,
            spec.dtype,
        )
    }

    /// Loads a diffusers folder.
    pub fn load_folder(folder: &Path, name: &str, device: &Device, dtype: DType) -> Result<Self> {
        super::source::check_folder(folder)?;
        let index = ModelIndex::read(folder)?;
        let mut texts = TextModel::load_all(folder, device)?.into_iter();
        let text = texts.next().expect("a folder has a text encoder");
        let text_2 = texts.next();
        let family = index.family(folder, text.encoder.config())?;
        let unet = UNet2DConditionModel::load(folder, device, dtype)?;
        let vae = Vae::load(folder, device, dtype)?;
        let scheduler_config =
            SchedulerConfig::from_file(folder.join("scheduler/scheduler_config.json"))?;
        let config = text.encoder.config();
        let (h, w) = unet
            .config()
            .sample_size
            .map(|s| s.height_width())
            .unwrap_or((64, 64));
        let scale = vae.config().downsampling_factor();
        let info = ModelInfo {
            name: name.to_string(),
            folder: folder.to_path_buf(),
            fingerprint: text.fingerprint.clone(),
            is_demo: is_demo_folder(folder),
            family,
            num_layers: config.num_hidden_layers,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            default_size: (w * scale, h * scale),
            default_scheduler: scheduler_config.class_kind(),
            device: format!("{device:?}"),
            dtype: format!("{dtype:?}").to_lowercase(),
        };
        Ok(Self {
            text,
            text_2,
            zeros_for_empty_negative: index.zeros_for_empty_negative(),
            unet,
            vae,
            scheduler_config,
            info,
            text_cache: TextEmbeddingCache::default(),
        })
    }

    /// Generates one image [H, W, 3] (f32 in [0, 1], on the CPU) at the version `deltas`.
    pub fn generate(
        &self,
        params: &GenerateParams,
        deltas: &DeltaSet,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Tensor> {
        generate_with(&self.parts(), params, deltas, progress)
    }

    /// Generates one image per row in one denoising loop (see
    /// [`crate::pipeline::generate_batch`]): the rows must share size, steps, scheduler
    /// and whether guidance is on.
    pub fn generate_batch(
        &self,
        rows: &[BatchRow<'_>],
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Vec<Tensor>> {
        generate_batch(&self.parts(), rows, progress)
    }

    /// The text sides, in pipeline order: [`Self::text`], then SDXL's [`Self::text_2`].
    pub fn text_models(&self) -> impl Iterator<Item = &TextModel> {
        std::iter::once(&self.text).chain(&self.text_2)
    }

    /// The model's parts as the pipeline takes them.
    fn parts(&self) -> PipelineParts<'_> {
        PipelineParts {
            text_encoder: &self.text.encoder,
            tokenizer: &self.text.tokenizer,
            text_2: self.text_2.as_ref(),
            zeros_for_empty_negative: self.zeros_for_empty_negative,
            unet: &self.unet,
            vae: &self.vae,
            scheduler_config: &self.scheduler_config,
            text_cache: Some(&self.text_cache),
        }
    }
}
