//! Smoke test for a CUDA build, and the first thing `scripts/gpu-check.sh` runs on the
//! GPU machine: cuBLAS matrix products and the candle kernels the pipeline leans on
//! (compiled to PTX here, loaded by the driver there) run on the GPU, and each result is
//! compared with the same operation on the CPU. Then it times large matrix products.
//!
//! ```text
//! cargo run --release --features cuda -p refact-engine --example cuda_matmul [-- cuda:0]
//! ```
//!
//! Exits non-zero when the device cannot be opened or any result differs from the CPU's
//! by more than its tolerance (relative to the largest magnitude of the CPU result).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use refact_engine::device::parse_device;
use std::time::Instant;

fn main() -> Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cuda:0".to_string());
    let gpu = parse_device(&name).with_context(|| format!("opening device `{name}`"))?;
    if !gpu.is_cuda() {
        bail!("`{name}` is not a CUDA device");
    }
    println!("device {name}: opened");

    let failures = run_checks(&gpu)?;
    time_matmuls(&gpu)?;
    if failures > 0 {
        bail!("{failures} check(s) differ from the CPU");
    }
    println!("all checks match the CPU");
    Ok(())
}

/// Runs every check on the CPU and the GPU; returns how many disagree.
fn run_checks(gpu: &Device) -> Result<usize> {
    let cpu = Device::Cpu;
    let mut failures = 0;
    let mut report = |name: &str, on_gpu: Tensor, on_cpu: Tensor, tolerance: f32| -> Result<()> {
        let error = relative_error(&on_gpu, &on_cpu)?;
        let verdict = if error <= tolerance { "ok" } else { "FAIL" };
        println!("{verdict:>4}  {name:<34} rel. error {error:.2e} (tolerance {tolerance:.0e})");
        if error > tolerance {
            failures += 1;
        }
        Ok(())
    };

    // cuBLAS: plain, batched (attention scores), and half-precision products.
    let a = random(&[256, 384], 1)?;
    let b = random(&[384, 320], 2)?;
    report(
        "matmul f32 256x384x320",
        a.to_device(gpu)?.matmul(&b.to_device(gpu)?)?,
        a.matmul(&b)?,
        1e-4,
    )?;
    let q = random(&[8, 77, 64], 3)?;
    let k = random(&[8, 64, 77], 4)?;
    report(
        "batched matmul f32 8x77x64x77",
        q.to_device(gpu)?.matmul(&k.to_device(gpu)?)?,
        q.matmul(&k)?,
        1e-4,
    )?;
    for (dtype, tolerance) in [(DType::F16, 1e-2), (DType::BF16, 3e-2)] {
        let on_gpu = a.to_device(gpu)?.to_dtype(dtype)?;
        let on_gpu = on_gpu.matmul(&b.to_device(gpu)?.to_dtype(dtype)?)?;
        report(
            &format!("matmul {dtype:?} 256x384x320"),
            on_gpu,
            a.matmul(&b)?,
            tolerance,
        )?;
    }

    // PTX kernels: convolution, normalisation, softmax, activations, reductions,
    // broadcasting, casts, gathers and upsampling, as the UNet and encoders use them.
    let image = random(&[2, 32, 16, 16], 5)?;
    let kernel = random(&[64, 32, 3, 3], 6)?;
    report(
        "conv2d 3x3 pad 1",
        image
            .to_device(gpu)?
            .conv2d(&kernel.to_device(gpu)?, 1, 1, 1, 1)?,
        image.conv2d(&kernel, 1, 1, 1, 1)?,
        1e-4,
    )?;
    let hidden = random(&[4, 77, 768], 7)?;
    let alpha = random(&[768], 8)?;
    let beta = random(&[768], 9)?;
    let layer_norm = |x: &Tensor, dev: &Device| -> Result<Tensor> {
        let (alpha, beta) = (alpha.to_device(dev)?, beta.to_device(dev)?);
        Ok(candle_nn::ops::layer_norm(
            &x.to_device(dev)?,
            &alpha,
            &beta,
            1e-5,
        )?)
    };
    report(
        "layer_norm 4x77x768",
        layer_norm(&hidden, gpu)?,
        layer_norm(&hidden, &cpu)?,
        1e-4,
    )?;
    let scores = random(&[8, 77, 77], 10)?.affine(4.0, 0.0)?;
    report(
        "softmax_last_dim 8x77x77",
        candle_nn::ops::softmax_last_dim(&scores.to_device(gpu)?)?,
        candle_nn::ops::softmax_last_dim(&scores)?,
        1e-5,
    )?;
    let activations = |x: &Tensor| -> Result<Tensor> {
        Ok(Tensor::cat(&[x.gelu_erf()?, x.silu()?, x.exp()?], 0)?)
    };
    let x = random(&[4096], 11)?.affine(3.0, 0.0)?;
    report(
        "gelu_erf, silu, exp",
        activations(&x.to_device(gpu)?)?,
        activations(&x)?,
        1e-5,
    )?;
    let rows = random(&[64, 1000], 12)?;
    report(
        "sum_keepdim + max over rows",
        reduce(&rows.to_device(gpu)?)?,
        reduce(&rows)?,
        1e-5,
    )?;
    let bias = random(&[1000], 13)?;
    report(
        "broadcast_add + affine",
        rows.to_device(gpu)?
            .broadcast_add(&bias.to_device(gpu)?)?
            .affine(0.5, 1.0)?,
        rows.broadcast_add(&bias)?.affine(0.5, 1.0)?,
        1e-6,
    )?;
    report(
        "cast f32 -> f16 -> f32",
        rows.to_device(gpu)?
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?,
        rows.clone(),
        1e-3,
    )?;
    let table = random(&[49408, 32], 14)?;
    let ids = Tensor::new(&[49406u32, 320, 1125, 539, 320, 2368, 49407], &cpu)?;
    report(
        "index_select (embedding)",
        table
            .to_device(gpu)?
            .index_select(&ids.to_device(gpu)?, 0)?,
        table.index_select(&ids, 0)?,
        0.0,
    )?;
    report(
        "upsample_nearest2d x2",
        image.to_device(gpu)?.upsample_nearest2d(32, 32)?,
        image.upsample_nearest2d(32, 32)?,
        0.0,
    )?;
    Ok(failures)
}

