//! Low-rank deltas must behave exactly like editing fc2's weight in place, and dropping
//! one must restore the earlier outputs exactly.

use candle_core::{Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet, TextEncoderId};
use refact_engine::text_encoder::ClipTextEncoder;
use refact_engine::tokenizer::ClipTokenizer;
use std::sync::Arc;

fn load() -> (ClipTokenizer, ClipTextEncoder) {
    let dir = refact_testkit::fixture_dir();
    let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer")).unwrap();
    let encoder =
        ClipTextEncoder::load(&dir.join("text_encoder"), tokenizer.eos_id(), &Device::Cpu).unwrap();
    (tokenizer, encoder)
}

/// A deterministic pseudo-random delta (no RNG crate needed for the test).
fn delta(layer: usize, inner: usize, hidden: usize, seed: u32) -> Delta {
    let wave = |n: usize, k: u32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + 1.0) * 0.37 * k as f32).sin() * 0.5)
            .collect()
    };
    Delta {
        encoder: refact_engine::deltas::TextEncoderId::Text,
        layer,
        rank: 1,
        u: wave(inner, seed),
        v: wave(hidden, seed + 11),
    }
}

const PROMPTS: [&str; 3] = ["The Prince of Wales", "a photo of a cat", "A pack of roses"];

#[test]
fn deltas_equal_an_in_place_weight_update() {
    let (tokenizer, encoder) = load();
    let cfg = encoder.config().clone();
    let d1 = delta(7, cfg.intermediate_size, cfg.hidden_size, 3);
    let d2 = delta(7, cfg.intermediate_size, cfg.hidden_size, 5);
    let d3 = delta(9, cfg.intermediate_size, cfg.hidden_size, 7);
    let set = DeltaSet::new(vec![
        Arc::new(d1.clone()),
        Arc::new(d2.clone()),
        Arc::new(d3.clone()),
    ]);
    let via_deltas = encoder.encode_texts(&tokenizer, &PROMPTS, &set).unwrap();

    let outer = |d: &Delta| {
        let v = Tensor::from_vec(d.v.clone(), (d.v.len(), 1), &Device::Cpu).unwrap();
        let u = Tensor::from_vec(d.u.clone(), (1, d.u.len()), &Device::Cpu).unwrap();
        v.matmul(&u).unwrap()
    };
    let w7 = ((encoder.fc2_weight(7).unwrap() + outer(&d1)).unwrap() + outer(&d2)).unwrap();
    let w9 = (encoder.fc2_weight(9).unwrap() + outer(&d3)).unwrap();
    let edited = encoder
        .with_fc2_weight(7, w7)
        .unwrap()
        .with_fc2_weight(9, w9)
        .unwrap();
    let in_place = edited
        .encode_texts(&tokenizer, &PROMPTS, &DeltaSet::empty())
        .unwrap();

    let base = encoder
        .encode_texts(&tokenizer, &PROMPTS, &DeltaSet::empty())
        .unwrap();
    let moved =
        refact_testkit::max_abs_diff(&via_deltas.last_hidden_state, &base.last_hidden_state);
    assert!(
        moved > 1e-3,
        "the deltas should change the output (moved {moved})"
    );
    let err =
        refact_testkit::max_abs_diff(&via_deltas.last_hidden_state, &in_place.last_hidden_state);
    assert!(err < 1e-4, "deltas and in-place update differ by {err}");
}

#[test]
fn dropping_a_delta_restores_the_earlier_outputs_exactly() {
    let (tokenizer, encoder) = load();
    let cfg = encoder.config().clone();
    let first = Arc::new(delta(7, cfg.intermediate_size, cfg.hidden_size, 3));
    let second = Arc::new(delta(8, cfg.intermediate_size, cfg.hidden_size, 9));
    let v1 = DeltaSet::empty().with(first.clone());
    let v2 = v1.with(second.clone());
    let v3 = v2.without(&second);
    let out1 = encoder.encode_texts(&tokenizer, &PROMPTS, &v1).unwrap();
    let out2 = encoder.encode_texts(&tokenizer, &PROMPTS, &v2).unwrap();
    let out3 = encoder.encode_texts(&tokenizer, &PROMPTS, &v3).unwrap();
    assert!(refact_testkit::max_abs_diff(&out1.pooler_output, &out2.pooler_output) > 1e-3);
    assert_eq!(
        refact_testkit::max_abs_diff(&out1.last_hidden_state, &out3.last_hidden_state),
        0.0
    );
    let base = encoder
        .encode_texts(&tokenizer, &PROMPTS, &DeltaSet::empty())
        .unwrap();
    let reverted_all = encoder
        .encode_texts(&tokenizer, &PROMPTS, &v2.without(&first).without(&second))
        .unwrap();
    assert_eq!(
        refact_testkit::max_abs_diff(&base.last_hidden_state, &reverted_all.last_hidden_state),
        0.0
    );
}

#[test]
fn a_delta_with_wrong_sizes_or_layer_is_refused() {
    let (_, encoder) = load();
    let cfg = encoder.config().clone();
    let wrong = Delta {
        encoder: refact_engine::deltas::TextEncoderId::Text,
        layer: 7,
        rank: 1,
        u: vec![0.1; 3],
        v: vec![0.1; cfg.hidden_size],
    };
    assert!(wrong
        .check(
            cfg.num_hidden_layers,
            cfg.intermediate_size,
            cfg.hidden_size
        )
        .is_err());
    let beyond = delta(12, cfg.intermediate_size, cfg.hidden_size, 1);
    assert!(DeltaSet::empty()
        .with(Arc::new(beyond))
        .prepare_for(TextEncoderId::Text, 12, &Device::Cpu)
        .is_err());
}
