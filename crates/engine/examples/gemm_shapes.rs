//! The linear layers' products at SDXL's transformer shapes, `x · Wᵀ` through candle's
//! matmul (the `gemm` crate), in GF/s, with the weight as a checkpoint stores it, read
//! through a transposed view: how `RowLinear` ran before it kept a contiguous [in, out]
//! copy on the CPU. `tools/bench/linear_shapes.py` measures PyTorch's `linear` on the
//! same shapes; docs/PERFORMANCE.md compares them, and says why these figures, each on a
//! weight just used, missed what a UNet step pays for packing its weights.
//!
//!     cargo run --release -p refact-engine --example gemm_shapes
//!
//! Build it with --release, as the benches are: a debug build of a program that calls
//! `gemm` directly measured a third of this speed.
//! Each cell is the median of 7 runs; each row has 3 rounds, to show the machine's noise.

use candle_core::{Device, Tensor};
use std::time::Instant;

/// (rows m, inner k, outputs n): SDXL's lowest level at 256 px (64 positions an image),
/// its feed-forward, and larger row counts for comparison.
const SHAPES: [(usize, usize, usize); 6] = [
    (64, 1280, 1280),
    (64, 1280, 10240),
    (64, 5120, 1280),
    (128, 1280, 10240),
    (256, 1280, 10240),
    (1024, 640, 5120),
];

fn median_seconds(mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

fn main() -> candle_core::Result<()> {
    refact_engine::device::pin_matmul_thread_count();
    println!(
        "candle matmul (gemm crate), f32, {} threads, GF/s (3 rounds)",
        candle_core::utils::get_num_threads()
    );
    println!("| m | k | n | x · Wᵀ |");
    println!("|---|---|---|---|");
    for (m, k, n) in SHAPES {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?; // [n, k], as stored
        let w_t = w.t()?;
        let flops = 2.0 * (m * k * n) as f64;
        let rounds: Vec<String> = (0..3)
            .map(|_| {
                let seconds = median_seconds(|| {
                    x.matmul(&w_t).expect("matmul");
                });
                format!("{:.0}", flops / seconds / 1e9)
            })
            .collect();
        println!("| {m} | {k} | {n} | {} |", rounds.join(", "));
    }
    Ok(())
}
