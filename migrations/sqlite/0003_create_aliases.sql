-- Named pointers at versions (production, staging, ...).
CREATE TABLE aliases (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL REFERENCES versions (number),
    updated_at TEXT NOT NULL
) STRICT;
