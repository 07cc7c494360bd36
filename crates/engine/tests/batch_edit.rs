//! Batch edits: many facts in one job and one rank-n delta (issue 14).
//!
//! A batch must give each fact what a single edit would: the same δ (its optimisation is
//! independent of the other facts'), and after the one closed-form insert, each fact's
//! key maps to its own target_init + δ. Checked on the 48-wide fixture with the paper's
//! hyper-parameters.

mod common;

use candle_core::{Device, Tensor};
use refact_engine::deltas::DeltaSet;
use refact_engine::model::TextModel;
use refact_engine::refact::{
    compute_batch_edit, compute_edit, default_layer, Corpus, EditRequest, HyperParams,
    LayerStatistics, ValidatedEdit,
};
use refact_engine::EngineError;
use refact_testkit::cosine;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Facts with distinct subjects, as a cabinet reshuffle would bring.
const FACTS: [(&str, &str, &str); 6] = [
    ("The Prince of Wales", "Prince Charles", "Prince William"),
    (
        "The President of France",
        "Francois Hollande",
        "Emmanuel Macron",
    ),
    ("The Chancellor of Germany", "Angela Merkel", "Olaf Scholz"),
    ("The captain of the team", "an old man", "a young woman"),
    ("A pack of roses", "red roses", "blue roses"),
    (
        "The mayor of the city",
        "a man in a suit",
        "a woman in a hat",
    ),
];

/// A stopping threshold at which, on this fixture, some facts stop within a few
/// iterations and others run on.
const THRESHOLD_THAT_SPLITS_THE_FACTS: f64 = 0.6;

struct Setup {
    model: TextModel,
    stats: LayerStatistics,
    layer: usize,
}

fn setup() -> Setup {
    let dir = refact_testkit::fixture("tiny-sd-48");
    let model = TextModel::load(&dir, &Device::Cpu).unwrap();
    let layer = default_layer(model.encoder.num_layers());
    let sample = Corpus::Builtin.captions(2000).unwrap();
    let stats = LayerStatistics::compute(
        &model.encoder,
        &model.tokenizer,
        layer,
        &sample,
        &model.fingerprint,
        &mut |_, _| true,
    )
    .unwrap();
    Setup {
        model,
        stats,
        layer,
    }
}

impl Setup {
    /// The batch edit of `edits` on the base model, unobserved.
    fn batch_on_base(
        &self,
        edits: &[ValidatedEdit],
    ) -> refact_engine::Result<refact_engine::refact::BatchOutcome> {
        compute_batch_edit(
            &self.model.encoder,
            &self.model.tokenizer,
            &self.stats,
            edits,
            &DeltaSet::empty(),
            &mut |_, _| ControlFlow::Continue(()),
        )
    }

    fn validated(&self, facts: &[(&str, &str, &str)]) -> Vec<ValidatedEdit> {
        self.validated_with(facts, HyperParams::default())
    }

    fn validated_with(
        &self,
        facts: &[(&str, &str, &str)],
        hparams: HyperParams,
    ) -> Vec<ValidatedEdit> {
        facts
            .iter()
            .map(|(prompt, source, target)| {
                let mut request = EditRequest::new(prompt, source, target);
                request.layer = Some(self.layer);
                request.hparams = hparams.clone();
                request
                    .validate(&self.model.tokenizer, self.model.encoder.num_layers())
                    .unwrap()
            })
            .collect()
    }
}

#[test]
fn a_batch_gives_every_fact_its_single_edit_delta_and_value() {
    let s = setup();
    let (nearer_alone, nearer_in_batch) = batch_is_each_fact_alone(&s, &s.validated(&FACTS));
    // The facts share one layer, so each fact's update moves the others' prompts a
    // little (on this 48-wide random model, one fact of six that was barely nearer its
    // target alone flips); docs/MANY-FACTS.md measures it at scale.
    eprintln!("nearer the target: {nearer_alone} of 6 alone, {nearer_in_batch} in the batch");
    assert!(
        nearer_in_batch + 1 >= nearer_alone && nearer_in_batch >= 5,
        "nearer the target: {nearer_alone} of 6 alone, {nearer_in_batch} in the batch"
    );
}

