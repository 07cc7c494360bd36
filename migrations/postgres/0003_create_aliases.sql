-- Named pointers at versions (production, staging, ...).
CREATE TABLE aliases (
    name       TEXT PRIMARY KEY,
    version    BIGINT NOT NULL REFERENCES versions (number),
    updated_at TIMESTAMPTZ NOT NULL
);
