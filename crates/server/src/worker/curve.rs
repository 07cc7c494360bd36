//! The optimisation curve of an edit (loss and target probability per iteration),
//! collected while it runs and stored with its metrics as `metrics.curve`, so that the
//! dashboard can draw it after the live progress is gone.

use crate::backend::EditProgress;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Points stored per edit at most (a 100-fact batch at 100 iterations has 10,000):
/// beyond it every k-th iteration is kept, and always the last.
const MAX_POINTS: usize = 2_000;

/// Steps per fact, in the order they came.
#[derive(Debug, Default)]
pub struct Curve {
    facts: BTreeMap<Option<usize>, Vec<EditProgress>>,
}

impl Curve {
    pub fn push(&mut self, step: EditProgress) {
        self.facts.entry(step.fact).or_default().push(step);
    }

    /// `{"facts": [{"fact": null|n, "iteration": [...], "loss": [...], "probability": [...]}]}`.
    pub fn to_json(&self) -> Value {
        let total: usize = self.facts.values().map(Vec::len).sum();
        let stride = total.div_ceil(MAX_POINTS).max(1);
        let facts: Vec<Value> = self
            .facts
            .iter()
            .map(|(fact, steps)| {
                let kept: Vec<&EditProgress> = steps
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % stride == 0 || *i + 1 == steps.len())
                    .map(|(_, s)| s)
                    .collect();
                json!({
                    "fact": fact,
                    "iteration": kept.iter().map(|s| s.iteration).collect::<Vec<_>>(),
                    "loss": kept.iter().map(|s| s.loss).collect::<Vec<_>>(),
                    "probability": kept.iter().map(|s| s.probability).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "facts": facts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(fact: Option<usize>, iteration: usize) -> EditProgress {
        EditProgress {
            iteration,
            loss: 1.0 / (iteration + 1) as f64,
            probability: iteration as f64 / 100.0,
            fact,
        }
    }

    #[test]
    fn each_fact_gets_its_series_and_long_runs_are_thinned() {
        let mut curve = Curve::default();
        for i in 0..3 {
            curve.push(step(None, i));
        }
        let json = curve.to_json();
        assert_eq!(json["facts"][0]["iteration"], json!([0, 1, 2]));
        assert_eq!(json["facts"][0]["probability"], json!([0.0, 0.01, 0.02]));

        let mut batch = Curve::default();
        for i in 0..1_500 {
            for fact in 0..2 {
                batch.push(step(Some(fact), i));
            }
        }
        let json = batch.to_json();
        let facts = json["facts"].as_array().unwrap();
        assert_eq!(facts.len(), 2);
        let iterations = facts[1]["iteration"].as_array().unwrap();
        // 3,000 points, every second one kept (750 per fact), and each fact's last.
        assert_eq!(iterations.len(), 751);
        assert_eq!(iterations.last().unwrap(), 1_499);
        assert_eq!(facts[1]["fact"], 1);
    }
}
