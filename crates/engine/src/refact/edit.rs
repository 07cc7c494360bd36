//! One ReFACT edit, end to end (DESIGN.md §1): key k*, u = C⁻¹k*/‖C⁻¹k*‖, the δ
//! optimisation, and the rank-one insert v, computed on a given version of the encoder.

use super::optimize::{optimise, IterationReport, Objective};
use super::request::ValidatedEdit;
use super::statistics::LayerStatistics;
use super::upper_layers::UpperLayers;
use crate::deltas::{Delta, DeltaSet, PreparedDeltas};
use crate::error::{EngineError, Result};
use crate::text_encoder::{ClipTextEncoder, Fc2Hook, Mode};
use crate::tokenizer::ClipTokenizer;
use candle_core::{IndexOp, Tensor};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;

/// What the edit did, for the edit record and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditMetrics {
    pub layer: usize,
    /// Adam steps taken (the reference's `steps`).
    pub iterations: usize,
    pub losses: Vec<f64>,
    pub probabilities: Vec<f64>,
    pub final_probability: f64,
    /// True when the probability threshold stopped the optimisation before max_steps.
    pub converged: bool,
    pub text_check: TextCheck,
    pub duration_ms: u64,
}

/// Where the edited encoder puts the edit prompt, relative to the unedited target and
/// source (L2 distances between pooled representations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCheck {
    pub distance_to_target: f64,
    pub distance_to_source: f64,
    /// The same distances before the edit.
    pub distance_to_target_before: f64,
    pub distance_to_source_before: f64,
    /// True when the edited prompt is nearer the target than the source.
    pub nearer_target: bool,
}

/// The vectors of the computation, for tests against the reference and for debugging.
#[derive(Debug, Clone)]
pub struct EditVectors {
    /// Mean key over the context templates [inner].
    pub key: Vec<f32>,
    /// fc2's output at the edit prompt's subject before the edit [hidden].
    pub target_init: Vec<f32>,
    /// The optimised offset [hidden].
    pub delta: Vec<f32>,
}

/// The result: the delta to store, its metrics, and the intermediate vectors.
#[derive(Debug, Clone)]
pub struct EditOutcome {
    pub delta: Delta,
    pub metrics: EditMetrics,
    pub vectors: EditVectors,
}

/// Records fc2's input and output at the hooked layer.
#[derive(Default)]
struct CaptureFc2 {
    input: Option<Tensor>,
    output: Option<Tensor>,
}

impl Fc2Hook for CaptureFc2 {
    fn fc2(&mut self, input: &Tensor, output: Tensor) -> candle_core::Result<Tensor> {
        self.input = Some(input.clone());
        self.output = Some(output.clone());
        Ok(output)
    }
}

/// State of `prompts` after `layer` at the version `deltas`, plus fc2's input and output
/// there. Only rows up to the longest prompt's first EOS are computed.
struct LayerState {
    after_layer: Tensor,
    fc2_input: Tensor,
    fc2_output: Tensor,
    eos: Vec<usize>,
}

fn run_to_layer(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    prompts: &[String],
    layer: usize,
    deltas: &PreparedDeltas,
) -> Result<LayerState> {
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let ids = encoder.padded_ids(tokenizer, &texts)?;
    let eos = encoder.first_eos_positions(&ids)?;
    let width = eos.iter().max().copied().unwrap_or(0) + 1;
    let hidden = encoder.embed(&ids.narrow(1, 0, width)?)?;
    let mut capture = CaptureFc2::default();
    let after_layer = encoder.run_layers(
        &hidden,
        0..layer + 1,
        deltas,
        Mode::Inference,
        Some((layer, &mut capture)),
    )?;
    Ok(LayerState {
        after_layer,
        fc2_input: capture.input.expect("hook ran"),
        fc2_output: capture.output.expect("hook ran"),
        eos,
    })
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_vec1()?)
}

fn norm(x: &[f32]) -> f64 {
    x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
}

