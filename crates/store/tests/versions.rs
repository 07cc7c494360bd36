//! Versions: the base, committing edits in order, reverts, gates, and the stored
//! form of deltas. Each test runs on SQLite and Postgres.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{delta_values, queue, FINGERPRINT};
use refact_store::{
    CommitDelta, CommitOutcome, EditStatus, GateStatus, Store, StoreError, StoredDelta, VersionKind,
};
use serde_json::json;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

fn delta(parent: i64, seed: u32) -> CommitDelta {
    CommitDelta {
        parent,
        deltas: vec![StoredDelta::rank_one(
            7,
            delta_values(seed, 12),
            delta_values(seed + 1000, 8),
        )],
        model_fingerprint: FINGERPRINT.to_owned(),
        metrics: json!({"steps": seed, "final_prob": 0.995}),
        gate: None,
    }
}

/// Queues, claims and commits one edit on the current head; returns the version.
async fn apply_one(store: &Store, seed: u32) -> anyhow::Result<i64> {
    let id = queue(store, seed).await?;
    let claimed = store.claim_next_edit("w", LEASE).await?.expect("claim");
    assert_eq!(claimed.id, id);
    let head = store.head().await?.number;
    match store.commit_edit(id, "w", delta(head, seed)).await? {
        CommitOutcome::Committed(version) => Ok(version.number),
        other => panic!("commit failed: {other:?}"),
    }
}

backend_test!(ensure_base_creates_version_zero_once, |store, db| {
    assert!(matches!(store.head().await, Err(StoreError::NotFound(_))));
    let base = store.ensure_base(FINGERPRINT).await?;
    assert_eq!(
        (base.number, base.kind, base.parent),
        (0, VersionKind::Base, None)
    );
    assert!(store.version_deltas(0, 0).await?.is_empty());
    assert_eq!(store.ensure_base(FINGERPRINT).await?, base);
    assert_eq!(store.head().await?, base);
    let other = store.ensure_base("sha256:another-model").await;
    assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
    Ok(())
});

backend_test!(committing_an_edit_creates_the_next_version, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    let id = queue(&store, 1).await?;
    store.claim_next_edit("w1", LEASE).await?.expect("claim");
    let gate = (GateStatus::Passed, json!({"efficacy": 1.0}));
    let outcome = store
        .commit_edit(
            id,
            "w1",
            CommitDelta {
                gate: Some(gate),
                ..delta(0, 1)
            },
        )
        .await?;
    let CommitOutcome::Committed(version) = outcome else {
        panic!("expected Committed, got {outcome:?}");
    };
    assert_eq!((version.number, version.parent), (1, Some(0)));
    assert_eq!(
        (version.kind, version.edit_id, version.layer),
        (VersionKind::Apply, Some(id), Some(7))
    );
    assert_eq!(
        store.version_deltas(1, 1).await?[&1],
        delta(0, 1).deltas,
        "the delta is read back as committed"
    );
    assert_eq!(version.gate_status, Some(GateStatus::Passed));
    assert_eq!(version.gate_metrics, Some(json!({"efficacy": 1.0})));
    assert_eq!(store.get_version(1).await?, Some(version));
    let edit = store.get_edit(id).await?.unwrap();
    assert_eq!((edit.status, edit.version), (EditStatus::Applied, Some(1)));
    assert_eq!(edit.metrics, Some(json!({"steps": 1, "final_prob": 0.995})));
    assert!(edit.finished_at.is_some());
    Ok(())
});

backend_test!(commit_on_a_moved_head_writes_nothing, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    let slow = queue(&store, 1).await?;
    store.claim_next_edit("slow", LEASE).await?.expect("claim");
    apply_one(&store, 2).await?; // another edit lands first: head 1
    let outcome = store.commit_edit(slow, "slow", delta(0, 1)).await?;
    assert_eq!(outcome, CommitOutcome::HeadMoved { head: 1 });
    assert_eq!(store.head().await?.number, 1);
    assert_eq!(
        store.get_edit(slow).await?.unwrap().status,
        EditStatus::Running
    );
    // Recomputed on the new head, it commits.
    let outcome = store.commit_edit(slow, "slow", delta(1, 1)).await?;
    assert!(
        matches!(outcome, CommitOutcome::Committed(ref v) if v.number == 2),
        "{outcome:?}"
    );
    Ok(())
});

