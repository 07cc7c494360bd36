//! Finding δ: the vector added to fc2's output at the subject that makes the rewriting
//! prompts' representations nearest the target among the candidates.
//!
//! loss(δ) = −mean_i log softmax_c(−‖E_i(δ) − cand_c‖)[target] + wd · ‖δ‖ / ‖target_init‖²
//!
//! A batch edit finds one δ per fact in the same passes (see [`Objective`]).

use super::adam::Adam;
use super::request::HyperParams;
use super::upper_layers::UpperLayers;
use crate::error::{EngineError, Result};
use candle_core::{Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

/// One iteration as it happened, for progress streams and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IterationReport {
    /// 0-based iteration.
    pub iteration: usize,
    pub loss: f64,
    /// Mean probability of the target over the rewriting prompts.
    pub probability: f64,
}

/// The loss as a function of every fact's δ. Facts are independent: fact f's loss
/// depends only on its own δ_f, and the total is their sum, so one backward pass gives
/// each fact the gradient it would have alone.
pub(crate) struct Objective<'a> {
    upper: UpperLayers<'a>,
    /// Candidate representations per fact [facts, c, d]; index 0 is the fact's target.
    candidates: Tensor,
    /// Added to the distance of each (fact, candidate) [facts, 1, c]: 0 for a real
    /// candidate, a distance no real one reaches for padding (facts with fewer
    /// contrastive texts). `None` when no fact is padded.
    padding: Option<Tensor>,
    /// Rewriting prompts per fact; the pooled rows are fact-major.
    prompts_per_fact: usize,
    weight_decay: f64,
    /// ‖target_init‖² per fact: the decay term's scale.
    target_init_norm_sq: Vec<f64>,
}

/// Losses, target probabilities and gradients of every fact at one point.
pub(crate) struct Evaluation {
    pub losses: Vec<f64>,
    pub probabilities: Vec<f64>,
    /// Per fact; empty when not asked for.
    pub gradients: Vec<Vec<f32>>,
}

/// A distance no real candidate is at: padded candidates get probability 0 (e^-1e4).
const PADDING_DISTANCE: f64 = 1e4;