fn reduce(x: &Tensor) -> Result<Tensor> {
    let sum = x.sum_keepdim(D::Minus1)?;
    let max = x.max_keepdim(D::Minus1)?;
    Ok(Tensor::cat(&[sum, max], 1)?)
}

/// Largest absolute difference, relative to the largest magnitude in `expected`.
fn relative_error(actual: &Tensor, expected: &Tensor) -> Result<f32> {
    let actual = actual.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let expected = expected.to_dtype(DType::F32)?;
    if actual.dims() != expected.dims() {
        bail!(
            "shape {:?} differs from {:?}",
            actual.dims(),
            expected.dims()
        );
    }
    let difference = (actual - &expected)?.abs()?.flatten_all()?.max(0)?;
    let scale = expected.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let error = difference.to_scalar::<f32>()? / scale.max(f32::MIN_POSITIVE);
    // A NaN anywhere makes the comparison meaningless: report it as a failure.
    Ok(if error.is_nan() { f32::INFINITY } else { error })
}

/// Uniform values in [-1, 1) from a fixed seed (splitmix64), so every run compares the
/// same inputs without pulling in a random-number crate.
fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let count = shape.iter().product::<usize>();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let values: Vec<f32> = (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // The top 24 bits give an exactly representable f32 in [0, 1).
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Times square products at the sizes where the GPU is busy enough to measure.
fn time_matmuls(gpu: &Device) -> Result<()> {
    const SIZE: usize = 4096;
    const REPEATS: u32 = 20;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let a = random(&[SIZE, SIZE], 21)?.to_device(gpu)?.to_dtype(dtype)?;
        let b = random(&[SIZE, SIZE], 22)?.to_device(gpu)?.to_dtype(dtype)?;
        for _ in 0..3 {
            a.matmul(&b)?;
        }
        gpu.synchronize()?;
        let start = Instant::now();
        let mut last = a.matmul(&b)?;
        for _ in 1..REPEATS {
            last = a.matmul(&b)?;
        }
        gpu.synchronize()?;
        let seconds = start.elapsed().as_secs_f64() / f64::from(REPEATS);
        let flops = 2.0 * (SIZE as f64).powi(3);
        // Reading one element back proves the products really ran.
        let corner = last.i((0, 0))?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        println!(
            "time  matmul {dtype:?} {SIZE}^3: {:.3} ms, {:.1} TFLOP/s (c[0,0] = {corner:.3})",
            seconds * 1e3,
            flops / seconds / 1e12
        );
    }
    Ok(())
}
