-- The streaming path: a turn the caller talked over (barge-in) keeps only what was heard of the
-- agent's answer, and says so.
ALTER TABLE call_turns ADD COLUMN interrupted BOOLEAN NOT NULL DEFAULT FALSE;
