//! One ReFACT edit, end to end (DESIGN.md §1): key k*, u = C⁻¹k*/‖C⁻¹k*‖, the δ
//! optimisation, and the rank-one insert v, computed on a given version of the encoder.
//!
//! A batch edit runs the same steps for many facts at once (their δ's in the same
//! passes) and ends in one rank-n insert; a single edit is a batch of one.

use super::batch_request::check_batch_size;
use super::insert::solve_values;
use super::optimize::{optimise, IterationReport, Objective, Optimised};
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
pub(super) struct LayerState {
    pub(super) after_layer: Tensor,
    pub(super) fc2_input: Tensor,
    pub(super) fc2_output: Tensor,
    pub(super) eos: Vec<usize>,
}

pub(super) fn run_to_layer(
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

pub(super) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_vec1()?)
}

fn norm(x: &[f32]) -> f64 {
    x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
}

/// The result of a batch edit: one delta of rank n for n facts, and each fact's record.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub delta: Delta,
    /// Per fact, in request order.
    pub facts: Vec<FactOutcome>,
}

/// One fact of a batch: its metrics (the text check on the whole batch's delta) and its
/// vectors.
#[derive(Debug, Clone)]
pub struct FactOutcome {
    pub metrics: EditMetrics,
    pub vectors: EditVectors,
}

/// Facts optimised in one pass. Each fact brings ten rewriting prompts, whose stream and
/// cached keys and values stay in memory for the pass; for 32 facts at SD v1.x sizes
/// that counts to about 100 MB (estimated from the tensor sizes, not measured).
pub const FACTS_PER_PASS: usize = 32;

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
    let mut batch = compute_batch_edit(
        encoder,
        tokenizer,
        stats,
        std::slice::from_ref(edit),
        base,
        &mut |_, report| observer(report),
    )?;
    let fact = batch.facts.remove(0);
    Ok(EditOutcome {
        delta: batch.delta,
        metrics: fact.metrics,
        vectors: fact.vectors,
    })
}

/// Edits every fact of `edits` at once (all at the same layer, with the same
/// hyper-parameters): each fact's δ is optimised as a single edit's would be, on the
/// version `base`, and one rank-n insert gives every fact's key its value (see
/// [`super::insert`]). `observer(fact, report)` sees every fact's iterations and may
/// cancel.
pub fn compute_batch_edit(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    stats: &LayerStatistics,
    edits: &[ValidatedEdit],
    base: &DeltaSet,
    observer: &mut dyn FnMut(usize, IterationReport) -> ControlFlow<()>,
) -> Result<BatchOutcome> {
    let started = Instant::now();
    check_batch(encoder, stats, edits)?;
    let solved = optimise_batch(encoder, tokenizer, edits, base, observer)?;
    let delta = insert(
        encoder.id(),
        stats,
        &solved.iter().map(|f| f.key.clone()).collect::<Vec<_>>(),
        &solved
            .iter()
            .map(|f| f.prompt_key.clone())
            .collect::<Vec<_>>(),
        // On the version the facts were optimised on, fc2's output at each prompt's key
        // is target_init, so each key's output must move by exactly its δ.
        &solved
            .iter()
            .map(|f| f.optimised.delta.clone())
            .collect::<Vec<_>>(),
    )?;
    let edited = base.with(std::sync::Arc::new(delta.clone()));
    let facts = fact_outcomes(encoder, tokenizer, edits, solved, base, &edited, started)?;
    Ok(BatchOutcome { delta, facts })
}

/// The checks every batch passes before any work: facts at one layer, not more of them
/// than the layer can hold, statistics of that layer. Returns the layer.
pub(super) fn check_batch(
    encoder: &ClipTextEncoder,
    stats: &LayerStatistics,
    edits: &[ValidatedEdit],
) -> Result<usize> {
    let first = edits
        .first()
        .ok_or_else(|| EngineError::Numerical("a batch edit needs at least one fact".into()))?;
    let layer = first.layer;
    if let Some((i, _)) = edits.iter().enumerate().find(|(_, e)| e.layer != layer) {
        return Err(EngineError::Numerical(format!(
            "fact {i} is at another layer than fact 0; a batch edits one layer"
        )));
    }
    check_batch_size(edits.len(), encoder.config().intermediate_size)?;
    encoder.check_edit_layer(layer)?;
    check_statistics(encoder, stats, layer)?;
    Ok(layer)
}

/// Refuses statistics of another layer or size than the one edited.
pub(super) fn check_statistics(
    encoder: &ClipTextEncoder,
    stats: &LayerStatistics,
    layer: usize,
) -> Result<()> {
    if stats.layer != layer || stats.dim != encoder.config().intermediate_size {
        return Err(EngineError::Numerical(format!(
            "statistics are for layer {} (size {}), the edit is at layer {layer}",
            stats.layer, stats.dim
        )));
    }
    Ok(())
}