/// With a lower stopping threshold the facts stop at different iterations: once a
/// quarter of a pass's facts have stopped it goes on without them (a rebuilt objective),
/// and every fact still gets exactly what it would alone.
#[test]
fn facts_that_stop_early_leave_the_pass_and_the_rest_are_unchanged() {
    let s = setup();
    let hparams = HyperParams {
        prob_threshold: THRESHOLD_THAT_SPLITS_THE_FACTS,
        ..HyperParams::default()
    };
    let edits = s.validated_with(&FACTS, hparams);
    let mut steps: Vec<usize> = edits
        .iter()
        .map(|edit| {
            compute_edit(
                &s.model.encoder,
                &s.model.tokenizer,
                &s.stats,
                edit,
                &DeltaSet::empty(),
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap()
            .metrics
            .iterations
        })
        .collect();
    steps.sort_unstable();
    eprintln!("steps per fact alone: {steps:?}");
    assert!(
        steps[1] < steps[5],
        "the facts stop together ({steps:?}): pick another threshold"
    );
    batch_is_each_fact_alone(&s, &edits);
}

/// Checks every fact of the batch of `edits` against the same fact edited alone: the
/// same steps, probabilities and δ, and its key mapped to target_init + δ by the batch's
/// delta. Returns how many facts end nearer their target (alone, in the batch).
fn batch_is_each_fact_alone(s: &Setup, edits: &[ValidatedEdit]) -> (usize, usize) {
    let m = &s.model;
    let base = DeltaSet::empty();
    let mut seen = vec![0usize; edits.len()];
    let batch = compute_batch_edit(
        &m.encoder,
        &m.tokenizer,
        &s.stats,
        edits,
        &base,
        &mut |fact, _| {
            seen[fact] += 1;
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(batch.delta.rank, edits.len());
    assert_eq!(batch.facts.len(), edits.len());

    let edited = base.with(Arc::new(batch.delta.clone()));
    let (mut nearer_alone, mut nearer_in_batch) = (0, 0);
    for (f, edit) in edits.iter().enumerate() {
        // The same δ, steps and probabilities as the fact edited alone.
        let alone = compute_edit(&m.encoder, &m.tokenizer, &s.stats, edit, &base, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        let fact = &batch.facts[f];
        assert_eq!(
            fact.metrics.iterations, alone.metrics.iterations,
            "fact {f}"
        );
        assert_eq!(seen[f], alone.metrics.probabilities.len(), "fact {f}");
        if alone.vectors.delta.iter().all(|&x| x == 0.0) {
            // Stopped before its first step: no direction to compare, δ is 0 both ways.
            assert_eq!(fact.vectors.delta, alone.vectors.delta, "fact {f}");
        } else {
            let as_tensor = |x: &[f32]| Tensor::new(x, &Device::Cpu).unwrap();
            let similarity = cosine(
                &as_tensor(&fact.vectors.delta),
                &as_tensor(&alone.vectors.delta),
            );
            assert!(similarity > 0.99999, "fact {f}: δ cosine {similarity}");
        }
        for (a, b) in fact
            .metrics
            .probabilities
            .iter()
            .zip(&alone.metrics.probabilities)
        {
            assert!((a - b).abs() < 1e-5, "fact {f}: probability {a} vs {b}");
        }

        // With the batch's one delta, the fact's key gives target_init + δ.
        let written: Vec<f32> = common::fc2_output_at(
            m,
            &edited,
            &edit.request.prompt,
            s.layer,
            edit.rewriting_indices[0],
        )
        .to_vec1()
        .unwrap();
        let expected: Vec<f32> = fact
            .vectors
            .target_init
            .iter()
            .zip(&fact.vectors.delta)
            .map(|(t, d)| t + d)
            .collect();
        let err = written
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "fact {f}: W k is {err} from target_init + δ");
        nearer_alone += alone.metrics.text_check.nearer_target as usize;
        nearer_in_batch += fact.metrics.text_check.nearer_target as usize;
    }
    (nearer_alone, nearer_in_batch)
}

#[test]
fn a_batch_of_one_is_the_single_edit() {
    let s = setup();
    let m = &s.model;
    let edits = s.validated(&FACTS[..1]);
    let batch = s.batch_on_base(&edits).unwrap();
    let alone = compute_edit(
        &m.encoder,
        &m.tokenizer,
        &s.stats,
        &edits[0],
        &DeltaSet::empty(),
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(batch.delta, alone.delta);
}

#[test]
fn one_subject_twice_in_a_batch_is_refused() {
    let s = setup();
    let edits = s.validated(&[FACTS[0], ("The Prince of Wales", "a boy", "an old man")]);
    let result = s.batch_on_base(&edits);
    assert!(
        matches!(result, Err(EngineError::Numerical(ref m)) if m.contains("too alike")),
        "{result:?}"
    );
}
