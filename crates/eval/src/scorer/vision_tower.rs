//! CLIP's vision tower (transformers' `CLIPVisionTransformer`): patch convolution, a class
//! token, position embeddings, `pre_layrnorm` (sic, the checkpoint's name), the encoder,
//! and `post_layernorm` on the class token.

use super::config::VisionConfig;
use super::transformer::Encoder;
use crate::error::{EvalError, Result};
use candle_core::{Module, Tensor};
use candle_nn::{
    conv2d_no_bias, embedding, layer_norm, Conv2d, Conv2dConfig, Embedding, LayerNorm, VarBuilder,
};

/// The vision tower, loaded from the `vision_model.*` tensors.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    image_size: usize,
    num_channels: usize,
}

impl VisionTower {
    /// Loads the tower with every size from `config`.
    pub fn load(vb: VarBuilder, config: &VisionConfig) -> Result<Self> {
        let d = config.encoder.hidden_size;
        let emb = vb.pp("embeddings");
        let conv = Conv2dConfig {
            stride: config.patch_size,
            ..Default::default()
        };
        let positions = config.patches_per_side().pow(2) + 1;
        Ok(Self {
            patch_embedding: conv2d_no_bias(
                config.num_channels,
                d,
                config.patch_size,
                conv,
                emb.pp("patch_embedding"),
            )?,
            class_embedding: emb.get(d, "class_embedding")?,
            position_embedding: embedding(positions, d, emb.pp("position_embedding"))?,
            pre_layrnorm: layer_norm(d, config.encoder.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::load(vb.pp("encoder"), &config.encoder)?,
            post_layernorm: layer_norm(d, config.encoder.layer_norm_eps, vb.pp("post_layernorm"))?,
            image_size: config.image_size,
            num_channels: config.num_channels,
        })
    }

    /// Pooled outputs [b, hidden] of `pixel_values` [b, channels, size, size].
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4()?;
        if c != self.num_channels || h != self.image_size || w != self.image_size {
            return Err(EvalError::Invalid(format!(
                "pixel values are [{b}, {c}, {h}, {w}]; the vision tower takes [b, {}, {s}, {s}]",
                self.num_channels,
                s = self.image_size
            )));
        }
        let patches = self
            .patch_embedding
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = patches.dim(2)?;
        let class = self.class_embedding.reshape((1, 1, d))?.repeat((b, 1, 1))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let positions = Tensor::arange(0u32, x.dim(1)? as u32, x.device())?;
        let x = x.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let x = self.encoder.forward(&x, None)?;
        let class_state = x.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.post_layernorm.forward(&class_state)?)
    }
}
