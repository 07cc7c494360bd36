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
}

/// Reads and checks a facts file.
pub fn read_facts(path: &Path) -> anyhow::Result<Vec<Fact>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_facts(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses the YAML text of a facts file.
pub fn parse_facts(text: &str) -> anyhow::Result<Vec<Fact>> {
    let file: FactsFile = serde_yaml::from_str(text)?;
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
    Ok(facts)
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
    fn malformed_files_are_refused() {
        assert!(parse_facts("edits: []").is_err());
        assert!(parse_facts("edit:\n  - {prompt: P}").is_err());
        assert!(parse_facts("edits:\n  - just a string").is_err());
    }
}
