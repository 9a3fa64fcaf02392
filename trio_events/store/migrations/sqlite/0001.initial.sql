-- Users, their credentials (sessions and Web API tokens) and avatars.
-- depends:

CREATE TABLE users (
    user_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    display_name       TEXT    NOT NULL,
    password_hash      TEXT    NOT NULL,
    is_admin           INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    status             TEXT    NOT NULL DEFAULT 'Active'
                       CHECK (status IN ('Active', 'Suspended', 'DeletionInProgress')),
    created_utc        INTEGER NOT NULL,
    last_modified_utc  INTEGER NOT NULL
);

CREATE TABLE credentials (
    credential_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    kind           TEXT    NOT NULL CHECK (kind IN ('session', 'token')),
    secret_hash    TEXT    NOT NULL UNIQUE,
    created_utc    INTEGER NOT NULL,
    expires_utc    INTEGER
);
CREATE INDEX credentials_by_user ON credentials (user_id, kind);
-- At most one Web API token per user.
CREATE UNIQUE INDEX one_token_per_user ON credentials (user_id) WHERE kind = 'token';

CREATE TABLE avatars (
    owner         TEXT    NOT NULL CHECK (owner IN ('user', 'room')),
    owner_id      INTEGER NOT NULL,
    content_type  TEXT    NOT NULL,
    data          BLOB    NOT NULL,
    updated_utc   INTEGER NOT NULL,
    PRIMARY KEY (owner, owner_id)
);
