//! Campaigns: a named set of contacts an organization calls, with its settings.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::events::{EventKind, NewEvent, append_event};
use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

/// A campaign as stored. `settings` is the dialer's JSON settings object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    pub status: String,
    /// Why the campaign is in its state when a daemon put it there (paused after a failure);
    /// cleared when someone changes the state.
    pub status_reason: Option<String>,
    pub settings: serde_json::Value,
    /// When its abandon rate slowed it (one call at a time, twice the pacing), and why; cleared
    /// when someone starts it again.
    pub slowed_at: Option<DateTime<Utc>>,
    pub slowed_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn campaign_from(row: &impl RowExt) -> Result<Campaign> {
    Ok(Campaign {
        id: row.int("id")?,
        org_id: row.int("org_id")?,
        name: row.text("name")?,
        status: row.text("status")?,
        status_reason: row.opt_text("status_reason")?,
        settings: row.json("settings")?,
        slowed_at: row.opt_time("slowed_at")?,
        slowed_reason: row.opt_text("slowed_reason")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

const COLUMNS: &str = "SELECT id, org_id, name, status, status_reason, settings, slowed_at, slowed_reason, created_at, updated_at FROM campaigns";

impl Store {
    /// Creates a campaign; a name used already in the organization is a conflict.
    pub async fn create_campaign(&self, org_id: i64, name: &str, settings: &serde_json::Value) -> Result<Campaign> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("campaign name: expected a non-empty name".into()));
        }
        let at = now();
        let id: i64 = write_tx!(self, tx => {
            let row = sqlx::query("INSERT INTO campaigns (org_id, name, status, settings, created_at, updated_at) VALUES ($1, $2, 'draft', $3, $4, $4) RETURNING id")
                .bind(org_id)
                .bind(name.trim())
                .bind(sqlx::types::Json(settings))
                .bind(at)
                .fetch_one(&mut *tx)
                .await;
            match row {
                Ok(row) => sqlx::Row::try_get(&row, "id")?,
                Err(e) => {
                    return Err(match StoreError::from(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!("campaign {:?} exists already", name.trim())),
                        other => other,
                    })
                }
            }
        });
        self.campaign(org_id, id).await?.ok_or_else(|| StoreError::Database("campaign vanished".into()))
    }

    /// A campaign of one organization.
    pub async fn campaign(&self, org_id: i64, id: i64) -> Result<Option<Campaign>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE org_id = $1 AND id = $2"))).bind(org_id).bind(id).fetch_optional(pool).await?;
            row.map(|r| campaign_from(&r)).transpose()
        })
    }

    /// An organization's campaigns by name.
    pub async fn list_campaigns(&self, org_id: i64) -> Result<Vec<Campaign>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE org_id = $1 ORDER BY name"))).bind(org_id).fetch_all(pool).await?;
            rows.iter().map(campaign_from).collect()
        })
    }
}

/// A campaign's states: `draft` → `running` ⇄ `paused` → `stopped`; `completed` once every
/// contact is done (see [`campaign_transition`]).
pub const CAMPAIGN_STATES: &[&str] = &["draft", "running", "paused", "stopped", "completed"];

/// Whether a campaign may go from `from` to `to` (`start`, `pause`, `stop`, or the runner's
/// `completed`):
/// it starts from anything but `stopped` (a `completed` one again after an import), only a
/// running (or paused) campaign pauses, and `stopped` is for good; the runner completes a
/// running one. Setting the state it has is allowed and changes nothing.
pub fn campaign_transition(from: &str, to: &str) -> std::result::Result<(), String> {
    match (from, to) {
        (from, to) if from == to => Ok(()),
        ("stopped", _) => Err("the campaign is stopped, for good; create a new campaign to call its contacts".into()),
        (_, "running" | "stopped") => Ok(()),
        ("running", "paused" | "completed") => Ok(()),
        (from, "paused") => Err(format!("only a running campaign can be paused; this one is {from}")),
        (from, to) => Err(format!("a campaign cannot go from {from} to {to}")),
    }
}

