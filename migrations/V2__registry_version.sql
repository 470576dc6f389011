-- A counter bumped by every change to the registry (by `registry apply` or by hand),
-- so processors can tell cheaply whether their cached registry is current, and a
-- notification so they reload at once.
CREATE TABLE registry_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint NOT NULL
);
INSERT INTO registry_version (version) VALUES (1);

CREATE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE registry_version SET version = version + 1 RETURNING version INTO v;
    PERFORM pg_notify('registry_changed', v::text);
    RETURN NULL;
END $$;

CREATE TRIGGER client_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON client
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE TRIGGER event_type_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_type
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE TRIGGER subscription_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
