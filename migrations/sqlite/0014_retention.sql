-- Retention: a call's recordings and words (turns' text, transcript, analysis text) are purged
-- once older than the organization's retention; its metadata stays. NULL: never purged.
ALTER TABLE calls ADD COLUMN purged_at TEXT;
CREATE INDEX calls_org_purge ON calls(org_id, purged_at, started_at);
-- One row per call purged: what went (JSON counts), when, and by whom (`job:retention` or
-- `cli:<user>`).
CREATE TABLE purges (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id   INTEGER NOT NULL REFERENCES organizations(id),
    call_id  TEXT NOT NULL,
    purged   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX purges_org ON purges(org_id, id);
