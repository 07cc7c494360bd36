//! What a run records: one file per row, and the whole run's summary.

use super::settings::{Mode, RunSettings};
use crate::dataset::EvalCase;
use crate::error::{EvalError, Result};
use crate::metrics::{summarise, SeedTests, Summary};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One row's scored images, written to `rows/row-NNN.json` when the row is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    pub case: EvalCase,
    /// Tests on the mode's images (edited, baseline or oracle), one entry per seed.
    pub tests: Vec<SeedTests>,
    /// Tests on the unedited model's images of the original prompts, when the mode made
    /// them (edit, sequential and oracle modes; the baseline is its own `tests`).
    pub unedited_tests: Option<Vec<SeedTests>>,
    /// The same tests on the text encoder's representations (no images); edit modes only.
    #[serde(default)]
    pub text_space: Option<SeedTests>,
    /// What the edit reported (steps, final probability, seconds); edit modes only.
    pub edit: Option<serde_json::Value>,
    /// Wall-clock seconds the row took (edit included).
    pub seconds: f64,
}

/// One line of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    pub method: String,
    pub summary: Summary,
}

/// `results.json`: the settings, the table, and each row's own metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub settings: RunSettings,
    pub methods: Vec<MethodSummary>,
    /// The text-space check over the rows that have it (edit modes).
    pub text_space: Option<Summary>,
    pub rows: Vec<RowSummary>,
}

/// One row's metrics for the mode (averaged over its seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSummary {
    pub row: usize,
    pub edit_prompt: String,
    pub source: String,
    pub target: String,
    pub summary: Summary,
    pub edit: Option<serde_json::Value>,
}

impl RunResults {
    /// Summarises rows: the mode's line, plus the unedited model's when it was scored.
    pub fn from_rows(settings: &RunSettings, rows: &[RowResult]) -> Self {
        let mode: Mode = settings.mode;
        let mut methods = vec![];
        let unedited: Vec<Vec<SeedTests>> = rows
            .iter()
            .filter_map(|r| r.unedited_tests.clone())
            .collect();
        if !unedited.is_empty() && unedited.len() == rows.len() {
            methods.push(MethodSummary {
                method: Mode::Baseline.label().to_string(),
                summary: summarise(&unedited),
            });
        }
        let tests: Vec<Vec<SeedTests>> = rows.iter().map(|r| r.tests.clone()).collect();
        methods.push(MethodSummary {
            method: mode.label().to_string(),
            summary: summarise(&tests),
        });
        let text_space: Vec<Vec<SeedTests>> = rows
            .iter()
            .filter_map(|r| r.text_space.clone().map(|t| vec![t]))
            .collect();
        let rows = rows
            .iter()
            .map(|r| RowSummary {
                row: r.case.row,
                edit_prompt: r.case.edit_prompt.clone(),
                source: r.case.source.clone(),
                target: r.case.target.clone(),
                summary: summarise(std::slice::from_ref(&r.tests)),
                edit: r.edit.clone(),
            })
            .collect();
        Self {
            settings: settings.clone(),
            methods,
            text_space: (!text_space.is_empty()).then(|| summarise(&text_space)),
            rows,
        }
    }
}

/// Writes JSON through a temporary file and a rename, so a killed run never leaves a
/// half-written row file that a rerun would take as done.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| EvalError::Invalid(format!("serialising {}: {e}", path.display())))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| EvalError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EvalError::io(path, e))
}

/// Reads a JSON file written by `write_json`.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EvalError::config(path, e.to_string()))
}
