//! One evaluation case, whichever file it came from.

use serde::{Deserialize, Serialize};

/// A prompt that should change with the edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positive {
    /// The prompt images are generated from.
    pub prompt: String,
    /// The text that describes the old fact in this prompt's image.
    pub old: String,
    /// The text that describes the new fact.
    pub new: String,
    /// What the oracle generates instead of `prompt` (RoAD test split's
    /// `Positive_oracle{i}`); `None` means the oracle uses `new`.
    pub oracle: Option<String>,
}

/// A prompt that should not change with the edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negative {
    /// The prompt images are generated from; also the text that should keep winning.
    pub prompt: String,
    /// The prompt as the edit would wrongly rewrite it.
    pub new: String,
}

/// One edit and the prompts that judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalCase {
    /// The data row (1-based, header excluded) it came from.
    pub row: usize,
    /// RoAD's `Type` (role, appearance); `None` for TIMED.
    pub kind: Option<String>,
    /// The edit prompt, which is also the edited subject.
    pub edit_prompt: String,
    /// The source text (the old fact).
    pub source: String,
    /// The target text (the new fact).
    pub target: String,
    /// What the oracle generates instead of the edit prompt; `None` means the target.
    pub oracle: Option<String>,
    pub positives: Vec<Positive>,
    pub negatives: Vec<Negative>,
}

impl EvalCase {
    /// The prompt the oracle (the unedited model told the new fact) generates for the
    /// edit prompt's image.
    pub fn oracle_prompt(&self) -> &str {
        self.oracle.as_deref().unwrap_or(&self.target)
    }
}

impl Positive {
    /// The prompt the oracle generates for this positive's image.
    pub fn oracle_prompt(&self) -> &str {
        self.oracle.as_deref().unwrap_or(&self.new)
    }
}
