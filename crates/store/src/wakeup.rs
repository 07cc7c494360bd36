//! Waking the edit worker when work arrives. Only an optimisation: the worker also
//! polls, so a lost notification delays an edit by one poll interval, never more.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::store::{Backend, Store};

/// Postgres channel on which `insert_edit` (and a retry) announce claimable work.
const EDIT_CHANNEL: &str = "refact_edit_queue";

/// SQLite has no cross-process notification: wake at least this often to look again
/// (another process may share the file).
const SQLITE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Pause before reconnecting a Postgres listener whose connection failed.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// In-process wake-ups plus, on Postgres, the task that relays `NOTIFY`s into them.
#[derive(Default)]
pub(crate) struct WorkSignal {
    notify: Arc<Notify>,
    listener: OnceLock<JoinHandle<()>>,
}

impl Drop for WorkSignal {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

impl Store {
    /// Returns when an edit may have become claimable (`true`), or after `timeout`
    /// (`false`; on SQLite after at most a short poll interval). Postgres: relays
    /// `LISTEN/NOTIFY`, so inserts by other processes wake this one too. Must be
    /// called from within a Tokio runtime.
    pub async fn wait_for_work(&self, timeout: Duration) -> bool {
        let signal = self.work_signal();
        let notified = signal.notify.notified();
        let wait = match self.backend() {
            Backend::Postgres(pool) => {
                signal.listener.get_or_init(|| {
                    tokio::spawn(relay_notifications(pool.clone(), signal.notify.clone()))
                });
                timeout
            }
            Backend::Sqlite(_) => timeout.min(SQLITE_POLL_INTERVAL),
        };
        tokio::time::timeout(wait, notified).await.is_ok()
    }

    /// Wakes local waiters and, on Postgres, every listening process. A failure is
    /// logged, not returned: the edit is already stored and polling will find it.
    pub(crate) async fn announce_work(&self) {
        self.work_signal().notify.notify_waiters();
        if let Backend::Postgres(pool) = self.backend() {
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(EDIT_CHANNEL)
                .execute(pool)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "could not NOTIFY the edit queue; workers will poll");
            }
        }
    }
}

/// Listens on [`EDIT_CHANNEL`] on a dedicated connection for as long as the store
/// lives, reconnecting after failures.
async fn relay_notifications(pool: PgPool, notify: Arc<Notify>) {
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                // Anything sent while we were (re)connecting is lost: look once more.
                notify.notify_waiters();
                loop {
                    match listener.recv().await {
                        Ok(_) => notify.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(%error, "edit queue listener failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot LISTEN for edits; retrying"),
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(LISTENER_RETRY).await;
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(EDIT_CHANNEL).await?;
    Ok(listener)
}
