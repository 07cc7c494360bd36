//! Command-line interface: one file per subcommand, each with its own `Args` and `run`.

mod edit;
mod encode;
mod eval;
mod generate;
mod migrate;
pub mod model_args;
mod push;
mod score;
mod serve;
mod token;

use clap::{Parser, Subcommand};
use refact_server::Settings;
use std::path::PathBuf;
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
    /// Run the HTTP service (API, edit worker, dashboard).
    Serve(serve::Args),
    /// Create or update the database schema, then exit.
    Migrate(migrate::Args),
    /// Manage API tokens.
    Token(token::Args),
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
    /// Submit a file of edits to a server, wait, report, and promote an alias if all pass.
    Push(push::Args),
}

/// Logs go to stderr so that commands can print results on stdout.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REFACT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes in files and container logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args)?,
        Command::Migrate(args) => migrate::run(args)?,
        Command::Token(args) => token::run(args)?,
        Command::Encode(args) => encode::run(args)?,
        Command::Edit(args) => edit::run(args)?,
        Command::Generate(args) => generate::run(args)?,
        Command::Score(args) => score::run(args)?,
        Command::Eval(args) => eval::run(args)?,
        Command::Push(args) => return push::run(args),
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings below the command line: `--config FILE` (else `config/default.toml` if
/// present) and the `REFACT_*` environment variables. Flags are applied by the caller.
fn load_settings(config: Option<&PathBuf>) -> anyhow::Result<Settings> {
    let file = config.cloned().or_else(Settings::default_file);
    if let Some(path) = &file {
        tracing::info!(config = %path.display(), "reading settings");
    }
    Ok(Settings::load(file.as_deref(), std::env::vars())?)
}

/// A multi-threaded runtime for the async subcommands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
