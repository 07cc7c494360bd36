//! Engine benchmark at Stable Diffusion v1.5 sizes with random weights.
//!
//! `cargo bench -p refact-engine --bench engine [-- --reps N] [--quick] [--device D]
//! [--dtype T]` prints a
//! Markdown table: the CLIP ViT-L/14 text encoder on 10 prompts (at the base version and
//! at a version holding 1,000 rank-one edits of layer 7), one UNet step with
//! classifier-free guidance (batch 2) at 256 and 512 px, the VAE decode at 256 and
//! 512 px, and a whole 512 px image on the tiny-sd fixture, 4 steps (`--quick` skips
//! the 512 px cases, the slow ones), with the peak resident
//! memory of each case. Each case runs in a child process of this binary
//! (`--case NAME`) so that its `VmHWM` is its own. `--case sdxlunet-N` (not in the
//! table: 10 GiB of f32 weights) times one step of SDXL base's UNet at N px;
//! `--case vaetiled-N` the VAE decode at N px in bands (`VaeTiling`, latents above 64
//! cells).
//!
//! Weights are random (`RandomWeights`), never `VarBuilder::zeros`: zero pages are never
//! touched, which hides most of the memory and flatters the time.

use candle_core::{DType, Device, Tensor};
use refact_engine::deltas::{Delta, DeltaSet, TextEncoderId};
use refact_engine::device::{parse_device, parse_dtype};
use refact_engine::model::random_weights::RandomWeights;
use refact_engine::model::stable_diffusion::StableDiffusion;
use refact_engine::pipeline::GenerateParams;
use refact_engine::scheduler::SchedulerKind;
use refact_engine::text_encoder::{ClipTextConfig, ClipTextEncoder};
use refact_engine::unet::{AddedConditioning, UNet2DConditionModel, UNetConfig};
use refact_engine::vae::{Vae, VaeConfig, VaeTiling};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// The allocator the `refact` binary (the service) runs with, so that these figures are
/// the service's: the system allocator returns the large intermediate tensors to the
/// kernel and faults fresh zeroed pages in for the next step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One measured case: what it runs and at which image size.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// 10 prompts of `tokens` tokens each (77: padded, as generation encodes them).
    TextEncoder { tokens: usize },
    /// 10 prompts of 77 tokens at a version holding `edits` rank-one edits of layer 7,
    /// prepared once as the service does when a version is loaded.
    EditedTextEncoder { edits: usize },
    /// One step of SD v1.5's UNet on `rows` inputs (2: one image with CFG; the table's
    /// case). `--case unetrowsR-N` times R rows, to see how a batch's per-image cost
    /// grows on a device.
    UnetStep { pixels: usize, rows: usize },
    /// One step of SDXL base's UNet (2.6 B parameters): CFG batch 2, the 2048-wide
    /// context of both text encoders, pooled text and size numbers.
    SdxlUnetStep { pixels: usize },
    /// The VAE decode of `rows` latents in one call (1 in the table; `--case
    /// vaerowsR-N` decodes R, as a batch of the service does at 256 px).
    VaeDecode { pixels: usize, rows: usize },
    /// A whole image on the tiny-sd fixture (tests/fixtures/tiny-sd, its own PNDM
    /// scheduler): prompt, 4 steps with guidance, VAE decode. Tiny weights at a full
    /// image size: what the evaluation runner waits for on the fixture.
    FixtureImage { pixels: usize },
    /// The VAE decode in bands (`VaeTiling`, for latents above 64 cells, 512 px): what
    /// banding saves in peak memory and costs in time against `vae-N`.
    TiledVaeDecode { pixels: usize },
}

/// `vaetiled-N` decodes in bands latents with a side above this many cells.
const BENCH_VAE_TILE: usize = 64;

impl Case {
    fn name(self) -> String {
        match self {
            Case::TextEncoder { tokens } => format!("text-{tokens}"),
            Case::EditedTextEncoder { edits } => format!("edited-{edits}"),
            Case::UnetStep { pixels, rows: 2 } => format!("unet-{pixels}"),
            Case::UnetStep { pixels, rows } => format!("unetrows{rows}-{pixels}"),
            Case::SdxlUnetStep { pixels } => format!("sdxlunet-{pixels}"),
            Case::VaeDecode { pixels, rows: 1 } => format!("vae-{pixels}"),
            Case::VaeDecode { pixels, rows } => format!("vaerows{rows}-{pixels}"),
            Case::FixtureImage { pixels } => format!("fixture-{pixels}"),
            Case::TiledVaeDecode { pixels } => format!("vaetiled-{pixels}"),
        }
    }

