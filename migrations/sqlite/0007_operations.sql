-- Issue 15: what the operations dashboard and automations need. Same columns as the
-- Postgres schema (uuids and times as TEXT, booleans as 0/1, JSON as TEXT).

-- A protected alias moves only for an admin, or onto a version whose gates all passed.
ALTER TABLE aliases ADD COLUMN protected INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1));

-- Every move and removal of an alias, oldest first: who (the token's name), when, from
-- which version to which (NULL from: created; NULL to: removed), forced past a gate.
CREATE TABLE alias_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    alias        TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('moved', 'removed')),
    from_version INTEGER,
    to_version   INTEGER,
    actor        TEXT NOT NULL,
    forced       INTEGER NOT NULL CHECK (forced IN (0, 1)),
    at           TEXT NOT NULL
) STRICT;
CREATE INDEX alias_events_by_alias ON alias_events (alias, id);

-- Webhook deliveries: one row per (event, webhook), retried with backoff until
-- delivered or out of attempts. Any replica may send a pending row whose time has come;
-- it claims it by pushing next_attempt_at forward first.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_code       INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    finished_at     TEXT
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);

-- Server processes seen lately: each writes its row every few seconds.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    model      TEXT NOT NULL,
    worker     INTEGER NOT NULL CHECK (worker IN (0, 1)),
    -- What it was doing at its last heartbeat: {"generate_queue": n, "running_edits": [...]}.
    status     TEXT NOT NULL
) STRICT;
