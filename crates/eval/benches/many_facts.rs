//! The many-facts report (issue 14): the text check of batch edits against the same facts
//! edited one after another, and of a long run of sequential edits, on a random-weight
//! encoder (no real weights can be fetched here).
//!
//!     cargo bench -p refact-eval --bench many_facts -- [--model fixture|vit-l|sdxl|sdxl-sizes]
//!         [--data DIR] [--sizes 1,10,100] [--sequential 1000] [--max-steps N] [--out DIR]
//!         [--spread N] [--first-ten-only]
//!
//! - `--model`: `fixture` (tests/fixtures/tiny-sd-48, hidden 48, MLP 96), `vit-l` (CLIP
//!   ViT-L/14 text-encoder sizes, random weights), `sdxl` (tests/fixtures/tiny-sdxl: both
//!   encoders) or `sdxl-sizes` (SDXL's two encoders at their real sizes, ViT-L/14 and
//!   OpenCLIP ViT-bigG/14 with its projection, random weights). With two encoders every
//!   edit changes both, each at its own default layer, as the server's edits do by
//!   default, and the text check reads both encoders' representations together.
//! - `--data`: a folder holding `RoAD_validation.csv` and `TIMED_validation_set.csv`; their
//!   rows come first, synthetic facts in RoAD's shape (`refact_testkit::facts`) fill up to
//!   the sizes asked for. Without it the repository's samples are used.
//! - `--sizes`: batch sizes; each is compared with the same facts edited sequentially.
//!   A batch larger than the MLP's inner size cannot give every key its value (the delta's
//!   rank is bounded by it) and is reported as skipped.
//! - `--sequential`: edits of the long sequential run; the first 10 facts' text check is
//!   re-measured after every tenth of it. 0 skips the run.
//! - `--spread N`: also edit each batch spread over the N layers ending at the edited one
//!   (`compute_spread_edit`), as another row.
//! - `--first-ten-only`: at the checkpoints of the sequential run, check only the first
//!   10 facts (checking every fact so far costs more than the edits at ViT-L sizes).
//! - `--out`: writes `<model>.md` and `<model>-sequential.svg` there.
//!
//! The text check is `refact_eval::text_check`: efficacy (edit prompt nearer the target
//! than the source), generality (RoAD positives nearer their new text) and specificity
//! (negatives nearer themselves than their edited variant), with the unedited encoder's
//! representations as reference points.

use candle_core::Device;
use refact_engine::deltas::DeltaSet;
use refact_engine::deltas::TextEncoderId;
use refact_engine::model::TextModel;
use refact_engine::refact::{
    compute_batch_edit, compute_edit, compute_spread_edit, default_layer, Corpus, EditRequest,
    HyperParams, LayerStatistics, ValidatedEdit,
};
use refact_engine::text_encoder::{Activation, ClipTextConfig, Readout};
use refact_eval::dataset::{load, DatasetFormat, EvalCase, Negative, Positive};
use refact_eval::metrics::{summarise, Summary};
use refact_eval::text_check::check_edit;
use refact_testkit::facts::synthetic_fact;
use refact_testkit::{fixture, workspace_root};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    model: String,
    data: Option<PathBuf>,
    sizes: Vec<usize>,
    sequential: usize,
    max_steps: usize,
    first_ten_only: bool,
    out: Option<PathBuf>,
    spread: usize,
}

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let number = |flag: &str, default: usize| {
        arg_value(&args, flag).map_or(default, |v| v.parse().expect("a number"))
    };
    Options {
        model: arg_value(&args, "--model").unwrap_or_else(|| "fixture".into()),
        data: arg_value(&args, "--data").map(PathBuf::from),
        sizes: arg_value(&args, "--sizes")
            .unwrap_or_else(|| "1,10,100".into())
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().parse().expect("--sizes: numbers"))
            .collect(),
        sequential: number("--sequential", 1000),
        max_steps: number("--max-steps", HyperParams::default().max_steps),
        first_ten_only: args.iter().any(|a| a == "--first-ten-only"),
        spread: number("--spread", 1),
        out: arg_value(&args, "--out").map(PathBuf::from),
    }
}

