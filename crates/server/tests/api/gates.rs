//! Quality gates: an edit with a gate stores its metrics with the version; a failed gate
//! keeps aliases off the version (unless forced) until it is reverted.

use crate::helpers::{spawn_app, Db, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_databases!(
    a_gate_stores_metrics_and_a_failed_gate_blocks_promotion,
    a_bad_gate_is_refused_and_nothing_is_stored
);

/// The image half of a gate runs the same on either database: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_gate_renders_every_prompt_and_seed_and_stores_clip_metrics() {
    let scorer = crate::helpers::fixture_model().join("clip-scorer");
    let app = spawn_app(Db::Sqlite, |s| {
        s.worker.enabled = false;
        s.scorer = scorer.display().to_string();
    })
    .await;
    let mut body = gated_edit("Prince William", unrelated_negative("Prince William"));
    // The fixture's images are noise, so CLIP's verdicts mean nothing: no thresholds.
    body["gate"]["min_efficacy"] = json!(0.0);
    body["gate"]["min_generality"] = json!(0.0);
    body["gate"]["min_specificity"] = json!(0.0);
    body["gate"]["images"] = json!({"seeds": [3, 4], "steps": 2, "size": 64});
    let id = app.submit_edit(&body).await;
    assert_eq!(app.drain_queue().await, 1);
    let edit = app.get_json(&format!("/edits/{id}")).await;
    assert_eq!(edit["status"], "applied", "{edit}");
    let version = app.get_json("/versions/1").await;
    assert_eq!(version["gate_status"], "passed", "{version}");
    // The gate's images went through the generation queue: per seed, one of the edit
    // prompt, one per positive and one per negative; nobody else asked for images.
    let operations = app.get_json("/operations").await;
    assert_eq!(
        operations["generation"]["images_rendered"], 6,
        "{operations}"
    );
    let images = &version["gate_metrics"]["images"];
    // One efficacy, one positive and one negative test per seed, averaged over 2 seeds.
    for metric in ["efficacy", "generality", "specificity"] {
        assert_eq!(images[metric]["seeds"], 2, "{metric}: {images}");
        let mean = images[metric]["mean"].as_f64().unwrap();
        assert!([0.0, 0.5, 1.0].contains(&mean), "{metric}: {images}");
    }
}

/// The fixture edit (the paper's default optimisation) with a gate.
pub fn gated_edit(target: &str, negatives: Value) -> Value {
    json!({
        "prompt": "The Prince of Wales",
        "source": "Prince Charles",
        "target": target,
        "gate": {
            "positives": [{
                "prompt": "The Prince of Wales",
                "old": "Prince Charles",
                "new": target,
            }],
            "negatives": negatives,
        },
    })
}

/// A negative the edit leaks into by construction: the edit prompt itself, which the
/// edit moves to the target.
pub fn leaking_negative(target: &str) -> Value {
    json!([{"prompt": "The Prince of Wales", "new": target}])
}

/// A negative far from the edit's subject.
pub fn unrelated_negative(target: &str) -> Value {
    json!([{"prompt": "a bowl of fruit on a wooden table", "new": target}])
}

async fn put_alias(app: &TestApp, version: i64, force: bool) -> (StatusCode, Value) {
    let response = app
        .request(Method::PUT, "/aliases/production")
        .json(&json!({"version": version, "force": force}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn a_gate_stores_metrics_and_a_failed_gate_blocks_promotion(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;

    // A gate the edit passes: the edit prompt shows the target, the unrelated prompt
    // stays itself.
    let good = app
        .submit_edit(&gated_edit(
            "Prince William",
            unrelated_negative("Prince William"),
        ))
        .await;
    // The stored request carries the gate with its defaults filled in.
    let stored = app.get_json(&format!("/edits/{good}")).await;
    assert_eq!(stored["request"]["gate"]["min_specificity"], 0.8);
    assert_eq!(app.drain_queue().await, 1);
    let edit = app.get_json(&format!("/edits/{good}")).await;
    assert_eq!(edit["status"], "applied", "{edit}");
    let v1 = app.get_json("/versions/1").await;
    assert_eq!(v1["gate_status"], "passed", "{v1}");
    let metrics = &v1["gate_metrics"];
    assert_eq!(metrics["text"]["efficacy"], 1.0, "{metrics}");
    assert_eq!(metrics["text"]["generality"], 1.0, "{metrics}");
    assert_eq!(metrics["text"]["specificity"], 1.0, "{metrics}");
    assert_eq!(metrics["failures"], json!([]));
    assert_eq!(metrics["thresholds"]["efficacy"], 1.0);

    // A gate the edit fails: its own prompt listed as a negative moves with the edit.
    let bad = app
        .submit_edit(&gated_edit(
            "Prince George",
            leaking_negative("Prince George"),
        ))
        .await;
    assert_eq!(app.drain_queue().await, 1);
    let edit = app.get_json(&format!("/edits/{bad}")).await;
    assert_eq!(
        edit["status"], "applied",
        "a failed gate still commits: {edit}"
    );
    let v2 = app.get_json("/versions/2").await;
    assert_eq!(v2["gate_status"], "failed", "{v2}");
    assert_eq!(v2["gate_metrics"]["text"]["specificity"], 0.0);
    let failures = v2["gate_metrics"]["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().contains("specificity")),
        "{failures:?}"
    );

    // Promotion: version 2 is refused and the alias is not created; version 1 is fine.
    let (status, body) = put_alias(&app, 2, false).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "gate_failed");
    assert!(app.store.get_alias("production").await.unwrap().is_none());
    let (status, _) = put_alias(&app, 1, false).await;
    assert_eq!(status, StatusCode::OK);
    // Forced, it goes through.
    let (status, body) = put_alias(&app, 2, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    let (status, _) = put_alias(&app, 1, false).await;
    assert_eq!(status, StatusCode::OK);

    // Reverting the failed edit makes the new head promotable again.
    let response = app
        .request(Method::POST, "/versions/2/revert")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, body) = put_alias(&app, 3, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.store
            .get_alias("production")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
}

async fn a_bad_gate_is_refused_and_nothing_is_stored(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let cases = [
        (
            json!({"negatives": [{"prompt": "a cat"}]}),
            "invalid_body",
            "gate.negatives[0].new",
        ),
        (
            json!({"min_generality": 2}),
            "invalid_gate",
            "gate.min_generality",
        ),
        (json!({"colour": "red"}), "invalid_body", "gate.colour"),
        // No scorer is configured on the test server: an image gate cannot run.
        (
            json!({"images": {"seeds": [0]}}),
            "invalid_gate",
            "gate.images.seeds",
        ),
    ];
    for (gate, code, field) in cases {
        let mut body = gated_edit("Prince William", json!([]));
        body["gate"] = gate.clone();
        let response = app.post_edit(&body, None).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gate {gate}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "gate {gate}: {error}");
        assert_eq!(error["error"]["field"], field, "gate {gate}: {error}");
    }
    let page = app.get_json("/edits").await;
    assert_eq!(page["total"], 0, "nothing stored: {page}");
}
