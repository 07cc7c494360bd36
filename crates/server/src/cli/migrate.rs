//! `refact migrate`: create or update the database schema.

use refact_server::secret::redact_url;
use refact_store::Store;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Settings file (default: config/default.toml when it exists).
    #[arg(long, env = "REFACT_CONFIG")]
    config: Option<PathBuf>,
    /// `postgres://...` or `sqlite://path` (default: from the settings).
    #[arg(long)]
    database_url: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = super::load_settings(args.config.as_ref())?;
    let url = args
        .database_url
        .unwrap_or_else(|| settings.database_url.expose().to_string());
    super::runtime()?.block_on(async {
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        store.close().await;
        anyhow::Ok(())
    })?;
    eprintln!("database {} is up to date", redact_url(&url));
    Ok(())
}
