//! A batch edit request: many facts, one layer and one set of hyper-parameters, edited
//! as one job into one version (issue 14), and [`EditJob`], what `POST /edits` accepts.

use super::request::{EditRequest, EncoderTarget, HyperParams, ValidatedEdit};
use crate::error::{EngineError, InvalidKind, Result};
use crate::tokenizer::ClipTokenizer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Most facts one batch may hold. Each fact is optimised like a single edit (in passes of
/// [`super::FACTS_PER_PASS`]), so the limit bounds a job's length, not its memory.
pub const MAX_FACTS: usize = 256;

/// Refuses a batch of more facts than the edited MLP's inner size: the batch's delta has
/// one rank per fact, and a delta of fc2 cannot have a rank above its input size, so
/// some key would not get its value. Checked before any work is done.
pub fn check_batch_size(facts: usize, intermediate_size: usize) -> Result<()> {
    if facts > intermediate_size {
        return Err(EngineError::invalid(
            InvalidKind::TooMany,
            "facts",
            format!(
                "{facts} facts; this model's MLP has inner size {intermediate_size}, so one \
                 update can give at most {intermediate_size} keys their own values"
            ),
        ));
    }
    Ok(())
}

/// One fact of a batch: an edit request without the batch-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub source: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contrastive: Vec<String>,
}

/// Facts edited together at one layer with one set of hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub facts: Vec<Fact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Which text encoders to edit (SDXL); absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderTarget>,
    /// Layers the update is spread over, ending at the edited layer (MEMIT's schedule,
    /// [`super::spread`]): absent or 1, that layer alone; n, the n layers up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<usize>,
    #[serde(default)]
    pub hparams: HyperParams,
}

impl BatchRequest {
    /// Fact `i` as a single edit request with the batch's settings.
    pub fn fact_request(&self, i: usize) -> EditRequest {
        let fact = &self.facts[i];
        EditRequest {
            prompt: fact.prompt.clone(),
            subject: fact.subject.clone(),
            source: fact.source.clone(),
            target: fact.target.clone(),
            contrastive: fact.contrastive.clone(),
            layer: self.layer,
            encoder: self.encoder,
            hparams: self.hparams.clone(),
        }
    }

    /// Checks every fact as a single edit would be checked, naming the fact in the
    /// field (`facts[3].subject`), and refuses an empty batch, one over [`MAX_FACTS`],
    /// and one subject twice (one update cannot give one key two values).
    pub fn validate(
        &self,
        tokenizer: &ClipTokenizer,
        num_layers: usize,
    ) -> Result<Vec<ValidatedEdit>> {
        if self.facts.is_empty() {
            return Err(EngineError::invalid(
                InvalidKind::Empty,
                "facts",
                "a batch needs at least one fact",
            ));
        }
        if self.facts.len() > MAX_FACTS {
            return Err(EngineError::invalid(
                InvalidKind::TooMany,
                "facts",
                format!(
                    "{} facts; a batch holds at most {MAX_FACTS}",
                    self.facts.len()
                ),
            ));
        }
        let mut validated: Vec<ValidatedEdit> = Vec::with_capacity(self.facts.len());
        // Each subject's token ids, with the first fact that had them: subjects the
        // tokenizer cannot tell apart are one key.
        let mut subjects: HashMap<Vec<u32>, usize> = HashMap::with_capacity(self.facts.len());
        for i in 0..self.facts.len() {
            let edit = self
                .fact_request(i)
                .validate(tokenizer, num_layers)
                .map_err(|err| in_fact(i, err))?;
            if let Some(j) = subjects.insert(tokenizer.encode(&edit.subject)?, i) {
                return Err(EngineError::invalid(
                    InvalidKind::DuplicateSubject,
                    format!("facts[{i}].subject"),
                    format!(
                        "fact {i} has the subject of fact {j} ({:?}); one update cannot \
                         give one subject two values",
                        edit.subject
                    ),
                ));
            }
            validated.push(edit);
        }
        Ok(validated)
    }
}

/// Names the fact in a per-fact field; the batch-wide fields (layer, hparams) keep
/// their names.
fn in_fact(i: usize, err: EngineError) -> EngineError {
    match err {
        EngineError::Invalid {
            kind,
            field,
            message,
        } if !(field == "layer" || field.starts_with("hparams")) => EngineError::Invalid {
            kind,
            field: format!("facts[{i}].{field}"),
            message: format!("fact {i}: {message}"),
        },
        other => other,
    }
}

/// What `POST /edits` accepts: one fact, or a batch (`{"facts": [...]}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EditJob {
    Single(EditRequest),
    Batch(BatchRequest),
}

impl<'de> Deserialize<'de> for EditJob {
    /// A body with `facts` is a batch, any other a single edit: each shape then reports
    /// its own unknown or missing fields (an untagged enum would only say that neither
    /// matched).
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.get("facts").is_some() {
            serde_json::from_value(value)
                .map(EditJob::Batch)
                .map_err(D::Error::custom)
        } else {
            serde_json::from_value(value)
                .map(EditJob::Single)
                .map_err(D::Error::custom)
        }
    }
}

