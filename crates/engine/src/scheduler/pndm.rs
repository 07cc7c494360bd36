//! PNDM (Liu et al. 2022) as diffusers' `PNDMScheduler`: pseudo linear multistep
//! (PLMS) steps, after a Runge-Kutta warm-up unless `skip_prk_steps` is set.

use super::betas::{alphas_cumprod, betas};
use super::config::SchedulerConfig;
use super::kind::SchedulerKind;
use super::lookup::ClassKeys;
use super::settings::{CommonSettings, Prediction};
use super::spacing::descending_timesteps;
use super::tensors::{lincomb, to_working};
use super::{expect_step, step_out_of_range, Scheduler};
use crate::error::{EngineError, InvalidKind, Result};
use candle_core::Tensor;

/// `PNDMScheduler` after `set_timesteps(n)`, with its running state.
pub struct PndmScheduler {
    alphas_cumprod: Vec<f64>,
    /// ᾱ used past the end of the schedule (1 with `set_alpha_to_one`, else ᾱ_0).
    final_alpha_cumprod: f64,
    prediction: Prediction,
    /// `num_train_timesteps // n`: the distance between PLMS timesteps.
    step_ratio: i64,
    /// How many leading entries of `timesteps` are Runge-Kutta sub-steps (0 or 12).
    prk_steps: usize,
    timesteps: Vec<f64>,
    /// The number of steps taken since the start (diffusers' `counter`).
    counter: usize,
    /// Past model outputs, newest last (at most 4 are used).
    ets: Vec<Tensor>,
    /// Runge-Kutta: the weighted sum of this cycle's model outputs so far.
    rk_sum: Option<Tensor>,
    /// The sample the current Runge-Kutta cycle (or PLMS's first two steps) starts from.
    cur_sample: Option<Tensor>,
}

