-- After-call analysis: what the agent's [analysis] made of the finished call, as JSON
-- ({"summary", "success", "success_reason", "data", "error", …}); NULL until it ran.
ALTER TABLE calls ADD COLUMN analysis TEXT;
