-- Delivery: the commit-safe log over `message`, consumers with their cursors and
-- leases, a record of every attempt, and what was parked. docs/design.md explains
-- why the log's order is (xact_id, seq) read below the snapshot's xmin.

-- The inserting transaction's id and a sequence number: the log's total order.
-- A reader only reads rows whose xact_id is below pg_snapshot_xmin(pg_current_snapshot()):
-- every such transaction has ended, so no row can appear behind a cursor later.
CREATE SEQUENCE message_seq;
ALTER TABLE message
    ADD COLUMN xact_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    ADD COLUMN seq bigint NOT NULL DEFAULT nextval('message_seq');
ALTER SEQUENCE message_seq OWNED BY message.seq;
-- Each consumer reads its client's events in log order.
CREATE INDEX message_log_idx ON message (client_id, xact_id, seq);
DROP INDEX message_stored_at_idx;

-- Who receives events over HTTP: a client's endpoint with its signing secret,
-- the position it has reached, and which sender serves it now.
CREATE TABLE consumer (
    id              bigserial PRIMARY KEY,
    client_id       text NOT NULL REFERENCES client (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    -- `push`: the sender POSTs to `endpoint`; `pull`: read through the API (no endpoint).
    kind            text NOT NULL DEFAULT 'push' CHECK (kind IN ('push', 'pull')),
    endpoint        text NOT NULL DEFAULT '',
    -- `whsec_` + base64; never exported unless asked, never logged.
    secret          text NOT NULL,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'disabled')),
    disabled_reason text,
    -- Per-consumer limits: one request's timeout, requests in flight at once.
    timeout_ms      integer NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 100 AND 120000),
    max_in_flight   integer NOT NULL DEFAULT 1 CHECK (max_in_flight BETWEEN 1 AND 100),
    -- Where it started (`beginning`, `new` or a position), as registered.
    start_position  text NOT NULL DEFAULT 'new',
    start_xact      bigint NOT NULL DEFAULT 0,
    start_seq       bigint NOT NULL DEFAULT 0,
    -- The durable cursor: every event at or before it was delivered or parked.
    cursor_xact     bigint NOT NULL DEFAULT 0,
    cursor_seq      bigint NOT NULL DEFAULT 0,
    -- Bumped by reset/replay so a sender holding an older view cannot move the cursor.
    generation      bigint NOT NULL DEFAULT 0,
    lease_owner     text,
    lease_until     timestamptz,
    -- Since when every attempt failed (NULL while deliveries succeed).
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, name),
    CHECK (kind = 'pull' OR endpoint ~ '^https?://')
);
CREATE INDEX consumer_lease_idx ON consumer (state, lease_until);

-- The event types (and optionally one version) a consumer receives.
CREATE TABLE consumer_subscription (
    consumer_id bigint NOT NULL REFERENCES consumer (id) ON DELETE CASCADE,
    event_type  text NOT NULL,
    -- NULL: every version.
    version     integer CHECK (version >= 1)
);
CREATE UNIQUE INDEX consumer_subscription_key ON consumer_subscription (consumer_id, event_type, coalesce(version, 0));

-- Every HTTP attempt, successful or not.
-- Two indexes only (by consumer over time, and by event: what whoever debugs a
-- delivery asks); rows are written at the delivery rate, and every index costs.
CREATE TABLE delivery_attempt (
    consumer_id  bigint NOT NULL REFERENCES consumer (id) ON DELETE CASCADE,
    client_id    text NOT NULL,
    event_id     text NOT NULL,
    xact_id      bigint NOT NULL,
    seq          bigint NOT NULL,
    attempt      integer NOT NULL,
    -- HTTP status, NULL when no response came (timeout, connection refused).
    status       integer,
    error        text,
    duration_ms  integer NOT NULL,
    attempted_at timestamptz NOT NULL
);
CREATE INDEX delivery_attempt_consumer_idx ON delivery_attempt (consumer_id, attempted_at);
CREATE INDEX delivery_attempt_event_idx ON delivery_attempt (client_id, event_id);

-- Events whose retry schedule ran out: the cursor moved on, they wait for replay.
CREATE TABLE parked_delivery (
    consumer_id      bigint NOT NULL REFERENCES consumer (id) ON DELETE CASCADE,
    xact_id          bigint NOT NULL,
    seq              bigint NOT NULL,
    client_id        text NOT NULL,
    event_id         text NOT NULL,
    attempts         integer NOT NULL,
    last_status      integer,
    last_error       text,
    response_snippet text,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    -- Set by `sender replay --parked`: deliver again, ahead of the cursor's events.
    replay           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (consumer_id, xact_id, seq)
);
-- The sender looks for replays on every round: only the flagged rows are indexed.
CREATE INDEX parked_delivery_replay_idx ON parked_delivery (consumer_id, xact_id, seq) WHERE replay;
