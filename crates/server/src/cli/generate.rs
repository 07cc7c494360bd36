//! `refact generate`: one image from a prompt, at the base model or an edited version.

use super::model_args::{read_deltas, ModelArgs};
use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use refact_engine::image_io::{encode_png, to_rgb8};
use refact_engine::model::{ModelSource, ModelSpec, StableDiffusion};
use refact_engine::pipeline::GenerateParams;
use refact_engine::scheduler::SchedulerKind;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Generate an image and write it as PNG (and optionally as raw floats).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub prompt: String,
    /// Empty means unconditional, as in diffusers.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (at or below 1 the negative prompt is unused).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// pndm, ddim, euler or dpmpp-2m; default: the model folder's scheduler class.
    #[arg(long, value_parser = parse_scheduler)]
    pub scheduler: Option<SchedulerKind>,
    /// Seed of the initial noise (default: a fresh one, printed on stderr).
    #[arg(long, conflicts_with = "init_latents")]
    pub seed: Option<u64>,
    /// A safetensors file whose tensor `latents` [1, 4, H/8, W/8] replaces the noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Image width in pixels (default: the UNet's `sample_size` × 8, 512 for SD v1.5).
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long)]
    pub height: Option<usize>,
    /// Precision of the UNet and VAE: f32, f16, bf16 or auto (f16 on CUDA, f32 on CPU).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Delta files (from `refact edit --out`) applied to the text encoder, in order.
    #[arg(long, num_args = 1..)]
    pub deltas: Vec<PathBuf>,
    /// Where to write the PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the float image: tensor `image` [H, W, 3] f32 in [0, 1].
    #[arg(long)]
    pub out_raw: Option<PathBuf>,
    /// Decode in bands of rows when the latent has a side above this many cells (64 =
    /// 512 px on SD), bounding the VAE's memory; 0 = always whole. The image is the
    /// same (docs/PERFORMANCE.md).
    #[arg(long, default_value_t = 0)]
    pub vae_tile: usize,
}

fn parse_scheduler(name: &str) -> Result<SchedulerKind, String> {
    name.parse()
        .map_err(|e: refact_engine::EngineError| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.model.device()?;
    let spec = ModelSpec {
        source: ModelSource::parse(&args.model.model),
        dtype: refact_engine::device::parse_dtype(&args.dtype, &device)?,
        device,
        data_dir: args.model.data_dir.clone(),
        offline: args.model.offline,
    };
    let mut model = StableDiffusion::load(&spec)
        .with_context(|| format!("loading model `{}`", args.model.model))?;
    model
        .vae
        .set_tiling(refact_engine::vae::VaeTiling::with_tile(args.vae_tile));
    let deltas = read_deltas(&args.deltas)?;

    let scheduler = match args.scheduler {
        Some(kind) => kind,
        None => model.info.default_scheduler.with_context(|| {
            format!(
                "the model's scheduler class {:?} is not supported; pass --scheduler",
                model.scheduler_config.class_name()
            )
        })?,
    };
    let (default_width, default_height) = model.info.default_size;
    let init_latents = args.init_latents.as_deref().map(read_latents).transpose()?;
    let seed = args.seed.unwrap_or_else(fresh_seed);
    if init_latents.is_none() {
        eprintln!("seed: {seed}");
    }
    let params = GenerateParams {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        guidance_scale: args.guidance,
        width: args.width.unwrap_or(default_width),
        height: args.height.unwrap_or(default_height),
        seed,
        scheduler,
        init_latents,
    };

    let started = std::time::Instant::now();
    // One line per step in logs; a single updating line on a terminal.
    let terminal = std::io::stderr().is_terminal();
    let image = model.generate(&params, &deltas, &mut |done, total| {
        match (done, terminal) {
            (0, _) => {}
            (_, true) => {
                eprint!("\rstep {done}/{total}");
                let _ = std::io::stderr().flush();
            }
            (_, false) => eprintln!("step {done}/{total}"),
        }
        true
    })?;
    if terminal {
        eprintln!();
    }
    eprintln!(
        "{}x{} image in {:.1} s ({scheduler}, {} steps)",
        params.width,
        params.height,
        started.elapsed().as_secs_f64(),
        params.steps
    );

    let png = encode_png(&to_rgb8(&image)?)?;
    std::fs::write(&args.out, png).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    if let Some(path) = &args.out_raw {
        let tensors = HashMap::from([("image".to_string(), image)]);
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Reads tensor `latents` from a safetensors file (on the CPU; the pipeline moves it).
fn read_latents(path: &Path) -> anyhow::Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    match tensors.remove("latents") {
        Some(latents) => Ok(latents),
        None => bail!("{} has no tensor named `latents`", path.display()),
    }
}

/// A seed for when the user gives none; printed so that the image can be reproduced.
fn fresh_seed() -> u64 {
    rand::random()
}
