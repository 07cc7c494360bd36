//! The table `refact push` prints when every edit has finished, and the verdict.

use super::facts::Fact;
use serde_json::Value;

/// How one fact ended, as far as the pipeline cares.
#[derive(Debug, Clone, PartialEq)]
pub struct FactOutcome {
    pub fact: Fact,
    /// The edit's id.
    pub edit_id: String,
    /// True when this push created the edit; false when it existed already.
    pub created: bool,
    /// The edit's final status: applied, failed or cancelled.
    pub status: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The version it created.
    pub version: Option<i64>,
    /// `passed`, `failed`, or `None` when the edit had no gate.
    pub gate_status: Option<String>,
    /// The version's gate metrics.
    pub gate_metrics: Option<Value>,
    /// In a batch edit, this fact's entry of the edit's `metrics.facts`.
    pub fact_metrics: Option<Value>,
}

impl FactOutcome {
    /// Applied, and its gate (if any) passed.
    pub fn succeeded(&self) -> bool {
        self.status == "applied" && self.gate_status.as_deref() != Some("failed")
    }

    fn gate_cell(&self) -> String {
        match self.gate_status.as_deref() {
            None => "-".into(),
            Some(status) => status.into(),
        }
    }

    /// The text-space metrics of the gate, `E 1.00 G 0.80 S 1.00`; for a fact of a batch
    /// (no gate), its own text check, `p 0.93, nearer target`.
    fn metrics_cell(&self) -> String {
        if let Some(fact) = &self.fact_metrics {
            let p = fact["final_probability"].as_f64().unwrap_or(f64::NAN);
            let nearer = match fact["text_check"]["nearer_target"].as_bool() {
                Some(true) => "nearer target",
                Some(false) => "nearer source",
                None => "no text check",
            };
            return format!("p {p:.2}, {nearer}");
        }
        let Some(text) = self.gate_metrics.as_ref().map(|m| &m["text"]) else {
            return "-".into();
        };
        let cell = |name: &str| match text[name].as_f64() {
            Some(value) => format!("{value:.2}"),
            None => "n/a".into(),
        };
        format!(
            "E {} G {} S {}",
            cell("efficacy"),
            cell("generality"),
            cell("specificity")
        )
    }
}

/// A fixed-width table, one row per fact, with failures explained below it.
pub fn render(outcomes: &[FactOutcome]) -> String {
    let header = [
        "#",
        "edit",
        "new",
        "status",
        "version",
        "gate",
        "text metrics",
    ];
    let rows: Vec<[String; 7]> = outcomes
        .iter()
        .map(|o| {
            [
                o.fact.index.to_string(),
                o.fact.label(),
                if o.created { "yes" } else { "no" }.into(),
                o.status.clone(),
                o.version.map_or("-".into(), |v| v.to_string()),
                o.gate_cell(),
                o.metrics_cell(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    for o in outcomes.iter().filter(|o| !o.succeeded()) {
        if let Some(error) = &o.error {
            out += &format!("edit {} {}: {error}\n", o.fact.index, o.status);
        }
        if let Some(failures) = o
            .gate_metrics
            .as_ref()
            .and_then(|m| m["failures"].as_array())
        {
            for failure in failures.iter().filter_map(Value::as_str) {
                out += &format!("edit {} gate failed: {failure}\n", o.fact.index);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(status: &str, gate: Option<&str>) -> FactOutcome {
        FactOutcome {
            fact: Fact {
                index: 1,
                body: json!({"prompt": "P", "source": "S", "target": "T"}),
                idempotency_key: "k".into(),
            },
            edit_id: "id".into(),
            created: true,
            status: status.into(),
            error: None,
            version: Some(3),
            gate_status: gate.map(str::to_string),
            gate_metrics: gate.map(|_| {
                json!({"text": {"efficacy": 1.0, "generality": null, "specificity": 0.5},
                       "failures": ["text specificity 0.500 is below 0.8"]})
            }),
            fact_metrics: None,
        }
    }

    #[test]
    fn a_batch_fact_shows_its_own_text_check() {
        let mut fact = outcome("applied", None);
        fact.fact_metrics = Some(json!({"final_probability": 0.934,
                                        "text_check": {"nearer_target": true}}));
        let table = render(&[fact]);
        assert!(table.contains("p 0.93, nearer target"), "{table}");
    }

    #[test]
    fn success_needs_an_applied_edit_and_no_failed_gate() {
        assert!(outcome("applied", None).succeeded());
        assert!(outcome("applied", Some("passed")).succeeded());
        assert!(!outcome("applied", Some("failed")).succeeded());
        assert!(!outcome("failed", None).succeeded());
    }

    #[test]
    fn the_table_shows_metrics_and_explains_failures() {
        let table = render(&[outcome("applied", Some("failed"))]);
        assert!(table.contains("P: S → T"), "{table}");
        assert!(table.contains("E 1.00 G n/a S 0.50"), "{table}");
        assert!(
            table.contains("edit 1 gate failed: text specificity 0.500 is below 0.8"),
            "{table}"
        );
    }
}
