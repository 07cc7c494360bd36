//! `refact token create|list|revoke`: API tokens. A new token is printed once, alone on
//! stdout (only its hash is stored).

use refact_store::{Scope, Store};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        #[command(flatten)]
        db: Database,
        /// Who or what uses it (recorded on the edits it submits).
        #[arg(long)]
        name: String,
        /// read, generate, edit or admin (admin implies all); repeat for several.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        db: Database,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        db: Database,
        id: uuid::Uuid,
    },
}

#[derive(clap::Args, Debug)]
struct Database {
    /// Settings file (default: config/default.toml when it exists).
    #[arg(long, env = "REFACT_CONFIG")]
    config: Option<PathBuf>,
    /// `postgres://...` or `sqlite://path` (default: from the settings).
    #[arg(long)]
    database_url: Option<String>,
}

impl Database {
    async fn open(&self) -> anyhow::Result<Store> {
        let settings = super::load_settings(self.config.as_ref())?;
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| settings.database_url.expose().to_string());
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(store)
    }
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "read" => Ok(Scope::Read),
        "generate" => Ok(Scope::Generate),
        "edit" => Ok(Scope::Edit),
        "admin" => Ok(Scope::Admin),
        other => Err(format!(
            "unknown scope `{other}` (read, generate, edit, admin)"
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        match args.command {
            TokenCommand::Create { db, name, scopes } => {
                let store = db.open().await?;
                let (token, info) = store.create_token(&name, &scopes).await?;
                eprintln!(
                    "created token {} ({name}); store it now, it is not shown again",
                    info.id
                );
                println!("{token}");
                store.close().await;
            }
            TokenCommand::List { db } => {
                let store = db.open().await?;
                for info in store.list_tokens().await? {
                    let scopes: Vec<&str> = info.scopes.iter().map(|s| s.as_str()).collect();
                    let state = if info.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{state}",
                        info.id,
                        info.name,
                        scopes.join(","),
                        info.created_at.to_rfc3339()
                    );
                }
                store.close().await;
            }
            TokenCommand::Revoke { db, id } => {
                let store = db.open().await?;
                if store.revoke_token(id).await? {
                    eprintln!("revoked token {id}");
                } else {
                    anyhow::bail!("no active token {id}");
                }
                store.close().await;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
