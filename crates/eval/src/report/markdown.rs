//! `results.md`: the paper's Table 1 layout (Efficacy, Generality, Specificity, F1, in %,
//! mean ± standard error over seeds), then one line per row.

use crate::metrics::{Stat, Summary};
use crate::runner::results::RunResults;
use std::fmt::Write;

/// `12.50 ± 1.20` (percent), `12.50` with one seed, `–` when undefined.
pub fn percent(stat: &Option<Stat>) -> String {
    match stat {
        None => "–".to_string(),
        Some(Stat { mean, se: None, .. }) => format!("{:.2}", mean * 100.0),
        Some(Stat {
            mean, se: Some(se), ..
        }) => format!("{:.2} ± {:.2}", mean * 100.0, se * 100.0),
    }
}

fn cells(s: &Summary) -> String {
    format!(
        "{} | {} | {} | {}",
        percent(&s.efficacy),
        percent(&s.generality),
        percent(&s.specificity),
        percent(&s.f1)
    )
}

/// Markdown cells cannot hold a raw `|` or a newline.
fn cell_text(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The whole `results.md`.
pub fn render(results: &RunResults) -> String {
    let s = &results.settings;
    let rows = results.rows.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Evaluation: {} ({}, mode {})\n\n{rows} rows × {} seeds. Values in %: mean over seeds ± standard \
         error over seeds (each seed averaged over the rows first). Ties count as failures. \
         F1 is the geometric mean of generality and specificity.\n",
        cell_text(&s.dataset),
        format!("{:?}", s.format).to_lowercase(),
        format!("{:?}", s.mode).to_lowercase(),
        s.seeds.len()
    );
    out.push_str("| Method | Efficacy | Generality | Specificity | F1 |\n|---|---|---|---|---|\n");
    for m in &results.methods {
        let _ = writeln!(out, "| {} | {} |", m.method, cells(&m.summary));
    }
    if let Some(t) = &results.text_space {
        let _ = writeln!(
            out,
            "\nText-space check (edited text encoder, no images; {} rows): {}",
            t.rows,
            cells(t).replace(" | ", " · ")
        );
    }
    out.push_str("\n## Per row\n\n| Row | Edit | Efficacy | Generality | Specificity | F1 |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {}: {} → {} | {} |",
            r.row,
            cell_text(&r.edit_prompt),
            cell_text(&r.source),
            cell_text(&r.target),
            cells(&r.summary)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_shows_the_standard_error_only_when_defined() {
        let two = Some(Stat {
            mean: 0.5,
            se: Some(0.025),
            std: 0.025,
            seeds: 2,
        });
        assert_eq!(percent(&two), "50.00 ± 2.50");
        let one = Some(Stat {
            mean: 1.0,
            se: None,
            std: 0.0,
            seeds: 1,
        });
        assert_eq!(percent(&one), "100.00");
        assert_eq!(percent(&None), "–");
    }
}
