//! An edit request, its hyper-parameters with the paper's defaults, and validation.
//!
//! Validation happens before anything is computed or stored, and every failure is a
//! distinct [`InvalidKind`] the server maps to 422.

use super::templates::{fill, subject_last_index, CONTEXT_TEMPLATES};
use crate::error::{EngineError, InvalidKind, Result};
use crate::tokenizer::ClipTokenizer;
use serde::{Deserialize, Serialize};

/// The optimisation's settings. Defaults are the paper's (DESIGN.md §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HyperParams {
    /// Adam's learning rate for δ.
    pub lr: f64,
    /// Iterations at most; the last one only measures (no step).
    pub max_steps: usize,
    /// Stop once the mean probability of the target exceeds this.
    pub prob_threshold: f64,
    /// Weight of the ‖δ‖ / ‖target_init‖² term in the loss.
    pub weight_decay: f64,
    /// ‖δ‖ is clamped to this many times ‖target_init‖ after each step.
    pub clamp_factor: f64,
}

impl Default for HyperParams {
    fn default() -> Self {
        Self {
            lr: 0.05,
            max_steps: 100,
            prob_threshold: 0.99,
            weight_decay: 0.1,
            clamp_factor: 4.0,
        }
    }
}

/// Upper bound on iterations, so a request cannot hold the worker for hours.
pub const MAX_STEPS_LIMIT: usize = 10_000;

/// Upper bound on contrastive texts. Each is a candidate every iteration scores against,
/// so the list sets the cost of every step (5,000 of them took 10 s an iteration in an
/// operator's probe); 64 is far past any published use (the paper uses a handful).
pub const MAX_CONTRASTIVE: usize = 64;

/// Which text encoders an edit changes. SD v1.x/2.x have one; SDXL has two, and an
/// edit changes both by default, each at its own layer, so that both encodings of the
/// prompt move toward the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncoderTarget {
    /// Every text encoder the model has.
    #[default]
    #[serde(rename = "all")]
    All,
    /// The first (or only) one.
    #[serde(rename = "text")]
    Text,
    /// SDXL's second one.
    #[serde(rename = "text_2")]
    Text2,
}

