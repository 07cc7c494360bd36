//! A batched image is the image: rows rendered together (several versions, prompts,
//! negative prompts, seeds and guidance scales in one batch) equal the same rows
//! rendered alone, within 1e-5 as float pixels (CPU, f32), for every scheduler.

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet};
use refact_engine::pipeline::{generate_batch, BatchRow, GenerateParams};
use refact_engine::scheduler::SchedulerKind;
use refact_engine::{EngineError, InvalidKind};
use std::sync::Arc;

/// FIXTURE.md's bound for batched against alone, f32 on the CPU.
const TOLERANCE: f32 = 1e-5;

mod common;

use common::Fixture;

impl Fixture {
    fn batch(&self, rows: &[BatchRow<'_>]) -> Result<Vec<Tensor>, EngineError> {
        generate_batch(&self.parts(), rows, &mut |_, _| true)
    }

    /// A version with one random delta at `layer`.
    fn version(&self, layer: usize, seed: u64) -> DeltaSet {
        let config = self.text.encoder.config();
        let noise = |n: usize, salt: u64| -> Vec<f32> {
            refact_engine::pipeline::seeded_noise(seed * 2 + salt, &[n], &Device::Cpu, DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        DeltaSet::new(vec![Arc::new(Delta {
            encoder: refact_engine::deltas::TextEncoderId::Text,
            layer,
            rank: 1,
            u: noise(config.intermediate_size, 0),
            v: noise(config.hidden_size, 1),
        })])
    }
}

fn params(
    prompt: &str,
    negative: &str,
    seed: u64,
    guidance: f64,
    scheduler: SchedulerKind,
) -> GenerateParams {
    GenerateParams {
        negative_prompt: negative.into(),
        steps: 4,
        guidance_scale: guidance,
        width: 64,
        height: 64,
        seed,
        ..GenerateParams::new(prompt, scheduler)
    }
}

#[test]
fn a_mixed_batch_of_versions_equals_each_image_rendered_alone() {
    let fixture = Fixture::load();
    let base = DeltaSet::empty();
    let edited = fixture.version(7, 1);
    let other = fixture.version(3, 2);
    for scheduler in SchedulerKind::ALL {
        let settings = [
            (params("a photo of a cat", "", 1, 7.5, scheduler), &base),
            (params("a photo of a cat", "", 1, 7.5, scheduler), &edited),
            (
                params("The Prince of Wales", "blurry", 2, 5.0, scheduler),
                &edited,
            ),
            (params("a red car", "", 3, 9.0, scheduler), &other),
            (params("a red car", "", 3, 9.0, scheduler), &base),
        ];
        let rows: Vec<BatchRow<'_>> = settings
            .iter()
            .map(|(params, deltas)| BatchRow { params, deltas })
            .collect();
        let batched = fixture.batch(&rows).unwrap();
        assert_eq!(batched.len(), rows.len());
        let mut worst = 0f32;
        for (row, image) in rows.iter().zip(&batched) {
            let alone = fixture.batch(&[*row]).unwrap().pop().unwrap();
            worst = worst.max(refact_testkit::max_abs_diff(&alone, image));
        }
        println!("{scheduler:?}: batch of 5 vs alone, max |Δ| = {worst:.2e}");
        assert!(worst <= TOLERANCE, "{scheduler:?}: {worst}");
        // The rows really differ: versions and seeds are not mixed up.
        let version_change = refact_testkit::max_abs_diff(&batched[0], &batched[1]);
        assert!(
            version_change > 1e-3,
            "{scheduler:?}: versions gave the same image"
        );
        let twin = refact_testkit::max_abs_diff(&batched[3], &batched[4]);
        assert!(
            twin > 1e-3,
            "{scheduler:?}: another version, the same image"
        );
    }
}

#[test]
fn unguided_rows_batch_too_and_a_row_of_another_shape_is_refused() {
    let fixture = Fixture::load();
    let edited = fixture.version(7, 3);
    let base = DeltaSet::empty();
    let a = params("a photo of a cat", "", 5, 1.0, SchedulerKind::Ddim);
    let b = params("a photo of a dog", "", 6, 1.0, SchedulerKind::Ddim);
    let rows = [
        BatchRow {
            params: &a,
            deltas: &edited,
        },
        BatchRow {
            params: &b,
            deltas: &base,
        },
    ];
    let batched = fixture.batch(&rows).unwrap();
    for (row, image) in rows.iter().zip(&batched) {
        let alone = fixture.batch(&[*row]).unwrap().pop().unwrap();
        assert!(refact_testkit::max_abs_diff(&alone, image) <= TOLERANCE);
    }
    let guided = params("a photo of a cat", "", 5, 7.5, SchedulerKind::Ddim);
    let bigger = GenerateParams {
        width: 128,
        ..a.clone()
    };
    for odd in [guided, bigger] {
        let mixed = [
            rows[0],
            BatchRow {
                params: &odd,
                deltas: &base,
            },
        ];
        let err = fixture.batch(&mixed).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::Invalid {
                    kind: InvalidKind::BadGenerationSetting,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
