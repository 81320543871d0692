-- Compliance: calling rules by region, caps per number, abandonment.
-- A contact's region (a US state such as FL, or ISO 3166-2 such as US-FL); none: its area code's.
ALTER TABLE contacts ADD COLUMN state TEXT;
-- Answer to the first agent audio (the first STREAM FILE, or the first frame sent), for
-- abandonment: NULL while no agent audio was played.
ALTER TABLE calls ADD COLUMN first_audio_at TIMESTAMPTZ;
ALTER TABLE calls ADD COLUMN answer_to_audio_ms BIGINT;
-- A campaign slowed for its abandon rate: when, and why (NULL: at its own pace).
ALTER TABLE campaigns ADD COLUMN slowed_at TIMESTAMPTZ;
ALTER TABLE campaigns ADD COLUMN slowed_reason TEXT;
-- Every compliance check of a call: campaign contacts at claim and at dial, passed or refused,
-- with the reason (window, region_rule, cap, holiday, do_not_call), the region and the local
-- time; single calls (POST /v1/calls, asterai call) as a passed dial check, so caps count them.
CREATE TABLE compliance_checks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organizations(id),
    campaign_id BIGINT REFERENCES campaigns(id),
    contact_id  BIGINT REFERENCES contacts(id),
    call_id     TEXT,
    number      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    passed      BOOLEAN NOT NULL,
    reason      TEXT,
    detail      TEXT NOT NULL,
    region      TEXT,
    local_time  TEXT,
    not_before  TIMESTAMPTZ,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX compliance_checks_campaign ON compliance_checks(campaign_id, at);
-- The caps count the calls placed to one number of an organization (the passed dial checks).
CREATE INDEX compliance_checks_number ON compliance_checks(org_id, number, at);
