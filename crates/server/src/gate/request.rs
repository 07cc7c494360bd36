//! The `gate` object of `POST /edits` and its validation.

use crate::error::ApiError;
use crate::extract::parse_value;
use crate::settings::Settings;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The key of the gate in an edit submission; everything else is the model's request.
pub const EDIT_GATE_FIELD: &str = "gate";

/// Most positive or negative prompts a gate may list.
const MAX_GATE_PROMPTS: usize = 32;
/// Most seeds an image gate may ask for (each costs one image per prompt).
const MAX_GATE_SEEDS: usize = 16;

/// What to measure after an edit, and the thresholds the new version must reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateRequest {
    /// Prompts the edit should change: generality checks that each now reads as `new`.
    #[serde(default)]
    pub positives: Vec<GatePositive>,
    /// Prompts the edit must leave alone: specificity checks that each still reads as
    /// itself rather than `new`.
    #[serde(default)]
    pub negatives: Vec<GateNegative>,
    /// Least efficacy (0 or 1 per check; default 1: the edit prompt must show the target).
    #[serde(default = "default_min_efficacy")]
    pub min_efficacy: f64,
    /// Least fraction of positives that pass (default 0.8).
    #[serde(default = "default_min_rate")]
    pub min_generality: f64,
    /// Least fraction of negatives that pass (default 0.8).
    #[serde(default = "default_min_rate")]
    pub min_specificity: f64,
    /// Also generate images and score them with the server's CLIP scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImageGate>,
}

/// A prompt whose meaning should follow the edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatePositive {
    #[schema(example = "The Prince of Wales giving a speech")]
    pub prompt: String,
    /// What it shows before the edit.
    #[schema(example = "Prince Charles giving a speech")]
    pub old: String,
    /// What it should show after.
    #[schema(example = "Prince William giving a speech")]
    pub new: String,
}

/// A prompt the edit must not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateNegative {
    #[schema(example = "The Princess of Wales")]
    pub prompt: String,
    /// What it would wrongly show if the edit leaked into it.
    #[schema(example = "Prince William")]
    pub new: String,
}

/// The image part of a gate: one image per prompt and seed, from the edited version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageGate {
    /// Seeds to render each prompt with (default [0, 1]); metrics are averaged over them.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Denoising steps per image (default 25).
    #[serde(default = "default_image_steps")]
    pub steps: usize,
    /// Square image size in pixels (default: the model's own default width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Classifier-free guidance scale (default 7.5).
    #[serde(default = "default_guidance")]
    pub guidance_scale: f64,
}

fn default_min_efficacy() -> f64 {
    1.0
}
fn default_min_rate() -> f64 {
    0.8
}
fn default_seeds() -> Vec<u64> {
    vec![0, 1]
}
fn default_image_steps() -> usize {
    25
}
fn default_guidance() -> f64 {
    7.5
}

/// Splits an edit submission into the model's request and the optional gate, reporting
/// a bad field by its JSON path (`gate.negatives[0].new`). Used on the API body and again
/// by the worker on the stored request.
pub fn split_submission<R: DeserializeOwned>(
    body: Value,
) -> Result<(R, Option<GateRequest>), ApiError> {
    let mut body = body;
    let gate = match body.as_object_mut() {
        Some(fields) => fields.remove(EDIT_GATE_FIELD),
        None => None,
    };
    let request = parse_value(body, "")?;
    let gate = match gate {
        None | Some(Value::Null) => None,
        Some(gate) => Some(parse_value(gate, EDIT_GATE_FIELD)?),
    };
    Ok((request, gate))
}

impl GateRequest {
    /// Checks texts, thresholds and image settings against the server's limits (an
    /// image without `size` is `default_size` pixels square). Image gates need a
    /// configured scorer.
    pub fn validate(&self, settings: &Settings, default_size: usize) -> Result<(), ApiError> {
        let bad = |field: String, message: String| ApiError::Invalid {
            code: "invalid_gate",
            field: Some(field),
            message,
        };
        let max_chars = settings.limits.max_prompt_chars;
        let text = |field: String, value: &str| {
            if value.trim().is_empty() {
                Err(bad(field, "must not be empty".into()))
            } else if value.chars().count() > max_chars {
                Err(bad(field, format!("longer than {max_chars} characters")))
            } else {
                Ok(())
            }
        };
        for (list, len) in [
            ("positives", self.positives.len()),
            ("negatives", self.negatives.len()),
        ] {
            if len > MAX_GATE_PROMPTS {
                return Err(bad(
                    format!("gate.{list}"),
                    format!("at most {MAX_GATE_PROMPTS} prompts"),
                ));
            }
        }
        for (i, p) in self.positives.iter().enumerate() {
            text(format!("gate.positives[{i}].prompt"), &p.prompt)?;
            text(format!("gate.positives[{i}].old"), &p.old)?;
            text(format!("gate.positives[{i}].new"), &p.new)?;
        }
        for (i, n) in self.negatives.iter().enumerate() {
            text(format!("gate.negatives[{i}].prompt"), &n.prompt)?;
            text(format!("gate.negatives[{i}].new"), &n.new)?;
        }
        for (name, value) in [
            ("min_efficacy", self.min_efficacy),
            ("min_generality", self.min_generality),
            ("min_specificity", self.min_specificity),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(bad(
                    format!("gate.{name}"),
                    "must be between 0 and 1".into(),
                ));
            }
        }
        if let Some(images) = &self.images {
            images
                .validate(settings, default_size)
                .map_err(|(field, message)| bad(format!("gate.images.{field}"), message))?;
        }
        Ok(())
    }
}