    fn describe(self) -> String {
        match self {
            Case::TextEncoder { tokens } => {
                format!("CLIP ViT-L/14 text encoder, 10 prompts × {tokens} tokens (f32)")
            }
            Case::EditedTextEncoder { edits } => format!(
                "CLIP ViT-L/14 text encoder, 10 prompts × 77 tokens, version of {edits} edits (f32)"
            ),
            Case::UnetStep { pixels, rows } => format!(
                "UNet step, {kind} {rows}, {pixels} px (latent {latent}×{latent}, 77 tokens)",
                kind = if rows == 2 { "CFG batch" } else { "batch" },
                latent = pixels / 8
            ),
            Case::SdxlUnetStep { pixels } => format!(
                "SDXL UNet step, CFG batch 2, {pixels} px (latent {0}×{0}, 77 tokens)",
                pixels / 8
            ),
            Case::VaeDecode { pixels, rows: 1 } => {
                format!("VAE decode, {pixels} px (latent {0}×{0})", pixels / 8)
            }
            Case::VaeDecode { pixels, rows } => {
                format!(
                    "VAE decode, {rows} × {pixels} px (latent {0}×{0})",
                    pixels / 8
                )
            }
            Case::FixtureImage { pixels } => {
                format!("whole image on the tiny-sd fixture, {pixels} px, {FIXTURE_STEPS} steps")
            }
            Case::TiledVaeDecode { pixels } => {
                format!("VAE decode, {pixels} px, in bands (latents above {BENCH_VAE_TILE} cells)")
            }
        }
    }

    fn parse(name: &str) -> Option<Case> {
        let (kind, pixels) = name.split_once('-')?;
        let pixels = pixels.parse().ok()?;
        match kind {
            "text" => Some(Case::TextEncoder { tokens: pixels }),
            "edited" => Some(Case::EditedTextEncoder { edits: pixels }),
            "unet" => Some(Case::UnetStep { pixels, rows: 2 }),
            rows if rows.starts_with("unetrows") => Some(Case::UnetStep {
                pixels,
                rows: rows["unetrows".len()..].parse().ok()?,
            }),
            "sdxlunet" => Some(Case::SdxlUnetStep { pixels }),
            "vae" => Some(Case::VaeDecode { pixels, rows: 1 }),
            rows if rows.starts_with("vaerows") => Some(Case::VaeDecode {
                pixels,
                rows: rows["vaerows".len()..].parse().ok()?,
            }),
            "fixture" => Some(Case::FixtureImage { pixels }),
            "vaetiled" => Some(Case::TiledVaeDecode { pixels }),
            _ => None,
        }
    }
}

/// What a child process reports on its last stdout line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Measurement {
    /// Seconds of each timed run (model construction excluded).
    secs: Vec<f64>,
    /// Seconds to build the model with random weights.
    build_secs: f64,
    /// Peak resident set size of the child, kB.
    peak_rss_kb: u64,
    device: String,
    dtype: String,
}

/// The whole-image case's settings; `tools/bench/side_by_side.py` renders the same.
const FIXTURE_PROMPT: &str = "a photo of an astronaut riding a horse";
const FIXTURE_STEPS: usize = 4;

const BOS: u32 = 49406;
const EOS: u32 = 49407;

/// Token ids [prompts, tokens]: BOS, ten word ids, EOS, then EOS padding up to
/// `tokens` (12: the prompt's true length, as ReFACT batches; 77: padded, as generation).
fn prompt_ids(prompts: usize, tokens: usize, device: &Device) -> Tensor {
    const WORDS: usize = 10;
    let tokens = tokens.clamp(WORDS + 2, 77);
    let mut ids = Vec::with_capacity(prompts * tokens);
    for p in 0..prompts {
        ids.push(BOS);
        ids.extend((0..WORDS).map(|w| 320 + ((p * 7919 + w * 104_729) % 40_000) as u32));
        ids.resize((p + 1) * tokens, EOS);
    }
    Tensor::from_vec(ids, (prompts, tokens), device).expect("ids")
}

/// 10 prompts of `tokens` tokens through the ViT-L/14 text encoder at a version of
/// `edits` edits (0: the base model): (seconds per run, seconds to build).
fn time_text_encoder(
    weights: &RandomWeights,
    device: &Device,
    reps: usize,
    tokens: usize,
    edits: usize,
) -> (Vec<f64>, f64) {
    let build = Instant::now();
    // The text encoder runs in f32 on every device.
    let vb = weights.var_builder(DType::F32, device);
    let config = ClipTextConfig::vit_l14();
    let encoder = ClipTextEncoder::new(vb, config.clone(), EOS).expect("encoder");
    let deltas = if edits == 0 {
        DeltaSet::empty()
    } else {
        random_edits(edits, &config, device)
    };
    let build_secs = build.elapsed().as_secs_f64();
    let ids = prompt_ids(10, tokens, device);
    let secs = time_runs(device, reps, || {
        encoder
            .forward(&ids, &deltas)
            .expect("encoder forward")
            .last_hidden_state
    });
    (secs, build_secs)
}

