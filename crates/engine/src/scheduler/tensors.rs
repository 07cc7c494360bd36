//! The little tensor arithmetic a step needs, generic over the sample's dtype.

use candle_core::{DType, Tensor};

/// The tensor in the dtype step arithmetic runs in: f32 for half-precision samples,
/// else unchanged. diffusers upcasts Euler and DPM-Solver steps the same way; here all
/// four do, since σ-scaled latents (σ up to ~15) lose digits in f16 and the latents are
/// tiny next to one UNet call.
pub(crate) fn to_working(t: &Tensor) -> candle_core::Result<Tensor> {
    match t.dtype() {
        DType::F16 | DType::BF16 => t.to_dtype(DType::F32),
        _ => Ok(t.clone()),
    }
}

/// Σ cᵢ·xᵢ, with the coefficients computed in f64 by the caller. All terms must share
/// a shape and dtype.
pub(crate) fn lincomb(terms: &[(f64, &Tensor)]) -> candle_core::Result<Tensor> {
    let mut iter = terms.iter();
    let (c, x) = iter.next().expect("lincomb needs at least one term");
    let mut sum = x.affine(*c, 0.0)?;
    for (c, x) in iter {
        sum = (sum + x.affine(*c, 0.0)?)?;
    }
    Ok(sum)
}
