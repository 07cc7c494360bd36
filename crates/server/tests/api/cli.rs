//! The `refact migrate` and `refact token` subcommands, as a user runs them.

use crate::helpers::{test_database, Db};
use refact_store::{Scope, Store};
use std::process::Command;

on_both_databases!(token_create_prints_only_a_working_token_and_revoke_disables_it);

fn refact(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_refact"))
        .args(args)
        // Away from the repository's config/default.toml; the flags say everything.
        .current_dir(dir.path())
        .env_remove("REFACT_CONFIG")
        .env_remove("REFACT_DATABASE_URL")
        .output()
        .expect("run refact")
}

async fn token_create_prints_only_a_working_token_and_revoke_disables_it(db: Db) {
    let db = test_database(db).await;
    let migrated = refact(&["migrate", "--database-url", db.url()]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let created = refact(&[
        "token",
        "create",
        "--database-url",
        db.url(),
        "--name",
        "ci",
        "--scope",
        "read",
        "--scope",
        "generate",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    let token = stdout.trim_end_matches('\n');
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the token alone: {stdout:?}"
    );
    assert!(token.starts_with("rfs_"), "{token}");

    let store = Store::connect(db.url()).await.unwrap();
    let info = store
        .authenticate(token)
        .await
        .unwrap()
        .expect("the printed token works");
    assert_eq!(info.name, "ci");
    assert_eq!(info.scopes, [Scope::Read, Scope::Generate]);
    let listed = refact(&["token", "list", "--database-url", db.url()]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listing.contains("ci") && !listing.contains(token),
        "{listing}"
    );

    let revoked = refact(&[
        "token",
        "revoke",
        "--database-url",
        db.url(),
        &info.id.to_string(),
    ]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(store.authenticate(token).await.unwrap().is_none());

    let bad_scope = refact(&[
        "token",
        "create",
        "--database-url",
        db.url(),
        "--name",
        "x",
        "--scope",
        "root",
    ]);
    assert!(!bad_scope.status.success());
    store.close().await;
}
