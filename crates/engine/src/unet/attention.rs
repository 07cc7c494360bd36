//! The UNet's attention path, as diffusers builds it for SD v1.x: multi-head attention,
//! the GEGLU feed-forward (exact erf GELU), `BasicTransformerBlock`, and the
//! `Transformer2DModel` that wraps them between two projections.

use super::config::AttentionSpec;
use super::row_linear::RowLinear;
use crate::layers::softmax::softmax_last_dim_in_place;
use crate::layers::{fused_attention, geglu};
use crate::layers::{Conv2d, GroupNorm};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{self as nn, VarBuilder};

/// The most attention scores computed at once. At 512 px the first stage has 4096
/// queries and 4096 keys per head: 16 heads × 4096² f32 scores would be 1 GiB, so
/// queries are processed in chunks that keep the score matrix under this size.
const MAX_SCORES_PER_CHUNK: usize = 1 << 26;

/// Multi-head attention: self-attention when no context is given, else cross-attention
/// (keys and values from the text encoder's hidden states).
#[derive(Debug)]
pub struct Attention {
    to_q: RowLinear,
    to_k: RowLinear,
    to_v: RowLinear,
    to_out: RowLinear,
    heads: usize,
    scale: f64,
    /// diffusers' `upcast_attention`: scores and softmax in f32 whatever the weights.
    upcast: bool,
}

impl Attention {
    /// `context_dim` is `None` for self-attention (keys come from the query input).
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        upcast: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let context_dim = context_dim.unwrap_or(query_dim);
        Ok(Self {
            to_q: RowLinear::new(nn::linear_no_bias(query_dim, inner, vb.pp("to_q"))?)?,
            to_k: RowLinear::new(nn::linear_no_bias(context_dim, inner, vb.pp("to_k"))?)?,
            to_v: RowLinear::new(nn::linear_no_bias(context_dim, inner, vb.pp("to_v"))?)?,
            to_out: RowLinear::new(nn::linear(inner, query_dim, vb.pp("to_out.0"))?)?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
            upcast,
        })
    }

    /// `xs` [b, n, query_dim], `context` [b, m, context_dim] → [b, n, query_dim].
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(xs);
        // Scaling q (n × d) is cheaper than scaling the scores (n × m).
        let q = self.split_heads(&(self.to_q.forward(xs)? * self.scale)?)?;
        let k = self.split_heads(&self.to_k.forward(context)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let out = self.scaled_dot_product(&q, &k, &v)?;
        self.to_out.forward(&self.merge_heads(&out)?)
    }

    /// [b, n, h·d] → [b·h, n, d], contiguous for the batched matmuls.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, inner) = xs.dims3()?;
        xs.reshape((b, n, self.heads, inner / self.heads))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * self.heads, n, inner / self.heads))
    }

    /// [b·h, n, d] → [b, n, h·d].
    fn merge_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (bh, n, d) = xs.dims3()?;
        xs.reshape((bh / self.heads, self.heads, n, d))?
            .transpose(1, 2)?
            .reshape((bh / self.heads, n, self.heads * d))
    }

    /// softmax(q kᵀ) v; q is already scaled. f32 on the CPU goes through the blocked
    /// kernel, which bounds its scores itself; elsewhere, over chunks of queries.
    fn scaled_dot_product(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        if fused_attention::has_cpu_kernel(q, k, v) && k.dim(1)? > 1 {
            return fused_attention::attention(q, k, v);
        }
        let (bh, n, _) = q.dims3()?;
        let m = k.dim(1)?;
        let kt = k.t()?;
        let chunk = (MAX_SCORES_PER_CHUNK / (bh * m).max(1)).clamp(1, n);
        let mut outputs = Vec::with_capacity(n.div_ceil(chunk));
        for start in (0..n).step_by(chunk) {
            let q = q.narrow(1, start, chunk.min(n - start))?;
            outputs.push(self.attend(&q, &kt, v)?);
        }
        if outputs.len() == 1 {
            Ok(outputs.remove(0))
        } else {
            Tensor::cat(&outputs, 1)
        }
    }

    fn attend(&self, q: &Tensor, kt: &Tensor, v: &Tensor) -> Result<Tensor> {
        let dtype = v.dtype();
        // One key (self-attention over a 1×1 latent): the softmax is exactly 1 and the
        // output is the value. Said directly, because candle's batched matmul over such
        // degenerate shapes gives a row a result that depends on the batch size, which
        // would make a batched image differ from the image rendered alone.
        if kt.dim(2)? == 1 {
            let (bh, n, _) = q.dims3()?;
            return v.broadcast_as((bh, n, v.dim(2)?))?.contiguous();
        }
        let scores = if self.upcast && dtype != DType::F32 {
            q.to_dtype(DType::F32)?.matmul(&kt.to_dtype(DType::F32)?)?
        } else {
            q.matmul(kt)?
        };
        let probs = softmax_last_dim_in_place(scores)?.to_dtype(dtype)?;
        probs.matmul(v)
    }
}

