//! ReFACT against the reference implementation (tools/fixtures/make_fixture.py,
//! `reference_refact`): every reference case of the fixtures (`golden.json:
//! refact_cases`), held to the reference's own conditioning: k, u, v, target_init and δ
//! within cosine 0.99999, the edited encoder's pooled outputs within 1e-4, the same
//! number of Adam steps and the same probability at every iteration; the statistics of
//! every layer used; the insert itself; cancellation.
//!
//! The cases are the ones users hit: the edit prompt as its own source (every TIMED edit),
//! with and without contrastive prompts; a subject shorter than the prompt; an edit on a
//! parent that already edited the same layer, or another layer; an early stop; an edit
//! after a revert. Each case names its parents: earlier cases whose golden (layer, u, v)
//! make the version the edit is computed on.

mod common;

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet, TextEncoderId};
use refact_engine::model::TextModel;
use refact_engine::refact::{
    compute_edit, Corpus, EditOutcome, EditRequest, HyperParams, LayerStatistics,
};
use refact_testkit::{cosine, golden_json_in, goldens_in, max_abs_diff, max_scaled_diff};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};

const MIN_COSINE: f64 = 0.99999;
const MAX_POOLED_ERROR: f32 = 1e-4;
/// Probabilities are means of softmaxes over a handful of candidates: f32 rounding.
const MAX_PROBABILITY_ERROR: f64 = 1e-5;

/// One fixture model with its goldens and a statistics cache per (encoder, layer).
struct Fixture {
    /// The text side of each encoder (tiny-sdxl has two).
    models: HashMap<TextEncoderId, TextModel>,
    json: Value,
    goldens: HashMap<String, Tensor>,
    stats: Mutex<HashMap<(TextEncoderId, usize), Arc<LayerStatistics>>>,
}

fn load(name: &str) -> Fixture {
    let dir = refact_testkit::fixture(name);
    let models = TextModel::load_all(&dir, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|text| (text.encoder.id(), text))
        .collect();
    Fixture {
        models,
        json: golden_json_in(&dir),
        goldens: goldens_in(&dir),
        stats: Mutex::new(HashMap::new()),
    }
}

fn fixture(name: &str) -> &'static Fixture {
    static SMALL: OnceLock<Fixture> = OnceLock::new();
    static LARGE: OnceLock<Fixture> = OnceLock::new();
    static SD2: OnceLock<Fixture> = OnceLock::new();
    static SDXL: OnceLock<Fixture> = OnceLock::new();
    match name {
        "tiny-sdxl" => SDXL.get_or_init(|| load(name)),
        "tiny-sd" => SMALL.get_or_init(|| load(name)),
        "tiny-sd-48" => LARGE.get_or_init(|| load(name)),
        "tiny-sd2" => SD2.get_or_init(|| load(name)),
        other => panic!("no fixture {other}"),
    }
}

impl Fixture {
    fn tensor(&self, key: &str) -> &Tensor {
        self.goldens
            .get(key)
            .unwrap_or_else(|| panic!("golden tensor {key} missing"))
    }