/// `edits` rank-one deltas of layer 7 with random unit `u` and `v` of an edit's size,
/// prepared (stacked, and above the dense threshold summed into one weight delta) as the
/// service prepares a version once when it is committed or loaded.
fn random_edits(edits: usize, config: &ClipTextConfig, device: &Device) -> DeltaSet {
    let (inner, hidden) = (config.intermediate_size, config.hidden_size);
    let random = |len: usize, std: f32| -> Vec<f32> {
        Tensor::randn(0f32, std, len, &Device::Cpu)
            .and_then(|t| t.to_vec1())
            .expect("random vector")
    };
    let deltas = (0..edits)
        .map(|_| {
            let mut u = random(inner, 1.0);
            let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
            u.iter_mut().for_each(|x| *x /= norm);
            Arc::new(Delta::rank_one(7, u, random(hidden, 0.1)))
        })
        .collect();
    let set = DeltaSet::new(deltas);
    set.prepare_for(TextEncoderId::Text, config.num_hidden_layers, device)
        .expect("prepare the version");
    set
}

fn config_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/configs")
        .join(file)
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn time_runs(device: &Device, reps: usize, mut run: impl FnMut() -> Tensor) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            let out = run();
            // Reading one value forces the work to finish on asynchronous devices.
            device.synchronize().expect("synchronize");
            let _ = out.flatten_all().and_then(|t| t.get(0)).expect("output");
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// Runs one case in this process and prints its measurement as JSON.
fn run_case(case: Case, reps: usize, target: &Target) {
    let device = parse_device(&target.device).expect("device");
    let dtype = parse_dtype(&target.dtype, &device).expect("dtype");
    // Unrecorded: a module that keeps a converted copy of a weight (the CPU's linear
    // layers keep theirs transposed) is charged for the copy alone, as when loading a
    // model folder.
    let weights = RandomWeights::unrecorded(0);
    let build = Instant::now();
    let secs = match case {
        Case::TextEncoder { tokens } => time_text_encoder(&weights, &device, reps, tokens, 0),
        Case::EditedTextEncoder { edits } => time_text_encoder(&weights, &device, reps, 77, edits),
        Case::UnetStep { pixels, rows } => {
            let config = UNetConfig::from_file(&config_path("sd15-unet.json")).expect("config");
            let vb = weights.var_builder(dtype, &device);
            let unet = UNet2DConditionModel::new(vb, &config).expect("unet");
            let build_secs = build.elapsed().as_secs_f64();
            let latent = pixels / 8;
            let sample = Tensor::randn(0f32, 1.0, (rows, 4, latent, latent), &device).unwrap();
            let context = Tensor::randn(0f32, 1.0, (rows, 77, 768), &device).unwrap();
            let secs = time_runs(&device, reps, || {
                unet.forward(&sample, 981.0, &context)
                    .expect("unet forward")
            });
            (secs, build_secs)
        }
        Case::SdxlUnetStep { pixels } => {
            let config = UNetConfig::from_file(&config_path("sdxl-unet.json")).expect("config");
            let vb = weights.var_builder(dtype, &device);
            let unet = UNet2DConditionModel::new(vb, &config).expect("unet");
            let build_secs = build.elapsed().as_secs_f64();
            let latent = pixels / 8;
            let sample = Tensor::randn(0f32, 1.0, (2, 4, latent, latent), &device).unwrap();
            let context = Tensor::randn(0f32, 1.0, (2, 77, 2048), &device).unwrap();
            let size = pixels as f32;
            let added = AddedConditioning {
                text_embeds: Tensor::randn(0f32, 1.0, (2, 1280), &device).unwrap(),
                time_ids: Tensor::new(&[[size, size, 0.0, 0.0, size, size]; 2], &device).unwrap(),
            };
            let secs = time_runs(&device, reps, || {
                unet.forward_with(&sample, 981.0, &context, Some(&added))
                    .expect("unet forward")
            });
            (secs, build_secs)
        }
        Case::VaeDecode { pixels, .. } | Case::TiledVaeDecode { pixels } => {
            let config = VaeConfig::from_file(&config_path("sd15-vae.json")).expect("config");
            let vb = weights.var_builder(dtype, &device);
            let mut vae = Vae::new(vb, &config).expect("vae");
            if matches!(case, Case::TiledVaeDecode { .. }) {
                vae.set_tiling(VaeTiling::with_tile(BENCH_VAE_TILE));
            }
            let build_secs = build.elapsed().as_secs_f64();
            let latent = pixels / 8;
            let rows = match case {
                Case::VaeDecode { rows, .. } => rows,
                _ => 1,
            };
            let latents = Tensor::randn(0f32, 1.0, (rows, 4, latent, latent), &device).unwrap();
            let secs = time_runs(&device, reps, || vae.decode(&latents).expect("vae decode"));
            (secs, build_secs)
        }
        Case::FixtureImage { pixels } => {
            let folder =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sd");
            let model =
                StableDiffusion::load_folder(&folder, "tiny-sd", &device, dtype).expect("fixture");
            let build_secs = build.elapsed().as_secs_f64();
            let mut params = GenerateParams::new(FIXTURE_PROMPT, SchedulerKind::Pndm);
            params.steps = FIXTURE_STEPS;
            (params.width, params.height) = (pixels, pixels);
            let deltas = DeltaSet::empty();
            let secs = time_runs(&device, reps, || {
                model
                    .generate(&params, &deltas, &mut |_, _| true)
                    .expect("generate")
            });
            (secs, build_secs)
        }
    };
    let measurement = Measurement {
        secs: secs.0,
        build_secs: secs.1,
        peak_rss_kb: peak_rss_kb(),
        device: format!("{device:?}"),
        dtype: format!("{dtype:?}"),
    };
    println!("{}", serde_json::to_string(&measurement).unwrap());
}

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn format_secs(secs: &[f64]) -> String {
    let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = secs.iter().copied().fold(0.0, f64::max);
    if secs.len() == 1 || (max - min) < 0.005 {
        format!("{min:.2} s")
    } else {
        format!("{min:.2}–{max:.2} s")
    }
}

