//! `refact push facts.yaml --server URL --token T [--promote NAME]`: the CI client.
//!
//! Submits every edit of a facts file with an idempotency key derived from its content
//! (pushing the same file again creates nothing new and reports the edits it made the
//! first time), waits for all of them with progress on stderr, prints a summary table on
//! stdout, and moves the alias to the newest of its versions only when every edit applied
//! and passed its gate. Exit status: 0 when all passed (and the alias moved, if asked),
//! 1 otherwise.
//!
//! With `--batch` the whole file goes as one batch edit: one job, one version, one row
//! per fact in the summary (the facts must share `layer` and `hparams` and carry no gate
//! of their own; the file's `batch_gate:` is the batch's gate).

mod client;
mod facts;
mod summary;

use anyhow::{bail, Context};
use client::{ApiClient, Submitted};
use facts::{batch_of, read_facts, Fact, FactsDocument};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use summary::FactOutcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The facts file: `edits:` followed by a list of `POST /edits` bodies, in YAML.
    pub file: PathBuf,
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "REFACT_SERVER")]
    pub server: String,
    /// An API token with the `edit` scope (`refact token create`).
    #[arg(long, env = "REFACT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Point this alias at the newest version of the push once every edit passed.
    #[arg(long, value_name = "ALIAS")]
    pub promote: Option<String>,
    /// Give up waiting for the edits after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    /// How often to ask the server how the edits are doing, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Send every fact of the file as one batch edit: one job and one version for all.
    #[arg(long)]
    pub batch: bool,
}

/// One submitted fact and what is known about it so far.
struct Tracked {
    fact: Fact,
    id: String,
    created: bool,
    edit: Value,
    /// What was last reported on stderr, to print only changes.
    reported: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let document = read_facts(&args.file)?;
    let client = ApiClient::new(&args.server, args.token.clone())?;
    super::runtime()?.block_on(push(&args, &client, document))
}

