//! Shared helpers for the engine's integration tests: where the fixture is, and the goldens.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `../shared` beside the workspace, or `REFACT_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("REFACT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

/// The tiny random-weight SD v1.5-shaped pipeline.
pub fn fixture_dir() -> PathBuf {
    shared_dir().join("fixtures/tiny-sd")
}

/// Every tensor of `golden.safetensors`, on the CPU.
pub fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("golden.safetensors"), &Device::Cpu)
        .expect("golden.safetensors")
}

/// `golden.json`: the inputs and scalar results.
pub fn golden_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

/// Largest absolute difference between two tensors of the same shape (as f32 on the CPU).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
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

/// Cosine similarity of two vectors (any shape, flattened).
pub fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = b
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb)) as f32
}

/// The prompts of `golden.json`.
pub fn golden_prompts() -> Vec<String> {
    golden_json()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}
