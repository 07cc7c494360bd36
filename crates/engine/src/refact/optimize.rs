//! Finding δ: the vector added to fc2's output at the subject that makes the rewriting
//! prompts' representations nearest the target among the candidates.
//!
//! loss(δ) = −mean_i log softmax_c(−‖E_i(δ) − cand_c‖)[target] + wd · ‖δ‖ / ‖target_init‖²

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

/// The loss as a function of δ.
pub(crate) struct Objective<'a> {
    upper: UpperLayers<'a>,
    /// Candidate representations [c, d]; index 0 is the target.
    candidates: Tensor,
    weight_decay: f64,
    /// ‖target_init‖²: the decay term's scale.
    target_init_norm_sq: f64,
}

/// Loss, target probability and the gradient of the loss at one δ.
pub(crate) struct Evaluation {
    pub loss: f64,
    pub probability: f64,
    pub gradient: Vec<f32>,
}

impl<'a> Objective<'a> {
    pub(crate) fn new(
        upper: UpperLayers<'a>,
        candidates: Tensor,
        weight_decay: f64,
        target_init_norm: f64,
    ) -> Self {
        Self {
            upper,
            candidates,
            weight_decay,
            target_init_norm_sq: target_init_norm * target_init_norm,
        }
    }

    /// Evaluates at `delta`; the gradient is computed only when asked.
    pub(crate) fn evaluate(&self, delta: &[f32], with_gradient: bool) -> Result<Evaluation> {
        let dtype = self.candidates.dtype();
        let device = self.candidates.device();
        let var =
            Var::from_tensor(&Tensor::from_slice(delta, delta.len(), device)?.to_dtype(dtype)?)?;
        let pooled = self.upper.pooled(var.as_tensor())?;
        // Distances of every prompt's representation to every candidate [b, c].
        let diff = pooled
            .unsqueeze(1)?
            .broadcast_sub(&self.candidates.unsqueeze(0)?)?;
        let distances = euclidean_from_squared(&diff.sqr()?.sum(D::Minus1)?)?;
        let log_probs = candle_nn::ops::log_softmax(&distances.neg()?, D::Minus1)?;
        let target_log_prob = log_probs.narrow(1, 0, 1)?.squeeze(1)?;
        let data_loss = target_log_prob.mean_all()?.neg()?;
        let probability = target_log_prob
            .exp()?
            .mean_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;

        let norm = delta
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let decay = self.weight_decay * norm / self.target_init_norm_sq;
        let loss = data_loss
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?
            + decay;

        let gradient = if with_gradient {
            let grads = data_loss.backward()?;
            // candle drops gradients silently through ops without a backward pass
            // (CANDLE-NOTES.md); a missing one must stop the edit, not skip the step.
            let grad = grads.get(var.as_tensor()).ok_or_else(|| {
                EngineError::Numerical("no gradient reached δ (an op without backward?)".into())
            })?;
            let mut grad: Vec<f32> = grad.to_dtype(candle_core::DType::F32)?.to_vec1()?;
            // d/dδ of wd·‖δ‖/‖t‖² is wd·δ/(‖δ‖·‖t‖²), and 0 at δ = 0 (as PyTorch's norm
            // backward); added by hand because sqrt's backward is infinite at 0.
            if norm > 0.0 {
                let scale = (self.weight_decay / (norm * self.target_init_norm_sq)) as f32;
                for (g, d) in grad.iter_mut().zip(delta) {
                    *g += scale * d;
                }
            }
            grad
        } else {
            Vec::new()
        };
        if !loss.is_finite() || gradient.iter().any(|g| !g.is_finite()) {
            return Err(EngineError::Numerical(format!(
                "loss or gradient not finite (loss {loss})"
            )));
        }
        Ok(Evaluation {
            loss,
            probability,
            gradient,
        })
    }
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

/// Result of the optimisation.
#[derive(Debug, Clone)]
pub(crate) struct Optimised {
    pub delta: Vec<f32>,
    /// Adam steps taken.
    pub steps: usize,
    pub losses: Vec<f64>,
    pub probabilities: Vec<f64>,
}

/// Runs Adam from δ = 0. Before each step: stop if the target probability exceeds the
/// threshold or this is the last iteration (which only measures). After each step: clamp
/// ‖δ‖ to `clamp_factor · ‖target_init‖`. `observer` may stop it (→ Cancelled).
pub(crate) fn optimise(
    objective: &Objective,
    dim: usize,
    hparams: &HyperParams,
    target_init_norm: f64,
    observer: &mut dyn FnMut(IterationReport) -> ControlFlow<()>,
) -> Result<Optimised> {
    let mut delta = vec![0f32; dim];
    let mut adam = Adam::new(hparams.lr, dim);
    let max_norm = hparams.clamp_factor * target_init_norm;
    let mut losses = Vec::new();
    let mut probabilities = Vec::new();
    let mut steps = 0;
    for iteration in 0..hparams.max_steps {
        let last = iteration == hparams.max_steps - 1;
        // The gradient is needed unless this iteration ends the loop; whether it does is
        // only known from the probability, so the last-iteration case is decided up front.
        let eval = objective.evaluate(&delta, !last)?;
        losses.push(eval.loss);
        probabilities.push(eval.probability);
        let report = IterationReport {
            iteration,
            loss: eval.loss,
            probability: eval.probability,
        };
        if observer(report).is_break() {
            return Err(EngineError::Cancelled);
        }
        if eval.probability > hparams.prob_threshold || last {
            break;
        }
        adam.step(&mut delta, &eval.gradient);
        steps += 1;
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
    Ok(Optimised {
        delta,
        steps,
        losses,
        probabilities,
    })
}
