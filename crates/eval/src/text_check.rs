//! The text-space check: the paper's three metrics on the text encoder's representations
//! instead of on images, as a pre-check that takes seconds.
//!
//! With E the unedited encoder and E' the edited one (the representations the pipeline
//! reads, [`EncodersAt`]; L2 distance):
//! - efficacy: E'(edit prompt) is nearer E(target) than E(source);
//! - generality: for each positive, E'(prompt) is nearer E(new) than E(old);
//! - specificity: for each negative, E'(prompt) is nearer E(prompt) than E(new).
//!
//! The reference points come from the unedited encoder, as ReFACT's own candidates do, so
//! an edit cannot pass by moving them. Nearer means strictly nearer (a tie fails), and a
//! test is a [`Comparison`] of negated distances so the metrics code is shared.

use crate::dataset::EvalCase;
use crate::error::{EvalError, Result};
use crate::metrics::{Comparison, SeedTests};
use candle_core::DType;
use refact_engine::deltas::DeltaSet;
use refact_engine::model::TextModel;

/// Maps texts to one pooled representation each.
pub trait TextRepresentations {
    /// One vector per text, all of the same length.
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

impl<F> TextRepresentations for F
where
    F: Fn(&[String]) -> Result<Vec<Vec<f32>>>,
{
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self(texts)
    }
}

/// A model's text side at one version, read as its pipeline reads it: each text
/// encoder's `Readout` (the pooler output for SD v1.x/2.x; for SDXL the penultimate
/// state at the EOS token, and the second encoder's projected pooled state after it),
/// concatenated in the pipeline's order. For SDXL that is the UNet's context row at the
/// EOS token followed by its pooled text embedding, so an edit of either encoder is seen
/// where the image sees it. Each encoder applies only its own deltas.
pub struct EncodersAt<'a> {
    /// The model's text encoders in pipeline order (`StableDiffusion::text_models`).
    pub models: &'a [&'a TextModel],
    pub deltas: &'a DeltaSet,
}

impl TextRepresentations for EncodersAt<'_> {
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut rows = vec![Vec::new(); texts.len()];
        for model in self.models {
            let represented = model
                .encoder
                .represent_texts(&model.tokenizer, &texts, self.deltas)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (row, part) in rows.iter_mut().zip(represented) {
                row.extend(part);
            }
        }
        Ok(rows)
    }
}

/// The text-space tests of an edit on a model's text encoders (`models`, in pipeline
/// order): `parent` is the version the edit was computed on (its encoders give the
/// reference points), `edited` the version with the edit.
pub fn check_edit(
    models: &[&TextModel],
    parent: &DeltaSet,
    edited: &DeltaSet,
    case: &EvalCase,
) -> Result<SeedTests> {
    text_space_tests(
        case,
        &EncodersAt {
            models,
            deltas: parent,
        },
        &EncodersAt {
            models,
            deltas: edited,
        },
    )
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

/// `a` nearer `wanted` than `other`, as a comparison of negated distances.
fn nearer(a: &[f32], wanted: &[f32], other: &[f32]) -> Comparison {
    Comparison::new(-l2(a, wanted), -l2(a, other))
}

fn encode_checked(encoder: &dyn TextRepresentations, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
    let out = encoder.encode(&texts)?;
    if out.len() != texts.len() {
        return Err(EvalError::Invalid(format!(
            "encoder returned {} vectors for {} texts",
            out.len(),
            texts.len()
        )));
    }
    Ok(out)
}

/// The text-space tests of one case (reported as seed 0).
pub fn text_space_tests(
    case: &EvalCase,
    unedited: &dyn TextRepresentations,
    edited: &dyn TextRepresentations,
) -> Result<SeedTests> {
    let (p, n) = (case.positives.len(), case.negatives.len());
    // Edited encoder: the prompts whose images the paper would generate.
    let mut queries = vec![case.edit_prompt.clone()];
    queries.extend(case.positives.iter().map(|x| x.prompt.clone()));
    queries.extend(case.negatives.iter().map(|x| x.prompt.clone()));
    let q = encode_checked(edited, queries)?;
    // Unedited encoder: the texts CLIP would compare the images with.
    let mut refs = vec![case.target.clone(), case.source.clone()];
    refs.extend(case.positives.iter().map(|x| x.new.clone()));
    refs.extend(case.positives.iter().map(|x| x.old.clone()));
    refs.extend(case.negatives.iter().map(|x| x.prompt.clone()));
    refs.extend(case.negatives.iter().map(|x| x.new.clone()));
    let r = encode_checked(unedited, refs)?;
    let width = q[0].len();
    if q.iter().chain(r.iter()).any(|v| v.len() != width) {
        return Err(EvalError::Invalid(
            "representations differ in length".into(),
        ));
    }
    let (new, old) = (&r[2..2 + p], &r[2 + p..2 + 2 * p]);
    let (neg, neg_new) = (&r[2 + 2 * p..2 + 2 * p + n], &r[2 + 2 * p + n..]);
    Ok(SeedTests {
        seed: 0,
        efficacy: nearer(&q[0], &r[0], &r[1]),
        generality: (0..p)
            .map(|i| nearer(&q[1 + i], &new[i], &old[i]))
            .collect(),
        specificity: (0..n)
            .map(|i| nearer(&q[1 + p + i], &neg[i], &neg_new[i]))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Negative, Positive};
    use std::collections::HashMap;

    fn case() -> EvalCase {
        EvalCase {
            row: 1,
            kind: None,
            edit_prompt: "pm".into(),
            source: "old pm".into(),
            target: "new pm".into(),
            oracle: None,
            positives: vec![Positive {
                prompt: "pm eating".into(),
                old: "old pm eating".into(),
                new: "new pm eating".into(),
                oracle: None,
            }],
            negatives: vec![Negative {
                prompt: "mayor".into(),
                new: "new pm".into(),
            }],
        }
    }

    /// An encoder that looks texts up in a table of 1-d points.
    fn table(points: &[(&str, f32)]) -> impl Fn(&[String]) -> Result<Vec<Vec<f32>>> {
        let map: HashMap<String, f32> = points.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        move |texts: &[String]| Ok(texts.iter().map(|t| vec![map[t]]).collect())
    }

    #[test]
    fn a_working_edit_passes_and_a_leaking_one_fails_specificity() {
        let before = table(&[
            ("pm", 0.0),
            ("old pm", 0.0),
            ("new pm", 10.0),
            ("pm eating", 1.0),
            ("old pm eating", 1.0),
            ("new pm eating", 11.0),
            ("mayor", 20.0),
        ]);
        // Edited: the edit prompt and the positive moved to the new fact; the mayor stayed.
        let good = table(&[("pm", 9.0), ("pm eating", 10.0), ("mayor", 20.0)]);
        let m = text_space_tests(&case(), &before, &good).unwrap().metrics();
        assert_eq!(
            (m.efficacy, m.generality, m.specificity),
            (1.0, Some(1.0), Some(1.0))
        );
        // The mayor moved to the new PM too: specificity fails.
        let leaky = table(&[("pm", 9.0), ("pm eating", 10.0), ("mayor", 11.0)]);
        let m = text_space_tests(&case(), &before, &leaky)
            .unwrap()
            .metrics();
        assert_eq!(m.specificity, Some(0.0));
        // Nothing moved: efficacy and generality fail (a tie at equal distance fails too).
        let m = text_space_tests(&case(), &before, &before)
            .unwrap()
            .metrics();
        assert_eq!((m.efficacy, m.generality), (0.0, Some(0.0)));
    }
}
