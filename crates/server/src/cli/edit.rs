//! `refact edit`: compute one ReFACT edit offline and write it as delta files (one per
//! text encoder it changes: SDXL has two).

use super::model_args::{read_deltas, ModelArgs};
use anyhow::Context;
use refact_engine::delta_file::{encoder_sibling, save_delta};
use refact_engine::model::TextModel;
use refact_engine::refact::{
    Corpus, EditJob, EditRequest, Editor, EncoderTarget, HyperParams, StatsCache, StatsOrigin,
};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

/// Compute an edit: "`--prompt` should show `--target`, not `--source`". Writes tensors
/// `u`, `v` and metadata `layer`, `encoder` to `--out`; prints the metrics as JSON on
/// stdout. An edit of several text encoders (SDXL's default) writes one file per
/// encoder, `<out>` with `.text` / `.text_2` before its extension, and prints
/// `{"text": metrics, "text_2": metrics}`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub prompt: String,
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub target: String,
    /// Part of the prompt the edit keys on (default: the whole prompt).
    #[arg(long)]
    pub subject: Option<String>,
    /// Text-encoder layer to edit (default: 7 of 12, scaled to each encoder's depth).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Which text encoders to edit: all (default), text, or text_2 (SDXL's second).
    #[arg(long, default_value = "all", value_parser = parse_target)]
    pub encoder: EncoderTarget,
    #[arg(long, default_value_t = HyperParams::default().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = HyperParams::default().max_steps)]
    pub max_steps: usize,
    #[arg(long, default_value_t = HyperParams::default().prob_threshold)]
    pub prob_threshold: f64,
    #[arg(long, default_value_t = HyperParams::default().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = HyperParams::default().clamp_factor)]
    pub clamp: f64,
    /// Texts the edited prompt is pushed away from; repeat for several.
    #[arg(long, num_args = 1..)]
    pub contrastive: Vec<String>,
    /// Caption file for the layer statistics (default: the shipped COCO captions).
    #[arg(long, default_value = "builtin")]
    pub corpus: String,
    /// Captions of the corpus to use.
    #[arg(long, default_value_t = 25_000)]
    pub corpus_lines: usize,
    /// Compute on the version made of these deltas (in order) instead of the base model.
    #[arg(long, num_args = 1..)]
    pub deltas: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let request = EditRequest {
        encoder: Some(args.encoder),
        prompt: args.prompt.clone(),
        subject: args.subject.clone(),
        source: args.source.clone(),
        target: args.target.clone(),
        contrastive: args.contrastive.clone(),
        layer: args.layer,
        hparams: HyperParams {
            lr: args.lr,
            max_steps: args.max_steps,
            prob_threshold: args.prob_threshold,
            weight_decay: args.weight_decay,
            clamp_factor: args.clamp,
        },
    };
    let folder = args.model.folder()?;
    let texts = TextModel::load_all(&folder, &args.model.device()?)?;
    let available: Vec<_> = texts.iter().map(|t| t.encoder.id()).collect();
    let targets = args.encoder.select(&available)?;
    let editor = Editor::new(
        StatsCache::new(args.model.data_dir.join("stats")),
        Corpus::parse(&args.corpus),
        args.corpus_lines,
    );
    let job = EditJob::Single(request.clone());
    let base = read_deltas(&args.deltas)?;
    let several = targets.len() > 1;
    let mut all_metrics = serde_json::Map::new();
    for text in texts.iter().filter(|t| targets.contains(&t.encoder.id())) {
        let id = text.encoder.id();
        let layer = editor.validate(text, &job)?[0].layer;
        let (stats, origin) = editor.statistics(text, layer, &mut |done, total| {
            eprint!("\r{id} layer statistics: {done}/{total} captions");
            if done == total {
                eprintln!();
            }
            true
        })?;
        if origin == StatsOrigin::Cached {
            eprintln!(
                "{id} layer statistics: cached ({} captions, {} tokens)",
                stats.samples, stats.tokens
            );
        }
        let outcome = editor.edit(text, &job, &base, &mut |_, _| true, &mut |_, report| {
            eprintln!(
                "{id} iteration {:>3}  loss {:.5}  p(target) {:.4}",
                report.iteration, report.loss, report.probability
            );
            ControlFlow::Continue(())
        })?;
        // A single edit (not a spread batch): one delta per encoder.
        let [delta] = outcome.deltas.as_slice() else {
            anyhow::bail!("a single edit gave {} deltas", outcome.deltas.len());
        };
        let out = if several {
            encoder_sibling(&args.out, id)
        } else {
            args.out.clone()
        };
        save_delta(
            &out,
            delta,
            &[
                ("request", serde_json::to_string(&request)?),
                ("model_fingerprint", text.fingerprint.clone()),
            ],
        )
        .with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote the {id} delta (layer {}) to {}",
            delta.layer,
            out.display()
        );
        all_metrics.insert(
            id.as_str().into(),
            serde_json::to_value(&outcome.facts[0].metrics)?,
        );
    }
    let metrics = if several {
        serde_json::Value::Object(all_metrics)
    } else {
        all_metrics
            .into_iter()
            .next()
            .map(|(_, m)| m)
            .unwrap_or_default()
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &metrics)?;
    writeln!(stdout)?;
    Ok(())
}

fn parse_target(value: &str) -> Result<EncoderTarget, String> {
    serde_json::from_value(serde_json::Value::String(value.into()))
        .map_err(|_| format!("`{value}`: expected all, text or text_2"))
}
