//! Whole-call recordings: one row per recording of a call (MixMonitor on AGI calls, the bridge's
//! recording on streaming calls), scoped by organization like the call it belongs to.
//!
//! A recording starts as `recording` (the row is written before Asterisk is asked to record),
//! then becomes `available` (the file is on disk, with its size and duration), `failed` (with
//! the reason), or was `refused` (the contact's region requires every party's consent and there
//! was no announcement to play). Retention deletes old files and marks their rows `purged`,
//! keeping the row as the record of the purge.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::string_enum::string_enum;
use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

string_enum! {
    /// Where a recording is in its life.
    RecordingStatus ("recording status") {
        Recording = "recording",
        Available = "available",
        Failed = "failed",
        Refused = "refused",
        Purged = "purged",
    }
}

string_enum! {
    /// What made the recording: MixMonitor on the AGI channel, or the ARI bridge's recording.
    RecordingVia ("recording source") { MixMonitor = "mixmonitor", Bridge = "bridge" }
}

/// A recording about to start.
#[derive(Debug, Clone)]
pub struct NewRecording<'a> {
    pub org_id: i64,
    pub call_id: &'a str,
    pub via: RecordingVia,
    /// asterai's own file name (`<call id>.wav`…), never caller text; unique.
    pub name: &'a str,
    /// Where asterai reads the file.
    pub path: &'a str,
    /// `wav`.
    pub format: &'a str,
    /// The contact's region, when known (`FL`, `CA`…).
    pub region: Option<&'a str>,
    pub consent_required: bool,
    pub consent_announced: bool,
    /// `Recording`, or `Refused` (with `reason`) when it never starts.
    pub status: RecordingStatus,
    pub reason: Option<&'a str>,
}

/// How a recording ended.
#[derive(Debug, Clone)]
pub struct RecordingEnd<'a> {
    /// `Available` or `Failed`.
    pub status: RecordingStatus,
    pub reason: Option<&'a str>,
    pub size_bytes: Option<i64>,
    pub duration_ms: Option<i64>,
}

/// One recording of a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recording {
    pub id: i64,
    #[serde(skip)]
    pub org_id: i64,
    pub call_id: String,
    pub via: RecordingVia,
    pub name: String,
    /// The file on the daemon's disk: not shown to API clients (they download by the call).
    #[serde(skip)]
    pub path: String,
    pub format: String,
    pub size_bytes: Option<i64>,
    pub duration_ms: Option<i64>,
    pub region: Option<String>,
    pub consent_required: bool,
    pub consent_announced: bool,
    pub status: RecordingStatus,
    pub status_reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "SELECT id, org_id, call_id, via, name, path, format, size_bytes, duration_ms, region, \
     consent_required, consent_announced, status, status_reason, started_at, ended_at, purged_at FROM call_recordings";

fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T> {
    text.parse().map_err(StoreError::Database)
}

fn recording_from(row: &impl RowExt) -> Result<Recording> {
    Ok(Recording {
        id: row.int("id")?,
        org_id: row.int("org_id")?,
        call_id: row.text("call_id")?,
        via: parse(&row.text("via")?)?,
        name: row.text("name")?,
        path: row.text("path")?,
        format: row.text("format")?,
        size_bytes: row.opt_int("size_bytes")?,
        duration_ms: row.opt_int("duration_ms")?,
        region: row.opt_text("region")?,
        consent_required: row.boolean("consent_required")?,
        consent_announced: row.boolean("consent_announced")?,
        status: parse(&row.text("status")?)?,
        status_reason: row.opt_text("status_reason")?,
        started_at: row.time("started_at")?,
        ended_at: row.opt_time("ended_at")?,
        purged_at: row.opt_time("purged_at")?,
    })
}

