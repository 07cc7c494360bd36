//! From measured tests to `passed` / `failed` and the metrics stored with the version.

use super::GateRequest;
use refact_eval::metrics::{f1, summarise, SeedTests, Summary};
use refact_store::GateStatus;
use serde_json::{json, Value};

/// What a gate measured on one edit.
#[derive(Debug, Clone, PartialEq)]
pub struct GateMeasurement {
    /// The text-space tests (one "seed"): one row for a single edit; one per fact for a
    /// batch, each with its fact's efficacy, the gate's positives and negatives in the
    /// first (they belong to no one fact and are measured once, on the batch's version).
    pub text: Vec<SeedTests>,
    /// The image tests, one per seed, when the gate asked for images.
    pub images: Option<Vec<SeedTests>>,
}

/// Judges a measurement against the gate's thresholds. A metric without tests (no
/// positives, say) is not judged. A batch's efficacy is the fraction of its facts whose
/// prompt moved to their target, so the default `min_efficacy` of 1 asks it of every
/// fact. Returns the verdict and the JSON stored with the version: `passed`, `thresholds`,
/// `text` and `images` metrics, each fact's efficacy (`facts`, batches only), and one line
/// per `failures`.
pub fn verdict(gate: &GateRequest, measured: &GateMeasurement) -> (GateStatus, Value) {
    let mut failures = Vec::new();
    let rows: Vec<Vec<SeedTests>> = measured.text.iter().map(|t| vec![t.clone()]).collect();
    let text = summarise(&rows);
    judge("text", &text, gate, &mut failures);
    let images = measured.images.as_ref().map(|seeds| {
        let summary = summarise(std::slice::from_ref(seeds));
        judge("images", &summary, gate, &mut failures);
        summary
    });
    let status = if failures.is_empty() {
        GateStatus::Passed
    } else {
        GateStatus::Failed
    };
    let mean = |stat: Option<refact_eval::metrics::Stat>| stat.map(|s| s.mean);
    let (generality, specificity) = (mean(text.generality), mean(text.specificity));
    let mut metrics = json!({
        "passed": failures.is_empty(),
        "thresholds": {
            "efficacy": gate.min_efficacy,
            "generality": gate.min_generality,
            "specificity": gate.min_specificity,
        },
        "text": {
            "efficacy": mean(text.efficacy),
            "generality": generality,
            "specificity": specificity,
            "f1": generality.zip(specificity).map(|(g, s)| f1(g, s)),
        },
        "failures": failures,
    });
    if measured.text.len() > 1 {
        metrics["facts"] = measured
            .text
            .iter()
            .map(|t| json!({"efficacy": t.metrics().efficacy}))
            .collect();
    }
    if let Some(images) = images {
        metrics["images"] = json!(images);
    }
    (status, metrics)
}

