//! Deterministic random weights for any module, by name: the demo model and benchmarks
//! at real sizes use them (all-zero weights make benchmarks lie: zero pages are never
//! touched, CANDLE-NOTES.md).
//!
//! A tensor's values depend only on the global seed and its name, never on the order
//! modules ask for them, so the same seed always builds the same model. Every tensor
//! handed out is recorded, so the model can then be written to safetensors, unless the
//! weights are made [`RandomWeights::unrecorded`] (benchmarks of peak memory: a module
//! that keeps a converted copy of a weight would otherwise be charged for both).

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Hands out seeded random tensors and remembers them.
#[derive(Clone)]
pub struct RandomWeights {
    seed: u64,
    made: Arc<Mutex<HashMap<String, Tensor>>>,
    /// Whether `made` keeps what was handed out.
    record: bool,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            made: Arc::new(Mutex::new(HashMap::new())),
            record: true,
        }
    }

    /// Weights that are handed out and forgotten: [`RandomWeights::tensors`] stays
    /// empty, and asking for a name twice makes its (equal) values twice.
    pub fn unrecorded(seed: u64) -> Self {
        Self {
            record: false,
            ..Self::new(seed)
        }
    }

    /// A VarBuilder over these weights.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Every tensor handed out so far, by full name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.made.lock().expect("not poisoned").clone()
    }

    /// Values for `name`: norms' weights 1, biases 0, other tensors normal with standard
    /// deviation 1/√fan_in (embeddings 0.02, as CLIP initialises them).
    fn make(&self, shape: &Shape, name: &str) -> Vec<f32> {
        let n = shape.elem_count();
        let dims = shape.dims();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let parent = name.rsplit_once('.').map_or("", |(parent, _)| parent);
        let is_norm =
            parent.contains("norm") || parent.ends_with("ln") || parent.contains("group_norm");
        if leaf == "bias" || leaf == "beta" {
            return vec![0.0; n];
        }
        if is_norm && (leaf == "weight" || leaf == "gamma") {
            return vec![1.0; n];
        }
        let std = if name.contains("embedding") {
            0.02
        } else if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            1.0 / (fan_in.max(1) as f32).sqrt()
        } else {
            0.02
        };
        let mut hasher = Sha256::new();
        hasher.update(self.seed.to_le_bytes());
        hasher.update(name.as_bytes());
        let digest = hasher.finalize();
        let mut rng = ChaCha8Rng::from_seed(digest.into());
        (0..n)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * std)
            .collect()
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hint: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some(existing) = self.made.lock().expect("not poisoned").get(name) {
            if existing.shape() != &shape {
                candle_core::bail!("{name} asked for as {shape:?} and {:?}", existing.shape());
            }
            return existing.to_dtype(dtype)?.to_device(device);
        }
        let tensor = Tensor::from_vec(self.make(&shape, name), shape, &Device::Cpu)?;
        if self.record {
            self.made
                .lock()
                .expect("not poisoned")
                .insert(name.to_string(), tensor.clone());
        }
        tensor.to_dtype(dtype)?.to_device(device)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrecorded_weights_are_the_same_values_and_are_not_kept() {
        let recorded = RandomWeights::new(3);
        let unrecorded = RandomWeights::unrecorded(3);
        let a = recorded.var_builder(DType::F32, &Device::Cpu);
        let b = unrecorded.var_builder(DType::F32, &Device::Cpu);
        let x = a.get((4, 6), "block.proj.weight").unwrap();
        let y = b.get((4, 6), "block.proj.weight").unwrap();
        assert_eq!(x.to_vec2::<f32>().unwrap(), y.to_vec2::<f32>().unwrap());
        assert_eq!(recorded.tensors().len(), 1);
        assert!(unrecorded.tensors().is_empty());
    }

    #[test]
    fn same_seed_and_name_give_the_same_values_in_any_order() {
        let a = RandomWeights::new(7);
        let b = RandomWeights::new(7);
        let va = a.var_builder(DType::F32, &Device::Cpu);
        let vb = b.var_builder(DType::F32, &Device::Cpu);
        let x1 = va.get((3, 4), "layer.fc.weight").unwrap();
        let _ = vb.get((5,), "other.weight").unwrap();
        let x2 = vb.get((3, 4), "layer.fc.weight").unwrap();
        let d: f32 = (x1 - x2)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(d, 0.0);
        let c = RandomWeights::new(8).var_builder(DType::F32, &Device::Cpu);
        let x3 = c.get((3, 4), "layer.fc.weight").unwrap();
        let x1 = va.get((3, 4), "layer.fc.weight").unwrap();
        let d: f32 = (x1 - x3)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d > 0.0);
    }

    #[test]
    fn norms_start_at_identity_and_biases_at_zero() {
        let w = RandomWeights::new(1);
        let vb = w.var_builder(DType::F32, &Device::Cpu);
        let norm: Vec<f32> = vb
            .get(4, "x.layer_norm1.weight")
            .unwrap()
            .to_vec1()
            .unwrap();
        let bias: Vec<f32> = vb.get(4, "x.fc1.bias").unwrap().to_vec1().unwrap();
        assert_eq!(norm, vec![1.0; 4]);
        assert_eq!(bias, vec![0.0; 4]);
        assert_eq!(w.tensors().len(), 2);
    }
}
