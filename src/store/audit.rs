//! The audit log: every action by a token or the CLI (calls placed, campaigns created, started
//! or changed, do-not-call entries added or removed, agents changed, tokens), who did it,
//! when and from where. Append-only: the database's triggers refuse updates and deletes.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, RowExt, Store, now, with_pool, write_tx};

/// An action to record.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// The organization acted on, when there is one.
    pub org_id: Option<i64>,
    /// `token:<name> (<id>)` or `cli:<user>`.
    pub actor: &'a str,
    /// `api` or `cli`.
    pub via: &'a str,
    /// `campaign.started`, `dnc.added`, `cli: campaign start`, …
    pub action: &'a str,
    /// What it acted on: a path, a campaign id, a number.
    pub target: Option<&'a str>,
    pub detail: serde_json::Value,
    /// The peer's address (`203.0.113.9:53211`), or where a CLI user came from (`SSH_CLIENT`, else `local`).
    pub peer: Option<&'a str>,
}

/// An entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub org_id: Option<i64>,
    pub actor: String,
    pub via: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub peer: Option<String>,
    pub at: DateTime<Utc>,
}

fn entry_from(row: &impl RowExt) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.int("id")?,
        org_id: row.opt_int("org_id")?,
        actor: row.text("actor")?,
        via: row.text("via")?,
        action: row.text("action")?,
        target: row.opt_text("target")?,
        detail: row.json("detail")?,
        peer: row.opt_text("peer")?,
        at: row.time("at")?,
    })
}

impl Store {
    /// Appends one entry to the audit log.
    pub async fn audit(&self, entry: &NewAudit<'_>) -> Result<()> {
        let at = now();
        write_tx!(self, tx => {
            sqlx::query("INSERT INTO audit_log (org_id, actor, via, action, target, detail, peer, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(entry.org_id)
                .bind(entry.actor)
                .bind(entry.via)
                .bind(entry.action)
                .bind(entry.target)
                .bind(sqlx::types::Json(&entry.detail))
                .bind(entry.peer)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// The audit log after entry `after`, oldest first, at most `limit` entries: one
    /// organization's (`Some`), or every entry (`None`, the CLI's).
    pub async fn audit_log(&self, org_id: Option<i64>, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        with_pool!(self, pool => {
            let rows = match org_id {
                Some(org) => sqlx::query("SELECT id, org_id, actor, via, action, target, detail, peer, at FROM audit_log WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                    .bind(org)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query("SELECT id, org_id, actor, via, action, target, detail, peer, at FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
            };
            rows.iter().map(entry_from).collect()
        })
    }
}
