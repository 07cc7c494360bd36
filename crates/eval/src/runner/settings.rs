//! What an evaluation run is: the mode, the seeds, and everything that changes its numbers.

use crate::error::{EvalError, Result};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// How the images of a run are made (the rows of the paper's Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each row edits a clean model; its images come from that edited model.
    Edit,
    /// All rows are edited one after another into one model (edit n on version n−1);
    /// every row is then judged on the final model.
    Sequential,
    /// The unedited model on the original prompts.
    Baseline,
    /// The unedited model told the new fact: the oracle prompt for the edit prompt, the
    /// new (or oracle) text for each positive; negatives as the baseline.
    Oracle,
}

impl Mode {
    /// The method's name in the results table.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Edit => "ReFACT",
            Mode::Sequential => "ReFACT (sequential)",
            Mode::Baseline => "Baseline",
            Mode::Oracle => "Oracle",
        }
    }

    /// Whether the mode edits the model.
    pub fn edits(self) -> bool {
        matches!(self, Mode::Edit | Mode::Sequential)
    }
}

impl FromStr for Mode {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "edit" => Ok(Mode::Edit),
            "sequential" => Ok(Mode::Sequential),
            "baseline" => Ok(Mode::Baseline),
            "oracle" => Ok(Mode::Oracle),
            other => Err(EvalError::Invalid(format!(
                "unknown mode `{other}` (expected edit, sequential, baseline or oracle)"
            ))),
        }
    }
}

/// Parses seeds: `A..B` (inclusive, so `0..24` is the paper's 25 seeds), `A..=B`, or a
/// comma-separated list. Duplicates are refused.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let bad = || EvalError::Invalid(format!("bad seeds `{text}` (expected A..B or a,b,c)"));
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let seeds: Vec<u64> = if let Some((a, b)) = text.split_once("..") {
        let (a, b) = (number(a)?, number(b.strip_prefix('=').unwrap_or(b))?);
        if b < a {
            return Err(bad());
        }
        (a..=b).collect()
    } else {
        text.split(',').map(number).collect::<Result<_>>()?
    };
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if seeds.is_empty() || sorted.len() != seeds.len() {
        return Err(bad());
    }
    Ok(seeds)
}

/// Everything that identifies a run. A rerun into the same folder must have the same
/// settings, so that skipped rows and new rows are comparable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub mode: Mode,
    pub seeds: Vec<u64>,
    /// The dataset file and its format, as given.
    pub dataset: String,
    pub format: crate::dataset::DatasetFormat,
    /// How many rows (from the top) are evaluated; `None` for all.
    pub limit: Option<usize>,
    /// The backend's own description (model, scorer, steps, size, layer, scheduler ..).
    pub backend: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_are_inclusive_and_lists_work() {
        assert_eq!(parse_seeds("0..24").unwrap().len(), 25);
        assert_eq!(parse_seeds("3..=5").unwrap(), vec![3, 4, 5]);
        assert_eq!(parse_seeds("7, 1,2").unwrap(), vec![7, 1, 2]);
        assert!(parse_seeds("5..1").is_err());
        assert!(parse_seeds("1,1").is_err());
        assert!(parse_seeds("x").is_err());
    }

    #[test]
    fn modes_parse_and_label() {
        assert_eq!("Oracle".parse::<Mode>().unwrap(), Mode::Oracle);
        assert!("both".parse::<Mode>().is_err());
        assert!(Mode::Sequential.edits() && !Mode::Baseline.edits());
    }
}
