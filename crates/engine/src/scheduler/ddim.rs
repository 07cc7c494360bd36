//! DDIM (Song et al. 2021) as diffusers' `DDIMScheduler`, deterministic (eta = 0, the
//! Stable Diffusion pipeline's default).

use super::betas::{alphas_cumprod, betas};
use super::config::SchedulerConfig;
use super::kind::SchedulerKind;
use super::lookup::ClassKeys;
use super::settings::{CommonSettings, Prediction};
use super::spacing::descending_timesteps;
use super::tensors::{lincomb, to_working};
use super::{step_out_of_range, Scheduler};
use crate::error::Result;
use candle_core::Tensor;

/// `DDIMScheduler` after `set_timesteps(n)`. It keeps no state between steps.
pub struct DdimScheduler {
    alphas_cumprod: Vec<f64>,
    /// ᾱ used past the end of the schedule (1 with `set_alpha_to_one`, else ᾱ_0).
    final_alpha_cumprod: f64,
    prediction: Prediction,
    /// `Some(range)`: clamp the predicted x0 to [−range, range] (`clip_sample`).
    clip_range: Option<f64>,
    /// `num_train_timesteps // n`. diffusers steps back by this for every spacing,
    /// even where the timesteps themselves are spaced differently.
    step_ratio: i64,
    timesteps: Vec<f64>,
}

impl DdimScheduler {
    /// Builds the scheduler from a config as `DDIMScheduler.from_config` does, and sets
    /// `num_inference_steps`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let keys = ClassKeys::new(config, SchedulerKind::Ddim);
        let settings = CommonSettings::read(&keys)?;
        keys.refuse_if_true(
            "thresholding",
            "dynamic thresholding is for pixel-space models; latent diffusion does not use it",
        )?;
        let clip_sample = keys.bool("clip_sample", true)?;
        let clip_sample_range = keys.f64("clip_sample_range", 1.0)?;
        let set_alpha_to_one = keys.bool("set_alpha_to_one", true)?;
        settings.check_steps(num_inference_steps)?;
        let alphas_cumprod = alphas_cumprod(&betas(&settings, &keys)?);
        let final_alpha_cumprod = if set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let timesteps = descending_timesteps(
            settings.spacing,
            settings.num_train_timesteps,
            num_inference_steps,
            settings.steps_offset,
            true,
        );
        settings.check_timesteps(&timesteps, num_inference_steps)?;
        Ok(DdimScheduler {
            alphas_cumprod,
            final_alpha_cumprod,
            prediction: settings.prediction,
            clip_range: clip_sample.then_some(clip_sample_range),
            step_ratio: (settings.num_train_timesteps / num_inference_steps) as i64,
            timesteps,
        })
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        if step_index >= self.timesteps.len() {
            return Err(step_out_of_range(step_index, self.timesteps.len()));
        }
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let Some(&timestep) = self.timesteps.get(step_index) else {
            return Err(step_out_of_range(step_index, self.timesteps.len()));
        };
        let dtype = sample.dtype();
        let (output, sample) = (to_working(model_output)?, to_working(sample)?);
        let timestep = timestep as i64;
        let prev_timestep = timestep - self.step_ratio;
        let alpha = self.alphas_cumprod[timestep as usize];
        let alpha_prev = if prev_timestep >= 0 {
            self.alphas_cumprod[prev_timestep as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta = 1.0 - alpha;
        let (sa, sb) = (alpha.sqrt(), beta.sqrt());
        let (x0, epsilon) = match self.prediction {
            Prediction::Epsilon => (
                lincomb(&[(1.0 / sa, &sample), (-sb / sa, &output)])?,
                output,
            ),
            Prediction::Sample => {
                let epsilon = lincomb(&[(1.0 / sb, &sample), (-sa / sb, &output)])?;
                (output, epsilon)
            }
            Prediction::Velocity => (
                lincomb(&[(sa, &sample), (-sb, &output)])?,
                lincomb(&[(sa, &output), (sb, &sample)])?,
            ),
        };
        let x0 = match self.clip_range {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        // eta = 0: no noise, and the direction term is sqrt(1 − ᾱ_prev)·ε (from the
        // unclipped ε, as diffusers without `use_clipped_model_output`).
        let prev = lincomb(&[
            (alpha_prev.sqrt(), &x0),
            ((1.0 - alpha_prev).sqrt(), &epsilon),
        ])?;
        Ok(prev.to_dtype(dtype)?)
    }
}
