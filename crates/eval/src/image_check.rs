//! The paper's image tests for one edit: generate the edit prompt, each positive and each
//! negative with the edited model, and let CLIP judge every image between its two texts.
//! The runner uses the same scoring for whole datasets; the service's quality gate uses
//! [`image_tests`] for a single edit.

use crate::dataset::EvalCase;
use crate::error::Result;
use crate::metrics::{Comparison, SeedTests};
use crate::runner::plan::{judged_by, mode_jobs, score_texts, Slot};
use crate::runner::settings::Mode;
use crate::scorer::Scorer;
use candle_core::Tensor;
use image::RgbImage;

/// The image tests of `case` for each seed. `generate(prompt, seed)` renders one image
/// with the edited model.
pub fn image_tests(
    scorer: &Scorer,
    case: &EvalCase,
    seeds: &[u64],
    generate: &mut dyn FnMut(&str, u64) -> Result<RgbImage>,
) -> Result<Vec<SeedTests>> {
    let text_embeds = scorer.text_embeds(&score_texts(case))?;
    let jobs = mode_jobs(case, Mode::Edit);
    let mut tests = Vec::with_capacity(seeds.len());
    for &seed in seeds {
        let mut comparisons = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let image = generate(&job.prompt, seed)?;
            comparisons.push((
                job.slot,
                judge(scorer, case, &text_embeds, &image, job.slot)?,
            ));
        }
        tests.push(seed_tests(seed, comparisons));
    }
    Ok(tests)
}

/// Scores one image against its slot's two texts.
pub(crate) fn judge(
    scorer: &Scorer,
    case: &EvalCase,
    text_embeds: &Tensor,
    image: &RgbImage,
    slot: Slot,
) -> Result<Comparison> {
    let logits: Vec<f32> = scorer
        .logits(&scorer.image_embeds(image)?, text_embeds)?
        .squeeze(0)?
        .to_vec1()?;
    let (wanted, other) = judged_by(case, slot);
    Ok(Comparison::new(logits[wanted], logits[other]))
}

/// Groups one seed's comparisons by metric.
pub(crate) fn seed_tests(seed: u64, comparisons: Vec<(Slot, Comparison)>) -> SeedTests {
    let pick = |want: fn(Slot) -> bool| -> Vec<Comparison> {
        comparisons
            .iter()
            .filter(|(s, _)| want(*s))
            .map(|(_, c)| *c)
            .collect()
    };
    SeedTests {
        seed,
        // `Slot::all` always starts with the edit prompt, so there is exactly one.
        efficacy: pick(|s| s == Slot::Edit)[0],
        generality: pick(|s| matches!(s, Slot::Positive(_))),
        specificity: pick(|s| matches!(s, Slot::Negative(_))),
    }
}
