//! `refact encode`: text encoder outputs for prompts, optionally at an edited version.

use super::model_args::{read_deltas, ModelArgs};
use anyhow::Context;
use candle_core::{DType, Tensor};
use refact_engine::model::TextModel;
use std::collections::HashMap;
use std::path::PathBuf;

/// Encode prompts and write `input_ids` [n,77] (i64), `last_hidden_state` [n,77,d] and
/// `pooler_output` [n,d] (f32) to a safetensors file.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A prompt; repeat for several.
    #[arg(long = "prompt", required = true)]
    pub prompts: Vec<String>,
    /// Delta files (from `refact edit --out`) applied in order.
    #[arg(long, num_args = 1..)]
    pub deltas: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let folder = args.model.folder()?;
    let text = TextModel::load(&folder, &args.model.device()?)?;
    let deltas = read_deltas(&args.deltas)?;
    let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
    let ids = text.encoder.padded_ids(&text.tokenizer, &prompts)?;
    let out = text.encoder.forward(&ids, &deltas)?;
    let cpu = candle_core::Device::Cpu;
    let tensors: HashMap<String, Tensor> = [
        ("input_ids", ids.to_dtype(DType::I64)?.to_device(&cpu)?),
        ("last_hidden_state", out.last_hidden_state.to_device(&cpu)?),
        ("pooler_output", out.pooler_output.to_device(&cpu)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} prompt(s) to {}",
        prompts.len(),
        args.out.display()
    );
    Ok(())
}
