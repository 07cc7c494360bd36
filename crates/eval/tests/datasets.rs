//! RoAD and TIMED parsing: the project's sample files in both layouts (read in place) and malformed
//! variants written to temp files.

use refact_eval::dataset::{load, DatasetFormat};
use refact_eval::EvalError;
use refact_testkit::data_file;
use std::path::PathBuf;

#[test]
fn the_road_sample_parses_into_three_lowercased_cases() {
    let cases = load(&data_file("road_sample.csv"), DatasetFormat::Road).unwrap();
    assert_eq!(cases.len(), 3);
    let mayor = &cases[0];
    assert_eq!(mayor.row, 1);
    assert_eq!(mayor.kind.as_deref(), Some("role"));
    assert_eq!(mayor.edit_prompt, "the mayor of springfield");
    // Cells are trimmed (this one is " Joe Quimby " in the file).
    assert_eq!(mayor.source, "joe quimby");
    // Non-ASCII letters are kept (and lowercased).
    assert_eq!(mayor.target, "ana núñez");
    assert_eq!(
        mayor.oracle_prompt(),
        "ana núñez as the mayor of springfield"
    );
    assert_eq!(mayor.positives.len(), 5);
    assert_eq!(
        mayor.positives[0].prompt,
        "the springfield mayor playing guitar"
    );
    assert_eq!(mayor.positives[0].old, "joe quimby playing guitar");
    assert_eq!(mayor.positives[0].new, "ana núñez playing guitar");
    // The validation layout has no Positive_oracle columns: the oracle uses the new text.
    assert_eq!(
        mayor.positives[0].oracle_prompt(),
        "ana núñez playing guitar"
    );
    assert_eq!(mayor.negatives.len(), 5);
    assert_eq!(mayor.negatives[0].prompt, "joe quimby");
    assert_eq!(mayor.negatives[4].new, "ana núñez");
    // The file has no final newline: the last row is still read whole.
    let last = &cases[2];
    assert_eq!(last.row, 3);
    assert_eq!(
        (last.edit_prompt.as_str(), last.target.as_str()),
        ("the harbour bridge", "a red steel bridge")
    );
    assert_eq!(last.negatives[4].new, "a red harbour");
    assert_eq!(last.kind.as_deref(), Some("appearance"));
}

#[test]
fn the_timed_sample_parses_with_old_as_prompt_and_source() {
    let cases = load(&data_file("timed_sample.csv"), DatasetFormat::Timed).unwrap();
    assert_eq!(cases.len(), 4);
    let fox = &cases[3];
    assert_eq!(fox.row, 4);
    assert_eq!(fox.kind, None);
    assert_eq!(fox.edit_prompt, "a fox");
    assert_eq!(fox.source, "a fox");
    assert_eq!(fox.target, "a fox playing chess");
    assert_eq!(fox.oracle_prompt(), "a fox playing chess");
    let p = &fox.positives[0];
    assert_eq!(
        (p.prompt.as_str(), p.old.as_str()),
        ("a fox in the snow", "a fox in the snow")
    );
    assert_eq!(p.new, "a fox playing chess in the snow");
    // The file has no final newline: the last cell of the last row is whole.
    assert_eq!(fox.negatives[4].prompt, "a forest");
    assert_eq!(fox.negatives[4].new, "a forest");
    // A quoted cell with a comma stays one cell.
    assert_eq!(cases[0].positives[0].prompt, "a kettle, pixel art");
    assert_eq!(cases[2].edit_prompt, "a pack of roses");
}

fn temp_csv(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("data.csv");
    std::fs::write(&path, text).unwrap();
    path
}

const TIMED_HEADER: &str = "old,new,positive1,gt1,negative1,gn1";

fn dataset_error(err: EvalError) -> (usize, String) {
    match err {
        EvalError::Dataset { row, column, .. } => (row, column),
        other => panic!("expected a dataset error, got {other}"),
    }
}

#[test]
fn spaces_are_trimmed_case_is_lowered_and_a_bom_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        format!("\u{feff}{TIMED_HEADER}\n  A Cat , A Dog,  Cat Toy,Dog Toy,A Café,A DOG CAFÉ");
    let cases = load(&temp_csv(&dir, &text), DatasetFormat::Timed).unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].edit_prompt, "a cat");
    assert_eq!(cases[0].target, "a dog");
    assert_eq!(cases[0].negatives[0].prompt, "a café");
    assert_eq!(cases[0].negatives[0].new, "a dog café");
}

#[test]
fn an_empty_cell_is_refused_with_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{TIMED_HEADER}\na,b,c,d,e,f\na,b,c,  ,e,f\n");
    let err = load(&temp_csv(&dir, &text), DatasetFormat::Timed).unwrap_err();
    let message = err.to_string();
    assert_eq!(dataset_error(err), (2, "gt1".to_string()));
    assert!(
        message.contains("row 2") && message.contains("`gt1`"),
        "{message}"
    );
}

#[test]
fn a_short_row_names_the_first_missing_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{TIMED_HEADER}\na,b,c,d\n");
    let err = load(&temp_csv(&dir, &text), DatasetFormat::Timed).unwrap_err();
    assert_eq!(dataset_error(err), (1, "negative1".to_string()));
}

#[test]
fn a_long_row_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{TIMED_HEADER}\na,b,c,d,e,f\na,b,c,d,e,f,g\n");
    let err = load(&temp_csv(&dir, &text), DatasetFormat::Timed).unwrap_err();
    assert_eq!(dataset_error(err), (2, "#7".to_string()));
}

#[test]
fn a_missing_column_is_named_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let text = "old,positive1,gt1,negative1,gn1\na,c,d,e,f\n";
    let err = load(&temp_csv(&dir, text), DatasetFormat::Timed).unwrap_err();
    let message = err.to_string();
    assert_eq!(dataset_error(err), (0, "new".to_string()));
    assert!(message.contains("header"), "{message}");
}

#[test]
fn a_road_file_read_as_timed_is_refused_and_vice_versa() {
    let err = load(&data_file("road_sample.csv"), DatasetFormat::Timed).unwrap_err();
    assert!(matches!(err, EvalError::Dataset { row: 0, .. }), "{err}");
    let err = load(&data_file("timed_sample.csv"), DatasetFormat::Road).unwrap_err();
    assert!(matches!(err, EvalError::Dataset { row: 0, .. }), "{err}");
}

#[test]
fn a_road_positive_without_its_new_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = "Type,Prompt,Oracle,Old,New,Positive1,Positive_old1,Negative1,Negative_new1\n\
                role,p,o,a,b,p1,a1,n1,nn1\n";
    let err = load(&temp_csv(&dir, text), DatasetFormat::Road).unwrap_err();
    assert_eq!(dataset_error(err), (0, "positive_new1".to_string()));
}

#[test]
fn a_header_without_rows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&temp_csv(&dir, TIMED_HEADER), DatasetFormat::Timed).unwrap_err();
    assert!(matches!(err, EvalError::Dataset { .. }), "{err}");
}

#[test]
fn an_unterminated_quote_is_refused_not_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{TIMED_HEADER}\na,b,\"c,d,e,f\n");
    assert!(load(&temp_csv(&dir, &text), DatasetFormat::Timed).is_err());
}
