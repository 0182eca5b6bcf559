-- linkgate schema v1 (PostgreSQL).
-- timestamptz keeps microseconds, the precision both stores round-trip.

CREATE TABLE links (
    id         bigserial   PRIMARY KEY,   -- never reused, orders the listing
    code       text        COLLATE "C" NOT NULL UNIQUE,  -- bytewise: codes are case-sensitive
    url        text        NOT NULL,
    redirect   integer     NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,               -- NULL: never expires
    clicks     bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz            -- last AddClicks; NULL: never changed
);

CREATE TABLE api_keys (
    id         text        COLLATE "C" PRIMARY KEY,
    name       text        NOT NULL DEFAULT '',
    hash       bytea       NOT NULL CHECK (octet_length(hash) = 32),  -- SHA-256 of the token
    admin      boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);
