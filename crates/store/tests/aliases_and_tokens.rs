//! Aliases (names for versions) and API tokens. Each test runs on SQLite and Postgres.

#[macro_use]
mod common;

use std::time::Duration;

use common::FINGERPRINT;
use refact_store::{
    token_hash, AliasChange, CommitDelta, CommitOutcome, Scope, Store, StoreError, TOKEN_PREFIX,
};
use serde_json::json;

/// Creates versions 0..=n.
async fn versions(store: &Store, n: u32) -> anyhow::Result<()> {
    store.ensure_base(FINGERPRINT).await?;
    for seed in 1..=n {
        let id = common::queue(store, seed).await?;
        store
            .claim_next_edit("w", Duration::from_secs(60))
            .await?
            .expect("claim");
        let delta = CommitDelta {
            parent: i64::from(seed) - 1,
            deltas: vec![refact_store::StoredDelta::rank_one(
                7,
                common::delta_values(seed, 4),
                common::delta_values(seed, 4),
            )],
            model_fingerprint: FINGERPRINT.into(),
            metrics: json!({}),
            gate: None,
        };
        assert!(matches!(
            store.commit_edit(id, "w", delta).await?,
            CommitOutcome::Committed(_)
        ));
    }
    Ok(())
}

/// A plain move by `ci`.
const BY_CI: AliasChange<'static> = AliasChange {
    actor: "ci",
    forced: false,
    protected: None,
};

backend_test!(aliases_point_at_versions_and_can_move, |store, db| {
    versions(&store, 2).await?;
    let production = store.set_alias("production", 1, &BY_CI).await?;
    assert_eq!(
        (production.name.as_str(), production.version),
        ("production", 1)
    );
    store.set_alias("staging", 2, &BY_CI).await?;
    let moved = store.set_alias("production", 2, &BY_CI).await?;
    assert_eq!(moved.version, 2);
    assert!(moved.updated_at >= production.updated_at);
    assert_eq!(store.get_alias("production").await?, Some(moved));
    let names: Vec<_> = store
        .list_aliases()
        .await?
        .into_iter()
        .map(|a| (a.name, a.version))
        .collect();
    assert_eq!(
        names,
        vec![("production".to_owned(), 2), ("staging".to_owned(), 2)]
    );
    assert!(store.delete_alias("staging", "ci").await?);
    assert!(!store.delete_alias("staging", "ci").await?);
    assert_eq!(store.get_alias("staging").await?, None);
    Ok(())
});

backend_test!(
    every_move_and_removal_is_in_the_alias_history,
    |store, db| {
        versions(&store, 2).await?;
        let created = store.set_alias("production", 1, &BY_CI).await?;
        assert!(!created.protected, "new aliases are not protected");
        let forced = AliasChange {
            actor: "ops",
            forced: true,
            protected: Some(true),
        };
        let moved = store.set_alias("production", 2, &forced).await?;
        assert!(moved.protected);
        let kept = store.set_alias("production", 1, &BY_CI).await?;
        assert!(
            kept.protected,
            "a move that says nothing keeps the protection"
        );
        store.set_alias("staging", 2, &BY_CI).await?;
        assert!(store.delete_alias("production", "ops").await?);
        // A refused move (unknown version) leaves no entry.
        assert!(store.set_alias("production", 9, &BY_CI).await.is_err());

        let history = store.alias_history("production", 100).await?;
        let summary: Vec<_> = history
            .iter()
            .map(|e| {
                (
                    e.action.as_str(),
                    e.from_version,
                    e.to_version,
                    e.actor.as_str(),
                    e.forced,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("removed", Some(1), None, "ops", false),
                ("moved", Some(2), Some(1), "ci", false),
                ("moved", Some(1), Some(2), "ops", true),
                ("moved", None, Some(1), "ci", false),
            ],
            "newest first"
        );
        assert!(history.windows(2).all(|w| w[0].at >= w[1].at));
        assert_eq!(store.alias_history("production", 2).await?.len(), 2);
        assert_eq!(store.alias_history("staging", 100).await?.len(), 1);
        assert!(store.alias_history("nothing", 100).await?.is_empty());
        Ok(())
    }
);

backend_test!(
    an_alias_needs_an_existing_version_and_a_valid_name,
    |store, db| {
        versions(&store, 0).await?;
        let missing = store.set_alias("production", 5, &BY_CI).await;
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{missing:?}"
        );
        assert_eq!(
            store.get_alias("production").await?,
            None,
            "nothing was written"
        );
        for bad in ["42", "", "white space"] {
            let result = store.set_alias(bad, 0, &BY_CI).await;
            assert!(
                matches!(result, Err(StoreError::Invalid { .. })),
                "{bad:?}: {result:?}"
            );
        }
        Ok(())
    }
);

backend_test!(
    tokens_authenticate_and_only_their_hash_is_stored,
    |store, db| {
        let (plaintext, info) = store
            .create_token("ci", &[Scope::Edit, Scope::Read, Scope::Edit])
            .await?;
        assert!(plaintext.starts_with(TOKEN_PREFIX));
        assert_eq!(plaintext.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(
            info.scopes,
            vec![Scope::Read, Scope::Edit],
            "sorted, no repeats"
        );
        assert_eq!(store.authenticate(&plaintext).await?, Some(info.clone()));
        assert_eq!(store.authenticate("rfs_0000").await?, None);

        let stored = common::raw_token_rows(db.url()).await?;
        assert_eq!(stored.len(), 1);
        let row_text = stored[0].join("|");
        assert!(
            !row_text.contains(&plaintext[TOKEN_PREFIX.len()..]),
            "plaintext stored: {row_text}"
        );
        assert!(
            stored[0].contains(&token_hash(&plaintext)),
            "hash not stored: {row_text}"
        );
        Ok(())
    }
);

backend_test!(a_revoked_token_is_refused, |store, db| {
    let (keep, _) = store.create_token("dashboard", &[Scope::Read]).await?;
    let (revoke, info) = store.create_token("old-ci", &[Scope::Admin]).await?;
    assert!(store.revoke_token(info.id).await?);
    assert_eq!(store.authenticate(&revoke).await?, None);
    assert!(store.authenticate(&keep).await?.is_some());
    let revoked_at = store
        .list_tokens()
        .await?
        .into_iter()
        .find(|t| t.id == info.id)
        .unwrap()
        .revoked_at;
    assert!(revoked_at.is_some());
    assert!(
        store.revoke_token(info.id).await?,
        "revoking again still finds it"
    );
    let listed = store.list_tokens().await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed.iter().find(|t| t.id == info.id).unwrap().revoked_at,
        revoked_at
    );
    assert!(!store.revoke_token(uuid::Uuid::new_v4()).await?);
    Ok(())
});

backend_test!(a_token_needs_a_name_and_a_scope, |store, db| {
    assert!(matches!(
        store.create_token("", &[Scope::Read]).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.create_token("x", &[]).await,
        Err(StoreError::Invalid { .. })
    ));
    Ok(())
});
