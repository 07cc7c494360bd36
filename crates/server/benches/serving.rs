//! Serving benchmark: the real server (CPU and f32 unless told, SQLite) driven over HTTP
//! by `concurrency` clients, each sending its next request when the last one answers.
//! For batching on (`batching.max_batch` 8) and off (1), all requests at one version or
//! spread over 16 versions, it prints images/s and p50/p99 latency, and the ratios the
//! runtime issue targets: batched / one-at-a-time throughput, and 16 versions / one.
//!
//! `cargo bench -p refact-server --bench serving` (about a minute on 2 cores). Sizes:
//! `REFACT_BENCH_SIZE` (64 px), `REFACT_BENCH_STEPS` (4), `REFACT_BENCH_REQUESTS` per
//! cell (48); `REFACT_BENCH_MAX_WAIT_MS` overrides `batching.max_wait_ms`;
//! `REFACT_BENCH_CONCURRENCY` the levels (`1,4,8,16`).
//!
//! `REFACT_DEVICE` (`cpu`) and `REFACT_DTYPE` (`f32`) choose where the servers run: on a
//! GPU machine, a build with `--features cuda` and `REFACT_DEVICE=cuda REFACT_DTYPE=f16`
//! (as `scripts/gpu-check.sh` sets the device for every bench).
//!
//! `REFACT_BENCH_MODEL`: `fixture` (tests/fixtures/tiny-sd, the default) or `sd15`: random
//! weights at Stable Diffusion v1.5's sizes (ViT-L/14 text encoder, 860 M-parameter UNet,
//! VAE; the configs in crates/engine/benches/configs), written once (about 4 GB) to
//! `target/bench-models/sd15-random` in the diffusers layout and loaded like any folder.

use refact_engine::model::demo::{ensure_random_model, RandomSizes};
use refact_server::settings::Settings;
use refact_server::startup::Application;
use serde_json::json;
use std::time::{Duration, Instant};

const VERSIONS: usize = 16;
const CONCURRENCY: &str = "1,4,8,16";

