//! SDXL's text side against transformers and diffusers on tiny-sdxl: both encoders'
//! penultimate states, the second encoder's final states and projected pooled
//! embedding, and the pipeline's conditioning (`StableDiffusionXLPipeline.encode_prompt`:
//! the two penultimate states concatenated, and the pooled embedding), also at a version
//! that edits both encoders. 1e-4 scaled, the encoders' tolerance
//! (tests/fixtures/README.md).

use candle_core::{DType, Tensor};
use refact_engine::deltas::{Delta, DeltaSet, TextEncoderId};
use refact_engine::pipeline::conditioning;
use std::collections::HashMap;
use std::sync::Arc;

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
    let text_embeds = second
        .encoder
        .project(&states.output.pooler_output)
        .unwrap()
        .expect("text_encoder_2 has a projection");
    assert_close("text_2.text_embeds", &text_embeds, &g["text_2.text_embeds"]);
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

/// A version with an edit on each encoder (the reference's `text.refact` and
/// `text_2.refact` deltas in one [`DeltaSet`]): each encoder applies its own, and the
/// conditioning matches diffusers' with both edits written into the weights.
#[test]
fn a_version_editing_both_encoders_conditions_as_diffusers() {
    let (model, g, _) = fixture();
    let json = refact_testkit::golden_json_in(&refact_testkit::fixture("tiny-sdxl"));
    let vector = |key: &str| -> Vec<f32> { g[key].to_vec1().unwrap() };
    let version =
        ["text.refact", "text_2.refact"]
            .into_iter()
            .fold(DeltaSet::empty(), |set, case| {
                set.with(Arc::new(Delta {
                    encoder: TextEncoderId::parse(json[case]["encoder"].as_str().unwrap()).unwrap(),
                    layer: json[case]["hparams"]["layer"].as_u64().unwrap() as usize,
                    rank: 1,
                    u: vector(&format!("{case}.u")),
                    v: vector(&format!("{case}.v")),
                }))
            });
    let prompts: Vec<&str> = json["edited_conditioning"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let edited = conditioning::encode(&model.parts(), &prompts, &version).unwrap();
    assert_close(
        "edited.conditioning.prompt_embeds",
        &edited.context,
        &g["edited.conditioning.prompt_embeds"],
    );
    assert_close(
        "edited.conditioning.pooled_prompt_embeds",
        edited.pooled.as_ref().unwrap(),
        &g["edited.conditioning.pooled_prompt_embeds"],
    );
    // Both halves of the context moved: each encoder applied its own edit.
    let base = conditioning::encode(&model.parts(), &prompts, &DeltaSet::empty()).unwrap();
    let first_width = model.text.encoder.config().hidden_size;
    for (start, len, what) in [
        (0, first_width, "text"),
        (
            first_width,
            edited.context.dim(2).unwrap() - first_width,
            "text_2",
        ),
    ] {
        let moved = refact_testkit::max_abs_diff(
            &edited.context.narrow(2, start, len).unwrap(),
            &base.context.narrow(2, start, len).unwrap(),
        );
        assert!(
            moved > 0.1,
            "the {what} edit moved its half of the context by {moved}"
        );
    }
}
