//! Webhooks: each organization's endpoints, and the outbox of deliveries to them.
//!
//! A delivery row is written by [`enqueue_webhooks!`], inside the transaction that appends its
//! event to the log (see `append_event!` in [`super::events`]): for `call_started`,
//! `call_ended` and `call_analyzed`, one row per enabled endpoint of the call's organization that
//! wants the type. So an event is never on the feed without its deliveries, nor the reverse, and
//! the caller's path only inserts rows. The row holds the exact body every attempt sends.
//!
//! The delivery worker ([`crate::webhooks`]) claims due rows with a lease
//! ([`Store::claim_webhook_deliveries`]: `FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's one
//! writer otherwise), so two daemons never hold the same row at once and a crashed daemon's rows
//! are taken again when the lease ends. A row is only due when no earlier row of the same call
//! to the same endpoint is still pending: a call's events arrive in order.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::events::EventKind;
use super::string_enum::string_enum;
use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

/// The event types a webhook endpoint can ask for.
pub const WEBHOOK_EVENTS: [&str; 3] = ["call.started", "call.ended", "call.analyzed"];

/// The webhook type of a feed event, for the three that have one.
pub fn webhook_type(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::CallStarted => Some("call.started"),
        EventKind::CallEnded => Some("call.ended"),
        EventKind::CallAnalyzed => Some("call.analyzed"),
        _ => None,
    }
}

string_enum! {
    /// Where a delivery is: waiting for (another) attempt, accepted by the receiver (2xx), or
    /// given up after `webhooks.retry_for`.
    DeliveryStatus ("delivery status") { Pending = "pending", Delivered = "delivered", Dead = "dead" }
}

/// One organization's webhook endpoint. Its signing secret is only ever a reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub org_id: i64,
    pub url: String,
    /// `env:ASTERAI_SECRET_…`: the name of the variable holding the secret, never the secret.
    pub secret: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// An endpoint to add: checked by [`crate::webhooks::check_endpoint`] (the store knows nothing
/// of URLs and secret references).
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub org_id: i64,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub enabled: bool,
}

/// A delivery of the outbox, as `asterai webhooks list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    /// The receiver's deduplication key (`X-Asterai-Delivery`, and `id` in the body).
    pub id: String,
    pub org_id: i64,
    pub endpoint_id: i64,
    pub url: String,
    pub call_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The exact body every attempt sends.
    pub body: String,
}

/// A delivery a worker holds under its lease, ready to send.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub org_id: i64,
    pub endpoint_id: i64,
    pub call_id: String,
    pub kind: String,
    pub body: String,
    pub url: String,
    /// The endpoint's secret reference (`env:ASTERAI_SECRET_…`).
    pub secret: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// Retries go on until this plus `webhooks.retry_for` (from the first attempt).
    pub retry_from: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered { status: i32 },
    /// It failed; try again at `next_at`.
    Retry { status: Option<i32>, error: String, next_at: DateTime<Utc> },
    /// It failed after the retry window: given up.
    Dead { status: Option<i32>, error: String },
}

/// The JSON body of a delivery, written once when the event is appended:
///
/// ```json
/// {"id": "<delivery id>", "type": "call.ended", "event_id": 42, "org": "acme",
///  "call_id": "…", "campaign": null, "at": "2026-12-01T10:00:00.123Z", "data": {…}}
/// ```
///
/// `event_id` and `data` are those of the feed's event (`call_ended`'s `data`, and so on).
pub fn delivery_body(
    delivery_id: &str,
    kind: &str,
    event_id: i64,
    org: &str,
    event: &super::events::NewEvent,
) -> String {
    serde_json::json!({
        "id": delivery_id,
        "type": kind,
        "event_id": event_id,
        "org": org,
        "call_id": event.call_id,
        "campaign": event.campaign_id,
        "at": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": event.data,
    })
    .to_string()
}