async fn push(
    args: &Args,
    client: &ApiClient,
    document: FactsDocument,
) -> anyhow::Result<ExitCode> {
    let FactsDocument { facts, batch_gate } = document;
    let total = facts.len();
    // What is submitted: every fact on its own, or the one batch holding them all.
    let jobs = if args.batch {
        vec![batch_of(&facts, batch_gate.as_ref())?]
    } else if batch_gate.is_some() {
        bail!("`batch_gate` is the gate of the one batch edit --batch makes: push with --batch");
    } else {
        facts.clone()
    };
    let mut tracked = Vec::with_capacity(jobs.len());
    for fact in jobs {
        let submitted = client
            .submit(&fact.body, &fact.idempotency_key)
            .await
            .with_context(|| format!("edit {} ({}) was refused", fact.index, fact.label()))?;
        let (edit, created) = match submitted {
            Submitted::Created(edit) => (edit, true),
            Submitted::Existing(edit) => (edit, false),
        };
        let id = edit["id"]
            .as_str()
            .context("the server returned no edit id")?
            .to_string();
        let what = if created { "queued" } else { "already pushed" };
        eprintln!(
            "[{}/{total}] {what}: {} (edit {id})",
            fact.index,
            fact.label()
        );
        // The submission line already says where it stands: report only changes.
        let reported = progress_line(&edit);
        tracked.push(Tracked {
            fact,
            id,
            created,
            edit,
            reported,
        });
    }

    wait_for_all(args, client, &mut tracked).await?;

    // A batch's per-fact metrics, in the file's order, before its one edit is consumed.
    let batch_metrics = args.batch.then(|| {
        tracked[0].edit["metrics"]["facts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    });
    let mut outcomes = Vec::with_capacity(total);
    for t in tracked {
        outcomes.push(outcome(client, t).await?);
    }
    if let Some(metrics) = batch_metrics {
        outcomes = per_fact(outcomes.remove(0), facts, metrics);
    }
    print!("{}", summary::render(&outcomes));
    let all_passed = outcomes.iter().all(FactOutcome::succeeded);
    if !all_passed {
        let failed = outcomes.iter().filter(|o| !o.succeeded()).count();
        eprintln!("{failed} of {total} edits failed or missed their gate");
        if let Some(alias) = &args.promote {
            eprintln!("alias `{alias}` left where it was");
        }
        return Ok(ExitCode::FAILURE);
    }
    if let Some(alias) = &args.promote {
        let newest = outcomes
            .iter()
            .filter_map(|o| o.version)
            .max()
            .context("no version to promote")?;
        match client.set_alias(alias, newest).await {
            Ok(_) => println!("alias {alias} -> version {newest}"),
            Err(err) => {
                eprintln!("alias `{alias}` was not moved: {err:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls every unfinished edit until all are applied, failed or cancelled, reporting
/// status changes and optimisation progress on stderr.
async fn wait_for_all(
    args: &Args,
    client: &ApiClient,
    tracked: &mut [Tracked],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let total = tracked.len();
    loop {
        let mut pending = 0;
        for t in tracked.iter_mut() {
            if is_terminal(&t.edit) {
                continue;
            }
            t.edit = client.edit(&t.id).await?;
            let line = progress_line(&t.edit);
            if line != t.reported {
                eprintln!("[{}/{total}] {line}", t.fact.index);
                t.reported = line;
            }
            if !is_terminal(&t.edit) {
                pending += 1;
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{pending} edits still unfinished after {} s; they keep running on the server, \
                 and pushing the same file again picks them up",
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}

fn is_terminal(edit: &Value) -> bool {
    matches!(
        edit["status"].as_str(),
        Some("applied" | "failed" | "cancelled")
    )
}

/// `running: iteration 12, p(target) 0.53` (`running: fact 3, iteration 12, …` in a
/// batch), or just the status.
fn progress_line(edit: &Value) -> String {
    let status = edit["status"].as_str().unwrap_or("unknown");
    let progress = &edit["progress"];
    let fact = progress["fact"]
        .as_u64()
        .map(|f| format!("fact {}, ", f + 1))
        .unwrap_or_default();
    match (
        status,
        progress["iteration"].as_u64(),
        progress["probability"].as_f64(),
    ) {
        ("running", Some(iteration), Some(p)) => {
            format!("running: {fact}iteration {iteration}, p(target) {p:.2}")
        }
        ("applied", ..) => format!("applied as version {}", edit["version"]),
        ("failed", ..) => format!("failed: {}", edit["error"].as_str().unwrap_or("")),
        _ => status.to_string(),
    }
}

async fn outcome(client: &ApiClient, t: Tracked) -> anyhow::Result<FactOutcome> {
    let version = t.edit["version"].as_i64();
    let (gate_status, gate_metrics) = match version {
        Some(number) => {
            let v = client.version(number).await?;
            (
                v["gate_status"].as_str().map(str::to_string),
                Some(v["gate_metrics"].clone()).filter(|m| !m.is_null()),
            )
        }
        None => (None, None),
    };
    Ok(FactOutcome {
        fact_metrics: None,
        status: t.edit["status"].as_str().unwrap_or("unknown").to_string(),
        error: t.edit["error"].as_str().map(str::to_string),
        edit_id: t.id,
        created: t.created,
        version,
        gate_status,
        gate_metrics,
        fact: t.fact,
    })
}

/// A batch edit's outcome as one row per fact of the file: the edit, its status and its
/// version are shared; each fact has its own entry of the batch's `metrics.facts`.
fn per_fact(batch: FactOutcome, facts: Vec<Fact>, metrics: Vec<Value>) -> Vec<FactOutcome> {
    facts
        .into_iter()
        .enumerate()
        .map(|(i, fact)| FactOutcome {
            fact,
            fact_metrics: metrics.get(i).cloned(),
            ..batch.clone()
        })
        .collect()
}
