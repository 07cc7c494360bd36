-- The edit table is also the job queue: workers claim rows with a lease.
-- Same columns as the Postgres schema; uuids are hyphenated TEXT, timestamps are
-- fixed-width RFC 3339 TEXT (microseconds, 'Z') so that text order is time order.
CREATE TABLE edits (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'applied', 'failed', 'cancelled')),
    request          TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_owner      TEXT,
    lease_expires_at TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    error            TEXT,
    metrics          TEXT,
    progress         TEXT,
    version          INTEGER,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
) STRICT;

-- Claiming scans only live rows, oldest first.
CREATE INDEX edits_claimable ON edits (created_at) WHERE status IN ('queued', 'running');
-- Listing by status, newest first.
CREATE INDEX edits_status_created ON edits (status, created_at);
