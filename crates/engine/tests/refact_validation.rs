//! Every malformed edit request is refused with its own error kind, before any compute.

use refact_engine::refact::EditRequest;
use refact_engine::tokenizer::ClipTokenizer;
use refact_engine::{EngineError, InvalidKind};

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_folder(&refact_testkit::fixture_dir().join("tokenizer")).unwrap()
}

fn kind_of(request: &EditRequest) -> (InvalidKind, String) {
    match request.validate(&tokenizer(), 12) {
        Err(EngineError::Invalid { kind, field, .. }) => (kind, field),
        other => panic!("{request:?} was not refused: {other:?}"),
    }
}

fn base() -> EditRequest {
    EditRequest::new("The Prince of Wales", "Prince Charles", "Prince William")
}

#[test]
fn a_good_request_resolves_prompts_indices_and_candidates() {
    let edit = base().validate(&tokenizer(), 12).unwrap();
    assert_eq!(edit.layer, 7);
    assert_eq!(edit.subject, "The Prince of Wales");
    assert_eq!(edit.rewriting_prompts.len(), 10);
    // golden.json: lookup_index and the rewriting prompts' indexes.
    let json = refact_testkit::golden_json();
    let golden: Vec<usize> = json["refact"]["rewriting_lookup_indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(edit.rewriting_indices, golden);
    assert_eq!(edit.candidates, vec!["Prince William", "Prince Charles"]);
}

#[test]
fn a_subject_inside_the_prompt_is_located_after_the_text_before_it() {
    let mut request = base();
    request.prompt = "A portrait of The Prince of Wales".into();
    request.subject = Some("The Prince of Wales".into());
    let edit = request.validate(&tokenizer(), 12).unwrap();
    // "a portrait of" = 3 tokens, subject = 4 tokens, BOS at 0 → index 7.
    assert_eq!(edit.rewriting_indices[0], 7);
}

#[test]
fn bad_requests_are_refused_with_distinct_kinds() {
    let long = "word ".repeat(80);
    let cases: Vec<(EditRequest, InvalidKind, &str)> = vec![
        (
            EditRequest {
                prompt: "  ".into(),
                ..base()
            },
            InvalidKind::Empty,
            "prompt",
        ),
        (
            EditRequest {
                source: "".into(),
                ..base()
            },
            InvalidKind::Empty,
            "source",
        ),
        (
            EditRequest {
                target: "".into(),
                ..base()
            },
            InvalidKind::Empty,
            "target",
        ),
        (
            EditRequest {
                subject: Some("".into()),
                ..base()
            },
            InvalidKind::Empty,
            "subject",
        ),
        (
            EditRequest {
                contrastive: vec!["".into()],
                ..base()
            },
            InvalidKind::Empty,
            "contrastive[0]",
        ),
        (
            EditRequest {
                contrastive: vec!["a cat".into(); refact_engine::refact::MAX_CONTRASTIVE + 1],
                ..base()
            },
            InvalidKind::TooMany,
            "contrastive",
        ),
        (
            EditRequest {
                subject: Some("The Queen".into()),
                ..base()
            },
            InvalidKind::SubjectNotInPrompt,
            "subject",
        ),
        (
            EditRequest {
                prompt: long.clone(),
                ..base()
            },
            InvalidKind::TooLong,
            "prompt",
        ),
        (
            EditRequest {
                target: long,
                ..base()
            },
            InvalidKind::TooLong,
            "target",
        ),
        (
            EditRequest {
                layer: Some(12),
                ..base()
            },
            InvalidKind::LayerOutOfRange,
            "layer",
        ),
        (
            EditRequest {
                target: "prince  CHARLES".into(),
                ..base()
            },
            InvalidKind::SourceEqualsTarget,
            "target",
        ),
    ];
    for (request, kind, field) in cases {
        assert_eq!(kind_of(&request), (kind, field.to_string()), "{request:?}");
    }
    let mut bad_lr = base();
    bad_lr.hparams.lr = f64::NAN;
    assert_eq!(
        kind_of(&bad_lr),
        (InvalidKind::BadHyperParameter, "hparams.lr".into())
    );
}

#[test]
fn requests_parse_from_json_with_defaults_and_refuse_unknown_fields() {
    let request: EditRequest = serde_json::from_str(
        r#"{"prompt": "The Prince of Wales", "source": "Prince Charles", "target": "Prince William",
            "hparams": {"max_steps": 20}}"#,
    )
    .unwrap();
    assert_eq!(request.hparams.max_steps, 20);
    assert_eq!(request.hparams.lr, 0.05);
    assert!(serde_json::from_str::<EditRequest>(
        r#"{"prompt": "a", "source": "b", "target": "c", "colour": 1}"#
    )
    .is_err());
}
