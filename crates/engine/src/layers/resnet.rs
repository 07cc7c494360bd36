//! diffusers' `ResnetBlock2D`, for the UNet (with a timestep embedding) and the VAE
//! (without): group norm, SiLU, 3×3 convolution, twice, plus a shortcut that the second
//! convolution adds onto inside its matrix product.

use super::conv::Conv2d;
use super::group_norm::{GroupNorm, GroupStatistics};
use candle_core::{Module, Result, Tensor};
use candle_nn::{self as nn, VarBuilder};

/// The sizes of one resnet block.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the timestep embedding projected into the block (the UNet's); `None` in
    /// the VAE.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    /// The sum is divided by this (1 in every SD v1.x model).
    pub output_scale_factor: f64,
}

/// How a group norm followed by SiLU gets its statistics. Blocks normalise each input over
/// itself ([`OwnStatistics`]); banded VAE decoding gives each band the whole image's
/// ([`GivenStatistics`]).
pub trait Normalise {
    fn norm_silu(&self, norm: &GroupNorm, xs: &Tensor) -> Result<Tensor>;
}

/// Each input normalised over itself, as PyTorch's `GroupNorm`.
pub struct OwnStatistics;

impl Normalise for OwnStatistics {
    fn norm_silu(&self, norm: &GroupNorm, xs: &Tensor) -> Result<Tensor> {
        norm.forward_silu(xs)
    }
}

/// Every input normalised with statistics gathered elsewhere (the whole image's, for one
/// band of it): they belong to one norm, so a block's two norms take two of these.
pub struct GivenStatistics<'a>(pub &'a GroupStatistics);

impl Normalise for GivenStatistics<'_> {
    fn norm_silu(&self, norm: &GroupNorm, xs: &Tensor) -> Result<Tensor> {
        norm.forward_with_statistics(xs, self.0, true)
    }
}

#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<nn::Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// A 1×1 convolution when the block changes the channel count.
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Loads the block from diffusers' names under `vb` (`norm1`, `conv1`, …).
    pub fn new(vb: VarBuilder, spec: ResnetSpec) -> Result<Self> {
        let (c_in, c_out) = (spec.in_channels, spec.out_channels);
        let time_emb_proj = spec
            .temb_channels
            .map(|temb| nn::linear(temb, c_out, vb.pp("time_emb_proj")))
            .transpose()?;
        let conv_shortcut = (c_in != c_out)
            .then(|| Conv2d::load(vb.pp("conv_shortcut"), c_in, c_out, 1, 1, 0))
            .transpose()?;
        Ok(Self {
            norm1: GroupNorm::load(vb.pp("norm1"), spec.groups, c_in, spec.eps)?,
            conv1: Conv2d::load(vb.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::load(vb.pp("norm2"), spec.groups, c_out, spec.eps)?,
            conv2: Conv2d::load(vb.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor: spec.output_scale_factor,
        })
    }

    /// `xs` [b, c_in, h, w]; `temb` [b, temb_channels] when the block was built with one.
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.first_half(xs, temb, &OwnStatistics)?;
        self.second_half(xs, &hidden, &OwnStatistics)
    }

    /// The block up to its second norm: `conv1(silu(norm1(xs)))` plus the projected
    /// timestep embedding. Banded VAE decoding needs this on its own, to gather the second
    /// norm's statistics over the whole image before any band goes further.
    pub fn first_half(
        &self,
        xs: &Tensor,
        temb: Option<&Tensor>,
        norms: &dyn Normalise,
    ) -> Result<Tensor> {
        let hidden = self.conv1.forward(&norms.norm_silu(&self.norm1, xs)?)?;
        match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                let temb = proj.forward(&nn::ops::silu(temb)?)?;
                hidden.broadcast_add(&temb.unsqueeze(2)?.unsqueeze(3)?)
            }
            (None, None) => Ok(hidden),
            (Some(_), None) => candle_core::bail!("resnet block: timestep embedding missing"),
            (None, Some(_)) => {
                candle_core::bail!("resnet block: built without a timestep embedding")
            }
        }
    }

    /// The rest of the block, from [`Self::first_half`]'s `hidden` for the same `xs`:
    /// `conv2(silu(norm2(hidden)))` plus the shortcut of `xs`.
    pub fn second_half(
        &self,
        xs: &Tensor,
        hidden: &Tensor,
        norms: &dyn Normalise,
    ) -> Result<Tensor> {
        let hidden = norms.norm_silu(&self.norm2, hidden)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        let out = self.conv2.forward_add(&hidden, &shortcut)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }

    /// The first norm, which reads the block's input (banded decoding gathers its
    /// statistics).
    pub fn norm1(&self) -> &GroupNorm {
        &self.norm1
    }

    /// The second norm, which reads [`Self::first_half`]'s output.
    pub fn norm2(&self) -> &GroupNorm {
        &self.norm2
    }
}