impl Store {
    /// A campaign of any organization (the dialer's).
    pub async fn campaign_any(&self, id: i64) -> Result<Option<Campaign>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE id = $1"))).bind(id).fetch_optional(pool).await?;
            row.map(|r| campaign_from(&r)).transpose()
        })
    }

    /// Sets a campaign's state (see [`CAMPAIGN_STATES`]) if [`campaign_transition`] allows it
    /// from the state it has; a refused change is a [`StoreError::Conflict`].
    pub async fn set_campaign_status(&self, org_id: i64, id: i64, status: &str) -> Result<Campaign> {
        if !CAMPAIGN_STATES.contains(&status) {
            return Err(StoreError::Invalid(format!(
                "campaign status {status:?}: expected one of {}",
                CAMPAIGN_STATES.join(", ")
            )));
        }
        let not_found = || StoreError::NotFound(format!("no campaign {id}"));
        let current = self.campaign(org_id, id).await?.ok_or_else(not_found)?;
        campaign_transition(&current.status, status).map_err(StoreError::Conflict)?;
        let at = now();
        // Only from the state the rule was checked against: a change in between (the runner
        // completing it, another client) makes this one a conflict, never a skipped check.
        let changed = write_tx!(self, tx => {
            sqlx::query(
                "UPDATE campaigns SET status = $1, status_reason = NULL, updated_at = $2, \
                 slowed_at = CASE WHEN $1 = 'running' THEN NULL ELSE slowed_at END, \
                 slowed_reason = CASE WHEN $1 = 'running' THEN NULL ELSE slowed_reason END \
                 WHERE org_id = $3 AND id = $4 AND status = $5",
            )
            .bind(status)
            .bind(at)
            .bind(org_id)
            .bind(id)
            .bind(&current.status)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if changed == 0 {
            let now = self.campaign(org_id, id).await?.ok_or_else(not_found)?;
            return Err(StoreError::Conflict(format!(
                "campaign {id} changed from {} to {} meanwhile; try again",
                current.status, now.status
            )));
        }
        self.campaign(org_id, id).await?.ok_or_else(not_found)
    }

    /// Pauses a running campaign that cannot be dialed, with the reason, and publishes
    /// `campaign_status_update` in the same transaction. Returns false (and changes nothing)
    /// when the campaign is not running any more (someone else paused it first).
    pub async fn pause_campaign(&self, id: i64, reason: &str) -> Result<bool> {
        let sql = "UPDATE campaigns SET status = 'paused', status_reason = $1, updated_at = $2 WHERE id = $3 AND status = 'running'";
        self.change_running_campaign(
            id,
            sql,
            reason,
            |name| serde_json::json!({"status": "paused", "previous": "running", "reason": reason, "name": name}),
        )
        .await
    }

    /// Runs `sql` (an UPDATE of campaign `$3` while it is running; `$1` the reason, `$2` the
    /// time) and, when it changed the campaign, publishes `campaign_status_update` with
    /// `data(name)` in the same transaction. Returns whether it changed.
    pub(super) async fn change_running_campaign(
        &self,
        id: i64,
        sql: &'static str,
        reason: &str,
        data: impl FnOnce(&str) -> serde_json::Value,
    ) -> Result<bool> {
        let at = now();
        let Some(campaign) = self.campaign_any(id).await? else { return Ok(false) };
        let data = data(&campaign.name);
        let changed = write_tx!(self, tx, pg => {
            let changed = sqlx::query(sql).bind(reason).bind(at).bind(id).execute(&mut *tx).await?.rows_affected();
            if changed > 0 {
                let event = NewEvent {
                    org_id: campaign.org_id,
                    call_id: None,
                    campaign_id: Some(id),
                    kind: EventKind::CampaignStatusUpdate,
                    data: data.clone(),
                    at,
                };
                append_event!(tx, pg, &event);
            }
            changed > 0
        });
        Ok(changed)
    }

    /// Replaces a campaign's settings.
    pub async fn set_campaign_settings(&self, org_id: i64, id: i64, settings: &serde_json::Value) -> Result<Campaign> {
        let at = now();
        let changed = write_tx!(self, tx => {
            sqlx::query("UPDATE campaigns SET settings = $1, updated_at = $2 WHERE org_id = $3 AND id = $4")
                .bind(sqlx::types::Json(settings))
                .bind(at)
                .bind(org_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no campaign {id}")));
        }
        self.campaign(org_id, id).await?.ok_or_else(|| StoreError::NotFound(format!("no campaign {id}")))
    }

    /// Every running campaign, of every organization.
    pub async fn running_campaigns(&self) -> Result<Vec<Campaign>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE status = 'running' ORDER BY id"))).fetch_all(pool).await?;
            rows.iter().map(campaign_from).collect()
        })
    }

    /// How many of a campaign's contacts are in each state (`pending`, `dialing`, `done`,
    /// `failed`, `dnc`).
    pub async fn campaign_contact_counts(&self, campaign_id: i64) -> Result<std::collections::BTreeMap<String, i64>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM contacts WHERE campaign_id = $1 GROUP BY status")
                .bind(campaign_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok((r.text("status")?, r.int("n")?))).collect()
        })
    }

    /// How many calls of a campaign are in each status.
    pub async fn campaign_call_counts(&self, campaign_id: i64) -> Result<std::collections::BTreeMap<String, i64>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM calls WHERE campaign_id = $1 GROUP BY status")
                .bind(campaign_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok((r.text("status")?, r.int("n")?))).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::campaign_transition;

    #[test]
    fn campaign_transitions() {
        for (from, to) in [
            ("draft", "running"),
            ("running", "paused"),
            ("paused", "running"),
            ("paused", "paused"),
            ("running", "stopped"),
            ("draft", "stopped"),
            ("completed", "running"),
            ("running", "completed"),
            ("stopped", "stopped"),
        ] {
            assert_eq!(campaign_transition(from, to), Ok(()), "{from} -> {to}");
        }
        for (from, to, why) in [
            ("stopped", "running", "for good"),
            ("stopped", "paused", "for good"),
            ("draft", "paused", "only a running campaign"),
            ("completed", "paused", "only a running campaign"),
            ("paused", "completed", "cannot go from paused to completed"),
            ("draft", "draft2", "cannot go"),
        ] {
            let err = campaign_transition(from, to).unwrap_err();
            assert!(err.contains(why), "{from} -> {to}: {err}");
        }
    }
}
