//! The UNet's down, mid and up blocks (diffusers' `CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`), with every size taken
//! from the resolved config, group count included.

use super::attention::Transformer2DModel;
use super::config::{AttentionSpec, DownBlockSpec, UNetLayout, UpBlockSpec};
use crate::layers::{Conv2d, ResnetBlock2D, ResnetSpec};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Settings shared by every block of one UNet.
#[derive(Debug, Clone, Copy)]
pub struct BlockContext {
    pub groups: usize,
    pub eps: f64,
    pub time_embed_dim: usize,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl BlockContext {
    /// Settings of every block of the model described by `layout`.
    pub fn new(layout: &UNetLayout, eps: f64, use_linear_projection: bool, upcast: bool) -> Self {
        Self {
            groups: layout.groups,
            eps,
            time_embed_dim: layout.time_embed_dim,
            use_linear_projection,
            upcast_attention: upcast,
        }
    }

    fn resnet(
        &self,
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        output_scale_factor: f64,
    ) -> Result<ResnetBlock2D> {
        let spec = ResnetSpec {
            in_channels,
            out_channels,
            temb_channels: Some(self.time_embed_dim),
            groups: self.groups,
            eps: self.eps,
            output_scale_factor,
        };
        ResnetBlock2D::new(vb, spec)
    }

    fn attentions(
        &self,
        vb: VarBuilder,
        count: usize,
        channels: usize,
        spec: Option<&AttentionSpec>,
    ) -> Result<Vec<Transformer2DModel>> {
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        (0..count)
            .map(|i| {
                Transformer2DModel::new(
                    vb.pp(i.to_string()),
                    channels,
                    self.groups,
                    spec,
                    self.use_linear_projection,
                    self.upcast_attention,
                )
            })
            .collect()
    }
}

/// A 3×3 convolution with stride 2 (`downsamplers.0.conv`).
#[derive(Debug)]
struct Downsample {
    conv: Conv2d,
    /// diffusers pads right and bottom by one when the conv itself has no padding.
    pad_bottom_right: bool,
}

impl Downsample {
    fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_bottom_right: padding == 0,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.pad_bottom_right {
            let xs = xs
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&xs)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// Nearest-neighbour ×2 (or to the skip connection's size) then a 3×3 convolution.
#[derive(Debug)]
struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (h, w) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&xs.upsample_nearest2d(h, w)?)
    }
}

/// A down block: resnets (each followed by a transformer in cross-attention blocks),
/// then an optional downsampler. Every intermediate output is a skip connection.
#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample>,
}

impl DownBlock {
    pub fn new(
        vb: VarBuilder,
        spec: &DownBlockSpec,
        ctx: &BlockContext,
        downsample_padding: usize,
    ) -> Result<Self> {
        let resnets = (0..spec.layers)
            .map(|i| {
                let in_channels = if i == 0 {
                    spec.in_channels
                } else {
                    spec.out_channels
                };
                ctx.resnet(
                    vb.pp(format!("resnets.{i}")),
                    in_channels,
                    spec.out_channels,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = ctx.attentions(
            vb.pp("attentions"),
            spec.layers,
            spec.out_channels,
            spec.attention.as_ref(),
        )?;
        let downsampler = if spec.add_downsample {
            Some(Downsample::new(
                vb.pp("downsamplers.0"),
                spec.out_channels,
                downsample_padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block's output and the skip connections it adds, in order.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut xs = xs.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attention) = self.attentions.get(i) {
                xs = attention.forward(&xs, context)?;
            }
            skips.push(xs.clone());
        }
        if let Some(downsampler) = &self.downsampler {
            xs = downsampler.forward(&xs)?;
            skips.push(xs.clone());
        }
        Ok((xs, skips))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) once.
#[derive(Debug)]
pub struct MidBlock {
    first: ResnetBlock2D,
    attention: Transformer2DModel,
    second: ResnetBlock2D,
}

impl MidBlock {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        spec: &AttentionSpec,
        ctx: &BlockContext,
        output_scale_factor: f64,
    ) -> Result<Self> {
        let mut attentions = ctx.attentions(vb.pp("attentions"), 1, channels, Some(spec))?;
        Ok(Self {
            first: ctx.resnet(vb.pp("resnets.0"), channels, channels, output_scale_factor)?,
            attention: attentions.remove(0),
            second: ctx.resnet(vb.pp("resnets.1"), channels, channels, output_scale_factor)?,
        })
    }

    pub fn forward(&self, xs: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = self.first.forward(xs, Some(temb))?;
        let xs = self.attention.forward(&xs, context)?;
        self.second.forward(&xs, Some(temb))
    }
}

/// An up block: each resnet takes the running tensor concatenated with one skip
/// connection (latest first), followed by a transformer in cross-attention blocks; then
/// an optional upsampler.
#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample>,
}

impl UpBlock {
    pub fn new(vb: VarBuilder, spec: &UpBlockSpec, ctx: &BlockContext) -> Result<Self> {
        let resnets = (0..spec.layers)
            .map(|i| {
                let skip = if i + 1 == spec.layers {
                    spec.in_channels
                } else {
                    spec.out_channels
                };
                let running = if i == 0 {
                    spec.prev_out_channels
                } else {
                    spec.out_channels
                };
                ctx.resnet(
                    vb.pp(format!("resnets.{i}")),
                    running + skip,
                    spec.out_channels,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = ctx.attentions(
            vb.pp("attentions"),
            spec.layers,
            spec.out_channels,
            spec.attention.as_ref(),
        )?;
        let upsampler = if spec.add_upsample {
            Some(Upsample::new(vb.pp("upsamplers.0"), spec.out_channels)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip connections the block consumes.
    pub fn skips_needed(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are this block's skip connections in the order the down path made them;
    /// the last one is used first. `upsample_size` forces the upsampler's output size
    /// (when the latent size is not a multiple of the total downsampling).
    pub fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            xs = Tensor::cat(&[&xs, skip], 1)?;
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attention) = self.attentions.get(i) {
                xs = attention.forward(&xs, context)?;
            }
        }
        match &self.upsampler {
            Some(upsampler) => upsampler.forward(&xs, upsample_size),
            None => Ok(xs),
        }
    }
}
