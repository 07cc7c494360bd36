-- A linear history: version n (n > 0) always has parent n - 1.
CREATE TABLE versions (
    number            INTEGER PRIMARY KEY CHECK (number >= 0),
    parent            INTEGER REFERENCES versions (number),
    kind              TEXT NOT NULL CHECK (kind IN ('base', 'apply', 'revert')),
    -- Exactly one version per applied edit.
    edit_id           TEXT UNIQUE REFERENCES edits (id),
    -- A delta is reverted at most once.
    reverts_version   INTEGER UNIQUE REFERENCES versions (number),
    layer             INTEGER CHECK (layer >= 0),
    u                 BLOB,
    v                 BLOB,
    model_fingerprint TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    gate_status       TEXT CHECK (gate_status IN ('passed', 'failed')),
    gate_metrics      TEXT,
    CHECK ((kind = 'base') = (number = 0)),
    CHECK ((number = 0 AND parent IS NULL)
           OR (number > 0 AND parent IS NOT NULL AND parent = number - 1)),
    CHECK ((kind = 'apply')
           = (edit_id IS NOT NULL AND layer IS NOT NULL AND u IS NOT NULL AND v IS NOT NULL)),
    CHECK ((kind = 'revert') = (reverts_version IS NOT NULL))
) STRICT;
