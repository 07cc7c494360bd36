//! Quality gates on the engine: the text-space check on the edited text encoder and,
//! when asked, images of the edited version scored by the configured CLIP model.

use super::engine::EngineBackend;
use super::{ComputedEdit, GenerateParams, RenderImage};
use crate::gate::{GateMeasurement, GateRequest, ImageGate};
use candle_core::DType;
use refact_engine::deltas::DeltaSet;
use refact_engine::refact::{EditJob, EditRequest};
use refact_engine::{EngineError, InvalidKind};
use refact_eval::dataset::{EvalCase, Negative, Positive};
use refact_eval::image_check::image_tests;
use refact_eval::text_check::check_edit;
use refact_eval::{EvalError, Scorer};
use std::path::Path;
use std::sync::Arc;

impl EngineBackend {
    /// See [`super::ModelBackend::measure_gate`]. A batch is measured per fact (each
    /// fact's efficacy on the batch's version) with the gate's positives and negatives
    /// measured once, in the first fact's row; batches take no image gate (refused when
    /// submitted).
    pub(super) fn measure_gate_on_engine(
        &self,
        request: &EditJob,
        gate: &GateRequest,
        parent: &DeltaSet,
        edit: &ComputedEdit,
        stopped: &dyn Fn() -> bool,
        render: &RenderImage<'_, DeltaSet>,
    ) -> Result<GateMeasurement, EngineError> {
        let mut edited = parent.clone();
        for stored in &edit.deltas {
            edited = edited.with(Arc::new(super::engine::engine_delta(stored.clone())?));
        }
        // The gate's own prompts go with the first fact, measured once; the other facts
        // (of a batch) are measured for their efficacy alone.
        let cases: Vec<EvalCase> = request
            .fact_requests()
            .iter()
            .enumerate()
            .map(|(i, fact)| {
                if i == 0 {
                    gate_case(fact, gate)
                } else {
                    fact_case(fact)
                }
            })
            .collect();
        // Every text encoder, as the pipeline reads them: an SDXL edit of one encoder is
        // measured where the image sees it, beside the encoder it left alone.
        let encoders: Vec<_> = self.model.text_models().collect();
        let mut text = Vec::with_capacity(cases.len());
        for case in &cases {
            if stopped() {
                return Err(EngineError::Cancelled);
            }
            text.push(check_edit(&encoders, parent, &edited, case).map_err(engine_error)?);
        }
        let images = match &gate.images {
            None => None,
            Some(_) if request.is_batch() => {
                return Err(EngineError::invalid(
                    InvalidKind::BadGenerationSetting,
                    "gate.images",
                    "image gates are measured on single edits",
                ))
            }
            Some(images) => Some(self.image_gate(&cases[0], images, &edited, stopped, render)?),
        };
        Ok(GateMeasurement { text, images })
    }

    fn image_gate(
        &self,
        case: &EvalCase,
        images: &ImageGate,
        edited: &DeltaSet,
        stopped: &dyn Fn() -> bool,
        render: &RenderImage<'_, DeltaSet>,
    ) -> Result<Vec<refact_eval::metrics::SeedTests>, EngineError> {
        let scorer = self.scorer()?;
        let size = images.size.unwrap_or(self.model.info.default_size.0);
        // Each image goes through the generation queue (PNG is lossless: the decoded
        // pixels are the rendered ones). An image cannot be stopped half-way; a stop
        // (cancel, lost lease, shutdown) is seen before the next one.
        let mut generate = |prompt: &str, seed: u64| -> refact_eval::Result<image::RgbImage> {
            if stopped() {
                return Err(EngineError::Cancelled.into());
            }
            let params = GenerateParams {
                prompt: prompt.to_string(),
                negative_prompt: String::new(),
                steps: images.steps,
                guidance_scale: images.guidance_scale,
                width: size,
                height: size,
                seed,
                scheduler: None,
            };
            let png = render(params, edited)?;
            let image = image::load_from_memory(&png)
                .map_err(|e| EngineError::Numerical(format!("a gate image did not decode: {e}")))?;
            Ok(image.to_rgb8())
        };
        image_tests(&scorer, case, &images.seeds, &mut generate).map_err(engine_error)
    }

    /// The CLIP scorer named by the `scorer` setting, loaded on first use.
    fn scorer(&self) -> Result<Arc<Scorer>, EngineError> {
        let mut slot = self.scorer.lock().expect("scorer slot poisoned");
        if let Some(scorer) = slot.as_ref() {
            return Ok(scorer.clone());
        }
        let dir = self.scorer_dir.as_deref().ok_or_else(|| {
            EngineError::invalid(
                InvalidKind::BadGenerationSetting,
                "gate.images",
                "no CLIP scorer is configured (setting `scorer`)",
            )
        })?;
        tracing::info!(scorer = %dir.display(), "loading the gate's CLIP scorer");
        let device = self.model.text.encoder.device().clone();
        let scorer = Arc::new(load_scorer(dir, &device)?);
        *slot = Some(scorer.clone());
        Ok(scorer)
    }
}

fn load_scorer(dir: &Path, device: &candle_core::Device) -> Result<Scorer, EngineError> {
    Scorer::load(dir, device, DType::F32).map_err(engine_error)
}

/// One fact of a batch without prompts of its own: only its efficacy is measured.
fn fact_case(request: &EditRequest) -> EvalCase {
    EvalCase {
        row: 1,
        kind: None,
        edit_prompt: request.prompt.clone(),
        source: request.source.clone(),
        target: request.target.clone(),
        oracle: None,
        positives: Vec::new(),
        negatives: Vec::new(),
    }
}

/// The edit and the gate's prompts as one evaluation case.
fn gate_case(request: &EditRequest, gate: &GateRequest) -> EvalCase {
    EvalCase {
        positives: gate
            .positives
            .iter()
            .map(|p| Positive {
                prompt: p.prompt.clone(),
                old: p.old.clone(),
                new: p.new.clone(),
                oracle: None,
            })
            .collect(),
        negatives: gate
            .negatives
            .iter()
            .map(|n| Negative {
                prompt: n.prompt.clone(),
                new: n.new.clone(),
            })
            .collect(),
        ..fact_case(request)
    }
}

/// Engine errors keep their kind (a cancel stays a cancel); the rest are reported as
/// what they are, retryable when they came from I/O.
fn engine_error(err: EvalError) -> EngineError {
    match err {
        EvalError::Engine(err) => err,
        EvalError::Io { path, source } => EngineError::io(path, source),
        other => EngineError::Numerical(format!("quality gate: {other}")),
    }
}
