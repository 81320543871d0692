//! Calls and their turns. Every change to a call appends its event in the same transaction.
//!
//! * [`types`]: calls, turns, statuses, outcomes, filters and pages.
//! * `rows.rs`: reading them from rows; the cursors of call pages.
//! * `mod.rs`: the queries, as methods of [`Store`].

use chrono::{DateTime, Utc};
use serde_json::json;

use super::events::{Event, EventKind, LogRow, NewEvent, append_event, event_from};
use super::{Result, Store, StoreError, now, with_pool, write_tx};

mod rows;
pub mod types;

pub(crate) use rows::{CALL_COLUMNS, call_from};
use rows::{decode_cursor, encode_cursor, turn_from};
pub use types::{
    Call, CallFilter, CallPage, CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Orphan, Outcome, ToolUse,
    Turn, transcript,
};

/// Reads one organization's call inside a transaction, for update. Another organization's call
/// is not found: no write reaches it.
macro_rules! call_in_tx {
    ($tx:ident, $pg:expr, $org:expr, $id:expr) => {{
        let lock = if $pg { " FOR UPDATE OF c" } else { "" };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_COLUMNS} WHERE c.id = $1 AND c.org_id = $2{lock}")))
            .bind($id)
            .bind($org)
            .fetch_optional(&mut *$tx)
            .await?;
        match row {
            Some(row) => call_from(&row)?,
            None => return Err(StoreError::NotFound(format!("no call {:?} in this organization", $id))),
        }
    }};
}

/// Checks, inside a transaction, that a campaign and a contact named for a call belong to the
/// call's organization.
macro_rules! check_links_in_tx {
    ($tx:ident, $org:expr, $campaign:expr, $contact:expr) => {{
        if let Some(campaign) = $campaign {
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM campaigns WHERE id = $1 AND org_id = $2")
                .bind(campaign)
                .bind($org)
                .fetch_one(&mut *$tx)
                .await?;
            if found == 0 {
                return Err(StoreError::Invalid(format!("campaign {campaign} is not one of this organization's")));
            }
        }
        if let Some(contact) = $contact {
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts WHERE id = $1 AND org_id = $2")
                .bind(contact)
                .bind($org)
                .fetch_one(&mut *$tx)
                .await?;
            if found == 0 {
                return Err(StoreError::Invalid(format!("contact {contact} is not one of this organization's")));
            }
        }
    }};
}

impl Store {
    /// Creates a call and appends `call_started`. A duplicate id is a [`StoreError::Conflict`],
    /// whichever organization has it; a campaign or contact of another organization is
    /// [`StoreError::Invalid`].
    pub async fn create_call(&self, new: &NewCall) -> Result<(Call, Event)> {
        self.create_owned_call(new, None).await
    }

