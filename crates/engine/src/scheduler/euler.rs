//! Euler's method on the probability-flow ODE in σ (Karras et al. 2022), as diffusers'
//! `EulerDiscreteScheduler` (deterministic: s_churn = 0).

use super::betas::{alphas_cumprod, betas};
use super::config::SchedulerConfig;
use super::kind::SchedulerKind;
use super::lookup::ClassKeys;
use super::settings::{CommonSettings, Prediction, Spacing};
use super::sigmas::{interp, karras, sigma_to_t, train_sigmas};
use super::spacing::descending_timesteps;
use super::tensors::{lincomb, to_working};
use super::{step_out_of_range, Scheduler};
use crate::error::Result;
use candle_core::Tensor;

/// `EulerDiscreteScheduler` after `set_timesteps(n)`. It keeps no state between steps.
pub struct EulerDiscreteScheduler {
    prediction: Prediction,
    /// Fractional timesteps, rounded to f32 as diffusers hands them to the model.
    timesteps: Vec<f64>,
    /// σ at each timestep, then the final σ (0, or σ_min with `final_sigmas_type`).
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl EulerDiscreteScheduler {
    /// Builds the scheduler from a config as `EulerDiscreteScheduler.from_config` does,
    /// and sets `num_inference_steps`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let keys = ClassKeys::new(config, SchedulerKind::Euler);
        let settings = CommonSettings::read(&keys)?;
        let interpolation = keys.str("interpolation_type", "linear")?;
        if interpolation != "linear" {
            return Err(keys.error(
                "interpolation_type",
                format!("`{interpolation}` is not supported (linear)"),
            ));
        }
        let use_karras_sigmas = keys.bool("use_karras_sigmas", false)?;
        keys.refuse_if_true(
            "use_exponential_sigmas",
            "only Karras sigmas are implemented",
        )?;
        keys.refuse_if_true("use_beta_sigmas", "only Karras sigmas are implemented")?;
        let continuous = match keys.str("timestep_type", "discrete")? {
            "discrete" => false,
            "continuous" => true,
            other => {
                return Err(keys.error(
                    "timestep_type",
                    format!("`{other}` is not supported (discrete, continuous)"),
                ))
            }
        };
        let final_sigma_min = read_final_sigmas_type(&keys)?;
        settings.check_steps(num_inference_steps)?;

        let train = train_sigmas(&alphas_cumprod(&betas(&settings, &keys)?));
        let mut timesteps: Vec<f64> = descending_timesteps(
            settings.spacing,
            settings.num_train_timesteps,
            num_inference_steps,
            settings.steps_offset,
            false,
        )
        .into_iter()
        .map(to_f32)
        .collect();
        settings.check_timesteps(&timesteps, num_inference_steps)?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(t, &train)).collect();
        if use_karras_sigmas {
            // Bounded by the interpolated σ at the first and last timestep unless the
            // file says otherwise.
            let sigma_min = keys
                .opt_f64("sigma_min")?
                .unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = keys.opt_f64("sigma_max")?.unwrap_or(sigmas[0]);
            sigmas = karras(sigma_min, sigma_max, num_inference_steps);
            let log_sigmas: Vec<f64> = train.iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| to_f32(sigma_to_t(s, &log_sigmas)))
                .collect();
        }
        sigmas.push(if final_sigma_min { train[0] } else { 0.0 });
        if continuous && settings.prediction == Prediction::Velocity {
            // The model was trained on c_noise = ln(σ)/4 instead of a timestep.
            timesteps = sigmas[..num_inference_steps]
                .iter()
                .map(|s| to_f32(0.25 * s.ln()))
                .collect();
        }
        let max_sigma = sigmas.iter().copied().fold(f64::MIN, f64::max);
        let init_noise_sigma = match settings.spacing {
            Spacing::Linspace | Spacing::Trailing => max_sigma,
            Spacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(EulerDiscreteScheduler {
            prediction: settings.prediction,
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    fn sigma(&self, step_index: usize) -> Result<f64> {
        match self.sigmas.get(step_index) {
            Some(&sigma) if step_index < self.timesteps.len() => Ok(sigma),
            _ => Err(step_out_of_range(step_index, self.timesteps.len())),
        }
    }
}

/// `final_sigmas_type`: true for `sigma_min`, false for `zero`.
pub(crate) fn read_final_sigmas_type(keys: &ClassKeys) -> Result<bool> {
    match keys.str("final_sigmas_type", "zero")? {
        "zero" => Ok(false),
        "sigma_min" => Ok(true),
        other => Err(keys.error(
            "final_sigmas_type",
            format!("`{other}` is not supported (zero, sigma_min)"),
        )),
    }
}

/// The value as diffusers stores it, in an f32 tensor.
fn to_f32(x: f64) -> f64 {
    x as f32 as f64
}

impl Scheduler for EulerDiscreteScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        let sigma = self.sigma(step_index)?;
        Ok(sample.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let sigma = self.sigma(step_index)?;
        let dtype = sample.dtype();
        let (output, sample) = (to_working(model_output)?, to_working(sample)?);
        let x0 = match self.prediction {
            Prediction::Epsilon => lincomb(&[(1.0, &sample), (-sigma, &output)])?,
            Prediction::Sample => output,
            Prediction::Velocity => {
                let scale = sigma * sigma + 1.0;
                lincomb(&[(-sigma / scale.sqrt(), &output), (1.0 / scale, &sample)])?
            }
        };
        // x_next = x + (x − x0)/σ · (σ_next − σ)
        let dt_over_sigma = (self.sigmas[step_index + 1] - sigma) / sigma;
        let prev = lincomb(&[(1.0 + dt_over_sigma, &sample), (-dt_over_sigma, &x0)])?;
        Ok(prev.to_dtype(dtype)?)
    }
}
