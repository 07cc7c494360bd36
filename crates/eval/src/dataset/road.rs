//! RoAD (Roles and Appearances Dataset): columns `Type, Prompt, Oracle, Old, New`, then per
//! i = 1..n `Positive{i}, Positive_oracle{i}` (test split only), `Positive_old{i},
//! Positive_new{i}, Negative{i}, Negative_new{i}`. The edit prompt (and subject) is
//! `Prompt`, the source `Old`, the target `New`.

use super::case::{EvalCase, Negative, Positive};
use super::table::Table;
use crate::error::Result;

/// Turns a parsed RoAD table into cases.
pub fn parse(table: &Table) -> Result<Vec<EvalCase>> {
    table.require_columns(&["type", "prompt", "old", "new", "positive1", "negative1"])?;
    let positives = table.count_numbered("positive");
    let negatives = table.count_numbered("negative");
    for i in 1..=positives {
        table.require_columns(&[format!("positive_old{i}"), format!("positive_new{i}")])?;
    }
    for i in 1..=negatives {
        table.require_columns(&[format!("negative_new{i}")])?;
    }
    let has_oracle = table.has_column("oracle");
    table
        .rows()
        .map(|row| {
            let positives = (1..=positives)
                .map(|i| {
                    let oracle_column = format!("positive_oracle{i}");
                    Ok(Positive {
                        prompt: row.required(&format!("positive{i}"))?,
                        old: row.required(&format!("positive_old{i}"))?,
                        new: row.required(&format!("positive_new{i}"))?,
                        oracle: if table.has_column(&oracle_column) {
                            row.optional(&oracle_column)?
                        } else {
                            None
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let negatives = (1..=negatives)
                .map(|i| {
                    Ok(Negative {
                        prompt: row.required(&format!("negative{i}"))?,
                        new: row.required(&format!("negative_new{i}"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(EvalCase {
                row: row.number,
                kind: Some(row.required("type")?),
                edit_prompt: row.required("prompt")?,
                source: row.required("old")?,
                target: row.required("new")?,
                oracle: if has_oracle {
                    row.optional("oracle")?
                } else {
                    None
                },
                positives,
                negatives,
            })
        })
        .collect()
}
