//! Retention: purging what callers said from calls older than an organization's retention,
//! keeping the calls' metadata.
//!
//! A purge of one call, in one transaction: the turns' text (caller, agent, tool arguments
//! and results) is emptied, the transcript removed, the after-call analysis reduced to
//! `{"purged": true, "success": …}` (its summary, reasons, data and errors hold the caller's
//! words; whether the call met its goal does not), the same text removed from the call's feed
//! events (`conversation_turn`, `call_analyzed`), the recordings' files deleted (their rows
//! kept, marked `purged`), `calls.purged_at` set, and a row appended to
//! `purges` saying what went and who purged it. Times, numbers, statuses, outcomes, durations,
//! the turns' timings and the audit log stay.
//!
//! A purge only touches a call whose `purged_at` is still empty, read under the row's lock
//! (PostgreSQL `FOR UPDATE`, SQLite's one writer): two daemons of a fleet purging at once
//! purge each call once, and the second finds nothing left to do.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Result, RowExt, Store, StoreError, with_pool, write_tx};

/// A call's recordings whose files may still be on disk.
const LIVE_RECORDINGS: &str =
    "FROM call_recordings r WHERE r.call_id = c.id AND r.org_id = c.org_id AND r.status NOT IN ('purged', 'refused')";

/// The feed events whose data holds what was said.
const WORDY_EVENTS: &str = "('conversation_turn', 'call_analyzed')";

/// A call whose words are (or would be) purged, and what of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeItem {
    pub call_id: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Turns whose text goes (their timings stay).
    pub turns: i64,
    /// The call has a transcript, which goes.
    pub transcript: bool,
    /// The call has an after-call analysis, whose text goes.
    pub analysis: bool,
    /// Feed events whose text goes.
    pub events: i64,
    /// Recordings whose files go (their rows stay, marked `purged`).
    pub recordings: i64,
}

/// A purge done: which call, what went, when, by whom.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeRecord {
    pub id: i64,
    pub call_id: String,
    /// What went: `{"turns", "transcript", "analysis", "events"}`.
    pub purged: Value,
    /// `job:retention` (the daily job) or `cli:<user>`.
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// What is left of an after-call analysis once purged.
pub fn purged_analysis(analysis: &Value) -> Value {
    json!({ "purged": true, "success": analysis.get("success").filter(|s| s.is_boolean()) })
}

/// A feed event's data with what was said taken out.
fn purged_event(kind: &str, mut data: Value) -> Value {
    match kind {
        "conversation_turn" => {
            if let Some(map) = data.as_object_mut() {
                map.insert("caller".into(), json!(""));
                map.insert("agent".into(), json!(""));
                map.insert("tools".into(), json!([]));
                map.insert("purged".into(), json!(true));
            }
            data
        }
        _ => purged_analysis(&data),
    }
}

fn item_from(row: &impl RowExt) -> Result<PurgeItem> {
    Ok(PurgeItem {
        call_id: row.text("id")?,
        started_at: row.time("started_at")?,
        ended_at: row.opt_time("ended_at")?,
        turns: row.int("turn_count")?,
        transcript: row.int("has_transcript")? != 0,
        analysis: row.int("has_analysis")? != 0,
        events: row.int("event_count")?,
        recordings: row.int("recording_count")?,
    })
}

/// The columns of a [`PurgeItem`], for `calls c`.
const ITEM_COLUMNS: &str = "SELECT c.id, c.started_at, c.ended_at, \
     CAST(CASE WHEN c.transcript IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_transcript, \
     CAST(CASE WHEN c.analysis IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_analysis, \
     (SELECT COUNT(*) FROM call_turns t WHERE t.call_id = c.id) AS turn_count, \
     (SELECT COUNT(*) FROM call_events e WHERE e.call_id = c.id AND e.org_id = c.org_id AND e.type IN ('conversation_turn', 'call_analyzed')) AS event_count, \
     (SELECT COUNT(*) FROM call_recordings r WHERE r.call_id = c.id AND r.org_id = c.org_id AND r.status NOT IN ('purged', 'refused')) AS recording_count \
     FROM calls c";

