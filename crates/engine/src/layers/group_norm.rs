//! Group normalisation, optionally followed by SiLU, in one pass on the CPU.
//!
//! candle-nn's `GroupNorm` is eight tensor operations (mean, subtract, square, mean,
//! add, sqrt, divide, scale and shift), each a full pass over the activations, and SiLU
//! is a ninth; candle's elementwise operations run on one thread in our binaries
//! (`device::prefer_single_threaded_elementwise_ops`). Here the statistics take one read
//! and the normalised, scaled (and SiLU'd) output one write, groups in parallel. Other
//! devices and dtypes go through candle-nn.

use super::cpu::f32_slice;
use super::fast_exp;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{self as nn, VarBuilder};
use rayon::prelude::*;

/// Inputs of at least this many values have their group sums taken in parallel.
const PARALLEL_SUMS_FROM: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: nn::GroupNorm,
    /// [channels], contiguous: the scale and shift the kernel reads.
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` [channels] (PyTorch's names).
    pub fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        Ok(Self {
            inner: nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
            weight: weight.contiguous()?,
            bias: bias.contiguous()?,
            groups,
            eps,
        })
    }

    /// The number of channels it normalises.
    pub fn channels(&self) -> usize {
        // `weight` is [channels].
        self.weight.elem_count()
    }

    /// Group norm, then SiLU, as the resnets and the decoder's output use them.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        if self.uses_own_kernel(xs) {
            self.apply_own(xs, true)
        } else {
            nn::ops::silu(&self.inner.forward(xs)?)
        }
    }

    /// Group norm with statistics given from outside instead of `xs`'s own (tiled VAE
    /// decoding normalises each tile with the whole image's), then SiLU if asked.
    pub fn forward_with_statistics(
        &self,
        xs: &Tensor,
        statistics: &GroupStatistics,
        silu: bool,
    ) -> Result<Tensor> {
        let (b, c) = (xs.dim(0)?, xs.dim(1)?);
        if statistics.mean.len() != b * self.groups || statistics.variance.len() != b * self.groups
        {
            candle_core::bail!(
                "group norm: statistics for {} groups, input has {b} × {}",
                statistics.mean.len(),
                self.groups
            )
        }
        let inv_std: Vec<f64> = statistics
            .variance
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        if self.uses_own_kernel(xs) {
            let given = statistics
                .mean
                .iter()
                .zip(&inv_std)
                .map(|(&m, &s)| (m as f32, s as f32))
                .collect();
            let op = FusedGroupNorm {
                groups: self.groups,
                eps: self.eps,
                silu,
                given: Some(given),
            };
            return xs
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        // Other devices: the same arithmetic in tensor operations.
        let (device, dtype) = (xs.device(), xs.dtype());
        let per_group = |values: &[f64]| {
            Tensor::from_vec(
                values.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                (b, self.groups, 1),
                device,
            )?
            .to_dtype(dtype)
        };
        let grouped = xs.reshape((b, self.groups, ()))?;
        let normalised = grouped
            .broadcast_sub(&per_group(&statistics.mean)?)?
            .broadcast_mul(&per_group(&inv_std)?)?
            .reshape(xs.shape())?;
        let channel = |t: &Tensor| t.reshape((1, c, 1, 1));
        let out = normalised
            .broadcast_mul(&channel(&self.weight)?)?
            .broadcast_add(&channel(&self.bias)?)?;
        if silu {
            nn::ops::silu(&out)
        } else {
            Ok(out)
        }
    }

    /// Sums of the values and their squares per (image, group) of `xs` [b, c, …], in
    /// f64: what [`GroupStatistics`] of a whole image are accumulated from, part by part.
    pub fn group_sums(&self, xs: &Tensor) -> Result<GroupSums> {
        if self.uses_own_kernel(xs) {
            return self.group_sums_cpu(xs);
        }
        let b = xs.dim(0)?;
        let grouped = xs.to_dtype(DType::F64)?.reshape((b, self.groups, ()))?;
        let count = grouped.dim(2)? as f64;
        let flat = |t: Tensor| -> Result<Vec<f64>> { t.flatten_all()?.to_vec1() };
        Ok(GroupSums {
            sum: flat(grouped.sum(2)?)?,
            sum_of_squares: flat(grouped.sqr()?.sum(2)?)?,
            count,
        })
    }

    /// [`Self::group_sums`] in one parallel read: the tensor-operation path converts
    /// the whole input to f64 and squares it on one thread, which banded VAE decoding
    /// would pay once per norm.
    fn group_sums_cpu(&self, xs: &Tensor) -> Result<GroupSums> {
        let xs = xs.contiguous()?;
        let groups = xs.dim(0)? * self.groups;
        let (storage, layout) = xs.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("group sums: not on the CPU")
        };
        let values = f32_slice(storage, layout, "group sums")?;
        let group_len = values.len() / groups.max(1);
        let sums = |group: &[f32]| {
            group.iter().fold((0f64, 0f64), |(s, q), &x| {
                let x = f64::from(x);
                (s + x, q + x * x)
            })
        };
        // Small inputs (a thin band) on the calling thread: waiting for the pool costs
        // more than the sums.
        let (sum, sum_of_squares): (Vec<f64>, Vec<f64>) = if values.len() < PARALLEL_SUMS_FROM {
            values.chunks(group_len.max(1)).map(sums).unzip()
        } else {
            values.par_chunks(group_len.max(1)).map(sums).unzip()
        };
        Ok(GroupSums {
            sum,
            sum_of_squares,
            count: group_len as f64,
        })
    }

    fn uses_own_kernel(&self, xs: &Tensor) -> bool {
        xs.device().is_cpu() && xs.dtype() == DType::F32 && self.weight.dtype() == DType::F32
    }

    fn apply_own(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        let op = FusedGroupNorm {
            groups: self.groups,
            eps: self.eps,
            silu,
            given: None,
        };
        xs.contiguous()?
            .apply_op3_no_bwd(&self.weight, &self.bias, &op)
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.uses_own_kernel(xs) {
            self.apply_own(xs, false)
        } else {
            self.inner.forward(xs)
        }
    }
}

/// Per (image, group) mean and biased variance of a group norm's input, in the order
/// image 0's groups, then image 1's, …
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatistics {
    pub mean: Vec<f64>,
    pub variance: Vec<f64>,
}

/// Running sums per (image, group), added up over parts of an image (tiles); `count` is
/// the number of values per group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSums {
    pub sum: Vec<f64>,
    pub sum_of_squares: Vec<f64>,
    pub count: f64,
}

impl GroupSums {
    /// Adds another part's sums (same images and groups).
    pub fn add(&mut self, other: &GroupSums) {
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.sum_of_squares.iter_mut().zip(&other.sum_of_squares) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The mean and biased variance over everything added.
    pub fn statistics(&self) -> GroupStatistics {
        let n = self.count.max(1.0);
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let variance = self
            .sum_of_squares
            .iter()
            .zip(&mean)
            .map(|(sq, m)| (sq / n - m * m).max(0.0))
            .collect();
        GroupStatistics { mean, variance }
    }
}

struct FusedGroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
    /// (mean, 1/std) per (image, group) to use instead of each group's own.
    given: Option<Vec<(f32, f32)>>,
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "refact-group-norm"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = input_layout.shape().dims();
        if dims.len() < 2 {
            candle_core::bail!("group norm: input of shape {dims:?}")
        }
        let channels = dims[1];
        if !channels.is_multiple_of(self.groups) {
            candle_core::bail!("group norm: {channels} channels in {} groups", self.groups)
        }
        let input = f32_slice(input, input_layout, "group norm")?;
        let weight = f32_slice(weight, weight_layout, "group norm")?;
        let bias = f32_slice(bias, bias_layout, "group norm")?;
        if weight.len() != channels || bias.len() != channels {
            candle_core::bail!(
                "group norm: {} scales for {channels} channels",
                weight.len()
            )
        }
        if self
            .given
            .as_ref()
            .is_some_and(|g| g.len() != dims[0] * self.groups)
        {
            candle_core::bail!("group norm: given statistics do not match the input")
        }
        let plane: usize = dims[2..].iter().product();
        let per_group = channels / self.groups;
        let group_len = per_group * plane;
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(group_len)
            .zip(input.par_chunks(group_len))
            .enumerate()
            .for_each(|(index, (out, input))| {
                let first_channel = (index % self.groups) * per_group;
                let (mean, inv_std) = match &self.given {
                    Some(given) => given[index],
                    None => statistics(input, self.eps),
                };
                for (c, (out, input)) in out
                    .chunks_exact_mut(plane)
                    .zip(input.chunks_exact(plane))
                    .enumerate()
                {
                    let scale = inv_std * weight[first_channel + c];
                    let shift = bias[first_channel + c] - mean * scale;
                    normalise_plane(input, out, scale, shift, self.silu);
                }
            });
        Ok((CpuStorage::F32(out), input_layout.shape().clone()))
    }
}

/// `out = input · scale + shift`, then SiLU if asked, for one channel.
fn normalise_plane(input: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { normalise_plane_avx2(input, out, scale, shift, silu) };
        }
    }
    normalise_plane_portable(input, out, scale, shift, silu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normalise_plane_avx2(input: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
    normalise_plane_portable(input, out, scale, shift, silu)
}

/// Two plain loops, one per case, so that each vectorises.
#[inline(always)]
fn normalise_plane_portable(input: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (y, &x) in out.iter_mut().zip(input) {
            *y = fast_exp::silu(x * scale + shift);
        }
    } else {
        for (y, &x) in out.iter_mut().zip(input) {
            *y = x * scale + shift;
        }
    }
}

/// Mean and 1/√(variance + eps) of one group (biased variance, as PyTorch), summed in f64.
fn statistics(values: &[f32], eps: f64) -> (f32, f32) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&x| x as f64).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&x| {
            let d = x as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (variance + eps).sqrt()) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_nn_with_and_without_silu() {
        let (b, c, h, w, groups) = (2, 12, 5, 7, 4);
        let values: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 25.0 - 2.0) * (1.0 + (i % 3) as f32))
            .collect();
        let xs = Tensor::from_vec(values, (b, c, h, w), &Device::Cpu).unwrap();
        let weight = Tensor::arange(0f32, c as f32, &Device::Cpu)
            .unwrap()
            .affine(0.1, 0.5)
            .unwrap();
        let bias = Tensor::arange(0f32, c as f32, &Device::Cpu)
            .unwrap()
            .affine(-0.05, 0.2)
            .unwrap();
        let norm = GroupNorm {
            inner: nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, 1e-6).unwrap(),
            weight,
            bias,
            groups,
            eps: 1e-6,
        };
        let diff = |a: Tensor, b: Tensor| refact_testkit::max_abs_diff(&a, &b);
        let reference = norm.inner.forward(&xs).unwrap();
        assert!(diff(norm.forward(&xs).unwrap(), reference.clone()) < 1e-5);
        let reference = nn::ops::silu(&reference).unwrap();
        assert!(diff(norm.forward_silu(&xs).unwrap(), reference.clone()) < 1e-5);

        // The input's own statistics, summed in two halves and given back: the same
        // output, on the CPU kernel and on the tensor-operation path (f64 input).
        let mut sums = norm.group_sums(&xs.narrow(2, 0, 2).unwrap()).unwrap();
        sums.add(&norm.group_sums(&xs.narrow(2, 2, h - 2).unwrap()).unwrap());
        let own = sums.statistics();
        let given = norm.forward_with_statistics(&xs, &own, true).unwrap();
        assert!(diff(given, reference.clone()) < 1e-5);
        let as_f64 = xs.to_dtype(DType::F64).unwrap();
        let norm_f64 = GroupNorm {
            weight: norm.weight.to_dtype(DType::F64).unwrap(),
            bias: norm.bias.to_dtype(DType::F64).unwrap(),
            ..norm.clone()
        };
        // The CPU kernel's sums are the tensor-operation path's (which f64 input takes).
        let kernel = norm.group_sums(&xs).unwrap();
        let tensor_ops = norm_f64.group_sums(&as_f64).unwrap();
        assert_eq!(kernel.count, tensor_ops.count);
        for (a, b) in kernel.sum.iter().zip(&tensor_ops.sum) {
            assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "sum {a} vs {b}");
        }
        for (a, b) in kernel.sum_of_squares.iter().zip(&tensor_ops.sum_of_squares) {
            assert!(
                (a - b).abs() < 1e-9 * b.abs().max(1.0),
                "squares {a} vs {b}"
            );
        }
        let other_path = norm_f64
            .forward_with_statistics(&as_f64, &own, true)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert!(diff(other_path, reference) < 1e-5);

        // Other statistics give another output: they are used, not recomputed.
        let shifted = GroupStatistics {
            mean: own.mean.iter().map(|m| m + 0.5).collect(),
            variance: own.variance.clone(),
        };
        let moved = norm.forward_with_statistics(&xs, &shifted, false).unwrap();
        assert!(diff(moved, norm.forward(&xs).unwrap()) > 0.1);
    }
}
