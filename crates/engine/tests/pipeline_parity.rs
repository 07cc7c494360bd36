//! The full text-to-image pipeline against diffusers on every fixture (tiny-sd,
//! tiny-sd-48, tiny-sd2, tiny-sdxl), plus seeds, versions (deltas), guidance and
//! cancellation (tiny-sd).

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::pipeline::{generate, generate_with, GenerateParams};
use refact_engine::scheduler::SchedulerKind;
use refact_engine::{EngineError, InvalidKind};
use std::path::Path;
use std::sync::Arc;

mod common;

use common::Fixture;

impl Fixture {
    fn generate(&self, params: &GenerateParams, deltas: &DeltaSet) -> Result<Tensor, EngineError> {
        generate_with(&self.parts(), params, deltas, &mut |_, _| true)
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

/// The scheduler kind of a `golden.json:pipeline` entry's `scheduler`.
fn scheduler_kind(key: &str) -> SchedulerKind {
    match key {
        "pndm" => SchedulerKind::Pndm,
        "ddim" => SchedulerKind::Ddim,
        "euler" => SchedulerKind::Euler,
        "dpmpp_2m" => SchedulerKind::DpmSolverMultistep,
        other => panic!("golden.json: unknown scheduler {other:?}"),
    }
}

/// The four schedulers' images against diffusers' (0.01), each run with the settings
/// its `golden.json:pipeline` entry records. A golden run must be well conditioned
/// (`well_conditioned`: diffusers' image moved little when the initial latents moved
/// by 1e-5, `nudged_latents_image_change`); one that is not would measure rounding.
fn every_scheduler_matches_diffusers_images(fixture: &Path) {
    let name = refact_testkit::fixture_name(fixture);
    let model = Fixture::load_from(fixture);
    let g = refact_testkit::goldens_in(fixture);
    let runs = refact_testkit::golden_json_in(fixture)["pipeline"]
        .as_array()
        .expect("golden.json has `pipeline`")
        .clone();
    // A run's golden key is its `name` where it has one (tiny-sdxl's
    // `euler_no_negative`), else its scheduler.
    let key_of = |r: &serde_json::Value| {
        r.get("name")
            .unwrap_or(&r["scheduler"])
            .as_str()
            .unwrap()
            .to_string()
    };
    let keys: Vec<String> = runs.iter().map(key_of).collect();
    assert_eq!(keys[..4], ["pndm", "ddim", "euler", "dpmpp_2m"], "{name}");
    let init = g["pipeline.init_latents"].clone();
    let mut failures = Vec::new();
    for run in &runs {
        let key = key_of(run);
        let scheduler = run["scheduler"].as_str().unwrap();
        let nudge = run["nudged_latents_image_change"].as_f64().unwrap();
        assert_eq!(
            run["well_conditioned"].as_bool(),
            Some(true),
            "{name} {key}: the golden run is not well conditioned (a 1e-5 nudge of the \
             latents moves diffusers' image by {nudge:e}); it would measure rounding"
        );
        // No negative prompt (null) is the empty one.
        let text = |k: &str| run[k].as_str().unwrap_or_default().to_string();
        let size = |k: &str| run[k].as_u64().unwrap() as usize;
        let params = GenerateParams {
            negative_prompt: text("negative_prompt"),
            steps: size("steps"),
            guidance_scale: run["guidance_scale"].as_f64().unwrap() as _,
            width: size("width"),
            height: size("height"),
            init_latents: Some(init.clone()),
            ..GenerateParams::new(text("prompt"), scheduler_kind(scheduler))
        };
        let image = model.generate(&params, &DeltaSet::empty()).unwrap();
        assert_eq!(image.dims(), &[params.height, params.width, 3]);
        let err = refact_testkit::max_abs_diff(&image, &g[&format!("pipeline.{key}.image")]);
        println!(
            "{name} pipeline.{key}.image: max abs error {err:.3e} (diffusers' own change for a \
             1e-5 latent nudge {nudge:.2e})"
        );
        if err.is_nan() || err >= 0.01 {
            failures.push(format!("{key}: image differs from diffusers by {err}"));
        }
    }
    assert!(failures.is_empty(), "{name}: {failures:?}");
}

refact_testkit::test_each_fixture!(every_scheduler_matches_diffusers_images);

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
        encoder: refact_engine::deltas::TextEncoderId::Text,
        layer: 7,
        rank: 1,
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
