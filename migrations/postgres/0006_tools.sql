-- Tools: each turn keeps the tools the model called in it, as a JSON array of
-- {"name", "arguments", "result"} (empty for a turn without tool calls).
ALTER TABLE call_turns ADD COLUMN tools JSONB NOT NULL DEFAULT '[]';
