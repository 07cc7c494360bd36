//! Token ids must equal transformers' CLIPTokenizer exactly (golden `text.input_ids`, both
//! fixtures).

use refact_engine::tokenizer::ClipTokenizer;
use std::path::Path;

fn fixture_tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_folder(&refact_testkit::fixture_dir().join("tokenizer")).unwrap()
}

/// Each fixture's own tokenizer folder and prompts (the same BPE files in both).
fn token_ids_match_transformers_for_every_golden_prompt(fixture: &Path) {
    let tokenizer = ClipTokenizer::from_folder(&fixture.join("tokenizer")).unwrap();
    let golden = refact_testkit::goldens_in(fixture)["text.input_ids"].clone();
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
            "{} prompt {prompt:?}",
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
