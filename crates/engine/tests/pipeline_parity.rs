//! The full text-to-image pipeline against diffusers on the fixture, plus seeds,
//! versions (deltas), guidance and cancellation.

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::model::TextModel;
use refact_engine::pipeline::{generate, GenerateParams};
use refact_engine::scheduler::{SchedulerConfig, SchedulerKind};
use refact_engine::unet::UNet2DConditionModel;
use refact_engine::vae::Vae;
use refact_engine::{EngineError, InvalidKind};
use std::sync::Arc;

struct Fixture {
    text: TextModel,
    unet: UNet2DConditionModel,
    vae: Vae,
    scheduler: SchedulerConfig,
}

impl Fixture {
    fn load() -> Self {
        let dir = refact_testkit::fixture_dir();
        Self {
            text: TextModel::load(&dir, &Device::Cpu).unwrap(),
            unet: UNet2DConditionModel::load(&dir, &Device::Cpu, DType::F32).unwrap(),
            vae: Vae::load(&dir, &Device::Cpu, DType::F32).unwrap(),
            scheduler: SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))
                .unwrap(),
        }
    }

    fn generate(&self, params: &GenerateParams, deltas: &DeltaSet) -> Result<Tensor, EngineError> {
        generate(
            &self.text.encoder,
            &self.text.tokenizer,
            &self.unet,
            &self.vae,
            &self.scheduler,
            params,
            deltas,
            &mut |_, _| true,
        )
    }
}

/// The settings of the golden pipeline runs (FIXTURE.md).
fn golden_params(scheduler: SchedulerKind, init_latents: Option<Tensor>) -> GenerateParams {
    GenerateParams {
        negative_prompt: "blurry".into(),
        steps: 10,
        guidance_scale: 7.5,
        width: 64,
        height: 64,
        init_latents,
        ..GenerateParams::new("a photo of a cat", scheduler)
    }
}

fn identical(a: &Tensor, b: &Tensor) -> bool {
    refact_testkit::max_abs_diff(a, b) == 0.0
}

#[test]
fn every_scheduler_matches_diffusers_images() {
    let fixture = Fixture::load();
    let g = refact_testkit::goldens();
    let init = g["pipeline.init_latents"].clone();
    for (kind, key) in [
        (SchedulerKind::Pndm, "pndm"),
        (SchedulerKind::Ddim, "ddim"),
        (SchedulerKind::Euler, "euler"),
        (SchedulerKind::DpmSolverMultistep, "dpmpp_2m"),
    ] {
        let params = golden_params(kind, Some(init.clone()));
        let image = fixture.generate(&params, &DeltaSet::empty()).unwrap();
        assert_eq!(image.dims(), &[64, 64, 3]);
        let err = refact_testkit::max_abs_diff(&image, &g[&format!("pipeline.{key}.image")]);
        println!("pipeline.{key}.image: max abs error {err:.3e}");
        assert!(err < 0.01, "{key}: image differs from diffusers by {err}");
    }
}

#[test]
fn the_same_seed_gives_the_same_image_and_another_seed_another() {
    let fixture = Fixture::load();
    let params = |seed| GenerateParams {
        steps: 4,
        seed,
        ..golden_params(SchedulerKind::Ddim, None)
    };
    let a = fixture.generate(&params(11), &DeltaSet::empty()).unwrap();
    let b = fixture.generate(&params(11), &DeltaSet::empty()).unwrap();
    let c = fixture.generate(&params(12), &DeltaSet::empty()).unwrap();
    assert!(identical(&a, &b));
    let diff = refact_testkit::max_abs_diff(&a, &c);
    assert!(diff > 1e-3, "seeds 11 and 12 give images only {diff} apart");
}

