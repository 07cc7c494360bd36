//! DPM-Solver++ (Lu et al. 2022), multistep, as diffusers'
//! `DPMSolverMultistepScheduler`; its defaults are DPM++ 2M (solver_order 2,
//! dpmsolver++, midpoint, lower-order final steps).

use super::betas::{alphas_cumprod, betas};
use super::config::SchedulerConfig;
use super::euler::read_final_sigmas_type;
use super::kind::SchedulerKind;
use super::lookup::ClassKeys;
use super::settings::{BetaSchedule, CommonSettings, Prediction};
use super::sigmas::{interp, karras, sigma_to_t, train_sigmas};
use super::spacing::dpm_solver_timesteps;
use super::tensors::{lincomb, to_working};
use super::{expect_step, step_out_of_range, Scheduler};
use crate::error::Result;
use candle_core::Tensor;

/// `DPMSolverMultistepScheduler` after `set_timesteps(n)`, with its running state.
pub struct DpmSolverMultistepScheduler {
    prediction: Prediction,
    /// 1 or 2.
    solver_order: usize,
    /// Second-order update: `heun` (true) or `midpoint` (false).
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    /// `final_sigmas_type` is `zero` (the last step lands on x0).
    final_sigma_zero: bool,
    timesteps: Vec<f64>,
    /// σ at each timestep, then the final σ.
    sigmas: Vec<f64>,
    /// The predicted x0 of the last two steps, newest last.
    x0_history: Vec<Tensor>,
    /// How many steps have run (capped at `solver_order`).
    lower_order_nums: usize,
    /// The step expected next.
    next_step: usize,
}

impl DpmSolverMultistepScheduler {
    /// Builds the scheduler from a config as `DPMSolverMultistepScheduler.from_config`
    /// does, and sets `num_inference_steps`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let keys = ClassKeys::new(config, SchedulerKind::DpmSolverMultistep);
        let settings = CommonSettings::read(&keys)?;
        let solver_order = keys.usize("solver_order", 2)?;
        if !(1..=2).contains(&solver_order) {
            return Err(keys.error(
                "solver_order",
                format!("{solver_order} is not supported (1 or 2; DPM++ 3M is not implemented)"),
            ));
        }
        // diffusers maps the retired names `deis` and `logrho`/`bh1`/`bh2` this way.
        match keys.str("algorithm_type", "dpmsolver++")? {
            "dpmsolver++" | "deis" => {}
            other => {
                return Err(keys.error(
                    "algorithm_type",
                    format!("`{other}` is not supported (dpmsolver++)"),
                ))
            }
        }
        let heun = match keys.str("solver_type", "midpoint")? {
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            "heun" => true,
            other => {
                return Err(keys.error(
                    "solver_type",
                    format!("`{other}` is not supported (midpoint, heun)"),
                ))
            }
        };
        keys.refuse_if_true(
            "thresholding",
            "dynamic thresholding is for pixel-space models",
        )?;
        for key in [
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ] {
            keys.refuse_if_true(key, "only Karras sigmas are implemented")?;
        }
        if let Some(variance) = keys.opt_str("variance_type")? {
            return Err(keys.error(
                "variance_type",
                format!("`{variance}` is not supported (learned variances are not implemented)"),
            ));
        }
        let use_karras_sigmas = keys.bool("use_karras_sigmas", false)?;
        let final_sigma_zero = !read_final_sigmas_type(&keys)?;
        let lambda_min_clipped = keys.f64("lambda_min_clipped", f64::NEG_INFINITY)?;
        settings.check_steps(num_inference_steps)?;

