//! The training noise schedule: betas and their cumulative products ᾱ_t, in f64.
//!
//! diffusers keeps these tables in f32; computing them in f64 moves ᾱ_t by about 1e-6
//! relative, far below what a step can show, and keeps half-precision runs exact here.

use super::lookup::ClassKeys;
use super::settings::{BetaSchedule, CommonSettings};
use crate::error::Result;

/// β_t for each training timestep.
pub(crate) fn betas(settings: &CommonSettings, keys: &ClassKeys) -> Result<Vec<f64>> {
    let n = settings.num_train_timesteps;
    if let Some(trained) = &settings.trained_betas {
        // diffusers would index past a shorter table, or never reach a longer one.
        if trained.len() != n {
            return Err(keys.error(
                "trained_betas",
                format!(
                    "has {} values but num_train_timesteps is {n}",
                    trained.len()
                ),
            ));
        }
        if let Some(bad) = trained.iter().find(|b| !(0.0..1.0).contains(*b)) {
            return Err(keys.error("trained_betas", format!("holds {bad}, outside [0, 1)")));
        }
        return Ok(trained.clone());
    }
    let (start, end) = (settings.beta_start, settings.beta_end);
    Ok(match settings.beta_schedule {
        BetaSchedule::Linear => linspace(start, end, n),
        BetaSchedule::ScaledLinear => linspace(start.sqrt(), end.sqrt(), n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        BetaSchedule::SquaredCosCapV2 => cosine_betas(n),
    })
}

/// ᾱ_t = Π_{s ≤ t} (1 − β_s).
pub(crate) fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |product, beta| {
            *product *= 1.0 - beta;
            Some(*product)
        })
        .collect()
}

/// `n` evenly spaced values from `start` to `end` inclusive (torch.linspace).
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| start + step * i as f64).collect()
}

/// Betas of the cosine ᾱ(t) of Nichol & Dhariwal, capped at 0.999
/// (diffusers' `betas_for_alpha_bar` with the cosine transform).
fn cosine_betas(n: usize) -> Vec<f64> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_product_of_sd_betas_ends_near_diffusers_value() {
        // SD v1.x: scaled_linear 0.00085..0.012 over 1000 steps; diffusers' (f32) ᾱ_999
        // is 0.00466010, ᾱ_0 is 0.99915.
        let betas: Vec<f64> = linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
            .into_iter()
            .map(|b| b * b)
            .collect();
        let ac = alphas_cumprod(&betas);
        assert!((ac[0] - 0.99915).abs() < 1e-12);
        assert!((ac[999] - 0.00466010).abs() < 1e-7, "{}", ac[999]);
    }

    #[test]
    fn cosine_betas_are_capped() {
        let betas = cosine_betas(1000);
        assert_eq!(betas.len(), 1000);
        assert_eq!(*betas.last().unwrap(), 0.999);
        assert!(betas.windows(2).all(|w| w[0] <= w[1]));
    }
}
