//! SDXL's text side against transformers and diffusers on tiny-sdxl: both encoders'
//! penultimate states, the second encoder's final states and projected pooled
//! embedding, and the pipeline's conditioning (`StableDiffusionXLPipeline.encode_prompt`:
//! the two penultimate states concatenated, and the pooled embedding). 1e-4 scaled, the
//! encoders' tolerance (tests/fixtures/README.md).

use candle_core::{DType, Tensor};
use refact_engine::deltas::DeltaSet;
use refact_engine::pipeline::conditioning;
use std::collections::HashMap;

mod common;

fn fixture() -> (common::Fixture, HashMap<String, Tensor>, Vec<String>) {
    let dir = refact_testkit::fixture("tiny-sdxl");
    let goldens = refact_testkit::goldens_in(&dir);
    let prompts = refact_testkit::golden_prompts_in(&dir);
    (common::Fixture::load_from(&dir), goldens, prompts)
}

fn assert_close(what: &str, ours: &Tensor, golden: &Tensor) {
    assert_eq!(ours.dims(), golden.dims(), "{what}: shape");
    let scaled = refact_testkit::max_scaled_diff(ours, golden);
    println!(
        "tiny-sdxl {what}: max abs error {:.3e}, max scaled error {scaled:.3e}",
        refact_testkit::max_abs_diff(ours, golden)
    );
    assert!(
        scaled < 1e-4,
        "tiny-sdxl {what}: {scaled:.3e} from the golden"
    );
}

#[test]
fn both_encoders_match_transformers() {
    let (model, g, _) = fixture();
    let ids = g["text.input_ids"].to_dtype(DType::U32).unwrap();
    let first = model
        .text
        .encoder
        .forward_states(&ids, &DeltaSet::empty())
        .unwrap();
    assert_close(
        "text.penultimate",
        &first.penultimate,
        &g["text.penultimate"],
    );
    assert_close(
        "text.last_hidden_state",
        &first.output.last_hidden_state,
        &g["text.last_hidden_state"],
    );

    let second = model.text_2.as_ref().expect("tiny-sdxl has text_encoder_2");
    let ids_2 = g["text_2.input_ids"].to_dtype(DType::U32).unwrap();
    let states = second
        .encoder
        .forward_states(&ids_2, &DeltaSet::empty())
        .unwrap();
    assert_close(
        "text_2.penultimate",
        &states.penultimate,
        &g["text_2.penultimate"],
    );
    assert_close(
        "text_2.last_hidden_state",
        &states.output.last_hidden_state,
        &g["text_2.last_hidden_state"],
    );
    let text_embeds = second.project(&states.output.pooler_output).unwrap();
    assert_close("text_2.text_embeds", &text_embeds, &g["text_2.text_embeds"]);
    assert_eq!(
        second.projection_dim(),
        g["text_2.text_embeds"].dim(1).unwrap()
    );
}

#[test]
fn the_conditioning_matches_the_pipelines_encode_prompt() {
    let (model, g, prompts) = fixture();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let encoded = conditioning::encode(&model.parts(), &prompts, &DeltaSet::empty()).unwrap();
    assert_close(
        "conditioning.prompt_embeds",
        &encoded.context,
        &g["conditioning.prompt_embeds"],
    );
    let pooled = encoded
        .pooled
        .expect("SDXL conditioning has a pooled embedding");
    assert_close(
        "conditioning.pooled_prompt_embeds",
        &pooled,
        &g["conditioning.pooled_prompt_embeds"],
    );
}
