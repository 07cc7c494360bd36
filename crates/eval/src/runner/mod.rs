//! The RoAD/TIMED evaluation runner: edit, generate, score, report; resumable per row.
//!
//! The runner is written against [`Backend`] (edits and images) and the [`Scorer`], so
//! that the loop, the resume logic and the reports do not depend on how a model is
//! loaded; `engine_backend` adapts the Stable Diffusion engine.

pub mod engine_backend;
pub mod layout;
pub mod plan;
pub mod progress;
pub mod results;
pub mod settings;

use crate::dataset::EvalCase;
use crate::error::{EvalError, Result};
use crate::image_check::{judge, seed_tests};
use crate::metrics::SeedTests;
use crate::report;
use crate::scorer::Scorer;
use image::RgbImage;
use layout::{Layout, Side};
use plan::{mode_jobs, score_texts, unedited_jobs, Slot};
use progress::Progress;
use results::{read_json, write_json, RowResult, RunResults};
use settings::{Mode, RunSettings};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// What the runner needs from a text-to-image model.
pub trait Backend {
    /// A model version: the unedited model plus some edits.
    type Version: Clone;

    /// Everything about the backend that changes the numbers (model, steps, size, layer,
    /// hyper-parameters); stored in `run.json` and compared on a rerun.
    fn describe(&self) -> serde_json::Value;

    /// The unedited model.
    fn unedited(&self) -> Self::Version;

    /// Computes the case's edit on top of `on`; returns the new version and what the edit
    /// reported (as JSON for the results).
    fn edit(
        &mut self,
        case: &EvalCase,
        on: &Self::Version,
    ) -> Result<(Self::Version, serde_json::Value)>;

    /// Writes the newest edit of `version` to `path`.
    fn save_edit(&self, version: &Self::Version, path: &Path) -> Result<()>;

    /// Applies an edit written by `save_edit` on top of `on`.
    fn load_edit(&self, on: &Self::Version, path: &Path) -> Result<Self::Version>;

    /// One image of `prompt` with `seed` at `version`.
    fn generate(&mut self, prompt: &str, seed: u64, version: &Self::Version) -> Result<RgbImage>;

    /// The text-space tests of `case` at `version` against the unedited model (see
    /// `text_check`), if the backend has a text encoder to run them on.
    fn text_space(&self, _case: &EvalCase, _version: &Self::Version) -> Result<Option<SeedTests>> {
        Ok(None)
    }
}

/// Runs (or resumes) an evaluation of `cases` into `out` and writes `results.json`,
/// `results.md` and `report.html`. Rows whose result file exists are not redone.
pub fn run<B: Backend>(
    backend: &mut B,
    scorer: &Scorer,
    cases: &[EvalCase],
    settings: &RunSettings,
    out: &Path,
    quiet: bool,
) -> Result<RunResults> {
    let layout = Layout::new(out);
    check_settings(&layout, settings)?;
    let cases = &cases[..settings.limit.unwrap_or(cases.len()).min(cases.len())];
    if cases.is_empty() {
        return Err(EvalError::Invalid("no rows to evaluate".into()));
    }
    let pending: Vec<&EvalCase> = cases
        .iter()
        .filter(|c| !layout.row_result(c.row).is_file())
        .collect();
    let per_row_images: usize = pending
        .iter()
        .map(|c| images_per_seed(c, settings.mode) * settings.seeds.len())
        .sum();
    let mut progress = Progress::new(per_row_images, quiet);
    if pending.len() < cases.len() {
        progress.note(&format!(
            "{} of {} rows already scored; skipping them",
            cases.len() - pending.len(),
            cases.len()
        ));
    }
    if !pending.is_empty() {
        let unedited = backend.unedited();
        let shared = if settings.mode == Mode::Sequential {
            Some(sequential_version(backend, cases, &layout, &progress)?)
        } else {
            None
        };
        for (i, case) in pending.iter().enumerate() {
            let started = Instant::now();
            progress.note(&format!(
                "row {} ({}/{}): {} → {}",
                case.row,
                i + 1,
                pending.len(),
                case.source,
                case.target
            ));
            let (version, edit) = match settings.mode {
                Mode::Edit => {
                    let (v, info) = backend.edit(case, &unedited)?;
                    backend.save_edit(&v, &layout.delta(case.row))?;
                    write_json(&layout.delta_info(case.row), &info)?;
                    (v, Some(info))
                }
                Mode::Sequential => {
                    let info = read_json(&layout.delta_info(case.row)).ok();
                    (shared.clone().expect("sequential version"), info)
                }
                Mode::Baseline | Mode::Oracle => (unedited.clone(), None),
            };
            let row = evaluate_row(
                backend,
                scorer,
                case,
                settings,
                &layout,
                &unedited,
                &version,
                &mut progress,
            )?;
            let text_space = if settings.mode.edits() {
                backend.text_space(case, &version)?
            } else {
                None
            };
            let result = RowResult {
                case: (*case).clone(),
                tests: row.0,
                unedited_tests: row.1,
                text_space,
                edit,
                seconds: started.elapsed().as_secs_f64(),
            };
            write_json(&layout.row_result(case.row), &result)?;
        }
    }
    let rows = cases
        .iter()
        .map(|c| read_json::<RowResult>(&layout.row_result(c.row)))
        .collect::<Result<Vec<_>>>()?;
    let results = RunResults::from_rows(settings, &rows);
    write_json(&layout.results_json(), &results)?;
    write_text(
        &layout.results_markdown(),
        &report::markdown::render(&results),
    )?;
    write_text(
        &layout.report_html(),
        &report::html::render(&results, &rows),
    )?;
    Ok(results)
}

