//! Each scheduler built from the fixture's scheduler_config.json, as diffusers'
//! `Class.from_config(file)` with 10 steps, visits the golden timesteps
//! (`pipeline.{pndm,ddim,euler,dpmpp_2m}.timesteps` in golden.safetensors).

use candle_core::Device;
use refact_engine::scheduler::{build, SchedulerConfig, SchedulerKind};
use refact_testkit::fixture_dir;

fn fixture_config() -> SchedulerConfig {
    SchedulerConfig::from_file(fixture_dir().join("scheduler/scheduler_config.json")).unwrap()
}

#[test]
fn fixture_config_is_a_pndm_file() {
    assert_eq!(fixture_config().class_kind(), Some(SchedulerKind::Pndm));
}

#[test]
fn each_kind_visits_the_golden_timesteps_for_ten_steps() {
    let golden =
        candle_core::safetensors::load(fixture_dir().join("golden.safetensors"), &Device::Cpu)
            .unwrap();
    let config = fixture_config();
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
        assert_eq!(scheduler.timesteps(), expected.as_slice(), "{kind}");
    }
}
