-- A reused event id with different content is kept, not silently dropped: the
-- newcomer is rejected as `conflicting_duplicate`, with the stored row's identity.
ALTER TABLE rejected_message DROP CONSTRAINT rejected_message_reason_check;
ALTER TABLE rejected_message ADD CONSTRAINT rejected_message_reason_check
    CHECK (reason IN ('malformed_json', 'invalid_envelope', 'unknown_client', 'unknown_event_type',
                      'not_subscribed', 'schema_violation', 'unstorable', 'conflicting_duplicate'));

-- `stored_at` is when the row was written (the statement's clock, moments before the
-- commit), not when its transaction began: a batch that waited on a lock or a retry
-- is not stamped in the past. Readers that must not miss a row page by log position
-- (xact_id, seq), which is commit-safe; see docs/design.md.
ALTER TABLE message ALTER COLUMN stored_at SET DEFAULT clock_timestamp();
ALTER TABLE rejected_message ALTER COLUMN stored_at SET DEFAULT clock_timestamp();
