//! `refact score` end to end: the fixture scorer, the golden image written as a PNG, and
//! the safetensors file the command writes, checked against the `scorer.*` goldens.

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;
use std::process::Command;

fn fixture_dir() -> PathBuf {
    std::env::var_os("REFACT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
        .join("fixtures/tiny-sd")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

#[test]
fn score_writes_normalised_embeddings_and_logits_matching_the_goldens() {
    let g = candle_core::safetensors::load(fixture_dir().join("golden.safetensors"), &Device::Cpu)
        .unwrap();
    let img = &g["scorer.image_uint8"];
    let (h, w, _) = img.dims3().unwrap();
    let bytes: Vec<u8> = img
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("cat.png");
    image::RgbImage::from_raw(w as u32, h as u32, bytes)
        .unwrap()
        .save(&png)
        .unwrap();
    let out = dir.path().join("scores.safetensors");
    let texts = [
        "a photo of a cat",
        "a photo of a dog",
        "Prince William",
        "Prince Charles",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refact"));
    cmd.arg("score")
        .arg("--scorer")
        .arg(fixture_dir().join("clip-scorer"))
        .arg("--image")
        .arg(&png)
        .arg("--out")
        .arg(&out);
    for t in texts {
        cmd.arg("--text").arg(t);
    }
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(stdout.lines().count(), texts.len(), "{stdout}");

    let s = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(s["image_embeds"].dims(), g["scorer.image_embeds"].dims());
    assert_eq!(s["text_embeds"].dims(), g["scorer.text_embeds"].dims());
    assert_eq!(s["logits_per_image"].dims(), &[1, texts.len()]);
    // Text embeddings do not depend on the image: they match the goldens tightly.
    let text_err = max_abs_diff(&s["text_embeds"], &g["scorer.text_embeds"]);
    assert!(text_err < 1e-4, "text_embeds differ by {text_err}");
    // From PNG bytes the preprocessing may differ by a byte level here and there.
    let logit_err = max_abs_diff(&s["logits_per_image"], &g["scorer.logits_per_image"]);
    assert!(logit_err < 0.05, "logits differ by {logit_err}");
}

#[test]
fn score_without_a_text_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_refact"))
        .args(["score", "--scorer", "x", "--image", "y.png", "--out"])
        .arg(dir.path().join("o.safetensors"))
        .output()
        .unwrap();
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("--text"));
}
