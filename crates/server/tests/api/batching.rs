//! Batch-first serving over HTTP: concurrent renders at several versions share UNet
//! batches, and every image is byte for byte the image rendered alone.

use crate::helpers::{edit_body, fetch_metrics, metric_value, spawn_app, Db, TestApp};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

on_both_databases!(
    renders_at_mixed_versions_batch_and_equal_the_images_rendered_alone,
    num_images_renders_consecutive_seeds_as_one_batch
);

/// The PNG and the size of the batch it came from.
async fn render(app: &TestApp, version: &str, prompt: &str, seed: u64) -> (Vec<u8>, usize) {
    let body = json!({"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": seed});
    let response = app
        .request(
            reqwest::Method::POST,
            &format!("/generate?version={version}"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-refact-version"], version);
    let batch = response.headers()["x-refact-batch-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (response.bytes().await.unwrap().to_vec(), batch)
}

async fn renders_at_mixed_versions_batch_and_equal_the_images_rendered_alone(db: Db) {
    let app = spawn_app(db, |s| {
        s.batching.max_batch = 8;
        // Long enough for the concurrent requests below to meet in one batch.
        s.batching.max_wait_ms = 400.0;
    })
    .await;
    for target in ["Prince William", "Prince George"] {
        let id = app.submit_edit(&edit_body(target)).await;
        let edit = app.wait_for_edit(&id, Duration::from_secs(120)).await;
        assert_eq!(edit["status"], "applied", "{edit}");
    }
    let requests = [
        ("0", "The Prince of Wales", 1),
        ("1", "The Prince of Wales", 1),
        ("2", "The Prince of Wales", 1),
        ("1", "a red car", 2),
        ("2", "a castle at night", 3),
        ("0", "a castle at night", 3),
    ];
    let mut alone = Vec::new();
    for (version, prompt, seed) in requests {
        let (png, batch) = render(&app, version, prompt, seed).await;
        assert_eq!(batch, 1, "rendered one at a time");
        alone.push(png);
    }
    assert_ne!(
        alone[0], alone[1],
        "versions 0 and 1 differ for the edited prompt"
    );
    assert_ne!(
        alone[1], alone[2],
        "versions 1 and 2 differ for the edited prompt"
    );

    let together = join_all(
        requests
            .iter()
            .map(|&(version, prompt, seed)| render(&app, version, prompt, seed)),
    )
    .await;
    let largest = together.iter().map(|(_, batch)| *batch).max().unwrap();
    assert!(largest > 1, "concurrent requests did not share a batch");
    for (i, ((png, _), expected)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(
            png, expected,
            "request {i}: the batched image is not the image"
        );
    }
    // Images are counted per version (the counter is process-wide: other tests add to it).
    let metrics = fetch_metrics(&app.client, &app.base).await;
    for version in ["0", "1", "2"] {
        let series = format!("refact_generate_images_total{{version=\"{version}\"}}");
        let count =
            metric_value(&metrics, &series).unwrap_or_else(|| panic!("no {series} in /metrics"));
        assert!(count >= 4, "version {version}: {count} images counted");
    }
    // The text-embedding cache, this replica's own. The first round encoded each
    // (version, prompt) once, and the negative prompt "" once per version: 6 + 3 = 9
    // misses, 3 hits. The second round found all 12 of its prompts.
    let operations = app.get_json("/operations").await;
    let cache = &operations["generation"]["text_cache"];
    assert_eq!(cache["misses"], 9, "{cache}");
    assert_eq!(cache["hits"], 15, "{cache}");
    assert_eq!(cache["prompts"], 9, "{cache}");
    let hits = metric_value(&metrics, "refact_text_cache_hits_total").expect("cache hits");
    assert!(
        hits >= 15,
        "{hits} prompts answered from the cache, counted process-wide"
    );
}

async fn num_images_renders_consecutive_seeds_as_one_batch(db: Db) {
    use base64::Engine;
    let app = spawn_app(db, |s| {
        s.worker.enabled = false;
        s.batching.max_wait_ms = 200.0;
    })
    .await;
    let body = json!({"prompt": "a red car", "steps": 2, "width": 64, "height": 64,
                      "seed": 10, "num_images": 3});
    let response = app
        .request(reqwest::Method::POST, "/generate?version=0")
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-refact-batch-size"],
        "3",
        "one batch of three"
    );
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["seeds"], json!([10, 11, 12]));
    let images = answer["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    for (i, image) in images.iter().enumerate() {
        let png = base64::engine::general_purpose::STANDARD
            .decode(image.as_str().unwrap())
            .unwrap();
        let (alone, _) = render(&app, "0", "a red car", 10 + i as u64).await;
        assert_eq!(png, alone, "image {i} is the image of seed {}", 10 + i);
    }

    // More than one image needs JSON; at most eight.
    for (num_images, accept) in [
        (2, "image/png"),
        (9, "application/json"),
        (0, "application/json"),
    ] {
        let mut body = body.clone();
        body["num_images"] = num_images.into();
        let response = app
            .request(reqwest::Method::POST, "/generate?version=0")
            .header("Accept", accept)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{num_images}"
        );
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["field"], "num_images", "{error}");
    }
}
