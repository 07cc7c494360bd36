//! softmax(q kᵀ) v on the CPU, one block of queries at a time, so that the scores of
//! a block stay in cache.
//!
//! With a matmul, a softmax and a matmul as three tensor operations, the score matrix
//! of a query chunk (256 MiB at 512 px) was written by the first, rewritten by the
//! second and read by the third, each time from memory; zeroing it for the first was 7%
//! of a fixture image (perf, 512 px). Here each task takes one head and a block of
//! queries: its scores (at most [`SCORES_PER_BLOCK`] values, 1 MiB) go into a buffer kept
//! per thread, are turned into probabilities in place and multiplied by v at once.
//! Tasks run in parallel; each gemm runs on its task's thread. Inference only (no
//! backward pass), f32 on the CPU; other devices and dtypes use tensor operations.

use super::cpu::{self, f32_slice, Strided};
use super::softmax::{softmax_last_dim_in_place, softmax_rows};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Scores per block of queries: 256 Ki f32, 1 MiB, about what one core's L2 holds.
const SCORES_PER_BLOCK: usize = 1 << 18;

/// softmax(q kᵀ) v per head: `q` [heads, n, d] (already scaled), `k` [heads, m, d],
/// `v` [heads, m, dv] → [heads, n, dv].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    if has_cpu_kernel(q, k, v) {
        q.contiguous()?
            .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &BlockedAttention)
    } else {
        let scores = q.matmul(&k.t()?)?;
        softmax_last_dim_in_place(scores)?.matmul(v)
    }
}

/// Whether [`attention`] runs the blocked CPU kernel for these operands (f32, on the
/// CPU, [heads, len, dim]) rather than tensor operations.
pub fn has_cpu_kernel(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.rank() == 3)
}

struct BlockedAttention;

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        "refact-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (heads, n, d) = q_layout.shape().dims3()?;
        let (k_heads, m, k_d) = k_layout.shape().dims3()?;
        let (v_heads, v_m, dv) = v_layout.shape().dims3()?;
        if k_heads != heads || v_heads != heads || k_d != d || v_m != m || m == 0 {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not fit",
                q_layout.shape(),
                k_layout.shape(),
                v_layout.shape()
            )
        }
        let (q, k, v) = (
            f32_slice(q, q_layout, "attention")?,
            f32_slice(k, k_layout, "attention")?,
            f32_slice(v, v_layout, "attention")?,
        );
        let block = (SCORES_PER_BLOCK / m).clamp(1, n.max(1));
        let mut out = vec![0f32; heads * n * dv];
        if n == 0 || dv == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((heads, n, dv))));
        }
        out.par_chunks_mut(n * dv)
            .enumerate()
            .for_each(|(head, out_head)| {
                let q_head = &q[head * n * d..(head + 1) * n * d];
                let k_head = &k[head * m * d..(head + 1) * m * d];
                let v_head = &v[head * m * dv..(head + 1) * m * dv];
                out_head
                    .par_chunks_mut(block * dv)
                    .enumerate()
                    .for_each(|(index, out_block)| {
                        let rows = out_block.len() / dv;
                        let q_block = &q_head[index * block * d..][..rows * d];
                        SCORES.with_borrow_mut(|scores| {
                            if scores.len() < rows * m {
                                scores.resize(rows * m, 0.0);
                            }
                            let scores = &mut scores[..rows * m];
                            attend_block(
                                q_block,
                                k_head,
                                v_head,
                                (rows, m, d, dv),
                                scores,
                                out_block,
                            );
                        });
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from((heads, n, dv))))
    }
}

thread_local! {
    /// One block's scores, kept between calls (1 MiB per thread).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out = softmax(q kᵀ) v` for one block: `q` [rows, d], `k` [m, d], `v` [m, dv], all
/// row-major; `scores` is scratch of rows·m.
fn attend_block(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (rows, m, d, dv): (usize, usize, usize, usize),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let single = gemm::Parallelism::None;
    // SAFETY (both products): every operand holds the elements its sizes and strides
    // reach: q rows·d, k m·d (read transposed: element (l, j) at j·d + l), scores
    // rows·m, v m·dv, out rows·dv; the scratch and the output are their own buffers.
    unsafe {
        let k_transposed = Strided {
            ptr: k.as_ptr(),
            row_stride: 1,
            col_stride: d,
        };
        let scores_ptr = Strided::rows(scores.as_mut_ptr(), m);
        cpu::gemm(
            (rows, m, d),
            scores_ptr,
            false,
            Strided::rows(q.as_ptr(), d),
            k_transposed,
            single,
        );
    }
    softmax_rows(scores, m);
    unsafe {
        let (out_ptr, probs) = (
            Strided::rows(out.as_mut_ptr(), dv),
            Strided::rows(scores.as_ptr(), m),
        );
        cpu::gemm(
            (rows, dv, m),
            out_ptr,
            false,
            probs,
            Strided::rows(v.as_ptr(), dv),
            single,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refact_testkit::pattern;

    #[test]
    fn matches_matmul_softmax_matmul() {
        // Self-attention with several blocks per head, cross-attention over 77 keys, and
        // a single query.
        for (heads, n, m, d, dv) in [(3, 1500, 700, 8, 8), (4, 33, 77, 16, 16), (2, 1, 5, 4, 6)] {
            let (q, k, v) = (
                pattern((heads, n, d), 1),
                pattern((heads, m, d), 2),
                pattern((heads, m, dv), 3),
            );
            let ours = attention(&q, &k, &v).unwrap();
            let probs =
                candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
            let theirs = probs.matmul(&v).unwrap();
            let diff = refact_testkit::max_abs_diff(&ours, &theirs);
            assert!(diff < 1e-5, "{heads}×{n}×{m}: {diff:e}");
        }
    }
}
