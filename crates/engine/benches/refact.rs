//! ReFACT benchmark: layer statistics over 2,000 and 25,000 captions, one edit, and batch
//! edits of 10 and 100 facts (statistics already computed), on the fixture model and on
//! CLIP ViT-L/14 text-encoder sizes with random weights.
//!
//! `edit` and `batch-N` run every fact the full 100 iterations (the worst case for a
//! batch); the `-early-stop` cases use the paper's stopping threshold, as the service
//! does. A batch's figure is the whole job: optimisation, insert and text check.
//!
//!     cargo bench -p refact-engine --bench refact [-- --device cuda] [-- --only vit-l]
//!
//! The device may also come from `REFACT_DEVICE` (the GPU check script sets it).
//!
//! Each case runs in a child process so its peak resident memory (VmHWM) is its own.
//! Prints a Markdown table. Figures depend on the machine: say which when you quote them.

use candle_core::Device;
use refact_engine::deltas::DeltaSet;
use refact_engine::model::TextModel;
use refact_engine::refact::{
    compute_batch_edit, Corpus, EditRequest, HyperParams, LayerStatistics, ValidatedEdit,
};
use refact_engine::text_encoder::ClipTextConfig;
use refact_testkit::facts::synthetic_facts;
use refact_testkit::{fixture_dir, workspace_root};
use std::ops::ControlFlow;
use std::process::Command;
use std::time::Instant;

/// The allocator the `refact` binary uses (see crates/server/src/main.rs): with glibc's,
/// a batch edit's many mid-sized temporaries are mapped and faulted in afresh each step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CASES: [(&str, &str); 14] = [
    ("fixture", "stats-2000"),
    ("fixture", "stats-25000"),
    ("fixture", "edit"),
    ("fixture", "batch-32"),
    ("fixture", "edit-early-stop"),
    ("fixture", "batch-32-early-stop"),
    ("vit-l", "stats-2000"),
    ("vit-l", "stats-25000"),
    ("vit-l", "edit"),
    ("vit-l", "batch-10"),
    ("vit-l", "batch-100"),
    ("vit-l", "edit-early-stop"),
    ("vit-l", "batch-10-early-stop"),
    ("vit-l", "batch-100-early-stop"),
];

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    refact_engine::device::prefer_single_threaded_elementwise_ops();
    refact_engine::device::pin_matmul_thread_count();
    refact_engine::device::keep_freed_memory_mapped();
    let args: Vec<String> = std::env::args().collect();
    let device = arg_value(&args, "--device")
        .or_else(|| std::env::var("REFACT_DEVICE").ok())
        .unwrap_or_else(|| "cpu".into());
    if let Some(case) = arg_value(&args, "--case") {
        let model = arg_value(&args, "--model").expect("--model");
        run_case(&model, &case, &device);
        return;
    }
    let only = arg_value(&args, "--only");
    println!("| model | case | device | time | peak RSS |");
    println!("|---|---|---|---|---|");
    for (model, case) in CASES {
        if only.as_deref().is_some_and(|o| o != model && o != case) {
            continue;
        }
        let out = Command::new(&args[0])
            .args(["--case", case, "--model", model, "--device", &device])
            .output()
            .expect("re-running the bench binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find(|l| l.starts_with("RESULT ")) {
            Some(line) => {
                let parts: Vec<&str> = line.split_whitespace().collect();
                println!(
                    "| {model} | {case} | {device} | {} | {} |",
                    parts[1], parts[2]
                );
            }
            None => println!(
                "| {model} | {case} | {device} | failed: {} | |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        }
    }
}

fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| {
            let kb: f64 = l
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            format!("{:.2}GB", kb / 1024.0 / 1024.0)
        })
        .unwrap_or_else(|| "?".into())
}

fn load(model: &str, device: &Device) -> TextModel {
    match model {
        "fixture" => TextModel::load(&fixture_dir(), device).expect("fixture model"),
        "vit-l" => TextModel::random(
            ClipTextConfig::vit_l14(),
            2024,
            &workspace_root().join("assets/clip-bpe"),
            device,
        )
        .expect("random ViT-L/14 text encoder"),
        other => panic!("unknown model {other}"),
    }
}

/// `edit`, `batch-N`, either with `-early-stop`: (facts, whether the paper's stopping
/// threshold applies).
fn parse_edit_case(case: &str) -> (usize, bool) {
    let (name, early_stop) = match case.strip_suffix("-early-stop") {
        Some(name) => (name, true),
        None => (case, false),
    };
    let facts = match name {
        "edit" => 1,
        _ => name
            .strip_prefix("batch-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unknown case {case}")),
    };
    (facts, early_stop)
}

/// The single edit is the paper's example; a batch adds synthetic facts after it.
fn edit_requests(facts: usize) -> Vec<EditRequest> {
    let mut requests = vec![EditRequest::new(
        "The Prince of Wales",
        "Prince Charles",
        "Prince William",
    )];
    requests.extend(
        synthetic_facts(facts - 1)
            .iter()
            .map(|f| EditRequest::new(&f.prompt, &f.source, &f.target)),
    );
    requests
}

fn run_case(model: &str, case: &str, device: &str) {
    let device = refact_engine::device::parse_device(device).expect("device");
    let text = load(model, &device);
    let layer = 7;
    let (seconds, detail) = match case {
        "stats-2000" | "stats-25000" => {
            let n = if case == "stats-2000" { 2000 } else { 25_000 };
            let sample = Corpus::Builtin.captions(n).unwrap();
            let start = Instant::now();
            let stats = LayerStatistics::compute(
                &text.encoder,
                &text.tokenizer,
                layer,
                &sample,
                &text.fingerprint,
                &mut |_, _| true,
            )
            .unwrap();
            (
                start.elapsed().as_secs_f64(),
                format!("{} tokens", stats.tokens),
            )
        }
        edit_case => {
            let (facts, early_stop) = parse_edit_case(edit_case);
            let sample = Corpus::Builtin.captions(2000).unwrap();
            let stats = LayerStatistics::compute(
                &text.encoder,
                &text.tokenizer,
                layer,
                &sample,
                &text.fingerprint,
                &mut |_, _| true,
            )
            .unwrap();
            let hparams = if early_stop {
                HyperParams::default()
            } else {
                // Threshold 1.0 never stops early: every fact runs the full 100 iterations.
                HyperParams {
                    prob_threshold: 1.0,
                    ..HyperParams::default()
                }
            };
            let edits: Vec<ValidatedEdit> = edit_requests(facts)
                .into_iter()
                .map(|mut request| {
                    request.hparams = hparams.clone();
                    request
                        .validate(&text.tokenizer, text.encoder.num_layers())
                        .unwrap()
                })
                .collect();
            let start = Instant::now();
            let outcome = compute_batch_edit(
                &text.encoder,
                &text.tokenizer,
                &stats,
                &edits,
                &DeltaSet::empty(),
                &mut |_, _| ControlFlow::Continue(()),
            )
            .unwrap();
            let iterations: usize = outcome
                .facts
                .iter()
                .map(|f| f.metrics.probabilities.len())
                .sum();
            let nearer = outcome
                .facts
                .iter()
                .filter(|f| f.metrics.text_check.nearer_target)
                .count();
            (
                start.elapsed().as_secs_f64(),
                format!("{facts} facts, {iterations} iterations in all, {nearer} nearer target"),
            )
        }
    };
    eprintln!("{model} {case}: {seconds:.2}s ({detail})");
    println!("RESULT {seconds:.2}s {}", peak_rss());
}
