//! The model backend over `refact_engine`: a Stable Diffusion folder (v1.x, 2.x or XL;
//! or a hub id) loaded once, ReFACT edits computed on any version, images rendered at
//! any version. An SDXL edit changes each text encoder it targets: one delta each, in
//! one version.

use super::{
    ComputedEdit, EditProgress, EncoderLayers, GenerateParams, ModelBackend, ModelSummary,
    RenderImage, TextCacheGauges,
};
use crate::error::ApiError;
use crate::gate::{GateMeasurement, GateRequest};
use crate::metrics as m;
use crate::settings::Settings;
use refact_engine::deltas::{Delta, DeltaSet, TextEncoderId};
use refact_engine::device::{parse_device, parse_dtype};
use refact_engine::model::{ModelSource, ModelSpec, StableDiffusion, TextModel};
use refact_engine::pipeline::{BatchRow, GenerateParams as PipelineParams, TextEmbeddingCache};
use refact_engine::refact::{default_layer, Corpus, EditJob, Editor, SpreadOutcome, StatsCache};
use refact_engine::scheduler::SchedulerKind;
use refact_engine::{image_io, EngineError, InvalidKind};
use refact_eval::Scorer;
use refact_store::StoredDelta;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// A loaded Stable Diffusion model with immutable weights.
pub struct EngineBackend {
    pub(super) model: StableDiffusion,
    /// Validates edits, keeps the layer statistics and runs ReFACT.
    editor: Editor,
    summary: ModelSummary,
    /// The CLIP model for image gates (setting `scorer`), if one is configured.
    pub(super) scorer_dir: Option<PathBuf>,
    /// Loaded on the first image gate: most servers never need it.
    pub(super) scorer: Mutex<Option<Arc<Scorer>>>,
}

impl EngineBackend {
    /// Loads the model the settings name (`model`, `device`, `dtype`, `data_dir`,
    /// `statistics`). Blocking: seconds for the fixture, a minute or more for SD v1.5.
    pub fn load(settings: &Settings) -> Result<Self, ApiError> {
        let device = parse_device(&settings.device)?;
        let spec = ModelSpec {
            source: ModelSource::parse(&settings.model),
            dtype: parse_dtype(&settings.dtype, &device)?,
            device,
            data_dir: settings.data_dir.clone(),
            offline: false,
        };
        tracing::info!(model = %spec.source.display_name(), device = ?spec.device, dtype = ?spec.dtype, "loading the model");
        let mut model = StableDiffusion::load(&spec)?;
        model
            .vae
            .set_tiling(refact_engine::vae::VaeTiling::with_tile(settings.vae_tile));
        model.text_cache = TextEmbeddingCache::new(settings.batching.text_cache_prompts);
        let info = &model.info;
        let summary = ModelSummary {
            source: info.name.clone(),
            fingerprint: info.fingerprint.clone(),
            is_demo: info.is_demo,
            family: info.family.name().into(),
            text_encoders: model
                .text_models()
                .map(|text| text.encoder.id().as_str().to_string())
                .collect(),
            num_layers: info.num_layers,
            encoder_layers: model
                .text_models()
                .map(|text| EncoderLayers {
                    encoder: text.encoder.id().as_str().to_string(),
                    num_layers: text.encoder.num_layers(),
                    default_layer: default_layer(text.encoder.num_layers()),
                    max_layer: text.encoder.editable_layers().saturating_sub(1),
                })
                .collect(),
            device: info.device.clone(),
            default_size: info.default_size,
            default_scheduler: info
                .default_scheduler
                .unwrap_or(SchedulerKind::Pndm)
                .as_str()
                .to_string(),
        };
        Ok(EngineBackend {
            model,
            editor: Editor::new(
                StatsCache::new(settings.data_dir.join("stats")),
                Corpus::parse(&settings.statistics.corpus),
                settings.statistics.lines,
            ),
            summary,
            scorer_dir: Some(settings.scorer.trim())
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
            scorer: Mutex::new(None),
        })
    }

    pub(super) fn scheduler(&self, name: Option<&str>) -> Result<SchedulerKind, EngineError> {
        match name {
            Some(name) => SchedulerKind::from_str(name),
            None => Ok(self
                .model
                .info
                .default_scheduler
                .unwrap_or(SchedulerKind::Pndm)),
        }
    }

    /// The text side of encoder `id`, if the model has it.
    fn text_model(&self, id: TextEncoderId) -> Option<&TextModel> {
        self.model
            .text_models()
            .find(|text| text.encoder.id() == id)
    }