impl EditJob {
    /// The facts' requests, each with the job's layer and hyper-parameters: the request
    /// itself for a single edit.
    pub fn fact_requests(&self) -> Vec<EditRequest> {
        match self {
            EditJob::Single(request) => vec![request.clone()],
            EditJob::Batch(batch) => (0..batch.facts.len())
                .map(|i| batch.fact_request(i))
                .collect(),
        }
    }

    /// Validates the job: one fact as always, a batch with fact-named fields.
    pub fn validate(
        &self,
        tokenizer: &ClipTokenizer,
        num_layers: usize,
    ) -> Result<Vec<ValidatedEdit>> {
        match self {
            EditJob::Single(request) => Ok(vec![request.validate(tokenizer, num_layers)?]),
            EditJob::Batch(batch) => batch.validate(tokenizer, num_layers),
        }
    }

    /// The layer asked for, if any.
    pub fn layer_mut(&mut self) -> &mut Option<usize> {
        match self {
            EditJob::Single(request) => &mut request.layer,
            EditJob::Batch(batch) => &mut batch.layer,
        }
    }

    /// The encoders asked for (absent: all).
    pub fn encoder(&self) -> EncoderTarget {
        match self {
            EditJob::Single(request) => request.encoder,
            EditJob::Batch(batch) => batch.encoder,
        }
        .unwrap_or_default()
    }

    /// Names the encoders explicitly (the server stores requests normalised).
    pub fn set_encoder(&mut self, target: EncoderTarget) {
        match self {
            EditJob::Single(request) => request.encoder = Some(target),
            EditJob::Batch(batch) => batch.encoder = Some(target),
        }
    }

    /// Layers the update is spread over (1: the edited layer alone; single edits never
    /// spread).
    pub fn spread(&self) -> usize {
        match self {
            EditJob::Single(_) => 1,
            EditJob::Batch(batch) => batch.spread.unwrap_or(1),
        }
    }

    /// True for a batch (even of one fact): its metrics list facts.
    pub fn is_batch(&self) -> bool {
        matches!(self, EditJob::Batch(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> ClipTokenizer {
        crate::model::TextModel::load(&refact_testkit::fixture_dir(), &candle_core::Device::Cpu)
            .unwrap()
            .tokenizer
    }

    fn fact(prompt: &str, source: &str, target: &str) -> Fact {
        Fact {
            prompt: prompt.into(),
            subject: None,
            source: source.into(),
            target: target.into(),
            contrastive: Vec::new(),
        }
    }

    fn field_of(result: Result<Vec<ValidatedEdit>>) -> (InvalidKind, String) {
        match result {
            Err(EngineError::Invalid { kind, field, .. }) => (kind, field),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_body_with_facts_is_a_batch_and_each_shape_names_its_unknown_fields() {
        let single: EditJob =
            serde_json::from_str(r#"{"prompt": "a", "source": "b", "target": "c"}"#).unwrap();
        assert!(!single.is_batch());
        let batch: EditJob = serde_json::from_str(
            r#"{"facts": [{"prompt": "a", "source": "b", "target": "c"}], "layer": 3}"#,
        )
        .unwrap();
        let EditJob::Batch(batch) = batch else {
            panic!("a body with facts parsed as a single edit");
        };
        assert_eq!(batch.fact_request(0).layer, Some(3));
        let err = serde_json::from_str::<EditJob>(r#"{"facts": [{"prompt": "a", "colour": 1}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn bad_batches_are_refused_naming_the_fact() {
        let t = tokenizer();
        let batch = |facts: Vec<Fact>| BatchRequest {
            encoder: None,
            spread: None,
            facts,
            layer: None,
            hparams: HyperParams::default(),
        };
        assert_eq!(
            field_of(batch(vec![]).validate(&t, 12)),
            (InvalidKind::Empty, "facts".into())
        );
        let many = (0..=MAX_FACTS)
            .map(|i| fact(&format!("p{i}"), "a", "b"))
            .collect();
        assert_eq!(
            field_of(batch(many).validate(&t, 12)),
            (InvalidKind::TooMany, "facts".into())
        );
        let one_bad = vec![
            fact("The Prince of Wales", "a", "b"),
            fact("A rose", "", "b"),
        ];
        assert_eq!(
            field_of(batch(one_bad).validate(&t, 12)),
            (InvalidKind::Empty, "facts[1].source".into())
        );
        let twice = vec![
            fact("The Prince of Wales", "a", "b"),
            fact("The  prince of wales", "c", "d"),
        ];
        assert_eq!(
            field_of(batch(twice).validate(&t, 12)),
            (InvalidKind::DuplicateSubject, "facts[1].subject".into())
        );
        let mut wrong_layer = batch(vec![fact("The Prince of Wales", "a", "b")]);
        wrong_layer.layer = Some(40);
        assert_eq!(
            field_of(wrong_layer.validate(&t, 12)),
            (InvalidKind::LayerOutOfRange, "layer".into())
        );
    }

    #[test]
    fn a_batch_cannot_outrank_the_mlp() {
        assert!(check_batch_size(96, 96).is_ok());
        match check_batch_size(97, 96) {
            Err(EngineError::Invalid { kind, field, .. }) => {
                assert_eq!(kind, InvalidKind::TooMany);
                assert_eq!(field, "facts");
            }
            other => panic!("{other:?}"),
        }
    }
}
