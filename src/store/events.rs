//! The event log behind the live feed: `call_events`, one row per event, read in id order.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Result, RowExt, Store, with_pool};

/// The event types of the live feed: four about calls, one about campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CallStarted,
    CallStatusUpdate,
    ConversationTurn,
    CallEnded,
    /// A campaign changed state without anyone asking (paused after a failure); no `call_id`.
    CampaignStatusUpdate,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallStarted => "call_started",
            EventKind::CallStatusUpdate => "call_status_update",
            EventKind::ConversationTurn => "conversation_turn",
            EventKind::CallEnded => "call_ended",
            EventKind::CampaignStatusUpdate => "campaign_status_update",
        }
    }
}

/// One stored event, in the JSON shape the feed sends:
///
/// ```json
/// {"id": 4711, "type": "conversation_turn", "org": "acme", "call_id": "…", "campaign": null,
///  "at": "2026-11-21T10:00:00.123Z", "data": {…}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The store's sequence: strictly increasing in commit order.
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The organization's slug.
    pub org: String,
    pub call_id: Option<String>,
    /// The campaign the call belongs to, if any.
    #[serde(default)]
    pub campaign: Option<i64>,
    #[serde(serialize_with = "millis", deserialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
    #[serde(skip)]
    pub org_id: i64,
}

fn millis<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub org_id: i64,
    pub call_id: Option<String>,
    pub campaign_id: Option<i64>,
    pub kind: EventKind,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

fn kind_from(text: &str) -> Result<EventKind> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| super::StoreError::Database(format!("unknown event type {text:?} in call_events")))
}

pub(crate) fn event_from(row: &impl RowExt) -> Result<Event> {
    Ok(Event {
        id: row.int("id")?,
        kind: kind_from(&row.text("type")?)?,
        org: row.text("slug")?,
        call_id: row.opt_text("call_id")?,
        campaign: row.opt_int("campaign_id")?,
        at: row.time("at")?,
        data: row.json("payload")?,
        org_id: row.int("org_id")?,
    })
}

/// Appends an event inside the current write transaction and evaluates to its id. On PostgreSQL it
/// first takes the event-order advisory lock (released at commit), so ids become visible in the
/// order they were assigned, and it notifies the other daemons when the transaction commits.
macro_rules! append_event {
    ($tx:ident, $pg:expr, $event:expr) => {{
        let event: &$crate::store::events::NewEvent = $event;
        if $pg {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind($crate::store::EVENTS_LOCK).execute(&mut *$tx).await?;
        }
        let row = sqlx::query(
            "INSERT INTO call_events (org_id, call_id, campaign_id, type, payload, at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(event.org_id)
        .bind(event.call_id.as_deref())
        .bind(event.campaign_id)
        .bind(event.kind.as_str())
        .bind(sqlx::types::Json(&event.data))
        .bind(event.at)
        .fetch_one(&mut *$tx)
        .await?;
        let id: i64 = sqlx::Row::try_get(&row, "id")?;
        if $pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::store::EVENTS_CHANNEL)
                .bind(id.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        id
    }};
}
pub(crate) use append_event;

const EVENT_COLUMNS: &str = "SELECT e.id, e.org_id, o.slug, e.call_id, e.campaign_id, e.type, e.payload, e.at \
     FROM call_events e JOIN organizations o ON o.id = e.org_id";

impl Store {
    /// Events with an id above `after`, in id order, at most `limit`; one organization's or all.
    pub async fn events_after(&self, org_id: Option<i64>, after: i64, limit: i64) -> Result<Vec<Event>> {
        with_pool!(self, pool => {
            let rows = match org_id {
                Some(org) => sqlx::query(sqlx::AssertSqlSafe(format!("{EVENT_COLUMNS} WHERE e.org_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3")))
                    .bind(org)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query(sqlx::AssertSqlSafe(format!("{EVENT_COLUMNS} WHERE e.id > $1 ORDER BY e.id LIMIT $2")))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
            };
            rows.iter().map(event_from).collect()
        })
    }

    /// One event by id.
    pub async fn event(&self, id: i64) -> Result<Option<Event>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{EVENT_COLUMNS} WHERE e.id = $1"))).bind(id).fetch_optional(pool).await?;
            row.map(|r| event_from(&r)).transpose()
        })
    }

    /// The highest event id, or 0 for an empty log.
    pub async fn max_event_id(&self) -> Result<i64> {
        with_pool!(self, pool => {
            let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM call_events").fetch_one(pool).await?;
            Ok(max.unwrap_or(0))
        })
    }
}
