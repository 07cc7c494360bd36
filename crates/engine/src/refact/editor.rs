//! The one way to make an edit on a loaded text model: validate the job, find its
//! layer's statistics, optimise. The server's worker, the evaluation runner and
//! `refact edit` all edit through an [`Editor`], so the three cannot drift apart.

use super::{
    check_batch_size, compute_batch_edit, compute_spread_edit, Corpus, EditJob, IterationReport,
    LayerStatistics, SpreadOutcome, StatsCache, StatsOrigin, ValidatedEdit,
};
use crate::deltas::{DeltaSet, TextEncoderId};
use crate::error::{EngineError, InvalidKind, Result};
use crate::model::TextModel;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

/// Where an editor's layer statistics come from: the captions and the disk cache.
#[derive(Debug)]
pub struct Editor {
    cache: StatsCache,
    corpus: Corpus,
    corpus_lines: usize,
    /// Statistics already read or computed, per (text encoder, layer).
    loaded: Mutex<HashMap<(TextEncoderId, usize), Arc<LayerStatistics>>>,
}

impl Editor {
    /// Statistics over the first `corpus_lines` captions of `corpus`, cached on disk by
    /// `cache`.
    pub fn new(cache: StatsCache, corpus: Corpus, corpus_lines: usize) -> Self {
        Self {
            cache,
            corpus,
            corpus_lines,
            loaded: Mutex::default(),
        }
    }

    /// Checks `job` against the text side it edits (prompts, subject, layer,
    /// hyper-parameters, and a batch's size against the layer's width): the facts as the
    /// optimisation takes them.
    pub fn validate(&self, text: &TextModel, job: &EditJob) -> Result<Vec<ValidatedEdit>> {
        let encoder = &text.encoder;
        let facts = job.validate(&text.tokenizer, encoder.num_layers())?;
        for fact in &facts {
            encoder.check_edit_layer(fact.layer)?;
        }
        if job.is_batch() {
            check_batch_size(facts.len(), encoder.config().intermediate_size)?;
        }
        let spread = job.spread();
        if let Some(fact) = facts.first() {
            if spread == 0 || spread > fact.layer + 1 {
                return Err(EngineError::invalid(
                    InvalidKind::LayerOutOfRange,
                    "spread",
                    format!(
                        "spread {spread}: from 1 (layer {} alone) to {} (layers 0 to {})",
                        fact.layer,
                        fact.layer + 1,
                        fact.layer
                    ),
                ));
            }
        }
        Ok(facts)
    }