backend_test!(commit_without_the_lease_writes_nothing, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    let id = queue(&store, 1).await?;
    store
        .claim_next_edit("w1", Duration::from_millis(200))
        .await?
        .expect("claim");
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.claim_next_edit("w2", LEASE).await?.expect("reclaim");
    assert_eq!(
        store.commit_edit(id, "w1", delta(0, 1)).await?,
        CommitOutcome::LeaseLost
    );
    assert_eq!(store.head().await?.number, 0);
    let missing = store.commit_edit(Uuid::new_v4(), "w1", delta(0, 1)).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let wrong_model = CommitDelta {
        model_fingerprint: "sha256:other".into(),
        ..delta(0, 1)
    };
    let conflict = store.commit_edit(id, "w2", wrong_model).await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict(_))),
        "{conflict:?}"
    );
    assert_eq!(store.head().await?.number, 0);
    Ok(())
});

backend_test!(
    ten_edits_from_concurrent_workers_commit_as_versions_one_to_ten,
    |store, db| {
        store.ensure_base(FINGERPRINT).await?;
        for n in 0..10 {
            queue(&store, n).await?;
        }
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let store = store.clone();
            workers.spawn(async move {
                let worker = format!("w{w}");
                let mut head_moved = 0;
                while let Some(edit) = store.claim_next_edit(&worker, LEASE).await? {
                    loop {
                        let head = store.head().await?.number;
                        match store.commit_edit(edit.id, &worker, delta(head, w)).await? {
                            CommitOutcome::Committed(_) => break,
                            CommitOutcome::HeadMoved { .. } => head_moved += 1,
                            CommitOutcome::LeaseLost => panic!("lease lost with a 60 s lease"),
                            CommitOutcome::TurnTaken { by } => {
                                panic!("nobody asked, {by} has a turn")
                            }
                        }
                    }
                }
                anyhow::Ok(head_moved)
            });
        }
        while let Some(result) = workers.join_next().await {
            result??;
        }
        let versions = store.versions_up_to(100).await?;
        let numbers: Vec<i64> = versions.iter().map(|v| v.number).collect();
        assert_eq!(numbers, (0..=10).collect::<Vec<_>>());
        for v in &versions[1..] {
            assert_eq!(v.parent, Some(v.number - 1));
            assert_eq!(v.kind, VersionKind::Apply);
        }
        let edit_ids: HashSet<_> = versions.iter().filter_map(|v| v.edit_id).collect();
        assert_eq!(edit_ids.len(), 10, "exactly one version per edit");
        for v in &versions[1..] {
            let edit = store.get_edit(v.edit_id.unwrap()).await?.unwrap();
            assert_eq!(
                (edit.status, edit.version),
                (EditStatus::Applied, Some(v.number))
            );
        }
        Ok(())
    }
);

backend_test!(revert_follows_the_rules, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    apply_one(&store, 1).await?;
    apply_one(&store, 2).await?;
    let revert = store.create_revert(1, Some(2)).await?;
    assert_eq!((revert.number, revert.parent), (3, Some(2)));
    assert_eq!(
        (revert.kind, revert.reverts_version),
        (VersionKind::Revert, Some(1))
    );
    assert_eq!(revert.edit_id, None);
    assert!(!store.version_deltas(3, 3).await?.contains_key(&3));
    assert_eq!(revert.model_fingerprint, FINGERPRINT);

    let conflicts = [
        (1, None, "already reverted"),
        (0, None, "the base"),
        (3, None, "a revert"),
    ];
    for (target, expected_head, why) in conflicts {
        let result = store.create_revert(target, expected_head).await;
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{why}: {result:?}"
        );
    }
    let missing = store.create_revert(99, None).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let stale = store.create_revert(2, Some(2)).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::HeadMoved {
                expected: 2,
                head: 3
            })
        ),
        "{stale:?}"
    );
    assert_eq!(
        store.head().await?.number,
        3,
        "refused reverts write nothing"
    );
    assert_eq!(store.create_revert(2, Some(3)).await?.number, 4);
    Ok(())
});