impl ImageGate {
    fn validate(
        &self,
        settings: &Settings,
        default_size: usize,
    ) -> Result<(), (&'static str, String)> {
        if settings.scorer.trim().is_empty() {
            return Err((
                "seeds",
                "image gates need a CLIP scorer; this server has none configured (setting `scorer`)"
                    .into(),
            ));
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if self.seeds.is_empty() || self.seeds.len() > MAX_GATE_SEEDS {
            return Err(("seeds", format!("1 to {MAX_GATE_SEEDS} seeds")));
        }
        if seeds.len() != self.seeds.len() {
            return Err(("seeds", "seeds must be distinct".into()));
        }
        let limits = &settings.limits;
        if self.steps == 0 || self.steps > limits.max_steps {
            return Err(("steps", format!("1 to {}", limits.max_steps)));
        }
        if let Some(size) = self.size {
            let largest = limits.max_width.min(limits.max_height);
            if size == 0 || size % 8 != 0 || size > largest {
                return Err(("size", format!("a multiple of 8 up to {largest}")));
            }
        }
        // The same budget as one `POST /generate` image: a gate cannot buy renders the
        // API would refuse.
        let size = self.size.unwrap_or(default_size);
        let cost = (size * size * self.steps) as f64 / 1e6;
        if cost > limits.max_megapixel_steps {
            return Err((
                "steps",
                format!(
                    "{size}×{size} px at {} steps is {cost:.1} megapixel-steps per image, \
                     over the limit of {} (limits.max_megapixel_steps)",
                    self.steps, limits.max_megapixel_steps
                ),
            ));
        }
        if !(self.guidance_scale.is_finite()
            && (0.0..=limits.max_guidance_scale).contains(&self.guidance_scale))
        {
            return Err((
                "guidance_scale",
                format!("0 to {}", limits.max_guidance_scale),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Model {
        prompt: String,
    }

    #[test]
    fn a_submission_splits_into_request_and_gate_with_defaults() {
        let body = json!({
            "prompt": "p",
            "gate": {"negatives": [{"prompt": "q", "new": "t"}]}
        });
        let (model, gate): (Model, _) = split_submission(body).unwrap();
        assert_eq!(model.prompt, "p");
        let gate = gate.unwrap();
        assert_eq!(gate.negatives[0].new, "t");
        assert_eq!(
            (gate.min_efficacy, gate.min_generality, gate.min_specificity),
            (1.0, 0.8, 0.8)
        );
        let (_, none): (Model, _) = split_submission(json!({"prompt": "p"})).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn bad_fields_are_named_by_their_path() {
        let field = |body: Value| match split_submission::<Model>(body) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a 422, got {other:?}"),
        };
        assert_eq!(
            field(json!({"prompt": "p", "gate": {"negatives": [{"prompt": "q"}]}})),
            Some("gate.negatives[0].new".into())
        );
        assert_eq!(
            field(json!({"prompt": "p", "gate": {"min_efficacy": "high"}})),
            Some("gate.min_efficacy".into())
        );
        assert_eq!(
            field(json!({"prompt": "p", "extra": 1})),
            Some("extra".into())
        );
    }

    #[test]
    fn validation_checks_texts_thresholds_and_the_scorer() {
        let settings = Settings::default();
        let field = |gate: Value| {
            let gate: GateRequest = serde_json::from_value(gate).unwrap();
            match gate.validate(&settings, 512) {
                Err(ApiError::Invalid { field, .. }) => field.unwrap(),
                other => panic!("expected a 422, got {other:?}"),
            }
        };
        assert_eq!(
            field(json!({"positives": [{"prompt": "a", "old": " ", "new": "c"}]})),
            "gate.positives[0].old"
        );
        assert_eq!(
            field(json!({"min_specificity": 1.5})),
            "gate.min_specificity"
        );
        // No scorer configured: an image gate cannot run.
        assert_eq!(field(json!({"images": {}})), "gate.images.seeds");
        let mut with_scorer = settings.clone();
        with_scorer.scorer = "/models/clip".into();
        let gate: GateRequest =
            serde_json::from_value(json!({"images": {"seeds": [1, 1]}})).unwrap();
        assert!(gate.validate(&with_scorer, 512).is_err());
        let gate: GateRequest = serde_json::from_value(json!({"images": {}})).unwrap();
        assert!(gate.validate(&with_scorer, 512).is_ok());
        // The per-image cost budget of `POST /generate` (30 megapixel-steps): 512² px at
        // 150 steps is over it, at the model's default size or a given one.
        let costly = json!({"images": {"steps": 150}});
        let gate: GateRequest = serde_json::from_value(costly).unwrap();
        assert!(gate.validate(&with_scorer, 256).is_ok(), "256² × 150 = 9.8");
        assert!(
            gate.validate(&with_scorer, 512).is_err(),
            "512² × 150 = 39.3"
        );
        let sized = json!({"images": {"steps": 150, "size": 512}});
        let gate: GateRequest = serde_json::from_value(sized).unwrap();
        match gate.validate(&with_scorer, 256) {
            Err(ApiError::Invalid { field, .. }) => {
                assert_eq!(field.as_deref(), Some("gate.images.steps"))
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }
}
