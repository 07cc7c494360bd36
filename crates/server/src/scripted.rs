//! A scripted model for the server's own unit tests: its edits take `steps` iterations
//! (or one per tick the test sends) and report what they were computed on. It tests the
//! control flow around a model (worker, routes), never numbers: those are the end-to-end
//! tests' job, on the real engine and the fixture model.

use crate::backend::{
    ComputedEdit, EditProgress, GenerateParams, ModelBackend, ModelSummary, RenderImage,
};
use crate::gate::{GateMeasurement, GateRequest};
use crate::settings::Settings;
use crate::state::AppState;
use refact_engine::{EngineError, InvalidKind};
use refact_eval::metrics::{Comparison, SeedTests};
use refact_store::testing::TestDatabase;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Duration;

/// A model whose edits take `steps` iterations of `step_ms` each (or, when `gated`, one
/// iteration per tick the test sends) and whose metrics record how many deltas its parent
/// had (so a test can see what it was computed on).
pub struct ScriptedModel {
    summary: ModelSummary,
    ticks: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    /// The keys of the rows of every batch `generate_batch` was given, in order.
    pub batches: std::sync::Mutex<Vec<Vec<crate::backend::BatchKey>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptedRequest {
    pub steps: usize,
    pub step_ms: u64,
    pub gated: bool,
    /// `none`, `io` (retryable) or `invalid` (not).
    pub fail: String,
}

impl ModelBackend for ScriptedModel {
    type Delta = usize;
    type Deltas = Vec<usize>;
    type EditRequest = ScriptedRequest;

    fn summary(&self) -> &ModelSummary {
        &self.summary
    }

    fn delta(&self, stored: refact_store::StoredDelta) -> Result<usize, EngineError> {
        Ok(stored.layer as usize)
    }

    fn compose(&self, deltas: &[usize]) -> Result<Vec<usize>, EngineError> {
        Ok(deltas.to_vec())
    }

    fn validate_edit(&self, _request: &ScriptedRequest) -> Result<(), EngineError> {
        Ok(())
    }

    fn compute_edit(
        &self,
        request: &ScriptedRequest,
        parent: &Vec<usize>,
        observer: &mut dyn FnMut(EditProgress) -> ControlFlow<()>,
        _stopped: &dyn Fn() -> bool,
    ) -> Result<ComputedEdit, EngineError> {
        match request.fail.as_str() {
            "io" => {
                return Err(EngineError::io(
                    "/stats",
                    std::io::Error::other("disk went away"),
                ))
            }
            "invalid" => return Err(EngineError::invalid(InvalidKind::Empty, "prompt", "empty")),
            _ => {}
        }
        for iteration in 0..request.steps {
            let step = EditProgress {
                fact: None,
                encoder: None,
                iteration,
                loss: 1.0,
                probability: 0.5,
            };
            if observer(step).is_break() {
                return Err(EngineError::Cancelled);
            }
            if request.gated {
                let ticks = self.ticks.lock().unwrap();
                ticks
                    .recv()
                    .map_err(|_| EngineError::Numerical("no more ticks".into()))?;
            } else {
                std::thread::sleep(Duration::from_millis(request.step_ms));
            }
        }
        Ok(ComputedEdit {
            deltas: vec![refact_store::StoredDelta::rank_one(
                7,
                vec![0.0; 4],
                vec![0.0; 2],
            )],
            metrics: serde_json::json!({ "parent_deltas": parent.len() }),
        })
    }

    /// Every test passes, except that a negative whose `new` is `leak` fails: enough to
    /// drive gate verdicts without a model.
    fn measure_gate(
        &self,
        _request: &ScriptedRequest,
        gate: &GateRequest,
        _parent: &Vec<usize>,
        _edit: &ComputedEdit,
        _stopped: &dyn Fn() -> bool,
        _render: &RenderImage<'_, Vec<usize>>,
    ) -> Result<GateMeasurement, EngineError> {
        let pass = Comparison::new(1.0, 0.0);
        let text = SeedTests {
            seed: 0,
            efficacy: pass,
            generality: vec![pass; gate.positives.len()],
            specificity: gate
                .negatives
                .iter()
                .map(|n| {
                    if n.new == "leak" {
                        Comparison::new(0.0, 1.0)
                    } else {
                        pass
                    }
                })
                .collect(),
        };
        Ok(GateMeasurement {
            text: vec![text],
            images: None,
        })
    }

    fn validate_generate(&self, _params: &GenerateParams) -> Result<(), EngineError> {
        Ok(())
    }

    /// Returns the version's delta count as text; the prompt `gated` waits for a tick
    /// (or for `stopped`, which cancels it).
    fn generate(
        &self,
        params: &GenerateParams,
        deltas: &Vec<usize>,
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, EngineError> {
        if params.prompt == "gated" {
            let ticks = self.ticks.lock().unwrap();
            loop {
                if stopped() {
                    return Err(EngineError::Cancelled);
                }
                match ticks.recv_timeout(Duration::from_millis(5)) {
                    Ok(()) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(_) => return Err(EngineError::Numerical("no more ticks".into())),
                }
            }
        }
        Ok(format!("{} deltas", deltas.len()).into_bytes())
    }

    /// Records the batch's rows, then renders them one by one.
    fn generate_batch(
        &self,
        rows: &[(&GenerateParams, &Vec<usize>)],
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let keys = rows
            .iter()
            .map(|(params, _)| crate::backend::BatchKey::of(params))
            .collect();
        self.batches.lock().unwrap().push(keys);
        rows.iter()
            .map(|(params, deltas)| self.generate(params, deltas, stopped))
            .collect()
    }
}

impl ScriptedModel {
    /// The model and the sender of its ticks.
    pub fn new() -> (Self, std::sync::mpsc::Sender<()>) {
        let (ticks, tick_receiver) = std::sync::mpsc::channel();
        let model = ScriptedModel {
            ticks: std::sync::Mutex::new(tick_receiver),
            batches: std::sync::Mutex::default(),
            summary: ModelSummary {
                source: "scripted".into(),
                fingerprint: "scripted-model".into(),
                is_demo: false,
                family: "sd1".into(),
                text_encoders: vec!["text".into()],
                num_layers: 12,
                encoder_layers: vec![crate::backend::EncoderLayers {
                    encoder: "text".into(),
                    num_layers: 12,
                    default_layer: 7,
                    max_layer: 11,
                }],
                device: "cpu".into(),
                default_size: (64, 64),
                default_scheduler: "pndm".into(),
            },
        };
        (model, ticks)
    }
}

/// A server state over the scripted model and a fresh SQLite file.
pub struct Harness {
    pub state: AppState<ScriptedModel>,
    /// One tick lets a gated edit run one iteration.
    pub ticks: std::sync::mpsc::Sender<()>,
    _db: TestDatabase,
}

/// Builds the state (no socket is served; the background worker is off).
pub async fn harness() -> Harness {
    let db = TestDatabase::sqlite();
    let mut settings = Settings {
        database_url: crate::secret::Secret::new(db.url()),
        bind: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    settings.worker.enabled = false;
    settings.worker.max_attempts = 2;
    settings.worker.heartbeat_secs = 0.2;
    let (backend, ticks) = ScriptedModel::new();
    let app = crate::Application::build_with_backend(settings, backend)
        .await
        .unwrap();
    Harness {
        state: app.state().clone(),
        ticks,
        _db: db,
    }
}
