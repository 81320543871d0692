-- Hardening (issue 11).
-- Why a campaign is in its state when a daemon put it there: a campaign the dialer could not
-- run is paused with the reason, instead of stopping every other campaign.
ALTER TABLE campaigns ADD COLUMN status_reason TEXT;
-- Token scopes, comma-separated: monitor (read calls, the feed, the page), dial (calls and
-- campaigns), admin (do-not-call removal, settings). Tokens made before scopes existed could do
-- everything: they keep that (shown by `asterai token list`); new tokens default to monitor.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'monitor';
UPDATE api_tokens SET scopes = 'monitor,dial,admin';
-- secret_hash holds `hmac-sha256:<hex>` for new tokens (HMAC-SHA-256 of the secret under the
-- server key), looked up in one query through this index; older Argon2id hashes are replaced
-- by it on their first successful use.
CREATE UNIQUE INDEX api_tokens_secret ON api_tokens(secret_hash);
-- Keys the daemons of one database share: the token HMAC key, made on first use.
CREATE TABLE server_keys (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
