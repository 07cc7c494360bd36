//! The diffusion schedulers: PNDM, DDIM, Euler and DPM++ 2M, each reproducing the
//! diffusers 0.42 class built with `Class.from_config(scheduler_config.json)` and
//! `set_timesteps(n)`: keys the file has are used, keys it lacks take that class's
//! defaults, and settings we do not implement are refused rather than ignored.
//!
//! Schedule arithmetic (betas, ᾱ, σ, step coefficients) runs in f64; tensor arithmetic
//! in the sample's dtype (f32 for half-precision samples, cast back on return).

mod betas;
mod config;
mod ddim;
mod dpm_solver;
mod euler;
mod kind;
mod lookup;
mod pndm;
mod settings;
mod sigmas;
mod spacing;
mod tensors;

pub use config::SchedulerConfig;
pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use kind::SchedulerKind;
pub use pndm::PndmScheduler;

use crate::error::{EngineError, InvalidKind, Result};
use candle_core::Tensor;

/// One denoising schedule, set for a fixed number of inference steps. The loop is:
/// `x = noise · init_noise_sigma()`; for each `i` in `0..timesteps().len()`: run the
/// model on `scale_model_input(x, i)` at `timesteps()[i]`, then
/// `x = step(model_output, i, x)`.
pub trait Scheduler: Send {
    /// The timesteps the model is called at, in order (diffusers' `scheduler.timesteps`
    /// after `set_timesteps(n)`; PNDM has one more than `n`, or more with its warm-up).
    fn timesteps(&self) -> &[f64];

    /// The factor that turns unit Gaussian noise into the initial sample.
    fn init_noise_sigma(&self) -> f64;

    /// The model's input at step `step_index` (Euler divides by sqrt(σ² + 1)).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;

    /// The sample after step `step_index`. Multistep schedulers keep state, so steps
    /// must come in order; step 0 starts a new run.
    fn step(&mut self, model_output: &Tensor, step_index: usize, sample: &Tensor)
        -> Result<Tensor>;
}

/// Builds the scheduler `kind` from a config file's contents, set for
/// `num_inference_steps`.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::Pndm => Box::new(PndmScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config, num_inference_steps)?),
        SchedulerKind::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::new(
            config,
            num_inference_steps,
        )?),
    })
}

/// The error for a step index past the schedule.
fn step_out_of_range(step_index: usize, len: usize) -> EngineError {
    EngineError::invalid(
        InvalidKind::BadGenerationSetting,
        "step_index",
        format!("step {step_index} is past the schedule's {len} timesteps"),
    )
}

/// Checks that a stateful scheduler gets its steps in order.
fn expect_step(step_index: usize, expected: usize, len: usize) -> Result<()> {
    if step_index >= len {
        return Err(step_out_of_range(step_index, len));
    }
    if step_index != expected {
        return Err(EngineError::invalid(
            InvalidKind::BadGenerationSetting,
            "step_index",
            format!("multistep scheduler expected step {expected}, got {step_index}"),
        ));
    }
    Ok(())
}