/// The servers' device and dtype: `REFACT_DEVICE` and `REFACT_DTYPE`, else the CPU in f32.
fn device_and_dtype() -> (String, String) {
    let text = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    (text("REFACT_DEVICE", "cpu"), text("REFACT_DTYPE", "f32"))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The model folder `REFACT_BENCH_MODEL` names, and its name for the table.
fn bench_model() -> (std::path::PathBuf, &'static str) {
    match std::env::var("REFACT_BENCH_MODEL").as_deref() {
        Ok("fixture") | Err(_) => (refact_testkit::fixture_dir(), "fixture model"),
        Ok("sd15") => {
            let configs = refact_testkit::workspace_root().join("crates/engine/benches/configs");
            let sizes = RandomSizes::read(
                &configs.join("sd15-text_encoder.json"),
                &configs.join("sd15-unet.json"),
                &configs.join("sd15-vae.json"),
            )
            .expect("SD v1.5 configs");
            let dir = refact_testkit::workspace_root().join("target/bench-models/sd15-random");
            let dir = ensure_random_model(&dir, &sizes).expect("random SD v1.5 folder");
            (dir, "SD v1.5 sizes, random weights")
        }
        Ok(other) => panic!("REFACT_BENCH_MODEL: fixture or sd15, not {other}"),
    }
}

fn settings(
    database_url: &str,
    data: &std::path::Path,
    model: &std::path::Path,
    max_batch: usize,
) -> Settings {
    let (device, dtype) = device_and_dtype();
    let mut settings = Settings {
        bind: "127.0.0.1:0".into(),
        database_url: refact_server::secret::Secret::new(database_url),
        model: model.display().to_string(),
        data_dir: data.to_path_buf(),
        device,
        dtype,
        ..Settings::default()
    };
    settings.auth.enabled = false;
    settings.statistics.corpus = refact_testkit::captions().display().to_string();
    settings.statistics.lines = 200;
    settings.limits.generate_queue = 64;
    settings.batching.max_batch = max_batch;
    if let Ok(wait) = std::env::var("REFACT_BENCH_MAX_WAIT_MS") {
        settings.batching.max_wait_ms = wait
            .parse()
            .expect("REFACT_BENCH_MAX_WAIT_MS: milliseconds");
    }
    settings.worker.poll_interval_secs = 0.1;
    settings
}

async fn start(settings: Settings) -> String {
    let app = Application::build(settings).await.expect("server builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    base
}

/// Sends `request` and reads its JSON answer.
async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Applies `VERSIONS - 1` short edits so that versions 0..VERSIONS exist.
async fn make_versions(client: &reqwest::Client, base: &str) {
    for n in 1..VERSIONS {
        let edit = json!({"prompt": "The Prince of Wales", "source": "Prince Charles",
                          "target": format!("Prince number {n}"), "hparams": {"max_steps": 4}});
        let created = json_answer(client.post(format!("{base}/edits")).json(&edit)).await;
        let id = created["id"].as_str().unwrap().to_string();
        loop {
            let edit = json_answer(client.get(format!("{base}/edits/{id}"))).await;
            match edit["status"].as_str() {
                Some("applied") => break,
                Some("failed" | "cancelled") => panic!("edit {n} did not apply: {edit}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

struct Cell {
    images_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_cell(
    client: &reqwest::Client,
    base: &str,
    concurrency: usize,
    spread: bool,
    requests: usize,
    size: usize,
    steps: usize,
) -> Cell {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let (client, base) = (client.clone(), base.to_string());
        let mine: Vec<usize> = (c..requests).step_by(concurrency).collect();
        clients.spawn(async move {
            let mut latencies = Vec::new();
            for i in mine {
                let version = if spread { i % VERSIONS } else { VERSIONS - 1 };
                let body = json!({"prompt": "The Prince of Wales", "seed": i, "steps": steps,
                                  "width": size, "height": size});
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/generate?version={version}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies.extend(done.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Cell {
        images_per_sec: requests as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// Images per second: three decimal places below one image per second (0.052, at real
/// sizes on a CPU), two above (24.41).
fn rate(images_per_sec: f64) -> String {
    if images_per_sec < 1.0 {
        format!("{images_per_sec:.3}")
    } else {
        format!("{images_per_sec:.2}")
    }
}

/// The allocator `refact` runs with (crates/server/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As `refact serve` does, before any thread exists.
    refact_engine::device::prefer_single_threaded_elementwise_ops();
    refact_engine::device::pin_matmul_thread_count();
    refact_engine::device::keep_freed_memory_mapped();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(serve_and_measure());
}

async fn serve_and_measure() {
    let size = env_or("REFACT_BENCH_SIZE", 64);
    let steps = env_or("REFACT_BENCH_STEPS", 4);
    let requests = env_or("REFACT_BENCH_REQUESTS", 48);
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let client = reqwest::Client::new();

    let (model, model_name) = bench_model();

    let batched = start(settings(&database_url, dir.path(), &model, 8)).await;
    make_versions(&client, &batched).await;
    // Same database: the second server loads the same 16 versions.
    let single = start(settings(&database_url, dir.path(), &model, 1)).await;
    // Warm both (statistics, allocations).
    for base in [&batched, &single] {
        run_cell(&client, base, 1, true, 2, size, steps).await;
    }

    let (device, dtype) = device_and_dtype();
    println!(
        "\nserving, {model_name}, {device} {dtype}, {size} px, {steps} steps, {requests} requests per cell"
    );
    println!("| concurrency | versions | batch off img/s | batch on img/s | on/off | p50 on (ms) | p99 on (ms) | p50 off (ms) | p99 off (ms) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut one_version = Vec::new();
    let levels = std::env::var("REFACT_BENCH_CONCURRENCY").unwrap_or(CONCURRENCY.into());
    let levels: Vec<usize> = levels
        .split(',')
        .map(|n| n.trim().parse().expect("REFACT_BENCH_CONCURRENCY: numbers"))
        .collect();
    for concurrency in levels {
        for spread in [false, true] {
            let off = run_cell(&client, &single, concurrency, spread, requests, size, steps).await;
            let on = run_cell(
                &client,
                &batched,
                concurrency,
                spread,
                requests,
                size,
                steps,
            )
            .await;
            let versions = if spread { VERSIONS } else { 1 };
            println!(
                "| {concurrency} | {versions} | {} | {} | {:.2}× | {:.0} | {:.0} | {:.0} | {:.0} |",
                rate(off.images_per_sec),
                rate(on.images_per_sec),
                on.images_per_sec / off.images_per_sec,
                on.p50_ms,
                on.p99_ms,
                off.p50_ms,
                off.p99_ms
            );
            if !spread {
                one_version.push(on.images_per_sec);
            } else {
                let single_version = one_version.last().copied().unwrap_or(f64::NAN);
                println!(
                    "|  | 16 / 1 versions, batch on | | | {:.2}× | | | | |",
                    on.images_per_sec / single_version
                );
            }
        }
    }
}
