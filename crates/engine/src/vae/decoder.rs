//! diffusers' `Decoder` of `AutoencoderKL` (SD v1.x layout): `conv_in`, a mid block
//! (resnet, attention, resnet), one `UpDecoderBlock2D` per entry of `block_out_channels`
//! (from the widest), then group norm, SiLU and `conv_out`. Every row of a batch is
//! decoded on its own, as if it were alone.

use super::attention::VaeAttention;
use super::VaeConfig;
use crate::layers::{Conv2d, GroupNorm, Normalise, OwnStatistics, ResnetBlock2D, ResnetSpec};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// diffusers builds every VAE resnet and norm with this epsilon.
const EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_first: ResnetBlock2D,
    mid_attention: VaeAttention,
    mid_second: ResnetBlock2D,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// `layers_per_block + 1` resnets, then nearest ×2 and a 3×3 convolution except in the
/// last block.
#[derive(Debug, Clone)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Conv2d>,
}

impl Decoder {
    /// Loads the decoder from `vb` (diffusers' `decoder.*` names, without the prefix).
    pub fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        let groups = config.norm_num_groups;
        let resnet = |vb: VarBuilder, in_channels: usize, out_channels: usize| {
            let spec = ResnetSpec {
                in_channels,
                out_channels,
                temb_channels: None,
                groups,
                eps: EPS,
                output_scale_factor: 1.0,
            };
            ResnetBlock2D::new(vb, spec)
        };
        let widest = *config.block_out_channels.last().expect("checked non-empty");
        let mid = vb.pp("mid_block");
        let mut up_blocks = Vec::with_capacity(config.block_out_channels.len());
        let mut channels = widest;
        for (i, &out_channels) in config.block_out_channels.iter().rev().enumerate() {
            let vb = vb.pp(format!("up_blocks.{i}"));
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    let in_channels = if j == 0 { channels } else { out_channels };
                    resnet(vb.pp(format!("resnets.{j}")), in_channels, out_channels)
                })
                .collect::<Result<Vec<_>>>()?;
            let is_last = i + 1 == config.block_out_channels.len();
            let upsampler = (!is_last)
                .then(|| {
                    Conv2d::load(
                        vb.pp("upsamplers.0.conv"),
                        out_channels,
                        out_channels,
                        3,
                        1,
                        1,
                    )
                })
                .transpose()?;
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
            channels = out_channels;
        }
        let narrowest = config.block_out_channels[0];
        Ok(Self {
            conv_in: Conv2d::load(vb.pp("conv_in"), config.latent_channels, widest, 3, 1, 1)?,
            mid_first: resnet(mid.pp("resnets.0"), widest, widest)?,
            mid_attention: VaeAttention::new(mid.pp("attentions.0"), widest, groups, EPS)?,
            mid_second: resnet(mid.pp("resnets.1"), widest, widest)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(vb.pp("conv_norm_out"), groups, narrowest, EPS)?,
            conv_out: Conv2d::load(vb.pp("conv_out"), narrowest, config.out_channels, 3, 1, 1)?,
        })
    }

    /// `latents` [b, latent_channels, h, w] in the VAE's own latent space (already divided
    /// by the scaling factor) → [b, out_channels, h·2^(n−1), w·2^(n−1)].
    pub fn forward(&self, latents: &Tensor) -> Result<Tensor> {
        self.upper(&self.front(latents)?, &mut OwnStatistics)
    }

    /// The part at latent resolution that needs the whole latent: `conv_in` and the mid
    /// block (its attention reads every position) → [b, widest, h, w].
    pub(super) fn front(&self, latents: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(latents)?;
        let xs = self.mid_first.forward(&xs, None)?;
        let xs = self.mid_attention.forward(&xs)?;
        self.mid_second.forward(&xs, None)
    }

    /// The rest, convolutions and group norms only (so it can run on a tile of the
    /// front's output), with the norms' statistics from `norms`.
    pub(super) fn upper(&self, front: &Tensor, norms: &mut dyn Normalise) -> Result<Tensor> {
        let mut xs = front.clone();
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                xs = resnet.forward_normalised(&xs, None, norms)?;
            }
            if let Some(conv) = &block.upsampler {
                let (_, _, h, w) = xs.dims4()?;
                xs = conv.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?)?;
            }
        }
        let xs = norms.norm_silu(&self.conv_norm_out, &xs)?;
        self.conv_out.forward(&xs)
    }

    /// How far, in latent cells, an output pixel of [`Self::upper`] can see: every 3×3
    /// convolution reaches one cell of its own resolution further. A tile decoded with
    /// this margin around its own region gives that region as the whole image would.
    pub(super) fn upper_reach(&self) -> usize {
        let mut reach = 0.0;
        let mut cell = 1.0; // one activation cell, in latent cells
        for block in &self.up_blocks {
            reach += block.resnets.len() as f64 * 2.0 * cell;
            if block.upsampler.is_some() {
                cell /= 2.0;
                reach += cell;
            }
        }
        // conv_out.
        reach += cell;
        // Nearest upsampling rounds a position down: one more cell covers it.
        reach.ceil() as usize + 1
    }
}
