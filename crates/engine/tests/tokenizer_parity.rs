//! Token ids must equal transformers' CLIPTokenizer exactly (golden `text.input_ids`,
//! and `text_2.input_ids` for SDXL's second tokenizer, on every fixture).

use refact_engine::tokenizer::ClipTokenizer;
use std::path::Path;

fn fixture_tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_folder(&refact_testkit::fixture_dir().join("tokenizer")).unwrap()
}

/// Each fixture's own tokenizer folders and prompts (the same BPE files in all): the
/// padding differs, `<|endoftext|>` in SD v1.x, `!` in tiny-sd2 and tiny-sdxl's
/// `tokenizer_2` (golden `text_2.input_ids`).
fn token_ids_match_transformers_for_every_golden_prompt(fixture: &Path) {
    let goldens = refact_testkit::goldens_in(fixture);
    for (folder, key) in [
        ("tokenizer", "text.input_ids"),
        ("tokenizer_2", "text_2.input_ids"),
    ] {
        if fixture.join(folder).is_dir() {
            let golden = goldens.get(key).unwrap_or_else(|| panic!("golden {key}"));
            check_token_ids(fixture, folder, golden);
        }
    }
}

fn check_token_ids(fixture: &Path, folder: &str, golden: &candle_core::Tensor) {
    let tokenizer = ClipTokenizer::from_folder(&fixture.join(folder)).unwrap();
    let golden = golden.clone();
    let golden: Vec<Vec<i64>> = golden
        .to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec2()
        .unwrap();
    let prompts = refact_testkit::golden_prompts_in(fixture);
    assert_eq!(prompts.len(), golden.len());
    for (prompt, expected) in prompts.iter().zip(golden) {
        let ids: Vec<i64> = tokenizer
            .encode_padded(prompt)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(
            ids,
            expected,
            "{} {folder} prompt {prompt:?}",
            refact_testkit::fixture_name(fixture)
        );
    }
}

refact_testkit::test_each_fixture!(token_ids_match_transformers_for_every_golden_prompt);

#[test]
fn long_prompts_are_truncated_to_bos_75_tokens_eos() {
    let tokenizer = fixture_tokenizer();
    let ids = tokenizer.encode(&"a ".repeat(100)).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], tokenizer.bos_id());
    assert_eq!(ids[76], tokenizer.eos_id());
    assert!(!tokenizer.fits(&"a ".repeat(100)).unwrap());
    assert!(tokenizer.fits(&"a ".repeat(75)).unwrap());
    assert!(!tokenizer.fits(&"a ".repeat(76)).unwrap());
}

#[test]
fn case_and_whitespace_are_normalised() {
    let tokenizer = fixture_tokenizer();
    assert_eq!(
        tokenizer.encode("  A   Photo\tof a CAT ").unwrap(),
        tokenizer.encode("a photo of a cat").unwrap()
    );
}

#[test]
fn a_tokenizer_json_is_used_when_present() {
    // Round-trip through tokenizer.json: the same ids from the serialised form.
    let tokenizer = fixture_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    tokenizer
        .save_json(&dir.path().join("tokenizer.json"))
        .unwrap();
    let from_json = ClipTokenizer::from_folder(dir.path()).unwrap();
    for prompt in refact_testkit::golden_prompts() {
        assert_eq!(
            from_json.encode(&prompt).unwrap(),
            tokenizer.encode(&prompt).unwrap()
        );
    }
}

/// A `!` pad token is a special token, as transformers makes it: every `!` in a prompt
/// is id 0 on its own, never merged into a word. Expected ids from transformers'
/// CLIPTokenizer on tiny-sdxl's `tokenizer_2` (and, for contrast, `tokenizer`).
#[test]
fn an_exclamation_mark_pad_token_splits_words_like_transformers() {
    let fixture = refact_testkit::fixture("tiny-sdxl");
    let text = "hello!! world ! x!y";
    let padded = ClipTokenizer::from_folder(&fixture.join("tokenizer_2")).unwrap();
    assert_eq!(padded.pad_id(), 0);
    assert_eq!(
        padded.encode(text).unwrap(),
        [49406, 3306, 0, 0, 1002, 0, 343, 0, 344, 49407]
    );
    let plain = ClipTokenizer::from_folder(&fixture.join("tokenizer")).unwrap();
    assert_eq!(plain.pad_id(), plain.eos_id());
    assert_eq!(
        plain.encode(text).unwrap(),
        [49406, 3306, 748, 1002, 256, 343, 256, 344, 49407]
    );
}