impl<'a> Objective<'a> {
    /// `candidates[f]` are fact f's candidate representations (target first), each
    /// [c_f, d]; `target_init_norms[f]` is ‖target_init‖ of fact f.
    pub(crate) fn new(
        upper: UpperLayers<'a>,
        candidates: &[Tensor],
        prompts_per_fact: usize,
        weight_decay: f64,
        target_init_norms: &[f64],
    ) -> Result<Self> {
        let widest = candidates
            .iter()
            .map(|c| c.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let widest = widest.into_iter().max().unwrap_or(0);
        let mut padded = Vec::with_capacity(candidates.len());
        let mut pad = Vec::with_capacity(candidates.len() * widest);
        for fact in candidates {
            let (count, hidden) = fact.dims2()?;
            pad.extend((0..widest).map(|c| if c < count { 0.0 } else { PADDING_DISTANCE }));
            padded.push(if count < widest {
                let zeros = Tensor::zeros((widest - count, hidden), fact.dtype(), fact.device())?;
                Tensor::cat(&[fact, &zeros], 0)?
            } else {
                fact.clone()
            });
        }
        let candidates = Tensor::stack(&padded, 0)?;
        let padding = if pad.iter().any(|&p| p != 0.0) {
            let facts = padded.len();
            Some(
                Tensor::from_vec(pad, (facts, 1, widest), candidates.device())?
                    .to_dtype(candidates.dtype())?,
            )
        } else {
            None
        };
        Ok(Self {
            upper,
            candidates,
            padding,
            prompts_per_fact,
            weight_decay,
            target_init_norm_sq: target_init_norms.iter().map(|n| n * n).collect(),
        })
    }

    /// Evaluates at `deltas` (one per fact); the gradients are computed only when asked.
    pub(crate) fn evaluate(&self, deltas: &[Vec<f32>], with_gradient: bool) -> Result<Evaluation> {
        let dtype = self.candidates.dtype();
        let device = self.candidates.device();
        let facts = deltas.len();
        // δ lives in the encoder's hidden space; the representations it is scored by may
        // be wider (SDXL's second encoder adds its projection).
        let hidden = deltas.first().map_or(0, Vec::len);
        let width = self.candidates.dim(2)?;
        let flat: Vec<f32> = deltas.iter().flatten().copied().collect();
        let var =
            Var::from_tensor(&Tensor::from_vec(flat, (facts, hidden), device)?.to_dtype(dtype)?)?;
        let pooled = self.upper.representation(var.as_tensor())?.reshape((
            facts,
            self.prompts_per_fact,
            width,
        ))?;
        // Distances of every prompt's representation to its fact's candidates [f, p, c].
        let diff = pooled
            .unsqueeze(2)?
            .broadcast_sub(&self.candidates.unsqueeze(1)?)?;
        let mut distances = euclidean_from_squared(&diff.sqr()?.sum(D::Minus1)?)?;
        if let Some(padding) = &self.padding {
            distances = distances.broadcast_add(padding)?;
        }
        let log_probs = candle_nn::ops::log_softmax(&distances.neg()?, D::Minus1)?;
        let target_log_prob = log_probs.narrow(2, 0, 1)?.squeeze(2)?;
        let data_losses = target_log_prob.mean(1)?.neg()?;
        let probabilities = to_f64s(&target_log_prob.exp()?.mean(1)?)?;
        let norms: Vec<f64> = deltas
            .iter()
            .map(|d| d.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt())
            .collect();
        let losses: Vec<f64> = to_f64s(&data_losses)?
            .iter()
            .enumerate()
            .map(|(f, data)| data + self.weight_decay * norms[f] / self.target_init_norm_sq[f])
            .collect();

        let gradients = if with_gradient {
            let grads = data_losses.sum_all()?.backward()?;
            // candle drops gradients silently through ops without a backward pass
            // (CANDLE-NOTES.md); a missing one must stop the edit, not skip the step.
            let grad = grads.get(var.as_tensor()).ok_or_else(|| {
                EngineError::Numerical("no gradient reached δ (an op without backward?)".into())
            })?;
            let rows: Vec<Vec<f32>> = grad.to_dtype(candle_core::DType::F32)?.to_vec2()?;
            rows.into_iter()
                .enumerate()
                .map(|(f, mut grad)| {
                    // d/dδ of wd·‖δ‖/‖t‖² is wd·δ/(‖δ‖·‖t‖²), and 0 at δ = 0 (as
                    // PyTorch's norm backward); added by hand because sqrt's backward is
                    // infinite at 0.
                    if norms[f] > 0.0 {
                        let scale =
                            (self.weight_decay / (norms[f] * self.target_init_norm_sq[f])) as f32;
                        for (g, d) in grad.iter_mut().zip(&deltas[f]) {
                            *g += scale * d;
                        }
                    }
                    grad
                })
                .collect()
        } else {
            Vec::new()
        };
        if losses.iter().any(|l| !l.is_finite())
            || gradients.iter().flatten().any(|g| !g.is_finite())
        {
            return Err(EngineError::Numerical(format!(
                "loss or gradient not finite (losses {losses:?})"
            )));
        }
        Ok(Evaluation {
            losses,
            probabilities,
            gradients,
        })
    }
}

fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_vec1()?)
}

/// √s, differentiable, with the gradient PyTorch's `cdist` gives where s = 0: none.
///
/// A distance is exactly 0 when a candidate is the same text as a rewriting prompt and
/// δ has not moved it yet (the source is often the edit prompt itself). √'s derivative
/// is infinite there, and the direction it multiplies is 0/0; the reference defines the
/// whole term as 0, so a zero distance pulls δ nowhere. Adding 1 under the root only
/// where s = 0 (a constant mask, outside the graph) keeps the value exact (√1 − 1 = 0)
/// and makes the chain rule give 0.5 · 2(x − c) = 0.
fn euclidean_from_squared(squared: &Tensor) -> Result<Tensor> {
    let at_zero = squared.eq(0.0)?.to_dtype(squared.dtype())?.detach();
    Ok((squared + &at_zero)?.sqrt()?.sub(&at_zero)?)
}