    /// [`Store::create_call`], held by the daemon `daemon_id` (see [`crate::fleet`]).
    pub async fn create_owned_call(&self, new: &NewCall, daemon_id: Option<&str>) -> Result<(Call, Event)> {
        let id = new.id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let at = now();
        let event_id = write_tx!(self, tx, pg => {
            check_links_in_tx!(tx, new.org_id, new.campaign_id, new.contact_id);
            let inserted = sqlx::query(
                "INSERT INTO calls (id, org_id, direction, from_number, to_number, channel, campaign_id, contact_id, status, started_at, updated_at, daemon_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
            )
            .bind(&id)
            .bind(new.org_id)
            .bind(new.direction.as_str())
            .bind(&new.from)
            .bind(&new.to)
            .bind(new.channel.as_deref())
            .bind(new.campaign_id)
            .bind(new.contact_id)
            .bind(CallStatus::Initiated.as_str())
            .bind(at)
            .bind(daemon_id)
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                return Err(match StoreError::from(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!("call {id:?} exists already")),
                    other => other,
                });
            }
            // Supervisors see who is called, not only ids.
            let names = sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_COLUMNS} WHERE c.id = $1")))
                .bind(&id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)
                .and_then(|row| call_from(&row))
                .map(|call| (call.contact_name, call.campaign_name))?;
            let event = NewEvent {
                org_id: new.org_id,
                call_id: Some(id.clone()),
                campaign_id: new.campaign_id,
                kind: EventKind::CallStarted,
                data: json!({
                    "direction": new.direction,
                    "from": new.from,
                    "to": new.to,
                    "campaign": new.campaign_id,
                    "contact": new.contact_id,
                    "channel": new.channel,
                    "contact_name": names.0,
                    "campaign_name": names.1,
                }),
                at,
            };
            append_event!(tx, pg, &event)
        });
        let call =
            self.call(new.org_id, &id).await?.ok_or_else(|| StoreError::Database(format!("call {id} vanished")))?;
        let event = self
            .logged_event(event_id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("event {event_id} vanished")))?;
        Ok((call, event))
    }

    /// Says whether a live call is waiting on a provider (`"stt"`, `"responder"`, `"tts"`), or no
    /// longer (`None`): a `call_status_update` whose status does not change and whose `waiting`
    /// carries it, so supervisors can see a call stuck on a slow provider. Nothing is appended
    /// for a call that has ended.
    pub async fn set_call_waiting(&self, org_id: i64, call_id: &str, waiting: Option<&str>) -> Result<Option<Event>> {
        let at = now();
        let event_id = write_tx!(self, tx, pg => {
            let call = call_in_tx!(tx, pg, org_id, call_id);
            if call.status.is_terminal() {
                None
            } else {
                let event = NewEvent {
                    org_id: call.org_id,
                    call_id: Some(call.id.clone()),
                    campaign_id: call.campaign_id,
                    kind: EventKind::CallStatusUpdate,
                    data: json!({
                        "status": call.status,
                        "previous": call.status,
                        "reason": call.status_reason,
                        "waiting": waiting,
                    }),
                    at,
                };
                Some(append_event!(tx, pg, &event))
            }
        });
        match event_id {
            Some(id) => self.logged_event(id).await,
            None => Ok(None),
        }
    }

    /// Appends what a supervisor did on one organization's call (`supervisor_joined`,
    /// `coached`, `ai_paused`, …) to the event log, with the call's campaign. Another
    /// organization's call is "not found".
    pub async fn supervisor_event(
        &self,
        org_id: i64,
        call_id: &str,
        kind: EventKind,
        data: serde_json::Value,
    ) -> Result<Event> {
        let at = now();
        let event_id = write_tx!(self, tx, pg => {
            let call = call_in_tx!(tx, pg, org_id, call_id);
            let event = NewEvent { org_id: call.org_id, call_id: Some(call.id.clone()), campaign_id: call.campaign_id, kind, data, at };
            append_event!(tx, pg, &event)
        });
        self.logged_event(event_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("the event {event_id} just written for call {call_id:?}")))
    }

    /// Moves a call to `status` and appends `call_status_update` with the previous status and
    /// the reason (an Asterisk cause, for example). Returns `None`, changing nothing, when the
    /// call has that status already or cannot move there (see [`CallStatus::can_become`]).
    pub async fn set_call_status(
        &self,
        org_id: i64,
        call_id: &str,
        status: CallStatus,
        reason: Option<&str>,
    ) -> Result<Option<Event>> {
        let at = now();
        let event_id = write_tx!(self, tx, pg => {
            let call = call_in_tx!(tx, pg, org_id, call_id);
            if !call.status.can_become(status) {
                None
            } else {
                let answered = (status == CallStatus::InProgress && call.answered_at.is_none()).then_some(at);
                sqlx::query("UPDATE calls SET status = $1, status_reason = $2, answered_at = COALESCE($3, answered_at), updated_at = $4 WHERE id = $5 AND org_id = $6")
                    .bind(status.as_str())
                    .bind(reason)
                    .bind(answered)
                    .bind(at)
                    .bind(call_id)
                    .bind(org_id)
                    .execute(&mut *tx)
                    .await?;
                let event = NewEvent {
                    org_id: call.org_id,
                    call_id: Some(call.id.clone()),
                    campaign_id: call.campaign_id,
                    kind: EventKind::CallStatusUpdate,
                    data: json!({ "status": status, "previous": call.status, "reason": reason }),
                    at,
                };
                Some(append_event!(tx, pg, &event))
            }
        });
        match event_id {
            Some(id) => self.logged_event(id).await,
            None => Ok(None),
        }
    }

    /// Records the channel that carries one organization's call (known once Asterisk reports
    /// it). Another organization's call is [`StoreError::NotFound`].
    pub async fn set_call_channel(&self, org_id: i64, call_id: &str, channel: &str) -> Result<()> {
        self.adopt_call(org_id, call_id, channel, None).await
    }

    /// A conversation takes over one organization's call (the dialer's, or its own after a
    /// replay): the channel that carries it, and with `daemon_id` the daemon that now holds it.
    /// Another organization's call is [`StoreError::NotFound`], and nothing is written.
    pub async fn adopt_call(&self, org_id: i64, call_id: &str, channel: &str, daemon_id: Option<&str>) -> Result<()> {
        let at = now();
        let updated = write_tx!(self, tx => {
            sqlx::query("UPDATE calls SET channel = $1, daemon_id = COALESCE($2, daemon_id), updated_at = $3 WHERE id = $4 AND org_id = $5")
                .bind(channel)
                .bind(daemon_id)
                .bind(at)
                .bind(call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound(format!("no call {call_id:?} in this organization")));
        }
        Ok(())
    }

    /// Stores the after-call analysis of one organization's call and appends `call_analyzed`
    /// (its data the analysis). Another organization's call is not found.
    pub async fn set_call_analysis(&self, org_id: i64, call_id: &str, analysis: &serde_json::Value) -> Result<Event> {
        let at = now();
        let event_id = write_tx!(self, tx, pg => {
            let call = call_in_tx!(tx, pg, org_id, call_id);
            sqlx::query("UPDATE calls SET analysis = $1, updated_at = $2 WHERE id = $3 AND org_id = $4")
                .bind(sqlx::types::Json(analysis))
                .bind(at)
                .bind(call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            let event = NewEvent {
                org_id: call.org_id,
                call_id: Some(call.id.clone()),
                campaign_id: call.campaign_id,
                kind: EventKind::CallAnalyzed,
                data: analysis.clone(),
                at,
            };
            append_event!(tx, pg, &event)
        });
        self.logged_event(event_id).await?.ok_or_else(|| StoreError::Database(format!("event {event_id} vanished")))
    }

    /// Records a turn of one organization's call and appends `conversation_turn`.
    pub async fn add_turn(&self, org_id: i64, turn: &NewTurn) -> Result<Event> {
        let at = now();
        let latency = serde_json::to_value(turn.latency).unwrap_or_default();
        let tools = serde_json::to_value(&turn.tools).unwrap_or_default();
        let mut data = json!({
            "turn": turn.turn,
            "caller": turn.caller,
            "agent": turn.agent,
            "emotion": turn.emotion,
            "intent": turn.intent,
            "confidence": turn.confidence,
            "latency_ms": turn.latency,
            "tools": tools,
        });
        if turn.interrupted {
            data["interrupted"] = json!(true);
        }
        let event_id = write_tx!(self, tx, pg => {
            let call = call_in_tx!(tx, pg, org_id, &turn.call_id);
            sqlx::query("INSERT INTO call_turns (call_id, turn, caller, agent, emotion, intent, confidence, latency, tools, at, interrupted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
                .bind(&turn.call_id)
                .bind(turn.turn)
                .bind(&turn.caller)
                .bind(&turn.agent)
                .bind(turn.emotion.as_deref())
                .bind(turn.intent.as_deref())
                .bind(turn.confidence)
                .bind(sqlx::types::Json(&latency))
                .bind(sqlx::types::Json(&tools))
                .bind(at)
                .bind(turn.interrupted)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE calls SET turns = $1, emotion = COALESCE($2, emotion), updated_at = $3 WHERE id = $4 AND org_id = $5 AND turns < $1")
                .bind(turn.turn)
                .bind(turn.emotion.as_deref())
                .bind(at)
                .bind(&turn.call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
            let event = NewEvent {
                org_id: call.org_id,
                call_id: Some(call.id.clone()),
                campaign_id: call.campaign_id,
                kind: EventKind::ConversationTurn,
                data: data.clone(),
                at,
            };
            append_event!(tx, pg, &event)
        });
        self.logged_event(event_id).await?.ok_or_else(|| StoreError::Database(format!("event {event_id} vanished")))
    }

    /// Finishes a call once: final status (appending `call_status_update` if it changes),
    /// outcome, end time, duration and the transcript assembled from its turns, then appends
    /// `call_ended`. Returns the events appended; none when the call was finished already.
    pub async fn finish_call(&self, org_id: i64, call_id: &str, finish: &FinishCall) -> Result<Vec<Event>> {
        self.finish_call_if(org_id, call_id, finish, None).await
    }

    /// [`Store::finish_call`] for a call whose daemon died: only while the call is still held
    /// by `orphan.daemon_id` and that daemon's heartbeat is older than `orphan.dead_after`
    /// (checked in the same transaction, which the daemon's heartbeat waits for). Returns no
    /// events, changing nothing, when the daemon beat again or another took the call.
    pub async fn finish_orphaned_call(
        &self,
        org_id: i64,
        call_id: &str,
        finish: &FinishCall,
        orphan: &Orphan<'_>,
    ) -> Result<Vec<Event>> {
        self.finish_call_if(org_id, call_id, finish, Some(orphan)).await
    }

    async fn finish_call_if(
        &self,
        org_id: i64,
        call_id: &str,
        finish: &FinishCall,
        orphan: Option<&Orphan<'_>>,
    ) -> Result<Vec<Event>> {
        let at = now();
        let event_ids: Vec<i64> = write_tx!(self, tx, pg => {
            let call = call_in_tx!(tx, pg, org_id, call_id);
            let orphaned = match orphan {
                None => true,
                Some(orphan) if call.daemon_id.as_deref() != Some(orphan.daemon_id) => false,
                Some(orphan) => {
                    // The daemon's row is locked until commit: its heartbeat waits, so it cannot
                    // come back to life half-way through.
                    let dead: Option<String> = if pg {
                        sqlx::query_scalar("SELECT id FROM daemons WHERE id = $1 AND heartbeat_at < now() - make_interval(secs => $2) FOR UPDATE")
                            .bind(orphan.daemon_id)
                            .bind(orphan.dead_after.as_secs_f64())
                            .fetch_optional(&mut *tx)
                            .await?
                    } else {
                        let cutoff = chrono::Duration::from_std(orphan.dead_after).ok().and_then(|d| at.checked_sub_signed(d));
                        sqlx::query_scalar("SELECT id FROM daemons WHERE id = $1 AND heartbeat_at < $2")
                            .bind(orphan.daemon_id)
                            .bind(cutoff.unwrap_or(DateTime::<Utc>::MIN_UTC))
                            .fetch_optional(&mut *tx)
                            .await?
                    };
                    dead.is_some()
                }
            };
            if call.ended_at.is_some() || !orphaned {
                Vec::new()
            } else {
                let rows = sqlx::query("SELECT turn, caller, agent, emotion, intent, confidence, latency, interrupted, tools, at FROM call_turns WHERE call_id = $1 ORDER BY turn")
                    .bind(&call.id)
                    .fetch_all(&mut *tx)
                    .await?;
                let turns = rows.iter().map(turn_from).collect::<Result<Vec<_>>>()?;
                let mut ids = Vec::new();
                let status = if call.status.is_terminal() { call.status } else { finish.status };
                if status != call.status {
                    let event = NewEvent {
                        org_id: call.org_id,
                        call_id: Some(call.id.clone()),
                        campaign_id: call.campaign_id,
                        kind: EventKind::CallStatusUpdate,
                        data: json!({ "status": status, "previous": call.status, "reason": finish.reason }),
                        at,
                    };
                    ids.push(append_event!(tx, pg, &event));
                }
                let duration = (at - call.started_at).num_milliseconds().max(0) as f64 / 1000.0;
                let status_reason = if status != call.status { finish.reason.clone() } else { call.status_reason.clone() };
                sqlx::query(
                    "UPDATE calls SET status = $1, status_reason = $2, outcome = $3, outcome_reason = $4, ended_at = $5, duration_s = $6, \
                     transcript = $7, emotion = COALESCE($8, emotion), intent_score = COALESCE($9, intent_score), turns = $10, updated_at = $5 WHERE id = $11 AND org_id = $12",
                )
                .bind(status.as_str())
                .bind(status_reason)
                .bind(finish.outcome.map(Outcome::as_str))
                .bind(finish.outcome_reason.as_deref())
                .bind(at)
                .bind(duration)
                .bind(transcript(&turns))
                .bind(finish.emotion.as_deref())
                .bind(finish.intent_score)
                .bind(turns.iter().filter(|t| t.turn > 0).count() as i32)
                .bind(call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
                let event = NewEvent {
                    org_id: call.org_id,
                    call_id: Some(call.id.clone()),
                    campaign_id: call.campaign_id,
                    kind: EventKind::CallEnded,
                    data: json!({
                        "status": status,
                        "outcome": finish.outcome,
                        "reason": finish.outcome_reason.as_deref().or(finish.reason.as_deref()),
                        "duration_s": duration,
                        "turns": turns.iter().filter(|t| t.turn > 0).count(),
                    }),
                    at,
                };
                ids.push(append_event!(tx, pg, &event));
                ids
            }
        });
        let mut events = Vec::new();
        for id in event_ids {
            events.extend(self.logged_event(id).await?);
        }
        Ok(events)
    }

    /// A call of one organization; another organization's call is `None`, as is an unknown id.
    pub async fn call(&self, org_id: i64, id: &str) -> Result<Option<Call>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_COLUMNS} WHERE c.id = $1 AND c.org_id = $2")))
                .bind(id)
                .bind(org_id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| call_from(&r)).transpose()
        })
    }

    /// Whether any organization has a call with this id (ids are unique across organizations):
    /// how a conversation tells "no such call" from "another organization's call" without
    /// reading it.
    pub async fn call_id_taken(&self, id: &str) -> Result<bool> {
        with_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE id = $1").bind(id).fetch_one(pool).await?;
            Ok(n > 0)
        })
    }

    /// A call of any organization, for asterai's own bookkeeping on ids it made (the tracker
    /// following its channels, the command line). Never for ids that come from a request or a
    /// dialplan: those go through [`Store::call`].
    pub async fn call_any(&self, id: &str) -> Result<Option<Call>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_COLUMNS} WHERE c.id = $1"))).bind(id).fetch_optional(pool).await?;
            row.map(|r| call_from(&r)).transpose()
        })
    }

    /// One organization's call's turns in order (none for another organization's call).
    pub async fn turns(&self, org_id: i64, call_id: &str) -> Result<Vec<Turn>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT t.turn, t.caller, t.agent, t.emotion, t.intent, t.confidence, t.latency, t.interrupted, t.tools, t.at FROM call_turns t \
                 JOIN calls c ON c.id = t.call_id WHERE t.call_id = $1 AND c.org_id = $2 ORDER BY t.turn",
            )
                .bind(call_id)
                .bind(org_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(turn_from).collect()
        })
    }

    /// Calls not finished yet (no end time), oldest first; one organization's or all.
    pub async fn unfinished_calls(&self, org_id: Option<i64>) -> Result<Vec<Call>> {
        with_pool!(self, pool => {
            let rows = match org_id {
                Some(org) => sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_COLUMNS} WHERE c.ended_at IS NULL AND c.org_id = $1 ORDER BY c.started_at")))
                    .bind(org)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_COLUMNS} WHERE c.ended_at IS NULL ORDER BY c.started_at"))).fetch_all(pool).await?,
            };
            rows.iter().map(call_from).collect()
        })
    }

    /// One organization's calls, newest first, filtered and paginated.
    pub async fn list_calls(&self, org_id: i64, filter: &CallFilter) -> Result<CallPage> {
        let limit = filter.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(StoreError::Invalid(format!("limit {limit}: expected 1 to 500")));
        }
        let cursor = filter.cursor.as_deref().map(decode_cursor).transpose()?;
        let search = filter.search.as_deref().map(SearchPatterns::new).transpose()?;
        let calls = with_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(CALL_COLUMNS);
            q.push(" WHERE c.org_id = ").push_bind(org_id);
            if let Some(status) = filter.status {
                q.push(" AND c.status = ").push_bind(status.as_str());
            }
            if filter.active {
                q.push(" AND c.status IN ('initiated', 'ringing', 'in_progress')");
            }
            if let Some(outcome) = filter.outcome {
                q.push(" AND c.outcome = ").push_bind(outcome.as_str());
            }
            if let Some(campaign) = filter.campaign_id {
                q.push(" AND c.campaign_id = ").push_bind(campaign);
            }
            if let Some(agent) = &filter.agent {
                q.push(" AND c.agent_name = ").push_bind(agent.clone());
            }
            if let Some(search) = &search {
                q.push(" AND (LOWER(c.id) LIKE ").push_bind(search.text.clone()).push(" ESCAPE '\\'");
                q.push(" OR LOWER(TRIM(COALESCE(ct.first_name, '') || ' ' || COALESCE(ct.last_name, ''))) LIKE ")
                    .push_bind(search.text.clone())
                    .push(" ESCAPE '\\'");
                q.push(" OR c.from_number LIKE ").push_bind(search.number.clone()).push(" ESCAPE '\\'");
                q.push(" OR c.to_number LIKE ").push_bind(search.number.clone()).push(" ESCAPE '\\')");
            }
            if let Some(since) = filter.since {
                q.push(" AND c.started_at >= ").push_bind(since);
            }
            if let Some(until) = filter.until {
                q.push(" AND c.started_at < ").push_bind(until);
            }
            if let Some((at, id)) = &cursor {
                q.push(" AND (c.started_at < ").push_bind(*at);
                q.push(" OR (c.started_at = ").push_bind(*at);
                q.push(" AND c.id < ").push_bind(id.clone());
                q.push("))");
            }
            q.push(" ORDER BY c.started_at DESC, c.id DESC LIMIT ").push_bind(limit + 1);
            let rows = q.build().fetch_all(pool).await?;
            rows.iter().map(call_from).collect::<Result<Vec<_>>>()?
        });
        let mut calls = calls;
        let next_cursor = if calls.len() as i64 > limit {
            calls.truncate(limit as usize);
            calls.last().map(encode_cursor)
        } else {
            None
        };
        Ok(CallPage { calls, next_cursor })
    }

    /// Records which Asterisk (its ARI entity id) carries an outbound call, so that daemon alone
    /// reconciles it against its channel list.
    pub async fn set_call_asterisk(&self, org_id: i64, call_id: &str, asterisk_id: &str) -> Result<()> {
        let at = now();
        write_tx!(self, tx => {
            sqlx::query("UPDATE calls SET asterisk_id = $1, updated_at = $2 WHERE id = $3 AND org_id = $4")
                .bind(asterisk_id)
                .bind(at)
                .bind(call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Unfinished calls carried by the Asterisk `asterisk_id`, oldest first; with `unassigned`,
    /// also those no dialer claimed (inbound calls), for a daemon that is alone on its database.
    pub async fn calls_to_reconcile(&self, asterisk_id: Option<&str>, unassigned: bool) -> Result<Vec<Call>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{CALL_COLUMNS} WHERE c.ended_at IS NULL AND ((c.asterisk_id IS NOT NULL AND c.asterisk_id = $1) OR ($2 AND c.asterisk_id IS NULL)) ORDER BY c.started_at"
            )))
            .bind(asterisk_id)
            .bind(unassigned)
            .fetch_all(pool)
            .await?;
            rows.iter().map(call_from).collect()
        })
    }

    /// The events of one call, in order (for the command line and tests); skipped rows (see
    /// [`super::Skipped`]) are left out.
    pub async fn call_events(&self, call_id: &str) -> Result<Vec<Event>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT e.id, e.org_seq, e.org_id, o.slug, e.call_id, e.campaign_id, e.type, e.payload, e.at FROM call_events e \
                 JOIN organizations o ON o.id = e.org_id WHERE e.call_id = $1 ORDER BY e.id",
            )
            .bind(call_id)
            .fetch_all(pool)
            .await?;
            let mut events = Vec::new();
            for row in &rows {
                if let LogRow::Event(event) = event_from(row)? {
                    events.push(event);
                }
            }
            Ok(events)
        })
    }
}

/// The `LIKE` patterns of a calls search: the text, lower-cased, for ids and names; for numbers,
/// the digits alone when the text is written as a number ("555 123-4567", "(555) 123").
struct SearchPatterns {
    text: String,
    number: String,
}

impl SearchPatterns {
    fn new(search: &str) -> Result<SearchPatterns> {
        let search = search.trim();
        let length = search.chars().count();
        if !(1..=100).contains(&length) {
            return Err(StoreError::Invalid(format!("search: expected 1 to 100 characters, got {length}")));
        }
        let like = |text: &str| {
            let mut pattern = String::from("%");
            for c in text.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        };
        let as_number = search.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
            && search.chars().any(|c| c.is_ascii_digit());
        let number = if as_number {
            let digits: String = search.chars().filter(char::is_ascii_digit).collect();
            like(&digits)
        } else {
            like(search)
        };
        Ok(SearchPatterns { text: like(&search.to_lowercase()), number })
    }
}
