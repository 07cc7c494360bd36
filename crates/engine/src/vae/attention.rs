//! The single-head self-attention in the VAE decoder's mid block (diffusers' `Attention`
//! with one head of all the channels, group norm in front, residual added).

use crate::layers::fused_attention;
use crate::layers::GroupNorm;
use candle_core::{Module, Result, Tensor};
use candle_nn::{self as nn, VarBuilder};

#[derive(Debug, Clone)]
pub struct VaeAttention {
    group_norm: GroupNorm,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    channels: usize,
}

impl VaeAttention {
    /// Reads diffusers' names (`to_q`, `to_k`, `to_v`, `to_out.0`) or those of checkpoints
    /// saved before diffusers 0.14 (`query`, `key`, `value`, `proj_attn`).
    pub fn new(vb: VarBuilder, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        let linear = |name: &str| projection(vb.pp(name), channels);
        Ok(Self {
            group_norm: GroupNorm::load(vb.pp("group_norm"), groups, channels, eps)?,
            to_q: linear(names[0])?,
            to_k: linear(names[1])?,
            to_v: linear(names[2])?,
            to_out: linear(names[3])?,
            channels,
        })
    }

    /// `xs` [b, c, h, w] → the same shape. Every row of the batch attends only to itself.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let tokens = self
            .group_norm
            .forward(xs)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.to_q.forward(&tokens)?;
        let k = self.to_k.forward(&tokens)?;
        let v = self.to_v.forward(&tokens)?;
        let q = (q * (1.0 / (self.channels as f64).sqrt()))?;
        let out = self
            .to_out
            .forward(&fused_attention::attention(&q, &k, &v)?)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        out + xs
    }
}

/// A channels × channels projection, stored as a matrix or (older checkpoints) as a
/// 1×1 convolution kernel.
fn projection(vb: VarBuilder, channels: usize) -> Result<nn::Linear> {
    let weight = match vb.get((channels, channels), "weight") {
        Ok(weight) => weight,
        Err(_) => vb
            .get((channels, channels, 1, 1), "weight")?
            .reshape((channels, channels))?,
    };
    Ok(nn::Linear::new(weight, Some(vb.get(channels, "bias")?)))
}
