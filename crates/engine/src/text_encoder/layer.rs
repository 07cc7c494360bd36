//! One CLIP encoder layer (pre-norm attention and MLP), with the hooks ReFACT needs.

use super::config::{Activation, ClipTextConfig};
use super::frozen_matmul::FrozenRhs;
use crate::deltas::LowRankTerms;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

/// How tensors flow through the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fused kernels (layer norm, softmax) that have no backward pass.
    Inference,
    /// Ops that candle can differentiate, with weights treated as constants. The fused
    /// layer norm and softmax have no backward and would silently drop the gradient
    /// (CANDLE-NOTES.md), so they are composed from elementary ops here.
    Differentiable,
}

/// Lets a caller see, and change, the MLP's second projection of one layer.
pub trait Fc2Hook {
    /// Called with fc2's input [b, t, inner] and output [b, t, hidden]; returns the output
    /// the layer continues with.
    fn fc2(&mut self, input: &Tensor, output: Tensor) -> Result<Tensor>;
}

/// A linear layer with constant weights: `x Wᵀ + b`.
#[derive(Debug, Clone)]
pub(crate) struct FrozenLinear {
    weight_t: FrozenRhs,
    bias: Tensor,
}

impl FrozenLinear {
    fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Ok(Self {
            weight_t: FrozenRhs::new(weight.t()?)?,
            bias,
        })
    }

    /// Applies the layer to `x` [.., in] (any number of leading dims).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let last = dims[dims.len() - 1];
        let rows = x.elem_count() / last;
        let y = self.weight_t.apply(&x.reshape((rows, last))?)?;
        let y = y.broadcast_add(&self.bias)?;
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = y.dim(1)?;
        y.reshape(out_dims)
    }

    /// The weight as stored, [out, in].
    pub(crate) fn weight(&self) -> Result<Tensor> {
        self.weight_t.rhs().t()
    }

    /// The same layer with another weight [out, in].
    pub(crate) fn with_weight(&self, weight: Tensor) -> Result<Self> {
        Ok(Self {
            weight_t: FrozenRhs::new(weight.t()?)?,
            bias: self.bias.clone(),
        })
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight_t: FrozenRhs::new(self.weight_t.rhs().to_dtype(dtype)?)?,
            bias: self.bias.to_dtype(dtype)?,
        })
    }
}

/// Layer norm over the last dimension with an affine transform.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    pub(crate) fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub(crate) fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight: self.weight.to_dtype(dtype)?,
            bias: self.bias.to_dtype(dtype)?,
            eps: self.eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        // The fused kernel has no f64 version (gradient checks run in f64).
        let fused = mode == Mode::Inference && x.dtype() != DType::F64;
        match fused {
            true => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32),
            false => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                normed
                    .broadcast_mul(&self.weight)?
                    .broadcast_add(&self.bias)
            }
        }
    }
}

/// Causal self-attention.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: FrozenLinear,
    k_proj: FrozenLinear,
    v_proj: FrozenLinear,
    out_proj: FrozenLinear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, config: &ClipTextConfig) -> Result<Self> {
        let d = config.hidden_size;
        Ok(Self {
            q_proj: FrozenLinear::load(vb.pp("q_proj"), d, d)?,
            k_proj: FrozenLinear::load(vb.pp("k_proj"), d, d)?,
            v_proj: FrozenLinear::load(vb.pp("v_proj"), d, d)?,
            out_proj: FrozenLinear::load(vb.pp("out_proj"), d, d)?,
            heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        })
    }

    /// [b, t, d] → [b, heads, t, head_dim]
    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            q_proj: self.q_proj.to_dtype(dtype)?,
            k_proj: self.k_proj.to_dtype(dtype)?,
            v_proj: self.v_proj.to_dtype(dtype)?,
            out_proj: self.out_proj.to_dtype(dtype)?,
            heads: self.heads,
            head_dim: self.head_dim,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Attention of the query rows `queries` [b, tq, d] over the key/value rows `context`
    /// [b, tk, d]; `mask` [tq, tk] is added to the scores.
    fn forward(
        &self,
        queries: &Tensor,
        context: &Tensor,
        mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, tq, d) = queries.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&(self.q_proj.forward(queries)? * scale)?)?;
        let k = self.split_heads(&self.k_proj.forward(context)?)?;
        let v = self.split_heads(&self.v_proj.forward(context)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = match mode {
            Mode::Inference => candle_nn::ops::softmax_last_dim(&scores)?,
            Mode::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, tq, d))?;
        self.out_proj.forward(&out)
    }
}

/// How [`EncoderLayer::forward_packed`] lays out rows. The input is `n` packed rows
/// (some rows of each of `batch` prompts); keys and values are rebuilt per prompt over
/// `width` positions from a cache of `batch·width` rows followed by the `n` packed rows.
#[derive(Debug, Clone)]
pub(crate) struct PackedRows {
    pub batch: usize,
    pub width: usize,
    pub queries_per_item: usize,
    /// [batch·width] u32: per prompt and position, a row of cat(cache, packed input).
    pub kv_rows: Tensor,
    /// [batch·queries_per_item] u32: packed input rows used as queries (padding repeats one).
    pub query_rows: Tensor,
    /// [outputs] u32: which of the batch·queries_per_item query results are the output rows.
    pub output_rows: Tensor,
    /// Packed input rows that the outputs add to (None: every input row, in order).
    pub residual_rows: Option<Tensor>,
    /// [batch, 1, queries_per_item, width]: 0 where a query may look, the minimum elsewhere.
    pub mask: Tensor,
}

