//! Command-line interface: one file per subcommand, each with its own `Args` and `run`.

mod edit;
mod encode;
mod eval;
mod generate;
pub mod model_args;
mod score;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "refact",
    version,
    about = "Keep text-to-image models up to date with ReFACT edits"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Encode prompts with the text encoder (optionally at an edited version).
    Encode(encode::Args),
    /// Compute one ReFACT edit offline and write it as a delta file.
    Edit(edit::Args),
    /// Generate an image from a prompt (optionally at an edited version).
    Generate(generate::Args),
    /// CLIP embeddings and logits of one image against texts.
    Score(score::Args),
    /// The paper's evaluation (efficacy, generality, specificity) on RoAD or TIMED.
    Eval(eval::Args),
}

/// Logs go to stderr so that commands can print results on stdout.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REFACT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Encode(args) => encode::run(args)?,
        Command::Edit(args) => edit::run(args)?,
        Command::Generate(args) => generate::run(args)?,
        Command::Score(args) => score::run(args)?,
        Command::Eval(args) => eval::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}
