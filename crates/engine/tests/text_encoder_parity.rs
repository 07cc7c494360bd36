//! The text encoder against transformers' CLIPTextModel on both fixtures (tiny-sd,
//! tiny-sd-48): 1e-4, absolute for small values and relative for large ones
//! (`max_scaled_diff`).

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{DeltaSet, PreparedDeltas};
use refact_engine::text_encoder::{ClipTextEncoder, Mode};
use refact_engine::tokenizer::ClipTokenizer;
use std::collections::HashMap;
use std::path::Path;

fn load(fixture: &Path) -> (ClipTokenizer, ClipTextEncoder) {
    let tokenizer = ClipTokenizer::from_folder(&fixture.join("tokenizer")).unwrap();
    let encoder = ClipTextEncoder::load(
        &fixture.join("text_encoder"),
        tokenizer.eos_id(),
        &Device::Cpu,
    )
    .unwrap();
    (tokenizer, encoder)
}

fn golden_ids(g: &HashMap<String, Tensor>) -> Tensor {
    g["text.input_ids"].to_dtype(DType::U32).unwrap()
}

/// Prints both measures and asserts the scaled one (< 1e-4).
fn assert_close(fixture: &Path, what: &str, ours: &Tensor, golden: &Tensor) {
    let name = refact_testkit::fixture_name(fixture);
    let abs = refact_testkit::max_abs_diff(ours, golden);
    let scaled = refact_testkit::max_scaled_diff(ours, golden);
    println!(
        "{name} {what}: max abs error {abs:.3e}, max scaled error {scaled:.3e} (max |golden| {:.3})",
        refact_testkit::max_abs(golden)
    );
    assert!(scaled < 1e-4, "{name}: {what} off by {scaled:.3e}");
}

fn last_hidden_state_and_pooler_output_match_transformers(fixture: &Path) {
    let (_, encoder) = load(fixture);
    let g = refact_testkit::goldens_in(fixture);
    let out = encoder
        .forward(&golden_ids(&g), &DeltaSet::empty())
        .unwrap();
    let hidden = encoder.config().hidden_size;
    assert_eq!(out.last_hidden_state.dims(), &[6, 77, hidden]);
    assert_close(
        fixture,
        "text.last_hidden_state",
        &out.last_hidden_state,
        &g["text.last_hidden_state"],
    );
    assert_close(
        fixture,
        "text.pooler_output",
        &out.pooler_output,
        &g["text.pooler_output"],
    );
}

/// Every `text.hidden_state_layer<L>` golden (layer 7 in both fixtures, and layer 9,
/// tiny-sd-48's main ReFACT layer): the output of encoder layer L (0-based).
fn hidden_states_after_each_golden_layer_match_transformers(fixture: &Path) {
    let (_, encoder) = load(fixture);
    let g = refact_testkit::goldens_in(fixture);
    let embedded = encoder.embed(&golden_ids(&g)).unwrap();
    let none = PreparedDeltas::none(encoder.num_layers());
    let mut layers: Vec<usize> = g
        .keys()
        .filter_map(|k| k.strip_prefix("text.hidden_state_layer"))
        .map(|l| l.parse().unwrap())
        .collect();
    layers.sort();
    assert!(layers.contains(&7), "golden text.hidden_state_layer7");
    let main = refact_testkit::main_layer_in(fixture);
    assert!(layers.contains(&main), "a golden for the main layer {main}");
    for layer in layers {
        let after = encoder
            .run_layers(&embedded, 0..layer + 1, &none, Mode::Inference, None)
            .unwrap();
        let key = format!("text.hidden_state_layer{layer}");
        assert_close(fixture, &key, &after, &g[&key]);
    }
}

fn differentiable_mode_gives_the_same_numbers_as_inference_mode(fixture: &Path) {
    let (_, encoder) = load(fixture);
    let g = refact_testkit::goldens_in(fixture);
    let embedded = encoder.embed(&golden_ids(&g)).unwrap();
    let n = encoder.num_layers();
    let none = PreparedDeltas::none(n);
    let fast = encoder
        .run_layers(&embedded, 0..n, &none, Mode::Inference, None)
        .unwrap();
    let slow = encoder
        .run_layers(&embedded, 0..n, &none, Mode::Differentiable, None)
        .unwrap();
    let err = refact_testkit::max_abs_diff(&fast, &slow);
    assert!(err < 1e-4, "modes differ by {err}");
}

fn encode_texts_tokenizes_like_the_golden_ids(fixture: &Path) {
    let (tokenizer, encoder) = load(fixture);
    let prompts = refact_testkit::golden_prompts_in(fixture);
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = encoder
        .encode_texts(&tokenizer, &refs, &DeltaSet::empty())
        .unwrap();
    assert_close(
        fixture,
        "text.pooler_output via encode_texts",
        &out.pooler_output,
        &refact_testkit::goldens_in(fixture)["text.pooler_output"],
    );
}

refact_testkit::test_each_fixture!(
    last_hidden_state_and_pooler_output_match_transformers,
    hidden_states_after_each_golden_layer_match_transformers,
    differentiable_mode_gives_the_same_numbers_as_inference_mode,
    encode_texts_tokenizes_like_the_golden_ids,
);
