//! Tiled VAE decoding through the public API, on the fixtures' VAEs: a latent that fits in
//! a tile is decoded whole (the same bits), a larger one in tiles, and how far that is from
//! the whole decode is printed (docs/PERFORMANCE.md quotes it; the bound here only
//! catches a broken tiling, which is ~1 off).

use candle_core::{DType, Device, Tensor};
use refact_engine::vae::{Vae, VaeTiling};
use refact_testkit::{max_abs_diff, mean_abs_diff, test_each_fixture};
use std::path::Path;

fn tiled_decoding_stays_near_the_whole_image(fixture: &Path) {
    let mut vae = Vae::load(fixture, &Device::Cpu, DType::F32).unwrap();
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 48, 40), &Device::Cpu).unwrap();
    let whole = vae.decode(&latents).unwrap();
    vae.set_tiling(VaeTiling::with_tile(48));
    let same = max_abs_diff(&vae.decode(&latents).unwrap(), &whole);
    assert_eq!(same, 0.0, "a latent that fits in one tile is decoded whole");

    vae.set_tiling(VaeTiling::with_tile(16));
    let tiled = vae.decode(&latents).unwrap();
    assert_eq!(tiled.dims(), whole.dims());
    let max = max_abs_diff(&tiled, &whole);
    let mean = mean_abs_diff(&tiled, &whole);
    eprintln!(
        "{}: tiles of 16 over 48×40: max {max:.3e}, mean {mean:.3e}",
        fixture.display()
    );
    assert!(mean < 0.05, "mean deviation {mean}");
}

test_each_fixture!(tiled_decoding_stays_near_the_whole_image);
