//! The runner's engine backend on the fixture model: edits change the edit prompt's image,
//! images are deterministic per seed, and a saved edit reloads to the same model.

use candle_core::{DType, Device};
use refact_engine::model::StableDiffusion;
use refact_engine::refact::{Corpus, HyperParams};
use refact_eval::dataset::{load, DatasetFormat};
use refact_eval::runner::engine_backend::{EngineBackend, EngineOptions};
use refact_eval::runner::Backend;
use refact_testkit::{data_file, fixture_dir};

#[test]
fn edits_render_deterministically_and_survive_a_save_and_load() {
    let work = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        steps: 2,
        size: 64,
        corpus: Corpus::Builtin,
        corpus_lines: 200,
        hparams: HyperParams {
            max_steps: 10,
            ..HyperParams::default()
        },
        ..EngineOptions::paper(work.path().join("stats"))
    };
    let model =
        StableDiffusion::load_folder(&fixture_dir(), "tiny-sd", &Device::Cpu, DType::F32).unwrap();
    let mut backend = EngineBackend::new(model, options);
    let cases = load(&data_file("timed_sample.csv"), DatasetFormat::Timed).unwrap();
    let case = &cases[2]; // a pack of roses → a pack of blue roses
    let base = backend.unedited();
    let (edited, info) = backend.edit(case, &base).unwrap();
    assert_eq!(edited.len(), 1);
    assert!(info["iterations"].as_u64().unwrap() <= 10);

    let before = backend.generate(&case.edit_prompt, 0, &base).unwrap();
    let after = backend.generate(&case.edit_prompt, 0, &edited).unwrap();
    assert_eq!(before.dimensions(), (64, 64));
    assert_ne!(before, after, "the edit changes the edit prompt's image");
    assert_eq!(
        after,
        backend.generate(&case.edit_prompt, 0, &edited).unwrap(),
        "same seed, same image"
    );
    assert_ne!(
        after,
        backend.generate(&case.edit_prompt, 1, &edited).unwrap(),
        "another seed, another image"
    );

    let path = work.path().join("delta.safetensors");
    backend.save_edit(&edited, &path).unwrap();
    let reloaded = backend.load_edit(&base, &path).unwrap();
    assert_eq!(
        after,
        backend.generate(&case.edit_prompt, 0, &reloaded).unwrap()
    );

    let text = backend.text_space(case, &edited).unwrap().unwrap();
    assert_eq!(text.generality.len(), 5);
    assert_eq!(text.specificity.len(), 5);
}
