//! RoAD and TIMED parsing: the shared validation files (read in place) and malformed
//! variants written to temp files.

use refact_eval::dataset::{load, DatasetFormat};
use refact_eval::EvalError;
use refact_testkit::data_file;
use std::path::PathBuf;

#[test]
fn road_validation_parses_into_ten_lowercased_cases() {
    let cases = load(&data_file("RoAD_validation.csv"), DatasetFormat::Road).unwrap();
    assert_eq!(cases.len(), 10);
    let un = &cases[1];
    assert_eq!(un.row, 2);
    assert_eq!(un.kind.as_deref(), Some("role"));
    assert_eq!(un.edit_prompt, "secretary-general of the united nations");
    assert_eq!(un.source, "ban ki-moon");
    // Non-ASCII letters are kept (and lowercased).
    assert_eq!(un.target, "antónio guterres");
    assert_eq!(
        un.oracle_prompt(),
        "antónio guterres as secretary-general of the united nations"
    );
    assert_eq!(un.positives.len(), 5);
    assert_eq!(
        un.positives[0].prompt,
        "secretary-general of the un playing guitar"
    );
    assert_eq!(un.positives[0].old, "ban ki-moon playing guitar");
    assert_eq!(un.positives[0].new, "antónio guterres playing guitar");
    // The validation split has no Positive_oracle columns: the oracle uses the new text.
    assert_eq!(
        un.positives[0].oracle_prompt(),
        "antónio guterres playing guitar"
    );
    assert_eq!(un.negatives.len(), 5);
    assert_eq!(un.negatives[0].prompt, "ban ki-moon");
    assert_eq!(un.negatives[4].new, "antónio guterres");
    // The file has no final newline: the last row is still read whole.
    let last = &cases[9];
    assert_eq!(
        (last.edit_prompt.as_str(), last.target.as_str()),
        ("artichoke", "okra")
    );
    assert_eq!(last.kind.as_deref(), Some("appearance"));
}

#[test]
fn timed_validation_parses_with_old_as_prompt_and_source() {
    let cases = load(&data_file("TIMED_validation_set.csv"), DatasetFormat::Timed).unwrap();
    assert_eq!(cases.len(), 8);
    let messi = &cases[7];
    assert_eq!(messi.row, 8);
    assert_eq!(messi.kind, None);
    assert_eq!(messi.edit_prompt, "messi");
    assert_eq!(messi.source, "messi");
    assert_eq!(messi.target, "messi playing basketball");
    assert_eq!(messi.oracle_prompt(), "messi playing basketball");
    let p = &messi.positives[0];
    assert_eq!(
        (p.prompt.as_str(), p.old.as_str()),
        ("lionel messi", "lionel messi")
    );
    assert_eq!(p.new, "lionel messi playing basketball");
    assert_eq!(messi.negatives[4].prompt, "a soccer ball");
    assert_eq!(messi.negatives[4].new, "a basket ball");
    // A quoted cell with a comma stays one cell.
    assert_eq!(cases[0].positives[0].prompt, "a bear, pixel art");
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
    let err = load(&data_file("RoAD_validation.csv"), DatasetFormat::Timed).unwrap_err();
    assert!(matches!(err, EvalError::Dataset { row: 0, .. }), "{err}");
    let err = load(&data_file("TIMED_validation_set.csv"), DatasetFormat::Road).unwrap_err();
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