impl Store {
    /// Writes a recording's row before Asterisk records (or the refusal to record). The call
    /// must be one of the organization's ([`StoreError::NotFound`] otherwise); a name already
    /// used is a [`StoreError::Conflict`].
    pub async fn start_recording(&self, new: &NewRecording<'_>) -> Result<Recording> {
        if !matches!(new.status, RecordingStatus::Recording | RecordingStatus::Refused) {
            return Err(StoreError::Invalid(format!("a recording starts as recording or refused, not {}", new.status)));
        }
        let at = now();
        let ended_at = (new.status == RecordingStatus::Refused).then_some(at);
        let id: i64 = write_tx!(self, tx => {
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE id = $1 AND org_id = $2")
                .bind(new.call_id)
                .bind(new.org_id)
                .fetch_one(&mut *tx)
                .await?;
            if found == 0 {
                return Err(StoreError::NotFound(format!("no call {:?} in this organization", new.call_id)));
            }
            sqlx::query_scalar("INSERT INTO call_recordings (org_id, call_id, via, name, path, format, region, consent_required, consent_announced, status, status_reason, started_at, ended_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id")
                .bind(new.org_id)
                .bind(new.call_id)
                .bind(new.via.as_str())
                .bind(new.name)
                .bind(new.path)
                .bind(new.format)
                .bind(new.region)
                .bind(new.consent_required)
                .bind(new.consent_announced)
                .bind(new.status.as_str())
                .bind(new.reason)
                .bind(at)
                .bind(ended_at)
                .fetch_one(&mut *tx)
                .await?
        });
        self.recording(new.org_id, id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("recording {id} vanished after its insert")))
    }

    /// Ends one organization's recording that is still `recording`, by its name: `available`
    /// with its size and duration, or `failed` with the reason. Returns false when the
    /// recording had already ended (a second end changes nothing); another organization's is
    /// [`StoreError::NotFound`].
    pub async fn finish_recording(&self, org_id: i64, name: &str, end: &RecordingEnd<'_>) -> Result<bool> {
        if !matches!(end.status, RecordingStatus::Available | RecordingStatus::Failed) {
            return Err(StoreError::Invalid(format!("a recording ends as available or failed, not {}", end.status)));
        }
        let at = now();
        write_tx!(self, tx => {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM call_recordings WHERE name = $1 AND org_id = $2")
                .bind(name)
                .bind(org_id)
                .fetch_optional(&mut *tx)
                .await?;
            match status.as_deref() {
                None => return Err(StoreError::NotFound(format!("no recording {name:?} in this organization"))),
                Some("recording") => {}
                Some(_) => return Ok(false),
            }
            sqlx::query("UPDATE call_recordings SET status = $1, status_reason = $2, size_bytes = $3, duration_ms = $4, ended_at = $5 WHERE name = $6 AND org_id = $7")
                .bind(end.status.as_str())
                .bind(end.reason)
                .bind(end.size_bytes)
                .bind(end.duration_ms)
                .bind(at)
                .bind(name)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(true)
    }

    /// One organization's recording by id.
    pub async fn recording(&self, org_id: i64, id: i64) -> Result<Option<Recording>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE id = $1 AND org_id = $2")))
                .bind(id)
                .bind(org_id)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(recording_from).transpose()
        })
    }

    /// The recordings of one organization's call, oldest first (none for another organization's).
    pub async fn call_recordings(&self, org_id: i64, call_id: &str) -> Result<Vec<Recording>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE call_id = $1 AND org_id = $2 ORDER BY id")))
                .bind(call_id)
                .bind(org_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(recording_from).collect()
        })
    }

    /// The recordings of a campaign's calls (for its compliance report), oldest first.
    pub async fn campaign_recordings(&self, org_id: i64, campaign_id: i64) -> Result<Vec<Recording>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT r.id, r.org_id, r.call_id, r.via, r.name, r.path, r.format, r.size_bytes, r.duration_ms, r.region, \
                 r.consent_required, r.consent_announced, r.status, r.status_reason, r.started_at, r.ended_at, r.purged_at \
                 FROM call_recordings r JOIN calls c ON c.id = r.call_id AND c.org_id = r.org_id \
                 WHERE r.org_id = $1 AND c.campaign_id = $2 ORDER BY r.id")
                .bind(org_id)
                .bind(campaign_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(recording_from).collect()
        })
    }

    /// One organization's recordings started before `before` whose files may still be on disk
    /// (every status but `purged` and `refused`), oldest first, at most `limit`: what retention
    /// purges.
    pub async fn recordings_before(&self, org_id: i64, before: DateTime<Utc>, limit: i64) -> Result<Vec<Recording>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE org_id = $1 AND started_at < $2 AND status NOT IN ('purged', 'refused') ORDER BY started_at, id LIMIT $3"
            )))
            .bind(org_id)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(recording_from).collect()
        })
    }

    /// Marks one organization's recording `purged` (its file deleted by retention), keeping the
    /// row. Returns false when it was already purged; another organization's is not found.
    pub async fn mark_recording_purged(&self, org_id: i64, id: i64, at: DateTime<Utc>) -> Result<bool> {
        let updated = write_tx!(self, tx => {
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_recordings WHERE id = $1 AND org_id = $2")
                .bind(id)
                .bind(org_id)
                .fetch_one(&mut *tx)
                .await?;
            if exists == 0 {
                return Err(StoreError::NotFound(format!("no recording {id} in this organization")));
            }
            sqlx::query("UPDATE call_recordings SET status = 'purged', purged_at = $1 WHERE id = $2 AND org_id = $3 AND status <> 'purged'")
                .bind(at)
                .bind(id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(updated > 0)
    }

    /// One organization's call's recordings still `recording` (the call ended without their
    /// end, or the daemon stopped mid-call): failed with `reason`, so none stays "recording"
    /// for ever. Returns how many.
    pub async fn fail_unfinished_recordings(&self, org_id: i64, call_id: &str, reason: &str) -> Result<u64> {
        let at = now();
        let n = write_tx!(self, tx => {
            sqlx::query("UPDATE call_recordings SET status = 'failed', status_reason = $1, ended_at = $2 WHERE call_id = $3 AND org_id = $4 AND status = 'recording'")
                .bind(reason)
                .bind(at)
                .bind(call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
