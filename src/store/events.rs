//! The event log behind the live feed: `call_events`, one row per event, read in id order.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Result, RowExt, Store, StoreError, with_pool};

/// The event types of the live feed: about calls, about campaigns, and what supervisors do on a
/// live call (the supervisors' console, [`crate::conversation::live`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CallStarted,
    CallStatusUpdate,
    ConversationTurn,
    CallEnded,
    /// A campaign changed state without anyone asking (paused after a failure); no `call_id`.
    CampaignStatusUpdate,
    /// The after-call analysis of an ended call is stored; `data` is the analysis.
    CallAnalyzed,
    /// A supervisor started listening to a live call; `data.supervisor` is the token's name.
    SupervisorJoined,
    /// A supervisor stopped listening.
    SupervisorLeft,
    /// A supervisor gave the AI an instruction for its next answer (`data.text`).
    Coached,
    /// A supervisor paused the AI: the caller is on hold.
    AiPaused,
    /// A supervisor resumed the AI.
    AiResumed,
    /// A supervisor's microphone went into the call (`GET /v1/calls/{id}/barge`).
    BargeStarted,
    /// The supervisor's microphone left the call (`data.reason`).
    BargeEnded,
    /// A supervisor took the call over: the AI is silent.
    TakeoverStarted,
    /// The supervisor gave the call back to the AI.
    TakeoverEnded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallStarted => "call_started",
            EventKind::CallStatusUpdate => "call_status_update",
            EventKind::ConversationTurn => "conversation_turn",
            EventKind::CallEnded => "call_ended",
            EventKind::CampaignStatusUpdate => "campaign_status_update",
            EventKind::CallAnalyzed => "call_analyzed",
            EventKind::SupervisorJoined => "supervisor_joined",
            EventKind::SupervisorLeft => "supervisor_left",
            EventKind::Coached => "coached",
            EventKind::AiPaused => "ai_paused",
            EventKind::AiResumed => "ai_resumed",
            EventKind::BargeStarted => "barge_started",
            EventKind::BargeEnded => "barge_ended",
            EventKind::TakeoverStarted => "takeover_started",
            EventKind::TakeoverEnded => "takeover_ended",
        }
    }
}

/// One stored event, in the JSON shape the feed sends:
///
/// ```json
/// {"id": 4711, "type": "conversation_turn", "org": "acme", "call_id": "…", "campaign": null,
///  "at": "2026-11-21T10:00:00.123Z", "data": {…}}
/// ```
///
/// `id` is the organization's own sequence (1, 2, 3, … without gaps): what supervisors resume
/// from with `since`, and nothing about other organizations' volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The organization's sequence: strictly increasing in commit order, without gaps.
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
    /// The row's place in the whole log (every organization), which the daemons' hubs tail.
    /// Never sent to supervisors.
    #[serde(skip)]
    pub log_id: i64,
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

fn kind_from(text: &str) -> Option<EventKind> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

/// A row of the log: an event, or a row readers leave out (see [`Skipped`]).
pub(crate) enum LogRow {
    Event(Event),
    Skipped(Skipped),
}

/// A row of the log that readers leave out, so that it never stalls the feed: the cursor moves
/// past it like past an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The row's place in the whole log.
    pub log_id: i64,
    /// The organization's sequence: the id supervisors would have seen.
    pub id: i64,
    /// The row's `type`, as stored.
    pub kind: String,
    pub reason: SkipReason,
}

/// Why a row of the log is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A type this build does not know: a newer daemon wrote it during a rolling upgrade.
    UnknownType,
    /// A known type whose columns do not decode (malformed JSON in `payload`, a bad timestamp):
    /// a row written by hand or damaged. Says what failed.
    Malformed(String),
}

/// Reads one row of the log. Only a row whose id, sequence or type cannot be read is an error:
/// without them there is nothing to move the cursor past.
pub(crate) fn event_from(row: &impl RowExt) -> Result<LogRow> {
    let (log_id, seq, kind) = (row.int("id")?, row.int("org_seq")?, row.text("type")?);
    let skipped = |kind, reason| LogRow::Skipped(Skipped { log_id, id: seq, kind, reason });
    let Some(known) = kind_from(&kind) else { return Ok(skipped(kind, SkipReason::UnknownType)) };
    let event = || -> Result<Event> {
        Ok(Event {
            id: seq,
            kind: known,
            org: row.text("slug")?,
            call_id: row.opt_text("call_id")?,
            campaign: row.opt_int("campaign_id")?,
            at: row.time("at")?,
            data: row.json("payload")?,
            org_id: row.int("org_id")?,
            log_id,
        })
    };
    Ok(match event() {
        Ok(event) => LogRow::Event(event),
        Err(StoreError::Database(cause)) => skipped(kind, SkipReason::Malformed(cause)),
        Err(e) => skipped(kind, SkipReason::Malformed(e.to_string())),
    })
}

