//! `refact score`: CLIP embeddings and logits of one image against texts.

use anyhow::Context;
use candle_core::{DType, Tensor};
use refact_eval::Scorer;
use std::collections::HashMap;
use std::path::PathBuf;

/// Score one image against one or more texts with a CLIP model in transformers' layout.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of the CLIP model (config.json, model.safetensors, preprocessor_config.json,
    /// vocab.json, merges.txt), e.g. a snapshot of openai/clip-vit-large-patch14.
    #[arg(long)]
    pub scorer: PathBuf,
    /// The image (PNG).
    #[arg(long)]
    pub image: PathBuf,
    /// A text to score the image against; repeat for several.
    #[arg(long = "text", required = true)]
    pub texts: Vec<String>,
    /// Where to write `image_embeds` [1,p], `text_embeds` [n,p] (both L2-normalised) and
    /// `logits_per_image` [1,n] as safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, env = "REFACT_DEVICE", default_value = "auto")]
    pub device: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = refact_engine::device::parse_device(&args.device)?;
    let scorer = Scorer::load(&args.scorer, &device, DType::F32)
        .with_context(|| format!("loading the scorer from {}", args.scorer.display()))?;
    let image = image::open(&args.image)
        .with_context(|| format!("reading {}", args.image.display()))?
        .to_rgb8();
    let scores = scorer.score(&image, &args.texts)?;
    let n = scores.logits_per_image.len();
    let logits = Tensor::from_vec(
        scores.logits_per_image.clone(),
        (1, n),
        &candle_core::Device::Cpu,
    )?;
    let tensors = HashMap::from([
        ("image_embeds".to_string(), scores.image_embeds),
        ("text_embeds".to_string(), scores.text_embeds),
        ("logits_per_image".to_string(), logits),
    ]);
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    for (text, logit) in args.texts.iter().zip(&scores.logits_per_image) {
        println!("{logit:>9.4}  {text}");
    }
    Ok(())
}