/// Result of one fact's optimisation.
#[derive(Debug, Clone)]
pub(crate) struct Optimised {
    pub delta: Vec<f32>,
    /// Adam steps taken.
    pub steps: usize,
    pub losses: Vec<f64>,
    pub probabilities: Vec<f64>,
}

/// Runs Adam from δ = 0 for every fact, each on its own: before each of its steps a
/// fact stops if its target probability exceeds the threshold or this is the last
/// iteration (which only measures); after each step its ‖δ‖ is clamped to
/// `clamp_factor · ‖target_init‖`. Stopped facts keep their δ while the others go on.
/// `observer(fact, report)` sees every fact's iterations and may stop all (→ Cancelled).
///
/// `objective_for(facts)` builds the objective of some of the facts (indices, ascending).
/// A stopped fact costs as much as a running one while it stays in the objective, so
/// once a quarter of the objective's facts have stopped it is rebuilt with the rest
/// (one δ-free pass of their prompts through the upper layers). Facts never interact,
/// so each fact's losses and steps are what they would be alone, up to rounding (its
/// rows are packed with others).
pub(crate) fn optimise<'a>(
    objective_for: &dyn Fn(&[usize]) -> Result<Objective<'a>>,
    dim: usize,
    hparams: &HyperParams,
    target_init_norms: &[f64],
    observer: &mut dyn FnMut(usize, IterationReport) -> ControlFlow<()>,
) -> Result<Vec<Optimised>> {
    let facts = target_init_norms.len();
    let mut deltas = vec![vec![0f32; dim]; facts];
    let mut adams: Vec<Adam> = (0..facts).map(|_| Adam::new(hparams.lr, dim)).collect();
    let mut results: Vec<Optimised> = (0..facts)
        .map(|_| Optimised {
            delta: Vec::new(),
            steps: 0,
            losses: Vec::new(),
            probabilities: Vec::new(),
        })
        .collect();
    let mut running = vec![true; facts];
    let mut active: Vec<usize> = (0..facts).collect();
    let mut objective = objective_for(&active)?;
    for iteration in 0..hparams.max_steps {
        let still: Vec<usize> = active.iter().copied().filter(|&f| running[f]).collect();
        if still.is_empty() {
            break;
        }
        if still.len() * 4 <= active.len() * 3 {
            active = still;
            objective = objective_for(&active)?;
        }
        let last = iteration == hparams.max_steps - 1;
        // The gradient is needed unless this iteration ends the loop; whether it does is
        // only known from the probability, so the last-iteration case is decided up front.
        let current: Vec<Vec<f32>> = active.iter().map(|&f| deltas[f].clone()).collect();
        let eval = objective.evaluate(&current, !last)?;
        for (slot, &fact) in active.iter().enumerate() {
            if !running[fact] {
                continue;
            }
            let result = &mut results[fact];
            result.losses.push(eval.losses[slot]);
            result.probabilities.push(eval.probabilities[slot]);
            let report = IterationReport {
                iteration,
                loss: eval.losses[slot],
                probability: eval.probabilities[slot],
            };
            if observer(fact, report).is_break() {
                return Err(EngineError::Cancelled);
            }
            if eval.probabilities[slot] > hparams.prob_threshold || last {
                running[fact] = false;
                continue;
            }
            let delta = &mut deltas[fact];
            adams[fact].step(delta, &eval.gradients[slot]);
            result.steps += 1;
            let max_norm = hparams.clamp_factor * target_init_norms[fact];
            let norm = delta
                .iter()
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > max_norm {
                let scale = (max_norm / norm) as f32;
                delta.iter_mut().for_each(|x| *x *= scale);
            }
        }
    }
    for (result, delta) in results.iter_mut().zip(deltas) {
        result.delta = delta;
    }
    Ok(results)
}