/// Every fact's δ, optimised on `base` in passes of [`FACTS_PER_PASS`].
pub(super) fn optimise_batch(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    base: &DeltaSet,
    observer: &mut dyn FnMut(usize, IterationReport) -> ControlFlow<()>,
) -> Result<Vec<SolvedFact>> {
    let prepared = encoder.prepare(base)?;
    let mut solved = Vec::with_capacity(edits.len());
    for (pass, chunk) in edits.chunks(FACTS_PER_PASS).enumerate() {
        let offset = pass * FACTS_PER_PASS;
        solved.extend(optimise_facts(
            encoder,
            tokenizer,
            chunk,
            base,
            &prepared,
            &mut |fact, report| observer(offset + fact, report),
        )?);
    }
    Ok(solved)
}

/// The rank-n insert at the statistics' layer: u = C⁻¹k / ‖C⁻¹k‖ per mean key (solved in
/// f64), then the values that move fc2's output at each prompt key by its residual.
pub(super) fn insert(
    encoder: crate::deltas::TextEncoderId,
    stats: &LayerStatistics,
    keys: &[Vec<f32>],
    prompt_keys: &[Vec<f32>],
    residuals: &[Vec<f32>],
) -> Result<Delta> {
    let u = keys
        .iter()
        .map(|key| {
            let solved = stats.solve(&key.iter().map(|&x| x as f64).collect::<Vec<_>>())?;
            let norm = solved.iter().map(|x| x * x).sum::<f64>().sqrt();
            Ok(solved.iter().map(|x| (x / norm) as f32).collect())
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    let v = solve_values(&u, prompt_keys, residuals)?;
    Ok(Delta {
        encoder,
        layer: stats.layer,
        rank: keys.len(),
        u: u.concat(),
        v: v.concat(),
    })
}

/// Each fact's record: its optimisation, and the text check on the version `edited`.
pub(super) fn fact_outcomes(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    solved: Vec<SolvedFact>,
    base: &DeltaSet,
    edited: &DeltaSet,
    started: Instant,
) -> Result<Vec<FactOutcome>> {
    let checks = text_checks(encoder, tokenizer, edits, &solved, base, edited)?;
    let duration_ms = started.elapsed().as_millis() as u64;
    Ok(solved
        .into_iter()
        .zip(checks)
        .zip(edits)
        .map(|((fact, text_check), edit)| {
            let optimised = fact.optimised;
            let final_probability = *optimised.probabilities.last().unwrap_or(&0.0);
            FactOutcome {
                metrics: EditMetrics {
                    layer: edit.layer,
                    iterations: optimised.steps,
                    converged: final_probability > edit.request.hparams.prob_threshold,
                    losses: optimised.losses,
                    probabilities: optimised.probabilities,
                    final_probability,
                    text_check,
                    duration_ms,
                },
                vectors: EditVectors {
                    key: fact.key,
                    target_init: fact.target_init,
                    delta: optimised.delta,
                },
            }
        })
        .collect())
}

/// Each fact's k* at `layer`: the mean of fc2's input at the subject's last token over
/// its context templates, at the version `prepared`.
pub(super) fn mean_keys(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    layer: usize,
    prepared: &PreparedDeltas,
) -> Result<Vec<Vec<f32>>> {
    let key_prompts: Vec<String> = edits.iter().flat_map(|e| e.key_prompts.clone()).collect();
    let keys = run_to_layer(encoder, tokenizer, &key_prompts, layer, prepared)?;
    let mut row = 0;
    let mut mean_keys = Vec::with_capacity(edits.len());
    for edit in edits {
        let rows = edit
            .key_indices
            .iter()
            .enumerate()
            .map(|(i, &p)| keys.fc2_input.i((row + i, p)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        row += rows.len();
        mean_keys.push(to_vec(&Tensor::stack(&rows, 0)?.mean(0)?)?);
    }
    Ok(mean_keys)
}

/// What one fact's optimisation gives the insert.
pub(super) struct SolvedFact {
    /// Mean key over the context templates [inner].
    pub(super) key: Vec<f32>,
    /// fc2's input at the bare edit prompt's subject [inner].
    pub(super) prompt_key: Vec<f32>,
    /// fc2's output there before the edit [hidden].
    pub(super) target_init: Vec<f32>,
    /// The fact's candidates as the unedited encoder sees them [c, hidden].
    pub(super) candidates: Tensor,
    pub(super) optimised: Optimised,
}

/// Steps 1–5 of DESIGN.md §1 for a few facts together: keys, target_init, candidates and
/// δ, all on the version `base`.
fn optimise_facts(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    base: &DeltaSet,
    prepared: &PreparedDeltas,
    observer: &mut dyn FnMut(usize, IterationReport) -> ControlFlow<()>,
) -> Result<Vec<SolvedFact>> {
    let layer = edits[0].layer;
    let hparams = &edits[0].request.hparams;

    // 1. k*: mean fc2 input at the subject's last token over the context templates.
    let mean_keys = mean_keys(encoder, tokenizer, edits, layer, prepared)?;

    // 3. The rewriting prompts' stream after the layer, computed once.
    let rewriting_prompts: Vec<String> = edits
        .iter()
        .flat_map(|e| e.rewriting_prompts.clone())
        .collect();
    let prompts_per_fact = edits[0].rewriting_prompts.len();
    let rewriting = run_to_layer(encoder, tokenizer, &rewriting_prompts, layer, prepared)?;
    let mut target_inits = Vec::with_capacity(edits.len());
    let mut prompt_keys = Vec::with_capacity(edits.len());
    for (f, edit) in edits.iter().enumerate() {
        let at = (f * prompts_per_fact, edit.rewriting_indices[0]);
        target_inits.push(to_vec(&rewriting.fc2_output.i(at)?)?);
        prompt_keys.push(to_vec(&rewriting.fc2_input.i(at)?)?);
    }
    let target_init_norms: Vec<f64> = target_inits.iter().map(|t| norm(t)).collect();

    // 4. Candidates, by the unedited (parent-version) encoder.
    let candidate_texts: Vec<&str> = edits
        .iter()
        .flat_map(|e| e.candidates.iter().map(String::as_str))
        .collect();
    let all_candidates = encoder.represent_texts(tokenizer, &candidate_texts, base)?;
    let mut candidates = Vec::with_capacity(edits.len());
    let mut start = 0;
    for edit in edits {
        candidates.push(all_candidates.narrow(0, start, edit.candidates.len())?);
        start += edit.candidates.len();
    }

    // 5. δ.
    let parts = ObjectiveParts {
        encoder,
        tokenizer,
        prepared,
        layer,
        edits,
        stream: &rewriting.after_layer,
        eos: &rewriting.eos,
        candidates: &candidates,
        prompts_per_fact,
        weight_decay: hparams.weight_decay,
        target_init_norms: &target_init_norms,
    };
    let optimised = optimise(
        &|facts: &[usize]| parts.objective(facts),
        target_inits[0].len(),
        hparams,
        &target_init_norms,
        observer,
    )?;
    Ok(optimised
        .into_iter()
        .zip(mean_keys)
        .zip(prompt_keys)
        .zip(target_inits)
        .zip(candidates)
        .map(
            |((((optimised, key), prompt_key), target_init), candidates)| SolvedFact {
                key,
                prompt_key,
                target_init,
                candidates,
                optimised,
            },
        )
        .collect())
}

/// What the objective of any subset of a pass's facts is built from: the optimisation
/// starts with every fact and drops those that have stopped (see [`optimise`]).
struct ObjectiveParts<'a> {
    encoder: &'a ClipTextEncoder,
    tokenizer: &'a ClipTokenizer,
    prepared: &'a PreparedDeltas,
    layer: usize,
    edits: &'a [ValidatedEdit],
    /// The rewriting prompts' δ-free stream after the edited layer, fact-major [b, t, d].
    stream: &'a Tensor,
    /// Each rewriting prompt's first EOS position.
    eos: &'a [usize],
    /// Each fact's candidates by the unedited encoder [c, d].
    candidates: &'a [Tensor],
    prompts_per_fact: usize,
    weight_decay: f64,
    target_init_norms: &'a [f64],
}

impl<'a> ObjectiveParts<'a> {
    /// The objective of `facts` (indices into the pass, ascending), its rows packed
    /// afresh. The same-path candidates are recomputed on that packing, so a candidate
    /// equal to a rewriting prompt stays exactly at distance 0 from it at δ = 0.
    fn objective(&self, facts: &[usize]) -> Result<Objective<'a>> {
        let per = self.prompts_per_fact;
        let rows: Vec<usize> = facts.iter().flat_map(|&f| f * per..(f + 1) * per).collect();
        let stream = if facts.len() == self.edits.len() {
            self.stream.clone()
        } else {
            let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
            let index = Tensor::from_vec(index, rows.len(), self.stream.device())?;
            self.stream.index_select(&index, 0)?
        };
        let edits: Vec<ValidatedEdit> = facts.iter().map(|&f| self.edits[f].clone()).collect();
        let subject_positions: Vec<usize> = edits
            .iter()
            .flat_map(|e| e.rewriting_indices.iter().copied())
            .collect();
        let eos: Vec<usize> = rows.iter().map(|&r| self.eos[r]).collect();
        let owners: Vec<usize> = (0..facts.len())
            .flat_map(|f| std::iter::repeat_n(f, per))
            .collect();
        let upper = UpperLayers::new(
            self.encoder,
            self.prepared,
            self.layer,
            stream,
            &subject_positions,
            &eos,
            &owners,
        )?;
        let candidates: Vec<Tensor> = facts.iter().map(|&f| self.candidates[f].clone()).collect();
        let hidden = self.encoder.config().hidden_size;
        let scored = same_path_candidates(hidden, self.tokenizer, &edits, &upper, &candidates)?;
        let norms: Vec<f64> = facts.iter().map(|&f| self.target_init_norms[f]).collect();
        Objective::new(upper, &scored, per, self.weight_decay, &norms)
    }
}

/// Each fact's candidates as the objective scores them: a candidate that is the same
/// text as one of the fact's rewriting prompts (the source is often the edit prompt
/// itself, as in every TIMED edit) takes that prompt's δ-free representation from the
/// very computation that δ flows through, instead of the full encoder's.
///
/// Both are the same value up to rounding, but not bit for bit (packed rows vs a padded
/// batch). The reference computes both with one encoder, so their distance at δ = 0 is
/// exactly 0 and contributes no gradient; a distance of 1e-7 instead gives a gradient
/// of full length pointing along rounding noise, which Adam then follows (issue 10).
fn same_path_candidates(
    hidden: usize,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    upper: &UpperLayers,
    candidates: &[Tensor],
) -> Result<Vec<Tensor>> {
    let mut at_zero: Option<Tensor> = None;
    let mut scored = Vec::with_capacity(edits.len());
    let mut first_prompt = 0;
    for (edit, fact_candidates) in edits.iter().zip(candidates) {
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
            scored.push(fact_candidates.clone());
        } else {
            if at_zero.is_none() {
                let zeros = Tensor::zeros(
                    (candidates.len(), hidden),
                    fact_candidates.dtype(),
                    fact_candidates.device(),
                )?;
                at_zero = Some(upper.representation(&zeros)?);
            }
            let at_zero = at_zero.as_ref().expect("computed above");
            let rows = same_prompt
                .iter()
                .enumerate()
                .map(|(c, prompt)| match prompt {
                    Some(p) => at_zero.i(first_prompt + *p),
                    None => fact_candidates.i(c),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            scored.push(Tensor::stack(&rows, 0)?);
        }
        first_prompt += edit.rewriting_prompts.len();
    }
    Ok(scored)
}

/// Step 7 for every fact: where the encoder with the batch's delta puts each edit
/// prompt, relative to that fact's unedited target and source.
fn text_checks(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    solved: &[SolvedFact],
    base: &DeltaSet,
    edited: &DeltaSet,
) -> Result<Vec<TextCheck>> {
    let prompts: Vec<&str> = edits.iter().map(|e| e.request.prompt.as_str()).collect();
    let after = encoder.represent_texts(tokenizer, &prompts, edited)?;
    let before = encoder.represent_texts(tokenizer, &prompts, base)?;
    let distance = |a: &Tensor, b: &Tensor| -> Result<f64> {
        Ok((a - b)?
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?)
    };
    solved
        .iter()
        .enumerate()
        .map(|(f, fact)| {
            let (after, before) = (after.i(f)?, before.i(f)?);
            let target = fact.candidates.i(0)?;
            let source = fact.candidates.i(1)?;
            let distance_to_target = distance(&after, &target)?;
            let distance_to_source = distance(&after, &source)?;
            Ok(TextCheck {
                distance_to_target,
                distance_to_source,
                distance_to_target_before: distance(&before, &target)?,
                distance_to_source_before: distance(&before, &source)?,
                nearer_target: distance_to_target < distance_to_source,
            })
        })
        .collect()
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
                &vec![0; edit.rewriting_indices.len()],
            )
            .unwrap();
            let objective = Objective::new(
                upper,
                &[candidates],
                edit.rewriting_prompts.len(),
                0.1,
                &[2.0],
            )
            .unwrap();
            let delta: Vec<f32> = (0..32).map(|i| ((i as f32) * 0.7).sin() * 0.3).collect();
            let analytic = objective
                .evaluate(std::slice::from_ref(&delta), true)
                .unwrap()
                .gradients[0]
                .clone();
            let h = 1e-3f32;
            for i in [0usize, 5, 17, 31] {
                let mut plus = delta.clone();
                plus[i] += h;
                let mut minus = delta.clone();
                minus[i] -= h;
                let numeric = (objective.evaluate(&[plus], false).unwrap().losses[0]
                    - objective.evaluate(&[minus], false).unwrap().losses[0])
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
