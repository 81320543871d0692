-- Agents: each organization's voice agents. An agent is a name; what it says and how is in its
-- versions, never changed in place: every change, and every rollback, appends a version, and
-- `current_version` points at the one calls use.
CREATE TABLE agents (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id          BIGINT NOT NULL REFERENCES organizations(id),
    name            TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE agent_versions (
    agent_id   BIGINT NOT NULL REFERENCES agents(id),
    version    INTEGER NOT NULL,
    -- The agent's definition as validated (JSON). Provider keys appear only as references
    -- (env:NAME, config:SECTION.api_key), never in clear.
    spec       JSONB NOT NULL,
    -- Why this version exists: "created", "edited", "rollback to 2".
    note       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, version)
);

-- The agent an organization's calls use when neither the route nor the campaign names one
-- (none: the built-in agent of the config file).
ALTER TABLE organizations ADD COLUMN default_agent_id BIGINT REFERENCES agents(id);

-- The agent version a call ran (none: the built-in agent).
ALTER TABLE calls ADD COLUMN agent_name TEXT;
ALTER TABLE calls ADD COLUMN agent_version BIGINT;
