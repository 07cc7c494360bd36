-- Only the sha256 of a token is stored; the plaintext is shown once at creation.
CREATE TABLE api_tokens (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    -- Comma-separated scopes: read, generate, edit, admin.
    scopes     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
