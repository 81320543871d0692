-- The dialer.
-- Which Asterisk carries an outbound call (its ARI entity id), so that a daemon reconciles only
-- its own calls against its Asterisk's channel list.
ALTER TABLE calls ADD COLUMN asterisk_id TEXT;
CREATE INDEX calls_unfinished ON calls(ended_at, asterisk_id);
CREATE INDEX calls_contact ON calls(contact_id, status);
-- Campaigns: when the fleet last started a call of the campaign (its pacing).
ALTER TABLE campaigns ADD COLUMN last_dial_at TEXT;
-- Contacts: the call of the current attempt, and the claim scan.
ALTER TABLE contacts ADD COLUMN last_call_id TEXT;
CREATE INDEX contacts_campaign_due ON contacts(campaign_id, status, next_attempt_at);
CREATE INDEX contacts_claimed ON contacts(claimed_by, status);
