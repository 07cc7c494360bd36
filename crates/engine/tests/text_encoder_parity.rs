//! The text encoder against transformers' CLIPTextModel on the fixture (1e-4).

use candle_core::{Device, Tensor};
use refact_engine::deltas::{DeltaSet, PreparedDeltas};
use refact_engine::text_encoder::{ClipTextEncoder, Mode};
use refact_engine::tokenizer::ClipTokenizer;

fn load() -> (ClipTokenizer, ClipTextEncoder) {
    let dir = refact_testkit::fixture_dir();
    let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer")).unwrap();
    let encoder =
        ClipTextEncoder::load(&dir.join("text_encoder"), tokenizer.eos_id(), &Device::Cpu).unwrap();
    (tokenizer, encoder)
}

fn golden_ids() -> Tensor {
    refact_testkit::goldens()["text.input_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap()
}

#[test]
fn last_hidden_state_and_pooler_output_match_transformers() {
    let (_, encoder) = load();
    let goldens = refact_testkit::goldens();
    let out = encoder.forward(&golden_ids(), &DeltaSet::empty()).unwrap();
    let hidden_err =
        refact_testkit::max_abs_diff(&out.last_hidden_state, &goldens["text.last_hidden_state"]);
    let pooled_err =
        refact_testkit::max_abs_diff(&out.pooler_output, &goldens["text.pooler_output"]);
    eprintln!("last_hidden_state max err {hidden_err:e}, pooler_output max err {pooled_err:e}");
    assert!(hidden_err < 1e-4, "last_hidden_state off by {hidden_err}");
    assert!(pooled_err < 1e-4, "pooler_output off by {pooled_err}");
}

#[test]
fn hidden_state_after_layer_7_matches_transformers() {
    let (_, encoder) = load();
    let ids = golden_ids();
    let embedded = encoder.embed(&ids).unwrap();
    let none = PreparedDeltas::none(encoder.num_layers());
    let after7 = encoder
        .run_layers(&embedded, 0..8, &none, Mode::Inference, None)
        .unwrap();
    let err = refact_testkit::max_abs_diff(
        &after7,
        &refact_testkit::goldens()["text.hidden_state_layer7"],
    );
    eprintln!("hidden_state_layer7 max err {err:e}");
    assert!(err < 1e-4, "layer-7 state off by {err}");
}

#[test]
fn differentiable_mode_gives_the_same_numbers_as_inference_mode() {
    let (_, encoder) = load();
    let ids = golden_ids();
    let embedded = encoder.embed(&ids).unwrap();
    let none = PreparedDeltas::none(encoder.num_layers());
    let fast = encoder
        .run_layers(&embedded, 0..12, &none, Mode::Inference, None)
        .unwrap();
    let slow = encoder
        .run_layers(&embedded, 0..12, &none, Mode::Differentiable, None)
        .unwrap();
    let err = refact_testkit::max_abs_diff(&fast, &slow);
    assert!(err < 1e-4, "modes differ by {err}");
}

#[test]
fn encode_texts_tokenizes_like_the_golden_ids() {
    let (tokenizer, encoder) = load();
    let prompts = refact_testkit::golden_prompts();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = encoder
        .encode_texts(&tokenizer, &refs, &DeltaSet::empty())
        .unwrap();
    let err = refact_testkit::max_abs_diff(
        &out.pooler_output,
        &refact_testkit::goldens()["text.pooler_output"],
    );
    assert!(err < 1e-4, "pooler_output off by {err}");
}
