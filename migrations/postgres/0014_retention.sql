-- Retention: a call's recordings and words (turns' text, transcript, analysis text) are purged
-- once older than the organization's retention; its metadata stays. NULL: never purged.
ALTER TABLE calls ADD COLUMN purged_at TIMESTAMPTZ;
CREATE INDEX calls_org_purge ON calls(org_id, purged_at, started_at);
-- One row per call purged: what went (JSON counts), when, and by whom (`job:retention` or
-- `cli:<user>`).
CREATE TABLE purges (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id   BIGINT NOT NULL REFERENCES organizations(id),
    call_id  TEXT NOT NULL,
    purged   JSONB NOT NULL,
    actor    TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX purges_org ON purges(org_id, id);
