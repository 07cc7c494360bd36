//! `report.html`: the results table and, per row, an image grid of prompt × seed with the
//! unedited (before) and the mode's (after) image side by side, each marked pass or fail.
//! Images stay as files next to the report; the page links them by relative path.

use super::markdown::percent;
use crate::metrics::{Comparison, SeedTests};
use crate::runner::layout::{Layout, Side};
use crate::runner::plan::{mode_jobs, unedited_jobs, Slot};
use crate::runner::results::{RowResult, RunResults};
use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn comparison(tests: &SeedTests, slot: Slot) -> Option<Comparison> {
    match slot {
        Slot::Edit => Some(tests.efficacy),
        Slot::Positive(i) => tests.generality.get(i).copied(),
        Slot::Negative(i) => tests.specificity.get(i).copied(),
    }
}

fn image_cell(
    out: &mut String,
    row: usize,
    side: Side,
    slot: Slot,
    tests: Option<&SeedTests>,
    label: &str,
) {
    let seed = tests.map_or(0, |t| t.seed);
    let src = Layout::image_relative(row, side, slot, seed);
    let (mark, class) = match tests.and_then(|t| comparison(t, slot)) {
        Some(c) if c.passed() => (format!("✓ {:.2} &gt; {:.2}", c.wanted, c.other), "pass"),
        Some(c) => (format!("✗ {:.2} ≤ {:.2}", c.wanted, c.other), "fail"),
        None => (String::new(), ""),
    };
    let _ = write!(
        out,
        "<figure class=\"{class}\"><img src=\"{}\" alt=\"{label} seed {seed}\"><figcaption>{label} {mark}</figcaption></figure>",
        escape(&src.to_string_lossy().replace('\\', "/")),
    );
}

fn row_section(out: &mut String, r: &RowResult, results: &RunResults) {
    let case = &r.case;
    let _ = write!(
        out,
        "<h2>Row {}: {} — {} → {}</h2>",
        case.row,
        escape(&case.edit_prompt),
        escape(&case.source),
        escape(&case.target)
    );
    if let Some(row) = results.rows.iter().find(|x| x.row == case.row) {
        let s = &row.summary;
        let _ = write!(
            out,
            "<p>Efficacy {} · Generality {} · Specificity {} · F1 {} (%)</p>",
            percent(&s.efficacy),
            percent(&s.generality),
            percent(&s.specificity),
            percent(&s.f1)
        );
    }
    let after_jobs = mode_jobs(case, results.settings.mode);
    let before_jobs = unedited_jobs(case);
    out.push_str("<table class=\"grid\"><tr><th>prompt</th>");
    for t in &r.tests {
        let _ = write!(out, "<th>seed {}</th>", t.seed);
    }
    out.push_str("</tr>");
    for (after, before) in after_jobs.iter().zip(&before_jobs) {
        let slot = after.slot;
        let _ = write!(
            out,
            "<tr><th class=\"prompt\">{}<br><code>{}</code>",
            slot.name(),
            escape(&before.prompt)
        );
        if after.prompt != before.prompt {
            let _ = write!(out, "<br>after: <code>{}</code>", escape(&after.prompt));
        }
        out.push_str("</th>");
        for (i, t) in r.tests.iter().enumerate() {
            out.push_str("<td>");
            if let Some(unedited) = &r.unedited_tests {
                image_cell(out, case.row, Side::Before, slot, unedited.get(i), "before");
            }
            image_cell(out, case.row, Side::After, slot, Some(t), "after");
            out.push_str("</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// The whole `report.html`.
pub fn render(results: &RunResults, rows: &[RowResult]) -> String {
    let s = &results.settings;
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>refact eval</title><style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px;vertical-align:top}\
         figure{display:inline-block;margin:2px;text-align:center}\
         figure img{width:128px;height:128px;image-rendering:pixelated;display:block}\
         figcaption{font-size:11px}.pass figcaption{color:#070}.fail figcaption{color:#b00}\
         th.prompt{text-align:left;max-width:16em;font-weight:normal}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>Evaluation: {}</h1><p>format {}, mode {}, {} rows × {} seeds. Values in %: mean over seeds ± \
         standard error; ties count as failures; F1 = √(generality × specificity).</p>",
        escape(&s.dataset),
        format!("{:?}", s.format).to_lowercase(),
        format!("{:?}", s.mode).to_lowercase(),
        results.rows.len(),
        s.seeds.len()
    );
    out.push_str("<table><tr><th>Method</th><th>Efficacy</th><th>Generality</th><th>Specificity</th><th>F1</th></tr>");
    for m in &results.methods {
        let x = &m.summary;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.method),
            percent(&x.efficacy),
            percent(&x.generality),
            percent(&x.specificity),
            percent(&x.f1)
        );
    }
    out.push_str("</table>");
    for r in rows {
        row_section(&mut out, r, results);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_prompts_is_escaped() {
        assert_eq!(
            escape("<b>\"a\" & 'b'</b>"),
            "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;"
        );
    }
}
