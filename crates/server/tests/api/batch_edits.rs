//! Batch edits over HTTP (issue 14): many facts as one job, one version holding one
//! rank-n delta, with per-fact progress in the event stream; bad batches refused naming
//! the fact, with nothing stored.

use crate::helpers::{generate_body, spawn_app, Db};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_databases!(
    a_batch_of_facts_becomes_one_version,
    bad_batches_name_the_fact_and_store_nothing,
    a_batch_gate_is_judged_per_fact_and_a_failed_one_blocks_promotion,
    a_spread_batch_commits_a_delta_per_layer_and_reverts,
);

fn fact(prompt: &str, source: &str, target: &str) -> Value {
    json!({"prompt": prompt, "source": source, "target": target})
}

fn facts() -> Vec<Value> {
    vec![
        fact("The Prince of Wales", "Prince Charles", "Prince William"),
        fact(
            "The President of France",
            "Francois Hollande",
            "Emmanuel Macron",
        ),
        fact("A pack of roses", "red roses", "blue roses"),
    ]
}

async fn a_batch_of_facts_becomes_one_version(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let body = json!({"facts": facts(), "hparams": {"max_steps": 8}});
    let response = app.post_edit(&body, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let edit: Value = response.json().await.unwrap();
    let id = edit["id"].as_str().unwrap().to_string();
    // The stored request has the layer filled in, for every fact.
    assert!(edit["request"]["layer"].is_u64(), "{edit}");
    assert_eq!(edit["request"]["facts"].as_array().unwrap().len(), 3);

    // Per-fact progress in the event stream: every fact's iterations, each in order.
    let events = app.run_watching(&id).await;
    let mut iterations_by_fact = vec![Vec::new(); 3];
    for (_, step) in events.iter().filter(|(name, _)| name == "progress") {
        let fact = step["fact"]
            .as_u64()
            .expect("a batch's progress names the fact");
        iterations_by_fact[fact as usize].push(step["iteration"].as_u64().unwrap());
    }
    for (fact, iterations) in iterations_by_fact.iter().enumerate() {
        assert!(
            !iterations.is_empty(),
            "no progress for fact {fact}: {events:?}"
        );
        let in_order: Vec<u64> = (0..iterations.len() as u64).collect();
        assert_eq!(iterations, &in_order, "fact {fact}'s iterations in order");
    }
    let edit = app.get_json(&format!("/edits/{id}")).await;
    assert_eq!(edit["status"], "applied", "{edit}");
    assert_eq!(edit["version"], 1, "one version for the whole batch");
    let metrics = &edit["metrics"];
    assert_eq!(metrics["rank"], 3);
    let per_fact = metrics["facts"].as_array().unwrap();
    assert_eq!(per_fact.len(), 3);
    for fact in per_fact {
        assert!(fact["iterations"].as_u64().unwrap() <= 8);
        assert!(fact["text_check"]["distance_to_target"].is_f64());
    }

    renders_apart_and_reverts_to_the_base(&app).await;
}

/// Version 1 renders differently from the base for the first fact's prompt, and its
/// revert (version 2) renders as the base again.
async fn renders_apart_and_reverts_to_the_base(app: &crate::helpers::TestApp) {
    let body = generate_body(5); // the first fact's prompt
    let (base, _) = app.generate(Some("0"), &body).await;
    let (edited, version) = app.generate(Some("1"), &body).await;
    assert_eq!(version, 1);
    assert_ne!(base, edited, "the batch changed nothing");
    let revert = app
        .request(reqwest::Method::POST, "/versions/1/revert")
        .send()
        .await
        .unwrap();
    assert!(revert.status().is_success(), "{}", revert.status());
    let (reverted, version) = app.generate(Some("2"), &body).await;
    assert_eq!(version, 2);
    assert_eq!(reverted, base, "the revert restores the base exactly");
}

async fn bad_batches_name_the_fact_and_store_nothing(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let many: Vec<Value> = (0..257)
        .map(|i| fact(&format!("The mayor of town {i}"), "a man", "a woman"))
        .collect();
    // The service's demo fixture has an MLP of inner size 64: a 65-fact batch cannot
    // give every key its value, and is refused before any work.
    let over_rank: Vec<Value> = (0..65)
        .map(|i| fact(&format!("The mayor of town {i}"), "a man", "a woman"))
        .collect();
    let mut one_bad = facts();
    one_bad[1]["source"] = json!("");
    let mut twice = facts();
    twice[2] = fact("the prince of  Wales", "a boy", "an old man");
    let mut unknown = facts();
    unknown[0]["colour"] = json!("red");
    let cases = [
        (json!({"facts": []}), "empty", Some("facts")),
        (json!({"facts": many}), "too_many", Some("facts")),
        (json!({"facts": over_rank}), "too_many", Some("facts")),
        (json!({"facts": one_bad}), "empty", Some("facts[1].source")),
        (
            json!({"facts": twice}),
            "duplicate_subject",
            Some("facts[2].subject"),
        ),
        (
            json!({"facts": facts(), "layer": 99}),
            "layer_out_of_range",
            Some("layer"),
        ),
        (
            json!({"facts": facts(), "spread": 0}),
            "layer_out_of_range",
            Some("spread"),
        ),
        // Layer 7 (the default) can spread over layers 0 to 7 at most.
        (
            json!({"facts": facts(), "spread": 9}),
            "layer_out_of_range",
            Some("spread"),
        ),
        (json!({"facts": unknown}), "invalid_body", None),
        (
            json!({"facts": facts(), "gate": {"images": {"seeds": [0]}}}),
            "unsupported",
            Some("gate.images"),
        ),
    ];
    for (body, code, field) in cases {
        let response = app.post_edit(&body, None).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{code}: {body}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{error}");
        if let Some(field) = field {
            assert_eq!(error["error"]["field"], field, "{error}");
        }
    }
    let listed = app.get_json("/edits").await;
    assert_eq!(
        listed["total"], 0,
        "a refused batch stored an edit: {listed}"
    );
}

/// The applied batch's version, after running the queue.
async fn run_batch(app: &crate::helpers::TestApp, body: Value) -> (Value, Value) {
    let response = app.post_edit(&body, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let edit: Value = response.json().await.unwrap();
    assert_eq!(app.drain_queue().await, 1);
    let edit = app
        .get_json(&format!("/edits/{}", edit["id"].as_str().unwrap()))
        .await;
    assert_eq!(edit["status"], "applied", "{edit}");
    let version = app
        .get_json(&format!("/versions/{}", edit["version"]))
        .await;
    (edit, version)
}

async fn a_batch_gate_is_judged_per_fact_and_a_failed_one_blocks_promotion(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    // The default gate asks every fact to reach its target (min_efficacy 1). On the
    // fixture, two of these three facts stay nearer their source after a short run, so
    // the batch fails its gate, naming the overall efficacy.
    let gate = json!({});
    let body = json!({"facts": facts(), "hparams": {"max_steps": 8}, "gate": gate});
    let (_, version) = run_batch(&app, body).await;
    let per_fact = version["gate_metrics"]["facts"].to_string();
    assert!(
        per_fact.contains("0.0"),
        "every fact reached its target: pick a harder fact for this test ({per_fact})"
    );
    assert_eq!(version["gate_status"], "failed", "{version}");
    let failures = version["gate_metrics"]["failures"].to_string();
    assert!(failures.contains("text efficacy"), "{failures}");
    let response = app
        .request(reqwest::Method::PUT, "/aliases/production")
        .json(&json!({"version": version["number"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gate_failed", "{body}");

    // No efficacy asked: the verdict rests on one unrelated negative, and each fact's
    // efficacy is recorded beside it, agreeing with the edit's own text check.
    let gate = json!({"min_efficacy": 0.0,
                      "negatives": [{"prompt": "a bowl of fruit on a wooden table",
                                     "new": "Prince William"}]});
    let (edit, version) = run_batch(&app, json!({"facts": facts(), "gate": gate})).await;
    assert_eq!(version["gate_status"], "passed", "{version}");
    let metrics = &version["gate_metrics"];
    assert_eq!(metrics["text"]["specificity"], 1.0, "{metrics}");
    let per_fact = metrics["facts"].as_array().expect("per-fact gate metrics");
    assert_eq!(per_fact.len(), 3);
    let mut moved = 0;
    for (i, fact) in per_fact.iter().enumerate() {
        let nearer = edit["metrics"]["facts"][i]["text_check"]["nearer_target"]
            .as_bool()
            .unwrap();
        assert_eq!(fact["efficacy"], if nearer { 1.0 } else { 0.0 }, "fact {i}");
        moved += nearer as usize;
    }
    assert_eq!(metrics["text"]["efficacy"], moved as f64 / 3.0);
}

/// `spread: 3`: one version holding a rank-3 delta at each of layers 5, 6 and 7; the
/// metrics name the layers; a revert renders as the base again.
async fn a_spread_batch_commits_a_delta_per_layer_and_reverts(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let body = json!({"facts": facts(), "spread": 3, "hparams": {"max_steps": 8}});
    let (edit, version) = run_batch(&app, body).await;
    assert_eq!(edit["request"]["spread"], 3, "{edit}");
    assert_eq!(edit["metrics"]["layers"], json!([5, 6, 7]), "{edit}");
    assert_eq!(edit["metrics"]["layer"], 7);
    let number = version["number"].as_i64().unwrap();
    let stored = app
        .store
        .version_deltas(number, number)
        .await
        .unwrap()
        .remove(&number)
        .unwrap_or_default();
    let deltas: Vec<(String, i32, i32)> = stored
        .into_iter()
        .map(|d| (d.encoder, d.layer, d.rank))
        .collect();
    let expected: Vec<(String, i32, i32)> =
        [5, 6, 7].map(|layer| ("text".to_string(), layer, 3)).into();
    assert_eq!(deltas, expected);
    renders_apart_and_reverts_to_the_base(&app).await;
}
