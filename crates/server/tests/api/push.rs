//! `refact push` against a running server: idempotent resubmission, gates deciding the
//! exit status and whether the alias moves.

use crate::gates::{gated_edit, leaking_negative, unrelated_negative};
use crate::helpers::{spawn_app, Db, TestApp};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

on_both_databases!(
    a_second_push_creates_nothing_and_a_failed_gate_keeps_the_alias,
    a_batch_push_is_one_edit_and_one_version,
);

fn write_facts(dir: &Path, name: &str, edits: Vec<Value>) -> std::path::PathBuf {
    let path = dir.join(name);
    let yaml = serde_yaml::to_string(&json!({ "edits": edits })).unwrap();
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs `refact push` on a blocking thread (the server runs on this test's runtime).
async fn push(app: &TestApp, file: &Path, promote: Option<&str>) -> Output {
    push_with(app, file, promote, &[]).await
}

/// `refact push` with `extra` arguments.
async fn push_with(app: &TestApp, file: &Path, promote: Option<&str>, extra: &[&str]) -> Output {
    let mut args = vec![
        "push".to_string(),
        file.display().to_string(),
        "--server".into(),
        app.base.clone(),
        "--poll-ms".into(),
        "100".into(),
        "--timeout-secs".into(),
        "300".into(),
    ];
    if let Some(alias) = promote {
        args.extend(["--promote".into(), alias.into()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let token = app.token.clone();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_refact"))
            .args(&args)
            .env("REFACT_TOKEN", token)
            .env_remove("REFACT_SERVER")
            .output()
            .expect("run refact push")
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn edit_count(app: &TestApp) -> i64 {
    app.get_json("/edits").await["total"].as_i64().unwrap()
}

async fn a_second_push_creates_nothing_and_a_failed_gate_keeps_the_alias(db: Db) {
    // The background worker runs the edits, as in production.
    let app = spawn_app(db, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let good = write_facts(
        dir.path(),
        "facts.yaml",
        vec![
            gated_edit("Prince William", unrelated_negative("Prince William")),
            json!({"prompt": "The Prime Minister", "source": "Boris Johnson",
                   "target": "Keir Starmer", "hparams": {"max_steps": 10}}),
        ],
    );

    let first = push(&app, &good, Some("production")).await;
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert!(
        first.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(stdout.contains("alias production -> version 2"), "{stdout}");
    assert!(stderr.contains("queued"), "{stderr}");
    assert_eq!(edit_count(&app).await, 2);
    assert_eq!(
        app.store
            .get_alias("production")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );

    // The same file again: the same two edits, nothing new, same outcome.
    let second = push(&app, &good, Some("production")).await;
    let stdout = text(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}\n{}",
        text(&second.stderr)
    );
    assert!(text(&second.stderr).contains("already pushed"));
    assert_eq!(edit_count(&app).await, 2);
    assert_eq!(app.store.head().await.unwrap().number, 2);

    // A fact whose gate fails: the push fails and the alias stays at version 2.
    let bad = write_facts(
        dir.path(),
        "bad.yaml",
        vec![gated_edit(
            "Prince George",
            leaking_negative("Prince George"),
        )],
    );
    let third = push(&app, &bad, Some("production")).await;
    let (stdout, stderr) = (text(&third.stdout), text(&third.stderr));
    assert!(
        !third.status.success(),
        "a failed gate must fail the push:\n{stdout}"
    );
    assert!(stdout.contains("failed"), "{stdout}");
    assert!(stdout.contains("gate failed: text specificity"), "{stdout}");
    assert!(
        stderr.contains("alias `production` left where it was"),
        "{stderr}"
    );
    assert_eq!(
        app.store.head().await.unwrap().number,
        3,
        "the edit itself applied"
    );
    assert_eq!(
        app.store
            .get_alias("production")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );

    // A file the server refuses: a clear error naming the edit and the field.
    let refused = write_facts(
        dir.path(),
        "refused.yaml",
        vec![json!({"prompt": "The Prime Minister", "source": "A", "target": "B", "layer": 99})],
    );
    let fourth = push(&app, &refused, None).await;
    let stderr = text(&fourth.stderr);
    assert!(!fourth.status.success());
    assert!(
        stderr.contains("edit 1") && stderr.contains("422"),
        "{stderr}"
    );
    assert_eq!(
        edit_count(&app).await,
        3,
        "nothing stored for a refused edit"
    );
}

async fn a_batch_push_is_one_edit_and_one_version(db: Db) {
    let app = spawn_app(db, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let fact = |prompt: &str, source: &str, target: &str| {
        json!({"prompt": prompt, "source": source, "target": target,
               "hparams": {"max_steps": 8}})
    };
    // The batch's gate: an unrelated prompt must not change, and no fact is required to
    // reach its target in 8 steps.
    let file = dir.path().join("cabinet.yaml");
    let document = json!({
        "batch_gate": {"min_efficacy": 0.0,
                       "negatives": [{"prompt": "a bowl of fruit on a wooden table",
                                      "new": "Prince William"}]},
        "edits": [
            fact("The Prince of Wales", "Prince Charles", "Prince William"),
            fact("The Prime Minister", "Boris Johnson", "Keir Starmer"),
            fact("The Chancellor of Germany", "Angela Merkel", "Olaf Scholz"),
        ],
    });
    std::fs::write(&file, serde_yaml::to_string(&document).unwrap()).unwrap();

    let first = push_with(&app, &file, Some("production"), &["--batch"]).await;
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert!(
        first.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("queued: batch of 3 facts"), "{stderr}");
    // One row per fact, each with its own text check, all in version 1.
    for label in [
        "The Prince of Wales: Prince Charles → Prince William",
        "The Prime Minister: Boris Johnson → Keir Starmer",
        "The Chancellor of Germany: Angela Merkel → Olaf Scholz",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no row for {label}:\n{stdout}"));
        assert!(
            row.contains("applied") && row.contains("passed") && row.contains("p 0."),
            "{row}"
        );
    }
    assert!(stdout.contains("alias production -> version 1"), "{stdout}");
    assert_eq!(edit_count(&app).await, 1, "one job for the whole file");
    let edits = app.get_json("/edits").await;
    assert_eq!(edits["items"][0]["metrics"]["rank"], 3, "{edits}");

    let version = app.get_json("/versions/1").await;
    assert_eq!(
        version["gate_metrics"]["facts"].as_array().unwrap().len(),
        3
    );

    // Without --batch the batch gate has no edit to go with: refused, nothing sent.
    let unbatched = push(&app, &file, None).await;
    assert!(!unbatched.status.success());
    assert!(text(&unbatched.stderr).contains("push with --batch"));

    // The same file again: the same batch edit, nothing new.
    let second = push_with(&app, &file, None, &["--batch"]).await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stderr).contains("already pushed"));
    assert_eq!(edit_count(&app).await, 1);
    assert_eq!(app.store.head().await.unwrap().number, 1);
}
