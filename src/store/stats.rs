//! Figures for supervisors: an organization's day (`GET /v1/stats`) and a campaign's progress
//! (`GET /v1/campaigns/{id}/stats`, and `asterai campaign status`, which prints the same
//! [`CampaignStats`]).
//!
//! The figures are computed here, once, from the rows the store holds: the HTTP handlers and the
//! CLI only pass them on, so the page and the command line can never disagree. The few rows a
//! day or a campaign has are read and tallied in Rust rather than with backend-specific SQL
//! (percentiles and hour buckets differ between SQLite and PostgreSQL), so both backends give
//! the same answer by construction.
//!
//! Definitions (the README repeats them):
//!
//! * **answered**: calls with an answer time (they reached `in_progress`).
//! * **answer rate**: answered calls over the calls whose answer is decided, that is answered or
//!   ended without an answer; calls still ringing count in neither. `None` when no call is
//!   decided yet.
//! * **average handling time**: the mean of answer → end, in seconds, over answered calls that
//!   have ended.
//! * **latency per stage**: nearest-rank p50 and p95 of each stage of the turns that have a
//!   measured total (turns with `total` 0, such as a failed turn, are left out).
//! * **calls per hour** (campaigns): calls the campaign started in the hour before `at`.
//! * **ETA** (campaigns): with the campaign running and calls in the last hour, `at` plus the
//!   contacts still to call (pending and dialing) at that rate. A lower bound: retries add calls.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::calls::Latency;
use super::{Result, RowExt, Store, StoreError, with_pool};

/// The longest window `GET /v1/stats` answers for: a month of hour buckets.
pub const MAX_WINDOW_DAYS: i64 = 31;

/// The figures of one organization's calls started in a window (by default: today, UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayStats {
    /// The window: calls started at or after `since` and before `until`.
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(flatten)]
    pub calls: CallFigures,
    /// Calls started in each hour of the window, from `since` (the last bucket may be shorter).
    pub by_hour: Vec<HourCount>,
    /// Per turn stage, over the turns taken in the window.
    pub latency: StageLatency,
}

/// What a set of calls came to; shared by the day and the campaign figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallFigures {
    /// Calls started.
    pub calls: i64,
    /// Calls still going on (initiated, ringing, in progress).
    pub active: i64,
    /// Calls answered (with an answer time).
    pub answered: i64,
    /// `answered` over calls answered or ended without an answer; `None` before any is decided.
    pub answer_rate: Option<f64>,
    /// Calls by final outcome (ended calls with an outcome).
    pub outcomes: BTreeMap<String, i64>,
    /// Calls by status.
    pub statuses: BTreeMap<String, i64>,
    /// Mean seconds from answer to end of the answered calls that ended.
    pub average_handling_s: Option<f64>,
}

/// Calls started in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    pub start: DateTime<Utc>,
    pub calls: i64,
    pub answered: i64,
}

/// p50 and p95 of each turn stage, in milliseconds (see [`Latency`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageLatency {
    /// Turns measured (with a total above 0).
    pub turns: i64,
    pub endpoint: Percentiles,
    pub stt: Percentiles,
    pub llm_first: Percentiles,
    pub tts_first: Percentiles,
    pub total: Percentiles,
}

/// Nearest-rank percentiles; `None` without measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: Option<u32>,
    pub p95: Option<u32>,
}

/// A campaign's progress and results. One struct with named fields, so that a new figure is one
/// new field here and in [`Store::campaign_stats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignStats {
    pub campaign_id: i64,
    pub name: String,
    /// The campaign's state (`draft`, `running`, `paused`, `stopped`, `completed`).
    pub status: String,
    /// When the figures were computed (the reference of `calls_per_hour` and `eta`).
    pub at: DateTime<Utc>,
    pub progress: CampaignProgress,
    #[serde(flatten)]
    pub calls: CallFigures,
    /// Calls started in the hour before `at`.
    pub calls_per_hour: i64,
    /// When the contacts still to call would all have been called at `calls_per_hour`; `None`
    /// unless the campaign runs, has such contacts and made calls in the last hour.
    pub eta: Option<DateTime<Utc>>,
}

