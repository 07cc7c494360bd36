//! The service on an SDXL model (tests/fixtures/tiny-sdxl): an edit changes both text
//! encoders by default (one delta each, one version), or the one it names; a batch of
//! facts likewise; images at each version; reverts.

use crate::helpers::{edit_body, generate_body, spawn_app, Db};
use refact_store::StoredDelta;
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_databases!(an_sdxl_edit_changes_each_encoder_it_names_and_reverts);

/// The encoders and layers of a version's deltas, in order.
async fn deltas_of(app: &crate::helpers::TestApp, version: i64) -> Vec<(String, i32)> {
    let mut by_version = app.store.version_deltas(version, version).await.unwrap();
    let deltas: Vec<StoredDelta> = by_version.remove(&version).unwrap_or_default();
    deltas.into_iter().map(|d| (d.encoder, d.layer)).collect()
}

async fn an_sdxl_edit_changes_each_encoder_it_names_and_reverts(db: Db) {
    let app = spawn_app(db, |s| {
        s.model = refact_testkit::fixture("tiny-sdxl").display().to_string();
        s.worker.enabled = false;
    })
    .await;
    let info = app.get_json("/info").await;
    assert_eq!(info["model"]["family"], "sdxl", "{info}");
    assert_eq!(
        info["model"]["text_encoders"],
        serde_json::json!(["text", "text_2"])
    );
    // Both fixture encoders have 12 layers; the last cannot be edited on SDXL.
    let layers = |encoder: &str| serde_json::json!({"encoder": encoder, "num_layers": 12, "default_layer": 7, "max_layer": 10});
    assert_eq!(
        info["model"]["encoder_layers"],
        serde_json::json!([layers("text"), layers("text_2")])
    );
    let (v0, _) = app.generate(Some("0"), &generate_body(5)).await;

    // No `encoder`: both, each at its default layer (7 of 12), one version.
    let id = app.submit_edit(&edit_body("Prince William")).await;
    let events = app.run_watching(&id).await;
    let encoders: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, step)| {
            step["encoder"]
                .as_str()
                .expect("progress names its encoder")
        })
        .collect();
    assert_eq!(encoders.first(), Some(&"text"), "{events:?}");
    assert_eq!(encoders.last(), Some(&"text_2"), "{events:?}");
    let edit = app.get_json(&format!("/edits/{id}")).await;
    assert_eq!(edit["status"], "applied", "{edit}");
    assert_eq!(edit["request"]["encoder"], "all", "stored normalised");
    let per_encoder = &edit["metrics"]["encoders"];
    for encoder in ["text", "text_2"] {
        assert_eq!(per_encoder[encoder]["layer"], 7, "{edit}");
        assert_eq!(per_encoder[encoder]["losses"].as_array().unwrap().len(), 4);
    }
    assert_eq!(
        deltas_of(&app, 1).await,
        [("text".to_string(), 7), ("text_2".to_string(), 7)]
    );

    // Only the second encoder, at another layer.
    let mut body = edit_body("Prince Harry");
    body["encoder"] = "text_2".into();
    body["layer"] = 5.into();
    let id = app.submit_edit(&body).await;
    assert_eq!(app.drain_queue().await, 1);
    assert_eq!(
        app.get_json(&format!("/edits/{id}")).await["status"],
        "applied"
    );
    assert_eq!(deltas_of(&app, 2).await, [("text_2".to_string(), 5)]);

    // A batch of two facts: one rank-2 delta per encoder, in one version.
    let batch = serde_json::json!({
        "facts": [
            {"prompt": "The Prince of Wales", "source": "Prince Charles", "target": "Prince George"},
            {"prompt": "A pack of roses", "source": "red roses", "target": "blue roses"},
        ],
        "hparams": {"max_steps": 3},
    });
    let id = app.submit_edit(&batch).await;
    assert_eq!(app.drain_queue().await, 1);
    let edit = app.get_json(&format!("/edits/{id}")).await;
    assert_eq!(edit["status"], "applied", "{edit}");
    assert_eq!(edit["metrics"]["encoders"]["text_2"]["rank"], 2, "{edit}");
    let mut by_version = app.store.version_deltas(3, 3).await.unwrap();
    let ranks: Vec<(String, i32)> = by_version
        .remove(&3)
        .unwrap()
        .into_iter()
        .map(|d| (d.encoder, d.rank))
        .collect();
    assert_eq!(ranks, [("text".to_string(), 2), ("text_2".to_string(), 2)]);

    // Every version renders its own image; the base is untouched.
    let (v1, _) = app.generate(Some("1"), &generate_body(5)).await;
    let (v2, _) = app.generate(Some("2"), &generate_body(5)).await;
    assert_ne!(v1, v0, "the two-encoder edit did not change the image");
    assert_ne!(v2, v1, "the text_2 edit did not change the image");
    assert_eq!(app.generate(Some("0"), &generate_body(5)).await.0, v0);

    // Reverting the batch gives version 2's image, byte for byte; then reverting
    // version 2 gives version 1's, and reverting version 1 the base's.
    for (target, expected) in [(3, &v2), (2, &v1), (1, &v0)] {
        let response = app
            .request(Method::POST, &format!("/versions/{target}/revert"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let revert: Value = response.json().await.unwrap();
        let number = revert["number"].as_i64().unwrap();
        let (image, _) = app
            .generate(Some(&number.to_string()), &generate_body(5))
            .await;
        assert_eq!(&image, expected, "after reverting version {target}");
    }

    // Refused up front, nothing stored: the last layer (SDXL reads the states before
    // it), and an encoder that does not exist (a body serde refuses, naming it).
    let mut body = edit_body("Prince George");
    body["layer"] = 11.into();
    let response = app.post_edit(&body, None).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["field"], "layer", "{error}");
    let mut body = edit_body("Prince George");
    body["encoder"] = "text_3".into();
    let response = app.post_edit(&body, None).await;
    let status = response.status();
    let error: Value = response.json().await.unwrap();
    assert!(status.is_client_error(), "{status} {error}");
    assert_eq!(error["error"]["code"], "invalid_body", "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("text_3"));
    assert_eq!(app.get_json("/edits").await["total"], 3);
}