/// Writes, inside the event's transaction, one delivery per enabled endpoint of the event's
/// organization that wants its type (nothing for the other event types). `$log_id` is the
/// event's row in the log, `$seq` its number in the organization's sequence.
macro_rules! enqueue_webhooks {
    ($tx:ident, $event:expr, $log_id:expr, $seq:expr) => {{
        let event: &$crate::store::events::NewEvent = $event;
        if let (Some(kind), Some(call_id)) =
            ($crate::store::webhooks::webhook_type(event.kind), event.call_id.as_deref())
        {
            let endpoints = sqlx::query(
                "SELECT w.id, w.events, o.slug FROM webhook_endpoints w JOIN organizations o ON o.id = w.org_id \
                 WHERE w.org_id = $1 AND w.enabled AND w.removed_at IS NULL ORDER BY w.id",
            )
            .bind(event.org_id)
            .fetch_all(&mut *$tx)
            .await?;
            for endpoint in &endpoints {
                let wanted = $crate::store::RowExt::text(endpoint, "events")?;
                if !wanted.split(',').any(|w| w == kind) {
                    continue;
                }
                let slug = $crate::store::RowExt::text(endpoint, "slug")?;
                let id = uuid::Uuid::now_v7().to_string();
                let body = $crate::store::webhooks::delivery_body(&id, kind, $seq, &slug, event);
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, org_id, endpoint_id, event_log_id, call_id, type, body, status, attempts, next_attempt_at, retry_from, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8)",
                )
                .bind(&id)
                .bind(event.org_id)
                .bind($crate::store::RowExt::int(endpoint, "id")?)
                .bind($log_id)
                .bind(call_id)
                .bind(kind)
                .bind(&body)
                .bind(event.at)
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}
pub(crate) use enqueue_webhooks;

fn endpoint_from(row: &impl RowExt) -> Result<WebhookEndpoint> {
    Ok(WebhookEndpoint {
        id: row.int("id")?,
        org_id: row.int("org_id")?,
        url: row.text("url")?,
        secret: row.text("secret_ref")?,
        events: row.text("events")?.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect(),
        enabled: row.boolean("enabled")?,
        created_at: row.time("created_at")?,
    })
}

fn status_from(text: &str) -> Result<DeliveryStatus> {
    text.parse().map_err(StoreError::Database)
}

fn delivery_from(row: &impl RowExt) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: row.text("id")?,
        org_id: row.int("org_id")?,
        endpoint_id: row.int("endpoint_id")?,
        url: row.text("url")?,
        call_id: row.text("call_id")?,
        kind: row.text("type")?,
        status: status_from(&row.text("status")?)?,
        attempts: row.int32("attempts")?,
        next_attempt_at: row.time("next_attempt_at")?,
        last_status: row.opt_int("last_status")?.map(|s| s as i32),
        last_error: row.opt_text("last_error")?,
        created_at: row.time("created_at")?,
        delivered_at: row.opt_time("delivered_at")?,
        body: row.text("body")?,
    })
}

const ENDPOINT_COLUMNS: &str = "SELECT id, org_id, url, secret_ref, events, enabled, created_at FROM webhook_endpoints";