impl Store {
    /// One organization's ended calls started before `before` whose words are not purged yet
    /// (and that have some: turns, a transcript or an analysis), oldest first, at most `limit`.
    pub async fn purge_candidates(&self, org_id: i64, before: DateTime<Utc>, limit: i64) -> Result<Vec<PurgeItem>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{ITEM_COLUMNS} WHERE c.org_id = $1 AND c.purged_at IS NULL AND c.ended_at IS NOT NULL AND c.started_at < $2 \
                 AND (c.transcript IS NOT NULL OR c.analysis IS NOT NULL OR EXISTS (SELECT 1 FROM call_turns t WHERE t.call_id = c.id) \
                 OR EXISTS (SELECT 1 {LIVE_RECORDINGS})) ORDER BY c.started_at, c.id LIMIT $3"
            )))
            .bind(org_id)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(item_from).collect()
        })
    }

    /// Purges one call of one organization (see the module docs), if it is still a candidate
    /// (ended, started before `before`, not purged yet): `None` when it is not, e.g. another
    /// daemon purged it meanwhile. `actor` and `at` go in its purge record.
    pub async fn purge_call(
        &self,
        org_id: i64,
        call_id: &str,
        before: DateTime<Utc>,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<PurgeItem>> {
        let item = write_tx!(self, tx, pg => {
            let lock = if pg { " FOR UPDATE OF c" } else { "" };
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{ITEM_COLUMNS} WHERE c.id = $1 AND c.org_id = $2 AND c.purged_at IS NULL AND c.ended_at IS NOT NULL AND c.started_at < $3{lock}"
            )))
            .bind(call_id)
            .bind(org_id)
            .bind(before)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    let item = item_from(&row)?;
                    let analysis: Option<sqlx::types::Json<Value>> =
                        sqlx::query_scalar("SELECT analysis FROM calls WHERE id = $1 AND org_id = $2")
                            .bind(call_id)
                            .bind(org_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let analysis = analysis.map(|a| purged_analysis(&a.0));
                    sqlx::query("UPDATE calls SET purged_at = $1, transcript = NULL, analysis = $2, updated_at = $1 WHERE id = $3 AND org_id = $4")
                        .bind(at)
                        .bind(analysis.as_ref().map(sqlx::types::Json))
                        .bind(call_id)
                        .bind(org_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE call_turns SET caller = '', agent = '', tools = $1 WHERE call_id = $2")
                        .bind(sqlx::types::Json(json!([])))
                        .bind(call_id)
                        .execute(&mut *tx)
                        .await?;
                    let events = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT id, type, payload FROM call_events WHERE call_id = $1 AND org_id = $2 AND type IN {WORDY_EVENTS}"
                    )))
                    .bind(call_id)
                    .bind(org_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for event in &events {
                        let data = purged_event(&event.text("type")?, event.json("payload")?);
                        sqlx::query("UPDATE call_events SET payload = $1 WHERE id = $2")
                            .bind(sqlx::types::Json(data))
                            .bind(event.int("id")?)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // The outbox keeps each webhook's exact body: a call.analyzed body carries the
                    // analysis' words, and loses them as the call's own event does (whatever the
                    // delivery's state: one still to be sent goes out purged).
                    let deliveries = sqlx::query(
                        "SELECT id, body FROM webhook_deliveries WHERE call_id = $1 AND org_id = $2 AND type = 'call.analyzed'",
                    )
                    .bind(call_id)
                    .bind(org_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for delivery in &deliveries {
                        let mut body: Value = serde_json::from_str(&delivery.text("body")?)
                            .map_err(|e| StoreError::Database(format!("webhook delivery body: {e}")))?;
                        let data = purged_event("call_analyzed", body["data"].take());
                        body["data"] = data;
                        sqlx::query("UPDATE webhook_deliveries SET body = $1 WHERE id = $2 AND org_id = $3")
                            .bind(body.to_string())
                            .bind(delivery.text("id")?)
                            .bind(org_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // The recordings' files go before the transaction commits: a purge that
                    // cannot delete one is not recorded as done, and is tried again.
                    let paths: Vec<String> = sqlx::query_scalar(
                        "SELECT path FROM call_recordings WHERE call_id = $1 AND org_id = $2 AND status NOT IN ('purged', 'refused')",
                    )
                    .bind(call_id)
                    .bind(org_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for path in &paths {
                        match tokio::fs::remove_file(path).await {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => {
                                return Err(StoreError::Database(format!(
                                    "cannot delete the recording {path} of call {call_id}: {e}"
                                )));
                            }
                        }
                    }
                    sqlx::query("UPDATE call_recordings SET status = 'purged', purged_at = $1 WHERE call_id = $2 AND org_id = $3 AND status NOT IN ('purged', 'refused')")
                        .bind(at)
                        .bind(call_id)
                        .bind(org_id)
                        .execute(&mut *tx)
                        .await?;
                    let purged = json!({
                        "turns": item.turns,
                        "transcript": item.transcript,
                        "analysis": item.analysis,
                        "events": item.events,
                        "recordings": item.recordings,
                    });
                    sqlx::query("INSERT INTO purges (org_id, call_id, purged, actor, at) VALUES ($1, $2, $3, $4, $5)")
                        .bind(org_id)
                        .bind(call_id)
                        .bind(sqlx::types::Json(purged))
                        .bind(actor)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    Some(item)
                }
            }
        });
        Ok(item)
    }

    /// One organization's purge records after `after`, oldest first, at most `limit`.
    pub async fn purges(&self, org_id: i64, after: i64, limit: i64) -> Result<Vec<PurgeRecord>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT id, call_id, purged, actor, at FROM purges WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                .bind(org_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(PurgeRecord {
                        id: row.int("id")?,
                        call_id: row.text("call_id")?,
                        purged: row.json("purged")?,
                        actor: row.text("actor")?,
                        at: row.time("at")?,
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purged_text_is_gone_and_metadata_stays() {
        let turn = purged_event(
            "conversation_turn",
            json!({"turn": 2, "caller": "my card is 4111", "agent": "thanks", "tools": [{"name": "x"}], "latency_ms": {"total": 5}}),
        );
        assert_eq!(turn["caller"], "");
        assert_eq!(turn["agent"], "");
        assert_eq!(turn["tools"], json!([]));
        assert_eq!(turn["turn"], 2);
        assert_eq!(turn["latency_ms"]["total"], 5);
        let analysis =
            purged_event("call_analyzed", json!({"summary": "caller said 4111", "success": true, "data": {"x": 1}}));
        assert_eq!(analysis, json!({"purged": true, "success": true}));
        assert_eq!(
            purged_analysis(&json!({"summary": "s", "success": "yes"})),
            json!({"purged": true, "success": null})
        );
    }
}
