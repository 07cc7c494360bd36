//! `refact generate`, `edit`, `encode` and `eval` on the SDXL fixture (tests/fixtures/tiny-sdxl):
//! the image and the conditioning match diffusers', and an edit writes one delta per text
//! encoder, which `encode` then applies.

use candle_core::{Device, Tensor};
use refact_testkit::{fixture, goldens_in, max_abs_diff, max_scaled_diff};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

fn refact(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_refact"))
        .args(args)
        .arg("--model")
        .arg(fixture("tiny-sdxl"))
        .args(["--device", "cpu", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("run refact");
    assert!(
        output.status.success(),
        "refact {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn generate_with_the_golden_latents_matches_the_diffusers_image() {
    let dir = tempfile::tempdir().unwrap();
    let g = goldens_in(&fixture("tiny-sdxl"));
    let latents = dir.path().join("latents.safetensors");
    let tensors = HashMap::from([("latents".to_string(), g["pipeline.init_latents"].clone())]);
    candle_core::safetensors::save(&tensors, &latents).unwrap();
    let raw = dir.path().join("image.safetensors");
    let png = dir.path().join("image.png");
    #[rustfmt::skip]
    let args = [
        "generate", "--dtype", "f32", "--prompt", "a photo of a cat", "--negative-prompt",
        "blurry", "--steps", "10", "--guidance", "7.5", "--width", "64", "--height", "64",
        "--init-latents", latents.to_str().unwrap(), "--out", png.to_str().unwrap(),
        "--out-raw", raw.to_str().unwrap(),
    ];
    // No --scheduler: the folder's, Euler (SDXL base's file).
    refact(dir.path(), &args);
    let image = load(&raw).remove("image").unwrap();
    let err = max_abs_diff(&image, &g["pipeline.euler.image"]);
    assert!(err < 0.01, "image differs from diffusers' by {err}");
}

#[test]
fn edit_writes_a_delta_per_encoder_and_encode_applies_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edit.safetensors");
    #[rustfmt::skip]
    let edit = refact(dir.path(), &[
        "edit", "--prompt", "The Prince of Wales", "--source", "Prince Charles", "--target",
        "Prince William", "--max-steps", "3", "--corpus-lines", "200", "--out",
        out.to_str().unwrap(),
    ]);
    let metrics: serde_json::Value = serde_json::from_slice(&edit.stdout).unwrap();
    for encoder in ["text", "text_2"] {
        assert_eq!(metrics[encoder]["layer"], 7, "{metrics}");
    }
    let text = dir.path().join("edit.text.safetensors");
    let text_2 = dir.path().join("edit.text_2.safetensors");
    assert!(text.is_file() && text_2.is_file() && !out.exists());

    // The base conditioning is diffusers' (the golden prompts 0 and 1).
    let prompts = refact_testkit::golden_prompts_in(&fixture("tiny-sdxl"));
    let encode = |name: &str, deltas: &[&Path]| -> HashMap<String, Tensor> {
        let path = dir.path().join(name);
        let mut args = vec!["encode", "--out", path.to_str().unwrap()];
        for prompt in &prompts[..2] {
            args.extend(["--prompt", prompt.as_str()]);
        }
        if !deltas.is_empty() {
            args.push("--deltas");
            args.extend(deltas.iter().map(|d| d.to_str().unwrap()));
        }
        refact(dir.path(), &args);
        load(&path)
    };
    let base = encode("base.safetensors", &[]);
    let g = goldens_in(&fixture("tiny-sdxl"));
    for (ours, golden) in [
        ("prompt_embeds", "conditioning.prompt_embeds"),
        ("pooled_prompt_embeds", "conditioning.pooled_prompt_embeds"),
        ("text_2.text_embeds", "text_2.text_embeds"),
        ("penultimate", "text.penultimate"),
    ] {
        let expected = g[golden].narrow(0, 0, 2).unwrap();
        let err = max_scaled_diff(&base[ours], &expected);
        assert!(err < 1e-4, "{ours}: {err} from diffusers' {golden}");
    }
    // Each delta moves its own encoder's half of the context, and only that half.
    let first_width = base["penultimate"].dim(2).unwrap();
    let width = base["prompt_embeds"].dim(2).unwrap();
    let half = |t: &Tensor, second: bool| {
        let (start, len) = if second {
            (first_width, width - first_width)
        } else {
            (0, first_width)
        };
        t.narrow(2, start, len).unwrap()
    };
    for (delta, moved_second) in [(&text, false), (&text_2, true)] {
        let edited = encode("edited.safetensors", &[delta.as_path()]);
        let moved = max_abs_diff(
            &half(&edited["prompt_embeds"], moved_second),
            &half(&base["prompt_embeds"], moved_second),
        );
        let still = max_abs_diff(
            &half(&edited["prompt_embeds"], !moved_second),
            &half(&base["prompt_embeds"], !moved_second),
        );
        assert!(
            moved > 1e-3 && still == 0.0,
            "{}: moved its half by {moved}, the other by {still}",
            delta.display()
        );
    }
}

/// `refact eval` on SDXL: one RoAD row, one seed, scored by the tiny CLIP scorer. Each
/// edit changes both encoders and is kept as two delta files; a rerun over the same
/// output succeeds.
#[test]
fn eval_edits_both_encoders_and_keeps_a_delta_file_per_encoder() {
    let work = tempfile::tempdir().unwrap();
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_refact"))
            .args([
                "eval", "--device", "cpu", "--format", "road", "--seeds", "0..0",
            ])
            .args([
                "--steps",
                "2",
                "--size",
                "64",
                "--limit",
                "1",
                "--max-steps",
                "3",
            ])
            .args(["--corpus-lines", "200", "--model"])
            .arg(fixture("tiny-sdxl"))
            .arg("--data-dir")
            .arg(work.path().join("data"))
            .arg("--scorer")
            .arg(refact_testkit::scorer_dir())
            .arg("--dataset")
            .arg(refact_testkit::data_file("road_sample.csv"))
            .arg("--out")
            .arg(work.path().join("out"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    run();
    let edits: Vec<String> = walk(&work.path().join("out"))
        .into_iter()
        .filter(|name| name.ends_with(".safetensors"))
        .collect();
    assert_eq!(edits.len(), 2, "one delta file per encoder: {edits:?}");
    assert!(
        edits.iter().any(|name| name.contains(".text_2.")),
        "{edits:?}"
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("out/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["rows"].as_array().unwrap().len(), 1);
    assert_eq!(results["rows"][0]["edit"]["layer"], 7);
    run();
}

/// File names under `dir`, recursively.
fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names.extend(walk(&path));
        } else {
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}
