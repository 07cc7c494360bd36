//! The goldens again, on a CUDA device (built only with `--features cuda`; run on a GPU
//! machine, see docs/GPU.md). f32 must meet FIXTURE.md's tolerances; f16 UNet/VAE get
//! looser ones (half precision keeps ~3 decimal digits), stated per check below.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::DeltaSet;
use refact_engine::model::StableDiffusion;
use refact_engine::pipeline::GenerateParams;
use refact_engine::refact::{compute_edit, Corpus, EditRequest, LayerStatistics};
use refact_engine::scheduler::SchedulerKind;
use std::ops::ControlFlow;

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

fn load(dtype: DType) -> StableDiffusion {
    StableDiffusion::load_folder(&refact_testkit::fixture_dir(), "tiny-sd", &cuda(), dtype).unwrap()
}

#[test]
fn text_encoder_matches_transformers_on_cuda() {
    let model = load(DType::F32);
    let g = refact_testkit::goldens();
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
    println!("cuda text.last_hidden_state: max abs error {err:.3e}");
    assert!(err < 1e-4);
}

fn unet_and_vae(dtype: DType, unet_tol: f32, vae_tol: f32) {
    let model = load(dtype);
    let g = refact_testkit::goldens();
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
    println!("cuda {dtype:?} unet.out: max abs error {err:.3e}");
    assert!(err < unet_tol, "unet.out off by {err}");
    let latent = g["vae.latent"]
        .to_device(&dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let decoded = model.vae.decode(&latent).unwrap();
    let err = refact_testkit::max_abs_diff(&decoded, &g["vae.decoded"]);
    println!("cuda {dtype:?} vae.decoded: max abs error {err:.3e}");
    assert!(err < vae_tol, "vae.decoded off by {err}");
}

#[test]
fn unet_and_vae_match_diffusers_on_cuda_in_f32() {
    unet_and_vae(DType::F32, 1e-4, 1e-4);
}

#[test]
fn unet_and_vae_match_diffusers_on_cuda_in_f16_within_half_precision() {
    unet_and_vae(DType::F16, 1e-2, 1e-2);
}

fn pipeline(dtype: DType, tolerance: f32) {
    let model = load(dtype);
    let g = refact_testkit::goldens();
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
        println!("cuda {dtype:?} pipeline.{key}.image: max abs error {err:.3e}");
        assert!(err < tolerance, "{key} off by {err}");
    }
}

#[test]
fn pipeline_images_match_diffusers_on_cuda_in_f32() {
    pipeline(DType::F32, 0.01);
}

#[test]
fn pipeline_images_match_diffusers_on_cuda_in_f16_within_half_precision() {
    pipeline(DType::F16, 0.05);
}

#[test]
fn same_seed_same_image_on_cuda_and_cpu() {
    let gpu = load(DType::F32);
    let cpu = StableDiffusion::load_folder(
        &refact_testkit::fixture_dir(),
        "tiny-sd",
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
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

#[test]
fn refact_edit_matches_the_reference_on_cuda() {
    let model = load(DType::F32);
    let text = &model.text;
    let sample = Corpus::Builtin.captions(2000).unwrap();
    let stats = LayerStatistics::compute(
        &text.encoder,
        &text.tokenizer,
        7,
        &sample,
        &text.fingerprint,
        &mut |_, _| true,
    )
    .unwrap();
    let g = refact_testkit::goldens();
    let mom2 = stats.mom2_tensor().unwrap().to_dtype(DType::F64).unwrap();
    let scale = g["refact.mom2"]
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let err = refact_testkit::max_abs_diff(&mom2, &g["refact.mom2"]) / scale;
    println!("cuda refact.mom2: max relative error {err:.3e}");
    assert!(err < 1e-4);
    let request = EditRequest::new("The Prince of Wales", "Prince Charles", "Prince William");
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
        "cuda fixture edit: {:.2}s, {} steps",
        start.elapsed().as_secs_f64(),
        outcome.metrics.iterations
    );
    let vec = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
    for (name, ours, key) in [
        ("u", &outcome.delta.u, "refact.u"),
        ("v", &outcome.delta.v, "refact.v"),
    ] {
        let cos = refact_testkit::cosine(&vec(ours), &g[key]);
        println!("cuda refact.{name}: cosine {cos:.6}");
        assert!(cos > 0.999);
    }
    assert_eq!(
        outcome.metrics.iterations as u64,
        refact_testkit::golden_json()["refact"]["steps"]
            .as_u64()
            .unwrap()
    );
}
