//! e^x for x ≤ 0 and the sigmoid and GELU built on it, written so that a loop of them
//! vectorises: only float arithmetic, selects and integer bit operations, no call into
//! libm (whose scalar `expf` was 32% of a 512 px fixture image inside candle's softmax).
//! Callers compile their loops with AVX2 + FMA where the CPU has them.

/// e^x for x ≤ 0 (softmax's range after subtracting the maximum, and e^−|v| in a
/// sigmoid), within 3 ulp of libm
/// down to x = −87; below that it returns e^−87 ≈ 1.6e−38, which no softmax sum notices.
/// A NaN stays NaN.
///
/// Range reduction x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-7 polynomial for e^r
/// (Cephes' `expf` coefficients), and 2^n built in the exponent bits. Only float
/// arithmetic and integer bit operations, so that a loop of it vectorises.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact in f32.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it to a small integer-valued float leaves the integer in the low
    // mantissa bits, read without a (saturating, branchy) float-to-int conversion.
    const ROUNDING_MAGIC: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    // Cephes' 5.0000001201e-1, which is 0.5 in f32.
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n for n in [−126, 0]: the biased exponent n + 127 in bits 23…30.
    let biased = (n + 127.0 + ROUNDING_MAGIC)
        .to_bits()
        .wrapping_sub(ROUNDING_MAGIC.to_bits());
    e_r * f32::from_bits(biased << 23)
}

/// x · sigmoid(x) (SiLU) through [`exp`] of −|x| ≤ 0, so no overflow for any x.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    let e = exp(if x < 0.0 { x } else { -x });
    let sigmoid = if x < 0.0 {
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + e)
    };
    x * sigmoid
}

/// The exact (erf) GELU, x · Φ(x) = ½ x (1 + erf(x/√2)), through [`exp`]: within 2e-7 of
/// the definition, absolutely, for |x| ≤ 1, and relatively above (diffusers' GEGLU
/// uses this GELU; candle's `gelu_erf` computes it one element at a time through a
/// scalar erf).
///
/// erf(z) = 1 − t·P(t)·e^{−z²} for z ≥ 0, t = 1 / (1 + p z) (Abramowitz and Stegun
/// 7.1.26, absolute error ≤ 1.5e-7). For x < 0, 1 + erf(x/√2) is erfc(|x|/√2) = t·P(t)·e^{−z²}
/// itself, so the small values of the negative tail are not a difference of two
/// numbers near 1.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let erfc = poly * exp(-z * z);
    let one_plus_erf = if x < 0.0 { erfc } else { 2.0 - erfc };
    0.5 * x * one_plus_erf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_erf_is_within_2e_7_of_the_definition() {
        // Rust's std has no erf, so the reference Φ is a numerical integral of the
        // normal density in f64 (far more accurate than the 2e-7 being checked).
        fn phi(x: f64) -> f64 {
            // Φ(x) = ½ + ∫₀ˣ φ(s) ds, Simpson's rule with 2,000 panels.
            let n = 2000;
            let h = x / n as f64;
            let density = |s: f64| (-0.5 * s * s).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let mut sum = density(0.0) + density(x);
            for i in 1..n {
                sum += density(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            0.5 + sum * h / 3.0
        }
        let mut worst = 0f64;
        let mut x = -9.0f32;
        while x <= 9.0 {
            let exact = x as f64 * phi(x as f64);
            let err = (gelu_erf(x) as f64 - exact).abs() / (x.abs() as f64).max(1.0);
            worst = worst.max(err);
            x += 0.0137;
        }
        assert!(worst < 2e-7, "error {worst:e}");
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!(gelu_erf(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_libm_over_softmax_range() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max((ours - libm).abs() / libm);
            x += 0.000_37;
        }
        assert!(worst < 3.0 * f32::EPSILON, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-200.0) < 1e-37 && exp(-200.0) > 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_is_within_a_few_ulp_of_the_definition() {
        let mut worst = 0f64;
        let mut x = -30.0f32;
        while x <= 30.0 {
            let exact = x as f64 / (1.0 + (-(x as f64)).exp());
            if exact.abs() > 1e-30 {
                worst = worst.max(((silu(x) as f64) - exact).abs() / exact.abs());
            }
            x += 0.000_71;
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "relative error {worst:e}"
        );
        assert_eq!(silu(0.0), 0.0);
        assert!(silu(f32::NAN).is_nan());
    }
}
