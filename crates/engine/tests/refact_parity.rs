//! ReFACT against the reference implementation (make_fixture.py `refact`) on the
//! fixture: statistics, k, u, v, target_init, δ, iteration counts, the early stop, a
//! sequential second edit, and the edited encoder's outputs.

// Where the fixture is, the goldens, tensor comparisons.
use refact_testkit as common;

use candle_core::{Device, IndexOp, Tensor};
use refact_engine::deltas::DeltaSet;
use refact_engine::model::TextModel;
use refact_engine::refact::{
    compute_edit, Corpus, EditOutcome, EditRequest, HyperParams, LayerStatistics,
};
use refact_engine::text_encoder::{Fc2Hook, Mode};
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

fn model() -> &'static TextModel {
    static MODEL: OnceLock<TextModel> = OnceLock::new();
    MODEL.get_or_init(|| TextModel::load(&common::fixture_dir(), &Device::Cpu).unwrap())
}

/// C at layer 7 over the first 2000 captions, as the reference computed it.
fn stats() -> &'static LayerStatistics {
    static STATS: OnceLock<LayerStatistics> = OnceLock::new();
    STATS.get_or_init(|| {
        let m = model();
        let sample = Corpus::Builtin.captions(2000).unwrap();
        LayerStatistics::compute(
            &m.encoder,
            &m.tokenizer,
            7,
            &sample,
            &m.fingerprint,
            &mut |_, _| true,
        )
        .unwrap()
    })
}