backend_test!(concurrent_reverts_of_one_version_create_one, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    apply_one(&store, 1).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move { store.create_revert(1, None).await });
    }
    let mut created = 0;
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(_) => created += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.head().await?.number, 2);
    Ok(())
});

backend_test!(
    delta_bytes_are_little_endian_f32_and_round_trip_exactly,
    |store, db| {
        store.ensure_base(FINGERPRINT).await?;
        let id = queue(&store, 1).await?;
        store.claim_next_edit("w", LEASE).await?.expect("claim");
        let u = vec![
            1.0f32,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            -1.5e-7,
            f32::INFINITY,
        ];
        let v = vec![0.1f32, -2.5, 3.0e38];
        let outcome = store
            .commit_edit(
                id,
                "w",
                CommitDelta {
                    deltas: vec![StoredDelta::rank_one(7, u.clone(), v.clone())],
                    ..delta(0, 1)
                },
            )
            .await?;
        assert!(matches!(outcome, CommitOutcome::Committed(_)));

        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let stored = &store.version_deltas(1, 1).await?[&1][0];
        assert_eq!(bits(&stored.u), bits(&u));
        assert_eq!(bits(&stored.v), bits(&v));

        // The raw column holds exactly the little-endian bytes.
        let le = |x: &[f32]| x.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        let (raw_u, raw_v) = common::raw_delta_bytes(db.url(), 1).await?;
        assert_eq!(raw_u, le(&u));
        assert_eq!(raw_v, le(&v));
        assert_eq!(
            &raw_u[..4],
            &[0x00, 0x00, 0x80, 0x3f],
            "1.0f32, little-endian"
        );
        Ok(())
    }
);

backend_test!(gates_listing_and_replay, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    for seed in 1..=4 {
        apply_one(&store, seed).await?;
    }
    let gated = store
        .set_version_gate(2, GateStatus::Failed, json!({"specificity": 0.2}))
        .await?;
    assert_eq!(gated.gate_status, Some(GateStatus::Failed));
    assert_eq!(
        store.get_version(2).await?.unwrap().gate_metrics,
        Some(json!({"specificity": 0.2}))
    );
    let missing = store
        .set_version_gate(9, GateStatus::Passed, json!({}))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    let page = store.list_versions(2, 1).await?;
    assert_eq!(page.total, 5);
    assert_eq!(
        page.items.iter().map(|v| v.number).collect::<Vec<_>>(),
        vec![3, 2]
    );
    let replay = store.versions_up_to(2).await?;
    assert_eq!(
        replay.iter().map(|v| v.number).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        store
            .version_deltas(0, 2)
            .await?
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(store.get_version(5).await?, None);
    Ok(())
});