/// `--device` and `--dtype` as `refact` takes them (default `auto`: CUDA and f16 when
/// built with `--features cuda` and a GPU is there, else the CPU and f32).
struct Target {
    device: String,
    dtype: String,
}

impl Target {
    fn from_args(args: &[String]) -> Self {
        Target {
            device: arg_value(args, "--device").unwrap_or_else(|| "auto".into()),
            dtype: arg_value(args, "--dtype").unwrap_or_else(|| "auto".into()),
        }
    }
}

/// Runs every case in a child process and prints the table.
fn run_all(quick: bool, reps: usize, target: &Target) {
    let cases = [
        Case::TextEncoder { tokens: 12 },
        Case::TextEncoder { tokens: 77 },
        Case::EditedTextEncoder { edits: 1000 },
        Case::UnetStep {
            pixels: 256,
            rows: 2,
        },
        Case::UnetStep {
            pixels: 512,
            rows: 2,
        },
        Case::VaeDecode {
            pixels: 256,
            rows: 1,
        },
        Case::VaeDecode {
            pixels: 512,
            rows: 1,
        },
        Case::FixtureImage { pixels: 512 },
    ];
    let cases = cases.into_iter().filter(|case| {
        !quick
            || !matches!(
                case,
                Case::UnetStep { pixels: 512, .. }
                    | Case::VaeDecode { pixels: 512, .. }
                    | Case::FixtureImage { pixels: 512 }
            )
    });
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    for case in cases {
        eprintln!("running {} ...", case.name());
        let output = Command::new(&exe)
            .args(["--case", &case.name(), "--reps", &reps.to_string()])
            .args(["--device", &target.device, "--dtype", &target.dtype])
            .output()
            .expect("spawn child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let parsed = stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str::<Measurement>(line).ok());
        match parsed {
            Some(m) if output.status.success() => rows.push((case, m)),
            _ => {
                eprintln!(
                    "{} failed ({}): {}",
                    case.name(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    let Some((_, first)) = rows.first() else {
        return;
    };
    println!(
        "\nSD v1.5 sizes, random weights, {} {}, {} CPU threads, {reps} timed run(s) per case\n",
        first.device,
        first.dtype,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| case | time (min–max) | peak RSS | build (random init) |");
    println!("|---|---|---|---|");
    for (case, m) in rows {
        println!(
            "| {} | {} | {:.2} GB | {:.1} s |",
            case.describe(),
            format_secs(&m.secs),
            m.peak_rss_kb as f64 / 1e6,
            m.build_secs
        );
    }
    if quick {
        println!("\n(512 px cases skipped: run without `--quick` for them.)");
    }
}

fn main() {
    refact_engine::device::prefer_single_threaded_elementwise_ops();
    refact_engine::device::pin_matmul_thread_count();
    refact_engine::device::keep_freed_memory_mapped();
    let args: Vec<String> = std::env::args().collect();
    let reps = arg_value(&args, "--reps")
        .and_then(|r| r.parse().ok())
        .unwrap_or(2usize)
        .max(1);
    let target = Target::from_args(&args);
    match arg_value(&args, "--case") {
        Some(name) => {
            let case = Case::parse(&name).unwrap_or_else(|| panic!("unknown case `{name}`"));
            run_case(case, reps, &target);
        }
        None => run_all(args.iter().any(|a| a == "--quick"), reps, &target),
    }
}
