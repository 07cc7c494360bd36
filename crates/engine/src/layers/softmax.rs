//! Softmax over the last dimension for the UNet's and the VAE's attention, with a CPU
//! kernel of our own.
//!
//! At 512 px the fixture's UNet attends over 4,096 positions: a `perf` profile of a
//! whole image put 32% of all samples in libm's scalar `expf` and another 27% in the
//! closure around it (candle 0.11's `softmax_last_dim`). Here each row takes one pass
//! for its maximum, one fused pass for exp and sum, and one to scale, in place, with an
//! exp written so that the compiler vectorises it (AVX2 + FMA when the CPU has them,
//! chosen at run time), rows in parallel. Inference only: the op has no backward pass,
//! and the text encoder, which ReFACT differentiates, keeps candle's softmax.

use super::fast_exp::exp;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Tensor, D};
use rayon::prelude::*;

/// `softmax(scores)` along the last dimension, computed in the storage of `scores` on the
/// CPU: pass a tensor nobody else holds (a fresh matmul output), because every tensor
/// sharing its storage sees the result. Writing in place spares a second score matrix
/// (256 MiB per query chunk at 512 px) and the page faults of allocating it.
pub fn softmax_last_dim_in_place(scores: Tensor) -> Result<Tensor> {
    let own_kernel = scores.device().is_cpu()
        && scores.dtype() == DType::F32
        && scores.rank() > 0
        && scores.is_contiguous();
    if own_kernel {
        scores.inplace_op1(&RowSoftmax)?;
        Ok(scores)
    } else {
        candle_nn::ops::softmax_last_dim(&scores)
    }
}

struct RowSoftmax;

impl InplaceOp1 for RowSoftmax {
    fn name(&self) -> &'static str {
        "refact-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(all) = storage else {
            candle_core::bail!("softmax: the CPU kernel takes f32 only")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax: input is not contiguous")
        };
        let row_len = layout.shape().dim(D::Minus1)?.max(1);
        // Rows in groups, so that short rows do not pay rayon's per-task cost each.
        let rows_per_task = (4096 / row_len).max(1);
        all[start..end]
            .par_chunks_mut(row_len * rows_per_task)
            .for_each(|rows| softmax_rows(rows, row_len));
        Ok(())
    }
}

/// Softmax of each `row_len`-long row of `rows`, in place, on the calling thread.
pub(crate) fn softmax_rows(rows: &mut [f32], row_len: usize) {
    rows.chunks_mut(row_len.max(1)).for_each(softmax_row);
}

fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { softmax_row_avx2(row) };
        }
    }
    softmax_row_portable(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row_portable(row)
}

/// Lanes per step: two AVX2 registers of f32.
const LANES: usize = 16;

/// The row's maximum, then exp(x − max) in place with their sum, then the scale. The
/// maximum and the sum are kept per lane (`[f32; LANES]`) so that the loops vectorise:
/// a single running sum would be a dependency chain the compiler may not reorder.
#[inline(always)]
fn softmax_row_portable(row: &mut [f32]) {
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lane_max.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lane_max)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });

    let mut lane_sum = [0f32; LANES];
    let split = row.len() - row.len() % LANES;
    let (body, tail) = row.split_at_mut(split);
    for chunk in body.chunks_exact_mut(LANES) {
        for (x, sum) in chunk.iter_mut().zip(&mut lane_sum) {
            *x = exp(*x - max);
            *sum += *x;
        }
    }
    let mut sum: f32 = lane_sum.iter().sum();
    for x in tail.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let scale = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= scale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_softmax_on_rows_long_and_short() {
        for shape in [(3usize, 5usize, 4096usize), (2, 7, 3), (1, 1, 1)] {
            let len = shape.0 * shape.1 * shape.2;
            let values: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 2003) as f32 / 40.0) - 25.0)
                .collect();
            let xs = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
            let theirs = candle_nn::ops::softmax_last_dim(&xs).unwrap();
            let ours = softmax_last_dim_in_place(xs).unwrap();
            let diff = refact_testkit::max_abs_diff(&ours, &theirs);
            assert!(diff < 1e-6, "{shape:?}: {diff:e}");
        }
    }
}
