//! `refact score` end to end: the fixture scorer, the golden image written as a PNG, and
//! the safetensors file the command writes, checked against the `scorer.*` goldens.

use candle_core::DType;
use refact_testkit::{goldens, max_abs_diff, scorer_dir};
use std::process::Command;

#[test]
fn score_writes_normalised_embeddings_and_logits_matching_the_goldens() {
    let g = goldens();
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
        .arg(scorer_dir())
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

    let s = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
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
