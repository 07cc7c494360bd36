//! Helpers shared by the integration tests: where the fixture is, and the goldens.
#![allow(dead_code)]

use candle_core::Tensor;
use std::collections::HashMap;
use std::path::PathBuf;

/// `REFACT_SHARED_DIR`, or `<workspace>/../shared`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("REFACT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

pub fn fixture_dir() -> PathBuf {
    shared_dir().join("fixtures/tiny-sd")
}

pub fn scorer_dir() -> PathBuf {
    fixture_dir().join("clip-scorer")
}

pub fn data_file(name: &str) -> PathBuf {
    shared_dir().join("data").join(name)
}

pub fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixture_dir().join("golden.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("golden.safetensors")
}

pub fn golden_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

/// Largest absolute difference of two tensors of the same shape (compared in f32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(candle_core::DType::F32).unwrap();
    let b = b.to_dtype(candle_core::DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
