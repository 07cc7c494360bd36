//! The UNet's `config.json`, read with diffusers' defaults for absent keys, checked, and
//! resolved into per-block sizes.

use crate::config_file::read_json;
use crate::error::{EngineError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A setting that diffusers accepts either once for every block or as one value per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a single value or a list with one value per block"
)]
pub enum PerBlock<T> {
    /// The same value for every down block.
    Same(T),
    /// One value per down block (up blocks use the list reversed).
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The values for `n` down blocks; `None` when a list has the wrong length.
    fn expand(&self, n: usize) -> Option<Vec<T>> {
        match self {
            PerBlock::Same(value) => Some(vec![value.clone(); n]),
            PerBlock::Each(values) if values.len() == n => Some(values.clone()),
            PerBlock::Each(_) => None,
        }
    }
}

/// `UNet2DConditionModel`'s config.json. Keys the file lacks take diffusers' defaults;
/// keys this engine does not read are ignored, and [`UNetConfig::layout`] refuses every
/// value that would change the network into one this engine does not build.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent height and width the model was trained at (64 for SD v1.x: 512 px).
    pub sample_size: Option<SampleSize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock<usize>,
    pub transformer_layers_per_block: PerBlock<usize>,
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    /// In SD v1.x configs this is the number of heads (diffusers' historical naming).
    pub attention_head_dim: PerBlock<usize>,
    pub num_attention_heads: Option<serde_json::Value>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    /// `text_time` (SDXL): a pooled text embedding and six size numbers per image are
    /// embedded and added to the timestep embedding.
    pub addition_embed_type: Option<String>,
    /// Width of each size number's sinusoidal embedding (256 in SDXL).
    pub addition_time_embed_dim: Option<usize>,
    /// Input width of `add_embedding`: pooled text width + 6 × `addition_time_embed_dim`.
    pub projection_class_embeddings_input_dim: Option<usize>,
    pub num_class_embeds: Option<usize>,
    pub class_embeddings_concat: bool,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub time_cond_proj_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub attention_type: String,
    /// Where the config was read from, for error messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `sample_size` is an integer in SD configs, a `[height, width]` pair in some others.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged, expecting = "an integer or a [height, width] pair")]
pub enum SampleSize {
    Square(usize),
    HeightWidth([usize; 2]),
}

impl SampleSize {
    /// Latent (height, width).
    pub fn height_width(self) -> (usize, usize) {
        match self {
            SampleSize::Square(size) => (size, size),
            SampleSize::HeightWidth([h, w]) => (h, w),
        }
    }
}

impl Default for UNetConfig {
    /// diffusers' `UNet2DConditionModel.__init__` defaults.
    fn default() -> Self {
        let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: strings(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: strings(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: PerBlock::Same(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::Same(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::Same(1280),
            transformer_layers_per_block: PerBlock::Same(1),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: PerBlock::Same(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
            num_class_embeds: None,
            class_embeddings_concat: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
            source: None,
        }
    }
}

/// Sizes of one cross-attention stage (a `Transformer2DModel` after each resnet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub transformer_layers: usize,
    pub only_cross_attention: bool,
}

/// One down block: `layers` resnets (each followed by attention when `attention` is set),
/// then a strided-conv downsampler unless it is the last block.
#[derive(Debug, Clone, PartialEq)]
pub struct DownBlockSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub layers: usize,
    pub attention: Option<AttentionSpec>,
    pub add_downsample: bool,
}

/// One up block: `layers` resnets fed with the skip connections, each followed by
/// attention when `attention` is set, then a nearest-neighbour upsampler unless last.
#[derive(Debug, Clone, PartialEq)]
pub struct UpBlockSpec {
    /// Channels of the skip connection taken by the block's last resnet.
    pub in_channels: usize,
    /// Channels coming from the block below.
    pub prev_out_channels: usize,
    pub out_channels: usize,
    pub layers: usize,
    pub attention: Option<AttentionSpec>,
    pub add_upsample: bool,
}

/// SDXL's added conditioning (`addition_embed_type: text_time`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextTimeSpec {
    /// Sinusoidal width of each of the six size numbers.
    pub time_embed_dim: usize,
    /// Width of the pooled text embedding.
    pub text_embed_dim: usize,
}

/// Every size the model needs, resolved from the config and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLayout {
    pub groups: usize,
    pub time_embed_dim: usize,
    /// The added conditioning, when the UNet takes one (SDXL).
    pub text_time: Option<TextTimeSpec>,
    pub down: Vec<DownBlockSpec>,
    /// The mid block's channels and attention.
    pub mid_channels: usize,
    pub mid_attention: AttentionSpec,
    pub up: Vec<UpBlockSpec>,
}

