//! The keys all four classes share, read with each class's own defaults.

use super::kind::SchedulerKind;
use super::lookup::ClassKeys;
use crate::error::{EngineError, InvalidKind, Result};

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    /// The added noise.
    Epsilon,
    /// The velocity `sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0` (`v_prediction`).
    Velocity,
    /// The clean sample x0 (`sample`; Euler also accepts `original_sample`).
    Sample,
}

/// How inference timesteps are spread over the training ones (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

/// How betas are laid out over the training timesteps (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

/// The noise schedule and timestep keys every class declares.
#[derive(Debug, Clone)]
pub(crate) struct CommonSettings {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; when set they replace the schedule.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: i64,
}

impl CommonSettings {
    /// Reads the shared keys; defaults are diffusers 0.42's `__init__` defaults of the
    /// class (identical for all four except `timestep_spacing`).
    pub(crate) fn read(keys: &ClassKeys) -> Result<Self> {
        let kind = keys.kind();
        let num_train_timesteps = keys.usize("num_train_timesteps", 1000)?;
        if num_train_timesteps < 2 {
            return Err(keys.error("num_train_timesteps", "must be at least 2"));
        }
        let beta_schedule = match keys.str("beta_schedule", "linear")? {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            other => {
                return Err(keys.error(
                    "beta_schedule",
                    format!(
                        "`{other}` is not supported (linear, scaled_linear, squaredcos_cap_v2)"
                    ),
                ))
            }
        };
        let default_spacing = match kind {
            SchedulerKind::Pndm | SchedulerKind::Ddim => "leading",
            SchedulerKind::Euler | SchedulerKind::DpmSolverMultistep => "linspace",
        };
        let spacing = match keys.str("timestep_spacing", default_spacing)? {
            "leading" => Spacing::Leading,
            "linspace" => Spacing::Linspace,
            "trailing" => Spacing::Trailing,
            other => {
                return Err(keys.error(
                    "timestep_spacing",
                    format!("`{other}` is not supported (leading, linspace, trailing)"),
                ))
            }
        };
        if kind != SchedulerKind::Pndm {
            keys.refuse_if_true(
                "rescale_betas_zero_snr",
                "zero-terminal-SNR rescaling is not implemented",
            )?;
        }
        Ok(CommonSettings {
            num_train_timesteps,
            beta_start: keys.f64("beta_start", 0.0001)?,
            beta_end: keys.f64("beta_end", 0.02)?,
            beta_schedule,
            trained_betas: keys.opt_f64_list("trained_betas")?,
            prediction: read_prediction(keys)?,
            spacing,
            steps_offset: keys.i64("steps_offset", 0)?,
        })
    }

    /// Refuses a step count no schedule can serve: zero, or more steps than training
    /// timesteps (diffusers refuses that in DDIM and silently repeats or overflows
    /// timesteps in the others).
    pub(crate) fn check_steps(&self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 || num_inference_steps > self.num_train_timesteps {
            return Err(EngineError::invalid(
                InvalidKind::BadGenerationSetting,
                "steps",
                format!(
                    "{num_inference_steps} inference steps: expected 1 to {}",
                    self.num_train_timesteps
                ),
            ));
        }
        Ok(())
    }

    /// Refuses timesteps outside the trained range. Some spacings produce them in
    /// diffusers (e.g. `trailing` with 61 steps gives a final timestep of -1, `leading`
    /// with `steps_offset` 1 and 1000 steps gives 1000), where the result is an index
    /// error or a silently wrapped index; we say so instead.
    pub(crate) fn check_timesteps(
        &self,
        timesteps: &[f64],
        num_inference_steps: usize,
    ) -> Result<()> {
        let last = (self.num_train_timesteps - 1) as f64;
        if let Some(bad) = timesteps.iter().find(|t| !(0.0..=last).contains(*t)) {
            return Err(EngineError::invalid(
                InvalidKind::BadGenerationSetting,
                "steps",
                format!(
                    "{num_inference_steps} steps with {:?} spacing and steps_offset {} give \
                     timestep {bad}, outside 0..={last}; choose another step count",
                    self.spacing, self.steps_offset
                ),
            ));
        }
        Ok(())
    }
}

/// `prediction_type`, restricted to what the class supports.
fn read_prediction(keys: &ClassKeys) -> Result<Prediction> {
    let kind = keys.kind();
    let name = keys.str("prediction_type", "epsilon")?;
    let prediction = match name {
        "epsilon" => Some(Prediction::Epsilon),
        "v_prediction" => Some(Prediction::Velocity),
        "sample" if kind != SchedulerKind::Pndm => Some(Prediction::Sample),
        "original_sample" if kind == SchedulerKind::Euler => Some(Prediction::Sample),
        _ => None,
    };
    prediction.ok_or_else(|| {
        let supported = match kind {
            SchedulerKind::Pndm => "epsilon, v_prediction",
            SchedulerKind::Euler => "epsilon, v_prediction, sample, original_sample",
            SchedulerKind::Ddim | SchedulerKind::DpmSolverMultistep => {
                "epsilon, v_prediction, sample"
            }
        };
        keys.error(
            "prediction_type",
            format!("`{name}` is not supported ({supported})"),
        )
    })
}
