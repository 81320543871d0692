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
