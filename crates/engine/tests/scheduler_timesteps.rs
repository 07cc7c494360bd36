//! Each scheduler built from a fixture's scheduler_config.json, as diffusers'
//! `Class.from_config(file)` with 10 steps, visits the golden timesteps
//! (`pipeline.{pndm,ddim,euler,dpmpp_2m}.timesteps` in golden.safetensors), on both
//! fixtures: tiny-sd (`clip_sample: false`), tiny-sd-48 (`timestep_spacing: trailing`),
//! tiny-sd2 (DDIM's file, `v_prediction`) and tiny-sdxl (Euler's file, `leading`).

use refact_engine::scheduler::{build, SchedulerConfig, SchedulerKind};
use std::path::Path;

fn fixture_config(fixture: &Path) -> SchedulerConfig {
    SchedulerConfig::from_file(fixture.join("scheduler/scheduler_config.json")).unwrap()
}

/// The class the file names is the kind it defaults to: PNDM in the v1 fixtures, DDIM
/// in tiny-sd2 (as stable-diffusion-2-1), Euler in tiny-sdxl (as SDXL base).
fn fixture_config_names_its_scheduler(fixture: &Path) {
    let json = refact_testkit::fixture_json(fixture, "scheduler/scheduler_config.json");
    let expected = match refact_testkit::fixture_name(fixture).as_str() {
        "tiny-sd2" => ("DDIMScheduler", SchedulerKind::Ddim),
        "tiny-sdxl" => ("EulerDiscreteScheduler", SchedulerKind::Euler),
        _ => ("PNDMScheduler", SchedulerKind::Pndm),
    };
    assert_eq!(json["_class_name"], expected.0);
    assert_eq!(fixture_config(fixture).class_kind(), Some(expected.1));
}

fn each_kind_visits_the_golden_timesteps_for_ten_steps(fixture: &Path) {
    let name = refact_testkit::fixture_name(fixture);
    let golden = refact_testkit::goldens_in(fixture);
    let config = fixture_config(fixture);
    for (kind, key) in [
        (SchedulerKind::Pndm, "pipeline.pndm.timesteps"),
        (SchedulerKind::Ddim, "pipeline.ddim.timesteps"),
        (SchedulerKind::Euler, "pipeline.euler.timesteps"),
        (
            SchedulerKind::DpmSolverMultistep,
            "pipeline.dpmpp_2m.timesteps",
        ),
    ] {
        let expected: Vec<f64> = golden[key]
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let scheduler = build(kind, &config, 10).unwrap();
        assert_eq!(scheduler.timesteps(), expected.as_slice(), "{name} {kind}");
    }
}

refact_testkit::test_each_fixture!(
    fixture_config_names_its_scheduler,
    each_kind_visits_the_golden_timesteps_for_ten_steps,
);
