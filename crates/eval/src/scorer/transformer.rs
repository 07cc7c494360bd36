//! The pre-norm transformer encoder both CLIP towers share (transformers' `CLIPEncoder`):
//! `x += attn(ln1(x)); x += mlp(ln2(x))` per layer. Inference only, so candle's fused
//! layer norm and softmax are fine here (no gradients are taken through the scorer).

use super::config::{Activation, EncoderConfig};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

/// A stack of encoder layers, loaded from `<prefix>.layers.N.*`.
#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Loads `num_hidden_layers` layers from `vb` (the `encoder` prefix).
    pub fn load(vb: VarBuilder, config: &EncoderConfig) -> Result<Self> {
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(vb.pp(format!("layers.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Runs every layer over `x` [batch, seq, hidden]; `mask` is an additive [seq, seq]
    /// attention mask (the text tower's causal mask) or `None` (the vision tower).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, c: &EncoderConfig) -> Result<Self> {
        Ok(Self {
            layer_norm1: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: Attention::load(vb.pp("self_attn"), c)?,
            layer_norm2: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: linear(c.hidden_size, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: linear(c.intermediate_size, c.hidden_size, vb.pp("mlp.fc2"))?,
            activation: c.activation,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self
            .self_attn
            .forward(&self.layer_norm1.forward(x)?, mask)?)?;
        let h = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        let h = activate(&h, self.activation)?;
        x + self.fc2.forward(&h)?
    }
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        Activation::Gelu => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, c: &EncoderConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
        })
    }

    /// [b, s, d] -> [b, heads, s, head_dim]
    fn split_heads(&self, x: &Tensor, b: usize, s: usize) -> Result<Tensor> {
        x.reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&(self.q_proj.forward(x)? * scale)?, b, s)?;
        let k = self.split_heads(&self.k_proj.forward(x)?, b, s)?;
        let v = self.split_heads(&self.v_proj.forward(x)?, b, s)?;
        let mut weights = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            weights = weights.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&weights)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
        self.out_proj.forward(&out)
    }
}

/// The additive causal mask [seq, seq]: 0 on and below the diagonal, -inf above, so a
/// token attends only to itself and earlier tokens.
pub fn causal_mask(
    seq: usize,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (seq, seq), device)?.to_dtype(dtype)
}

/// Divides each row of `x` [n, d] by its L2 norm.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}
