//! Replays diffusers' scheduler trajectories recorded by tools/scheduler_reference.py
//! (tests/data/scheduler_reference.json): same config, same fake model
//! (0.3 · model_input + 0.1 · cos(t / 100)), same starting sample; every timestep, model
//! input and sample must match within 1e-5 (relative above 1). Also checks the
//! timesteps of many step counts, and that whatever diffusers refuses or gets wrong
//! (timesteps outside the trained range) is refused here.

use candle_core::{Device, Tensor};
use refact_engine::scheduler::{build, SchedulerConfig, SchedulerKind};
use serde::Deserialize;
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;
/// Euler's Karras timesteps are fractional and come from log σ, which diffusers
/// tabulates in f32 (we use f64): they agree to this many timesteps, absolute. They
/// only feed the model; the step arithmetic uses σ.
const KARRAS_TIMESTEP_TOLERANCE: f64 = 2e-3;

#[derive(Deserialize)]
struct Reference {
    base_sample: Vec<f32>,
    base_sample_shape: Vec<usize>,
    trajectories: Vec<Trajectory>,
    spacing: Vec<SpacingGroup>,
}

#[derive(Deserialize)]
struct Trajectory {
    name: String,
    kind: String,
    config: Value,
    steps: usize,
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
    initial_sample: Vec<f64>,
    model_inputs: Vec<Vec<f64>>,
    samples: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct SpacingGroup {
    kind: String,
    config: Value,
    tables: Vec<SpacingTable>,
}

#[derive(Deserialize)]
struct SpacingTable {
    steps: usize,
    timesteps: Option<Vec<f64>>,
    error: Option<String>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/scheduler_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Largest error, measured relative to the reference where it exceeds 1 in size.
fn max_error(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Largest absolute difference between two timestep lists of the same length.
fn max_timestep_error(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f64::max)
}

fn as_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

fn uses_karras(config: &Value) -> bool {
    config.get("use_karras_sigmas") == Some(&Value::Bool(true))
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The fake model of the reference script.
fn fake_model(model_input: &Tensor, timestep: f64) -> Tensor {
    model_input
        .affine(0.3, 0.1 * (timestep / 100.0).cos())
        .unwrap()
}

/// Runs one case and returns the largest error over its samples and model inputs.
fn replay(case: &Trajectory, reference: &Reference) -> f64 {
    let kind: SchedulerKind = case.kind.parse().unwrap();
    let config = SchedulerConfig::from_json(case.config.clone()).unwrap();
    let mut scheduler = build(kind, &config, case.steps).unwrap();
    let timesteps = scheduler.timesteps().to_vec();
    let timestep_tolerance = if kind == SchedulerKind::Euler && uses_karras(&case.config) {
        KARRAS_TIMESTEP_TOLERANCE
    } else {
        // Integers must be exact; the fractional ones are f32 values.
        TOLERANCE
    };
    assert!(
        max_timestep_error(&timesteps, &case.timesteps) <= timestep_tolerance,
        "{}: timesteps {timesteps:?} vs {:?}",
        case.name,
        case.timesteps
    );
    assert!(
        (scheduler.init_noise_sigma() - case.init_noise_sigma).abs()
            <= TOLERANCE * case.init_noise_sigma.max(1.0),
        "{}: init_noise_sigma {} vs {}",
        case.name,
        scheduler.init_noise_sigma(),
        case.init_noise_sigma
    );
    let base = Tensor::from_vec(
        reference.base_sample.clone(),
        reference.base_sample_shape.as_slice(),
        &Device::Cpu,
    )
    .unwrap();
    let mut x = base.affine(scheduler.init_noise_sigma(), 0.0).unwrap();
    let mut worst = max_error(&values(&x), &case.initial_sample);
    for (i, &t) in timesteps.iter().enumerate() {
        let input = scheduler.scale_model_input(&x, i).unwrap();
        worst = worst.max(max_error(&values(&input), &case.model_inputs[i]));
        x = scheduler.step(&fake_model(&input, t), i, &x).unwrap();
        let err = max_error(&values(&x), &case.samples[i]);
        assert!(
            err <= TOLERANCE,
            "{}: step {i} (t = {t}) off by {err:e}: {:?} vs {:?}",
            case.name,
            values(&x),
            case.samples[i]
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn trajectories_match_diffusers() {
    let reference = reference();
    let mut worst = (0.0, String::new());
    for case in &reference.trajectories {
        let err = replay(case, &reference);
        println!("{:40} max error {err:.2e}", case.name);
        if err > worst.0 {
            worst = (err, case.name.clone());
        }
    }
    println!("worst: {:.2e} in {}", worst.0, worst.1);
    assert!(worst.0 <= TOLERANCE);
}

#[test]
fn timesteps_match_diffusers_for_many_step_counts() {
    let reference = reference();
    let mut checked = 0;
    let mut worst_karras = 0.0f64;
    for group in &reference.spacing {
        let kind: SchedulerKind = group.kind.parse().unwrap();
        let config = SchedulerConfig::from_json(group.config.clone()).unwrap();
        for table in &group.tables {
            let built = build(kind, &config, table.steps);
            // diffusers refuses, or hands out timesteps no model was trained at.
            let diffusers_fails = table.error.is_some()
                || table.steps > 1000
                || table
                    .timesteps
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|&t| !(0.0..=999.0).contains(&t)));
            match (built, diffusers_fails) {
                (Err(_), true) => {}
                (Ok(s), true) => panic!(
                    "{kind} {:?} {} steps: diffusers gives {:?} / {:?} but we accepted {:?}",
                    group.config.get("timestep_spacing"),
                    table.steps,
                    table.timesteps,
                    table.error,
                    s.timesteps()
                ),
                (Err(e), false) => panic!("{kind} {} steps refused: {e}", table.steps),
                (Ok(s), false) => {
                    let expected = table.timesteps.as_ref().unwrap();
                    if kind == SchedulerKind::Euler && uses_karras(&group.config) {
                        let err = max_timestep_error(s.timesteps(), expected);
                        worst_karras = worst_karras.max(err);
                        assert!(
                            err <= KARRAS_TIMESTEP_TOLERANCE,
                            "{kind} {} steps: {:?} vs {expected:?}",
                            table.steps,
                            s.timesteps()
                        );
                    } else {
                        // diffusers' timesteps are f32 (or integer) values; serde_json
                        // may read a decimal one ulp off in f64, so compare as f32.
                        assert_eq!(
                            as_f32(s.timesteps()),
                            as_f32(expected),
                            "{kind} {:?} {} steps",
                            group.config,
                            table.steps
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    println!("{checked} step counts checked; worst Euler Karras timestep error {worst_karras:.2e}");
}
