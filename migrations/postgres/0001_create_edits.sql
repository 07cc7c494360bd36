-- The edit table is also the job queue: workers claim rows with a lease.
CREATE TABLE edits (
    id               UUID PRIMARY KEY,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'applied', 'failed', 'cancelled')),
    request          JSONB NOT NULL,
    request_hash     TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    error            TEXT,
    metrics          JSONB,
    progress         JSONB,
    version          BIGINT,
    created_by       TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);

-- Claiming scans only live rows, oldest first.
CREATE INDEX edits_claimable ON edits (created_at) WHERE status IN ('queued', 'running');
-- Listing by status, newest first.
CREATE INDEX edits_status_created ON edits (status, created_at);