/// A campaign's contacts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CampaignProgress {
    /// Waiting for their (next) attempt.
    pub pending: i64,
    /// Being called now.
    pub dialing: i64,
    /// Reached (an answered call).
    pub done: i64,
    /// Out of attempts.
    pub failed: i64,
    /// Skipped: on the do-not-call list.
    pub do_not_call: i64,
    pub total: i64,
}

impl CampaignProgress {
    /// Contacts the campaign still has to call.
    pub fn remaining(&self) -> i64 {
        self.pending + self.dialing
    }
}

/// One call row, as the tallies need it.
struct CallRow {
    status: String,
    outcome: Option<String>,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
}

const CALL_ROW: &str = "SELECT status, outcome, started_at, answered_at, ended_at FROM calls";

fn call_row(row: &impl RowExt) -> Result<CallRow> {
    Ok(CallRow {
        status: row.text("status")?,
        outcome: row.opt_text("outcome")?,
        started_at: row.time("started_at")?,
        answered_at: row.opt_time("answered_at")?,
        ended_at: row.opt_time("ended_at")?,
    })
}

fn figures(rows: &[CallRow]) -> CallFigures {
    let mut f = CallFigures { calls: rows.len() as i64, ..CallFigures::default() };
    let (mut decided, mut handled, mut handling_s) = (0i64, 0i64, 0f64);
    for row in rows {
        *f.statuses.entry(row.status.clone()).or_default() += 1;
        if row.ended_at.is_none() {
            f.active += 1;
        }
        if let Some(outcome) = &row.outcome {
            *f.outcomes.entry(outcome.clone()).or_default() += 1;
        }
        if let Some(answered) = row.answered_at {
            f.answered += 1;
            decided += 1;
            if let Some(ended) = row.ended_at {
                handled += 1;
                handling_s += (ended - answered).num_microseconds().unwrap_or(0) as f64 / 1e6;
            }
        } else if row.ended_at.is_some() {
            decided += 1;
        }
    }
    f.answer_rate = (decided > 0).then(|| f.answered as f64 / decided as f64);
    f.average_handling_s = (handled > 0).then(|| handling_s / handled as f64);
    f
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[u32], p: u32) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted.get(rank - 1).copied()
}

fn stage_latency(turns: &[Latency]) -> StageLatency {
    let measured: Vec<&Latency> = turns.iter().filter(|l| l.total > 0).collect();
    let stage = |get: fn(&Latency) -> u32| {
        let mut values: Vec<u32> = measured.iter().map(|l| get(l)).collect();
        values.sort_unstable();
        Percentiles { p50: percentile(&values, 50), p95: percentile(&values, 95) }
    };
    StageLatency {
        turns: measured.len() as i64,
        endpoint: stage(|l| l.endpoint),
        stt: stage(|l| l.stt),
        llm_first: stage(|l| l.llm_first),
        tts_first: stage(|l| l.tts_first),
        total: stage(|l| l.total),
    }
}

