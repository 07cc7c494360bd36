//! The model backend over `refact_engine`: a Stable Diffusion v1.x folder (or hub id)
//! loaded once, ReFACT edits computed on any version, images rendered at any version.

use super::{ComputedEdit, EditProgress, GenerateParams, ModelBackend, ModelSummary};
use crate::error::ApiError;
use crate::settings::Settings;
use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::device::{parse_device, parse_dtype};
use refact_engine::model::{resolve_folder, ModelSource, TextModel};
use refact_engine::pipeline::{self, GenerateParams as PipelineParams};
use refact_engine::refact::{
    compute_edit, Corpus, EditRequest, LayerStatistics, StatsCache, StatsOrigin,
};
use refact_engine::scheduler::{SchedulerConfig, SchedulerKind};
use refact_engine::unet::UNet2DConditionModel;
use refact_engine::vae::Vae;
use refact_engine::{image_io, EngineError};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// A loaded Stable Diffusion model with immutable weights.
pub struct EngineBackend {
    text: TextModel,
    unet: UNet2DConditionModel,
    vae: Vae,
    scheduler_config: SchedulerConfig,
    /// The folder's scheduler, used when a request names none.
    default_scheduler: SchedulerKind,
    stats_cache: StatsCache,
    corpus: Corpus,
    corpus_lines: usize,
    /// Layer statistics already read or computed, by layer (they never change for a model).
    stats: Mutex<HashMap<usize, Arc<LayerStatistics>>>,
    summary: ModelSummary,
}

impl EngineBackend {
    /// Loads the model the settings name (`model`, `device`, `dtype`, `data_dir`,
    /// `statistics`). Blocking: seconds for the fixture, a minute or more for SD v1.5.
    pub fn load(settings: &Settings) -> Result<Self, ApiError> {
        let source = ModelSource::parse(&settings.model);
        let folder = resolve_folder(&source, &settings.data_dir, false)?;
        let device = parse_device(&settings.device)?;
        let dtype = parse_dtype(&settings.dtype, &device)?;
        tracing::info!(model = %source.display_name(), folder = %folder.display(), ?device, ?dtype, "loading the model");
        let text = TextModel::load(&folder, &device)?;
        let unet = UNet2DConditionModel::load(&folder, &device, dtype)?;
        let vae = Vae::load(&folder, &device, dtype)?;
        let scheduler_config =
            SchedulerConfig::from_file(folder.join("scheduler/scheduler_config.json"))?;
        let default_scheduler = scheduler_config.class_kind().unwrap_or(SchedulerKind::Pndm);
        let summary = ModelSummary {
            source: source.display_name(),
            fingerprint: text.fingerprint.clone(),
            is_demo: source == ModelSource::Demo,
            num_layers: text.encoder.num_layers(),
            device: device_name(&device),
        };
        Ok(EngineBackend {
            text,
            unet,
            vae,
            scheduler_config,
            default_scheduler,
            stats_cache: StatsCache::new(settings.data_dir.join("stats")),
            corpus: Corpus::parse(&settings.statistics.corpus),
            corpus_lines: settings.statistics.lines,
            stats: Mutex::new(HashMap::new()),
            summary,
        })
    }

    /// The second-moment statistics of `layer`: from memory, the disk cache, or computed
    /// (minutes for SD v1.5 on a CPU; `stopped` interrupts the computation).
    fn layer_statistics(
        &self,
        layer: usize,
        stopped: &dyn Fn() -> bool,
    ) -> Result<Arc<LayerStatistics>, EngineError> {
        if let Some(stats) = self.stats.lock().expect("stats poisoned").get(&layer) {
            return Ok(stats.clone());
        }
        // Computed outside the lock would let two edits compute the same layer at once;
        // there is one edit worker, so holding it is simpler and costs nothing.
        let mut stats = self.stats.lock().expect("stats poisoned");
        let mut progress = |done: usize, total: usize| {
            if done == total || done.is_multiple_of(1000) {
                tracing::info!(layer, done, total, "layer statistics");
            }
            !stopped()
        };
        let (computed, origin) = self.stats_cache.load_or_compute(
            &self.text.encoder,
            &self.text.tokenizer,
            &self.text.fingerprint,
            layer,
            &self.corpus,
            self.corpus_lines,
            &mut progress,
        )?;
        if origin == StatsOrigin::Computed {
            tracing::info!(
                layer,
                samples = computed.samples,
                tokens = computed.tokens,
                "layer statistics computed and cached"
            );
        }
        let computed = Arc::new(computed);
        stats.insert(layer, computed.clone());
        Ok(computed)
    }

