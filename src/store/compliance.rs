//! Compliance records: the checks made before each campaign call (`compliance_checks`), the
//! calls to a number (for the caps), and the measures of abandonment on `calls`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::contacts::{INSERT_CHECK, NUMBER_HISTORY};
use super::{Result, RowExt, Store, with_pool, write_tx};
use crate::dialer::compliance::History;

/// A compliance check to record.
#[derive(Debug, Clone)]
pub struct NewCheck<'a> {
    pub org_id: i64,
    pub campaign_id: Option<i64>,
    pub contact_id: Option<i64>,
    pub call_id: Option<&'a str>,
    pub number: &'a str,
    /// `claim` or `dial`.
    pub stage: &'a str,
    pub passed: bool,
    /// Why it was refused (`window`, `region_rule`, `cap`, `holiday`, `do_not_call`).
    pub reason: Option<&'a str>,
    pub detail: &'a str,
    pub region: Option<&'a str>,
    pub local_time: Option<&'a str>,
    pub not_before: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// A compliance check as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: i64,
    pub campaign_id: Option<i64>,
    pub contact_id: Option<i64>,
    pub call_id: Option<String>,
    pub number: String,
    pub stage: String,
    pub passed: bool,
    pub reason: Option<String>,
    pub detail: String,
    pub region: Option<String>,
    pub local_time: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

fn check_from(row: &impl RowExt) -> Result<Check> {
    Ok(Check {
        id: row.int("id")?,
        campaign_id: row.opt_int("campaign_id")?,
        contact_id: row.opt_int("contact_id")?,
        call_id: row.opt_text("call_id")?,
        number: row.text("number")?,
        stage: row.text("stage")?,
        passed: row.boolean("passed")?,
        reason: row.opt_text("reason")?,
        detail: row.text("detail")?,
        region: row.opt_text("region")?,
        local_time: row.opt_text("local_time")?,
        not_before: row.opt_time("not_before")?,
        at: row.time("at")?,
    })
}

impl Store {
    /// The calls placed to `number` of an organization after `since` (see [`NUMBER_HISTORY`]).
    pub async fn number_history(&self, org_id: i64, number: &str, since: DateTime<Utc>) -> Result<History> {
        with_pool!(self, pool => {
            let rows = sqlx::query(NUMBER_HISTORY).bind(org_id).bind(number).bind(true).bind(since).fetch_all(pool).await?;
            let calls = rows.iter().map(|r| Ok((r.time("at")?, r.opt_int("campaign_id")?))).collect::<Result<_>>()?;
            Ok(History { calls })
        })
    }

    /// Records one compliance check.
    pub async fn record_check(&self, check: &NewCheck<'_>) -> Result<()> {
        write_tx!(self, tx => {
            sqlx::query(INSERT_CHECK)
                .bind(check.org_id)
                .bind(check.campaign_id)
                .bind(check.contact_id)
                .bind(check.call_id)
                .bind(check.number)
                .bind(check.stage)
                .bind(check.passed)
                .bind(check.reason)
                .bind(check.detail)
                .bind(check.region)
                .bind(check.local_time)
                .bind(check.not_before)
                .bind(check.at)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// A campaign's compliance checks, oldest first.
    pub async fn campaign_checks(&self, org_id: i64, campaign_id: i64) -> Result<Vec<Check>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, campaign_id, contact_id, call_id, number, stage, passed, reason, detail, region, local_time, not_before, at \
                 FROM compliance_checks WHERE org_id = $1 AND campaign_id = $2 ORDER BY id",
            )
            .bind(org_id)
            .bind(campaign_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(check_from).collect()
        })
    }

    /// Puts a claimed contact back to `pending` until `until` (a check refused it at dial time),
    /// releasing the claim.
    pub async fn defer_contact(&self, contact_id: i64, until: DateTime<Utc>, at: DateTime<Utc>) -> Result<()> {
        write_tx!(self, tx => {
            sqlx::query("UPDATE contacts SET status = 'pending', next_attempt_at = $1, claimed_by = NULL, claim_expires_at = NULL, updated_at = $2 WHERE id = $3")
                .bind(until)
                .bind(at)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }
}

/// A campaign's abandon rate over a rolling span (see [`Store::abandon_counts`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbandonStats {
    /// Answered calls a live person took (not an answering machine), ended, in the span.
    pub answered: i64,
    /// Of those, the ones where the person waited more than `max_wait_ms` for the agent's
    /// first audio, or hung up before any.
    pub abandoned: i64,
    /// `abandoned / answered` in percent (0 without answered calls).
    pub rate: f64,
    /// The threshold in percent, past which the campaign is slowed, then paused.
    pub threshold: f64,
    pub max_wait_ms: i64,
    /// The start of the span (30 days).
    pub since: DateTime<Utc>,
    /// When the rate slowed the campaign, and why (none: at its own pace).
    pub slowed_at: Option<DateTime<Utc>>,
    pub slowed_reason: Option<String>,
}

impl Store {
    /// Records when the agent's first audio reached a call (the first STREAM FILE starting, or
    /// the first frame sent), and how long after the answer. Only the first one counts: returns
    /// false when the call has it already (or is not the organization's).
    pub async fn record_first_audio(&self, org_id: i64, call_id: &str, at: DateTime<Utc>) -> Result<bool> {
        let recorded = write_tx!(self, tx => {
            let row = sqlx::query("SELECT answered_at, first_audio_at FROM calls WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(call_id)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(row) if row.opt_time("first_audio_at")?.is_none() => {
                    let answered = row.opt_time("answered_at")?;
                    // `answered_at` is stamped when the answer is written, which can come a
                    // moment after the greeting started playing: audio never precedes the answer.
                    let at = answered.map_or(at, |a| at.max(a));
                    let waited = answered.map(|a| (at - a).num_milliseconds());
                    sqlx::query("UPDATE calls SET first_audio_at = $1, answer_to_audio_ms = $2 WHERE org_id = $3 AND id = $4 AND first_audio_at IS NULL")
                        .bind(at)
                        .bind(waited)
                        .bind(org_id)
                        .bind(call_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        > 0
                }
                _ => false,
            }
        });
        Ok(recorded)
    }

