//! The facts file `refact push` reads: a list of edits, each exactly a `POST /edits` body
//! (prompt, source, target, optional subject/layer/hparams/gate), written as YAML.
//!
//! ```yaml
//! edits:
//!   - prompt: The Prince of Wales
//!     source: Prince Charles
//!     target: Prince William
//!     gate:
//!       negatives:
//!         - {prompt: The Princess of Wales, new: Prince William}
//! ```

use anyhow::{bail, Context};
use refact_store::request_hash;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// One edit of the file, ready to submit.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// 1-based position in the file, for messages.
    pub index: usize,
    /// The `POST /edits` body.
    pub body: Value,
    /// Derived from the body alone, so that pushing the same fact again (from this file
    /// or any other) returns the edit it created the first time instead of a new one.
    pub idempotency_key: String,
}

impl Fact {
    /// A one-line description for progress and the summary: `prompt: source → target`.
    pub fn label(&self) -> String {
        if let Some(facts) = self.body.get("facts").and_then(Value::as_array) {
            return format!("batch of {} facts", facts.len());
        }
        let text = |key: &str| self.body.get(key).and_then(Value::as_str).unwrap_or("?");
        format!(
            "{}: {} → {}",
            text("prompt"),
            text("source"),
            text("target")
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactsFile {
    edits: Vec<serde_yaml::Value>,
    #[serde(default)]
    batch_gate: Option<serde_yaml::Value>,
}

/// A facts file: its edits, and the gate of the batch they form with `--batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct FactsDocument {
    pub facts: Vec<Fact>,
    /// `batch_gate:`, a `gate` object for the one batch edit `--batch` makes (measured
    /// per fact and overall); refused without `--batch`.
    pub batch_gate: Option<Value>,
}

/// Reads and checks a facts file.
pub fn read_facts(path: &Path) -> anyhow::Result<FactsDocument> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_document(&text).with_context(|| format!("in {}", path.display()))
}

/// The edits of a facts file's YAML text.
#[cfg(test)]
pub fn parse_facts(text: &str) -> anyhow::Result<Vec<Fact>> {
    Ok(parse_document(text)?.facts)
}

/// Parses the YAML text of a facts file.
pub fn parse_document(text: &str) -> anyhow::Result<FactsDocument> {
    let file: FactsFile = serde_yaml::from_str(text)?;
    let batch_gate = file
        .batch_gate
        .map(|gate| serde_json::to_value(&gate))
        .transpose()
        .context("`batch_gate` cannot be written as JSON")?;
    if file.edits.is_empty() {
        bail!("`edits` is empty: nothing to push");
    }
    let mut facts = Vec::with_capacity(file.edits.len());
    for (i, edit) in file.edits.into_iter().enumerate() {
        let index = i + 1;
        let body = serde_json::to_value(&edit)
            .with_context(|| format!("edit {index} cannot be written as JSON"))?;
        if !body.is_object() {
            bail!("edit {index} is not a mapping of fields (prompt, source, target, ...)");
        }
        let idempotency_key = format!("push-{}", request_hash(&body));
        facts.push(Fact {
            index,
            body,
            idempotency_key,
        });
    }
    Ok(FactsDocument { facts, batch_gate })
}

/// Fields of a facts-file edit that belong to the fact itself; the others (`layer`,
/// `hparams`) are batch-wide and must agree across the file.
const FACT_FIELDS: [&str; 5] = ["prompt", "subject", "source", "target", "contrastive"];
const BATCH_FIELDS: [&str; 2] = ["layer", "hparams"];

/// The whole file as one batch edit (`refact push --batch`): a `POST /edits` body with
/// `facts`, the batch-wide `layer` and `hparams` taken from the facts (which must agree),
/// and `gate` when the file has a `batch_gate`. The key follows the batch's content, so
/// pushing the same file again returns the same batch edit.
pub fn batch_of(facts: &[Fact], gate: Option<&Value>) -> anyhow::Result<Fact> {
    let mut shared = serde_json::Map::new();
    let mut entries = Vec::with_capacity(facts.len());
    for fact in facts {
        let Value::Object(fields) = &fact.body else {
            bail!("edit {} is not a mapping of fields", fact.index);
        };
        let mut entry = serde_json::Map::new();
        for (name, value) in fields {
            if FACT_FIELDS.contains(&name.as_str()) {
                entry.insert(name.clone(), value.clone());
            } else if BATCH_FIELDS.contains(&name.as_str()) {
                match shared.get(name) {
                    Some(first) if first != value => bail!(
                        "edit {} has another `{name}` than the edits before it; a batch has one \
                         `{name}` for all its facts (push without --batch, or split the file)",
                        fact.index
                    ),
                    _ => {
                        shared.insert(name.clone(), value.clone());
                    }
                }
            } else if name == "gate" {
                bail!(
                    "edit {} has a gate of its own; a batch edit takes one gate for all its \
                     facts: give it as `batch_gate:` beside `edits:` (or push without --batch)",
                    fact.index
                );
            } else {
                // Left in, so the server names the unknown field in its 422.
                entry.insert(name.clone(), value.clone());
            }
        }
        entries.push(Value::Object(entry));
    }
    // A batch-wide field set on some edits only would silently apply to all.
    for name in BATCH_FIELDS {
        if shared.contains_key(name) {
            if let Some(fact) = facts.iter().find(|f| f.body.get(name).is_none()) {
                bail!(
                    "edit {} has no `{name}` while others do; a batch has one `{name}` for \
                     all its facts",
                    fact.index
                );
            }
        }
    }
    let mut body = shared;
    body.insert("facts".into(), Value::Array(entries));
    if let Some(gate) = gate {
        body.insert("gate".into(), gate.clone());
    }
    let body = Value::Object(body);
    let idempotency_key = format!("push-batch-{}", request_hash(&body));
    Ok(Fact {
        index: 1,
        body,
        idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_content_not_the_layout() {
        let a = parse_facts(
            "edits:\n  - {prompt: P, source: S, target: T}\n  - {prompt: Q, source: S, target: T}\n",
        )
        .unwrap();
        // Same facts, keys in another order and in block style, in another position.
        let b = parse_facts("edits:\n  - target: T\n    source: S\n    prompt: P\n").unwrap();
        assert_eq!(a[0].idempotency_key, b[0].idempotency_key);
        assert_ne!(a[0].idempotency_key, a[1].idempotency_key);
        assert_eq!(a[1].index, 2);
        assert_eq!(a[0].label(), "P: S → T");
    }

    #[test]
    fn a_batch_lifts_the_shared_settings_and_refuses_disagreeing_ones() {
        let facts = parse_facts(
            "edits:\n  - {prompt: P, source: S, target: T, layer: 7}\n  - {prompt: Q, source: S, target: T, layer: 7}\n",
        )
        .unwrap();
        let batch = batch_of(&facts, None).unwrap();
        assert_eq!(batch.body["layer"], 7);
        assert_eq!(batch.body["facts"].as_array().unwrap().len(), 2);
        assert!(batch.body["facts"][1].get("layer").is_none());
        assert_eq!(batch.body["facts"][1]["prompt"], "Q");
        assert!(batch.idempotency_key.starts_with("push-batch-"));

        let disagree = parse_facts(
            "edits:\n  - {prompt: P, source: S, target: T, layer: 7}\n  - {prompt: Q, source: S, target: T, layer: 5}\n",
        )
        .unwrap();
        let err = batch_of(&disagree, None).unwrap_err().to_string();
        assert!(err.contains("edit 2 has another `layer`"), "{err}");
        let partial = parse_facts(
            "edits:\n  - {prompt: P, source: S, target: T, layer: 7}\n  - {prompt: Q, source: S, target: T}\n",
        )
        .unwrap();
        let err = batch_of(&partial, None).unwrap_err().to_string();
        assert!(err.contains("edit 2 has no `layer`"), "{err}");
        let gated =
            parse_facts("edits:\n  - {prompt: P, source: S, target: T, gate: {}}\n").unwrap();
        assert!(batch_of(&gated, None)
            .unwrap_err()
            .to_string()
            .contains("gate"));
    }

    #[test]
    fn a_batch_gate_goes_into_the_batch() {
        let doc = parse_document(
            "batch_gate: {min_efficacy: 0.5}\nedits:\n  - {prompt: P, source: S, target: T}\n",
        )
        .unwrap();
        let gate = doc.batch_gate.as_ref().expect("the batch gate");
        let batch = batch_of(&doc.facts, Some(gate)).unwrap();
        assert_eq!(batch.body["gate"]["min_efficacy"], 0.5);
        let ungated = batch_of(&doc.facts, None).unwrap();
        assert_ne!(batch.idempotency_key, ungated.idempotency_key);
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(parse_facts("edits: []").is_err());
        assert!(parse_facts("edit:\n  - {prompt: P}").is_err());
        assert!(parse_facts("edits:\n  - just a string").is_err());
    }
}
