//! The built-in demo model: a small Stable Diffusion v1-shaped pipeline with random
//! weights, so the service starts anywhere with no download. Its images are noise.
//!
//! It is written on first use into `<data dir>/demo-model-v1/` in the exact diffusers
//! layout (the same loader reads it as any other folder), deterministically from a fixed
//! seed: every machine builds the same bytes. The tokenizer is CLIP's real vocabulary
//! (shipped in `assets/clip-bpe`), so prompts tokenize as on a real model.

use super::random_weights::RandomWeights;
use crate::error::{EngineError, Result};
use crate::text_encoder::{ClipTextConfig, ClipTextEncoder};
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use candle_core::{DType, Device, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Bump when the demo model's sizes or seed change, so old folders are not reused.
const DEMO_DIR: &str = "demo-model-v1";
const SEED: u64 = 0x5EED_DE40;
/// Written into the folder; its presence marks a model as the demo.
pub const DEMO_MARKER: &str = "refact_demo.json";

const VOCAB: &[u8] = include_bytes!("../../../../assets/clip-bpe/vocab.json");
const MERGES: &[u8] = include_bytes!("../../../../assets/clip-bpe/merges.txt");

const MODEL_INDEX: &str = r#"{
  "_class_name": "StableDiffusionPipeline",
  "_diffusers_version": "0.42.1",
  "feature_extractor": [null, null],
  "requires_safety_checker": false,
  "safety_checker": [null, null],
  "scheduler": ["diffusers", "PNDMScheduler"],
  "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}"#;

/// SD v1.5's scheduler file.
const SCHEDULER: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.42.1",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

const TEXT_ENCODER: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 49406,
  "eos_token_id": 49407,
  "hidden_act": "quick_gelu",
  "hidden_size": 64,
  "intermediate_size": 256,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 4,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 64,
  "vocab_size": 49408
}"#;

const UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.42.1",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [32, 64, 64, 64],
  "center_input_sample": false,
  "cross_attention_dim": 64,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 1,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 32,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "use_linear_projection": false
}"#;

const VAE: &str = r#"{
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.42.1",
  "act_fn": "silu",
  "block_out_channels": [32, 32, 64, 64],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 1,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 256,
  "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

const TOKENIZER_CONFIG: &str = r#"{
  "add_prefix_space": false,
  "bos_token": "<|startoftext|>",
  "do_lower_case": true,
  "eos_token": "<|endoftext|>",
  "model_max_length": 77,
  "pad_token": "<|endoftext|>",
  "tokenizer_class": "CLIPTokenizer",
  "unk_token": "<|endoftext|>"
}"#;

const SPECIAL_TOKENS: &str = r#"{
  "bos_token": "<|startoftext|>",
  "eos_token": "<|endoftext|>",
  "pad_token": "<|endoftext|>",
  "unk_token": "<|endoftext|>"
}"#;

const MARKER: &str = r#"{
  "demo": true,
  "note": "refact-serve's built-in demo model: random weights, deterministic from a fixed seed. Its images are noise; edits run and are stored like real ones. Point --model at a Stable Diffusion v1.x folder or hub id for real images."
}"#;

/// The sizes of a random-weight SD v1-shaped pipeline: the `config.json` of its text
/// encoder, UNet and VAE. Everything else (tokenizer, scheduler, weights) is the same
/// for any sizes.
pub struct RandomSizes<'a> {
    pub text_encoder: Cow<'a, str>,
    pub unet: Cow<'a, str>,
    pub vae: Cow<'a, str>,
}

impl RandomSizes<'static> {
    /// The sizes in three `config.json` files (a model folder's, or the benchmarks'
    /// configs of real models).
    pub fn read(text_encoder: &Path, unet: &Path, vae: &Path) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(Cow::Owned)
                .map_err(|e| EngineError::io(path, e))
        };
        Ok(Self {
            text_encoder: read(text_encoder)?,
            unet: read(unet)?,
            vae: read(vae)?,
        })
    }
}

