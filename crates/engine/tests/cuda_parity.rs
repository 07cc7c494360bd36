//! The goldens again, on a CUDA device, for both fixtures (tiny-sd, tiny-sd-48; built
//! only with `--features cuda`; run on a GPU machine, see docs/GPU.md). f32 must meet FIXTURE.md's tolerances; f16 UNet/VAE get
//! looser ones (half precision keeps ~3 decimal digits), stated per check below.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::DeltaSet;
use refact_engine::model::StableDiffusion;
use refact_engine::pipeline::GenerateParams;
use refact_engine::refact::{compute_edit, Corpus, EditRequest, LayerStatistics};
use refact_engine::scheduler::SchedulerKind;
use std::ops::ControlFlow;
use std::path::Path;

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

fn load(fixture: &Path, dtype: DType) -> StableDiffusion {
    let name = refact_testkit::fixture_name(fixture);
    StableDiffusion::load_folder(fixture, &name, &cuda(), dtype).unwrap()
}

fn text_encoder_matches_transformers_on_cuda(fixture: &Path) {
    let name = refact_testkit::fixture_name(fixture);
    let model = load(fixture, DType::F32);
    let g = refact_testkit::goldens_in(fixture);
    let ids = g["text.input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_device(&cuda())
        .unwrap();
    let out = model
        .text
        .encoder
        .forward(&ids, &DeltaSet::empty())
        .unwrap();
    let err = refact_testkit::max_abs_diff(&out.last_hidden_state, &g["text.last_hidden_state"]);
    println!("{name} cuda text.last_hidden_state: max abs error {err:.3e}");
    assert!(err < 1e-4, "{name}: text.last_hidden_state off by {err}");
}

fn unet_and_vae(fixture: &Path, dtype: DType, unet_tol: f32, vae_tol: f32) {
    let name = refact_testkit::fixture_name(fixture);
    let model = load(fixture, dtype);
    let g = refact_testkit::goldens_in(fixture);
    let dev = cuda();
    let sample = g["unet.sample"]
        .to_device(&dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let context = g["unet.context"]
        .to_device(&dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let t = g["unet.timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let out = model.unet.forward(&sample, t, &context).unwrap();
    let err = refact_testkit::max_abs_diff(&out, &g["unet.out"]);
    println!("{name} cuda {dtype:?} unet.out: max abs error {err:.3e}");
    assert!(err < unet_tol, "{name}: unet.out off by {err}");
    let latent = g["vae.latent"]
        .to_device(&dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let decoded = model.vae.decode(&latent).unwrap();
    let err = refact_testkit::max_abs_diff(&decoded, &g["vae.decoded"]);
    println!("{name} cuda {dtype:?} vae.decoded: max abs error {err:.3e}");
    assert!(err < vae_tol, "{name}: vae.decoded off by {err}");
}

fn unet_and_vae_match_diffusers_on_cuda_in_f32(fixture: &Path) {
    unet_and_vae(fixture, DType::F32, 1e-4, 1e-4);
}

fn unet_and_vae_match_diffusers_on_cuda_in_f16_within_half_precision(fixture: &Path) {
    unet_and_vae(fixture, DType::F16, 1e-2, 1e-2);
}

fn pipeline(fixture: &Path, dtype: DType, tolerance: f32) {
    let name = refact_testkit::fixture_name(fixture);
    let model = load(fixture, dtype);
    let g = refact_testkit::goldens_in(fixture);
    for (kind, key) in [
        (SchedulerKind::Pndm, "pndm"),
        (SchedulerKind::Ddim, "ddim"),
        (SchedulerKind::Euler, "euler"),
        (SchedulerKind::DpmSolverMultistep, "dpmpp_2m"),
    ] {
        let params = GenerateParams {
            negative_prompt: "blurry".into(),
            steps: 10,
            guidance_scale: 7.5,
            width: 64,
            height: 64,
            init_latents: Some(g["pipeline.init_latents"].clone()),
            ..GenerateParams::new("a photo of a cat", kind)
        };
        let image = model
            .generate(&params, &DeltaSet::empty(), &mut |_, _| true)
            .unwrap();
        let err = refact_testkit::max_abs_diff(&image, &g[&format!("pipeline.{key}.image")]);
        println!("{name} cuda {dtype:?} pipeline.{key}.image: max abs error {err:.3e}");
        assert!(err < tolerance, "{name}: {key} off by {err}");
    }
}

fn pipeline_images_match_diffusers_on_cuda_in_f32(fixture: &Path) {
    pipeline(fixture, DType::F32, 0.01);
}

fn pipeline_images_match_diffusers_on_cuda_in_f16_within_half_precision(fixture: &Path) {
    pipeline(fixture, DType::F16, 0.05);
}

#[test]
fn same_seed_same_image_on_cuda_and_cpu() {
    let fixture = refact_testkit::fixture_dir();
    let gpu = load(&fixture, DType::F32);
    let cpu = StableDiffusion::load_folder(&fixture, "tiny-sd", &Device::Cpu, DType::F32).unwrap();
    let params = GenerateParams {
        steps: 4,
        width: 64,
        height: 64,
        seed: 42,
        ..GenerateParams::new("a cat", SchedulerKind::Ddim)
    };
    let a = gpu
        .generate(&params, &DeltaSet::empty(), &mut |_, _| true)
        .unwrap();
    let b = cpu
        .generate(&params, &DeltaSet::empty(), &mut |_, _| true)
        .unwrap();
    let err = refact_testkit::max_abs_diff(&a, &b);
    println!("cuda vs cpu, seed 42: max abs error {err:.3e}");
    assert!(err < 0.01);
}

/// The main case `refact` at the fixture's main layer (7 resp. 9).
fn refact_edit_matches_the_reference_on_cuda(fixture: &Path) {
    let name = refact_testkit::fixture_name(fixture);
    let model = load(fixture, DType::F32);
    let text = &model.text;
    let sample = Corpus::Builtin.captions(2000).unwrap();
    let layer = refact_testkit::main_layer_in(fixture);
    let stats = LayerStatistics::compute(
        &text.encoder,
        &text.tokenizer,
        layer,
        &sample,
        &text.fingerprint,
        &mut |_, _| true,
    )
    .unwrap();
    let g = refact_testkit::goldens_in(fixture);
    let mom2 = stats.mom2_tensor().unwrap().to_dtype(DType::F64).unwrap();
    let scale = g["refact.mom2"]
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let err = refact_testkit::max_abs_diff(&mom2, &g["refact.mom2"]) / scale;
    println!("{name} cuda refact.mom2: max relative error {err:.3e}");
    assert!(err < 1e-4, "{name}: refact.mom2 off by {err}");
    let mut request = EditRequest::new("The Prince of Wales", "Prince Charles", "Prince William");
    request.layer = Some(layer);
    let edit = request
        .validate(&text.tokenizer, text.encoder.num_layers())
        .unwrap();
    let start = std::time::Instant::now();
    let outcome = compute_edit(
        &text.encoder,
        &text.tokenizer,
        &stats,
        &edit,
        &DeltaSet::empty(),
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    println!(
        "{name} cuda edit: {:.2}s, {} steps",
        start.elapsed().as_secs_f64(),
        outcome.metrics.iterations
    );
    let vec = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
    assert_eq!(outcome.delta.layer, layer);
    for (ours, key) in [
        (&outcome.delta.u, "refact.u"),
        (&outcome.delta.v, "refact.v"),
    ] {
        let cos = refact_testkit::cosine(&vec(ours), &g[key]);
        println!("{name} cuda {key}: cosine {cos:.6}");
        assert!(cos > 0.999, "{name}: {key} cosine {cos}");
    }
    assert_eq!(
        outcome.metrics.iterations as u64,
        refact_testkit::golden_json_in(fixture)["refact"]["steps"]
            .as_u64()
            .unwrap(),
        "{name}: steps"
    );
}

// The v1 fixtures only: SD 2.x and SDXL have not run on a GPU yet (no GPU was lent to
// the session that added them); the checks here would need SDXL's added conditioning.
refact_testkit::test_fixtures!(
    [tiny_sd = "tiny-sd", tiny_sd_48 = "tiny-sd-48"];
    text_encoder_matches_transformers_on_cuda,
    unet_and_vae_match_diffusers_on_cuda_in_f32,
    unet_and_vae_match_diffusers_on_cuda_in_f16_within_half_precision,
    pipeline_images_match_diffusers_on_cuda_in_f32,
    pipeline_images_match_diffusers_on_cuda_in_f16_within_half_precision,
    refact_edit_matches_the_reference_on_cuda,
);
