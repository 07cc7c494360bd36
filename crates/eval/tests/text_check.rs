//! The text-space check on the fixture's text encoder with the golden ReFACT edit: the
//! edited encoder must give the golden edited pooler outputs, and each test must compare
//! the edited prompt with the unedited encoder's reference texts.

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::TextEncoderId;
use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::model::TextModel;
use refact_eval::dataset::{EvalCase, Negative, Positive};
use refact_eval::text_check::{check_edit, EncodersAt, TextRepresentations};
use refact_testkit::{fixture, fixture_dir, golden_json_in, goldens, goldens_in};
use std::sync::Arc;

fn case() -> EvalCase {
    EvalCase {
        row: 1,
        kind: None,
        edit_prompt: "The Prince of Wales".into(),
        source: "Prince Charles".into(),
        target: "Prince William".into(),
        oracle: None,
        positives: vec![Positive {
            prompt: "The Prince of Wales in the park".into(),
            old: "Prince Charles in the park".into(),
            new: "Prince William in the park".into(),
            oracle: None,
        }],
        negatives: vec![Negative {
            prompt: "a photo of a cat".into(),
            new: "a photo of Prince William".into(),
        }],
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

fn row(t: &Tensor, i: usize) -> Vec<f32> {
    t.get(i)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn edited_prompts_are_compared_with_unedited_references() {
    let g = goldens();
    let model = TextModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    let vec = |k: &str| {
        g[k].to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let delta = Delta {
        encoder: refact_engine::deltas::TextEncoderId::Text,
        layer: 7,
        rank: 1,
        u: vec("refact.u"),
        v: vec("refact.v"),
    };
    let parent = DeltaSet::empty();
    let edited = parent.with(Arc::new(delta));

    // The edited encoder is the golden one: eval_prompts 0, 3 and 4 are this case's
    // edit prompt, positive and negative.
    let golden_edited = &g["refact.edited_pooler_output"];
    let c = case();
    let queries = vec![
        c.edit_prompt.clone(),
        c.positives[0].prompt.clone(),
        c.negatives[0].prompt.clone(),
    ];
    let ours = EncodersAt {
        models: &[&model],
        deltas: &edited,
    }
    .encode(&queries)
    .unwrap();
    for (q, golden_row) in ours.iter().zip([0, 3, 4]) {
        let err = l2(q, &row(golden_edited, golden_row));
        assert!(
            err < 1e-4,
            "edited pooler output differs from the golden by {err}"
        );
    }

    // References by the unedited encoder.
    let unedited = EncodersAt {
        models: &[&model],
        deltas: &parent,
    };
    let refs = unedited
        .encode(&[
            c.target.clone(),
            c.source.clone(),
            c.positives[0].new.clone(),
            c.positives[0].old.clone(),
            c.negatives[0].prompt.clone(),
            c.negatives[0].new.clone(),
        ])
        .unwrap();
    let tests = check_edit(&[&model], &parent, &edited, &c).unwrap();
    let close = |got: f32, want: f32| (got - want).abs() < 1e-4;
    assert!(close(tests.efficacy.wanted, -l2(&ours[0], &refs[0])));
    assert!(close(tests.efficacy.other, -l2(&ours[0], &refs[1])));
    assert!(close(tests.generality[0].wanted, -l2(&ours[1], &refs[2])));
    assert!(close(tests.generality[0].other, -l2(&ours[1], &refs[3])));
    assert!(close(tests.specificity[0].wanted, -l2(&ours[2], &refs[4])));
    assert!(close(tests.specificity[0].other, -l2(&ours[2], &refs[5])));

    // With no edit the edit prompt's own encoding is used: the check sees the same
    // prompt representation on both sides, so nothing is nearer than before.
    let none = check_edit(&[&model], &parent, &parent, &c).unwrap();
    let before = unedited.encode(&queries).unwrap();
    assert!(close(none.efficacy.wanted, -l2(&before[0], &refs[0])));
}

/// SDXL: the reference's edit of the second encoder alone. The check reads both encoders
/// as the pipeline does (the first encoder's part unchanged, the second's moved), so the
/// edit is seen; the first encoder alone would measure the unedited model.
#[test]
fn an_sdxl_edit_of_the_second_encoder_is_measured_where_the_pipeline_reads_it() {
    let dir = fixture("tiny-sdxl");
    let (g, json) = (goldens_in(&dir), golden_json_in(&dir));
    let models = TextModel::load_all(&dir, &Device::Cpu).unwrap();
    let [first, second] = [&models[0], &models[1]];
    let case_json = &json["text_2.refact"];
    assert_eq!(case_json["encoder"], "text_2");
    let vector = |key: &str| -> Vec<f32> {
        g[key]
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let parent = DeltaSet::empty();
    let edited = parent.with(Arc::new(Delta {
        encoder: TextEncoderId::Text2,
        layer: case_json["hparams"]["layer"].as_u64().unwrap() as usize,
        rank: 1,
        u: vector("text_2.refact.u"),
        v: vector("text_2.refact.v"),
    }));
    let request = &case_json["request"];
    let text = |k: &str| request[k].as_str().unwrap().to_string();
    let c = EvalCase {
        edit_prompt: text("prompt"),
        source: text("source"),
        target: text("target"),
        positives: Vec::new(),
        negatives: Vec::new(),
        ..case()
    };

    // The pipeline's reading is the first encoder's representation, then the second's.
    let both = [first, second];
    let prompt = [c.edit_prompt.clone()];
    let read = |models: &[&TextModel], deltas: &DeltaSet| {
        EncodersAt { models, deltas }
            .encode(&prompt)
            .unwrap()
            .remove(0)
    };
    let joined = read(&both, &edited);
    let (first_part, second_part) = (read(&[first], &edited), read(&[second], &edited));
    assert_eq!(joined, [first_part.clone(), second_part.clone()].concat());
    // The first encoder ignores the second's delta; the second's part moved.
    assert_eq!(first_part, read(&[first], &parent));
    let moved = l2(&second_part, &read(&[second], &parent));
    assert!(moved > 1e-3, "the second encoder's part moved by {moved}");

    // Measured on both encoders the edit prompt comes nearer its target; measured on the
    // first alone nothing happened.
    let unedited = check_edit(&both, &parent, &parent, &c).unwrap();
    let tests = check_edit(&both, &parent, &edited, &c).unwrap();
    assert!(
        tests.efficacy.wanted > unedited.efficacy.wanted + 1e-3,
        "distance to the target: {} edited vs {} unedited",
        -tests.efficacy.wanted,
        -unedited.efficacy.wanted
    );
    let first_only = check_edit(&[first], &parent, &edited, &c).unwrap();
    let first_unedited = check_edit(&[first], &parent, &parent, &c).unwrap();
    assert_eq!(first_only.efficacy.wanted, first_unedited.efficacy.wanted);
}