/// The demo model's own sizes (about 3 MB of weights).
const DEMO_SIZES: RandomSizes<'static> = RandomSizes {
    text_encoder: Cow::Borrowed(TEXT_ENCODER),
    unet: Cow::Borrowed(UNET),
    vae: Cow::Borrowed(VAE),
};

/// The demo model's folder under `data_dir`, created on first use.
pub fn ensure_demo_model(data_dir: &Path) -> Result<PathBuf> {
    ensure_random_model(&data_dir.join(DEMO_DIR), &DEMO_SIZES)
}

/// A random-weight pipeline of `sizes` at `dir`, written on first use (the demo model is
/// one; benchmarks write others at real sizes, e.g. SD v1.5's). It carries the demo
/// marker: its images are noise too.
pub fn ensure_random_model(dir: &Path, sizes: &RandomSizes) -> Result<PathBuf> {
    if dir.join(DEMO_MARKER).is_file() {
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
    // Built beside the final folder and renamed into place, so a crash never leaves a
    // half-written model that later runs would take for complete.
    let name = dir
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy());
    let staging = parent.join(format!("{name}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| EngineError::io(&staging, e))?;
    }
    write_random_model(&staging, sizes)?;
    match std::fs::rename(&staging, dir) {
        Ok(()) => Ok(dir.to_path_buf()),
        // Another process finished first: use its copy (same bytes).
        Err(_) if dir.join(DEMO_MARKER).is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir.to_path_buf())
        }
        Err(e) => Err(EngineError::io(dir, e)),
    }
}

/// Whether `dir` is a demo model folder.
pub fn is_demo_folder(dir: &Path) -> bool {
    dir.join(DEMO_MARKER).is_file()
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| EngineError::io(path, e))
}

fn save(tensors: HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| EngineError::Weights(format!("{}: {e}", path.display())))
}

fn write_random_model(dir: &Path, sizes: &RandomSizes) -> Result<()> {
    write(&dir.join("model_index.json"), MODEL_INDEX.as_bytes())?;
    write(
        &dir.join("scheduler/scheduler_config.json"),
        SCHEDULER.as_bytes(),
    )?;
    write(&dir.join("tokenizer/vocab.json"), VOCAB)?;
    write(&dir.join("tokenizer/merges.txt"), MERGES)?;
    write(
        &dir.join("tokenizer/tokenizer_config.json"),
        TOKENIZER_CONFIG.as_bytes(),
    )?;
    write(
        &dir.join("tokenizer/special_tokens_map.json"),
        SPECIAL_TOKENS.as_bytes(),
    )?;
    write(
        &dir.join("text_encoder/config.json"),
        sizes.text_encoder.as_bytes(),
    )?;
    write(&dir.join("unet/config.json"), sizes.unet.as_bytes())?;
    write(&dir.join("vae/config.json"), sizes.vae.as_bytes())?;

    // Each part is built once through its real constructor over seeded random weights;
    // what the constructor asked for is exactly what gets saved, names included.
    let cpu = Device::Cpu;
    let text = RandomWeights::new(SEED);
    let config = ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
    ClipTextEncoder::new(
        text.var_builder(DType::F32, &cpu).pp("text_model"),
        config,
        49407,
    )?;
    save(text.tensors(), &dir.join("text_encoder/model.safetensors"))?;

    let unet = RandomWeights::new(SEED + 1);
    let config = UNetConfig::from_file(&dir.join("unet/config.json"))?;
    UNet2DConditionModel::new(unet.var_builder(DType::F32, &cpu), &config)?;
    save(
        unet.tensors(),
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;

    let vae = RandomWeights::new(SEED + 2);
    let config = VaeConfig::from_file(&dir.join("vae/config.json"))?;
    Vae::new(vae.var_builder(DType::F32, &cpu), &config)?;
    save(
        vae.tensors(),
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )?;

    // The marker goes last: its presence means the folder is complete.
    write(&dir.join(DEMO_MARKER), MARKER.as_bytes())
}
