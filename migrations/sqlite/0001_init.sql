-- asterai schema, SQLite. Timestamps are RFC 3339 text in UTC; JSON is text.

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Tokens are stored as an Argon2id hash of their secret part; the id is public.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    org_id       INTEGER NOT NULL REFERENCES organizations(id),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_org ON api_tokens(org_id);

CREATE TABLE campaigns (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'draft',
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE contacts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           INTEGER NOT NULL REFERENCES organizations(id),
    campaign_id      INTEGER REFERENCES campaigns(id),
    phone            TEXT NOT NULL,
    first_name       TEXT,
    last_name        TEXT,
    email            TEXT,
    company          TEXT,
    timezone         TEXT,
    fields           TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_outcome     TEXT,
    claimed_by       TEXT,
    claim_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX contacts_campaign_phone ON contacts(campaign_id, phone);
CREATE INDEX contacts_org ON contacts(org_id);

CREATE TABLE calls (
    id             TEXT PRIMARY KEY,
    org_id         INTEGER NOT NULL REFERENCES organizations(id),
    direction      TEXT NOT NULL,
    from_number    TEXT NOT NULL DEFAULT '',
    to_number      TEXT NOT NULL DEFAULT '',
    channel        TEXT,
    campaign_id    INTEGER REFERENCES campaigns(id),
    contact_id     INTEGER REFERENCES contacts(id),
    status         TEXT NOT NULL,
    status_reason  TEXT,
    outcome        TEXT,
    outcome_reason TEXT,
    started_at     TEXT NOT NULL,
    answered_at    TEXT,
    ended_at       TEXT,
    duration_s     REAL,
    transcript     TEXT,
    emotion        TEXT,
    intent_score   REAL,
    turns          INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL
);
CREATE INDEX calls_org_started ON calls(org_id, started_at DESC, id DESC);
CREATE INDEX calls_org_status ON calls(org_id, status);
CREATE INDEX calls_campaign ON calls(campaign_id);

CREATE TABLE call_turns (
    call_id    TEXT NOT NULL REFERENCES calls(id),
    turn       INTEGER NOT NULL,
    caller     TEXT NOT NULL,
    agent      TEXT NOT NULL,
    emotion    TEXT,
    intent     TEXT,
    confidence REAL,
    latency    TEXT NOT NULL DEFAULT '{}',
    at         TEXT NOT NULL,
    PRIMARY KEY (call_id, turn)
);

-- The live feed's log. ids are assigned in commit order (SQLite has one writer at a time), so a
-- client resuming after id N misses nothing.
CREATE TABLE call_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id),
    call_id     TEXT,
    campaign_id INTEGER,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX call_events_org ON call_events(org_id, id);

CREATE TABLE dnc_numbers (
    org_id     INTEGER NOT NULL REFERENCES organizations(id),
    number     TEXT NOT NULL,
    reason     TEXT,
    source     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, number)
);