impl EncoderTarget {
    /// The encoders this target edits among those a model has (`available`, in order).
    pub fn select(
        self,
        available: &[crate::deltas::TextEncoderId],
    ) -> Result<Vec<crate::deltas::TextEncoderId>> {
        use crate::deltas::TextEncoderId;
        let wanted = match self {
            EncoderTarget::All => return Ok(available.to_vec()),
            EncoderTarget::Text => TextEncoderId::Text,
            EncoderTarget::Text2 => TextEncoderId::Text2,
        };
        if available.contains(&wanted) {
            Ok(vec![wanted])
        } else {
            Err(EngineError::invalid(
                InvalidKind::UnknownName,
                "encoder",
                format!(
                    "this model has no text encoder `{wanted}`; it has {}",
                    available
                        .iter()
                        .map(|id| format!("`{id}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    }
}

/// What a user asks for: "`prompt` should look like `target`, not `source`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The edit prompt, e.g. "The President of the United States".
    pub prompt: String,
    /// The part of the prompt the edit keys on; defaults to the whole prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What the prompt shows now, e.g. "Donald Trump".
    pub source: String,
    /// What it should show, e.g. "Joe Biden".
    pub target: String,
    /// Further texts the edited prompt should be pushed away from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contrastive: Vec<String>,
    /// Text-encoder layer whose MLP is edited; defaults to [`default_layer`] of each
    /// edited encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Which text encoders to edit (SDXL); absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderTarget>,
    #[serde(default)]
    pub hparams: HyperParams,
}

/// The paper's layer 7 of 12, scaled to encoders of other depths.
pub fn default_layer(num_layers: usize) -> usize {
    ((num_layers * 7 + 6) / 12).min(num_layers.saturating_sub(1))
}

/// A request that passed validation, with everything the computation needs resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedEdit {
    pub request: EditRequest,
    pub subject: String,
    pub layer: usize,
    /// The rewriting prompts: the edit prompt, then the templates filled with the subject.
    pub rewriting_prompts: Vec<String>,
    /// Index of the subject's last token in each rewriting prompt.
    pub rewriting_indices: Vec<usize>,
    /// The templates filled with the subject (the key is averaged over these).
    pub key_prompts: Vec<String>,
    pub key_indices: Vec<usize>,
    /// Candidates the optimisation scores against: target first, then source, then
    /// contrastive texts.
    pub candidates: Vec<String>,
}

impl EditRequest {
    /// A request with the default subject, layer and hyper-parameters.
    pub fn new(prompt: &str, source: &str, target: &str) -> Self {
        Self {
            encoder: None,
            prompt: prompt.into(),
            subject: None,
            source: source.into(),
            target: target.into(),
            contrastive: Vec::new(),
            layer: None,
            hparams: HyperParams::default(),
        }
    }

    /// Checks the request against a tokenizer and an encoder of `num_layers` layers.
    pub fn validate(&self, tokenizer: &ClipTokenizer, num_layers: usize) -> Result<ValidatedEdit> {
        non_empty("prompt", &self.prompt)?;
        non_empty("source", &self.source)?;
        non_empty("target", &self.target)?;
        if self.contrastive.len() > MAX_CONTRASTIVE {
            return Err(EngineError::invalid(
                InvalidKind::TooMany,
                "contrastive",
                format!(
                    "{} contrastive texts; at most {MAX_CONTRASTIVE} are allowed",
                    self.contrastive.len()
                ),
            ));
        }
        for (i, text) in self.contrastive.iter().enumerate() {
            non_empty(&format!("contrastive[{i}]"), text)?;
        }
        let subject = match &self.subject {
            Some(subject) => {
                non_empty("subject", subject)?;
                subject.clone()
            }
            None => self.prompt.clone(),
        };
        if normalised(&self.source) == normalised(&self.target) {
            return Err(EngineError::invalid(
                InvalidKind::SourceEqualsTarget,
                "target",
                "source and target are the same text",
            ));
        }
        let layer = self.layer.unwrap_or_else(|| default_layer(num_layers));
        if layer >= num_layers {
            return Err(EngineError::invalid(
                InvalidKind::LayerOutOfRange,
                "layer",
                format!(
                    "layer {layer} does not exist; the text encoder has layers 0..{}",
                    num_layers - 1
                ),
            ));
        }
        self.hparams.validate()?;

        fits(tokenizer, "prompt", &self.prompt)?;
        fits(tokenizer, "source", &self.source)?;
        fits(tokenizer, "target", &self.target)?;
        for (i, text) in self.contrastive.iter().enumerate() {
            fits(tokenizer, &format!("contrastive[{i}]"), text)?;
        }
        let prompt_index =
            subject_last_index(tokenizer, &self.prompt, &subject)?.ok_or_else(|| {
                EngineError::invalid(
                    InvalidKind::SubjectNotInPrompt,
                    "subject",
                    format!(
                        "subject {subject:?} does not occur in the prompt {:?}",
                        self.prompt
                    ),
                )
            })?;

        let mut key_prompts = Vec::with_capacity(CONTEXT_TEMPLATES.len());
        let mut key_indices = Vec::with_capacity(CONTEXT_TEMPLATES.len());
        for template in CONTEXT_TEMPLATES {
            let text = fill(template, &subject);
            fits(tokenizer, "subject", &text)?;
            let index = subject_last_index(tokenizer, &text, &subject)?
                .expect("a template filled with the subject contains it");
            key_prompts.push(text);
            key_indices.push(index);
        }
        let mut rewriting_prompts = vec![self.prompt.clone()];
        rewriting_prompts.extend(key_prompts.iter().cloned());
        let mut rewriting_indices = vec![prompt_index];
        rewriting_indices.extend(key_indices.iter().copied());

        let mut candidates = vec![self.target.clone(), self.source.clone()];
        candidates.extend(self.contrastive.iter().cloned());
        Ok(ValidatedEdit {
            request: self.clone(),
            subject,
            layer,
            rewriting_prompts,
            rewriting_indices,
            key_prompts,
            key_indices,
            candidates,
        })
    }
}

impl HyperParams {
    /// Refuses non-finite and out-of-range values, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(EngineError::invalid(
                InvalidKind::BadHyperParameter,
                format!("hparams.{field}"),
                message,
            ))
        };
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            return bad("lr", format!("lr must be in (0, 10], got {}", self.lr));
        }
        if self.max_steps == 0 || self.max_steps > MAX_STEPS_LIMIT {
            return bad(
                "max_steps",
                format!(
                    "max_steps must be in 1..={MAX_STEPS_LIMIT}, got {}",
                    self.max_steps
                ),
            );
        }
        if !(self.prob_threshold.is_finite()
            && self.prob_threshold > 0.0
            && self.prob_threshold <= 1.0)
        {
            return bad(
                "prob_threshold",
                format!(
                    "prob_threshold must be in (0, 1], got {}",
                    self.prob_threshold
                ),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!(
                    "weight_decay must be finite and >= 0, got {}",
                    self.weight_decay
                ),
            );
        }
        if !(self.clamp_factor.is_finite() && self.clamp_factor > 0.0) {
            return bad(
                "clamp_factor",
                format!(
                    "clamp_factor must be finite and > 0, got {}",
                    self.clamp_factor
                ),
            );
        }
        Ok(())
    }
}

