//! `refact encode`: text encoder outputs for prompts, optionally at an edited version.

use super::model_args::{read_deltas, ModelArgs};
use anyhow::Context;
use candle_core::{DType, Tensor};
use refact_engine::deltas::TextEncoderId;
use refact_engine::model::TextModel;
use std::collections::HashMap;
use std::path::PathBuf;

/// Encode prompts and write `input_ids` [n,77] (i64), `last_hidden_state` [n,77,d] and
/// `pooler_output` [n,d] (f32) to a safetensors file. For SDXL also the second encoder's
/// (`text_2.` before each name, and `text_2.text_embeds`), each encoder's `penultimate`
/// states, and the pipeline's conditioning: `prompt_embeds` [n,77,d₁+d₂] and
/// `pooled_prompt_embeds` [n,p].
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
    let texts = TextModel::load_all(&folder, &args.model.device()?)?;
    let deltas = read_deltas(&args.deltas)?;
    let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
    let cpu = candle_core::Device::Cpu;
    let sdxl = texts.len() > 1;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut penultimates = Vec::new();
    for text in &texts {
        let prefix = match text.encoder.id() {
            TextEncoderId::Text => String::new(),
            other => format!("{other}."),
        };
        let ids = text.encoder.padded_ids(&text.tokenizer, &prompts)?;
        let states = text.encoder.forward_states(&ids, &deltas)?;
        let mut put = |name: &str, t: Tensor| -> anyhow::Result<()> {
            tensors.insert(format!("{prefix}{name}"), t.to_device(&cpu)?);
            Ok(())
        };
        put("input_ids", ids.to_dtype(DType::I64)?)?;
        put("last_hidden_state", states.output.last_hidden_state.clone())?;
        put("pooler_output", states.output.pooler_output.clone())?;
        if sdxl {
            put("penultimate", states.penultimate.clone())?;
            penultimates.push(states.penultimate.to_device(&cpu)?);
            if let Some(projected) = text.encoder.project(&states.output.pooler_output)? {
                put("text_embeds", projected.clone())?;
                tensors.insert("pooled_prompt_embeds".into(), projected.to_device(&cpu)?);
            }
        }
    }
    if sdxl {
        tensors.insert("prompt_embeds".into(), Tensor::cat(&penultimates, 2)?);
    }
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} prompt(s) to {}",
        prompts.len(),
        args.out.display()
    );
    Ok(())
}
