//! The text-embedding cache in the pipeline: a prompt encoded once at a version is not
//! encoded again, and an image made from cached hidden states is the image made without
//! the cache.

use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::model::StableDiffusion;
use refact_engine::pipeline::{generate, GenerateParams};
use refact_engine::scheduler::SchedulerKind;
use std::sync::Arc;

#[test]
fn cached_prompts_are_not_reencoded_and_give_the_same_image() {
    let fixture = refact_testkit::fixture_dir();
    let model = StableDiffusion::load_folder(
        &fixture,
        "tiny-sd",
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let mut params = GenerateParams::new("a photo of the prime minister", SchedulerKind::Pndm);
    params.steps = 2;
    (params.width, params.height) = (64, 64);
    let base = DeltaSet::empty();
    let config = model.text.encoder.config();
    let edited = DeltaSet::new(vec![Arc::new(Delta {
        encoder: refact_engine::deltas::TextEncoderId::Text,
        layer: 1,
        rank: 1,
        u: vec![0.05; config.intermediate_size],
        v: vec![0.1; config.hidden_size],
    })]);
    let render = |params: &GenerateParams, version: &DeltaSet| {
        model.generate(params, version, &mut |_, _| true).unwrap()
    };
    let uncached = |params: &GenerateParams, version: &DeltaSet| {
        let m = &model;
        generate(
            &m.text.encoder,
            &m.text.tokenizer,
            &m.unet,
            &m.vae,
            &m.scheduler_config,
            params,
            version,
            &mut |_, _| true,
        )
        .unwrap()
    };
    let cache = &model.text_cache;

    // Guided: the negative prompt "" and the prompt, both misses the first time.
    let first = render(&params, &base);
    assert_eq!((cache.hits(), cache.misses()), (0, 2));
    let again = render(&params, &base);
    assert_eq!((cache.hits(), cache.misses()), (2, 2));
    let expected = uncached(&params, &base);
    assert_eq!(refact_testkit::max_abs_diff(&again, &first), 0.0);
    assert_eq!(refact_testkit::max_abs_diff(&again, &expected), 0.0);

    // Another prompt at the same version: only the prompt is new.
    let mut other = params.clone();
    other.prompt = "a red bicycle".into();
    render(&other, &base);
    assert_eq!((cache.hits(), cache.misses()), (3, 3));

    // The same prompt at another version is encoded at that version.
    let at_edit = render(&params, &edited);
    assert_eq!((cache.hits(), cache.misses()), (3, 5));
    let expected = uncached(&params, &edited);
    assert_eq!(refact_testkit::max_abs_diff(&at_edit, &expected), 0.0);
    assert!(
        refact_testkit::max_abs_diff(&at_edit, &first) > 0.0,
        "the edit changes the image"
    );
}
