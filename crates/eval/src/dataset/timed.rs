//! TIMED (the TIME dataset): columns `old, new`, then per i = 1..n `positive{i}, gt{i},
//! negative{i}, gn{i}`. The edit prompt is `old`, which is also the source; the target is
//! `new`. A positive's old text is the positive prompt itself and its new text `gt{i}`;
//! a negative's edited variant is `gn{i}`. The oracle generates `new` and `gt{i}`.

use super::case::{EvalCase, Negative, Positive};
use super::table::Table;
use crate::error::Result;

/// Turns a parsed TIMED table into cases.
pub fn parse(table: &Table) -> Result<Vec<EvalCase>> {
    table.require_columns(&["old", "new", "positive1", "negative1"])?;
    let positives = table.count_numbered("positive");
    let negatives = table.count_numbered("negative");
    for i in 1..=positives {
        table.require_columns(&[format!("gt{i}")])?;
    }
    for i in 1..=negatives {
        table.require_columns(&[format!("gn{i}")])?;
    }
    table
        .rows()
        .map(|row| {
            let positives = (1..=positives)
                .map(|i| {
                    let prompt = row.required(&format!("positive{i}"))?;
                    Ok(Positive {
                        old: prompt.clone(),
                        prompt,
                        new: row.required(&format!("gt{i}"))?,
                        oracle: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let negatives = (1..=negatives)
                .map(|i| {
                    Ok(Negative {
                        prompt: row.required(&format!("negative{i}"))?,
                        new: row.required(&format!("gn{i}"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let old = row.required("old")?;
            Ok(EvalCase {
                row: row.number,
                kind: None,
                edit_prompt: old.clone(),
                source: old,
                target: row.required("new")?,
                oracle: None,
                positives,
                negatives,
            })
        })
        .collect()
}
