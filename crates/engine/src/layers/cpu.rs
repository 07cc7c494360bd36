//! What the CPU kernels of this module share: reading an f32 operand out of candle's
//! storage, and one matrix product on strided operands through `gemm`.

use candle_core::{CpuStorage, Layout, Result};

/// The f32 values of a contiguous operand of the op named `op`.
pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("{op}: the CPU kernel takes f32 only")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => candle_core::bail!("{op}: operand is not contiguous"),
    }
}

/// A matrix in memory: its first element and the distances between rows and columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<T> {
    pub ptr: T,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<T> Strided<T> {
    /// Row-major with `row_stride` elements between rows.
    pub(crate) fn rows(ptr: T, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// `dst = lhs · rhs` ([m, k] · [k, n]), or `dst += lhs · rhs` when `accumulate`.
///
/// # Safety
/// Every element the sizes and strides reach must be inside its operand's allocation,
/// and `dst` must not overlap `lhs` or `rhs`.
pub(crate) unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        dst.col_stride as isize,
        dst.row_stride as isize,
        accumulate,
        lhs.ptr,
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.ptr,
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        // dst = 1·dst + 1·lhs·rhs (dst is not read unless accumulating).
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}
