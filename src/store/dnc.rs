//! The do-not-call list: one per organization, numbers in E.164 form.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

/// One number on an organization's do-not-call list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DncEntry {
    pub number: String,
    pub reason: Option<String>,
    /// Where it came from: `caller` (asked during a call), `cli`, `api`, `import`.
    pub source: String,
    pub created_at: DateTime<Utc>,
}

fn entry_from(row: &impl RowExt) -> Result<DncEntry> {
    Ok(DncEntry {
        number: row.text("number")?,
        reason: row.opt_text("reason")?,
        source: row.text("source")?,
        created_at: row.time("created_at")?,
    })
}

impl Store {
    /// Adds a number; returns false when it was on the list already (the first entry is kept).
    pub async fn add_dnc(&self, org_id: i64, number: &str, reason: Option<&str>, source: &str) -> Result<bool> {
        let number = crate::phone::parse(number).map_err(StoreError::Invalid)?;
        let at = now();
        let added = write_tx!(self, tx => {
            sqlx::query("INSERT INTO dnc_numbers (org_id, number, reason, source, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, number) DO NOTHING")
                .bind(org_id)
                .bind(&number)
                .bind(reason)
                .bind(source)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(added > 0)
    }

    /// Adds numbers in one transaction (E.164, checked by the caller); returns, per number,
    /// whether it was new.
    pub async fn add_dnc_many(&self, org_id: i64, numbers: &[String], source: &str) -> Result<Vec<bool>> {
        let at = now();
        let added = write_tx!(self, tx => {
            let mut added = Vec::with_capacity(numbers.len());
            for number in numbers {
                let n = sqlx::query("INSERT INTO dnc_numbers (org_id, number, reason, source, created_at) VALUES ($1, $2, NULL, $3, $4) ON CONFLICT (org_id, number) DO NOTHING")
                    .bind(org_id)
                    .bind(number)
                    .bind(source)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                added.push(n > 0);
            }
            added
        });
        Ok(added)
    }

    /// Removes a number; returns false when it was not on the list.
    pub async fn remove_dnc(&self, org_id: i64, number: &str) -> Result<bool> {
        let removed = write_tx!(self, tx => {
            sqlx::query("DELETE FROM dnc_numbers WHERE org_id = $1 AND number = $2").bind(org_id).bind(crate::phone::parse(number).unwrap_or_else(|_| number.trim().to_owned())).execute(&mut *tx).await?.rows_affected()
        });
        Ok(removed > 0)
    }

    /// Whether a number is on the organization's list.
    pub async fn is_dnc(&self, org_id: i64, number: &str) -> Result<bool> {
        with_pool!(self, pool => {
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dnc_numbers WHERE org_id = $1 AND number = $2")
                .bind(org_id)
                .bind(crate::phone::parse(number).unwrap_or_else(|_| number.trim().to_owned()))
                .fetch_one(pool)
                .await?;
            Ok(found > 0)
        })
    }

    /// The organization's list, by number.
    pub async fn list_dnc(&self, org_id: i64) -> Result<Vec<DncEntry>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT number, reason, source, created_at FROM dnc_numbers WHERE org_id = $1 ORDER BY number")
                .bind(org_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(entry_from).collect()
        })
    }
}
