//! Which images a row needs in each mode, and which two texts judge each image.

use super::settings::Mode;
use crate::dataset::EvalCase;
use serde::{Deserialize, Serialize};

/// The role of an image in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// The edit prompt's image (efficacy).
    Edit,
    /// The i-th positive prompt's image (generality), 0-based.
    Positive(usize),
    /// The i-th negative prompt's image (specificity), 0-based.
    Negative(usize),
}

impl Slot {
    /// A short name for files and reports: `edit`, `pos1`, `neg3` (1-based).
    pub fn name(self) -> String {
        match self {
            Slot::Edit => "edit".into(),
            Slot::Positive(i) => format!("pos{}", i + 1),
            Slot::Negative(i) => format!("neg{}", i + 1),
        }
    }

    /// Every slot of a case, in report order.
    pub fn all(case: &EvalCase) -> Vec<Slot> {
        std::iter::once(Slot::Edit)
            .chain((0..case.positives.len()).map(Slot::Positive))
            .chain((0..case.negatives.len()).map(Slot::Negative))
            .collect()
    }
}

/// One image to make: the prompt, and whether the edited model makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageJob {
    pub slot: Slot,
    pub prompt: String,
    pub edited: bool,
}

/// The images of the unedited model on the original prompts (the baseline).
pub fn unedited_jobs(case: &EvalCase) -> Vec<ImageJob> {
    Slot::all(case)
        .into_iter()
        .map(|slot| ImageJob {
            slot,
            prompt: original_prompt(case, slot).to_string(),
            edited: false,
        })
        .collect()
}

/// The images the mode is judged on.
pub fn mode_jobs(case: &EvalCase, mode: Mode) -> Vec<ImageJob> {
    Slot::all(case)
        .into_iter()
        .map(|slot| {
            let prompt = match (mode, slot) {
                (Mode::Oracle, Slot::Edit) => case.oracle_prompt(),
                (Mode::Oracle, Slot::Positive(i)) => case.positives[i].oracle_prompt(),
                _ => original_prompt(case, slot),
            };
            ImageJob {
                slot,
                prompt: prompt.to_string(),
                edited: mode.edits(),
            }
        })
        .collect()
}

fn original_prompt(case: &EvalCase, slot: Slot) -> &str {
    match slot {
        Slot::Edit => &case.edit_prompt,
        Slot::Positive(i) => &case.positives[i].prompt,
        Slot::Negative(i) => &case.negatives[i].prompt,
    }
}

/// The texts a row's images are scored against, in one list so that they are embedded
/// once per row: target, source, then each positive's new and old, then each negative
/// and its edited variant.
pub fn score_texts(case: &EvalCase) -> Vec<String> {
    let mut texts = vec![case.target.clone(), case.source.clone()];
    for p in &case.positives {
        texts.push(p.new.clone());
        texts.push(p.old.clone());
    }
    for n in &case.negatives {
        texts.push(n.prompt.clone());
        texts.push(n.new.clone());
    }
    texts
}

/// Indices into `score_texts` of the (wanted, other) texts that judge a slot's image.
pub fn judged_by(case: &EvalCase, slot: Slot) -> (usize, usize) {
    let p = case.positives.len();
    match slot {
        Slot::Edit => (0, 1),
        Slot::Positive(i) => (2 + 2 * i, 3 + 2 * i),
        Slot::Negative(i) => (2 + 2 * p + 2 * i, 3 + 2 * p + 2 * i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Negative, Positive};

    fn case() -> EvalCase {
        EvalCase {
            row: 1,
            kind: Some("role".into()),
            edit_prompt: "the pm".into(),
            source: "old pm".into(),
            target: "new pm".into(),
            oracle: Some("new pm as the pm".into()),
            positives: vec![Positive {
                prompt: "the pm eating".into(),
                old: "old pm eating".into(),
                new: "new pm eating".into(),
                oracle: None,
            }],
            negatives: vec![Negative {
                prompt: "a mayor".into(),
                new: "new pm".into(),
            }],
        }
    }

    #[test]
    fn oracle_uses_new_prompts_on_the_unedited_model_and_keeps_negatives() {
        let jobs = mode_jobs(&case(), Mode::Oracle);
        let prompts: Vec<&str> = jobs.iter().map(|j| j.prompt.as_str()).collect();
        assert_eq!(prompts, ["new pm as the pm", "new pm eating", "a mayor"]);
        assert!(jobs.iter().all(|j| !j.edited));
        // Oracle negatives are exactly the baseline's images.
        assert_eq!(jobs[2], unedited_jobs(&case())[2]);
    }

    #[test]
    fn edit_and_baseline_use_the_original_prompts() {
        let edit = mode_jobs(&case(), Mode::Edit);
        let base = mode_jobs(&case(), Mode::Baseline);
        assert!(edit.iter().all(|j| j.edited) && base.iter().all(|j| !j.edited));
        for (e, b) in edit.iter().zip(&base) {
            assert_eq!(e.prompt, b.prompt);
        }
        assert_eq!(base, unedited_jobs(&case()));
    }

    #[test]
    fn each_slot_is_judged_by_its_own_texts() {
        let c = case();
        let texts = score_texts(&c);
        let pair = |slot| {
            let (w, o) = judged_by(&c, slot);
            (texts[w].as_str(), texts[o].as_str())
        };
        assert_eq!(pair(Slot::Edit), ("new pm", "old pm"));
        assert_eq!(pair(Slot::Positive(0)), ("new pm eating", "old pm eating"));
        // Specificity: the negative itself must keep beating its edited variant.
        assert_eq!(pair(Slot::Negative(0)), ("a mayor", "new pm"));
    }
}
