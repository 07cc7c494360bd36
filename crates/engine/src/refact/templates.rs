//! The context templates ReFACT averages keys over, and where a subject's last token sits.

use crate::error::Result;
use crate::tokenizer::ClipTokenizer;

/// The paper's nine context templates. The key k* is the mean fc2 input at the subject's
/// last token over these; the rewriting prompts are the edit prompt plus these.
pub const CONTEXT_TEMPLATES: [&str; 9] = [
    "{} in a realistic style portrait image",
    "{}, a portrait",
    "realistic painting of {}",
    "a current image of {}",
    "{}, news image",
    "a beautiful photograph of {}",
    "realistic drawing of {}",
    "{}, realistic portrait",
    "{} in a photo",
];

/// `template` with `{}` replaced by `subject`.
pub fn fill(template: &str, subject: &str) -> String {
    template.replacen("{}", subject, 1)
}

/// Token index (BOS = 0) of the last token of `subject` inside `prompt`, counted the way
/// the reference does: tokens of the text before the subject's first occurrence (trimmed)
/// plus the subject's own tokens. `None` when the subject does not occur.
pub fn subject_last_index(
    tokenizer: &ClipTokenizer,
    prompt: &str,
    subject: &str,
) -> Result<Option<usize>> {
    let Some(start) = prompt.find(subject) else {
        return Ok(None);
    };
    let before = prompt[..start].trim();
    let n_before = if before.is_empty() {
        0
    } else {
        tokenizer.tokens(before)?.len()
    };
    let n_subject = tokenizer.tokens(subject)?.len();
    Ok(Some(n_before + n_subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_the_subject_once() {
        assert_eq!(fill("{}, a portrait", "The Queen"), "The Queen, a portrait");
        assert!(CONTEXT_TEMPLATES
            .iter()
            .all(|t| t.matches("{}").count() == 1));
    }
}