fn hours(rows: &[CallRow], since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<HourCount> {
    let span = (until - since).num_seconds().max(0);
    let buckets = ((span + 3599) / 3600).max(1);
    let mut out: Vec<HourCount> =
        (0..buckets).map(|h| HourCount { start: since + Duration::hours(h), calls: 0, answered: 0 }).collect();
    for row in rows {
        let h = (row.started_at - since).num_seconds().div_euclid(3600);
        if let Some(bucket) = usize::try_from(h).ok().and_then(|h| out.get_mut(h)) {
            bucket.calls += 1;
            bucket.answered += i64::from(row.answered_at.is_some());
        }
    }
    out
}

impl Store {
    /// One organization's figures for the calls started in `[since, until)` and the turns taken
    /// in it. The window must be at most [`MAX_WINDOW_DAYS`] long and not end before it starts.
    pub async fn day_stats(&self, org_id: i64, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<DayStats> {
        if until < since {
            return Err(StoreError::Invalid(format!("until ({until}) is before since ({since})")));
        }
        if until - since > Duration::days(MAX_WINDOW_DAYS) {
            return Err(StoreError::Invalid(format!(
                "the window from {since} to {until} is longer than {MAX_WINDOW_DAYS} days"
            )));
        }
        let (rows, latencies) = with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{CALL_ROW} WHERE org_id = $1 AND started_at >= $2 AND started_at < $3"
            )))
            .bind(org_id)
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?;
            let rows = rows.iter().map(call_row).collect::<Result<Vec<_>>>()?;
            let turns = sqlx::query(
                "SELECT t.latency FROM call_turns t JOIN calls c ON c.id = t.call_id \
                 WHERE c.org_id = $1 AND t.at >= $2 AND t.at < $3",
            )
            .bind(org_id)
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?;
            let latencies = turns
                .iter()
                .map(|r| Ok(serde_json::from_value::<Latency>(r.json("latency")?).unwrap_or_default()))
                .collect::<Result<Vec<_>>>()?;
            (rows, latencies)
        });
        Ok(DayStats {
            since,
            until,
            calls: figures(&rows),
            by_hour: hours(&rows, since, until),
            latency: stage_latency(&latencies),
        })
    }

    /// One organization's campaign's figures at `at` (see the module's definitions); `None`
    /// for another organization's campaign or an unknown id.
    pub async fn campaign_stats(
        &self,
        org_id: i64,
        campaign_id: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<CampaignStats>> {
        let Some(campaign) = self.campaign(org_id, campaign_id).await? else { return Ok(None) };
        let contacts = self.campaign_contact_counts(campaign.id).await?;
        let count = |status: &str| contacts.get(status).copied().unwrap_or(0);
        let progress = CampaignProgress {
            pending: count("pending"),
            dialing: count("dialing"),
            done: count("done"),
            failed: count("failed"),
            do_not_call: count("dnc"),
            total: contacts.values().sum(),
        };
        let rows = with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{CALL_ROW} WHERE org_id = $1 AND campaign_id = $2")))
                .bind(org_id)
                .bind(campaign.id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(call_row).collect::<Result<Vec<_>>>()?
        });
        let hour_ago = at - Duration::hours(1);
        let calls_per_hour = rows.iter().filter(|r| r.started_at > hour_ago && r.started_at <= at).count() as i64;
        let eta = (campaign.status == "running" && calls_per_hour > 0 && progress.remaining() > 0).then(|| {
            let seconds = progress.remaining() * 3600 / calls_per_hour;
            at + Duration::seconds(seconds)
        });
        Ok(Some(CampaignStats {
            campaign_id: campaign.id,
            name: campaign.name,
            status: campaign.status,
            at,
            progress,
            calls: figures(&rows),
            calls_per_hour,
            eta,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        let values: Vec<u32> = (1..=20).collect();
        assert_eq!(percentile(&values, 50), Some(10));
        assert_eq!(percentile(&values, 95), Some(19));
        assert_eq!(percentile(&values, 100), Some(20));
        assert_eq!(percentile(&[1, 2, 3], 0), Some(1));
    }

    #[test]
    fn answer_rate_counts_only_decided_calls() {
        let t = Utc::now();
        let row = |status: &str, answered: bool, ended: bool| CallRow {
            status: status.into(),
            outcome: None,
            started_at: t,
            answered_at: answered.then_some(t),
            ended_at: ended.then(|| t + Duration::seconds(30)),
        };
        let f = figures(&[row("completed", true, true), row("no_answer", false, true), row("ringing", false, false)]);
        assert_eq!((f.calls, f.active, f.answered), (3, 1, 1));
        assert_eq!(f.answer_rate, Some(0.5));
        assert_eq!(f.average_handling_s, Some(30.0));
        assert_eq!(figures(&[row("ringing", false, false)]).answer_rate, None);
    }

    #[test]
    fn hour_buckets_start_at_since() {
        let since = Utc::now();
        let row = |minutes: i64| CallRow {
            status: "completed".into(),
            outcome: None,
            started_at: since + Duration::minutes(minutes),
            answered_at: None,
            ended_at: None,
        };
        let buckets = hours(&[row(0), row(59), row(60), row(149)], since, since + Duration::minutes(150));
        assert_eq!(buckets.iter().map(|b| b.calls).collect::<Vec<_>>(), [2, 1, 1]);
    }
}