const DELIVERY_COLUMNS: &str = "SELECT d.id, d.org_id, d.endpoint_id, w.url, d.call_id, d.type, d.status, d.attempts, d.next_attempt_at, \
     d.last_status, d.last_error, d.created_at, d.delivered_at, d.body \
     FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.org_id = d.org_id";

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Adds an endpoint to an organization (checked by [`crate::webhooks::check_endpoint`]).
    pub async fn add_webhook_endpoint(&self, new: &NewWebhookEndpoint) -> Result<WebhookEndpoint> {
        let at = now();
        let id: i64 = write_tx!(self, tx => {
            sqlx::query_scalar(
                "INSERT INTO webhook_endpoints (org_id, url, secret_ref, events, enabled, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(new.org_id)
            .bind(&new.url)
            .bind(&new.secret)
            .bind(new.events.join(","))
            .bind(new.enabled)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?
        });
        self.webhook_endpoints(new.org_id)
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| StoreError::Database(format!("webhook endpoint {id} vanished")))
    }

    /// An organization's endpoints (not the removed ones), oldest first.
    pub async fn webhook_endpoints(&self, org_id: i64) -> Result<Vec<WebhookEndpoint>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{ENDPOINT_COLUMNS} WHERE org_id = $1 AND removed_at IS NULL ORDER BY id")))
                .bind(org_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(endpoint_from).collect()
        })
    }

    /// Turns one organization's endpoint on or off. Off, it is sent nothing, and events that
    /// happen meanwhile are not queued for it; deliveries queued already wait until it is on.
    pub async fn set_webhook_endpoint_enabled(&self, org_id: i64, id: i64, enabled: bool) -> Result<()> {
        let updated = write_tx!(self, tx => {
            sqlx::query("UPDATE webhook_endpoints SET enabled = $1 WHERE id = $2 AND org_id = $3 AND removed_at IS NULL")
                .bind(enabled)
                .bind(id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound(format!("no webhook endpoint {id} in this organization")));
        }
        Ok(())
    }

    /// Removes one organization's endpoint: it receives nothing more, and its pending deliveries
    /// become dead (still listed). Returns how many did.
    pub async fn remove_webhook_endpoint(&self, org_id: i64, id: i64) -> Result<u64> {
        let at = now();
        let killed = write_tx!(self, tx => {
            let removed = sqlx::query("UPDATE webhook_endpoints SET enabled = $1, removed_at = $2 WHERE id = $3 AND org_id = $4 AND removed_at IS NULL")
                .bind(false)
                .bind(at)
                .bind(id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed == 0 {
                return Err(StoreError::NotFound(format!("no webhook endpoint {id} in this organization")));
            }
            sqlx::query("UPDATE webhook_deliveries SET status = 'dead', last_error = 'the endpoint was removed', lease_until = NULL, leased_by = NULL WHERE endpoint_id = $1 AND org_id = $2 AND status = 'pending'")
                .bind(id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(killed)
    }

    /// One organization's deliveries, newest first, with `status` only those; at most `limit`.
    pub async fn webhook_deliveries(
        &self,
        org_id: i64,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{DELIVERY_COLUMNS} WHERE d.org_id = $1 AND ($2 IS NULL OR d.status = $2) ORDER BY d.event_log_id DESC, d.endpoint_id DESC LIMIT $3"
            )))
            .bind(org_id)
            .bind(status.map(|s| s.as_str()))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(delivery_from).collect()
        })
    }

    /// One organization's delivery by id.
    pub async fn webhook_delivery(&self, org_id: i64, id: &str) -> Result<Option<WebhookDelivery>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{DELIVERY_COLUMNS} WHERE d.org_id = $1 AND d.id = $2")))
                .bind(org_id)
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| delivery_from(&r)).transpose()
        })
    }

    /// Puts one organization's dead or pending delivery back to pending, due `at`; a dead one
    /// gets a new retry window from `at`. A delivered one is [`StoreError::Conflict`].
    pub async fn retry_webhook_delivery(&self, org_id: i64, id: &str, at: DateTime<Utc>) -> Result<()> {
        write_tx!(self, tx => {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1 AND org_id = $2")
                .bind(id)
                .bind(org_id)
                .fetch_optional(&mut *tx)
                .await?;
            match status.as_deref().map(status_from).transpose()? {
                None => return Err(StoreError::NotFound(format!("no webhook delivery {id:?} in this organization"))),
                Some(DeliveryStatus::Delivered) => return Err(StoreError::Conflict(format!("webhook delivery {id} was delivered already"))),
                Some(status) => {
                    let window = if status == DeliveryStatus::Dead { ", retry_from = $1" } else { "" };
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1{window} WHERE id = $2 AND org_id = $3"
                    )))
                    .bind(at)
                    .bind(id)
                    .bind(org_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        });
        Ok(())
    }

    /// Puts every dead delivery of one organization back to pending, due `at`, with a new retry
    /// window. Returns how many.
    pub async fn retry_dead_webhooks(&self, org_id: i64, at: DateTime<Utc>) -> Result<u64> {
        Ok(write_tx!(self, tx => {
            sqlx::query("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, retry_from = $1, lease_until = NULL, leased_by = NULL WHERE org_id = $2 AND status = 'dead'")
                .bind(at)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }

    /// Claims for `worker` up to `limit` due deliveries, leased until `now + lease`: pending,
    /// due by `now`, not leased (or the lease ended: a daemon that died), to an enabled endpoint
    /// of the delivery's own organization, and with no earlier pending delivery of the same call
    /// to the same endpoint. Rows another transaction is claiming are skipped on PostgreSQL.
    pub async fn claim_webhook_deliveries(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let until = super::contacts::later_by(now, lease, "the webhook lease")?;
        Ok(write_tx!(self, tx, pg => {
            let skip = if pg { " FOR UPDATE OF d SKIP LOCKED" } else { "" };
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT d.id, d.org_id, d.endpoint_id, d.call_id, d.type, d.body, d.attempts, d.retry_from, d.created_at, w.url, w.secret_ref \
                 FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.org_id = d.org_id \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until <= $1) \
                 AND w.enabled AND w.removed_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id AND p.call_id = d.call_id \
                     AND p.status = 'pending' AND p.event_log_id < d.event_log_id) \
                 ORDER BY d.next_attempt_at, d.event_log_id LIMIT $2{skip}"
            )))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let claimed = rows
                .iter()
                .map(|row| {
                    Ok(ClaimedDelivery {
                        id: row.text("id")?,
                        org_id: row.int("org_id")?,
                        endpoint_id: row.int("endpoint_id")?,
                        call_id: row.text("call_id")?,
                        kind: row.text("type")?,
                        body: row.text("body")?,
                        url: row.text("url")?,
                        secret: row.text("secret_ref")?,
                        attempts: row.int32("attempts")?,
                        retry_from: row.time("retry_from")?,
                        created_at: row.time("created_at")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if !claimed.is_empty() {
                let sql = format!(
                    "UPDATE webhook_deliveries SET lease_until = $1, leased_by = $2 WHERE id IN ({})",
                    placeholders(3, claimed.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(until).bind(worker);
                for delivery in &claimed {
                    query = query.bind(&delivery.id);
                }
                query.execute(&mut *tx).await?;
            }
            claimed
        }))
    }

    /// Records the attempts `worker` made at `at`, in one transaction. An attempt whose lease
    /// `worker` lost meanwhile (another worker took the row) changes nothing. Returns how many
    /// were recorded.
    ///
    /// The later deliveries of a call wait behind a failing one: they are moved to its next
    /// attempt (so claims do not read them again and again while a receiver is down), and
    /// brought back to now once it is delivered or dead.
    pub async fn finish_webhook_attempts(
        &self,
        worker: &str,
        at: DateTime<Utc>,
        attempts: &[(String, AttemptOutcome)],
    ) -> Result<usize> {
        if attempts.is_empty() {
            return Ok(0);
        }
        const RETURNING: &str = " RETURNING endpoint_id, call_id, event_log_id, attempts";
        Ok(write_tx!(self, tx => {
            let mut recorded = 0;
            for (id, outcome) in attempts {
                let (query, next) = match outcome {
                    AttemptOutcome::Delivered { status } => (
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = $1, last_status = $2, last_error = NULL, \
                             lease_until = NULL, leased_by = NULL WHERE id = $3 AND leased_by = $4 AND status = 'pending'{RETURNING}"
                        )))
                        .bind(at)
                        .bind(i64::from(*status)),
                        None,
                    ),
                    // The first failure starts the retry window (a delivery that waited behind
                    // its call's earlier ones still gets the whole window).
                    AttemptOutcome::Retry { status, error, next_at } => (
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, last_status = $2, last_error = $5, lease_until = NULL, leased_by = NULL, \
                             retry_from = CASE WHEN attempts = 0 THEN $6 ELSE retry_from END WHERE id = $3 AND leased_by = $4 AND status = 'pending'{RETURNING}"
                        )))
                        .bind(*next_at)
                        .bind(status.map(i64::from)),
                        Some((*next_at, error.as_str())),
                    ),
                    AttemptOutcome::Dead { status, error } => (
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE webhook_deliveries SET status = 'dead', attempts = attempts + 1, last_status = $1, last_error = $2, lease_until = NULL, leased_by = NULL \
                             WHERE id = $3 AND leased_by = $4 AND status = 'pending'{RETURNING}"
                        )))
                        .bind(status.map(i64::from))
                        .bind(error.as_str()),
                        None,
                    ),
                };
                let mut query = query.bind(id).bind(worker);
                if let Some((_, error)) = next {
                    query = query.bind(error).bind(at);
                }
                let row = query.fetch_optional(&mut *tx).await?;
                let next = next.map(|(next_at, _)| next_at);
                let Some(row) = row else { continue };
                recorded += 1;
                let (endpoint, call, log_id) = (row.int("endpoint_id")?, row.text("call_id")?, row.int("event_log_id")?);
                let later = "WHERE endpoint_id = $2 AND call_id = $3 AND event_log_id > $4 AND status = 'pending'";
                let moved = match next {
                    Some(next) => Some((format!("UPDATE webhook_deliveries SET next_attempt_at = $1 {later} AND next_attempt_at < $1"), next)),
                    // Only a delivery that failed before can have later ones waiting behind it.
                    None if row.int32("attempts")? > 1 => Some((format!("UPDATE webhook_deliveries SET next_attempt_at = $1 {later} AND attempts = 0 AND next_attempt_at > $1"), at)),
                    None => None,
                };
                if let Some((sql, to)) = moved {
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to).bind(endpoint).bind(&call).bind(log_id).execute(&mut *tx).await?;
                }
            }
            recorded
        }))
    }

    /// Gives back the leases `worker` holds: a worker starting again under the same name (the
    /// daemon's id) takes its rows back at once instead of waiting out its own leases.
    pub async fn release_webhook_leases(&self, worker: &str) -> Result<u64> {
        Ok(write_tx!(self, tx => {
            sqlx::query("UPDATE webhook_deliveries SET lease_until = NULL, leased_by = NULL WHERE leased_by = $1 AND status = 'pending'")
                .bind(worker)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }

    /// Deliveries waiting (every organization): the backlog gauge.
    pub async fn webhook_backlog(&self) -> Result<i64> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'").fetch_one(pool).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_call_events_have_a_webhook_type() {
        assert_eq!(webhook_type(EventKind::CallStarted), Some("call.started"));
        assert_eq!(webhook_type(EventKind::CallEnded), Some("call.ended"));
        assert_eq!(webhook_type(EventKind::CallAnalyzed), Some("call.analyzed"));
        assert_eq!(webhook_type(EventKind::ConversationTurn), None);
        assert_eq!(webhook_type(EventKind::CallStatusUpdate), None);
    }
}
