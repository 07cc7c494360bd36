//! `x @ W` for a constant `W`, whose backward pass computes only the gradient of `x`.
//!
//! candle's own matmul backward always computes the gradient of both operands, so with
//! frozen weights every step also pays for a weight gradient nobody reads (3–4× a
//! forward, CANDLE-NOTES.md). ReFACT optimises one vector through the upper layers of
//! the text encoder; this op makes a step cost about two forwards.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// Right-hand side of a frozen product: `rhs` [k, n] for the forward, `rhs_t` [n, k]
/// (contiguous) for the backward.
#[derive(Clone, Debug)]
pub(crate) struct FrozenRhs {
    rhs: Tensor,
    rhs_t: Tensor,
}

impl FrozenRhs {
    /// `rhs` is [k, n]; both orientations are kept so neither pass transposes.
    pub(crate) fn new(rhs: Tensor) -> Result<Self> {
        let rhs = rhs.contiguous()?;
        let rhs_t = rhs.t()?.contiguous()?;
        Ok(Self { rhs, rhs_t })
    }

    /// `x` [m, k] @ rhs [k, n]. When `x` is tracked by autograd on the CPU, goes through the
    /// custom op so the backward skips the weight gradient; elsewhere a plain matmul.
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() && x.device().is_cpu() {
            x.contiguous()?
                .apply_op1(FrozenMatmul { rhs: self.clone() })
        } else {
            x.matmul(&self.rhs)
        }
    }

    pub(crate) fn rhs(&self) -> &Tensor {
        &self.rhs
    }
}

struct FrozenMatmul {
    rhs: FrozenRhs,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        // The storage is wrapped in an untracked tensor so candle's gemm does the work.
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul expects a contiguous input")
        };
        let all = Tensor::from_storage(
            Storage::Cpu(storage.clone()),
            storage_len(storage)?,
            candle_core::op::BackpropOp::none(),
            false,
        );
        let x = all.narrow(0, start, end - start)?.reshape(layout.shape())?;
        let out = x.matmul(&self.rhs.rhs)?.contiguous()?;
        let shape = out.shape().clone();
        let (out_storage, out_layout) = out.storage_and_layout();
        match &*out_storage {
            Storage::Cpu(cpu) if out_layout.start_offset() == 0 => Ok((cpu.clone(), shape)),
            _ => candle_core::bail!("frozen-matmul: unexpected output storage"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.rhs.rhs_t)?))
    }
}

fn storage_len(storage: &CpuStorage) -> Result<usize> {
    Ok(match storage {
        CpuStorage::F32(v) => v.len(),
        CpuStorage::F64(v) => v.len(),
        CpuStorage::F16(v) => v.len(),
        CpuStorage::BF16(v) => v.len(),
        _ => candle_core::bail!("frozen-matmul supports float inputs only"),
    })
}
