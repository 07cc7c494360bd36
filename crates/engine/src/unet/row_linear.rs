//! A linear layer whose output for one image does not depend on the batch around it.
//!
//! On the CPU, the matmul kernels pick their path from the problem's size, so the same
//! row computed among a different number of rows can come out a few ulps apart (seen
//! both in candle's `Linear` on [b, n, c], which runs a batched matmul against the
//! broadcast weight, and in a 2-D matmul of [b·n, c] for small sizes). Classifier-free
//! guidance and the scheduler's steps amplify that to 3e-3 in pixels on the fixture, so
//! an image rendered in a batch would not be the image rendered alone. Here, on the CPU,
//! each image of the batch gets its own [n, c] matmul: the same call, with the same
//! size, that it gets alone. Other devices run one flattened matmul (their batched
//! images agree with the alone ones to the device's own tolerance).

use candle_core::{Module, Result, Tensor};
use candle_nn::Linear;

#[derive(Debug, Clone)]
pub struct RowLinear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl RowLinear {
    pub fn new(linear: Linear) -> Result<Self> {
        Ok(Self {
            weight_t: linear.weight().t()?,
            bias: linear.bias().cloned(),
        })
    }

    /// [rows, c] → [rows, out], with the bias.
    fn rows(&self, xs: &Tensor) -> Result<Tensor> {
        let out = xs.matmul(&self.weight_t)?;
        match &self.bias {
            Some(bias) => out.broadcast_add(bias),
            None => Ok(out),
        }
    }
}

impl Module for RowLinear {
    /// `xs` [..., c] → [..., out]; a leading dimension is the batch.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let features = *dims.last().unwrap_or(&0);
        let batch = if dims.len() >= 3 { dims[0] } else { 1 };
        let per_image = xs.elem_count() / features.max(1) / batch.max(1);
        let flat = if batch > 1 && xs.device().is_cpu() {
            let images = (0..batch)
                .map(|i| self.rows(&xs.get(i)?.reshape((per_image, features))?))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&images, 0)?
        } else {
            self.rows(&xs.reshape((batch * per_image, features))?)?
        };
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = flat.dim(1)?;
        }
        flat.reshape(out_dims)
    }
}