/// One page of the log.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    /// The events, in order; skipped rows are left out.
    pub events: Vec<Event>,
    /// Where the next page starts: the cursor of the last row read, an event or skipped (or the
    /// cursor asked for, when the page is empty).
    pub next: i64,
    /// Rows left out: of types this build does not know, or that do not decode.
    pub skipped: Vec<Skipped>,
    /// True when the page was full: more rows may follow.
    pub full: bool,
}

impl EventPage {
    fn read(rows: &[impl RowExt], after: i64, limit: i64, per_org: bool) -> Result<EventPage> {
        let mut page = EventPage { next: after, full: rows.len() as i64 >= limit, ..EventPage::default() };
        for row in rows {
            match event_from(row)? {
                LogRow::Event(event) => {
                    page.next = if per_org { event.id } else { event.log_id };
                    page.events.push(event);
                }
                LogRow::Skipped(skipped) => {
                    page.next = if per_org { skipped.id } else { skipped.log_id };
                    page.skipped.push(skipped);
                }
            }
        }
        Ok(page)
    }
}

/// Appends an event inside the current write transaction, with its webhook deliveries, and
/// evaluates to its log id. On PostgreSQL it
/// first takes the event-order advisory lock (released at commit), so ids become visible in the
/// order they were assigned, and it notifies the other daemons when the transaction commits.
macro_rules! append_event {
    ($tx:ident, $pg:expr, $event:expr) => {{
        let event: &$crate::store::events::NewEvent = $event;
        if $pg {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind($crate::store::EVENTS_LOCK).execute(&mut *$tx).await?;
        }
        // The organization's next number: appends are serialised (SQLite's one writer, the
        // advisory lock on PostgreSQL), so it is gap-free and in commit order.
        let row = sqlx::query(
            "INSERT INTO call_events (org_id, call_id, campaign_id, type, payload, at, org_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(org_seq), 0) + 1 FROM call_events WHERE org_id = $1)) RETURNING id, org_seq",
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
        let seq: i64 = sqlx::Row::try_get(&row, "org_seq")?;
        // The event's webhook deliveries, in the same transaction (see [`super::webhooks`]).
        $crate::store::webhooks::enqueue_webhooks!($tx, event, id, seq);
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

const EVENT_COLUMNS: &str = "SELECT e.id, e.org_seq, e.org_id, o.slug, e.call_id, e.campaign_id, e.type, e.payload, e.at \
     FROM call_events e JOIN organizations o ON o.id = e.org_id";

impl Store {
    /// One organization's events numbered above `after` (its own sequence), in order, at most
    /// `limit` rows: what a supervisor resuming with `since` missed. Rows of unknown types, and
    /// rows that do not decode, are skipped (see [`EventPage::skipped`]).
    pub async fn events_after(&self, org_id: i64, after: i64, limit: i64) -> Result<EventPage> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{EVENT_COLUMNS} WHERE e.org_id = $1 AND e.org_seq > $2 ORDER BY e.org_seq LIMIT $3")))
                .bind(org_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            EventPage::read(&rows, after, limit, true)
        })
    }

    /// Every organization's events after the log id `after`, in log order, at most `limit`
    /// rows: what a daemon's hub hands out. Rows of unknown types, and rows that do not decode,
    /// are skipped.
    pub async fn log_after(&self, after: i64, limit: i64) -> Result<EventPage> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{EVENT_COLUMNS} WHERE e.id > $1 ORDER BY e.id LIMIT $2")))
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            EventPage::read(&rows, after, limit, false)
        })
    }

    /// One event by its log id, unless its row is skipped (see [`Skipped`]).
    pub(crate) async fn logged_event(&self, log_id: i64) -> Result<Option<Event>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{EVENT_COLUMNS} WHERE e.id = $1"))).bind(log_id).fetch_optional(pool).await?;
            match row.map(|r| event_from(&r)).transpose()? {
                Some(LogRow::Event(event)) => Ok(Some(event)),
                _ => Ok(None),
            }
        })
    }

    /// The last row of the whole log (every organization), or 0: where a daemon's hub starts.
    /// Internal: never shown to supervisors.
    pub async fn last_log_id(&self) -> Result<i64> {
        with_pool!(self, pool => {
            let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM call_events").fetch_one(pool).await?;
            Ok(max.unwrap_or(0))
        })
    }

    /// An organization's last event id (its own sequence), or 0: where a new supervisor's feed
    /// starts, and the `last_event_id` of `GET /v1/calls`.
    pub async fn last_event_id(&self, org_id: i64) -> Result<i64> {
        with_pool!(self, pool => {
            let max: Option<i64> = sqlx::query_scalar("SELECT MAX(org_seq) FROM call_events WHERE org_id = $1").bind(org_id).fetch_one(pool).await?;
            Ok(max.unwrap_or(0))
        })
    }
}
