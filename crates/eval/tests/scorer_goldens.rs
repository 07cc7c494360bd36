//! The CLIP scorer against the `scorer.*` goldens of the fixture (FIXTURE.md, "Scorer").

use candle_core::{DType, Device, Tensor};
use refact_eval::Scorer;
use refact_testkit::{golden_json, goldens, max_abs_diff, scorer_dir};

fn scorer() -> Scorer {
    Scorer::load(&scorer_dir(), &Device::Cpu, DType::F32).expect("scorer loads")
}

fn golden_texts() -> Vec<String> {
    golden_json()["scorer"]["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// The golden uint8 image [64, 64, 3] as an RgbImage.
fn golden_image(g: &std::collections::HashMap<String, Tensor>) -> image::RgbImage {
    let t = &g["scorer.image_uint8"];
    let (h, w, _) = t.dims3().unwrap();
    let bytes: Vec<u8> = t
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| u8::try_from(v).unwrap())
        .collect();
    image::RgbImage::from_raw(w as u32, h as u32, bytes).unwrap()
}

#[test]
fn pixel_values_match_clip_preprocessing_within_0_05() {
    let g = goldens();
    let pixels = scorer().pixel_values(&golden_image(&g)).unwrap();
    let err = max_abs_diff(&pixels, &g["scorer.pixel_values"]);
    eprintln!("scorer.pixel_values max abs error {err:.2e}");
    assert!(err < 0.05, "pixel values differ by {err}");
}

#[test]
fn input_ids_match_exactly() {
    let g = goldens();
    let ids = scorer().tokenize(&golden_texts()).unwrap();
    let want = g["scorer.input_ids"].to_dtype(DType::U32).unwrap();
    assert_eq!(
        ids.to_vec2::<u32>().unwrap(),
        want.to_vec2::<u32>().unwrap()
    );
}

#[test]
fn embeddings_and_logits_match_from_golden_pixels_within_1e_4() {
    let g = goldens();
    let s = scorer();
    let ids = g["scorer.input_ids"].to_dtype(DType::U32).unwrap();
    let out = s.score_pixels(&g["scorer.pixel_values"], &ids).unwrap();
    let errs = [
        (
            "image_embeds",
            max_abs_diff(&out.image_embeds, &g["scorer.image_embeds"]),
        ),
        (
            "text_embeds",
            max_abs_diff(&out.text_embeds, &g["scorer.text_embeds"]),
        ),
        (
            "logits_per_image",
            max_abs_diff(&out.logits_per_image, &g["scorer.logits_per_image"]),
        ),
    ];
    for (name, err) in errs {
        eprintln!("scorer.{name} max abs error {err:.2e}");
        assert!(err < 1e-4, "{name} differs by {err}");
    }
}

#[test]
fn score_from_the_image_ranks_texts_as_the_golden_does() {
    // End to end from bytes: preprocessing may differ by a few byte levels, so compare the
    // logits loosely and the ranking exactly.
    let g = goldens();
    let scores = scorer().score(&golden_image(&g), &golden_texts()).unwrap();
    let want = g["scorer.logits_per_image"]
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = &scores.logits_per_image;
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 0.05, "logit {a} vs golden {b}");
    }
    let rank = |v: &[f32]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[j].partial_cmp(&v[i]).unwrap());
        idx
    };
    assert_eq!(rank(got), rank(&want));
    let norms = scores
        .text_embeds
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
}

#[test]
fn a_text_without_end_of_text_is_refused() {
    let s = scorer();
    let ids = Tensor::new(&[[49406u32, 320, 1125]], &Device::Cpu).unwrap();
    assert!(s.text_embeds_from_ids(&ids).is_err());
}
