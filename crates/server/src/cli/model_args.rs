//! Arguments every model-using subcommand shares: which model, where, on what device.

use anyhow::Context;
use candle_core::Device;
use refact_engine::delta_file::load_delta;
use refact_engine::deltas::DeltaSet;
use refact_engine::model::{resolve_folder, ModelSource};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A diffusers SD v1.x folder, a hub id (owner/name), or `demo` (random weights).
    #[arg(long, env = "REFACT_MODEL", default_value = "demo")]
    pub model: String,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, env = "REFACT_DEVICE", default_value = "auto")]
    pub device: String,
    /// Where the demo model, hub downloads' bookkeeping and statistics caches live.
    #[arg(long, env = "REFACT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Read hub models from the local cache only.
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    /// The model's diffusers folder (creating the demo model or downloading if needed).
    pub fn folder(&self) -> anyhow::Result<PathBuf> {
        let source = ModelSource::parse(&self.model);
        resolve_folder(&source, &self.data_dir, self.offline)
            .with_context(|| format!("loading model `{}`", self.model))
    }

    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(refact_engine::device::parse_device(&self.device)?)
    }
}

/// Reads delta files (as written by `refact edit --out`) into a version, in order.
pub fn read_deltas(paths: &[PathBuf]) -> anyhow::Result<DeltaSet> {
    let mut set = DeltaSet::empty();
    for path in paths {
        let delta =
            load_delta(path).with_context(|| format!("reading delta {}", path.display()))?;
        set = set.with(Arc::new(delta));
    }
    Ok(set)
}
