-- asterai schema, PostgreSQL.

CREATE TABLE organizations (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Tokens are stored as an Argon2id hash of their secret part; the id is public.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    org_id       BIGINT NOT NULL REFERENCES organizations(id),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_tokens_org ON api_tokens(org_id);

CREATE TABLE campaigns (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'draft',
    settings    JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE contacts (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES organizations(id),
    campaign_id      BIGINT REFERENCES campaigns(id),
    phone            TEXT NOT NULL,
    first_name       TEXT,
    last_name        TEXT,
    email            TEXT,
    company          TEXT,
    timezone         TEXT,
    fields           JSONB NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_outcome     TEXT,
    claimed_by       TEXT,
    claim_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX contacts_campaign_phone ON contacts(campaign_id, phone);
CREATE INDEX contacts_org ON contacts(org_id);

CREATE TABLE calls (
    id             TEXT PRIMARY KEY,
    org_id         BIGINT NOT NULL REFERENCES organizations(id),
    direction      TEXT NOT NULL,
    from_number    TEXT NOT NULL DEFAULT '',
    to_number      TEXT NOT NULL DEFAULT '',
    channel        TEXT,
    campaign_id    BIGINT REFERENCES campaigns(id),
    contact_id     BIGINT REFERENCES contacts(id),
    status         TEXT NOT NULL,
    status_reason  TEXT,
    outcome        TEXT,
    outcome_reason TEXT,
    started_at     TIMESTAMPTZ NOT NULL,
    answered_at    TIMESTAMPTZ,
    ended_at       TIMESTAMPTZ,
    duration_s     DOUBLE PRECISION,
    transcript     TEXT,
    emotion        TEXT,
    intent_score   DOUBLE PRECISION,
    turns          INTEGER NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL
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
    confidence DOUBLE PRECISION,
    latency    JSONB NOT NULL DEFAULT '{}',
    at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_id, turn)
);

-- The live feed's log. Appends hold a transaction-level advisory lock, so ids become visible in
-- the order they were assigned and a client resuming after id N misses nothing.
CREATE TABLE call_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organizations(id),
    call_id     TEXT,
    campaign_id BIGINT,
    type        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX call_events_org ON call_events(org_id, id);

CREATE TABLE dnc_numbers (
    org_id     BIGINT NOT NULL REFERENCES organizations(id),
    number     TEXT NOT NULL,
    reason     TEXT,
    source     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, number)
);
