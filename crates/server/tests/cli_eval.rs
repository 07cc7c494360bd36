//! `refact eval` end to end on the fixture model and scorer: a two-row, two-seed RoAD run
//! that writes all three outputs, a rerun that skips the done rows, and a malformed file
//! refused with its row and column.

use refact_testkit::{data_file, fixture_dir, scorer_dir};
use std::path::Path;
use std::process::{Command, Output};

fn eval(dataset: &Path, work: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refact"))
        .arg("eval")
        .args([
            "--device", "cpu", "--format", "road", "--seeds", "0..1", "--steps", "2",
        ])
        .args([
            "--size",
            "64",
            "--limit",
            "2",
            "--max-steps",
            "10",
            "--corpus-lines",
            "200",
        ])
        .arg("--model")
        .arg(fixture_dir())
        .arg("--data-dir")
        .arg(work.join("data"))
        .arg("--scorer")
        .arg(scorer_dir())
        .arg("--dataset")
        .arg(dataset)
        .arg("--out")
        .arg(work.join("out"))
        .output()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn two_rows_two_seeds_write_all_outputs_and_a_rerun_skips_them() {
    let work = tempfile::tempdir().unwrap();
    let dataset = data_file("road_sample.csv");
    let first = eval(&dataset, work.path());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("ETA"),
        "progress with an ETA on stderr: {stderr}"
    );
    let out = work.path().join("out");

    let results: serde_json::Value =
        serde_json::from_str(&read(&out.join("results.json"))).unwrap();
    let methods: Vec<&str> = results["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["Baseline", "ReFACT"]);
    let refact = &results["methods"][1]["summary"];
    assert_eq!(refact["rows"], 2);
    for metric in ["efficacy", "generality", "specificity", "f1"] {
        let mean = refact[metric]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{metric} = {mean}");
        assert_eq!(refact[metric]["seeds"], 2);
    }
    assert_eq!(results["rows"].as_array().unwrap().len(), 2);
    assert!(results["text_space"]["efficacy"]["mean"].is_number());
    assert!(results["rows"][0]["edit"]["iterations"].is_number());

    let md = read(&out.join("results.md"));
    assert!(
        md.contains("| Method | Efficacy | Generality | Specificity | F1 |"),
        "{md}"
    );
    assert!(
        md.contains("| ReFACT |") && md.contains("| Baseline |"),
        "{md}"
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        md,
        "the table is printed too"
    );

    // Every image the report links exists next to it: 2 rows × 2 seeds × 11 prompts,
    // before and after.
    let html = read(&out.join("report.html"));
    let links: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(links.len(), 2 * 2 * 11 * 2);
    for link in &links {
        assert!(out.join(link).is_file(), "{link} missing");
    }
    assert!(out.join("deltas/row-001.safetensors").is_file());

    // The rerun finds both rows scored and leaves their files as they were.
    let rows: Vec<String> = ["rows/row-001.json", "rows/row-002.json"]
        .iter()
        .map(|p| read(&out.join(p)))
        .collect();
    let second = eval(&dataset, work.path());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("2 of 2 rows already scored"), "{stderr}");
    assert!(
        !stderr.contains("images ("),
        "nothing is generated again: {stderr}"
    );
    let again: Vec<String> = ["rows/row-001.json", "rows/row-002.json"]
        .iter()
        .map(|p| read(&out.join(p)))
        .collect();
    assert_eq!(rows, again);
    assert_eq!(read(&out.join("results.md")), md);
}

#[test]
fn a_malformed_dataset_is_refused_with_row_and_column() {
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.csv");
    let header = read(&data_file("road_sample.csv"))
        .lines()
        .next()
        .unwrap()
        .to_string();
    let cells = header.split(',').count();
    let mut row: Vec<&str> = vec!["x"; cells];
    row[4] = " ";
    std::fs::write(&bad, format!("{header}\n{}\n", row.join(","))).unwrap();
    let result = eval(&bad, work.path());
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("row 1") && stderr.contains("`New`"),
        "{stderr}"
    );
    assert!(
        !work.path().join("out").exists(),
        "nothing is written for a bad file"
    );
}