impl UNetConfig {
    /// Reads `unet/config.json` (or any file with that content).
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut config: UNetConfig = read_json(path)?;
        config.source = Some(path.to_path_buf());
        config.layout()?;
        Ok(config)
    }

    fn error(&self, message: impl Into<String>) -> EngineError {
        let path = self
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("unet/config.json"));
        EngineError::config(path, message)
    }

    /// Refuses a key whose value differs from the one plain SD v1.x UNets use.
    fn require_unset<T: std::fmt::Debug>(&self, key: &str, value: &Option<T>) -> Result<()> {
        match value {
            None => Ok(()),
            Some(v) => Err(self.error(format!("`{key}` = {v:?} is not supported (expected null)"))),
        }
    }

    fn require_eq(&self, key: &str, value: &str, supported: &str) -> Result<()> {
        if value == supported {
            Ok(())
        } else {
            Err(self.error(format!(
                "`{key}` = \"{value}\" is not supported (expected \"{supported}\")"
            )))
        }
    }

    fn per_block<T: Clone>(&self, key: &str, value: &PerBlock<T>, n: usize) -> Result<Vec<T>> {
        value
            .expand(n)
            .ok_or_else(|| self.error(format!("`{key}` must have one value per block ({n})")))
    }

    /// Checks the config and resolves the size of every block, as diffusers'
    /// `UNet2DConditionModel.__init__` does. Anything this engine does not build
    /// (class or addition embeddings, other block types, ...) is an `EngineError::Config`.
    pub fn layout(&self) -> Result<UNetLayout> {
        self.check_supported()?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(self.error("`block_out_channels` is empty"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(self.error(format!(
                "`down_block_types` ({}), `up_block_types` ({}) and `block_out_channels` ({n}) \
                 must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| self.error("`norm_num_groups` = null is not supported"))?;
        let heads = self.per_block("attention_head_dim", &self.attention_head_dim, n)?;
        let cross = self.per_block("cross_attention_dim", &self.cross_attention_dim, n)?;
        let layers = self.per_block("layers_per_block", &self.layers_per_block, n)?;
        let depth = self.per_block(
            "transformer_layers_per_block",
            &self.transformer_layers_per_block,
            n,
        )?;
        let only_cross = self.per_block("only_cross_attention", &self.only_cross_attention, n)?;
        let channels = &self.block_out_channels;
        let attention_at = |i: usize| AttentionSpec {
            heads: heads[i],
            cross_attention_dim: cross[i],
            transformer_layers: depth[i],
            only_cross_attention: only_cross[i],
        };

        let mut down = Vec::with_capacity(n);
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let attention = match kind.as_str() {
                "CrossAttnDownBlock2D" => Some(attention_at(i)),
                "DownBlock2D" => None,
                other => return Err(self.unsupported_block("down_block_types", other)),
            };
            down.push(DownBlockSpec {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: channels[i],
                layers: layers[i],
                attention,
                add_downsample: i + 1 < n,
            });
        }

        // Up blocks walk the lists backwards (diffusers' `reversed_*`).
        let mut up = Vec::with_capacity(n);
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let r = n - 1 - i;
            let attention = match kind.as_str() {
                "CrossAttnUpBlock2D" => Some(attention_at(r)),
                "UpBlock2D" => None,
                other => return Err(self.unsupported_block("up_block_types", other)),
            };
            up.push(UpBlockSpec {
                in_channels: channels[r.saturating_sub(1)],
                prev_out_channels: if i == 0 {
                    channels[n - 1]
                } else {
                    channels[r + 1]
                },
                out_channels: channels[r],
                layers: layers[r] + 1,
                attention,
                add_upsample: i + 1 < n,
            });
        }

        let mid_attention = AttentionSpec {
            // diffusers' UNetMidBlock2DCrossAttn never uses only-cross attention.
            only_cross_attention: false,
            ..attention_at(n - 1)
        };
        let layout = UNetLayout {
            groups,
            time_embed_dim: self.time_embedding_dim.unwrap_or(channels[0] * 4),
            text_time: self.text_time()?,
            down,
            mid_channels: channels[n - 1],
            mid_attention,
            up,
        };
        self.check_sizes(&layout)?;
        Ok(layout)
    }

    fn unsupported_block(&self, key: &str, kind: &str) -> EngineError {
        self.error(format!(
            "`{key}` contains \"{kind}\": only CrossAttnDownBlock2D, DownBlock2D, \
             UNetMidBlock2DCrossAttn, UpBlock2D and CrossAttnUpBlock2D are supported"
        ))
    }

    /// The added conditioning's sizes: none, or SDXL's `text_time` with both widths set.
    fn text_time(&self) -> Result<Option<TextTimeSpec>> {
        match self.addition_embed_type.as_deref() {
            None => Ok(None),
            Some("text_time") => {
                let (Some(time), Some(input)) = (
                    self.addition_time_embed_dim,
                    self.projection_class_embeddings_input_dim,
                ) else {
                    return Err(self.error(
                        "`addition_embed_type` = \"text_time\" needs `addition_time_embed_dim` \
                         and `projection_class_embeddings_input_dim`",
                    ));
                };
                if time == 0 || time % 2 != 0 || input <= 6 * time {
                    return Err(self.error(format!(
                        "`projection_class_embeddings_input_dim` {input} must exceed 6 × an even, \
                         positive `addition_time_embed_dim` ({time})"
                    )));
                }
                Ok(Some(TextTimeSpec {
                    time_embed_dim: time,
                    text_embed_dim: input - 6 * time,
                }))
            }
            Some(other) => Err(self.error(format!(
                "`addition_embed_type` = \"{other}\" is not supported (expected null or \"text_time\")"
            ))),
        }
    }

    fn check_supported(&self) -> Result<()> {
        self.require_unset("num_attention_heads", &self.num_attention_heads)?;
        self.require_unset("class_embed_type", &self.class_embed_type)?;
        self.require_unset("num_class_embeds", &self.num_class_embeds)?;
        self.require_unset("encoder_hid_dim", &self.encoder_hid_dim)?;
        self.require_unset("encoder_hid_dim_type", &self.encoder_hid_dim_type)?;
        self.require_unset("time_embedding_act_fn", &self.time_embedding_act_fn)?;
        self.require_unset("timestep_post_act", &self.timestep_post_act)?;
        self.require_unset("time_cond_proj_dim", &self.time_cond_proj_dim)?;
        self.require_unset(
            "reverse_transformer_layers_per_block",
            &self.reverse_transformer_layers_per_block,
        )?;
        if self.dual_cross_attention {
            return Err(self.error("`dual_cross_attention` = true is not supported"));
        }
        if self.class_embeddings_concat {
            return Err(self.error("`class_embeddings_concat` = true is not supported"));
        }
        let mid = self.mid_block_type.as_deref().unwrap_or("null");
        self.require_eq("mid_block_type", mid, "UNetMidBlock2DCrossAttn")?;
        self.require_eq("act_fn", &self.act_fn, "silu")?;
        self.require_eq(
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
            "default",
        )?;
        self.require_eq(
            "time_embedding_type",
            &self.time_embedding_type,
            "positional",
        )?;
        self.require_eq("attention_type", &self.attention_type, "default")?;
        for (key, kernel) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if kernel % 2 == 0 {
                return Err(self.error(format!("`{key}` = {kernel} must be odd")));
            }
        }
        Ok(())
    }

    /// Sizes that would only fail deep inside a forward pass, checked up front.
    fn check_sizes(&self, layout: &UNetLayout) -> Result<()> {
        let groups = layout.groups;
        if groups == 0 {
            return Err(self.error("`norm_num_groups` must be positive"));
        }
        for &c in &self.block_out_channels {
            if c == 0 || c % groups != 0 {
                return Err(self.error(format!(
                    "block channels {c} are not a positive multiple of norm_num_groups {groups}"
                )));
            }
        }
        let attentions = layout
            .down
            .iter()
            .filter_map(|b| b.attention.map(|a| (b.out_channels, a)))
            .chain(
                layout
                    .up
                    .iter()
                    .filter_map(|b| b.attention.map(|a| (b.out_channels, a))),
            )
            .chain(std::iter::once((layout.mid_channels, layout.mid_attention)));
        for (c, a) in attentions {
            if a.heads == 0 || c % a.heads != 0 {
                return Err(self.error(format!(
                    "{c} channels cannot be split into {} attention heads",
                    a.heads
                )));
            }
            if a.cross_attention_dim == 0 || a.transformer_layers == 0 {
                return Err(self.error(
                    "`cross_attention_dim` and `transformer_layers_per_block` must be positive",
                ));
            }
        }
        if layout.down.iter().any(|b| b.layers == 0) {
            return Err(self.error("`layers_per_block` must be positive"));
        }
        Ok(())
    }

    /// The widest context this UNet attends to (the text encoder's hidden size).
    pub fn context_dim(&self) -> Option<usize> {
        match &self.cross_attention_dim {
            PerBlock::Same(d) => Some(*d),
            PerBlock::Each(ds) => ds.iter().copied().max(),
        }
    }

    /// How many times the UNet halves the latent (one per down block but the last).
    pub fn downsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> UNetConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn empty_config_takes_diffusers_defaults() {
        let layout = parse("{}").layout().unwrap();
        assert_eq!(layout.time_embed_dim, 1280);
        assert_eq!(layout.down.len(), 4);
        assert_eq!(layout.down[3].attention, None);
        assert_eq!(layout.mid_attention.heads, 8);
        // First up block: 1280 in from the mid block, last skip from block 2 (1280 ch).
        assert_eq!(layout.up[0].prev_out_channels, 1280);
        assert_eq!(layout.up[0].in_channels, 1280);
        assert_eq!(layout.up[0].layers, 3);
        // Last up block: skips from block 0 (320 ch), input from the 640-channel block.
        assert_eq!(layout.up[3].in_channels, 320);
        assert_eq!(layout.up[3].prev_out_channels, 640);
        assert!(!layout.up[3].add_upsample);
    }

    #[test]
    fn per_block_lists_are_reversed_for_up_blocks() {
        let config =
            parse(r#"{"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024}"#);
        let layout = config.layout().unwrap();
        assert_eq!(layout.down[0].attention.unwrap().heads, 5);
        assert_eq!(layout.up[3].attention.unwrap().heads, 5);
        assert_eq!(layout.up[1].attention.unwrap().heads, 20);
        assert_eq!(layout.mid_attention.heads, 20);
    }

    #[test]
    fn unsupported_settings_are_refused() {
        for json in [
            r#"{"addition_embed_type": "text_time"}"#,
            r#"{"addition_embed_type": "text", "projection_class_embeddings_input_dim": 64}"#,
            r#"{"class_embed_type": "timestep"}"#,
            r#"{"num_attention_heads": 8}"#,
            r#"{"down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
            r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
            r#"{"resnet_time_scale_shift": "scale_shift"}"#,
            r#"{"attention_head_dim": [8, 8]}"#,
            r#"{"block_out_channels": [320, 640, 1280, 1000]}"#,
        ] {
            let err = parse(json).layout().unwrap_err();
            assert!(matches!(err, EngineError::Config { .. }), "{json}: {err}");
        }
    }
}