backend_test!(
    edits_that_asked_for_a_turn_commit_in_queue_order,
    |store, db| {
        store.ensure_base(FINGERPRINT).await?;
        let older = queue(&store, 1).await?;
        let younger = queue(&store, 2).await?;
        let bystander = queue(&store, 3).await?;
        for worker in ["w1", "w2", "w3"] {
            store.claim_next_edit(worker, LEASE).await?.expect("claim");
        }
        assert_eq!(
            store.turn_ahead_of(younger).await?,
            None,
            "nobody asked yet"
        );
        // The younger edit asks first: it holds the turn against edits that did not ask...
        assert!(store.request_turn(younger, "w2").await?);
        let outcome = store.commit_edit(bystander, "w3", delta(0, 3)).await?;
        assert_eq!(outcome, CommitOutcome::TurnTaken { by: younger });
        // ...but an older edit that asks comes before it.
        assert!(store.request_turn(older, "w1").await?);
        assert_eq!(store.turn_ahead_of(older).await?, None);
        assert_eq!(store.turn_ahead_of(younger).await?, Some(older));
        let outcome = store.commit_edit(younger, "w2", delta(0, 2)).await?;
        assert_eq!(outcome, CommitOutcome::TurnTaken { by: older });
        let outcome = store.commit_edit(older, "w1", delta(0, 1)).await?;
        assert!(matches!(outcome, CommitOutcome::Committed(ref v) if v.number == 1));
        // The turn ended with the commit: the younger one is next, on the new head.
        assert_eq!(store.turn_ahead_of(younger).await?, None);
        assert_eq!(store.turn_ahead_of(bystander).await?, Some(younger));
        let outcome = store.commit_edit(younger, "w2", delta(1, 2)).await?;
        assert!(matches!(outcome, CommitOutcome::Committed(ref v) if v.number == 2));
        let outcome = store.commit_edit(bystander, "w3", delta(2, 3)).await?;
        assert!(matches!(outcome, CommitOutcome::Committed(ref v) if v.number == 3));
        // Only a holder of the lease can ask.
        assert!(!store.request_turn(older, "w1").await?);
        Ok(())
    }
);

backend_test!(a_turn_lapses_with_its_lease, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    let crashed = queue(&store, 1).await?;
    let other = queue(&store, 2).await?;
    store
        .claim_next_edit("crashed", Duration::from_millis(200))
        .await?
        .expect("claim");
    store.claim_next_edit("w2", LEASE).await?.expect("claim");
    assert!(store.request_turn(crashed, "crashed").await?);
    assert_eq!(store.turn_ahead_of(other).await?, Some(crashed));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.turn_ahead_of(other).await?, None);
    let outcome = store.commit_edit(other, "w2", delta(0, 2)).await?;
    assert!(
        matches!(outcome, CommitOutcome::Committed(_)),
        "{outcome:?}"
    );
    // Taking the lapsed edit over starts it without a turn.
    let taken = store.claim_next_edit("w3", LEASE).await?.expect("reclaim");
    assert_eq!(taken.id, crashed);
    let next = queue(&store, 3).await?;
    store.claim_next_edit("w4", LEASE).await?.expect("claim");
    assert_eq!(store.turn_ahead_of(next).await?, None);
    Ok(())
});

backend_test!(a_version_holds_deltas_of_any_rank_in_order, |store, db| {
    store.ensure_base(FINGERPRINT).await?;
    let id = queue(&store, 1).await?;
    store.claim_next_edit("w", LEASE).await?.expect("claim");
    // A batch of three facts at layer 7, then a second delta at layer 9.
    let deltas = vec![
        StoredDelta {
            encoder: "text".into(),
            layer: 7,
            rank: 3,
            u: delta_values(1, 36),
            v: delta_values(2, 24),
        },
        StoredDelta::rank_one(9, delta_values(3, 12), delta_values(4, 8)),
    ];
    let outcome = store
        .commit_edit(
            id,
            "w",
            CommitDelta {
                deltas: deltas.clone(),
                ..delta(0, 1)
            },
        )
        .await?;
    let CommitOutcome::Committed(version) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(version.layer, Some(7));
    assert_eq!(store.version_deltas(0, 1).await?[&1], deltas);

    // Factors that do not split into `rank` rows, or no delta at all, are refused.
    for wrong in [
        vec![StoredDelta {
            rank: 5,
            ..deltas[0].clone()
        }],
        vec![StoredDelta {
            encoder: "vision".into(),
            ..deltas[1].clone()
        }],
        Vec::new(),
    ] {
        let refused = store
            .commit_edit(
                id,
                "w",
                CommitDelta {
                    deltas: wrong,
                    ..delta(1, 1)
                },
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Invalid { .. })),
            "{refused:?}"
        );
    }
    Ok(())
});