fn non_empty(field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(EngineError::invalid(
            InvalidKind::Empty,
            field,
            format!("{field} is empty"),
        ));
    }
    Ok(())
}

fn fits(tokenizer: &ClipTokenizer, field: &str, text: &str) -> Result<()> {
    if !tokenizer.fits(text)? {
        return Err(EngineError::invalid(
            InvalidKind::TooLong,
            field,
            format!(
                "{field} has more than {} tokens and would be truncated",
                tokenizer.max_length() - 2
            ),
        ));
    }
    Ok(())
}

/// Texts the tokenizer cannot tell apart (case, runs of whitespace) count as equal.
fn normalised(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layer_is_seven_of_twelve() {
        assert_eq!(default_layer(12), 7);
        assert_eq!(default_layer(24), 14);
        assert_eq!(default_layer(1), 0);
    }

    #[test]
    fn hyper_parameters_out_of_range_name_their_field() {
        let cases = [
            HyperParams {
                lr: f64::NAN,
                ..Default::default()
            },
            HyperParams {
                lr: 0.0,
                ..Default::default()
            },
            HyperParams {
                max_steps: 0,
                ..Default::default()
            },
            HyperParams {
                max_steps: MAX_STEPS_LIMIT + 1,
                ..Default::default()
            },
            HyperParams {
                prob_threshold: 1.5,
                ..Default::default()
            },
            HyperParams {
                weight_decay: f64::INFINITY,
                ..Default::default()
            },
            HyperParams {
                clamp_factor: -1.0,
                ..Default::default()
            },
        ];
        let fields = [
            "lr",
            "lr",
            "max_steps",
            "max_steps",
            "prob_threshold",
            "weight_decay",
            "clamp_factor",
        ];
        for (hp, field) in cases.iter().zip(fields) {
            match hp.validate() {
                Err(EngineError::Invalid { kind, field: f, .. }) => {
                    assert_eq!(kind, InvalidKind::BadHyperParameter);
                    assert_eq!(f, format!("hparams.{field}"));
                }
                other => panic!("{hp:?} gave {other:?}"),
            }
        }
        assert!(HyperParams::default().validate().is_ok());
    }

    #[test]
    fn hyper_parameters_parse_with_defaults_and_refuse_unknown_keys() {
        let hp: HyperParams = serde_json::from_str(r#"{"lr": 0.1}"#).unwrap();
        assert_eq!(hp.lr, 0.1);
        assert_eq!(hp.max_steps, 100);
        assert!(serde_json::from_str::<HyperParams>(r#"{"learning_rate": 0.1}"#).is_err());
    }
}
