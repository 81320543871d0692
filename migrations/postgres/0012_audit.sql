-- The audit log: every action by a token or the CLI, append-only (the trigger refuses changes).
CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id  BIGINT REFERENCES organizations(id),
    actor   TEXT NOT NULL,
    via     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    detail  JSONB NOT NULL DEFAULT '{}',
    peer    TEXT,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_log_org ON audit_log(org_id, id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
