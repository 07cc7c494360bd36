-- An edit whose parent moved while it computed can ask for the head's next turn: while
-- its lease lives, no younger edit commits, so a long edit cannot lose forever to a
-- stream of short ones (see `Store::request_turn`). Cleared by the next claim.
ALTER TABLE edits ADD COLUMN turn_requested INTEGER NOT NULL DEFAULT 0
    CHECK (turn_requested IN (0, 1));