    /// The statistics of `layer`: kept from an earlier call, else read from the disk
    /// cache, else computed (`progress(done, total)` sees the captions; `false` cancels)
    /// and cached in both.
    pub fn statistics(
        &self,
        text: &TextModel,
        layer: usize,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<(Arc<LayerStatistics>, StatsOrigin)> {
        // Held while computing: two edits of one layer then compute it once.
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let id = text.encoder.id();
        if let Some(stats) = loaded.get(&(id, layer)) {
            return Ok((stats.clone(), StatsOrigin::Cached));
        }
        // The fingerprint covers the folder's whole text side; SDXL's second encoder
        // keeps its statistics under its own name (a prefix: the cache's file names
        // keep the first 16 characters).
        let fingerprint = match id {
            TextEncoderId::Text => text.fingerprint.clone(),
            TextEncoderId::Text2 => format!("{id}-{}", text.fingerprint),
        };
        let (stats, origin) = self.cache.load_or_compute(
            &text.encoder,
            &text.tokenizer,
            &fingerprint,
            layer,
            &self.corpus,
            self.corpus_lines,
            progress,
        )?;
        if origin == StatsOrigin::Computed {
            tracing::info!(
                encoder = %id,
                layer,
                samples = stats.samples,
                tokens = stats.tokens,
                "layer statistics computed and cached"
            );
        }
        let stats = Arc::new(stats);
        loaded.insert((id, layer), stats.clone());
        Ok((stats, origin))
    }

    /// Validates `job`, finds its layers' statistics and edits every fact on the version
    /// `parent` (one fact: ReFACT's rank-one edit; several: one rank-n delta; a spread
    /// batch: one rank-n delta per layer, lowest first). `observer(fact, report)` sees
    /// every iteration and may cancel.
    pub fn edit(
        &self,
        text: &TextModel,
        job: &EditJob,
        parent: &DeltaSet,
        statistics_progress: &mut dyn FnMut(usize, usize) -> bool,
        observer: &mut dyn FnMut(usize, IterationReport) -> ControlFlow<()>,
    ) -> Result<SpreadOutcome> {
        let facts = self.validate(text, job)?;
        let layer = facts
            .first()
            .ok_or_else(|| EngineError::Numerical("an edit needs at least one fact".into()))?
            .layer;
        let statistics = (layer + 1 - job.spread()..=layer)
            .map(|l| Ok(self.statistics(text, l, statistics_progress)?.0))
            .collect::<Result<Vec<_>>>()?;
        let (encoder, tokenizer) = (&text.encoder, &text.tokenizer);
        if let [stats] = statistics.as_slice() {
            let batch = compute_batch_edit(encoder, tokenizer, stats, &facts, parent, observer)?;
            return Ok(SpreadOutcome {
                deltas: vec![batch.delta],
                facts: batch.facts,
            });
        }
        compute_spread_edit(encoder, tokenizer, &statistics, &facts, parent, observer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refact::{EditRequest, HyperParams};
    use candle_core::Device;

    fn request(target: &str) -> EditRequest {
        EditRequest {
            encoder: None,
            prompt: "The Prince of Wales".into(),
            subject: None,
            source: "Prince Charles".into(),
            target: target.into(),
            contrastive: Vec::new(),
            layer: Some(1),
            hparams: HyperParams {
                max_steps: 3,
                ..HyperParams::default()
            },
        }
    }

    #[test]
    fn statistics_are_computed_once_then_kept_and_an_edit_equals_the_direct_call() {
        let dir = tempfile::tempdir().unwrap();
        let text = TextModel::load(&refact_testkit::fixture_dir(), &Device::Cpu).unwrap();
        let editor = Editor::new(StatsCache::new(dir.path()), Corpus::Builtin, 50);
        let mut calls = 0;
        let (first, origin) = editor
            .statistics(&text, 1, &mut |_, _| {
                calls += 1;
                true
            })
            .unwrap();
        assert_eq!(origin, StatsOrigin::Computed);
        assert!(calls > 0);
        let (again, origin) = editor
            .statistics(&text, 1, &mut |_, _| panic!("recomputed"))
            .unwrap();
        assert_eq!(origin, StatsOrigin::Cached);
        assert!(Arc::ptr_eq(&first, &again));
        // A second editor on the same folder reads the disk cache.
        let other = Editor::new(StatsCache::new(dir.path()), Corpus::Builtin, 50);
        let (read, origin) = other
            .statistics(&text, 1, &mut |_, _| panic!("recomputed"))
            .unwrap();
        assert_eq!(origin, StatsOrigin::Cached);
        assert_eq!(read.layer, 1);

        let job = EditJob::Single(request("Prince William"));
        let outcome = editor
            .edit(
                &text,
                &job,
                &DeltaSet::empty(),
                &mut |_, _| true,
                &mut |_, _| ControlFlow::Continue(()),
            )
            .unwrap();
        let facts = job
            .validate(&text.tokenizer, text.encoder.num_layers())
            .unwrap();
        let direct = crate::refact::compute_edit(
            &text.encoder,
            &text.tokenizer,
            &first,
            &facts[0],
            &DeltaSet::empty(),
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(outcome.deltas.len(), 1);
        assert_eq!(outcome.deltas[0].u, direct.delta.u);
        assert_eq!(outcome.deltas[0].v, direct.delta.v);
    }

    #[test]
    fn a_bad_job_is_refused_before_any_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let text = TextModel::load(&refact_testkit::fixture_dir(), &Device::Cpu).unwrap();
        let editor = Editor::new(StatsCache::new(dir.path()), Corpus::Builtin, 50);
        let mut bad = request("Prince William");
        bad.layer = Some(99);
        let err = editor
            .edit(
                &text,
                &EditJob::Single(bad),
                &DeltaSet::empty(),
                &mut |_, _| panic!("statistics"),
                &mut |_, _| ControlFlow::Continue(()),
            )
            .unwrap_err();
        assert!(matches!(err, EngineError::Invalid { .. }), "{err}");
    }
}
