//! Shared helpers for the UNet, VAE and pipeline tests: where the fixture is, its
//! goldens, and error measures with FIXTURE.md's tolerances.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `$REFACT_SHARED_DIR`, else `<workspace>/../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("REFACT_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// The tiny SD v1-style model folder.
pub fn tiny_sd() -> PathBuf {
    shared_dir().join("fixtures/tiny-sd")
}

/// Every golden tensor, on the CPU.
pub fn goldens() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_sd().join("golden.safetensors"), &Device::Cpu)
        .expect("fixture goldens")
}

pub fn golden(goldens: &HashMap<String, Tensor>, key: &str) -> Tensor {
    goldens
        .get(key)
        .unwrap_or_else(|| panic!("golden `{key}` missing"))
        .clone()
}

/// Largest |a − b| over all elements (shapes must match).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
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

/// Largest |a − b| / max(1, |b|): absolute for small values, relative for large ones
/// (FIXTURE.md's measure for encoder, UNet and VAE outputs).
pub fn max_scaled_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let a = a.to_vec1::<f32>().unwrap();
    let b = b.to_vec1::<f32>().unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}
