//! The paper's metrics (ReFACT §4.3 and Appendix D), computed from CLIP scores.
//!
//! Every test is one [`Comparison`]: the score of the text that should win against the
//! text that should lose, for one image.
//! - **Efficacy**: image of the edit prompt; the target must beat the source.
//! - **Generality**: image of each positive prompt; its new text must beat its old text.
//!   A seed's generality is the fraction of positives that pass.
//! - **Specificity**: image of each negative prompt; the negative prompt itself must beat
//!   its edited variant (`CLIP(img, negative_new) < CLIP(img, negative)`). A seed's
//!   specificity is the fraction of negatives that pass.
//! - **F1**: the geometric mean `sqrt(generality × specificity)`.
//!
//! All inequalities are strict: **a tie counts as a failure**, as in the reference code
//! (`scores[1] > scores[0]`), so an image that CLIP cannot tell apart is not a success.
//!
//! Aggregation follows the reference evaluation: each metric is averaged over the rows
//! (edits) for every seed, then over seeds. F1 is computed per seed from that seed's
//! averaged generality and specificity, then averaged over seeds. The spread reported is
//! the standard error of the mean over seeds (sample standard deviation / √seeds); the
//! population standard deviation of the per-seed values (what the reference printed as
//! `±`) is kept too.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One test: the score of the text that should win against the one that should lose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub wanted: f32,
    pub other: f32,
}

impl Comparison {
    /// A test from the two scores.
    pub fn new(wanted: f32, other: f32) -> Self {
        Self { wanted, other }
    }

    /// Passes only if the wanted text scores strictly higher; ties and NaNs fail.
    pub fn passed(&self) -> bool {
        self.wanted > self.other
    }
}

/// The fraction of tests that pass, or `None` when there are none.
pub fn pass_rate(tests: &[Comparison]) -> Option<f64> {
    if tests.is_empty() {
        return None;
    }
    Some(tests.iter().filter(|c| c.passed()).count() as f64 / tests.len() as f64)
}

/// The tests of one edit (row) for one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedTests {
    pub seed: u64,
    /// Edit-prompt image: target (wanted) vs source.
    pub efficacy: Comparison,
    /// One per positive prompt: new text (wanted) vs old text.
    pub generality: Vec<Comparison>,
    /// One per negative prompt: the negative itself (wanted) vs its edited variant.
    pub specificity: Vec<Comparison>,
}

/// One row's metrics for one seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeedMetrics {
    pub efficacy: f64,
    pub generality: Option<f64>,
    pub specificity: Option<f64>,
}

impl SeedTests {
    /// Efficacy is 0 or 1; generality and specificity are pass rates.
    pub fn metrics(&self) -> SeedMetrics {
        SeedMetrics {
            efficacy: if self.efficacy.passed() { 1.0 } else { 0.0 },
            generality: pass_rate(&self.generality),
            specificity: pass_rate(&self.specificity),
        }
    }
}

/// The geometric mean of generality and specificity.
pub fn f1(generality: f64, specificity: f64) -> f64 {
    (generality * specificity).sqrt()
}

/// A mean over seeds with its spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    /// Standard error of the mean over seeds; `None` with fewer than two seeds.
    pub se: Option<f64>,
    /// Population standard deviation of the per-seed values (the reference's `np.std`).
    pub std: f64,
    /// How many seeds went in.
    pub seeds: usize,
}

impl Stat {
    /// The statistics of per-seed values; `None` for an empty list.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        let se = (n > 1).then(|| (squares / (n - 1) as f64).sqrt() / (n as f64).sqrt());
        Some(Stat {
            mean,
            se,
            std: (squares / n as f64).sqrt(),
            seeds: n,
        })
    }
}

/// The four numbers of the paper's Table 1 for a set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub efficacy: Option<Stat>,
    pub generality: Option<Stat>,
    pub specificity: Option<Stat>,
    pub f1: Option<Stat>,
    /// Rows (edits) that went in.
    pub rows: usize,
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Aggregates rows × seeds: per seed, the mean over rows; then mean and spread over seeds.
/// A seed missing from some rows is averaged over the rows that have it.
pub fn summarise(rows: &[Vec<SeedTests>]) -> Summary {
    let mut by_seed: BTreeMap<u64, Vec<SeedMetrics>> = BTreeMap::new();
    for row in rows {
        for tests in row {
            by_seed.entry(tests.seed).or_default().push(tests.metrics());
        }
    }
    let (mut eff, mut gen, mut spec, mut f1s) = (vec![], vec![], vec![], vec![]);
    for metrics in by_seed.values() {
        let e: Vec<f64> = metrics.iter().map(|m| m.efficacy).collect();
        let g: Vec<f64> = metrics.iter().filter_map(|m| m.generality).collect();
        let s: Vec<f64> = metrics.iter().filter_map(|m| m.specificity).collect();
        eff.extend(mean(&e));
        let (g, s) = (mean(&g), mean(&s));
        gen.extend(g);
        spec.extend(s);
        if let (Some(g), Some(s)) = (g, s) {
            f1s.push(f1(g, s));
        }
    }
    Summary {
        efficacy: Stat::of(&eff),
        generality: Stat::of(&gen),
        specificity: Stat::of(&spec),
        f1: Stat::of(&f1s),
        rows: rows.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(wanted: f32, other: f32) -> Comparison {
        Comparison::new(wanted, other)
    }

    #[test]
    fn a_tie_is_a_failure() {
        assert!(c(20.5, 20.4).passed());
        assert!(!c(20.4, 20.4).passed());
        assert!(!c(19.0, 20.4).passed());
        assert!(!c(f32::NAN, 1.0).passed());
    }

    #[test]
    fn pass_rate_counts_strict_wins() {
        let tests = [c(2.0, 1.0), c(1.0, 1.0), c(0.0, 1.0), c(3.0, 2.5)];
        assert_eq!(pass_rate(&tests), Some(0.5));
        assert_eq!(pass_rate(&[]), None);
    }
}
