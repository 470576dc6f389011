-- The event store: the registry (who may send what, validated how) and the two
-- tables every received SQS message ends in exactly once.

CREATE TABLE producer (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tenants: the clients events are for.
CREATE TABLE client (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The registry: one JSON Schema per (event type, version).
CREATE TABLE event_type (
    name        text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    schema      jsonb NOT NULL,
    producer_id text REFERENCES producer (id),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- Which clients receive which event types (any version).
CREATE TABLE subscription (
    client_id   text NOT NULL REFERENCES client (id) ON DELETE CASCADE,
    event_type  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, event_type)
);

-- Accepted events, waiting for the sender. The primary key is the idempotency key:
-- redeliveries and producer retries land on it and are absorbed.
CREATE TABLE message (
    client_id      text NOT NULL REFERENCES client (id),
    event_id       text NOT NULL,
    event_type     text NOT NULL,
    version        integer NOT NULL,
    payload        jsonb NOT NULL,
    occurred_at    timestamptz,
    sent_at        timestamptz,
    received_at    timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    sqs_message_id text NOT NULL,
    PRIMARY KEY (client_id, event_id),
    FOREIGN KEY (event_type, version) REFERENCES event_type (name, version)
);
-- The sender reads in arrival order.
CREATE INDEX message_stored_at_idx ON message (stored_at);

-- Everything that failed validation, kept verbatim with a stable reason code.
CREATE TABLE rejected_message (
    sqs_message_id text PRIMARY KEY,
    body           text NOT NULL,
    reason         text NOT NULL CHECK (reason IN ('malformed_json', 'invalid_envelope',
                       'unknown_client', 'unknown_event_type', 'not_subscribed',
                       'schema_violation', 'unstorable')),
    detail         jsonb NOT NULL DEFAULT '{}',
    client_id      text,
    event_type     text,
    version        integer,
    event_id       text,
    receive_count  integer NOT NULL,
    sent_at        timestamptz,
    received_at    timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_message_reason_idx ON rejected_message (reason, received_at);
CREATE INDEX rejected_message_event_idx ON rejected_message (client_id, event_id);
