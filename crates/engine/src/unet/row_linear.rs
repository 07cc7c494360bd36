//! A linear layer whose output for one image does not depend on the batch around it.
//!
//! On the CPU, the matmul kernels pick their path from the problem's size, so the same
//! row computed among a different number of rows can come out a few ulps apart (seen
//! both in candle's `Linear` on [b, n, c], which runs a batched matmul against the
//! broadcast weight, and in a 2-D matmul of [b·n, c] for small sizes). Classifier-free
//! guidance and the scheduler's steps amplify that to 3e-3 in pixels on the fixture, so
//! an image rendered in a batch would not be the image rendered alone.
//!
//! Where it matters, each image gets its own [n, c] matmul: the same call, with the
//! same size, that it gets alone. Where the `gemm` crate's arithmetic for a row cannot
//! depend on the number of rows, the whole batch goes through one [b·n, c] matmul
//! instead, because every call packs the weight anew: at SDXL's sizes, where the
//! weights are large and the rows per image few, packing each weight once per image
//! was 45% of a UNet step (perf, docs/PERFORMANCE.md). See [`one_call_is_exact`] for
//! the rule, and the tests for its check. Other devices always run one flattened
//! matmul (their batched images agree with the alone ones to the device's own tolerance).

use candle_core::{Module, Result, Tensor};
use candle_nn::Linear;

#[derive(Debug, Clone)]
pub struct RowLinear {
    /// The weight as [in, out]. On the CPU it is a contiguous copy (made once, at
    /// load; the checkpoint's [out, in] is then dropped): `gemm` packs the weight on
    /// every call, and packing [in, out] copies runs of contiguous values where
    /// [out, in] would be gathered across rows. SDXL's UNet step at 256 px took
    /// 15-20% less time with it (docs/PERFORMANCE.md). Elsewhere, a transposed view.
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl RowLinear {
    pub fn new(linear: Linear) -> Result<Self> {
        let weight_t = linear.weight().t()?;
        Ok(Self {
            weight_t: if weight_t.device().is_cpu() {
                weight_t.contiguous()?
            } else {
                weight_t
            },
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
        let out_features = self.weight_t.dim(1)?;
        let split = batch > 1
            && xs.device().is_cpu()
            && !one_call_is_exact(per_image, features, out_features);
        let flat = if split {
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

/// Whether `x · Wᵀ` for `rows` rows per image gives every row the same bits in one call
/// over the whole batch as in a call of its image alone, in `gemm` 0.19 (the version
/// candle 0.11 uses; the test below checks it, so an upgrade that breaks it fails there).
///
/// `gemm` computes the row-major output transposed: its `m` is the layer's output
/// width, its `n` the row count. Each output element is a sum over k in blocks of `kc`,
/// accumulated in order, so its bits depend on `kc` and on the kernel, not on where
/// the row sits. What can change with the row count:
/// - one row, or a k of at most 2, goes through matrix-vector code with its own order;
/// - products of at most 16 × 16 outputs go through a "horizontal" kernel that sums
///   each dot product across vector lanes, when the weight's rows are contiguous (not
///   the CPU's [in, out] copy above; the clause keeps the rule right for either layout);
/// - with `m` and `n` both at most 64, `kc` is `min(k, 512)`; otherwise it comes from
///   the cache sizes and k alone. An output width above 64 keeps every call, alone or
///   batched, on the second rule.
///
/// A batch has at least as many rows as each of its images, so when the call for one
/// image alone passes these, the call for the batch does too.
fn one_call_is_exact(rows: usize, in_features: usize, out_features: usize) -> bool {
    rows >= 2 && in_features > 2 && out_features > 64 && rows * out_features > 16 * 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use refact_testkit::pattern;

    fn layer(in_features: usize, out_features: usize) -> RowLinear {
        let weight = pattern((out_features, in_features), 1);
        let bias = pattern((1, out_features), 2).squeeze(0).unwrap();
        RowLinear::new(Linear::new(weight, Some(bias))).unwrap()
    }

    /// Every shape the rule lets through gives each image's rows the bits of its image
    /// alone: SDXL's projections at 256 px (64 rows an image), the text context's 77
    /// rows, k above and below 512 (two ways of choosing gemm's k blocks), and the
    /// smallest cases the rule allows.
    #[test]
    fn one_call_over_the_batch_gives_each_image_its_own_bits() {
        for (rows, in_features, out_features) in [
            (64, 1280, 1280),
            (64, 5120, 1280),
            (77, 2048, 640),
            (256, 640, 640),
            (4, 3, 65),
            (40, 1000, 65),
            (3, 513, 130),
        ] {
            assert!(one_call_is_exact(rows, in_features, out_features));
            let linear = layer(in_features, out_features);
            let images: Vec<Tensor> = (0..3)
                .map(|i| pattern((rows, in_features), 10 + i).unsqueeze(0).unwrap())
                .collect();
            let batch = Tensor::cat(&images, 0).unwrap();
            let together = linear.forward(&batch).unwrap();
            for (i, image) in images.iter().enumerate() {
                let alone = linear.forward(image).unwrap();
                let diff =
                    refact_testkit::max_abs_diff(&together.get(i).unwrap(), &alone.get(0).unwrap());
                assert_eq!(diff, 0.0, "{rows}×{in_features}→{out_features}, image {i}");
            }
        }
    }
}