#[test]
fn a_delta_changes_the_image_and_removing_it_restores_the_base() {
    let fixture = Fixture::load();
    let config = fixture.text.encoder.config().clone();
    let u = Tensor::randn(0f32, 1.0, config.intermediate_size, &Device::Cpu).unwrap();
    let v = Tensor::randn(0f32, 1.0, config.hidden_size, &Device::Cpu).unwrap();
    let delta = Arc::new(Delta {
        layer: 7,
        u: u.to_vec1().unwrap(),
        v: v.to_vec1().unwrap(),
    });
    let params = GenerateParams {
        steps: 4,
        ..golden_params(SchedulerKind::Euler, None)
    };
    let base = fixture.generate(&params, &DeltaSet::empty()).unwrap();
    let edited_version = DeltaSet::empty().with(delta.clone());
    let edited = fixture.generate(&params, &edited_version).unwrap();
    let reverted = fixture
        .generate(&params, &edited_version.without(&delta))
        .unwrap();
    let again = fixture.generate(&params, &DeltaSet::empty()).unwrap();
    let change = refact_testkit::max_abs_diff(&base, &edited);
    println!("a random delta on layer 7 moves the image by up to {change:.3e}");
    assert!(
        change > 1e-3,
        "the delta changed the image by only {change}"
    );
    assert!(identical(&base, &reverted));
    assert!(identical(&base, &again));
}

#[test]
fn without_guidance_the_negative_prompt_is_not_used() {
    // guidance <= 1 skips the unconditional half of the batch, as diffusers does.
    let fixture = Fixture::load();
    let params = |negative: &str, guidance| GenerateParams {
        steps: 3,
        guidance_scale: guidance,
        negative_prompt: negative.into(),
        ..golden_params(SchedulerKind::Ddim, None)
    };
    let empty = DeltaSet::empty();
    let a = fixture.generate(&params("blurry", 1.0), &empty).unwrap();
    let b = fixture.generate(&params("a dog", 1.0), &empty).unwrap();
    assert!(identical(&a, &b));
    let c = fixture.generate(&params("blurry", 3.0), &empty).unwrap();
    let d = fixture.generate(&params("a dog", 3.0), &empty).unwrap();
    assert!(refact_testkit::max_abs_diff(&c, &d) > 1e-4);
}

#[test]
fn progress_reports_every_step_and_can_cancel() {
    let fixture = Fixture::load();
    let params = GenerateParams {
        steps: 5,
        ..golden_params(SchedulerKind::Pndm, None)
    };
    let run = |stop_after: usize, seen: &mut Vec<(usize, usize)>| {
        generate(
            &fixture.text.encoder,
            &fixture.text.tokenizer,
            &fixture.unet,
            &fixture.vae,
            &fixture.scheduler,
            &params,
            &DeltaSet::empty(),
            &mut |done, total| {
                seen.push((done, total));
                done < stop_after
            },
        )
    };
    let mut seen = Vec::new();
    run(usize::MAX, &mut seen).unwrap();
    // PNDM (PLMS) evaluates the model once more than the step count.
    let expected: Vec<_> = (0..=6).map(|i| (i, 6)).collect();
    assert_eq!(seen, expected);

    let mut seen = Vec::new();
    let err = run(2, &mut seen).unwrap_err();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert_eq!(seen.last(), Some(&(2, 6)));
}

#[test]
fn bad_settings_and_latents_of_the_wrong_shape_are_refused() {
    let fixture = Fixture::load();
    let wrong = Tensor::zeros((1, 4, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let err = fixture
        .generate(
            &golden_params(SchedulerKind::Ddim, Some(wrong)),
            &DeltaSet::empty(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Invalid {
                kind: InvalidKind::BadShape,
                ..
            }
        ),
        "{err}"
    );
    let params = GenerateParams {
        width: 60,
        ..golden_params(SchedulerKind::Ddim, None)
    };
    let err = fixture.generate(&params, &DeltaSet::empty()).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Invalid {
                kind: InvalidKind::BadGenerationSetting,
                ..
            }
        ),
        "{err}"
    );
}
