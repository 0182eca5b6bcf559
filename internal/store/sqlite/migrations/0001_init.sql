-- linkgate schema v1 (SQLite).
-- Times are INTEGER unix microseconds in UTC, so they round-trip exactly.
-- STRICT tables make SQLite enforce the declared column types.

CREATE TABLE links (
    -- AUTOINCREMENT: ids are never reused after a delete, so keyset cursors
    -- and cached ids stay unambiguous.
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    code       TEXT    NOT NULL UNIQUE,
    url        TEXT    NOT NULL,
    redirect   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,              -- NULL: never expires
    clicks     INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER               -- last AddClicks; NULL: never changed
) STRICT;

CREATE TABLE api_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL DEFAULT '',
    hash       BLOB    NOT NULL CHECK (length(hash) = 32),  -- SHA-256 of the token
    admin      INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;