/// The text encoders `name` edits, in pipeline order.
fn load_models(name: &str) -> Vec<TextModel> {
    let random = |config: ClipTextConfig, seed: u64| {
        TextModel::random(
            config,
            seed,
            &workspace_root().join("assets/clip-bpe"),
            &Device::Cpu,
        )
        .expect("random text encoder")
    };
    match name {
        "fixture" => {
            vec![TextModel::load(&fixture("tiny-sd-48"), &Device::Cpu).expect("fixture")]
        }
        "vit-l" => vec![random(ClipTextConfig::vit_l14(), 2024)],
        "sdxl" => TextModel::load_all(&fixture("tiny-sdxl"), &Device::Cpu).expect("fixture"),
        "sdxl-sizes" => {
            let mut first = random(ClipTextConfig::vit_l14(), 2024);
            first.encoder = first
                .encoder
                .in_pipeline(TextEncoderId::Text, Readout::Penultimate);
            // OpenCLIP ViT-bigG/14's text tower as SDXL's text_encoder_2/config.json has it.
            let big_g = ClipTextConfig {
                hidden_size: 1280,
                intermediate_size: 5120,
                num_hidden_layers: 32,
                num_attention_heads: 20,
                hidden_act: Activation::Gelu,
                ..ClipTextConfig::vit_l14()
            };
            let mut second = random(big_g, 2025);
            let projection =
                candle_core::Tensor::randn(0f32, 1.0 / 1280f32.sqrt(), (1280, 1280), &Device::Cpu)
                    .expect("projection");
            second.encoder = second.encoder.in_pipeline(
                TextEncoderId::Text2,
                Readout::PenultimateAndProjection(projection),
            );
            vec![first, second]
        }
        other => panic!("unknown model {other}: fixture, vit-l, sdxl or sdxl-sizes"),
    }
}

/// The dataset rows (RoAD, then TIMED), then synthetic facts, `n` in all; rows whose
/// subject repeats an earlier one are left out (a batch cannot hold both).
fn facts(data: Option<&Path>, n: usize) -> (Vec<EvalCase>, usize) {
    let (road, timed) = match data {
        Some(dir) => (
            dir.join("RoAD_validation.csv"),
            dir.join("TIMED_validation_set.csv"),
        ),
        None => (
            refact_testkit::data_file("road_sample.csv"),
            refact_testkit::data_file("timed_sample.csv"),
        ),
    };
    let mut cases = load(&road, DatasetFormat::Road).expect("RoAD rows");
    cases.extend(load(&timed, DatasetFormat::Timed).expect("TIMED rows"));
    let mut seen = HashSet::new();
    cases.retain(|c| seen.insert(c.edit_prompt.to_lowercase()));
    cases.truncate(n);
    let from_data = cases.len();
    let mut i = 0;
    while cases.len() < n {
        let fact = synthetic_fact(i);
        i += 1;
        if !seen.insert(fact.prompt.to_lowercase()) {
            continue;
        }
        cases.push(EvalCase {
            row: cases.len() + 1,
            kind: None,
            edit_prompt: fact.prompt,
            source: fact.source,
            target: fact.target,
            oracle: None,
            positives: fact
                .positives
                .into_iter()
                .map(|(prompt, old, new)| Positive {
                    prompt,
                    old,
                    new,
                    oracle: None,
                })
                .collect(),
            negatives: fact
                .negatives
                .into_iter()
                .map(|(prompt, new)| Negative { prompt, new })
                .collect(),
        });
    }
    (cases, from_data)
}

/// One text encoder's part of every edit: its model, the layer edited and its statistics.
struct Side {
    model: TextModel,
    layer: usize,
    stats: Arc<LayerStatistics>,
    /// Statistics of the layers below `layer` that a spread batch also edits, lowest
    /// first (empty without `--spread`).
    lower_stats: Vec<Arc<LayerStatistics>>,
}