    /// The text sides `job` edits (its `encoder`, by default all the model has).
    fn targets(&self, job: &EditJob) -> Result<Vec<&TextModel>, EngineError> {
        let available: Vec<TextEncoderId> =
            self.model.text_models().map(|t| t.encoder.id()).collect();
        Ok(job
            .encoder()
            .select(&available)?
            .into_iter()
            .filter_map(|id| self.text_model(id))
            .collect())
    }

    fn pipeline_params(&self, params: &GenerateParams) -> Result<PipelineParams, EngineError> {
        Ok(PipelineParams {
            prompt: params.prompt.clone(),
            negative_prompt: params.negative_prompt.clone(),
            steps: params.steps,
            guidance_scale: params.guidance_scale,
            width: params.width,
            height: params.height,
            seed: params.seed,
            scheduler: self.scheduler(params.scheduler.as_deref())?,
            init_latents: None,
        })
    }
}

impl ModelBackend for EngineBackend {
    type Delta = Arc<Delta>;
    type Deltas = DeltaSet;
    type EditRequest = EditJob;

    fn text_cache(&self) -> TextCacheGauges {
        let cache = &self.model.text_cache;
        TextCacheGauges {
            prompts: cache.len(),
            capacity: cache.capacity(),
            hits: cache.hits(),
            misses: cache.misses(),
        }
    }

    fn summary(&self) -> &ModelSummary {
        &self.summary
    }

    fn normalise_edit(&self, request: &mut EditJob) {
        // An SDXL request names its encoders; an edit of both leaves the layer to each
        // encoder's default (their depths differ) unless it names one.
        if self.model.text_2.is_some() {
            let target = request.encoder();
            request.set_encoder(target);
        }
        if let Ok([text]) = self.targets(request).as_deref() {
            let layers = text.encoder.num_layers();
            request
                .layer_mut()
                .get_or_insert(refact_engine::refact::default_layer(layers));
        }
    }

    fn is_batch(&self, request: &EditJob) -> bool {
        request.is_batch()
    }

    fn delta(&self, stored: StoredDelta) -> Result<Arc<Delta>, EngineError> {
        let delta = engine_delta(stored)?;
        let encoder = &self
            .text_model(delta.encoder)
            .ok_or_else(|| {
                EngineError::invalid(
                    InvalidKind::BadShape,
                    "delta",
                    format!(
                        "a delta on text encoder `{}`, which this model does not have",
                        delta.encoder
                    ),
                )
            })?
            .encoder;
        let config = encoder.config();
        delta.check(
            encoder.num_layers(),
            config.intermediate_size,
            config.hidden_size,
        )?;
        Ok(Arc::new(delta))
    }

    /// Builds the version's tensors now (on the encoder's device), once: every request
    /// at this version shares them, so switching versions rebuilds nothing.
    fn compose(&self, deltas: &[Arc<Delta>]) -> Result<DeltaSet, EngineError> {
        let version = DeltaSet::new(deltas.to_vec());
        for text in self.model.text_models() {
            text.encoder.prepare(&version)?;
        }
        Ok(version)
    }

    fn validate_edit(&self, request: &EditJob) -> Result<(), EngineError> {
        for text in self.targets(request)? {
            self.editor.validate(text, request)?;
        }
        Ok(())
    }

    fn compute_edit(
        &self,
        request: &EditJob,
        parent: &DeltaSet,
        observer: &mut dyn FnMut(EditProgress) -> ControlFlow<()>,
        stopped: &dyn Fn() -> bool,
    ) -> Result<ComputedEdit, EngineError> {
        // Computing a layer's statistics takes minutes for SD v1.5 on a CPU: logged, and
        // `stopped` interrupts it.
        let mut statistics_progress = |done: usize, total: usize| {
            if done == total || done.is_multiple_of(1000) {
                tracing::info!(done, total, "layer statistics");
            }
            !stopped()
        };
        let batch = request.is_batch();
        let targets = self.targets(request)?;
        let several = targets.len() > 1;
        let mut deltas = Vec::with_capacity(targets.len());
        let mut per_encoder = serde_json::Map::new();
        let mut first_metrics = None;
        // Each encoder's edit touches only that encoder, so each is computed on the
        // parent; together they are the version.
        for text in targets {
            let id = text.encoder.id();
            let outcome = self.editor.edit(
                text,
                request,
                parent,
                &mut statistics_progress,
                &mut |fact, report| {
                    observer(EditProgress {
                        iteration: report.iteration,
                        loss: report.loss,
                        probability: report.probability,
                        fact: batch.then_some(fact),
                        encoder: several.then_some(id),
                    })
                },
            )?;
            let metrics = if batch {
                batch_metrics(&outcome)
            } else {
                serde_json::to_value(&outcome.facts[0].metrics)
            }
            .map_err(|e| EngineError::Numerical(format!("metrics do not serialise: {e}")))?;
            per_encoder.insert(id.as_str().to_string(), metrics.clone());
            first_metrics.get_or_insert(metrics);
            deltas.extend(outcome.deltas.into_iter().map(stored_delta));
        }
        // The first encoder's metrics at the top level (what a single-encoder model has
        // always reported); every encoder's under `encoders` when there are several.
        let mut metrics = first_metrics
            .ok_or_else(|| EngineError::Numerical("an edit needs an encoder".into()))?;
        if several {
            if let Some(object) = metrics.as_object_mut() {
                object.insert("encoders".into(), serde_json::Value::Object(per_encoder));
            }
        }
        Ok(ComputedEdit { deltas, metrics })
    }

