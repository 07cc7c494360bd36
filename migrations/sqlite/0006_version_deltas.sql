-- A version's deltas get their own table (issue 14). A delta is a low-rank pair on one
-- layer of one text encoder: fc2.weight += Vᵀ U with U [rank × inner] and V
-- [rank × hidden], little-endian f32, row after row. A single edit stores one rank-1
-- delta, a batch of n facts one rank-n delta; a version may hold several (MEMIT-style
-- spreading over layers, SDXL's second encoder).
CREATE TABLE version_deltas (
    version  INTEGER NOT NULL REFERENCES versions (number),
    position INTEGER NOT NULL CHECK (position >= 0),
    encoder  TEXT NOT NULL CHECK (encoder IN ('text', 'text_2')),
    layer    INTEGER NOT NULL CHECK (layer >= 0),
    rank     INTEGER NOT NULL CHECK (rank >= 1),
    u        BLOB NOT NULL,
    v        BLOB NOT NULL,
    PRIMARY KEY (version, position)
) STRICT;

-- Every delta stored so far was one rank-1 delta on the text encoder.
INSERT INTO version_deltas (version, position, encoder, layer, rank, u, v)
SELECT number, 0, 'text', layer, 1, u, v FROM versions WHERE kind = 'apply';

-- versions.layer, u and v stay (SQLite cannot drop columns a CHECK names without
-- rebuilding a table other tables reference, and both schemas stay alike): from here on
-- `layer` is the first delta's layer, and u and v of new apply versions are empty;
-- version_deltas is the one place factors are read from.
