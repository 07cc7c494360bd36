-- Issue 15: what the operations dashboard and automations need.

-- A protected alias moves only for an admin, or onto a version whose gates all passed.
ALTER TABLE aliases ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE;

-- Every move and removal of an alias, oldest first: who (the token's name), when, from
-- which version to which (NULL from: created; NULL to: removed), forced past a gate.
CREATE TABLE alias_events (
    id           BIGSERIAL PRIMARY KEY,
    alias        TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('moved', 'removed')),
    from_version BIGINT,
    to_version   BIGINT,
    actor        TEXT NOT NULL,
    forced       BOOLEAN NOT NULL,
    at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX alias_events_by_alias ON alias_events (alias, id);

-- Webhook deliveries: one row per (event, webhook), retried with backoff until
-- delivered or out of attempts. Any replica may send a pending row whose time has come;
-- it claims it by pushing next_attempt_at forward first.
CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    url             TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_code       INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);

-- Server processes seen lately: each writes its row every few seconds.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL,
    model      TEXT NOT NULL,
    worker     BOOLEAN NOT NULL,
    -- What it was doing at its last heartbeat: {"generate_queue": n, "running_edits": [...]}.
    status     JSONB NOT NULL
);