/// Computes the edit on the encoder at version `base` with the layer statistics `stats`
/// (of the base model, same layer). `observer` sees every iteration and may cancel.
pub fn compute_edit(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    stats: &LayerStatistics,
    edit: &ValidatedEdit,
    base: &DeltaSet,
    observer: &mut dyn FnMut(IterationReport) -> ControlFlow<()>,
) -> Result<EditOutcome> {
    let started = Instant::now();
    let layer = edit.layer;
    if stats.layer != layer || stats.dim != encoder.config().intermediate_size {
        return Err(EngineError::Numerical(format!(
            "statistics are for layer {} (size {}), the edit is at layer {layer}",
            stats.layer, stats.dim
        )));
    }
    let prepared = base.prepare(encoder.num_layers(), encoder.device())?;

    // 1. k*: mean fc2 input at the subject's last token over the context templates.
    let keys = run_to_layer(encoder, tokenizer, &edit.key_prompts, layer, &prepared)?;
    let key_rows = edit
        .key_indices
        .iter()
        .enumerate()
        .map(|(i, &p)| keys.fc2_input.i((i, p)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let key = to_vec(&Tensor::stack(&key_rows, 0)?.mean(0)?)?;

    // 2. u = C⁻¹k* / ‖C⁻¹k*‖, solved in f64.
    let solved = stats.solve(&key.iter().map(|&x| x as f64).collect::<Vec<_>>())?;
    let solved_norm = solved.iter().map(|x| x * x).sum::<f64>().sqrt();
    let u: Vec<f32> = solved.iter().map(|x| (x / solved_norm) as f32).collect();

    // 3. The rewriting prompts' stream after the layer, computed once.
    let rewriting = run_to_layer(
        encoder,
        tokenizer,
        &edit.rewriting_prompts,
        layer,
        &prepared,
    )?;
    let prompt_index = edit.rewriting_indices[0];
    let target_init = to_vec(&rewriting.fc2_output.i((0, prompt_index))?)?;
    let prompt_key = to_vec(&rewriting.fc2_input.i((0, prompt_index))?)?;
    let target_init_norm = norm(&target_init);

    // 4. Candidates, by the unedited (parent-version) encoder.
    let candidate_texts: Vec<&str> = edit.candidates.iter().map(String::as_str).collect();
    let candidates = encoder
        .encode_texts(tokenizer, &candidate_texts, base)?
        .pooler_output;

    // 5. δ.
    let upper = UpperLayers::new(
        encoder,
        &prepared,
        layer,
        rewriting.after_layer.clone(),
        &edit.rewriting_indices,
        &rewriting.eos,
    )?;
    let scored = same_path_candidates(tokenizer, edit, &upper, &candidates)?;
    let objective = Objective::new(
        upper,
        scored,
        edit.request.hparams.weight_decay,
        target_init_norm,
    );
    let optimised = optimise(
        &objective,
        target_init.len(),
        &edit.request.hparams,
        target_init_norm,
        observer,
    )?;

    // 6. The insert: W k = target_init + δ for the edit prompt's key k.
    let k_dot_u: f64 = prompt_key
        .iter()
        .zip(&u)
        .map(|(k, u)| *k as f64 * *u as f64)
        .sum();
    if k_dot_u.abs() < 1e-12 {
        return Err(EngineError::Numerical(
            "the prompt's key is orthogonal to u".into(),
        ));
    }
    let v: Vec<f32> = optimised
        .delta
        .iter()
        .map(|d| (*d as f64 / k_dot_u) as f32)
        .collect();
    let delta = Delta { layer, u, v };

    // 7. Text-space check of the edited encoder.
    let text_check = text_check(
        encoder,
        tokenizer,
        &edit.request.prompt,
        &candidates,
        base,
        &delta,
    )?;
    let final_probability = *optimised.probabilities.last().unwrap_or(&0.0);
    let metrics = EditMetrics {
        layer,
        iterations: optimised.steps,
        converged: final_probability > edit.request.hparams.prob_threshold,
        losses: optimised.losses,
        probabilities: optimised.probabilities,
        final_probability,
        text_check,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    Ok(EditOutcome {
        delta,
        metrics,
        vectors: EditVectors {
            key,
            target_init,
            delta: optimised.delta,
        },
    })
}

/// The candidates as the objective scores them: a candidate that is the same text as a
/// rewriting prompt (the source is often the edit prompt itself, as in every TIMED edit)
/// takes that prompt's δ-free representation from the very computation that δ flows
/// through, instead of the full encoder's.
///
/// Both are the same value up to rounding, but not bit for bit (packed rows vs a padded
/// batch). The reference computes both with one encoder, so their distance at δ = 0 is
/// exactly 0 and contributes no gradient; a distance of 1e-7 instead gives a gradient
/// of full length pointing along rounding noise, which Adam then follows (issue 10).
fn same_path_candidates(
    tokenizer: &ClipTokenizer,
    edit: &ValidatedEdit,
    upper: &UpperLayers,
    candidates: &Tensor,
) -> Result<Tensor> {
    let prompt_ids = edit
        .rewriting_prompts
        .iter()
        .map(|p| tokenizer.encode(p))
        .collect::<Result<Vec<_>>>()?;
    // For each candidate, the rewriting prompt with the same token ids, if any.
    let same_prompt = edit
        .candidates
        .iter()
        .map(|text| {
            let ids = tokenizer.encode(text)?;
            Ok(prompt_ids.iter().position(|p| *p == ids))
        })
        .collect::<Result<Vec<_>>>()?;
    if same_prompt.iter().all(Option::is_none) {
        return Ok(candidates.clone());
    }
    let hidden = candidates.dim(1)?;
    let zero = Tensor::zeros(hidden, candidates.dtype(), candidates.device())?;
    let at_zero = upper.pooled(&zero)?;
    let rows = same_prompt
        .iter()
        .enumerate()
        .map(|(c, prompt)| match prompt {
            Some(p) => at_zero.i(*p),
            None => candidates.i(c),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

fn text_check(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    prompt: &str,
    candidates: &Tensor,
    base: &DeltaSet,
    delta: &Delta,
) -> Result<TextCheck> {
    let edited = base.with(std::sync::Arc::new(delta.clone()));
    let after = encoder
        .encode_texts(tokenizer, &[prompt], &edited)?
        .pooler_output
        .i(0)?;
    let before = encoder
        .encode_texts(tokenizer, &[prompt], base)?
        .pooler_output
        .i(0)?;
    let distance = |a: &Tensor, b: &Tensor| -> Result<f64> {
        Ok((a - b)?
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?)
    };
    let target = candidates.i(0)?;
    let source = candidates.i(1)?;
    let distance_to_target = distance(&after, &target)?;
    let distance_to_source = distance(&after, &source)?;
    Ok(TextCheck {
        distance_to_target,
        distance_to_source,
        distance_to_target_before: distance(&before, &target)?,
        distance_to_source_before: distance(&before, &source)?,
        nearer_target: distance_to_target < distance_to_source,
    })
}

#[cfg(test)]
mod gradient_check {
    //! The gradient that drives δ, checked against central finite differences in f64 on
    //! the fixture: candle silently drops gradients through ops without a backward pass,
    //! and the packed upper layers are hand-built, so both are worth one numerical check.

    use super::*;
    use crate::model::TextModel;
    use crate::refact::request::EditRequest;
    use candle_core::{DType, Device};

    fn fixture() -> std::path::PathBuf {
        refact_testkit::fixture_dir()
    }

    #[test]
    fn gradient_matches_finite_differences_in_f64() {
        let model = TextModel::load(&fixture(), &Device::Cpu).unwrap();
        let encoder = model.encoder.to_dtype(DType::F64).unwrap();
        let mut request =
            EditRequest::new("The Prince of Wales", "Prince Charles", "Prince William");
        request.contrastive = vec!["a bowl of fruit".into()];
        for layer in [7, 10, 11] {
            request.layer = Some(layer);
            let edit = request
                .validate(&model.tokenizer, encoder.num_layers())
                .unwrap();
            let prepared = PreparedDeltas::none(encoder.num_layers());
            let state = run_to_layer(
                &encoder,
                &model.tokenizer,
                &edit.rewriting_prompts,
                layer,
                &prepared,
            )
            .unwrap();
            let texts: Vec<&str> = edit.candidates.iter().map(String::as_str).collect();
            let candidates = encoder
                .encode_texts(&model.tokenizer, &texts, &DeltaSet::empty())
                .unwrap()
                .pooler_output;
            let upper = UpperLayers::new(
                &encoder,
                &prepared,
                layer,
                state.after_layer,
                &edit.rewriting_indices,
                &state.eos,
            )
            .unwrap();
            let objective = Objective::new(upper, candidates, 0.1, 2.0);
            let delta: Vec<f32> = (0..32).map(|i| ((i as f32) * 0.7).sin() * 0.3).collect();
            let analytic = objective.evaluate(&delta, true).unwrap().gradient;
            let h = 1e-3f32;
            for i in [0usize, 5, 17, 31] {
                let mut plus = delta.clone();
                plus[i] += h;
                let mut minus = delta.clone();
                minus[i] -= h;
                let numeric = (objective.evaluate(&plus, false).unwrap().loss
                    - objective.evaluate(&minus, false).unwrap().loss)
                    / (2.0 * h as f64);
                let err = (numeric - analytic[i] as f64).abs() / numeric.abs().max(1e-3);
                assert!(
                    err < 1e-3,
                    "layer {layer}, coordinate {i}: analytic {} vs numeric {numeric}",
                    analytic[i]
                );
            }
        }
    }
}
