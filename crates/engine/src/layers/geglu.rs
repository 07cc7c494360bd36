//! GEGLU's gate, `h · gelu_erf(g)` for the two halves of a projection, in one pass on
//! the CPU.
//!
//! As tensor operations it is a narrow, candle's `gelu_erf` and a multiplication: three
//! passes over the feed-forward's widest activation, each on one thread, the GELU
//! through a scalar erf. In SDXL's UNet step at 256 px that was 5% of the samples on
//! one thread (perf, docs/PERFORMANCE.md), and more with two threads, where the rest of
//! the step runs in parallel. Here rows are spread over the threads and the GELU is
//! [`fast_exp::gelu_erf`], which vectorises. Other devices and dtypes use the tensor
//! operations.

use super::cpu::f32_slice;
use super::fast_exp;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// `projected` [..., 2·inner] → [..., inner]: the first half times the exact GELU of
/// the second, as diffusers' `GEGLU`.
pub fn geglu(projected: &Tensor) -> Result<Tensor> {
    if projected.device().is_cpu() && projected.dtype() == DType::F32 {
        projected.contiguous()?.apply_op1_no_bwd(&Geglu)
    } else {
        let half = projected.dim(D::Minus1)? / 2;
        let hidden = projected.narrow(D::Minus1, 0, half)?;
        let gate = projected.narrow(D::Minus1, half, half)?;
        hidden * gate.gelu_erf()?
    }
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "refact-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let projected = f32_slice(storage, layout, "geglu")?;
        let mut dims = layout.shape().dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width % 2 != 0 {
            candle_core::bail!("geglu: last dimension {width} is not even")
        }
        let half = width / 2;
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        let mut out = vec![0f32; projected.len() / 2];
        if half > 0 {
            out.par_chunks_mut(half)
                .zip(projected.par_chunks(width))
                .for_each(|(out, row)| gate_row(row, out));
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

fn gate_row(row: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { gate_row_avx2(row, out) };
        }
    }
    gate_row_portable(row, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gate_row_avx2(row: &[f32], out: &mut [f32]) {
    gate_row_portable(row, out)
}

#[inline(always)]
fn gate_row_portable(row: &[f32], out: &mut [f32]) {
    let (hidden, gate) = row.split_at(out.len());
    for ((out, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
        *out = h * fast_exp::gelu_erf(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_narrow_gelu_erf_and_multiply() {
        // Values in [−6, 6): both GELU tails and the middle.
        let projected = (refact_testkit::pattern((3, 5, 16), 0) * 12.0).unwrap();
        let ours = geglu(&projected).unwrap();
        let hidden = projected.narrow(2, 0, 8).unwrap();
        let gate = projected.narrow(2, 8, 8).unwrap();
        let theirs = (hidden * gate.gelu_erf().unwrap()).unwrap();
        assert_eq!(ours.dims(), &[3, 5, 8]);
        let diff = refact_testkit::max_abs_diff(&ours, &theirs);
        // |h| ≤ 6 and |x| ≤ 6: 6 × 6 × 2e-7.
        assert!(diff < 1e-5, "{diff:e}");
    }
}