fn request(key: &str) -> EditRequest {
    let json = common::golden_json();
    let req = &json[key]["request"];
    let hp = &json[key]["hparams"];
    EditRequest {
        prompt: req["prompt"].as_str().unwrap().into(),
        subject: Some(req["subject"].as_str().unwrap().into()),
        source: req["source"].as_str().unwrap().into(),
        target: req["target"].as_str().unwrap().into(),
        contrastive: req["negatives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().into())
            .collect(),
        layer: Some(hp["layer"].as_u64().unwrap() as usize),
        hparams: HyperParams {
            lr: hp["lr"].as_f64().unwrap(),
            max_steps: hp["max_steps"].as_u64().unwrap() as usize,
            prob_threshold: hp["prob_threshold"].as_f64().unwrap(),
            weight_decay: hp["weight_decay"].as_f64().unwrap(),
            clamp_factor: hp["clamp_norm_factor"].as_f64().unwrap(),
        },
    }
}

fn edit(key: &str, base: &DeltaSet) -> EditOutcome {
    let m = model();
    let validated = request(key)
        .validate(&m.tokenizer, m.encoder.num_layers())
        .unwrap();
    compute_edit(
        &m.encoder,
        &m.tokenizer,
        stats(),
        &validated,
        base,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap()
}

fn main_edit() -> &'static EditOutcome {
    static EDIT: OnceLock<EditOutcome> = OnceLock::new();
    EDIT.get_or_init(|| edit("refact", &DeltaSet::empty()))
}

fn vector(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap()
}

fn assert_cosine(name: &str, ours: &[f32], golden: &Tensor) {
    let cos = common::cosine(&vector(ours), golden);
    eprintln!("{name}: cosine {cos:.6}");
    assert!(cos > 0.999, "{name}: cosine {cos} to the golden vector");
}

fn golden_steps(key: &str) -> usize {
    common::golden_json()[key]["steps"].as_u64().unwrap() as usize
}

#[test]
fn second_moment_matches_the_reference() {
    let s = stats();
    let golden = common::goldens()["refact.mom2"]
        .to_dtype(candle_core::DType::F64)
        .unwrap();
    let ours = s.mom2_tensor().unwrap();
    let scale = golden
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let err = common::max_abs_diff(&ours, &golden) as f64 / scale;
    eprintln!("mom2: max relative error {err:e}, {} tokens", s.tokens);
    assert!(
        err < 1e-4,
        "mom2 off by {err} (relative to its largest entry)"
    );
    assert_eq!(
        s.tokens as u64,
        common::golden_json()["refact"]["covariance"]["tokens"]
            .as_u64()
            .unwrap()
    );
}

#[test]
fn main_edit_matches_the_reference_vectors_and_iteration_count() {
    let e = main_edit();
    let g = common::goldens();
    assert_cosine("k", &e.vectors.key, &g["refact.k"]);
    assert_cosine("u", &e.delta.u, &g["refact.u"]);
    assert_cosine("v", &e.delta.v, &g["refact.v"]);
    assert_cosine(
        "target_init",
        &e.vectors.target_init,
        &g["refact.target_init"],
    );
    assert_cosine("delta", &e.vectors.delta, &g["refact.delta"]);
    assert_eq!(e.metrics.iterations, golden_steps("refact"));
    let golden_probs = common::golden_json()["refact"]["probs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(e.metrics.probabilities.len(), golden_probs.len());
    let first = golden_probs[0].as_f64().unwrap();
    assert!(
        (e.metrics.probabilities[0] - first).abs() < 1e-4,
        "first probability {} vs {first}",
        e.metrics.probabilities[0]
    );
}

#[test]
fn early_stop_takes_the_reference_number_of_steps() {
    let e = edit("refact_early", &DeltaSet::empty());
    let g = common::goldens();
    assert_eq!(e.metrics.iterations, golden_steps("refact_early"));
    assert!(e.metrics.converged);
    assert_cosine("early u", &e.delta.u, &g["refact_early.u"]);
    assert_cosine("early v", &e.delta.v, &g["refact_early.v"]);
}

fn assert_rows_close(name: &str, ours: &Tensor, golden: &Tensor) {
    let err = common::max_abs_diff(ours, golden);
    let rows = golden.dim(0).unwrap();
    for r in 0..rows {
        let cos = common::cosine(&ours.i(r).unwrap(), &golden.i(r).unwrap());
        assert!(cos > 0.999, "{name} row {r}: cosine {cos}");
    }
    eprintln!("{name}: max abs err {err:e}");
}

fn eval_prompts() -> Vec<String> {
    common::golden_json()["refact"]["eval_prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn edited_encoder_outputs_match_the_reference_for_versions_1_and_2() {
    let m = model();
    let g = common::goldens();
    let prompts = eval_prompts();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let v1 = DeltaSet::empty().with(Arc::new(main_edit().delta.clone()));
    let out1 = m.encoder.encode_texts(&m.tokenizer, &texts, &v1).unwrap();
    assert_rows_close(
        "version 1 pooler",
        &out1.pooler_output,
        &g["refact.edited_pooler_output"],
    );

    // The second edit is computed on the reference's version 1 (its u, v), with the same
    // statistics, so that this checks the sequential computation itself.
    let golden_v1 = refact_engine::deltas::Delta {
        layer: 7,
        u: g["refact.u"].to_vec1().unwrap(),
        v: g["refact.v"].to_vec1().unwrap(),
    };
    let second = edit("refact_seq2", &DeltaSet::empty().with(Arc::new(golden_v1)));
    assert_eq!(second.metrics.iterations, golden_steps("refact_seq2"));
    assert_cosine("seq2 u", &second.delta.u, &g["refact_seq2.u"]);
    assert_cosine("seq2 v", &second.delta.v, &g["refact_seq2.v"]);
    let v2 = v1.with(Arc::new(second.delta.clone()));
    let out2 = m.encoder.encode_texts(&m.tokenizer, &texts, &v2).unwrap();
    assert_rows_close(
        "version 2 pooler",
        &out2.pooler_output,
        &g["refact_seq2.edited_pooler_output"],
    );
}

/// Captures fc2's output at the hooked layer.
struct CaptureOutput(Option<Tensor>);

impl Fc2Hook for CaptureOutput {
    fn fc2(&mut self, _input: &Tensor, output: Tensor) -> candle_core::Result<Tensor> {
        self.0 = Some(output.clone());
        Ok(output)
    }
}

#[test]
fn after_the_insert_the_edited_weight_maps_the_key_to_target_init_plus_delta() {
    let m = model();
    let e = main_edit();
    let v1 = DeltaSet::empty().with(Arc::new(e.delta.clone()));
    let prepared = v1.prepare(m.encoder.num_layers(), &Device::Cpu).unwrap();
    let ids = m
        .encoder
        .padded_ids(&m.tokenizer, &["The Prince of Wales"])
        .unwrap();
    let hidden = m.encoder.embed(&ids).unwrap();
    let mut capture = CaptureOutput(None);
    m.encoder
        .run_layers(
            &hidden,
            0..8,
            &prepared,
            Mode::Inference,
            Some((7, &mut capture)),
        )
        .unwrap();
    let index = common::golden_json()["refact"]["lookup_index"]
        .as_u64()
        .unwrap() as usize;
    let written = capture.0.unwrap().i((0, index)).unwrap();
    let expected: Vec<f32> = e
        .vectors
        .target_init
        .iter()
        .zip(&e.vectors.delta)
        .map(|(t, d)| t + d)
        .collect();
    let err = common::max_abs_diff(&written, &vector(&expected));
    eprintln!("W k vs target_init + delta: max err {err:e}");
    assert!(err < 1e-4, "W k differs from target_init + δ by {err}");
}

#[test]
fn cancelling_stops_within_one_iteration() {
    let m = model();
    let validated = request("refact")
        .validate(&m.tokenizer, m.encoder.num_layers())
        .unwrap();
    let mut seen = 0;
    let result = compute_edit(
        &m.encoder,
        &m.tokenizer,
        stats(),
        &validated,
        &DeltaSet::empty(),
        &mut |report| {
            seen += 1;
            if report.iteration == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert!(matches!(result, Err(refact_engine::EngineError::Cancelled)));
    assert_eq!(seen, 4);
}
