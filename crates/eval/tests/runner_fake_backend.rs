//! The runner's loop, resume logic and outputs, with a stand-in backend (images drawn from
//! a hash of prompt, seed and version) and the real fixture scorer. The end-to-end run on
//! the fixture model is in `runner_fixture.rs`.

use candle_core::{DType, Device};
use image::RgbImage;
use refact_eval::dataset::{load, DatasetFormat, EvalCase};
use refact_eval::runner::layout::{Layout, Side};
use refact_eval::runner::plan::Slot;
use refact_eval::runner::results::RowResult;
use refact_eval::runner::settings::{Mode, RunSettings};
use refact_eval::runner::{run, Backend};
use refact_eval::{Result, Scorer};
use refact_testkit::{data_file, scorer_dir};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

/// A version is the list of edited rows, in order.
#[derive(Default)]
struct FakeBackend {
    edits: Vec<(usize, Vec<usize>)>,
    prompts: Vec<(String, u64, Vec<usize>)>,
}

impl Backend for FakeBackend {
    type Version = Vec<usize>;

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"backend": "fake"})
    }

    fn unedited(&self) -> Vec<usize> {
        vec![]
    }

    fn edit(
        &mut self,
        case: &EvalCase,
        on: &Vec<usize>,
    ) -> Result<(Vec<usize>, serde_json::Value)> {
        self.edits.push((case.row, on.clone()));
        let mut next = on.clone();
        next.push(case.row);
        Ok((next, serde_json::json!({"row": case.row})))
    }

    fn save_edit(&self, version: &Vec<usize>, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, version.last().unwrap().to_string()).unwrap();
        Ok(())
    }

    fn load_edit(&self, on: &Vec<usize>, path: &Path) -> Result<Vec<usize>> {
        let row: usize = std::fs::read_to_string(path).unwrap().parse().unwrap();
        let mut next = on.clone();
        next.push(row);
        Ok(next)
    }

    fn generate(&mut self, prompt: &str, seed: u64, version: &Vec<usize>) -> Result<RgbImage> {
        self.prompts
            .push((prompt.to_string(), seed, version.clone()));
        let mut h = DefaultHasher::new();
        (prompt, seed, version).hash(&mut h);
        let key = h.finish();
        Ok(RgbImage::from_fn(64, 64, |x, y| {
            let v = key.rotate_left((x * 3 + y * 5) % 64);
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        }))
    }
}

fn settings(mode: Mode, seeds: Vec<u64>, limit: usize) -> RunSettings {
    RunSettings {
        mode,
        seeds,
        dataset: "road_sample.csv".into(),
        format: DatasetFormat::Road,
        limit: Some(limit),
        backend: serde_json::json!({"backend": "fake"}),
    }
}

fn road() -> Vec<EvalCase> {
    load(&data_file("road_sample.csv"), DatasetFormat::Road).unwrap()
}

fn scorer() -> Scorer {
    Scorer::load(&scorer_dir(), &Device::Cpu, DType::F32).unwrap()
}

#[test]
fn edit_mode_writes_all_outputs_and_a_rerun_skips_done_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (cases, scorer) = (road(), scorer());
    let mut backend = FakeBackend::default();
    let s = settings(Mode::Edit, vec![0, 1], 2);
    let results = run(&mut backend, &scorer, &cases, &s, dir.path(), true).unwrap();

    // Each row edits a clean model.
    assert_eq!(backend.edits, vec![(1, vec![]), (2, vec![])]);
    // 2 rows × 2 seeds × 11 prompts, before and after.
    assert_eq!(backend.prompts.len(), 2 * 2 * 11 * 2);
    let layout = Layout::new(dir.path());
    for path in [
        layout.results_json(),
        layout.results_markdown(),
        layout.report_html(),
        layout.row_result(1),
        layout.row_result(2),
    ] {
        assert!(path.is_file(), "{} missing", path.display());
    }
    assert!(layout
        .image(2, Side::Before, Slot::Negative(4), 1)
        .is_file());
    assert!(layout.image(2, Side::After, Slot::Edit, 0).is_file());
    assert_eq!(results.methods.len(), 2, "baseline and ReFACT lines");
    assert_eq!(results.methods[1].method, "ReFACT");
    assert_eq!(results.methods[1].summary.rows, 2);
    assert_eq!(results.methods[1].summary.efficacy.unwrap().seeds, 2);
    let md = std::fs::read_to_string(layout.results_markdown()).unwrap();
    assert!(
        md.contains("| Method | Efficacy | Generality | Specificity | F1 |"),
        "{md}"
    );
    let html = std::fs::read_to_string(layout.report_html()).unwrap();
    assert!(html.contains("images/row-001/after/edit_s0.png"));
    assert!(html.contains("ana núñez"));

    // The stored comparison is the scorer's logits of the saved image for the row's texts.
    let row: RowResult =
        serde_json::from_str(&std::fs::read_to_string(layout.row_result(2)).unwrap()).unwrap();
    let image = image::open(layout.image(2, Side::After, Slot::Positive(1), 1))
        .unwrap()
        .to_rgb8();
    let p = &row.case.positives[1];
    let logits = scorer
        .score(&image, &[p.new.clone(), p.old.clone()])
        .unwrap()
        .logits_per_image;
    let stored = row.tests[1].generality[1];
    assert!((stored.wanted - logits[0]).abs() < 1e-4 && (stored.other - logits[1]).abs() < 1e-4);
    let image = image::open(layout.image(2, Side::Before, Slot::Negative(0), 0))
        .unwrap()
        .to_rgb8();
    let n = &row.case.negatives[0];
    let logits = scorer
        .score(&image, &[n.prompt.clone(), n.new.clone()])
        .unwrap()
        .logits_per_image;
    let stored = row.unedited_tests.as_ref().unwrap()[0].specificity[0];
    assert!((stored.wanted - logits[0]).abs() < 1e-4 && (stored.other - logits[1]).abs() < 1e-4);

    // A rerun does nothing but rewrite the reports, with the same numbers.
    let mut again = FakeBackend::default();
    let rerun = run(&mut again, &scorer, &cases, &s, dir.path(), true).unwrap();
    assert!(again.edits.is_empty() && again.prompts.is_empty());
    assert_eq!(rerun, results);

    // A larger limit does only the new row.
    let mut more = FakeBackend::default();
    let grown = run(
        &mut more,
        &scorer,
        &cases,
        &settings(Mode::Edit, vec![0, 1], 3),
        dir.path(),
        true,
    )
    .unwrap();
    assert_eq!(more.edits, vec![(3, vec![])]);
    assert_eq!(grown.rows.len(), 3);

    // Other settings in the same folder are refused.
    let err = run(
        &mut FakeBackend::default(),
        &scorer,
        &cases,
        &settings(Mode::Edit, vec![0, 1, 2], 3),
        dir.path(),
        true,
    );
    assert!(err.is_err());
}

