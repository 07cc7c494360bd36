//! A batch edit spread over several layers (issue 14's option; MEMIT's schedule with
//! ReFACT's covariance-weighted insert): instead of one rank-n update of the optimised
//! layer L, a smaller rank-n update of each layer l₁ < … < L.
//!
//! Each fact's δ is optimised at L exactly as for a one-layer batch. Its target is the
//! stream after L at the bare edit prompt's subject: that state on `base`, plus δ. Then,
//! layer by layer from the lowest, on the version holding the layers done so far:
//! - the residual is the target minus the stream after L now (earlier layers' updates
//!   have moved it part of the way, through the layers between);
//! - this layer takes 1/(layers left) of it: an insert (the same solve as the one-layer
//!   edit, with this layer's keys and statistics) that moves fc2's output at each
//!   prompt key by that share.
//!
//! fc2's output at L adds to the stream after L unchanged, so the last layer closes
//! whatever remains: each fact's bare prompt reaches its target exactly, as with one
//! layer, while each layer's update is a fraction of the one-layer update.

use super::edit::{
    check_batch, check_statistics, fact_outcomes, insert, mean_keys, optimise_batch, run_to_layer,
    to_vec, FactOutcome,
};
use super::optimize::IterationReport;
use super::request::ValidatedEdit;
use super::statistics::LayerStatistics;
use crate::deltas::{Delta, DeltaSet};
use crate::error::{EngineError, Result};
use crate::text_encoder::ClipTextEncoder;
use crate::tokenizer::ClipTokenizer;
use candle_core::IndexOp;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

/// The result of a spread batch (and what [`super::Editor::edit`] gives for any job):
/// one rank-n delta per layer, lowest first (one unless the job spreads), and each
/// fact's record (its text check on the version holding all of them).
#[derive(Debug, Clone)]
pub struct SpreadOutcome {
    pub deltas: Vec<Delta>,
    pub facts: Vec<FactOutcome>,
}

/// Edits `edits` (all at the layer L of the last statistics) spreading the update over
/// the layers of `statistics` (one per layer, ascending, the last at L). One set of
/// statistics gives the one-layer batch's delta.
pub fn compute_spread_edit(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    statistics: &[Arc<LayerStatistics>],
    edits: &[ValidatedEdit],
    base: &DeltaSet,
    observer: &mut dyn FnMut(usize, IterationReport) -> ControlFlow<()>,
) -> Result<SpreadOutcome> {
    let started = Instant::now();
    let last = statistics
        .last()
        .ok_or_else(|| EngineError::Numerical("a spread edit needs at least one layer".into()))?;
    for pair in statistics.windows(2) {
        if pair[0].layer >= pair[1].layer {
            return Err(EngineError::Numerical(
                "a spread edit's layers must be ascending and distinct".into(),
            ));
        }
    }
    let layer = check_batch(encoder, last, edits)?;
    for stats in statistics {
        encoder.check_edit_layer(stats.layer)?;
        check_statistics(encoder, stats, stats.layer)?;
    }
    let solved = optimise_batch(encoder, tokenizer, edits, base, observer)?;
    // The subjects at L on the version built so far (first: `base`).
    let mut now = at_subjects(encoder, tokenizer, edits, layer, base)?;
    let targets: Vec<Vec<f32>> = now
        .streams
        .iter()
        .zip(&solved)
        .map(|(state, fact)| add(state, &fact.optimised.delta))
        .collect();

    let mut version = base.clone();
    let mut deltas = Vec::with_capacity(statistics.len());
    for (done, stats) in statistics.iter().enumerate() {
        let left = (statistics.len() - done) as f32;
        let shares: Vec<Vec<f32>> = targets
            .iter()
            .zip(&now.streams)
            .map(|(target, now)| {
                target
                    .iter()
                    .zip(now)
                    .map(|(t, n)| (t - n) / left)
                    .collect()
            })
            .collect();
        let prepared = encoder.prepare(&version)?;
        let keys = mean_keys(encoder, tokenizer, edits, stats.layer, &prepared)?;
        // At L itself (the last layer) the subjects' keys are the ones already read.
        let prompt_keys = if stats.layer == layer {
            std::mem::take(&mut now.keys)
        } else {
            at_subjects(encoder, tokenizer, edits, stats.layer, &version)?.keys
        };
        let delta = insert(encoder.id(), stats, &keys, &prompt_keys, &shares)?;
        version = version.with(Arc::new(delta.clone()));
        deltas.push(delta);
        if done + 1 < statistics.len() {
            now = at_subjects(encoder, tokenizer, edits, layer, &version)?;
        }
    }
    let facts = fact_outcomes(encoder, tokenizer, edits, solved, base, &version, started)?;
    Ok(SpreadOutcome { deltas, facts })
}

/// Each fact's bare edit prompt (its first rewriting prompt) at the subject's last token.
struct SubjectStates {
    /// The stream after the layer.
    streams: Vec<Vec<f32>>,
    /// fc2's input at the layer: the key an insert there must move.
    keys: Vec<Vec<f32>>,
}

/// [`SubjectStates`] at `layer`, at the version `deltas`.
fn at_subjects(
    encoder: &ClipTextEncoder,
    tokenizer: &ClipTokenizer,
    edits: &[ValidatedEdit],
    layer: usize,
    deltas: &DeltaSet,
) -> Result<SubjectStates> {
    let prompts: Vec<String> = edits
        .iter()
        .map(|e| e.rewriting_prompts[0].clone())
        .collect();
    let state = run_to_layer(
        encoder,
        tokenizer,
        &prompts,
        layer,
        &encoder.prepare(deltas)?,
    )?;
    let mut streams = Vec::with_capacity(edits.len());
    let mut keys = Vec::with_capacity(edits.len());
    for (f, edit) in edits.iter().enumerate() {
        let at = (f, edit.rewriting_indices[0]);
        streams.push(to_vec(&state.after_layer.i(at)?)?);
        keys.push(to_vec(&state.fc2_input.i(at)?)?);
    }
    Ok(SubjectStates { streams, keys })
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}
