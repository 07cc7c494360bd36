//! The initial latents: seeded standard normal noise drawn on the CPU (so a seed gives
//! the same image on every device), or the caller's own tensor, checked.

use crate::error::{EngineError, InvalidKind, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Standard normal noise of `shape`, from a ChaCha8 stream seeded with `seed`, built on
/// the CPU then moved to `device` in `dtype`.
pub fn seeded_noise(seed: u64, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// Checks caller-supplied latents against the expected [1, channels, h, w] shape and
/// moves them to `device` in `dtype`.
pub fn checked_latents(
    latents: &Tensor,
    expected: &[usize],
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    if latents.dims() != expected {
        return Err(EngineError::invalid(
            InvalidKind::BadShape,
            "init_latents",
            format!(
                "expected shape {expected:?} for this size, got {:?}",
                latents.dims()
            ),
        ));
    }
    Ok(latents.to_dtype(dtype)?.to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn the_same_seed_draws_the_same_noise_and_another_seed_differs() {
        let shape = [1, 4, 8, 8];
        let a = seeded_noise(7, &shape, &Device::Cpu, DType::F32).unwrap();
        let b = seeded_noise(7, &shape, &Device::Cpu, DType::F32).unwrap();
        let c = seeded_noise(8, &shape, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(values(&a), values(&b));
        assert_ne!(values(&a), values(&c));
    }

    #[test]
    fn noise_is_standard_normal() {
        let noise = values(&seeded_noise(1, &[1, 4, 64, 64], &Device::Cpu, DType::F32).unwrap());
        let n = noise.len() as f64;
        let mean = noise.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = noise
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn latents_of_the_wrong_shape_are_refused() {
        let latents = Tensor::zeros((1, 4, 8, 9), DType::F32, &Device::Cpu).unwrap();
        let err = checked_latents(&latents, &[1, 4, 8, 8], &Device::Cpu, DType::F32).unwrap_err();
        assert!(matches!(
            err,
            EngineError::Invalid {
                kind: InvalidKind::BadShape,
                ..
            }
        ));
    }
}
