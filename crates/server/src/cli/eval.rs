//! `refact eval`: the paper's evaluation on a RoAD or TIMED file: edit, generate, score,
//! and write `results.json`, `results.md` and `report.html` under `--out`.

use super::model_args::ModelArgs;
use anyhow::Context;
use candle_core::DType;
use refact_engine::model::{ModelSource, ModelSpec, StableDiffusion};
use refact_engine::refact::{Corpus, HyperParams};
use refact_engine::scheduler::SchedulerKind;
use refact_eval::dataset::{load, DatasetFormat};
use refact_eval::runner::engine_backend::{EngineBackend, EngineOptions};
use refact_eval::runner::settings::{parse_seeds, Mode, RunSettings};
use refact_eval::runner::{run as run_eval, Backend};
use refact_eval::Scorer;
use std::path::PathBuf;

/// Evaluate edits on a dataset file. Rerunning into the same `--out` skips rows already
/// scored, so an interrupted run resumes where it stopped.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder of the CLIP scorer (transformers' CLIPModel layout).
    #[arg(long)]
    pub scorer: PathBuf,
    /// The dataset CSV.
    #[arg(long)]
    pub dataset: PathBuf,
    /// road or timed.
    #[arg(long)]
    pub format: DatasetFormat,
    /// Seeds: `A..B` (inclusive) or a list `a,b,c`. The paper used 0..24.
    #[arg(long, default_value = "0..24")]
    pub seeds: String,
    /// Denoising steps per image.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// pndm, ddim, euler or dpmpp-2m.
    #[arg(long, default_value = "pndm")]
    pub scheduler: SchedulerKind,
    /// Text-encoder layer to edit (default: 7 of 12).
    #[arg(long)]
    pub layer: Option<usize>,
    /// edit (a clean model per row), sequential (all rows into one model), baseline
    /// (unedited) or oracle (unedited, told the new fact).
    #[arg(long, default_value = "edit")]
    pub mode: Mode,
    /// Evaluate only the first ROWS rows.
    #[arg(long, value_name = "ROWS")]
    pub limit: Option<usize>,
    /// ReFACT's iteration limit.
    #[arg(long, default_value_t = HyperParams::default().max_steps)]
    pub max_steps: usize,
    /// Caption file for the layer statistics (default: the shipped COCO captions).
    #[arg(long, default_value = "builtin")]
    pub corpus: String,
    #[arg(long, default_value_t = 25_000)]
    pub corpus_lines: usize,
    /// UNet/VAE precision: auto (f16 on CUDA, f32 on the CPU), f32, f16, bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let seeds = parse_seeds(&args.seeds)?;
    let cases = load(&args.dataset, args.format)?;
    let device = args.model.device()?;
    let spec = ModelSpec {
        source: ModelSource::parse(&args.model.model),
        device: device.clone(),
        dtype: refact_engine::device::parse_dtype(&args.dtype, &device)?,
        data_dir: args.model.data_dir.clone(),
        offline: args.model.offline,
    };
    let model = StableDiffusion::load(&spec)
        .with_context(|| format!("loading model `{}`", args.model.model))?;
    let options = EngineOptions {
        steps: args.steps,
        guidance_scale: args.guidance,
        size: args.size,
        scheduler: args.scheduler,
        layer: args.layer,
        hparams: HyperParams {
            max_steps: args.max_steps,
            ..HyperParams::default()
        },
        corpus: Corpus::parse(&args.corpus),
        corpus_lines: args.corpus_lines,
        ..EngineOptions::paper(args.model.data_dir.join("stats"))
    };
    let mut backend = EngineBackend::new(model, options);
    let scorer = Scorer::load(&args.scorer, &device, DType::F32)
        .with_context(|| format!("loading the scorer from {}", args.scorer.display()))?;
    let settings = RunSettings {
        mode: args.mode,
        seeds,
        dataset: args.dataset.display().to_string(),
        format: args.format,
        limit: args.limit,
        backend: backend.describe(),
    };
    run_eval(&mut backend, &scorer, &cases, &settings, &args.out, false)?;
    let table = std::fs::read_to_string(args.out.join("results.md"))?;
    print!("{table}");
    eprintln!(
        "wrote results.json, results.md and report.html to {}",
        args.out.display()
    );
    Ok(())
}