impl Side {
    fn validated(&self, cases: &[EvalCase], hparams: &HyperParams) -> Vec<ValidatedEdit> {
        cases
            .iter()
            .map(|case| {
                let mut request = EditRequest::new(&case.edit_prompt, &case.source, &case.target);
                request.layer = Some(self.layer);
                request.hparams = hparams.clone();
                request
                    .validate(&self.model.tokenizer, self.model.encoder.num_layers())
                    .unwrap_or_else(|e| panic!("{}: {e}", case.edit_prompt))
            })
            .collect()
    }
}

/// Edits every text encoder of the model (one, or SDXL's two) the same way.
struct Editor {
    sides: Vec<Side>,
    hparams: HyperParams,
}

impl Editor {
    /// All of `cases` as one batch on the base model: one delta per encoder.
    fn batch(&self, cases: &[EvalCase]) -> refact_engine::Result<DeltaSet> {
        let mut version = DeltaSet::empty();
        for side in &self.sides {
            let outcome = compute_batch_edit(
                &side.model.encoder,
                &side.model.tokenizer,
                &side.stats,
                &side.validated(cases, &self.hparams),
                &DeltaSet::empty(),
                &mut |_, _| ControlFlow::Continue(()),
            )?;
            version = version.with(Arc::new(outcome.delta));
        }
        Ok(version)
    }

    /// All of `cases` as one batch spread over the lower layers and `layer`, per encoder.
    fn spread_batch(&self, cases: &[EvalCase]) -> refact_engine::Result<DeltaSet> {
        let mut version = DeltaSet::empty();
        for side in &self.sides {
            let mut statistics = side.lower_stats.clone();
            statistics.push(side.stats.clone());
            let outcome = compute_spread_edit(
                &side.model.encoder,
                &side.model.tokenizer,
                &statistics,
                &side.validated(cases, &self.hparams),
                &DeltaSet::empty(),
                &mut |_, _| ControlFlow::Continue(()),
            )?;
            version = outcome
                .deltas
                .into_iter()
                .fold(version, |set, d| set.with(Arc::new(d)));
        }
        Ok(version)
    }

    /// One more edit on top of `version` (each encoder edited from `version`).
    fn then(&self, version: &DeltaSet, case: &EvalCase) -> DeltaSet {
        let mut next = version.clone();
        for side in &self.sides {
            let edit = &side.validated(std::slice::from_ref(case), &self.hparams)[0];
            let outcome = compute_edit(
                &side.model.encoder,
                &side.model.tokenizer,
                &side.stats,
                edit,
                version,
                &mut |_| ControlFlow::Continue(()),
            )
            .expect("sequential edit");
            next = next.with(Arc::new(outcome.delta));
        }
        next
    }

    /// The text check of `cases` at `version`, reference points from the base model.
    fn check(&self, version: &DeltaSet, cases: &[EvalCase]) -> Summary {
        let models: Vec<&TextModel> = self.sides.iter().map(|s| &s.model).collect();
        let rows: Vec<_> = cases
            .iter()
            .map(
                |case| vec![check_edit(&models, &DeltaSet::empty(), version, case).expect("check")],
            )
            .collect();
        summarise(&rows)
    }

    /// The smallest MLP inner size of the edited encoders: no batch can be larger.
    fn inner(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.model.encoder.config().intermediate_size)
            .min()
            .unwrap_or(0)
    }

    fn spreads(&self) -> bool {
        self.sides.iter().any(|s| !s.lower_stats.is_empty())
    }
}

fn cell(stat: Option<refact_eval::metrics::Stat>) -> String {
    stat.map_or("n/a".into(), |s| format!("{:.2}", s.mean))
}

fn summary_cells(s: &Summary) -> String {
    format!(
        "{} | {} | {}",
        cell(s.efficacy),
        cell(s.generality),
        cell(s.specificity)
    )
}

/// One point of the long sequential run.
struct Checkpoint {
    edits: usize,
    /// The first ten facts' text check (the first `edits` while fewer are edited).
    first_ten: Summary,
    all: Summary,
}

/// One line of the chart: its name, its colour and the value it reads from a checkpoint.
type Series = (&'static str, &'static str, fn(&Checkpoint) -> Option<f64>);

