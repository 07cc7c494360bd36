//! The text-space check on the fixture's text encoder with the golden ReFACT edit: the
//! edited encoder must give the golden edited pooler outputs, and each test must compare
//! the edited prompt with the unedited encoder's reference texts.

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::model::TextModel;
use refact_eval::dataset::{EvalCase, Negative, Positive};
use refact_eval::text_check::{check_edit, EncoderAt, TextRepresentations};
use refact_testkit::{fixture_dir, goldens};
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
    let ours = EncoderAt {
        model: &model,
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
    let unedited = EncoderAt {
        model: &model,
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
    let tests = check_edit(&model, &parent, &edited, &c).unwrap();
    let close = |got: f32, want: f32| (got - want).abs() < 1e-4;
    assert!(close(tests.efficacy.wanted, -l2(&ours[0], &refs[0])));
    assert!(close(tests.efficacy.other, -l2(&ours[0], &refs[1])));
    assert!(close(tests.generality[0].wanted, -l2(&ours[1], &refs[2])));
    assert!(close(tests.generality[0].other, -l2(&ours[1], &refs[3])));
    assert!(close(tests.specificity[0].wanted, -l2(&ours[2], &refs[4])));
    assert!(close(tests.specificity[0].other, -l2(&ours[2], &refs[5])));

    // With no edit the edit prompt's own encoding is used: the check sees the same
    // prompt representation on both sides, so nothing is nearer than before.
    let none = check_edit(&model, &parent, &parent, &c).unwrap();
    let before = unedited.encode(&queries).unwrap();
    assert!(close(none.efficacy.wanted, -l2(&before[0], &refs[0])));
}
