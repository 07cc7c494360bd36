//! The fixture pipeline (tiny-sd by default) loaded once per test, shared by the test
//! files that render images. Each file uses only part of it.
#![allow(dead_code)]

use candle_core::{DType, Device};
use refact_engine::model::TextModel;
use refact_engine::pipeline::PipelineParts;
use refact_engine::scheduler::SchedulerConfig;
use refact_engine::unet::UNet2DConditionModel;
use refact_engine::vae::Vae;
use std::path::Path;

/// A fixture's pipeline parts, f32 on the CPU.
pub struct Fixture {
    pub text: TextModel,
    pub unet: UNet2DConditionModel,
    pub vae: Vae,
    pub scheduler: SchedulerConfig,
}

impl Fixture {
    pub fn load() -> Self {
        Self::load_from(&refact_testkit::fixture_dir())
    }

    pub fn load_from(dir: &Path) -> Self {
        Self {
            text: TextModel::load(dir, &Device::Cpu).unwrap(),
            unet: UNet2DConditionModel::load(dir, &Device::Cpu, DType::F32).unwrap(),
            vae: Vae::load(dir, &Device::Cpu, DType::F32).unwrap(),
            scheduler: SchedulerConfig::from_file(dir.join("scheduler/scheduler_config.json"))
                .unwrap(),
        }
    }

    pub fn parts(&self) -> PipelineParts<'_> {
        PipelineParts {
            text_encoder: &self.text.encoder,
            tokenizer: &self.text.tokenizer,
            unet: &self.unet,
            vae: &self.vae,
            scheduler_config: &self.scheduler,
        }
    }
}