    /// Answered live calls of a campaign that started after `since` and have ended, and how
    /// many of them were abandoned: no agent audio at all, or more than `max_wait_ms` after the
    /// answer. Calls an answering machine took (`voicemail`) are not live people.
    pub async fn abandon_counts(&self, campaign_id: i64, since: DateTime<Utc>, max_wait_ms: i64) -> Result<(i64, i64)> {
        with_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT COUNT(*) AS answered, \
                 CAST(COALESCE(SUM(CASE WHEN answer_to_audio_ms IS NULL OR answer_to_audio_ms > $3 THEN 1 ELSE 0 END), 0) AS BIGINT) AS abandoned \
                 FROM calls WHERE campaign_id = $1 AND started_at > $2 AND answered_at IS NOT NULL AND ended_at IS NOT NULL \
                 AND (outcome IS NULL OR outcome <> 'voicemail')",
            )
            .bind(campaign_id)
            .bind(since)
            .bind(max_wait_ms)
            .fetch_one(pool)
            .await?;
            Ok((row.int("answered")?, row.int("abandoned")?))
        })
    }

    /// Answered live calls of a campaign answered after `since` (the calls since it was slowed).
    pub async fn answered_since(&self, campaign_id: i64, since: DateTime<Utc>) -> Result<i64> {
        with_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM calls WHERE campaign_id = $1 AND answered_at > $2 AND ended_at IS NOT NULL \
                 AND (outcome IS NULL OR outcome <> 'voicemail')",
            )
            .bind(campaign_id)
            .bind(since)
            .fetch_one(pool)
            .await?;
            Ok(n)
        })
    }

    /// Slows a running campaign for its abandon rate, with the reason, and publishes
    /// `campaign_status_update` (`slowed: true`). Returns false when it is slowed already or
    /// not running. Timed by the database's clock, like the answers it is compared with.
    pub async fn slow_campaign(&self, id: i64, reason: &str) -> Result<bool> {
        let sql = "UPDATE campaigns SET slowed_at = $2, slowed_reason = $1 WHERE id = $3 AND status = 'running' AND slowed_at IS NULL";
        self.change_running_campaign(id, sql, reason, |name| {
            serde_json::json!({"status": "running", "previous": "running", "slowed": true, "reason": reason, "name": name})
        })
        .await
    }
}

impl Store {
    /// A campaign's abandon figures over the 30 days before `now`, against `policy`.
    pub async fn abandon_stats(
        &self,
        campaign: &super::campaigns::Campaign,
        policy: &crate::dialer::compliance::AbandonPolicy,
        now: DateTime<Utc>,
    ) -> Result<AbandonStats> {
        let since = now.checked_sub_signed(chrono::Duration::days(30)).unwrap_or(now);
        let max_wait_ms = i64::from(policy.max_wait_ms);
        let (answered, abandoned) = self.abandon_counts(campaign.id, since, max_wait_ms).await?;
        let rate = if answered > 0 { abandoned as f64 * 100.0 / answered as f64 } else { 0.0 };
        Ok(AbandonStats {
            answered,
            abandoned,
            rate,
            threshold: policy.threshold,
            max_wait_ms,
            since,
            slowed_at: campaign.slowed_at,
            slowed_reason: campaign.slowed_reason.clone(),
        })
    }
}

impl Store {
    /// When the agent's first audio reached a call and how long after its answer (milliseconds),
    /// if it did (see [`Store::record_first_audio`]).
    pub async fn first_audio(&self, org_id: i64, call_id: &str) -> Result<Option<(DateTime<Utc>, Option<i64>)>> {
        with_pool!(self, pool => {
            let row = sqlx::query("SELECT first_audio_at, answer_to_audio_ms FROM calls WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(call_id)
                .fetch_optional(pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let waited = row.opt_int("answer_to_audio_ms")?;
            Ok(row.opt_time("first_audio_at")?.map(|at| (at, waited)))
        })
    }
}
