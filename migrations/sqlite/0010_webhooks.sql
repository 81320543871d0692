-- Webhooks: an organization's endpoints, and the outbox of deliveries to them. A delivery row is
-- written in the transaction that appends its event (call.started, call.ended, call.analyzed);
-- the worker POSTs it until the receiver answers 2xx, or gives up after webhooks.retry_for.
CREATE TABLE webhook_endpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id),
    url         TEXT NOT NULL,
    -- The signing secret's name (env:ASTERAI_SECRET_…), never its value.
    secret_ref  TEXT NOT NULL,
    -- The event types wanted, comma-separated (call.started,call.ended,call.analyzed).
    events      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    -- Removed endpoints stay for their deliveries' sake; they receive nothing more.
    removed_at  TEXT
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints(org_id);

CREATE TABLE webhook_deliveries (
    -- The delivery's id (X-Asterai-Delivery and "id" in the body): the receiver's deduplication key.
    id              TEXT PRIMARY KEY,
    org_id          INTEGER NOT NULL REFERENCES organizations(id),
    endpoint_id     INTEGER NOT NULL REFERENCES webhook_endpoints(id),
    -- The event's row in call_events: deliveries of one call to one endpoint go in this order.
    event_log_id    INTEGER NOT NULL,
    call_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    -- The exact body sent, every attempt.
    body            TEXT NOT NULL,
    -- pending, delivered or dead.
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    -- Retries go on until retry_from + webhooks.retry_for: the first attempt, or `asterai webhooks retry`.
    retry_from      TEXT NOT NULL,
    lease_until     TEXT,
    leased_by       TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries(endpoint_id, call_id, event_log_id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_org ON webhook_deliveries(org_id, status, created_at);
