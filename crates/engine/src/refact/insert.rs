//! The insert: the values `V` of a delta `Vᵀ U` that give every fact's key its new
//! output at once.
//!
//! For one fact this is ReFACT's `v = (target_init + δ − o) / (k·u)`. For n facts edited
//! together it is the same condition for all keys: with `U`'s rows `u_i` (the
//! covariance-whitened key directions, C⁻¹k*_i normalised) and the facts' keys `k_j`,
//! `(W + Vᵀ U) k_j = W k_j + r_j` for every j, i.e. `Σ_i v_i (u_i·k_j) = r_j`, an n × n
//! system `Mᵀ V = R` with `M_ij = u_i·k_j`. This is MEMIT's least-change update
//! `Δ = R (Dᵀ K)⁻¹ Dᵀ` with the directions `D = C⁻¹K*` ReFACT uses, solved exactly
//! rather than with MEMIT's ridge, so a batch of one is exactly a ReFACT edit.

use crate::error::{EngineError, Result};
use faer::linalg::solvers::{PartialPivLu, Solve};
use faer::Mat;

/// Relative residual above which the system is treated as singular: the facts' keys
/// are too alike (say, one subject twice) for one update to give each its own value.
const MAX_RELATIVE_RESIDUAL: f64 = 1e-4;

/// `V` [n][hidden] from `u` [n][inner], the facts' keys `keys` [n][inner] and the
/// residuals `residuals` [n][hidden] their outputs must move by.
pub(crate) fn solve_values(
    u: &[Vec<f32>],
    keys: &[Vec<f32>],
    residuals: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>> {
    let n = u.len();
    let dot =
        |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum() };
    // Mᵀ, so that the system reads Mᵀ V = R.
    let m_t = Mat::<f64>::from_fn(n, n, |j, i| dot(&u[i], &keys[j]));
    if let Some(j) = (0..n).find(|&j| m_t[(j, j)].abs() < 1e-12) {
        return Err(EngineError::Numerical(format!(
            "fact {j}: the prompt's key is orthogonal to u"
        )));
    }
    let hidden = residuals.first().map_or(0, Vec::len);
    let r = Mat::<f64>::from_fn(n, hidden, |j, h| residuals[j][h] as f64);
    let values = if n == 1 {
        // ReFACT's own division, so a batch of one is the single edit bit for bit.
        let k_dot_u = m_t[(0, 0)];
        Mat::<f64>::from_fn(1, hidden, |_, h| r[(0, h)] / k_dot_u)
    } else {
        PartialPivLu::new(m_t.as_ref()).solve(&r)
    };
    let residual = (&m_t * &values - &r).norm_l2();
    let scale = r.norm_l2().max(f64::MIN_POSITIVE);
    if !residual.is_finite() || residual / scale > MAX_RELATIVE_RESIDUAL {
        return Err(EngineError::Numerical(format!(
            "the facts' keys are too alike to be edited together (relative residual \
             {:.2e}); edit them in separate batches",
            residual / scale
        )));
    }
    Ok((0..n)
        .map(|i| (0..hidden).map(|h| values[(i, h)] as f32).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, k: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * k).sin()).collect()
    }

    #[test]
    fn every_key_gets_its_residual() {
        let n = 5;
        let u: Vec<Vec<f32>> = (0..n).map(|i| wave(16, 0.3 + i as f32)).collect();
        let keys: Vec<Vec<f32>> = (0..n).map(|i| wave(16, 0.31 + i as f32 * 1.01)).collect();
        let r: Vec<Vec<f32>> = (0..n).map(|i| wave(4, 2.0 + i as f32)).collect();
        let v = solve_values(&u, &keys, &r).unwrap();
        // Δ k_j = Σ_i v_i (u_i·k_j) must be r_j.
        for j in 0..n {
            for h in 0..4 {
                let moved: f64 = (0..n)
                    .map(|i| {
                        v[i][h] as f64
                            * u[i]
                                .iter()
                                .zip(&keys[j])
                                .map(|(a, b)| (a * b) as f64)
                                .sum::<f64>()
                    })
                    .sum();
                assert!(
                    (moved - r[j][h] as f64).abs() < 1e-4,
                    "key {j}, coordinate {h}"
                );
            }
        }
    }

    #[test]
    fn one_fact_is_refacts_division() {
        let u = vec![wave(8, 0.7)];
        let k = vec![wave(8, 0.9)];
        let r = vec![wave(3, 1.3)];
        let v = solve_values(&u, &k, &r).unwrap();
        let k_dot_u: f64 = u[0]
            .iter()
            .zip(&k[0])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let expected: Vec<f32> = r[0].iter().map(|x| (*x as f64 / k_dot_u) as f32).collect();
        assert_eq!(v[0], expected);
    }

    #[test]
    fn the_same_key_twice_is_refused() {
        let u = vec![wave(8, 0.7), wave(8, 0.7)];
        let k = vec![wave(8, 0.9), wave(8, 0.9)];
        let r = vec![wave(3, 1.3), wave(3, 2.1)];
        assert!(matches!(
            solve_values(&u, &k, &r),
            Err(EngineError::Numerical(_))
        ));
    }
}
