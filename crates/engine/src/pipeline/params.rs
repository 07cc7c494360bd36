//! What a generation asks for, and the checks that need no model.

use crate::error::{EngineError, InvalidKind, Result};
use crate::scheduler::SchedulerKind;
use candle_core::Tensor;

/// The settings of one text-to-image generation.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub prompt: String,
    /// Empty means unconditional (the empty prompt ""), as in diffusers.
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; at or below 1 the unconditional pass is skipped.
    pub guidance_scale: f64,
    pub width: usize,
    pub height: usize,
    /// Seeds the initial noise; the same seed gives the same image on every device.
    pub seed: u64,
    pub scheduler: SchedulerKind,
    /// Replaces the seeded noise: [1, 4, height/8, width/8], before scaling by the
    /// scheduler's `init_noise_sigma` (as diffusers' `latents=` argument).
    pub init_latents: Option<Tensor>,
}

impl GenerateParams {
    /// diffusers' defaults for a prompt: 50 steps, guidance 7.5, 512×512, seed 0.
    pub fn new(prompt: impl Into<String>, scheduler: SchedulerKind) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 7.5,
            width: 512,
            height: 512,
            seed: 0,
            scheduler,
            init_latents: None,
        }
    }

    /// Refuses settings no model can run: sizes that are not positive multiples of 8,
    /// no steps, a negative or non-finite guidance scale. (Upper limits are the
    /// server's business.)
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value % 8 != 0 {
                return Err(bad_setting(
                    field,
                    format!("must be a positive multiple of 8, got {value}"),
                ));
            }
        }
        if self.steps == 0 {
            return Err(bad_setting("steps", "must be at least 1"));
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(bad_setting(
                "guidance_scale",
                format!("must be a finite number >= 0, got {}", self.guidance_scale),
            ));
        }
        Ok(())
    }

    /// Whether the unconditional half of the batch is needed (diffusers: guidance > 1).
    pub fn uses_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

fn bad_setting(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::invalid(InvalidKind::BadGenerationSetting, field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerateParams {
        GenerateParams::new("a photo of a cat", SchedulerKind::Ddim)
    }

    fn refused_field(params: &GenerateParams) -> String {
        match params.validate() {
            Err(EngineError::Invalid {
                kind: InvalidKind::BadGenerationSetting,
                field,
                ..
            }) => field,
            other => panic!("expected BadGenerationSetting, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        params().validate().unwrap();
    }

    #[test]
    fn sizes_must_be_positive_multiples_of_eight() {
        assert_eq!(
            refused_field(&GenerateParams {
                width: 100,
                ..params()
            }),
            "width"
        );
        assert_eq!(
            refused_field(&GenerateParams {
                height: 0,
                ..params()
            }),
            "height"
        );
        GenerateParams {
            width: 64,
            height: 72,
            ..params()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn steps_and_guidance_are_checked() {
        assert_eq!(
            refused_field(&GenerateParams {
                steps: 0,
                ..params()
            }),
            "steps"
        );
        for g in [-0.5, f64::NAN, f64::INFINITY] {
            let p = GenerateParams {
                guidance_scale: g,
                ..params()
            };
            assert_eq!(refused_field(&p), "guidance_scale");
        }
        GenerateParams {
            guidance_scale: 0.0,
            ..params()
        }
        .validate()
        .unwrap();
    }
}