/// A line chart of the first ten facts' efficacy and specificity, and every fact's
/// efficacy, over the sequential run.
fn svg(points: &[Checkpoint], title: &str) -> String {
    let (w, h, pad) = (640.0, 320.0, 48.0);
    let max_x = points.last().map_or(1, |p| p.edits.max(1)) as f64;
    let x = |e: usize| pad + (w - 2.0 * pad) * e as f64 / max_x;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v;
    let series: [Series; 3] = [
        ("first 10 facts: efficacy", "#1f77b4", |p| {
            p.first_ten.efficacy.map(|s| s.mean)
        }),
        ("first 10 facts: specificity", "#2ca02c", |p| {
            p.first_ten.specificity.map(|s| s.mean)
        }),
        ("all facts so far: efficacy", "#d62728", |p| {
            p.all.efficacy.map(|s| s.mean)
        }),
    ];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{pad}\" y=\"20\">{title}</text>\n"
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let (right, at, label) = (w - pad, y(tick), y(tick) + 4.0);
        let _ = writeln!(
            out,
            "<line x1=\"{pad}\" x2=\"{right}\" y1=\"{at}\" y2=\"{at}\" stroke=\"#ddd\"/>\
             <text x=\"8\" y=\"{label}\">{tick:.2}</text>"
        );
    }
    for p in points {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(p.edits),
            h - pad + 16.0,
            p.edits
        );
    }
    for (i, (name, colour, value)) in series.iter().enumerate() {
        // A series the run did not measure (`--first-ten-only`) is left out.
        let path: Vec<String> = points
            .iter()
            .filter_map(|p| value(p).map(|v| format!("{:.1},{:.1}", x(p.edits), y(v))))
            .collect();
        if path.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
            path.join(" "),
            w - pad - 190.0,
            h - pad - 60.0 + 16.0 * i as f64
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">sequential edits</text>\n</svg>",
        w / 2.0,
        h - 8.0
    );
    out
}

