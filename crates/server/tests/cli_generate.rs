//! `refact generate` end to end on the fixture model: the raw image matches diffusers'.

use candle_core::{Device, Tensor};
use refact_testkit::{fixture_dir as tiny_sd, golden, max_abs_diff};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes the golden initial latents as tensor `latents`.
fn write_init_latents(dir: &Path) -> PathBuf {
    let path = dir.join("latents.safetensors");
    let tensors = HashMap::from([("latents".to_string(), golden("pipeline.init_latents"))]);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// `refact generate` on the fixture with the golden settings, plus `extra` arguments.
fn refact_generate(dir: &Path, extra: &[&str]) -> std::process::Output {
    let latents = write_init_latents(dir);
    Command::new(env!("CARGO_BIN_EXE_refact"))
        .args(["generate", "--model"])
        .arg(tiny_sd())
        .args(["--device", "cpu", "--dtype", "f32", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--prompt",
            "a photo of a cat",
            "--negative-prompt",
            "blurry",
        ])
        .args([
            "--steps",
            "10",
            "--guidance",
            "7.5",
            "--width",
            "64",
            "--height",
            "64",
        ])
        .arg("--init-latents")
        .arg(&latents)
        .arg("--out")
        .arg(dir.join("image.png"))
        .arg("--out-raw")
        .arg(dir.join("image.safetensors"))
        .args(extra)
        .output()
        .expect("run refact")
}

fn raw_image(dir: &Path) -> Tensor {
    let mut tensors =
        candle_core::safetensors::load(dir.join("image.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("image").expect("tensor `image`")
}

fn assert_success(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "refact generate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn generate_with_init_latents_matches_the_diffusers_image() {
    let dir = tempfile::tempdir().unwrap();
    let output = refact_generate(dir.path(), &["--scheduler", "ddim"]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("step 10/10"),
        "no progress on stderr: {stderr}"
    );

    let image = raw_image(dir.path());
    assert_eq!(image.dims(), &[64, 64, 3]);
    let err = max_abs_diff(&image, &golden("pipeline.ddim.image"));
    println!("refact generate (ddim) vs diffusers: max abs error {err:.3e}");
    assert!(err < 0.01, "image differs from diffusers by {err}");

    // The PNG header says 64×64 RGB.
    let png = std::fs::read(dir.path().join("image.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 64);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 64);
}

/// `--vae-tile`: a latent (8×8 cells here) within the threshold is decoded whole, still
/// diffusers' image; above it (`--vae-tile 4`) it is decoded in bands, and that is the
/// same image to float rounding.
#[test]
fn vae_tile_decodes_in_bands_only_latents_above_it_and_changes_nothing() {
    let golden_image = golden("pipeline.ddim.image");
    let dir = tempfile::tempdir().unwrap();
    assert_success(&refact_generate(
        dir.path(),
        &["--scheduler", "ddim", "--vae-tile", "8"],
    ));
    let whole = raw_image(dir.path());
    let err = max_abs_diff(&whole, &golden_image);
    assert!(err < 0.01, "whole: differs from diffusers by {err}");

    assert_success(&refact_generate(
        dir.path(),
        &["--scheduler", "ddim", "--vae-tile", "4"],
    ));
    let banded = raw_image(dir.path());
    let from_whole = max_abs_diff(&banded, &whole);
    println!("banded vs whole decode: max abs difference {from_whole:.3e}");
    assert!(
        from_whole < 1e-5,
        "bands: {from_whole} from the whole decode"
    );
}

#[test]
fn without_scheduler_flag_the_model_folders_scheduler_is_used() {
    // The fixture's scheduler_config.json names PNDMScheduler.
    let dir = tempfile::tempdir().unwrap();
    let output = refact_generate(dir.path(), &[]);
    assert_success(&output);
    let err = max_abs_diff(&raw_image(dir.path()), &golden("pipeline.pndm.image"));
    println!("refact generate (folder's PNDM) vs diffusers: max abs error {err:.3e}");
    assert!(
        err < 0.01,
        "image differs from diffusers' PNDM run by {err}"
    );
}

#[test]
fn seed_and_init_latents_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = refact_generate(dir.path(), &["--seed", "3"]);
    assert!(!output.status.success());
    assert!(!dir.path().join("image.png").exists());
}
