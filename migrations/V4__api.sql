-- The platform API: keys for producers and clients, producer versions that only move
-- forward, and the leases of pull consumers' members.

-- `PUT /v1/producers/{id}` applies a definition only when its version is newer, so a
-- deployment that replays an old definition cannot undo a newer one.
ALTER TABLE producer ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);

-- API keys: `epk_<id>_<secret>`. Only the SHA-256 of the secret is kept; the key is
-- shown once, when it is created. `scope` is the producer id (role `producer`) or the
-- client id (role `client`) the key acts for. A revoked key stays, for the record.
CREATE TABLE api_key (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    secret_hash bytea NOT NULL,
    role        text NOT NULL CHECK (role IN ('producer', 'client')),
    scope       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_key_scope_idx ON api_key (role, scope);

-- Events of a pull consumer handed to one of its members: invisible to the other
-- members until `lease_until`, kept once acknowledged until the consumer's cursor
-- passes them (the cursor moves over the contiguous acknowledged prefix).
CREATE TABLE pull_lease (
    consumer_id bigint NOT NULL REFERENCES consumer (id) ON DELETE CASCADE,
    xact_id     bigint NOT NULL,
    seq         bigint NOT NULL,
    member      text NOT NULL,
    lease_until timestamptz NOT NULL,
    acked       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (consumer_id, xact_id, seq)
);