fn main() {
    refact_engine::device::prefer_single_threaded_elementwise_ops();
    refact_engine::device::pin_matmul_thread_count();
    refact_engine::device::keep_freed_memory_mapped();
    let options = options();
    let models = load_models(&options.model);
    let needed = options
        .sizes
        .iter()
        .copied()
        .chain([options.sequential])
        .max()
        .unwrap_or(1);
    let (cases, from_data) = facts(options.data.as_deref(), needed);
    let sample = Corpus::Builtin.captions(2000).expect("captions");
    let sides: Vec<Side> = models
        .into_iter()
        .map(|model| {
            let statistics_of = |layer: usize| {
                Arc::new(
                    LayerStatistics::compute(
                        &model.encoder,
                        &model.tokenizer,
                        layer,
                        &sample,
                        &model.fingerprint,
                        &mut |_, _| true,
                    )
                    .expect("statistics"),
                )
            };
            let layer = default_layer(model.encoder.num_layers());
            let stats = statistics_of(layer);
            let lower_stats = (layer + 1 - options.spread.clamp(1, layer + 1)..layer)
                .map(statistics_of)
                .collect();
            Side {
                model,
                layer,
                stats,
                lower_stats,
            }
        })
        .collect();
    let editor = Editor {
        sides,
        hparams: HyperParams {
            max_steps: options.max_steps,
            ..HyperParams::default()
        },
    };
    let inner = editor.inner();
    let layers: Vec<String> = editor
        .sides
        .iter()
        .map(|s| {
            format!(
                "{}: layer {}, MLP inner size {}",
                s.model.encoder.id(),
                s.layer,
                s.model.encoder.config().intermediate_size
            )
        })
        .collect();

    let mut report = String::new();
    let _ = writeln!(
        report,
        "## {} (random weights); {}\n\n\
         Facts: {from_data} dataset rows ({}), then synthetic facts in RoAD's shape. \
         Statistics from 2,000 built-in captions; at most {} iterations per fact.\n",
        options.model,
        layers.join("; "),
        options
            .data
            .as_deref()
            .map_or("the repository's samples".into(), |d| d
                .display()
                .to_string()),
        options.max_steps
    );
    let _ = writeln!(
        report,
        "### One batch vs the same facts edited sequentially\n\n\
         | facts | how | efficacy | generality | specificity | time |\n|---|---|---|---|---|---|"
    );
    for &n in &options.sizes {
        let facts = &cases[..n];
        // Where the text check stands without any edit: on random weights a fact's
        // target is nearer than its source about half the time by chance.
        let unedited = editor.check(&DeltaSet::empty(), facts);
        let _ = writeln!(
            report,
            "| {n} | unedited | {} | |",
            summary_cells(&unedited)
        );
        if n > inner {
            let _ = writeln!(
                report,
                "| {n} | batch | skipped: more facts than the MLP's inner size ({inner}) | | | |"
            );
        } else {
            let start = Instant::now();
            match editor.batch(facts) {
                Ok(version) => {
                    let secs = start.elapsed().as_secs_f64();
                    let summary = editor.check(&version, facts);
                    let _ = writeln!(
                        report,
                        "| {n} | batch | {} | {secs:.1} s |",
                        summary_cells(&summary)
                    );
                }
                Err(err) => {
                    let _ = writeln!(report, "| {n} | batch | failed: {err} | | | |");
                }
            }
            if editor.spreads() {
                let how = format!("batch, spread over {} layers", options.spread);
                let start = Instant::now();
                match editor.spread_batch(facts) {
                    Ok(version) => {
                        let secs = start.elapsed().as_secs_f64();
                        let summary = editor.check(&version, facts);
                        let _ = writeln!(
                            report,
                            "| {n} | {how} | {} | {secs:.1} s |",
                            summary_cells(&summary)
                        );
                    }
                    Err(err) => {
                        let _ = writeln!(report, "| {n} | {how} | failed: {err} | | | |");
                    }
                }
            }
        }
        let start = Instant::now();
        let mut version = DeltaSet::empty();
        for case in facts {
            version = editor.then(&version, case);
        }
        let secs = start.elapsed().as_secs_f64();
        let summary = editor.check(&version, facts);
        let _ = writeln!(
            report,
            "| {n} | sequential | {} | {secs:.1} s |",
            summary_cells(&summary)
        );
        eprint!("{report}");
    }

    let mut checkpoints = Vec::new();
    if options.sequential > 0 {
        let every = (options.sequential / 10).max(1);
        let mut version = DeltaSet::empty();
        let start = Instant::now();
        for (i, case) in cases[..options.sequential].iter().enumerate() {
            version = editor.then(&version, case);
            let done = i + 1;
            // Also right after the first ten: where they start from.
            if done % every == 0 || done == 10 || done == options.sequential {
                let first_ten = editor.check(&version, &cases[..10.min(done)]);
                let all = if options.first_ten_only {
                    summarise(&[])
                } else {
                    editor.check(&version, &cases[..done])
                };
                eprintln!(
                    "{done} sequential edits ({:.0} s): first 10 {}, all so far {}",
                    start.elapsed().as_secs_f64(),
                    summary_cells(&first_ten),
                    summary_cells(&all)
                );
                checkpoints.push(Checkpoint {
                    edits: done,
                    first_ten,
                    all,
                });
            }
        }
        let _ = writeln!(
            report,
            "\n### {} sequential edits ({:.0} s in all)\n\n\
             | edits | first 10: efficacy | generality | specificity | all so far: efficacy | generality | specificity |\n\
             |---|---|---|---|---|---|---|",
            options.sequential,
            start.elapsed().as_secs_f64()
        );
        for p in &checkpoints {
            let _ = writeln!(
                report,
                "| {} | {} | {} |",
                p.edits,
                summary_cells(&p.first_ten),
                summary_cells(&p.all)
            );
        }
    }
    println!("{report}");
    if let Some(out) = options.out {
        std::fs::create_dir_all(&out).expect("out folder");
        std::fs::write(out.join(format!("{}.md", options.model)), &report).expect("report");
        if !checkpoints.is_empty() {
            let title = format!(
                "{}: text check over {} sequential edits",
                options.model, options.sequential
            );
            std::fs::write(
                out.join(format!("{}-sequential.svg", options.model)),
                svg(&checkpoints, &title),
            )
            .expect("plot");
        }
    }
}