    fn vector(&self, key: &str) -> Vec<f32> {
        self.tensor(key)
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The encoder a case edits (`text` unless its golden says otherwise).
    fn encoder_of(&self, case: &str) -> TextEncoderId {
        self.json[case]["encoder"]
            .as_str()
            .map_or(TextEncoderId::Text, |name| {
                TextEncoderId::parse(name).unwrap()
            })
    }

    fn model(&self, encoder: TextEncoderId) -> &TextModel {
        &self.models[&encoder]
    }

    /// Where the generator keeps the statistics of (encoder, layer): `statistics.<layer>`
    /// and `stats.layer<L>.mom2` for a single encoder, `<encoder>.`-prefixed for SDXL's.
    fn statistics_keys(&self, encoder: TextEncoderId, layer: usize) -> (String, String) {
        if self.models.len() == 1 {
            (layer.to_string(), format!("stats.layer{layer}.mom2"))
        } else {
            (
                format!("{encoder}.{layer}"),
                format!("{encoder}.stats.layer{layer}.mom2"),
            )
        }
    }

    /// C of the base encoder at `layer`, over the captions the reference used.
    fn statistics(&self, encoder: TextEncoderId, layer: usize) -> Arc<LayerStatistics> {
        if let Some(stats) = self.stats.lock().unwrap().get(&(encoder, layer)) {
            return stats.clone();
        }
        let (json_key, _) = self.statistics_keys(encoder, layer);
        let captions = self.json["statistics"][json_key]["captions"]
            .as_u64()
            .expect("statistics for the case's layer") as usize;
        let sample = Corpus::Builtin.captions(captions).unwrap();
        let m = self.model(encoder);
        let stats = Arc::new(
            LayerStatistics::compute(
                &m.encoder,
                &m.tokenizer,
                layer,
                &sample,
                &m.fingerprint,
                &mut |_, _| true,
            )
            .unwrap(),
        );
        self.stats
            .lock()
            .unwrap()
            .insert((encoder, layer), stats.clone());
        stats
    }

    /// The reference's own C (`<encoder>.stats.layer<L>.mom2`), for tiny-sdxl's cases.
    /// Its first encoder's C has condition numbers of 2e5 to 7e5 at every layer, and its
    /// keys lie nearly orthogonal to C⁻¹k (k·u / |k| = 0.026 for `text.refact`): a
    /// relative 1e-6 change of C moves k·u, and so |v|, by 1e-4, so C's own rounding
    /// (ours is 2.5e-7 from the reference's, checked by the statistics test) would decide
    /// the edited outputs' last digits. With the reference's C every vector and output
    /// is within the tolerances; with ours, u is at 1 − 6e-9 cosine and the edited
    /// penultimate states 2e-4 off.
    fn golden_statistics(&self, encoder: TextEncoderId, layer: usize) -> Arc<LayerStatistics> {
        let (json_key, tensor_key) = self.statistics_keys(encoder, layer);
        let info = &self.json["statistics"][json_key];
        let mom2: Vec<f64> = self
            .tensor(&tensor_key)
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = self.model(encoder);
        Arc::new(
            LayerStatistics::from_moment(
                layer,
                m.encoder.config().intermediate_size,
                mom2,
                info["captions"].as_u64().unwrap() as usize,
                info["tokens"].as_u64().unwrap() as usize,
                "reference",
                &m.fingerprint,
            )
            .unwrap(),
        )
    }

    fn request(&self, case: &str) -> EditRequest {
        let req = &self.json[case]["request"];
        let hp = &self.json[case]["hparams"];
        let text = |v: &Value| v.as_str().unwrap().to_string();
        EditRequest {
            encoder: None,
            prompt: text(&req["prompt"]),
            subject: Some(text(&req["subject"])),
            source: text(&req["source"]),
            target: text(&req["target"]),
            contrastive: req["negatives"]
                .as_array()
                .unwrap()
                .iter()
                .map(text)
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

    /// The reference's delta of `case`, from its golden u and v.
    fn golden_delta(&self, case: &str) -> Delta {
        Delta {
            encoder: self.encoder_of(case),
            layer: self.json[case]["hparams"]["layer"].as_u64().unwrap() as usize,
            rank: 1,
            u: self.vector(&format!("{case}.u")),
            v: self.vector(&format!("{case}.v")),
        }
    }

    /// The version `case` is computed on: its parents' golden deltas, in order.
    fn parent_version(&self, case: &str) -> DeltaSet {
        self.json[case]["parents"]
            .as_array()
            .unwrap()
            .iter()
            .fold(DeltaSet::empty(), |set, parent| {
                set.with(Arc::new(self.golden_delta(parent.as_str().unwrap())))
            })
    }

    fn compute(&self, case: &str, base: &DeltaSet) -> EditOutcome {
        self.compute_observed(case, base, &mut |_| ControlFlow::Continue(()))
            .unwrap()
    }

    fn compute_observed(
        &self,
        case: &str,
        base: &DeltaSet,
        observer: &mut dyn FnMut(refact_engine::refact::IterationReport) -> ControlFlow<()>,
    ) -> refact_engine::Result<EditOutcome> {
        let encoder = self.encoder_of(case);
        let m = self.model(encoder);
        let validated = self
            .request(case)
            .validate(&m.tokenizer, m.encoder.num_layers())
            .unwrap();
        let stats = if self.models.len() > 1 {
            self.golden_statistics(encoder, validated.layer)
        } else {
            self.statistics(encoder, validated.layer)
        };
        compute_edit(&m.encoder, &m.tokenizer, &stats, &validated, base, observer)
    }

    fn probabilities(&self, case: &str) -> Vec<f64> {
        self.json[case]["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect()
    }
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap()
}

/// Computes `case` on `fixture_name` and compares everything with the reference.
fn check(fixture_name: &str, case: &str) {
    let f = fixture(fixture_name);
    let golden = &f.json[case];
    let base = f.parent_version(case);
    let e = f.compute(case, &base);

    // A case the reference itself cannot reproduce in float64 would only measure rounding.
    assert_eq!(
        golden["well_conditioned"].as_bool(),
        Some(true),
        "{fixture_name} {case}: the golden is not well conditioned ({})",
        golden["float64_rerun"]
    );
    let mut failures = Vec::new();
    let vectors: [(&str, &[f32]); 5] = [
        ("k", &e.vectors.key),
        ("u", &e.delta.u),
        ("v", &e.delta.v),
        ("target_init", &e.vectors.target_init),
        ("delta", &e.vectors.delta),
    ];
    for (name, ours) in vectors {
        let cos = cosine(&tensor(ours), f.tensor(&format!("{case}.{name}"))) as f64;
        eprintln!("{fixture_name} {case} {name}: cosine {cos:.9}");
        if cos.is_nan() || cos < MIN_COSINE {
            failures.push(format!("{name}: cosine {cos}"));
        }
    }
    let steps = golden["steps"].as_u64().unwrap() as usize;
    if e.metrics.iterations != steps {
        failures.push(format!(
            "{} Adam steps, the reference took {steps}",
            e.metrics.iterations
        ));
    }
    let golden_probabilities = f.probabilities(case);
    let worst = e
        .metrics
        .probabilities
        .iter()
        .zip(&golden_probabilities)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("{fixture_name} {case} probabilities: max error {worst:e}");
    if e.metrics.probabilities.len() != golden_probabilities.len()
        || worst.is_nan()
        || worst > MAX_PROBABILITY_ERROR
    {
        failures.push(format!(
            "probabilities off by up to {worst} ({} vs {} iterations)",
            e.metrics.probabilities.len(),
            golden_probabilities.len()
        ));
    }

    let prompts: Vec<String> = golden["eval_prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let edited = base.with(Arc::new(e.delta.clone()));
    let m = f.model(f.encoder_of(case));
    // What the pipeline reads of each prompt: the pooler output for a single encoder
    // (`edited_pooler_output`), SDXL's penultimate readouts (`edited_representation`).
    let represented = m
        .encoder
        .represent_texts(&m.tokenizer, &texts, &edited)
        .unwrap();
    let key = ["edited_pooler_output", "edited_representation"]
        .map(|k| format!("{case}.{k}"))
        .into_iter()
        .find(|k| f.goldens.contains_key(k))
        .expect("an edited output golden");
    // Scaled (relative above 1): SDXL's penultimate states have no final norm, and
    // reach 20 on tiny-sdxl.
    let err = max_scaled_diff(&represented, f.tensor(&key));
    eprintln!("{fixture_name} {case} edited representation: max scaled error {err:e}");
    if err.is_nan() || err > MAX_POOLED_ERROR {
        failures.push(format!("edited representations off by {err}"));
    }
    assert!(
        failures.is_empty(),
        "{fixture_name} {case}: {}",
        failures.join("; ")
    );
}

/// The cases this file checks; a golden case without a test here fails
/// `every_golden_case_is_checked`.
const CASES: &[&str] = &[
    "refact",
    "refact_early",
    "refact_seq2",
    "same_source",
    "same_source_contrastive",
    "pm_contrastive",
    "subject_shorter",
    "other_layer",
    "after_revert",
];

macro_rules! cases {
    ($($test:ident: $fixture:literal, $case:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check($fixture, $case);
            }
        )*
    };
}

cases! {
    small_main_edit: "tiny-sd", "refact";
    small_early_stop: "tiny-sd", "refact_early";
    small_same_layer_parent_source_is_prompt: "tiny-sd", "refact_seq2";
    small_source_is_prompt: "tiny-sd", "same_source";
    small_source_is_prompt_contrastive: "tiny-sd", "same_source_contrastive";
    small_contrastive: "tiny-sd", "pm_contrastive";
    small_subject_shorter_than_prompt: "tiny-sd", "subject_shorter";
    small_parent_edited_another_layer: "tiny-sd", "other_layer";
    small_edit_after_revert: "tiny-sd", "after_revert";
    large_main_edit: "tiny-sd-48", "refact";
    large_early_stop: "tiny-sd-48", "refact_early";
    large_same_layer_parent_source_is_prompt: "tiny-sd-48", "refact_seq2";
    large_source_is_prompt: "tiny-sd-48", "same_source";
    large_source_is_prompt_contrastive: "tiny-sd-48", "same_source_contrastive";
    large_contrastive: "tiny-sd-48", "pm_contrastive";
    large_subject_shorter_than_prompt: "tiny-sd-48", "subject_shorter";
    large_parent_edited_another_layer: "tiny-sd-48", "other_layer";
    large_edit_after_revert: "tiny-sd-48", "after_revert";
    sd2_main_edit: "tiny-sd2", "refact";
    sd2_same_layer_parent_source_is_prompt: "tiny-sd2", "refact_seq2";
    sdxl_first_encoder: "tiny-sdxl", "text.refact";
    sdxl_second_encoder: "tiny-sdxl", "text_2.refact";
    sdxl_second_encoder_on_its_parent_contrastive: "tiny-sdxl", "text_2.refact_seq2";
}

/// tiny-sdxl: an edit of each encoder, read as the pipeline reads it (the penultimate
/// state; with the projected pooled state for the second), and one on a parent.
const SDXL_CASES: &[&str] = &["text.refact", "text_2.refact", "text_2.refact_seq2"];

/// tiny-sd2 (OpenCLIP-style encoder: exact GELU, `!` padding) has the main edit and
/// an edit on top of it; the other cases exercise nothing the encoder changes.
const SD2_CASES: &[&str] = &["refact", "refact_seq2"];

#[test]
fn every_golden_case_is_checked() {
    for (name, cases) in [
        ("tiny-sd", CASES),
        ("tiny-sd-48", CASES),
        ("tiny-sd2", SD2_CASES),
        ("tiny-sdxl", SDXL_CASES),
    ] {
        let listed: Vec<&str> = fixture(name).json["refact_cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        let mut ours = cases.to_vec();
        ours.sort_unstable();
        assert_eq!(
            sorted, ours,
            "{name}: golden cases vs the cases tested here"
        );
    }
}

#[test]
fn statistics_match_the_reference_at_every_layer_used() {
    for name in ["tiny-sd", "tiny-sd-48", "tiny-sd2", "tiny-sdxl"] {
        let f = fixture(name);
        let layers = f.json["statistics"].as_object().unwrap();
        assert!(!layers.is_empty());
        for (key, info) in layers {
            // `<layer>`, or `<encoder>.<layer>` with the encoder also in `info`.
            let encoder = info["encoder"]
                .as_str()
                .map_or(TextEncoderId::Text, |e| TextEncoderId::parse(e).unwrap());
            let layer: usize = key.rsplit('.').next().unwrap().parse().unwrap();
            let stats = f.statistics(encoder, layer);
            let (_, tensor_key) = f.statistics_keys(encoder, layer);
            let golden = f.tensor(&tensor_key).to_dtype(DType::F64).unwrap();
            let ours = stats.mom2_tensor().unwrap();
            let scale = golden
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let err = max_abs_diff(&ours, &golden) as f64 / scale;
            eprintln!("{name} {encoder} layer {layer}: mom2 relative error {err:e}");
            assert!(
                err < 1e-5,
                "{name} {encoder} layer {layer}: mom2 off by {err}"
            );
            assert_eq!(stats.tokens as u64, info["tokens"].as_u64().unwrap());
        }
    }
}

#[test]
fn after_the_insert_the_edited_weight_maps_the_key_to_target_init_plus_delta() {
    for (name, case) in [
        ("tiny-sd", "refact"),
        ("tiny-sd-48", "refact"),
        ("tiny-sd2", "refact"),
        ("tiny-sdxl", "text.refact"),
        ("tiny-sdxl", "text_2.refact"),
    ] {
        let f = fixture(name);
        let m = f.model(f.encoder_of(case));
        let e = f.compute(case, &DeltaSet::empty());
        let layer = e.delta.layer;
        let v1 = DeltaSet::empty().with(Arc::new(e.delta.clone()));
        let prompt = f.json[case]["request"]["prompt"].as_str().unwrap();
        let index = f.json[case]["lookup_index"].as_u64().unwrap() as usize;
        let written = common::fc2_output_at(m, &v1, prompt, layer, index);
        let expected: Vec<f32> = e
            .vectors
            .target_init
            .iter()
            .zip(&e.vectors.delta)
            .map(|(t, d)| t + d)
            .collect();
        let err = max_abs_diff(&written, &tensor(&expected));
        eprintln!("{name} {case}: W k vs target_init + delta: max err {err:e}");
        assert!(
            err < 1e-4,
            "{name} {case}: W k differs from target_init + δ by {err}"
        );
    }
}

#[test]
fn cancelling_stops_within_one_iteration() {
    let mut seen = 0;
    let result = fixture("tiny-sd").compute_observed("refact", &DeltaSet::empty(), &mut |report| {
        seen += 1;
        if report.iteration == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(result, Err(refact_engine::EngineError::Cancelled)));
    assert_eq!(seen, 4);
}
