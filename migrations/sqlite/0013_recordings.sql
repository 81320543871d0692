-- Whole-call recordings (MixMonitor on AGI calls, the bridge's recording on streaming calls).
-- One row per recording of a call, scoped by organization. `name` is asterai's own file name
-- (never caller text), `path` where asterai reads the file. `status`: recording → available,
-- or failed (with `status_reason`), or purged (the file deleted by retention, the row kept with
-- `purged_at`). `consent_required`: the contact's region requires every party's consent;
-- `consent_announced`: the consent announcement was played before recording started.
CREATE TABLE call_recordings (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id            INTEGER NOT NULL REFERENCES organizations(id),
    call_id           TEXT NOT NULL REFERENCES calls(id),
    via               TEXT NOT NULL,
    name              TEXT NOT NULL,
    path              TEXT NOT NULL,
    format            TEXT NOT NULL,
    size_bytes        INTEGER,
    duration_ms       INTEGER,
    region            TEXT,
    consent_required  BOOLEAN NOT NULL DEFAULT FALSE,
    consent_announced BOOLEAN NOT NULL DEFAULT FALSE,
    status            TEXT NOT NULL,
    status_reason     TEXT,
    started_at        TEXT NOT NULL,
    ended_at          TEXT,
    purged_at         TEXT,
    UNIQUE (name)
);
CREATE INDEX call_recordings_call ON call_recordings(org_id, call_id);
CREATE INDEX call_recordings_started ON call_recordings(org_id, started_at);
