//! Reading calls and turns from rows, and the cursors of call pages.

use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::types::{Call, Turn};
use crate::store::{Result, RowExt, StoreError};

pub(crate) const CALL_COLUMNS: &str = "SELECT c.id, c.org_id, o.slug, c.direction, c.from_number, c.to_number, c.channel, c.campaign_id, \
     c.contact_id, c.status, c.status_reason, c.outcome, c.outcome_reason, c.started_at, c.answered_at, c.ended_at, \
     c.duration_s, c.transcript, c.emotion, c.intent_score, c.turns, c.daemon_id, c.asterisk_id, c.agent_name, c.agent_version, c.analysis, c.purged_at, \
     TRIM(COALESCE(ct.first_name, '') || ' ' || COALESCE(ct.last_name, '')) AS contact_name, cp.name AS campaign_name \
     FROM calls c JOIN organizations o ON o.id = c.org_id \
     LEFT JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN campaigns cp ON cp.id = c.campaign_id";

fn parse<T: FromStr<Err = String>>(text: &str) -> Result<T> {
    text.parse().map_err(StoreError::Database)
}

pub(crate) fn call_from(row: &impl RowExt) -> Result<Call> {
    Ok(Call {
        id: row.text("id")?,
        org: row.text("slug")?,
        org_id: row.int("org_id")?,
        direction: parse(&row.text("direction")?)?,
        from: row.text("from_number")?,
        to: row.text("to_number")?,
        channel: row.opt_text("channel")?,
        campaign_id: row.opt_int("campaign_id")?,
        contact_id: row.opt_int("contact_id")?,
        status: parse(&row.text("status")?)?,
        status_reason: row.opt_text("status_reason")?,
        outcome: row.opt_text("outcome")?.as_deref().map(parse).transpose()?,
        outcome_reason: row.opt_text("outcome_reason")?,
        started_at: row.time("started_at")?,
        answered_at: row.opt_time("answered_at")?,
        ended_at: row.opt_time("ended_at")?,
        duration_s: row.opt_float("duration_s")?,
        transcript: row.opt_text("transcript")?,
        emotion: row.opt_text("emotion")?,
        intent_score: row.opt_float("intent_score")?,
        turns: row.int32("turns")?,
        contact_name: row.opt_text("contact_name")?.filter(|name| !name.is_empty()),
        campaign_name: row.opt_text("campaign_name")?,
        agent: row.opt_text("agent_name")?,
        agent_version: row.opt_int("agent_version")?.map(|v| v as i32),
        analysis: row.opt_json("analysis")?,
        purged_at: row.opt_time("purged_at")?,
        daemon_id: row.opt_text("daemon_id")?,
        asterisk_id: row.opt_text("asterisk_id")?,
    })
}

pub(super) fn turn_from(row: &impl RowExt) -> Result<Turn> {
    let latency = serde_json::from_value(row.json("latency")?).unwrap_or_default();
    Ok(Turn {
        turn: row.int32("turn")?,
        caller: row.text("caller")?,
        agent: row.text("agent")?,
        emotion: row.opt_text("emotion")?,
        intent: row.opt_text("intent")?,
        confidence: row.opt_float("confidence")?,
        latency_ms: latency,
        interrupted: row.boolean("interrupted")?,
        tools: serde_json::from_value(row.json("tools")?).unwrap_or_default(),
        at: row.time("at")?,
    })
}

pub(super) fn encode_cursor(call: &Call) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        call.started_at.timestamp_micros(),
        call.id
    ))
}

pub(super) fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String)> {
    let invalid = || StoreError::Invalid(format!("cursor {cursor:?} is not one this server issued"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
    let at = micros.parse().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(invalid)?;
    Ok((at, id.to_owned()))
}