/// Adds a line to `failures` for each judged metric of `summary` below its threshold.
fn judge(kind: &str, summary: &Summary, gate: &GateRequest, failures: &mut Vec<String>) {
    let checks = [
        ("efficacy", &summary.efficacy, gate.min_efficacy),
        ("generality", &summary.generality, gate.min_generality),
        ("specificity", &summary.specificity, gate.min_specificity),
    ];
    for (name, stat, threshold) in checks {
        if let Some(stat) = stat {
            if stat.mean < threshold {
                failures.push(format!(
                    "{kind} {name} {:.3} is below {threshold}",
                    stat.mean
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refact_eval::metrics::Comparison;
    use serde_json::json;

    fn pass() -> Comparison {
        Comparison::new(1.0, 0.0)
    }
    fn fail() -> Comparison {
        Comparison::new(0.0, 1.0)
    }
    fn tests(
        seed: u64,
        efficacy: Comparison,
        gen: Vec<Comparison>,
        spec: Vec<Comparison>,
    ) -> SeedTests {
        SeedTests {
            seed,
            efficacy,
            generality: gen,
            specificity: spec,
        }
    }
    fn gate(value: Value) -> GateRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn each_metric_is_held_to_its_threshold() {
        let g = gate(json!({}));
        // 4 of 5 positives pass: exactly the 0.8 default passes.
        let text = tests(
            0,
            pass(),
            vec![pass(), pass(), pass(), pass(), fail()],
            vec![pass()],
        );
        let (status, metrics) = verdict(
            &g,
            &GateMeasurement {
                text: vec![text],
                images: None,
            },
        );
        assert_eq!(status, GateStatus::Passed, "{metrics}");
        assert_eq!(metrics["text"]["generality"], 0.8);
        assert_eq!(metrics["text"]["f1"], 0.8f64.sqrt());
        assert!(metrics.get("images").is_none());

        // A leaking edit: half the negatives changed.
        let text = tests(0, pass(), vec![], vec![pass(), fail()]);
        let (status, metrics) = verdict(
            &g,
            &GateMeasurement {
                text: vec![text],
                images: None,
            },
        );
        assert_eq!(status, GateStatus::Failed);
        assert_eq!(
            metrics["failures"][0],
            "text specificity 0.500 is below 0.8"
        );
        // No positives: generality is not judged, and F1 is undefined.
        assert_eq!(metrics["text"]["generality"], Value::Null);
        assert_eq!(metrics["text"]["f1"], Value::Null);

        // A tie on the edit prompt is no success.
        let tie = Comparison::new(0.5, 0.5);
        let (status, _) = verdict(
            &g,
            &GateMeasurement {
                text: vec![tests(0, tie, vec![], vec![])],
                images: None,
            },
        );
        assert_eq!(status, GateStatus::Failed);
        // Unless the gate does not ask for efficacy.
        let lenient = gate(json!({"min_efficacy": 0.0}));
        let (status, _) = verdict(
            &lenient,
            &GateMeasurement {
                text: vec![tests(0, tie, vec![], vec![])],
                images: None,
            },
        );
        assert_eq!(status, GateStatus::Passed);
    }

    #[test]
    fn image_metrics_are_averaged_over_seeds_and_judged_too() {
        let g = gate(json!({"min_efficacy": 0.5}));
        let text = tests(0, pass(), vec![], vec![]);
        // Efficacy 1 on seed 0 and 0 on seed 1: mean 0.5 reaches 0.5.
        let images = vec![
            tests(0, pass(), vec![], vec![]),
            tests(1, fail(), vec![], vec![]),
        ];
        let (status, metrics) = verdict(
            &g,
            &GateMeasurement {
                text: vec![text.clone()],
                images: Some(images),
            },
        );
        assert_eq!(status, GateStatus::Passed, "{metrics}");
        assert_eq!(metrics["images"]["efficacy"]["mean"], 0.5);
        assert_eq!(metrics["images"]["efficacy"]["seeds"], 2);
        let images = vec![
            tests(0, fail(), vec![], vec![]),
            tests(1, fail(), vec![], vec![]),
        ];
        let (status, metrics) = verdict(
            &g,
            &GateMeasurement {
                text: vec![text],
                images: Some(images),
            },
        );
        assert_eq!(status, GateStatus::Failed);
        assert_eq!(metrics["failures"][0], "images efficacy 0.000 is below 0.5");
    }

    #[test]
    fn a_batch_is_judged_per_fact_and_overall() {
        let g = gate(json!({}));
        // Facts 0 and 1 moved to their targets, fact 2 did not; the gate's one negative
        // (in the first row) held.
        let text = vec![
            tests(0, pass(), vec![], vec![pass()]),
            tests(0, pass(), vec![], vec![]),
            tests(0, fail(), vec![], vec![]),
        ];
        let (status, metrics) = verdict(&g, &GateMeasurement { text, images: None });
        assert_eq!(status, GateStatus::Failed, "{metrics}");
        assert_eq!(
            metrics["facts"],
            json!([{"efficacy": 1.0}, {"efficacy": 1.0}, {"efficacy": 0.0}])
        );
        assert_eq!(metrics["text"]["specificity"], 1.0);
        assert_eq!(metrics["failures"][0], "text efficacy 0.667 is below 1");
        // Two of three facts is enough for a gate that asks for 0.6.
        let lenient = gate(json!({"min_efficacy": 0.6}));
        let text = vec![
            tests(0, pass(), vec![], vec![]),
            tests(0, pass(), vec![], vec![]),
            tests(0, fail(), vec![], vec![]),
        ];
        let (status, _) = verdict(&lenient, &GateMeasurement { text, images: None });
        assert_eq!(status, GateStatus::Passed);
    }
}
