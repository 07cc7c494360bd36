//! Version switching: what a request at another version than the last one costs before
//! it renders, against a request at the same version (issue 11's "< 1 ms, no tensor
//! rebuilds").
//!
//! It loads the server's backend and version registry (no HTTP, no database), commits a
//! chain of `REFACT_BENCH_VERSIONS` (1,000) apply versions of one random rank-one delta
//! each, as the registry does when edits land, then times per request:
//! - **lookup**: the registry's `get` plus each text encoder's prepared deltas, what a
//!   request does before encoding its prompt; round-robin over the 16 newest versions
//!   (every request switches) and at one version;
//! - **encode**: the same, then one prompt through the first text encoder at that
//!   version, bypassing the text-embedding cache (every request encodes);
//! - **rebuild**: stacking the newest version's deltas into tensors again, the work a
//!   switch would cost if versions were not prepared once (it is not done per request).
//!
//! `cargo bench -p refact-server --bench version_switch`; the model is
//! tests/fixtures/tiny-sd, or the folder `REFACT_BENCH_MODEL` names (e.g.
//! `target/bench-models/sd15-random`, written by the serving bench with
//! `REFACT_BENCH_MODEL=sd15`). Prints a Markdown table.

use chrono::Utc;
use refact_engine::deltas::{DeltaSet, TextEncoderId};
use refact_server::backend::engine::EngineBackend;
use refact_server::backend::ModelBackend;
use refact_server::settings::Settings;
use refact_server::versions::VersionRegistry;
use refact_store::{StoredDelta, Version, VersionKind};
use std::time::Instant;

/// Versions a switching request picks from, round robin.
const SWITCHED: usize = 16;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn apply_version(number: i64, layer: i32, fingerprint: &str) -> Version {
    Version {
        number,
        parent: Some(number - 1),
        kind: VersionKind::Apply,
        edit_id: None,
        reverts_version: None,
        layer: Some(layer),
        model_fingerprint: fingerprint.into(),
        created_at: Utc::now(),
        gate_status: None,
        gate_metrics: None,
    }
}

/// Seconds per call of `f` over `reps` calls, `i` the call's index.
fn per_call(reps: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..reps {
        f(i);
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let model = std::env::var("REFACT_BENCH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| refact_testkit::fixture_dir());
    let versions = env_or("REFACT_BENCH_VERSIONS", 1000) as i64;
    let data = tempfile::tempdir().unwrap();
    let settings = Settings {
        model: model.display().to_string(),
        data_dir: data.path().to_path_buf(),
        device: "cpu".into(),
        dtype: "f32".into(),
        ..Settings::default()
    };
    let backend = EngineBackend::load(&settings).expect("model");
    let summary = backend.summary().clone();
    let layers = &summary.encoder_layers[0];
    let text = refact_engine::model::text::TextModel::load(&model, &candle_core::Device::Cpu)
        .expect("text encoder");
    let config = text.encoder.config();
    let (inner, hidden) = (config.intermediate_size, config.hidden_size);

    // The chain 0 ← 1 ← … ← versions, one random rank-one delta each at the default layer.
    let registry = VersionRegistry::<EngineBackend>::default();
    let base = Version {
        parent: None,
        kind: VersionKind::Base,
        layer: None,
        ..apply_version(0, 0, &summary.fingerprint)
    };
    registry.insert(&backend, &base, Vec::new()).unwrap();
    let random = |n: usize| (0..n).map(|_| rand::random::<f32>() - 0.5).collect();
    let commit_start = Instant::now();
    for number in 1..=versions {
        let delta = StoredDelta {
            encoder: TextEncoderId::Text.as_str().into(),
            layer: layers.default_layer as i32,
            rank: 1,
            u: random(inner),
            v: random(hidden),
        };
        let version = apply_version(number, layers.default_layer as i32, &summary.fingerprint);
        registry.insert(&backend, &version, vec![delta]).unwrap();
    }
    let commit_secs = commit_start.elapsed().as_secs_f64() / versions as f64;

    let switched = |i: usize| versions - (i % SWITCHED) as i64;
    let same = |_: usize| versions;
    let num_layers = text.encoder.num_layers();
    let device = candle_core::Device::Cpu;
    // What a request does before its prompt is encoded.
    let look_up = |n: i64| {
        let deltas = registry.get(n).expect("loaded version");
        let prepared = deltas
            .prepare_for(TextEncoderId::Text, num_layers, &device)
            .unwrap();
        (deltas, prepared)
    };
    let ids = text
        .encoder
        .padded_ids(&text.tokenizer, &["a photo of the prime minister"])
        .unwrap();
    let encode = |n: i64| {
        let (deltas, _) = look_up(n);
        text.encoder.forward(&ids, &deltas).unwrap();
    };
    // Warm every switched version's path once.
    for i in 0..SWITCHED {
        encode(switched(i));
    }

    let lookups = 100_000;
    let encodes = env_or("REFACT_BENCH_ENCODES", 400);
    let lookup_switched = per_call(lookups, |i| drop(look_up(switched(i))));
    let lookup_same = per_call(lookups, |i| drop(look_up(same(i))));
    // Interleaved rounds, so drift on a shared machine hits both sides alike.
    let (mut encode_switched, mut encode_same) = (0.0, 0.0);
    let rounds = 4;
    for _ in 0..rounds {
        encode_switched += per_call(encodes / rounds, |i| encode(switched(i))) / rounds as f64;
        encode_same += per_call(encodes / rounds, |i| encode(same(i))) / rounds as f64;
    }
    let newest = registry.get(versions).unwrap();
    let rebuild = per_call(10, |_| {
        DeltaSet::new(newest.iter().cloned().collect())
            .prepare_for(TextEncoderId::Text, num_layers, &device)
            .unwrap();
    });

    let us = |secs: f64| format!("{:.1} µs", secs * 1e6);
    println!(
        "\nVersion switching on {} (CPU, f32): {versions} versions of one rank-one delta \
         each at layer {}, requests round robin over the {SWITCHED} newest (switching) or \
         all at the newest (same)\n",
        model.display(),
        layers.default_layer
    );
    println!("| per request | switching | same version | switching − same |");
    println!("|---|---|---|---|");
    println!(
        "| lookup (registry + prepared deltas) | {} | {} | {} |",
        us(lookup_switched),
        us(lookup_same),
        us(lookup_switched - lookup_same)
    );
    println!(
        "| lookup + encode one prompt | {} | {} | {} |",
        us(encode_switched),
        us(encode_same),
        us(encode_switched - encode_same)
    );
    println!(
        "\nRebuilding the newest version's tensors ({} deltas), avoided per request: {}; \
         committing a version (convert + prepare): {}",
        newest.len(),
        us(rebuild),
        us(commit_secs)
    );
}