/// diffusers' `FeedForward` with `activation_fn = "geglu"`: `net.0` projects to twice the
/// inner width and gates one half with the exact (erf) GELU of the other
/// (`layers::geglu`), `net.2` projects back. (candle-transformers' tanh GELU is 3.6e-4
/// off on the fixture's UNet output.)
#[derive(Debug)]
pub struct GegluFeedForward {
    proj_in: RowLinear,
    proj_out: RowLinear,
}

impl GegluFeedForward {
    /// Inner width is `4 × dim`, as in every SD v1.x UNet.
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: RowLinear::new(nn::linear(dim, inner * 2, vb.pp("net.0.proj"))?)?,
            proj_out: RowLinear::new(nn::linear(inner, dim, vb.pp("net.2"))?)?,
        })
    }
}

impl Module for GegluFeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.proj_out
            .forward(&geglu::geglu(&self.proj_in.forward(xs)?)?)
    }
}

/// diffusers' `BasicTransformerBlock` (layer norms, no ada-norm): self-attention (or
/// cross-attention when `only_cross_attention`), cross-attention, feed-forward, each
/// pre-normalised and residual.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: nn::LayerNorm,
    attn1: Attention,
    /// attn1 attends to the text context instead of itself.
    attn1_uses_context: bool,
    norm2: nn::LayerNorm,
    attn2: Attention,
    norm3: nn::LayerNorm,
    ff: GegluFeedForward,
}

impl BasicTransformerBlock {
    pub fn new(vb: VarBuilder, dim: usize, spec: &AttentionSpec, upcast: bool) -> Result<Self> {
        let head_dim = dim / spec.heads;
        let cross = Some(spec.cross_attention_dim);
        let attn1_context = spec
            .only_cross_attention
            .then_some(spec.cross_attention_dim);
        Ok(Self {
            norm1: nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(
                vb.pp("attn1"),
                dim,
                attn1_context,
                spec.heads,
                head_dim,
                upcast,
            )?,
            attn1_uses_context: spec.only_cross_attention,
            norm2: nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, cross, spec.heads, head_dim, upcast)?,
            norm3: nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: GegluFeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    /// `xs` [b, n, dim], `context` [b, m, cross_attention_dim].
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let attn1_context = self.attn1_uses_context.then_some(context);
        let xs = (self
            .attn1
            .forward(&self.norm1.forward(xs)?, attn1_context)?
            + xs)?;
        let xs = (self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + xs)?;
        self.ff.forward(&self.norm3.forward(&xs)?)? + xs
    }
}

/// `proj_in`/`proj_out`: 1×1 convolutions in SD v1, linear layers when the config sets
/// `use_linear_projection` (SD v2).
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(RowLinear),
}

/// diffusers' `Transformer2DModel` for continuous input: group norm, `proj_in`, a stack of
/// [`BasicTransformerBlock`]s over the h·w positions, `proj_out`, residual.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    /// `channels` in and out; the inner width equals `channels` in SD (heads × head_dim).
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        groups: usize,
        spec: &AttentionSpec,
        use_linear_projection: bool,
        upcast: bool,
    ) -> Result<Self> {
        let inner = channels;
        let projection = |vb: VarBuilder, from: usize, to: usize| -> Result<Projection> {
            Ok(if use_linear_projection {
                Projection::Linear(RowLinear::new(nn::linear(from, to, vb)?)?)
            } else {
                Projection::Conv(Conv2d::load(vb, from, to, 1, 1, 0)?)
            })
        };
        let blocks = (0..spec.transformer_layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    inner,
                    spec,
                    upcast,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in: projection(vb.pp("proj_in"), channels, inner)?,
            blocks,
            proj_out: projection(vb.pp("proj_out"), inner, channels)?,
        })
    }

    /// `xs` [b, c, h, w], `context` [b, m, cross_attention_dim] → [b, c, h, w].
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let normed = self.norm.forward(xs)?;
        // [b, c, h, w] → [b, h·w, c], projecting before or after the move.
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(1)?;
            t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(linear) => linear.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_image = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(2)?;
            t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()
        };
        match &self.proj_out {
            // The residual is added inside the 1×1 convolution's matrix product.
            Projection::Conv(conv) => conv.forward_add(&to_image(&tokens)?, xs),
            Projection::Linear(linear) => to_image(&linear.forward(&tokens)?)? + xs,
        }
    }
}
