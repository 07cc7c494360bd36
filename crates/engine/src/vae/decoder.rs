//! diffusers' `Decoder` of `AutoencoderKL` (SD v1.x layout): `conv_in`, a mid block
//! (resnet, attention, resnet), one `UpDecoderBlock2D` per entry of `block_out_channels`
//! (from the widest), then group norm, SiLU and `conv_out`. Every row of a batch is
//! decoded on its own, as if it were alone.

use super::attention::VaeAttention;
use super::VaeConfig;
use crate::layers::{Conv2d, GroupNorm, ResnetBlock2D, ResnetSpec};
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
        self.upper(&self.front(latents)?)
    }

    /// The part at latent resolution that needs the whole latent: `conv_in` and the mid
    /// block (its attention reads every position) → [b, widest, h, w].
    pub(super) fn front(&self, latents: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(latents)?;
        let xs = self.mid_first.forward(&xs, None)?;
        let xs = self.mid_attention.forward(&xs)?;
        self.mid_second.forward(&xs, None)
    }

    /// The rest, convolutions and group norms only, on the whole image.
    pub(super) fn upper(&self, front: &Tensor) -> Result<Tensor> {
        let mut xs = front.clone();
        for stage in self.upper_stages() {
            xs = match stage {
                UpperStage::Resnet(resnet) => resnet.forward(&xs, None)?,
                UpperStage::Upsample(conv) => {
                    let (_, _, h, w) = xs.dims4()?;
                    conv.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?)?
                }
                UpperStage::Output { norm, conv } => conv.forward(&norm.forward_silu(&xs)?)?,
            };
        }
        Ok(xs)
    }

    /// [`Self::upper`]'s layers in the order they run, for the whole-image decode and the
    /// banded one to share.
    pub(super) fn upper_stages(&self) -> Vec<UpperStage<'_>> {
        let mut stages = Vec::new();
        for block in &self.up_blocks {
            stages.extend(block.resnets.iter().map(UpperStage::Resnet));
            stages.extend(block.upsampler.iter().map(UpperStage::Upsample));
        }
        stages.push(UpperStage::Output {
            norm: &self.conv_norm_out,
            conv: &self.conv_out,
        });
        stages
    }
}

/// One step of the decoder above its front; each 3×3 convolution reads one row above and
/// below, which is all banded decoding needs to know about the layers.
pub(super) enum UpperStage<'a> {
    /// A resnet block (two norms, two 3×3 convolutions, a shortcut).
    Resnet(&'a ResnetBlock2D),
    /// Nearest ×2, then this 3×3 convolution.
    Upsample(&'a Conv2d),
    /// Group norm, SiLU, then this 3×3 convolution into pixels.
    Output {
        norm: &'a GroupNorm,
        conv: &'a Conv2d,
    },
}