impl PndmScheduler {
    /// Builds the scheduler from a config as `PNDMScheduler.from_config` does, and sets
    /// `num_inference_steps`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let keys = ClassKeys::new(config, SchedulerKind::Pndm);
        let settings = CommonSettings::read(&keys)?;
        let skip_prk_steps = keys.bool("skip_prk_steps", false)?;
        let set_alpha_to_one = keys.bool("set_alpha_to_one", false)?;
        settings.check_steps(num_inference_steps)?;
        if !skip_prk_steps && num_inference_steps < 4 {
            return Err(EngineError::invalid(
                InvalidKind::BadGenerationSetting,
                "steps",
                "PNDM's Runge-Kutta warm-up (skip_prk_steps false) needs at least 4 steps",
            ));
        }
        let alphas_cumprod = alphas_cumprod(&betas(&settings, &keys)?);
        let final_alpha_cumprod = if set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let train = settings.num_train_timesteps;
        let step_ratio = (train / num_inference_steps) as i64;
        let base = descending_timesteps(
            settings.spacing,
            train,
            num_inference_steps,
            settings.steps_offset,
            true,
        );
        let (timesteps, prk_steps) = if skip_prk_steps {
            (plms_only_timesteps(&base), 0)
        } else {
            let prk = prk_timesteps(&base, (step_ratio / 2) as f64);
            let count = prk.len();
            // PLMS then continues below the last four base timesteps.
            let plms = base.iter().skip(3).copied();
            (prk.into_iter().chain(plms).collect(), count)
        };
        settings.check_timesteps(&timesteps, num_inference_steps)?;
        Ok(PndmScheduler {
            alphas_cumprod,
            final_alpha_cumprod,
            prediction: settings.prediction,
            step_ratio,
            prk_steps,
            timesteps,
            counter: 0,
            ets: Vec::new(),
            rk_sum: None,
            cur_sample: None,
        })
    }

    fn reset(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.rk_sum = None;
        self.cur_sample = None;
    }

    /// ᾱ at a timestep; below 0 it is the final ᾱ.
    fn alpha_at(&self, timestep: i64) -> Result<f64> {
        if timestep < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        self.alphas_cumprod
            .get(timestep as usize)
            .copied()
            .ok_or_else(|| step_out_of_range(timestep as usize, self.alphas_cumprod.len()))
    }

    /// One Runge-Kutta sub-step: four model evaluations per cycle, each moving from the
    /// cycle's start sample; the fourth combines them 1/6, 1/3, 1/3, 1/6.
    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let half_ratio = self.step_ratio / 2;
        let prev_timestep = timestep - if self.counter % 2 == 1 { 0 } else { half_ratio };
        let cycle_timestep = self.timesteps[self.counter / 4 * 4] as i64;
        let mut output = model_output.clone();
        match self.counter % 4 {
            0 => {
                self.rk_sum = Some(model_output.affine(1.0 / 6.0, 0.0)?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
            }
            1 | 2 => {
                let sum = self
                    .rk_sum
                    .take()
                    .expect("a Runge-Kutta cycle starts at counter % 4 == 0");
                self.rk_sum = Some(lincomb(&[(1.0, &sum), (1.0 / 3.0, model_output)])?);
            }
            _ => {
                let sum = self
                    .rk_sum
                    .take()
                    .expect("a Runge-Kutta cycle starts at counter % 4 == 0");
                output = lincomb(&[(1.0, &sum), (1.0 / 6.0, model_output)])?;
            }
        }
        let start = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        self.prev_sample(&start, cycle_timestep, prev_timestep, &output)
    }

    /// One PLMS step: Adams-Bashforth over the stored outputs, of growing order; its
    /// first two steps form a second-order warm-up at the same timestep.
    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let mut timestep = timestep;
        let mut prev_timestep = timestep - self.step_ratio;
        if self.counter != 1 {
            // Keep the three newest outputs, then add this one.
            let stale = self.ets.len().saturating_sub(3);
            self.ets.drain(..stale);
            self.ets.push(model_output.clone());
        } else {
            prev_timestep = timestep;
            timestep += self.step_ratio;
        }
        let e = |back: usize| &self.ets[self.ets.len() - back];
        let mut sample = sample.clone();
        let output = match (self.ets.len(), self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            (1, 1) => {
                sample = self
                    .cur_sample
                    .take()
                    .expect("PLMS's first step stores its sample");
                lincomb(&[(0.5, model_output), (0.5, e(1))])?
            }
            (2, _) => lincomb(&[(1.5, e(1)), (-0.5, e(2))])?,
            (3, _) => lincomb(&[
                (23.0 / 12.0, e(1)),
                (-16.0 / 12.0, e(2)),
                (5.0 / 12.0, e(3)),
            ])?,
            _ => lincomb(&[
                (55.0 / 24.0, e(1)),
                (-59.0 / 24.0, e(2)),
                (37.0 / 24.0, e(3)),
                (-9.0 / 24.0, e(4)),
            ])?,
        };
        self.prev_sample(&sample, timestep, prev_timestep, &output)
    }

    /// x_{t−δ} from x_t and ε (formula 9 of the PNDM paper).
    fn prev_sample(
        &self,
        sample: &Tensor,
        timestep: i64,
        prev_timestep: i64,
        output: &Tensor,
    ) -> Result<Tensor> {
        let alpha = self.alpha_at(timestep)?;
        let alpha_prev = self.alpha_at(prev_timestep)?;
        let (beta, beta_prev) = (1.0 - alpha, 1.0 - alpha_prev);
        let epsilon = match self.prediction {
            Prediction::Velocity => lincomb(&[(alpha.sqrt(), output), (beta.sqrt(), sample)])?,
            _ => output.clone(),
        };
        let sample_coeff = (alpha_prev / alpha).sqrt();
        let denom = alpha * beta_prev.sqrt() + (alpha * beta * alpha_prev).sqrt();
        Ok(lincomb(&[
            (sample_coeff, sample),
            (-(alpha_prev - alpha) / denom, &epsilon),
        ])?)
    }
}

/// PLMS without warm-up: the base timesteps with the second one repeated (its first
/// two model calls make one second-order step).
fn plms_only_timesteps(descending: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(descending.len() + 1);
    out.push(descending[0]);
    if descending.len() > 1 {
        out.push(descending[1]);
        out.extend_from_slice(&descending[1..]);
    }
    out
}

/// The Runge-Kutta sub-step timesteps over the four largest base timesteps: each
/// interval is visited at its start, twice at its midpoint, and at its end.
fn prk_timesteps(descending: &[f64], half_ratio: f64) -> Vec<f64> {
    // diffusers: [t, t + h] for each of the four, ascending; drop the last point, repeat
    // each twice, drop both ends, reverse.
    let mut points: Vec<f64> = descending[..4]
        .iter()
        .rev()
        .flat_map(|&t| [t, t + half_ratio])
        .collect();
    points.pop();
    let doubled: Vec<f64> = points.iter().flat_map(|&t| [t, t]).collect();
    doubled[1..doubled.len() - 1]
        .iter()
        .rev()
        .copied()
        .collect()
}

impl Scheduler for PndmScheduler {
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
        if step_index == 0 {
            self.reset();
        }
        expect_step(step_index, self.counter, self.timesteps.len())?;
        let dtype = sample.dtype();
        let (model_output, sample) = (to_working(model_output)?, to_working(sample)?);
        let timestep = self.timesteps[step_index] as i64;
        let prev = if self.counter < self.prk_steps {
            self.step_prk(&model_output, timestep, &sample)?
        } else {
            self.step_plms(&model_output, timestep, &sample)?
        };
        self.counter += 1;
        Ok(prev.to_dtype(dtype)?)
    }
}