#[test]
fn sequential_mode_stacks_edits_and_reuses_saved_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cases, scorer) = (road(), scorer());
    let s = settings(Mode::Sequential, vec![0], 2);
    let mut backend = FakeBackend::default();
    run(&mut backend, &scorer, &cases, &s, dir.path(), true).unwrap();
    // Edit 2 is computed on version 1; every row is judged on the final version.
    assert_eq!(backend.edits, vec![(1, vec![]), (2, vec![1])]);
    assert!(backend
        .prompts
        .iter()
        .filter(|p| !p.2.is_empty())
        .all(|p| p.2 == vec![1, 2]));

    // Lose row 2's result: the rerun reloads both edits instead of recomputing them.
    std::fs::remove_file(Layout::new(dir.path()).row_result(2)).unwrap();
    let mut again = FakeBackend::default();
    run(&mut again, &scorer, &cases, &s, dir.path(), true).unwrap();
    assert!(again.edits.is_empty());
    assert_eq!(again.prompts.len(), 11 * 2);
    assert!(again
        .prompts
        .iter()
        .filter(|p| !p.2.is_empty())
        .all(|p| p.2 == vec![1, 2]));
}

#[test]
fn oracle_mode_generates_new_prompts_unedited_and_negatives_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cases, scorer) = (road(), scorer());
    let mut backend = FakeBackend::default();
    let results = run(
        &mut backend,
        &scorer,
        &cases,
        &settings(Mode::Oracle, vec![0], 1),
        dir.path(),
        true,
    )
    .unwrap();
    assert!(backend.edits.is_empty());
    assert!(
        backend.prompts.iter().all(|p| p.2.is_empty()),
        "the oracle never edits"
    );
    let prompts: Vec<&str> = backend.prompts.iter().map(|p| p.0.as_str()).collect();
    assert!(prompts.contains(&"ana núñez as the mayor of springfield"));
    assert!(prompts.contains(&"ana núñez playing guitar"));
    // 11 unedited images + the oracle's edit prompt and 5 positives; negatives are shared.
    assert_eq!(backend.prompts.len(), 11 + 6);
    assert_eq!(
        results
            .methods
            .iter()
            .map(|m| m.method.as_str())
            .collect::<Vec<_>>(),
        ["Baseline", "Oracle"]
    );
    // Oracle specificity is the baseline's: same images, same texts.
    assert_eq!(
        results.methods[0].summary.specificity,
        results.methods[1].summary.specificity
    );
}

#[test]
fn baseline_mode_makes_only_unedited_images() {
    let dir = tempfile::tempdir().unwrap();
    let (cases, scorer) = (road(), scorer());
    let mut backend = FakeBackend::default();
    let results = run(
        &mut backend,
        &scorer,
        &cases,
        &settings(Mode::Baseline, vec![3], 1),
        dir.path(),
        true,
    )
    .unwrap();
    assert_eq!(backend.prompts.len(), 11);
    assert!(backend.prompts.iter().all(|p| p.1 == 3 && p.2.is_empty()));
    assert_eq!(results.methods.len(), 1);
    assert_eq!(results.methods[0].method, "Baseline");
}
