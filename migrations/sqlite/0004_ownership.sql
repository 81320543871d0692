-- Isolation and ownership.
-- Each organization numbers its own events (1, 2, 3, … with no gaps): the feed's ids and
-- `since` cursors, which say nothing about other organizations' volume. `id` stays the log's
-- global order for the daemons' hubs.
ALTER TABLE call_events ADD COLUMN org_seq INTEGER;
UPDATE call_events SET org_seq = numbered.seq
FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY id) AS seq FROM call_events) AS numbered
WHERE numbered.id = call_events.id;
CREATE UNIQUE INDEX call_events_org_seq ON call_events(org_id, org_seq);

-- Daemons and their heartbeats: a daemon that stops beating has its unfinished calls finished
-- by the others (PostgreSQL fleets), and by itself at its next start.
CREATE TABLE daemons (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
-- The daemon that holds a call's live state (its conversation, or the dialer following it).
ALTER TABLE calls ADD COLUMN daemon_id TEXT;
CREATE INDEX calls_daemon_unfinished ON calls(daemon_id, ended_at);
