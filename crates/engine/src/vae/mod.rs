//! The VAE decoder, built from the folder's `vae/config.json`: the latent scaling, then
//! `post_quant_conv` and diffusers' `Decoder`. Only decoding is needed to render, so the
//! encoder's weights are never read.

mod attention;
mod banded;
mod decoder;

use crate::config_file::read_json;
use crate::error::{EngineError, Result};
use crate::layers::Conv2d;
pub use banded::{VaeTiling, DEFAULT_BAND_VALUES};
use candle_core::Module;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use decoder::Decoder;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// File names inside a diffusers model folder.
pub const CONFIG_FILE: &str = "vae/config.json";
pub const WEIGHTS_FILE: &str = "vae/diffusion_pytorch_model.safetensors";

/// `AutoencoderKL`'s config.json; absent keys take diffusers' defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Latents are `scaling_factor ×` the VAE's own latent space.
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latents_mean: Option<serde_json::Value>,
    pub latents_std: Option<serde_json::Value>,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// diffusers runs this VAE in f32 even in half-precision pipelines (SDXL only;
    /// SD v1.x pipelines ignore it). Kept for the model loader to decide.
    pub force_upcast: bool,
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for VaeConfig {
    /// diffusers' `AutoencoderKL.__init__` defaults.
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            force_upcast: true,
            source: None,
        }
    }
}

impl VaeConfig {
    /// Reads and checks `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut config: VaeConfig = read_json(path)?;
        config.source = Some(path.to_path_buf());
        config.check()?;
        Ok(config)
    }

    fn error(&self, message: impl Into<String>) -> EngineError {
        let path = self
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from(CONFIG_FILE));
        EngineError::config(path, message)
    }

    /// Refuses what the decoder does not build.
    pub fn check(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(self.error("`block_out_channels` is empty"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(self.error(
                "`down_block_types`, `up_block_types` and `block_out_channels` must have the same length",
            ));
        }
        if let Some(kind) = self
            .down_block_types
            .iter()
            .find(|k| *k != "DownEncoderBlock2D")
        {
            return Err(self.error(format!("down block \"{kind}\" is not supported")));
        }
        if let Some(kind) = self
            .up_block_types
            .iter()
            .find(|k| *k != "UpDecoderBlock2D")
        {
            return Err(self.error(format!("up block \"{kind}\" is not supported")));
        }
        if self.act_fn != "silu" {
            return Err(self.error(format!("`act_fn` = \"{}\" is not supported", self.act_fn)));
        }
        if !self.mid_block_add_attention {
            return Err(self.error("`mid_block_add_attention` = false is not supported"));
        }
        if self.shift_factor.is_some_and(|s| s != 0.0) {
            return Err(self.error("`shift_factor` is not supported"));
        }
        if self.latents_mean.as_ref().is_some_and(|v| !v.is_null())
            || self.latents_std.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(self.error("`latents_mean`/`latents_std` are not supported"));
        }
        let groups = self.norm_num_groups;
        if groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| *c == 0 || c % groups != 0)
        {
            return Err(self.error(format!(
                "block channels must be positive multiples of norm_num_groups {groups}"
            )));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(self.error("`scaling_factor` must be positive"));
        }
        Ok(())
    }

    /// Pixels per latent cell along each side (8 for SD v1.x).
    pub fn downsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

/// The VAE, used to turn final latents into images.
pub struct Vae {
    /// The 1×1 convolution in front of the decoder, when the config has one.
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
    config: VaeConfig,
    dtype: DType,
    /// Decode large latents in bands of rows (`None`: always whole).
    tiling: Option<VaeTiling>,
}

impl std::fmt::Debug for Vae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vae")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .field("tiling", &self.tiling)
            .finish_non_exhaustive()
    }
}

impl Vae {
    /// Builds the VAE from weights under `vb` (diffusers' tensor names), in `vb`'s dtype.
    pub fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        config.check()?;
        let dtype = vb.dtype();
        let latent = config.latent_channels;
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| Conv2d::load(vb.pp("post_quant_conv"), latent, latent, 1, 1, 0))
            .transpose()?;
        Ok(Self {
            post_quant_conv,
            decoder: Decoder::new(vb.pp("decoder"), config)?,
            config: config.clone(),
            dtype,
            tiling: None,
        })
    }

    /// Loads `vae/config.json` and `vae/diffusion_pytorch_model.safetensors` (memory
    /// mapped) from a diffusers model folder.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = VaeConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = dir.join(WEIGHTS_FILE);
        let vb = crate::weights::mapped(&weights, dtype, device)?;
        Self::new(vb, &config).map_err(|e| match e {
            EngineError::Candle(e) => EngineError::Weights(format!("{}: {e}", weights.display())),
            other => other,
        })
    }

    /// The config the VAE was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Decode latents above the threshold in bands of rows, to the same image with less
    /// memory (`None`: whole, as diffusers does by default). See [`VaeTiling`].
    pub fn set_tiling(&mut self, tiling: Option<VaeTiling>) {
        self.tiling = tiling;
    }

    /// Decodes raw (scaled) latents [b, latent_channels, h, w] into images
    /// [b, out_channels, 8h, 8w] in about [-1, 1], in the VAE's dtype. Divides by
    /// `scaling_factor` itself: pass the scheduler's latents as they are.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let latents = (latents.to_dtype(self.dtype)? / self.config.scaling_factor)?;
        let latents = match &self.post_quant_conv {
            Some(conv) => conv.forward(&latents)?,
            None => latents,
        };
        let (_, _, h, w) = latents.dims4()?;
        Ok(match self.tiling {
            Some(tiling) if tiling.applies_to(h, w) => {
                banded::decode_banded(&self.decoder, &latents, tiling)?
            }
            _ => self.decoder.forward(&latents)?,
        })
    }
}
