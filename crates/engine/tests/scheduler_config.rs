//! Config handling: unknown names and unsupported settings are refused; keys the file
//! has change the result and absent keys take each class's defaults (checked against
//! diffusers' numbers in scheduler_reference.rs; here: that they make a difference).

use candle_core::{DType, Device, Tensor};
use refact_engine::scheduler::{build, Scheduler, SchedulerConfig, SchedulerKind};
use refact_engine::{EngineError, InvalidKind};
use serde_json::{json, Value};

/// The keys of the fixture's (SD v1.5-style) scheduler_config.json.
fn sd_config() -> SchedulerConfig {
    SchedulerConfig::from_json(json!({
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.42.1",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
        "clip_sample": false
    }))
    .unwrap()
}

/// Runs a scheduler over a fixed sample with a fixed fake model; returns the result.
fn run(scheduler: &mut dyn Scheduler, dtype: DType) -> Vec<f32> {
    let base = Tensor::new(&[[[[0.9f32, -1.3], [0.25, 2.1]]]], &Device::Cpu).unwrap();
    let mut x = base
        .affine(scheduler.init_noise_sigma(), 0.0)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let timesteps = scheduler.timesteps().to_vec();
    for (i, t) in timesteps.into_iter().enumerate() {
        let input = scheduler.scale_model_input(&x, i).unwrap();
        let output = input.affine(0.3, 0.1 * (t / 100.0).cos()).unwrap();
        x = scheduler.step(&output, i, &x).unwrap();
        assert_eq!(x.dtype(), dtype);
    }
    x.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn final_sample(kind: SchedulerKind, config: &SchedulerConfig) -> Vec<f32> {
    run(build(kind, config, 10).unwrap().as_mut(), DType::F32)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_config_error(kind: SchedulerKind, config: SchedulerConfig, key: &str) {
    match build(kind, &config, 10) {
        Err(EngineError::Config { message, .. }) => {
            assert!(
                message.contains(key),
                "{kind}: `{message}` does not name `{key}`"
            )
        }
        Err(other) => panic!("{kind} with bad `{key}`: wrong error {other}"),
        Ok(_) => panic!("{kind} accepted an unsupported `{key}`"),
    }
}

#[test]
fn timestep_spacing_in_the_file_changes_the_result() {
    for kind in SchedulerKind::ALL {
        let default = final_sample(kind, &sd_config());
        for spacing in ["leading", "linspace", "trailing"] {
            let config = sd_config().with("timestep_spacing", json!(spacing));
            let scheduler = build(kind, &config, 10).unwrap();
            let changed = final_sample(kind, &config);
            let class_default = match kind {
                SchedulerKind::Pndm | SchedulerKind::Ddim => "leading",
                _ => "linspace",
            };
            let difference = max_difference(&default, &changed);
            if spacing == class_default {
                assert_eq!(difference, 0.0, "{kind} {spacing} is its default");
            } else {
                // DPM-Solver's linspace and trailing differ by one timestep in five
                // at 10 steps, hence the small margin (rounding noise is ~1e-6).
                assert!(
                    difference > 1e-4,
                    "{kind} {spacing}: only {difference} apart"
                );
                assert_ne!(
                    scheduler.timesteps(),
                    build(kind, &sd_config(), 10).unwrap().timesteps()
                );
            }
        }
    }
}

#[test]
fn ddim_clips_the_predicted_sample_when_the_file_lacks_clip_sample() {
    let unclipped = final_sample(SchedulerKind::Ddim, &sd_config());
    let by_default = final_sample(SchedulerKind::Ddim, &sd_config().without("clip_sample"));
    let explicit = final_sample(
        SchedulerKind::Ddim,
        &sd_config().with("clip_sample", json!(true)),
    );
    assert_eq!(by_default, explicit);
    assert!(max_difference(&unclipped, &by_default) > 1e-2);
    // A clipped x0 stays within clip_sample_range at the last step (ᾱ_prev ≈ 1).
    assert!(
        explicit.iter().all(|v| v.abs() <= 1.0 + 1e-3),
        "{explicit:?}"
    );
    let wider = final_sample(
        SchedulerKind::Ddim,
        &sd_config()
            .with("clip_sample", json!(true))
            .with("clip_sample_range", json!(1.5)),
    );
    assert!(max_difference(&wider, &explicit) > 1e-2);
}

#[test]
fn clip_sample_means_nothing_to_the_other_schedulers() {
    for kind in [
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::DpmSolverMultistep,
    ] {
        let with = final_sample(kind, &sd_config().with("clip_sample", json!(true)));
        assert_eq!(with, final_sample(kind, &sd_config()), "{kind}");
    }
}

#[test]
fn keys_listed_as_defaulted_are_treated_as_absent() {
    // diffusers writes `_use_default_values` for keys it filled in itself.
    let listed = SchedulerConfig::from_json(json!({
        "_class_name": "PNDMScheduler",
        "_use_default_values": ["clip_sample"],
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "clip_sample": false
    }))
    .unwrap();
    assert_eq!(
        final_sample(SchedulerKind::Ddim, &listed),
        final_sample(SchedulerKind::Ddim, &sd_config().without("clip_sample"))
    );
}

#[test]
fn unsupported_settings_are_refused_with_a_config_error() {
    use SchedulerKind::*;
    let cases: Vec<(SchedulerKind, &str, Value)> = vec![
        (Ddim, "thresholding", json!(true)),
        (DpmSolverMultistep, "thresholding", json!(true)),
        (Ddim, "rescale_betas_zero_snr", json!(true)),
        (Euler, "rescale_betas_zero_snr", json!(true)),
        (Pndm, "prediction_type", json!("sample")),
        (Ddim, "prediction_type", json!("flow_prediction")),
        (
            DpmSolverMultistep,
            "prediction_type",
            json!("flow_prediction"),
        ),
        (Pndm, "beta_schedule", json!("sigmoid")),
        (Ddim, "timestep_spacing", json!("karras")),
        (Euler, "interpolation_type", json!("log_linear")),
        (Euler, "use_exponential_sigmas", json!(true)),
        (Euler, "use_beta_sigmas", json!(true)),
        (Euler, "timestep_type", json!("random")),
        (Euler, "final_sigmas_type", json!("one")),
        (
            DpmSolverMultistep,
            "algorithm_type",
            json!("sde-dpmsolver++"),
        ),
        (DpmSolverMultistep, "algorithm_type", json!("dpmsolver")),
        (DpmSolverMultistep, "solver_order", json!(3)),
        (DpmSolverMultistep, "solver_type", json!("bogus")),
        (DpmSolverMultistep, "use_lu_lambdas", json!(true)),
        (DpmSolverMultistep, "use_flow_sigmas", json!(true)),
        (DpmSolverMultistep, "variance_type", json!("learned_range")),
        (Ddim, "steps_offset", json!(1.5)),
        (Ddim, "num_train_timesteps", json!("1000")),
        (Euler, "use_karras_sigmas", json!("yes")),
        (Ddim, "trained_betas", json!([0.001, 0.002])),
    ];
    for (kind, key, value) in cases {
        assert_config_error(kind, sd_config().with(key, value), key);
    }
}

#[test]
fn keys_a_class_does_not_declare_are_ignored() {
    // diffusers' from_config drops them; they must not be refused either.
    let noisy = sd_config()
        .with("thresholding", json!(true)) // not a PNDM or Euler key
        .with("solver_order", json!(3)) // only DPM-Solver's
        .with("interpolation_type", json!("log_linear")); // only Euler's
    assert_eq!(
        final_sample(SchedulerKind::Pndm, &noisy),
        final_sample(SchedulerKind::Pndm, &sd_config())
    );
    let noisy = sd_config().with("thresholding", json!(true));
    assert_eq!(
        final_sample(SchedulerKind::Euler, &noisy),
        final_sample(SchedulerKind::Euler, &sd_config())
    );
}

#[test]
fn bad_step_counts_are_refused_as_generation_settings() {
    for kind in SchedulerKind::ALL {
        for steps in [0, 1001] {
            match build(kind, &sd_config(), steps) {
                Err(EngineError::Invalid { kind: k, .. }) => {
                    assert_eq!(k, InvalidKind::BadGenerationSetting)
                }
                Err(other) => panic!("{kind} {steps}: {other}"),
                Ok(_) => panic!("{kind} accepted {steps} steps"),
            }
        }
    }
    // The Runge-Kutta warm-up spans four timesteps.
    assert!(build(
        SchedulerKind::Pndm,
        &sd_config().with("skip_prk_steps", json!(false)),
        3
    )
    .is_err());
    // diffusers' trailing spacing gives a -1 timestep for 61 steps.
    let trailing = sd_config().with("timestep_spacing", json!("trailing"));
    assert!(build(SchedulerKind::Ddim, &trailing, 61).is_err());
    assert!(build(SchedulerKind::Ddim, &trailing, 60).is_ok());
}

#[test]
fn steps_must_come_in_order_and_step_zero_restarts() {
    for kind in SchedulerKind::ALL {
        let mut scheduler = build(kind, &sd_config(), 10).unwrap();
        let first = run(scheduler.as_mut(), DType::F32);
        // Reusing the scheduler for a second image gives the same result.
        assert_eq!(run(scheduler.as_mut(), DType::F32), first, "{kind}");
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let past_end = scheduler.timesteps().len();
        assert!(scheduler.step(&x, past_end, &x).is_err(), "{kind}");
        assert!(scheduler.scale_model_input(&x, past_end).is_err(), "{kind}");
        if matches!(
            kind,
            SchedulerKind::Pndm | SchedulerKind::DpmSolverMultistep
        ) {
            scheduler.step(&x, 0, &x).unwrap();
            assert!(scheduler.step(&x, 2, &x).is_err(), "{kind} skipped a step");
        }
    }
}

#[test]
fn half_precision_samples_follow_the_f32_trajectory() {
    // candle runs f16 on the CPU too (slowly); the step arithmetic is done in f32 and
    // the result returned in the sample's dtype.
    for kind in SchedulerKind::ALL {
        let f32_result = final_sample(kind, &sd_config());
        let f16_result = run(build(kind, &sd_config(), 10).unwrap().as_mut(), DType::F16);
        let scale = f32_result.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let difference = max_difference(&f32_result, &f16_result);
        assert!(
            difference <= 1e-2 * scale,
            "{kind}: f16 off by {difference}"
        );
    }
}
