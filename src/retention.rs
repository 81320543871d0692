//! Retention: what callers said (and the recordings of their calls) is kept for the days
//! `[retention]` says, per organization, then purged; the calls' metadata stays (see
//! [`crate::store::retention`] for what a purge takes and leaves).
//!
//! [`purge`] is run by the daily job of `asterai serve` ([`daily`]) and by `asterai purge`
//! (which can also list, with `--dry-run`, exactly what would go). Each call purged gets a purge
//! record; each run that purged something writes one entry to the audit log. Two daemons of a
//! fleet purging at once purge each call once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::store::audit::NewAudit;
use crate::store::retention::PurgeItem;
use crate::store::{Store, StoreError};

/// Who purges in the daily job, in purge records and the audit log.
pub const JOB_ACTOR: &str = "job:retention";

/// How often the daily job runs.
pub const DAILY: Duration = Duration::from_secs(24 * 60 * 60);

/// Calls purged per batch (each call in its own transaction).
const BATCH: i64 = 200;

/// One organization's part of a purge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgPurge {
    pub org: String,
    /// Its retention in days (none: kept forever, nothing purged).
    pub days: Option<u32>,
    /// Calls started before this are purged.
    pub before: Option<DateTime<Utc>>,
    /// The calls purged (or, in a dry run, that would be).
    pub calls: Vec<PurgeItem>,
}

/// What a purge did, or would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub at: DateTime<Utc>,
    pub orgs: Vec<OrgPurge>,
}

impl PurgeReport {
    /// Calls purged (or that would be), every organization together.
    pub fn calls(&self) -> usize {
        self.orgs.iter().map(|o| o.calls.len()).sum()
    }
}

/// Who purges and from where, for the purge records and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// [`JOB_ACTOR`] or `cli:<user>`.
    pub name: &'a str,
    /// `daemon` or `cli`.
    pub via: &'a str,
    pub peer: Option<&'a str>,
}

/// Purges (or, with `dry_run`, lists without changing anything) the words and recordings of
/// calls older than each organization's retention as of `now`: every organization, or the one
/// named `only`.
pub async fn purge(
    store: &Store,
    config: &RetentionConfig,
    only: Option<&str>,
    now: DateTime<Utc>,
    actor: Actor<'_>,
    dry_run: bool,
) -> Result<PurgeReport, StoreError> {
    let orgs = match only {
        Some(slug) => vec![store.require_org(slug).await?],
        None => store.list_orgs().await?,
    };
    let mut report = PurgeReport { dry_run, at: now, orgs: Vec::new() };
    for org in orgs {
        let days = config.days_for(&org.slug);
        let before = days.and_then(|d| now.checked_sub_signed(chrono::Duration::days(i64::from(d))));
        let mut part = OrgPurge { org: org.slug.clone(), days, before, calls: Vec::new() };
        if let Some(before) = before {
            if dry_run {
                part.calls = store.purge_candidates(org.id, before, i64::MAX).await?;
            } else {
                loop {
                    let batch = store.purge_candidates(org.id, before, BATCH).await?;
                    let mut purged = 0;
                    for item in &batch {
                        if let Some(done) = store.purge_call(org.id, &item.call_id, before, actor.name, now).await? {
                            part.calls.push(done);
                            purged += 1;
                        }
                    }
                    // A short batch was the last; a batch another daemon purged first is skipped.
                    if (batch.len() as i64) < BATCH || purged == 0 {
                        break;
                    }
                }
                if !part.calls.is_empty() {
                    audit(store, org.id, &part, actor).await?;
                }
            }
        }
        report.orgs.push(part);
    }
    Ok(report)
}

async fn audit(store: &Store, org_id: i64, part: &OrgPurge, actor: Actor<'_>) -> Result<(), StoreError> {
    let sum = |f: fn(&PurgeItem) -> i64| part.calls.iter().map(f).sum::<i64>();
    let detail = serde_json::json!({
        "days": part.days,
        "before": part.before,
        "calls": part.calls.len(),
        "turns": sum(|c| c.turns),
        "transcripts": sum(|c| i64::from(c.transcript)),
        "analyses": sum(|c| i64::from(c.analysis)),
        "events": sum(|c| c.events),
        "recordings": sum(|c| c.recordings),
    });
    store
        .audit(&NewAudit {
            org_id: Some(org_id),
            actor: actor.name,
            via: actor.via,
            action: "retention.purge",
            target: Some(&part.org),
            detail,
            peer: actor.peer,
        })
        .await
}

/// Whether any organization's calls are purged at all.
pub fn enabled(config: &RetentionConfig) -> bool {
    config.days > 0 || config.orgs.values().any(|d| *d > 0)
}

/// The daily job of `asterai serve`: a purge at start, then every [`DAILY`], until `stop`. A
/// failed purge is the supervisor's to restart.
pub async fn daily(store: Store, config: RetentionConfig, stop: CancellationToken) -> Result<(), String> {
    loop {
        let actor = Actor { name: JOB_ACTOR, via: "daemon", peer: None };
        let report = purge(&store, &config, None, crate::store::now(), actor, false)
            .await
            .map_err(|e| format!("the retention purge failed: {e}"))?;
        if report.calls() > 0 {
            tracing::info!(calls = report.calls(), "retention: calls older than their organization's retention purged");
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(DAILY) => {}
        }
    }
}