    fn measure_gate(
        &self,
        request: &EditJob,
        gate: &GateRequest,
        parent: &DeltaSet,
        edit: &ComputedEdit,
        stopped: &dyn Fn() -> bool,
        render: &RenderImage<'_, DeltaSet>,
    ) -> Result<GateMeasurement, EngineError> {
        self.measure_gate_on_engine(request, gate, parent, edit, stopped, render)
    }

    fn validate_generate(&self, params: &GenerateParams) -> Result<(), EngineError> {
        self.pipeline_params(params)?.validate()
    }

    fn generate(
        &self,
        params: &GenerateParams,
        deltas: &DeltaSet,
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, EngineError> {
        let params = self.pipeline_params(params)?;
        let image = self
            .model
            .generate(&params, deltas, &mut |_, _| !stopped())?;
        image_io::encode_png(&image_io::to_rgb8(&image)?)
    }

    fn generate_batch(
        &self,
        rows: &[(&GenerateParams, &DeltaSet)],
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let params = rows
            .iter()
            .map(|(params, _)| self.pipeline_params(params))
            .collect::<Result<Vec<_>, _>>()?;
        let batch: Vec<BatchRow<'_>> = params
            .iter()
            .zip(rows)
            .map(|(params, (_, deltas))| BatchRow { params, deltas })
            .collect();
        let cache = &self.model.text_cache;
        let (hits, misses) = (cache.hits(), cache.misses());
        let images = self.model.generate_batch(&batch, &mut |_, _| !stopped());
        // One generation thread per model: the difference is this batch's.
        m::count_text_cache(cache.hits() - hits, cache.misses() - misses);
        let images = images?;
        images
            .iter()
            .map(|image| image_io::encode_png(&image_io::to_rgb8(image)?))
            .collect()
    }
}

/// An engine delta in the store's form.
pub(super) fn stored_delta(delta: Delta) -> StoredDelta {
    StoredDelta {
        encoder: delta.encoder.as_str().into(),
        // Layers are a few dozen at most; the store keeps SQL's INTEGER.
        layer: delta.layer as i32,
        rank: delta.rank as i32,
        u: delta.u,
        v: delta.v,
    }
}

/// A stored delta in the engine's form.
pub(super) fn engine_delta(stored: StoredDelta) -> Result<Delta, EngineError> {
    let bad = |message: String| EngineError::invalid(InvalidKind::BadShape, "delta", message);
    let encoder = TextEncoderId::parse(&stored.encoder).ok_or_else(|| {
        bad(format!(
            "a delta on text encoder {:?} (known: text, text_2)",
            stored.encoder
        ))
    })?;
    let layer = usize::try_from(stored.layer).map_err(|_| bad("negative layer".into()))?;
    let rank = usize::try_from(stored.rank).map_err(|_| bad("negative rank".into()))?;
    Ok(Delta {
        encoder,
        layer,
        rank,
        u: stored.u,
        v: stored.v,
    })
}

/// A batch's metrics: each fact's, in request order, and the batch's summary; `layer`
/// and `rank` are the optimised layer's delta, `layers` lists a spread batch's layers.
fn batch_metrics(outcome: &SpreadOutcome) -> serde_json::Result<serde_json::Value> {
    let facts = &outcome.facts;
    let nearer = facts
        .iter()
        .filter(|f| f.metrics.text_check.nearer_target)
        .count();
    let converged = facts.iter().filter(|f| f.metrics.converged).count();
    let optimised = outcome.deltas.last();
    let mut metrics = serde_json::json!({
        "layer": optimised.map(|d| d.layer),
        "rank": optimised.map(|d| d.rank),
        "facts": facts.iter().map(|f| &f.metrics).collect::<Vec<_>>(),
        "facts_converged": converged,
        "facts_nearer_target": nearer,
        "duration_ms": facts.first().map_or(0, |f| f.metrics.duration_ms),
    });
    if outcome.deltas.len() > 1 {
        metrics["layers"] = outcome.deltas.iter().map(|d| d.layer).collect();
    }
    Ok(metrics)
}
