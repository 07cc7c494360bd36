//! The fixture pipeline (tiny-sd by default) loaded once per test, shared by the test
//! files that render images, and what the edit tests read out of the text encoder. Each
//! file uses only part of it.
#![allow(dead_code)]

use candle_core::{DType, Device};
use refact_engine::model::family::ModelIndex;
use refact_engine::model::TextModel;
use refact_engine::pipeline::PipelineParts;
use refact_engine::scheduler::SchedulerConfig;
use refact_engine::unet::UNet2DConditionModel;
use refact_engine::vae::Vae;
use std::path::Path;

/// A fixture's pipeline parts, f32 on the CPU.
pub struct Fixture {
    pub text: TextModel,
    /// SDXL's second text side.
    pub text_2: Option<TextModel>,
    pub zeros_for_empty_negative: bool,
    pub unet: UNet2DConditionModel,
    pub vae: Vae,
    pub scheduler: SchedulerConfig,
}

impl Fixture {
    pub fn load() -> Self {
        Self::load_from(&refact_testkit::fixture_dir())
    }

    pub fn load_from(dir: &Path) -> Self {
        let index = ModelIndex::read(dir).unwrap();
        let mut texts = TextModel::load_all(dir, &Device::Cpu).unwrap().into_iter();
        let (text, text_2) = (texts.next().unwrap(), texts.next());
        Self {
            text,
            text_2,
            zeros_for_empty_negative: index.zeros_for_empty_negative(),
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
            text_2: self.text_2.as_ref(),
            zeros_for_empty_negative: self.zeros_for_empty_negative,
            unet: &self.unet,
            vae: &self.vae,
            scheduler_config: &self.scheduler,
            text_cache: None,
        }
    }
}

/// fc2's output at `layer`, row `index`, of `prompt` on the encoder at version `deltas`:
/// where an edit's insert is checked (W k = target_init + δ).
pub fn fc2_output_at(
    model: &TextModel,
    deltas: &refact_engine::deltas::DeltaSet,
    prompt: &str,
    layer: usize,
    index: usize,
) -> candle_core::Tensor {
    use candle_core::IndexOp;
    use refact_engine::text_encoder::{Fc2Hook, Mode};

    struct CaptureOutput(Option<candle_core::Tensor>);
    impl Fc2Hook for CaptureOutput {
        fn fc2(
            &mut self,
            _input: &candle_core::Tensor,
            output: candle_core::Tensor,
        ) -> candle_core::Result<candle_core::Tensor> {
            self.0 = Some(output.clone());
            Ok(output)
        }
    }

    let encoder = &model.encoder;
    let prepared = encoder.prepare(deltas).unwrap();
    let ids = encoder.padded_ids(&model.tokenizer, &[prompt]).unwrap();
    let hidden = encoder.embed(&ids).unwrap();
    let mut capture = CaptureOutput(None);
    encoder
        .run_layers(
            &hidden,
            0..layer + 1,
            &prepared,
            Mode::Inference,
            Some((layer, &mut capture)),
        )
        .unwrap();
    capture
        .0
        .expect("the hook runs at the layer")
        .i((0, index))
        .unwrap()
}