/// One pre-norm transformer layer: `x + attn(ln1 x)`, then `x + mlp(ln2 x)`.
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    layer_norm1: Norm,
    self_attn: Attention,
    layer_norm2: Norm,
    pub(crate) fc1: FrozenLinear,
    pub(crate) fc2: FrozenLinear,
    activation: Activation,
}

impl EncoderLayer {
    pub(crate) fn load(vb: VarBuilder, config: &ClipTextConfig) -> Result<Self> {
        let eps = config.layer_norm_eps;
        let (d, inner) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            layer_norm1: Norm::load(vb.pp("layer_norm1"), d, eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), config)?,
            layer_norm2: Norm::load(vb.pp("layer_norm2"), d, eps)?,
            fc1: FrozenLinear::load(vb.pp("mlp").pp("fc1"), d, inner)?,
            fc2: FrozenLinear::load(vb.pp("mlp").pp("fc2"), inner, d)?,
            activation: config.hidden_act,
        })
    }

    pub(crate) fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            layer_norm1: self.layer_norm1.to_dtype(dtype)?,
            self_attn: self.self_attn.to_dtype(dtype)?,
            layer_norm2: self.layer_norm2.to_dtype(dtype)?,
            fc1: self.fc1.to_dtype(dtype)?,
            fc2: self.fc2.to_dtype(dtype)?,
            activation: self.activation,
        })
    }

    /// Runs the layer on every row of `x` [b, t, d] with the causal `mask` [t, t].
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        deltas: Option<&LowRankTerms>,
        mode: Mode,
        hook: Option<&mut dyn Fc2Hook>,
    ) -> Result<Tensor> {
        let normed = self.layer_norm1.forward(x, mode)?;
        let x = (x + self.self_attn.forward(&normed, &normed, mask, mode)?)?;
        let mlp = self.mlp(&self.layer_norm2.forward(&x, mode)?, deltas, hook)?;
        x + mlp
    }

    /// Keys and values [rows, d] this layer's attention computes for the stream `x` [rows, d].
    pub(crate) fn project_kv(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        let normed = self.layer_norm1.forward(x, mode)?;
        Ok((
            self.self_attn.k_proj.forward(&normed)?,
            self.self_attn.v_proj.forward(&normed)?,
        ))
    }

    /// Runs the layer on a packed subset of rows (see [`PackedRows`]): only the rows that
    /// can change are computed, and the keys/values of the rows before them come from a
    /// cache. Returns the layer's output for `plan.output` rows, packed.
    pub(crate) fn forward_packed(
        &self,
        x: &Tensor,
        cache: &(Tensor, Tensor),
        plan: &PackedRows,
        deltas: Option<&LowRankTerms>,
        mode: Mode,
    ) -> Result<Tensor> {
        let attn = &self.self_attn;
        let (b, t, a) = (plan.batch, plan.width, plan.queries_per_item);
        let d = attn.heads * attn.head_dim;
        let normed = self.layer_norm1.forward(x, mode)?;
        let gather_kv = |cached: &Tensor, active: Tensor| -> Result<Tensor> {
            Tensor::cat(&[cached, &active], 0)?
                .index_select(&plan.kv_rows, 0)?
                .reshape((b, t, d))
        };
        let k = gather_kv(&cache.0, attn.k_proj.forward(&normed)?)?;
        let v = gather_kv(&cache.1, attn.v_proj.forward(&normed)?)?;
        let scale = (attn.head_dim as f64).powf(-0.5);
        let q_in = normed.index_select(&plan.query_rows, 0)?;
        let q = (attn.q_proj.forward(&q_in)? * scale)?.reshape((b, a, d))?;
        let scores = attn
            .split_heads(&q)?
            .matmul(&attn.split_heads(&k)?.t()?)?
            .broadcast_add(&plan.mask)?;
        let probs = match mode {
            Mode::Inference => candle_nn::ops::softmax_last_dim(&scores)?,
            Mode::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let mixed = probs
            .matmul(&attn.split_heads(&v)?)?
            .transpose(1, 2)?
            .reshape((b * a, d))?
            .index_select(&plan.output_rows, 0)?;
        let residual = match &plan.residual_rows {
            Some(rows) => x.index_select(rows, 0)?,
            None => x.clone(),
        };
        let x = (residual + attn.out_proj.forward(&mixed)?)?;
        let mlp = self.mlp(&self.layer_norm2.forward(&x, mode)?, deltas, None)?;
        x + mlp
    }

    fn mlp(
        &self,
        x: &Tensor,
        deltas: Option<&LowRankTerms>,
        hook: Option<&mut dyn Fc2Hook>,
    ) -> Result<Tensor> {
        let inner = activate(&self.fc1.forward(x)?, self.activation)?;
        let mut out = self.fc2.forward(&inner)?;
        if let Some(terms) = deltas {
            let dims = inner.dims().to_vec();
            let rows = inner.elem_count() / dims[dims.len() - 1];
            let extra = terms.apply(&inner.reshape((rows, dims[dims.len() - 1]))?)?;
            let extra = extra.reshape(out.shape())?;
            out = (out + extra)?;
        }
        match hook {
            Some(hook) => hook.fc2(&inner, out),
            None => Ok(out),
        }
    }
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        Activation::Gelu => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
    }
}

/// The additive causal mask [t, t]: 0 on and below the diagonal, the dtype's minimum
/// above it (as transformers does, rather than -inf, so no row can become NaN).
pub(crate) fn causal_mask(t: usize, dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)
}