    fn scheduler(&self, name: Option<&str>) -> Result<SchedulerKind, EngineError> {
        match name {
            Some(name) => SchedulerKind::from_str(name),
            None => Ok(self.default_scheduler),
        }
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

fn device_name(device: &candle_core::Device) -> String {
    if device.is_cuda() {
        "cuda".into()
    } else if device.is_cpu() {
        "cpu".into()
    } else {
        "metal".into()
    }
}

impl ModelBackend for EngineBackend {
    type Delta = Arc<Delta>;
    type Deltas = DeltaSet;
    type EditRequest = EditRequest;

    fn summary(&self) -> &ModelSummary {
        &self.summary
    }

    fn delta(&self, layer: usize, u: Vec<f32>, v: Vec<f32>) -> Result<Arc<Delta>, EngineError> {
        let delta = Delta { layer, u, v };
        let config = self.text.encoder.config();
        delta.check(
            self.text.encoder.num_layers(),
            config.intermediate_size,
            config.hidden_size,
        )?;
        Ok(Arc::new(delta))
    }

    fn compose(&self, deltas: &[Arc<Delta>]) -> Result<DeltaSet, EngineError> {
        Ok(DeltaSet::new(deltas.to_vec()))
    }

    fn validate_edit(&self, request: &EditRequest) -> Result<(), EngineError> {
        request
            .validate(&self.text.tokenizer, self.text.encoder.num_layers())
            .map(|_| ())
    }

    fn compute_edit(
        &self,
        request: &EditRequest,
        parent: &DeltaSet,
        observer: &mut dyn FnMut(EditProgress) -> ControlFlow<()>,
        stopped: &dyn Fn() -> bool,
    ) -> Result<ComputedEdit, EngineError> {
        let edit = request.validate(&self.text.tokenizer, self.text.encoder.num_layers())?;
        let stats = self.layer_statistics(edit.layer, stopped)?;
        if stopped() {
            return Err(EngineError::Cancelled);
        }
        let outcome = compute_edit(
            &self.text.encoder,
            &self.text.tokenizer,
            &stats,
            &edit,
            parent,
            &mut |report| {
                observer(EditProgress {
                    iteration: report.iteration,
                    loss: report.loss,
                    probability: report.probability,
                })
            },
        )?;
        let metrics = serde_json::to_value(&outcome.metrics)
            .map_err(|e| EngineError::Numerical(format!("metrics do not serialise: {e}")))?;
        Ok(ComputedEdit {
            layer: outcome.delta.layer,
            u: outcome.delta.u,
            v: outcome.delta.v,
            metrics,
        })
    }

    fn validate_generate(&self, params: &GenerateParams) -> Result<(), EngineError> {
        self.pipeline_params(params)?.validate()
    }

    fn generate(&self, params: &GenerateParams, deltas: &DeltaSet) -> Result<Vec<u8>, EngineError> {
        let params = self.pipeline_params(params)?;
        let image = pipeline::generate(
            &self.text.encoder,
            &self.text.tokenizer,
            &self.unet,
            &self.vae,
            &self.scheduler_config,
            &params,
            deltas,
            &mut |_, _| true,
        )?;
        image_io::encode_png(&image_io::to_rgb8(&image)?)
    }
}