/// Images one row makes per seed: the mode's, plus the unedited ones when they differ.
fn images_per_seed(case: &EvalCase, mode: Mode) -> usize {
    let n = Slot::all(case).len();
    match mode {
        Mode::Baseline => n,
        Mode::Edit | Mode::Sequential => 2 * n,
        // Oracle negatives are the unedited images: made once.
        Mode::Oracle => 2 * n - case.negatives.len(),
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| EvalError::io(path, e))
}

/// Writes `run.json` on the first run; on a rerun, refuses different settings so that a
/// folder never mixes rows scored in different ways.
fn check_settings(layout: &Layout, settings: &RunSettings) -> Result<()> {
    let path = layout.settings();
    if path.is_file() {
        let before: RunSettings = read_json(&path)?;
        // The limit may grow between runs: more rows of the same evaluation.
        let same = RunSettings {
            limit: settings.limit,
            ..before.clone()
        };
        if same != *settings {
            return Err(EvalError::Invalid(format!(
                "{} holds a run with other settings ({}); use another --out",
                layout.root().display(),
                path.display()
            )));
        }
    }
    write_json(&path, settings)
}

/// Applies every row's edit in order (edit n on version n − 1), reusing edits saved by an
/// earlier run, and returns the final version.
fn sequential_version<B: Backend>(
    backend: &mut B,
    cases: &[EvalCase],
    layout: &Layout,
    progress: &Progress,
) -> Result<B::Version> {
    let mut version = backend.unedited();
    for case in cases {
        let path = layout.delta(case.row);
        if path.is_file() {
            version = backend.load_edit(&version, &path)?;
            continue;
        }
        progress.note(&format!(
            "sequential edit of row {}: {} → {}",
            case.row, case.source, case.target
        ));
        let (next, info) = backend.edit(case, &version)?;
        backend.save_edit(&next, &path)?;
        write_json(&layout.delta_info(case.row), &info)?;
        version = next;
    }
    Ok(version)
}

type RowTests = (Vec<SeedTests>, Option<Vec<SeedTests>>);

/// Generates and scores one row's images for every seed.
#[allow(clippy::too_many_arguments)]
fn evaluate_row<B: Backend>(
    backend: &mut B,
    scorer: &Scorer,
    case: &EvalCase,
    settings: &RunSettings,
    layout: &Layout,
    unedited: &B::Version,
    version: &B::Version,
    progress: &mut Progress,
) -> Result<RowTests> {
    let text_embeds = scorer.text_embeds(&score_texts(case))?;
    let after_jobs = mode_jobs(case, settings.mode);
    let before_jobs = (settings.mode != Mode::Baseline).then(|| unedited_jobs(case));
    let mut after_tests = vec![];
    let mut before_tests = before_jobs.as_ref().map(|_| vec![]);
    for &seed in &settings.seeds {
        // Images of the unedited model by prompt, so oracle negatives are made once.
        let mut made: HashMap<String, RgbImage> = HashMap::new();
        if let (Some(jobs), Some(tests)) = (&before_jobs, before_tests.as_mut()) {
            let mut comparisons = vec![];
            for job in jobs {
                let image = backend.generate(&job.prompt, seed, unedited)?;
                progress.image_done(&format!(
                    "row {} seed {seed} before {}",
                    case.row,
                    job.slot.name()
                ));
                save_png(
                    &image,
                    &layout.image(case.row, Side::Before, job.slot, seed),
                )?;
                comparisons.push((
                    job.slot,
                    judge(scorer, case, &text_embeds, &image, job.slot)?,
                ));
                made.insert(job.prompt.clone(), image);
            }
            tests.push(seed_tests(seed, comparisons));
        }
        let mut comparisons = vec![];
        for job in &after_jobs {
            let image = match made.get(&job.prompt) {
                // The unedited model already made this prompt with this seed.
                Some(image) if !job.edited => image.clone(),
                _ => {
                    let image = backend.generate(&job.prompt, seed, version)?;
                    let what = format!("row {} seed {seed} after {}", case.row, job.slot.name());
                    progress.image_done(&what);
                    image
                }
            };
            save_png(&image, &layout.image(case.row, Side::After, job.slot, seed))?;
            comparisons.push((
                job.slot,
                judge(scorer, case, &text_embeds, &image, job.slot)?,
            ));
        }
        after_tests.push(seed_tests(seed, comparisons));
    }
    Ok((after_tests, before_tests))
}

fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    }
    image
        .save(path)
        .map_err(|e| EvalError::io(path, std::io::Error::other(e)))
}
