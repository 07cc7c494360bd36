//! `refact serve`: run the service.

use refact_server::secret::Secret;
use refact_server::Application;
use std::path::PathBuf;

/// Flags override `REFACT_*` variables, which override the configuration file.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Settings file (default: config/default.toml when it exists).
    #[arg(long, env = "REFACT_CONFIG")]
    config: Option<PathBuf>,
    /// `demo`, a diffusers folder, or a hub id.
    #[arg(long)]
    model: Option<String>,
    /// `postgres://...` or `sqlite://path`.
    #[arg(long)]
    database_url: Option<String>,
    /// `host:port` to listen on.
    #[arg(long)]
    bind: Option<String>,
    /// Where the demo model and cached statistics live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long)]
    device: Option<String>,
    /// `f32`, `f16`, `bf16` or `auto` (UNet and VAE).
    #[arg(long)]
    dtype: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut settings = super::load_settings(args.config.as_ref())?;
    if let Some(model) = args.model {
        settings.model = model;
    }
    if let Some(url) = args.database_url {
        settings.database_url = Secret::new(url);
    }
    if let Some(bind) = args.bind {
        settings.bind = bind;
    }
    if let Some(dir) = args.data_dir {
        settings.data_dir = dir;
    }
    if let Some(device) = args.device {
        settings.device = device;
    }
    if let Some(dtype) = args.dtype {
        settings.dtype = dtype;
    }
    settings.check()?;
    super::runtime()?.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    })?;
    Ok(())
}
