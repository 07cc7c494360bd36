//! The runner's [`Backend`] on the Stable Diffusion engine: ReFACT edits with layer
//! statistics from the cache, images from the engine's pipeline. A version is a
//! [`DeltaSet`], so an edited model costs no weight copy.

use super::Backend;
use crate::dataset::EvalCase;
use crate::error::Result;
use crate::metrics::SeedTests;
use image::RgbImage;
use refact_engine::delta_file::{encoder_sibling, load_delta, save_delta};
use refact_engine::deltas::{DeltaSet, TextEncoderId};
use refact_engine::model::StableDiffusion;
use refact_engine::pipeline::GenerateParams;
use refact_engine::refact::{Corpus, EditJob, EditRequest, Editor, HyperParams, StatsCache};
use refact_engine::scheduler::SchedulerKind;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How images are made and edits computed. Defaults are the paper's evaluation (512 px,
/// 50 PNDM steps, guidance 7.5, layer 7, the paper's hyper-parameters).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub steps: usize,
    pub guidance_scale: f64,
    pub size: usize,
    pub scheduler: SchedulerKind,
    pub negative_prompt: String,
    /// The edited layer; `None` for the engine's default (7 of 12).
    pub layer: Option<usize>,
    pub hparams: HyperParams,
    pub corpus: Corpus,
    pub corpus_lines: usize,
    /// Where layer statistics are cached.
    pub stats_dir: PathBuf,
}

impl EngineOptions {
    /// The paper's settings, with statistics cached under `stats_dir`.
    pub fn paper(stats_dir: PathBuf) -> Self {
        Self {
            steps: 50,
            guidance_scale: 7.5,
            size: 512,
            scheduler: SchedulerKind::Pndm,
            negative_prompt: String::new(),
            layer: None,
            hparams: HyperParams::default(),
            corpus: Corpus::Builtin,
            corpus_lines: 25_000,
            stats_dir,
        }
    }
}

/// A loaded model ready to edit and render.
pub struct EngineBackend {
    model: StableDiffusion,
    options: EngineOptions,
    editor: Editor,
}

impl EngineBackend {
    /// Wraps a loaded model (`StableDiffusion::load`).
    pub fn new(model: StableDiffusion, options: EngineOptions) -> Self {
        let editor = Editor::new(
            StatsCache::new(options.stats_dir.clone()),
            options.corpus.clone(),
            options.corpus_lines,
        );
        Self {
            model,
            options,
            editor,
        }
    }

    /// The text side, for the text-space check.
    pub fn text_model(&self) -> &refact_engine::model::TextModel {
        &self.model.text
    }

    fn request(&self, case: &EvalCase) -> EditRequest {
        EditRequest {
            layer: self.options.layer,
            hparams: self.options.hparams.clone(),
            ..EditRequest::new(&case.edit_prompt, &case.source, &case.target)
        }
    }
}

impl Backend for EngineBackend {
    type Version = DeltaSet;

    fn describe(&self) -> serde_json::Value {
        let o = &self.options;
        serde_json::json!({
            "model": self.model.info.name,
            "model_fingerprint": self.model.info.fingerprint,
            "steps": o.steps,
            "guidance_scale": o.guidance_scale,
            "size": o.size,
            "scheduler": o.scheduler.as_str(),
            "negative_prompt": o.negative_prompt,
            "layer": o.layer,
            "hparams": o.hparams,
            "corpus": match &o.corpus {
                Corpus::Builtin => "builtin".to_string(),
                Corpus::File(p) => p.display().to_string(),
            },
            "corpus_lines": o.corpus_lines,
            "dtype": self.model.info.dtype,
        })
    }

    fn unedited(&self) -> DeltaSet {
        DeltaSet::empty()
    }

    fn edit(&mut self, case: &EvalCase, on: &DeltaSet) -> Result<(DeltaSet, serde_json::Value)> {
        let job = EditJob::Single(self.request(case));
        // Every text encoder the model has (SDXL: two), each on `on`: an encoder's edit
        // touches only that encoder. The first encoder's metrics are reported.
        let mut version = on.clone();
        let mut first = None;
        for text in self.model.text_models() {
            let outcome = self
                .editor
                .edit(text, &job, on, &mut |_, _| true, &mut |_, _| {
                    ControlFlow::Continue(())
                })?;
            for delta in &outcome.deltas {
                version = version.with(Arc::new(delta.clone()));
            }
            first.get_or_insert(outcome);
        }
        let outcome = first.expect("a model has a text encoder");
        let m = &outcome.facts[0].metrics;
        // The per-iteration curves stay out of the results; the summary numbers go in.
        let info = serde_json::json!({
            "layer": m.layer,
            "iterations": m.iterations,
            "final_probability": m.final_probability,
            "converged": m.converged,
            "text_check": m.text_check,
            "duration_ms": m.duration_ms,
        });
        Ok((version, info))
    }

    /// The version's last delta of each encoder: the first encoder's at `path`, SDXL's
    /// second's next to it ([`encoder_sibling`]).
    fn save_edit(&self, version: &DeltaSet, path: &Path) -> Result<()> {
        if version.is_empty() {
            return Err(crate::EvalError::Invalid(
                "the unedited model has no edit to save".into(),
            ));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::EvalError::io(dir, e))?;
        }
        for id in TextEncoderId::ALL {
            if let Some(delta) = version.iter().filter(|d| d.encoder == id).last() {
                let file = match id {
                    TextEncoderId::Text => path.to_path_buf(),
                    other => encoder_sibling(path, other),
                };
                save_delta(
                    &file,
                    delta,
                    &[("model_fingerprint", self.model.text.fingerprint.clone())],
                )?;
            }
        }
        Ok(())
    }

    fn load_edit(&self, on: &DeltaSet, path: &Path) -> Result<DeltaSet> {
        let mut version = on.with(Arc::new(load_delta(path)?));
        let second = encoder_sibling(path, TextEncoderId::Text2);
        if self.model.text_2.is_some() && second.is_file() {
            version = version.with(Arc::new(load_delta(&second)?));
        }
        Ok(version)
    }

    fn text_space(&self, case: &EvalCase, version: &DeltaSet) -> Result<Option<SeedTests>> {
        let encoders: Vec<_> = self.model.text_models().collect();
        let tests = crate::text_check::check_edit(&encoders, &DeltaSet::empty(), version, case)?;
        Ok(Some(tests))
    }

    fn generate(&mut self, prompt: &str, seed: u64, version: &DeltaSet) -> Result<RgbImage> {
        let o = &self.options;
        let params = GenerateParams {
            negative_prompt: o.negative_prompt.clone(),
            steps: o.steps,
            guidance_scale: o.guidance_scale,
            width: o.size,
            height: o.size,
            seed,
            ..GenerateParams::new(prompt, o.scheduler)
        };
        let image = self.model.generate(&params, version, &mut |_, _| true)?;
        Ok(refact_engine::image_io::to_rgb8(&image)?)
    }
}
