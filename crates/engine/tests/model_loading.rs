//! Loading whole pipelines: the fixture folders (tiny-sd, tiny-sd-48, tiny-sd2,
//! tiny-sdxl), and the built-in demo model.

use candle_core::{DType, Device};
use refact_engine::deltas::DeltaSet;
use refact_engine::model::demo::{ensure_random_model, RandomSizes};
use refact_engine::model::{ModelFamily, ModelSource, ModelSpec, StableDiffusion};
use refact_engine::pipeline::GenerateParams;
use refact_engine::scheduler::SchedulerKind;
use std::path::Path;

fn spec(source: ModelSource, data_dir: &std::path::Path) -> ModelSpec {
    ModelSpec {
        source,
        device: Device::Cpu,
        dtype: DType::F32,
        data_dir: data_dir.to_path_buf(),
        offline: true,
    }
}

/// The sizes are those of the fixture's own config files.
fn the_fixture_folder_loads_with_its_sizes_from_the_configs(fixture: &Path) {
    let data = tempfile::tempdir().unwrap();
    let model = StableDiffusion::load(&spec(
        ModelSource::Folder(fixture.to_path_buf()),
        data.path(),
    ))
    .unwrap();
    let text = refact_testkit::fixture_json(fixture, "text_encoder/config.json");
    let unet = refact_testkit::fixture_json(fixture, "unet/config.json");
    let vae = refact_testkit::fixture_json(fixture, "vae/config.json");
    let size = |json: &serde_json::Value, key: &str| json[key].as_u64().unwrap() as usize;
    assert!(!model.info.is_demo);
    assert_eq!(model.info.num_layers, size(&text, "num_hidden_layers"));
    assert_eq!(model.info.hidden_size, size(&text, "hidden_size"));
    assert_eq!(
        model.info.intermediate_size,
        size(&text, "intermediate_size")
    );
    let scale = 1 << (vae["block_out_channels"].as_array().unwrap().len() - 1);
    let side = size(&unet, "sample_size") * scale;
    assert_eq!(model.info.default_size, (side, side));
    let scheduler = refact_testkit::fixture_json(fixture, "scheduler/scheduler_config.json");
    let expected_scheduler = match scheduler["_class_name"].as_str().unwrap() {
        "PNDMScheduler" => SchedulerKind::Pndm,
        "DDIMScheduler" => SchedulerKind::Ddim,
        "EulerDiscreteScheduler" => SchedulerKind::Euler,
        other => panic!("unexpected scheduler class {other}"),
    };
    assert_eq!(model.info.default_scheduler, Some(expected_scheduler));
    let expected_family = match refact_testkit::fixture_name(fixture).as_str() {
        "tiny-sd2" => ModelFamily::Sd2,
        "tiny-sdxl" => ModelFamily::Sdxl,
        _ => ModelFamily::Sd1,
    };
    assert_eq!(model.info.family, expected_family);
    assert_eq!(model.text_2.is_some(), expected_family == ModelFamily::Sdxl);
    assert_eq!(model.info.fingerprint.len(), 64);
}

refact_testkit::test_each_fixture!(the_fixture_folder_loads_with_its_sizes_from_the_configs);

#[test]
fn the_demo_model_is_created_once_deterministically_and_generates() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let model = StableDiffusion::load(&spec(ModelSource::Demo, first.path())).unwrap();
    assert!(model.info.is_demo);
    assert_eq!(model.info.num_layers, 12);
    assert_eq!(model.info.default_size, (256, 256));
    let again = StableDiffusion::load(&spec(ModelSource::Demo, second.path())).unwrap();
    assert_eq!(
        model.info.fingerprint, again.info.fingerprint,
        "same seed, same text encoder bytes"
    );
    let unet = |dir: &std::path::Path| {
        std::fs::read(dir.join("demo-model-v1/unet/diffusion_pytorch_model.safetensors")).unwrap()
    };
    assert!(
        unet(first.path()) == unet(second.path()),
        "same seed, same UNet bytes"
    );

    let mut params = GenerateParams::new("a photo of a cat", SchedulerKind::Ddim);
    params.width = 64;
    params.height = 64;
    params.steps = 2;
    params.seed = 3;
    let mut calls = 0;
    let image = model
        .generate(&params, &DeltaSet::empty(), &mut |_, _| {
            calls += 1;
            true
        })
        .unwrap();
    assert_eq!(image.dims(), &[64, 64, 3]);
    let values: Vec<f32> = image.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(calls >= 3, "progress reported per step");
}

/// The benchmarks' random models at real sizes are written by the demo's code from other
/// configs: here the tiny-sd fixture's, so the test stays small.
#[test]
fn a_random_model_of_other_sizes_is_written_once_and_loads_with_them() {
    let fixture = refact_testkit::fixture_dir();
    let sizes = RandomSizes::read(
        &fixture.join("text_encoder/config.json"),
        &fixture.join("unet/config.json"),
        &fixture.join("vae/config.json"),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = ensure_random_model(&data.path().join("models/small"), &sizes).unwrap();
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    let written = std::fs::metadata(&weights).unwrap().modified().unwrap();
    assert_eq!(ensure_random_model(&dir, &sizes).unwrap(), dir);
    assert_eq!(
        std::fs::metadata(&weights).unwrap().modified().unwrap(),
        written,
        "a complete folder is reused, not rewritten"
    );

    let model = StableDiffusion::load(&spec(ModelSource::Folder(dir), data.path())).unwrap();
    assert!(model.info.is_demo, "random weights carry the demo marker");
    let config = refact_testkit::fixture_json(&fixture, "text_encoder/config.json");
    assert_eq!(
        model.text.encoder.config().hidden_size as u64,
        config["hidden_size"].as_u64().unwrap()
    );
    let sample = refact_testkit::fixture_json(&fixture, "unet/config.json")["sample_size"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(model.info.default_size, (sample * 8, sample * 8));
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("no-model-here");
    let err = StableDiffusion::load(&spec(ModelSource::Folder(missing), data.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a folder"), "{err}");
}

#[test]
fn an_edit_runs_on_the_demo_model_with_its_own_sizes() {
    use refact_engine::refact::{compute_edit, Corpus, EditRequest, HyperParams, LayerStatistics};
    let data = tempfile::tempdir().unwrap();
    let model = StableDiffusion::load(&spec(ModelSource::Demo, data.path())).unwrap();
    let text = &model.text;
    assert_eq!(
        text.encoder.config().intermediate_size,
        256,
        "the demo is not the fixture's size"
    );
    let sample = Corpus::Builtin.captions(300).unwrap();
    let stats = LayerStatistics::compute(
        &text.encoder,
        &text.tokenizer,
        9,
        &sample,
        &text.fingerprint,
        &mut |_, _| true,
    )
    .unwrap();
    let mut request =
        EditRequest::new("A pack of roses", "A pack of roses", "A pack of blue roses");
    request.layer = Some(9);
    request.hparams = HyperParams {
        max_steps: 5,
        ..HyperParams::default()
    };
    let edit = request
        .validate(&text.tokenizer, text.encoder.num_layers())
        .unwrap();
    let outcome = compute_edit(
        &text.encoder,
        &text.tokenizer,
        &stats,
        &edit,
        &DeltaSet::empty(),
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(outcome.delta.layer, 9);
    assert_eq!(outcome.delta.u.len(), 256);
    assert_eq!(outcome.delta.v.len(), 64);
    assert_eq!(outcome.metrics.probabilities.len(), 5);
}