        let alphas_cumprod = alphas_cumprod(&betas(&settings, &keys)?);
        let train = settings.num_train_timesteps;
        // λ_t = ln α_t − ln σ_t falls with t; clipping drops the timesteps whose λ is
        // below `lambda_min_clipped`.
        let clipped = alphas_cumprod
            .iter()
            .filter(|&&a| a.sqrt().ln() - (1.0 - a).sqrt().ln() < lambda_min_clipped)
            .count();
        let last_timestep = train - clipped;
        let mut timesteps = dpm_solver_timesteps(
            settings.spacing,
            train,
            last_timestep,
            num_inference_steps,
            settings.steps_offset,
        );
        settings.check_timesteps(&timesteps, num_inference_steps)?;
        let train_sigmas = train_sigmas(&alphas_cumprod);
        let mut sigmas: Vec<f64> = if use_karras_sigmas {
            // `sigma_min` / `sigma_max` are not DPMSolverMultistep keys, but diffusers
            // keeps the file's other keys in the config, where they bound these sigmas.
            let sigma_min = keys.opt_f64("sigma_min")?.unwrap_or(train_sigmas[0]);
            let sigma_max = keys
                .opt_f64("sigma_max")?
                .unwrap_or(train_sigmas[train - 1]);
            let sigmas = karras(sigma_min, sigma_max, num_inference_steps);
            let log_sigmas: Vec<f64> = train_sigmas.iter().map(|s| s.ln()).collect();
            // Integer timesteps: rounded, except for squaredcos_cap_v2 where diffusers
            // skips the rounding and the int64 cast truncates.
            let whole: fn(f64) -> f64 = if settings.beta_schedule == BetaSchedule::SquaredCosCapV2 {
                f64::trunc
            } else {
                f64::round_ties_even
            };
            timesteps = sigmas
                .iter()
                .map(|&s| whole(sigma_to_t(s, &log_sigmas)))
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| interp(t, &train_sigmas))
                .collect()
        };
        sigmas.push(if final_sigma_zero {
            0.0
        } else {
            train_sigmas[0]
        });
        Ok(DpmSolverMultistepScheduler {
            prediction: settings.prediction,
            solver_order,
            heun,
            lower_order_final: keys.bool("lower_order_final", true)?,
            euler_at_final: keys.bool("euler_at_final", false)?,
            final_sigma_zero,
            timesteps,
            sigmas,
            x0_history: Vec::with_capacity(2),
            lower_order_nums: 0,
            next_step: 0,
        })
    }

    fn reset(&mut self) {
        self.x0_history.clear();
        self.lower_order_nums = 0;
        self.next_step = 0;
    }

    /// The model output turned into a prediction of x0 (DPM-Solver++ works on x0).
    fn predict_x0(&self, output: &Tensor, sample: &Tensor, sigma: f64) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        Ok(match self.prediction {
            Prediction::Epsilon => {
                lincomb(&[(1.0 / alpha_t, sample), (-sigma_t / alpha_t, output)])?
            }
            Prediction::Sample => output.clone(),
            Prediction::Velocity => lincomb(&[(alpha_t, sample), (-sigma_t, output)])?,
        })
    }

    /// Whether step `i` of `len` falls back to first order (diffusers' `lower_order_final`).
    fn first_order_at(&self, i: usize) -> bool {
        let len = self.timesteps.len();
        let final_step = i == len - 1
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || self.final_sigma_zero);
        self.solver_order == 1 || self.lower_order_nums < 1 || final_step
    }
}

/// (α_t, σ_t) of the variance-preserving process at noise level σ (α = 1/sqrt(σ²+1)).
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = ln(α/σ), the half log-SNR; +∞ at σ = 0, which makes the update land on x0.
fn lambda(alpha: f64, sigma: f64) -> f64 {
    alpha.ln() - sigma.ln()
}

impl Scheduler for DpmSolverMultistepScheduler {
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
        expect_step(step_index, self.next_step, self.timesteps.len())?;
        let i = step_index;
        let dtype = sample.dtype();
        let (output, sample) = (to_working(model_output)?, to_working(sample)?);
        let x0 = self.predict_x0(&output, &sample, self.sigmas[i])?;
        if self.x0_history.len() == 2 {
            self.x0_history.remove(0);
        }
        self.x0_history.push(x0);

        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s0, sigma_s0);
        // α_t·(e^{−h} − 1): the weight of x0 in the first-order (DDIM-like) update.
        let a = alpha_t * ((-h).exp() - 1.0);
        let m0 = &self.x0_history[self.x0_history.len() - 1];
        let prev = if self.first_order_at(i) {
            lincomb(&[(sigma_t / sigma_s0, &sample), (-a, m0)])?
        } else {
            let m1 = &self.x0_history[0];
            let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
            let r0 = (lambda(alpha_s0, sigma_s0) - lambda(alpha_s1, sigma_s1)) / h;
            // D1 = (m0 − m1)/r0 enters with weight −a/2 (midpoint) or α_t((e^{−h}−1)/h + 1) (Heun).
            let d1_weight = if self.heun {
                alpha_t * (((-h).exp() - 1.0) / h + 1.0)
            } else {
                -0.5 * a
            };
            let c1 = d1_weight / r0;
            lincomb(&[(sigma_t / sigma_s0, &sample), (-a + c1, m0), (-c1, m1)])?
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        self.next_step += 1;
        Ok(prev.to_dtype(dtype)?)
    }
}
