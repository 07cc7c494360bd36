//! Noise levels σ_t = sqrt((1 − ᾱ_t) / ᾱ_t) for the σ-parameterised schedulers (Euler,
//! DPM-Solver): interpolation at fractional timesteps, Karras spacing, and the way back
//! from σ to a (fractional) timestep.

use super::spacing::linspace;

/// σ for every training timestep.
pub(crate) fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// σ at a fractional timestep, linear between training timesteps (numpy.interp over
/// `0..len`, clamped at both ends).
pub(crate) fn interp(timestep: f64, sigmas: &[f64]) -> f64 {
    let last = sigmas.len() - 1;
    if timestep <= 0.0 {
        return sigmas[0];
    }
    if timestep >= last as f64 {
        return sigmas[last];
    }
    let low = timestep.floor() as usize;
    let w = timestep - low as f64;
    sigmas[low] + w * (sigmas[low + 1] - sigmas[low])
}

/// Karras et al. (2022) noise levels, ρ = 7: `n` values from `sigma_max` down to
/// `sigma_min`, evenly spaced in σ^(1/ρ).
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv = sigma_min.powf(1.0 / RHO);
    let max_inv = sigma_max.powf(1.0 / RHO);
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv + ramp * (min_inv - max_inv)).powf(RHO))
        .collect()
}

/// The fractional timestep whose σ is `sigma`, interpolating linearly in log σ between
/// the two training timesteps around it (diffusers' `_sigma_to_t`, with its clamping).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last training timestep whose log σ is not above ours (0 if none), leaving room
    // for the one above it.
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high = low + 1;
    let w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_to_t_inverts_interp() {
        let sigmas: Vec<f64> = (0..50).map(|i| 0.03 * 1.1f64.powi(i)).collect();
        let logs: Vec<f64> = sigmas.iter().map(|s| s.ln()).collect();
        for t in [0.0f64, 3.0, 17.25, 48.9] {
            let s = (logs[t as usize]
                + (t - t.floor()) * (logs[(t as usize + 1).min(49)] - logs[t as usize]))
                .exp();
            assert!((sigma_to_t(s, &logs) - t).abs() < 1e-9, "{t}");
        }
        // Out of range: clamped to the ends.
        assert_eq!(sigma_to_t(1e-12, &logs), 0.0);
        assert_eq!(sigma_to_t(1e6, &logs), 49.0);
        assert_eq!(interp(-1.0, &sigmas), sigmas[0]);
        assert!((interp(2.5, &sigmas) - 0.5 * (sigmas[2] + sigmas[3])).abs() < 1e-15);
    }

    #[test]
    fn karras_runs_from_max_to_min() {
        let k = karras(0.03, 14.6, 10);
        assert!((k[0] - 14.6).abs() < 1e-12 && (k[9] - 0.03).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }
}
