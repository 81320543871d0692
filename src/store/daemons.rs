//! Daemons and their heartbeats, and the calls each one holds (see [`crate::fleet`]).
//!
//! On PostgreSQL the heartbeat and the "is it dead?" test both use the database's clock, so
//! daemons on hosts whose clocks disagree still agree on who stopped beating.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::calls::CALL_COLUMNS;
use super::{Call, Result, Store, now, with_pool, write_tx};

impl Store {
    /// Records that the daemon `id` runs (again). Its first heartbeat follows
    /// ([`Store::heartbeat`]), by the database's clock.
    pub async fn register_daemon(&self, id: &str, host: &str, pid: u32) -> Result<()> {
        let at = now();
        write_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO daemons (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET host = $2, pid = $3, started_at = $4, heartbeat_at = $4",
            )
            .bind(id)
            .bind(host)
            .bind(i64::from(pid))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// The daemon `id` is alive. Returns false when it has no row (registered again at the
    /// next start).
    pub async fn heartbeat(&self, id: &str) -> Result<bool> {
        let at = now();
        let updated = write_tx!(self, tx, pg => {
            let beat = if pg {
                sqlx::query("UPDATE daemons SET heartbeat_at = now() WHERE id = $1").bind(id)
            } else {
                sqlx::query("UPDATE daemons SET heartbeat_at = $2 WHERE id = $1").bind(id).bind(at)
            };
            beat.execute(&mut *tx).await?.rows_affected()
        });
        Ok(updated > 0)
    }

    /// The daemon `daemon_id` holds one organization's call that nobody held (placed by
    /// `asterai call`, which is no daemon). A call already held keeps its daemon.
    pub async fn hold_call(&self, org_id: i64, call_id: &str, daemon_id: &str) -> Result<()> {
        write_tx!(self, tx => {
            sqlx::query("UPDATE calls SET daemon_id = $1 WHERE id = $2 AND org_id = $3 AND daemon_id IS NULL")
                .bind(daemon_id)
                .bind(call_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// When the daemon `id` last beat, by the database's clock on PostgreSQL.
    pub async fn daemon_heartbeat(&self, id: &str) -> Result<Option<DateTime<Utc>>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT heartbeat_at FROM daemons WHERE id = $1").bind(id).fetch_optional(pool).await?)
        })
    }

    /// Unfinished calls held by daemons other than `me` whose heartbeat is older than
    /// `dead_after`, oldest first, with the daemon that held each.
    pub async fn orphaned_calls(&self, me: &str, dead_after: Duration) -> Result<Vec<Call>> {
        let cutoff = chrono::Duration::from_std(dead_after).ok().and_then(|d| now().checked_sub_signed(d));
        with_pool!(self, pool => {
            let rows = match self {
                Store::Postgres(_) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{CALL_COLUMNS} JOIN daemons d ON d.id = c.daemon_id WHERE c.ended_at IS NULL AND c.daemon_id <> $1 \
                     AND d.heartbeat_at < now() - make_interval(secs => $2) ORDER BY c.started_at"
                )))
                .bind(me)
                .bind(dead_after.as_secs_f64())
                .fetch_all(pool)
                .await?,
                Store::Sqlite(_) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{CALL_COLUMNS} JOIN daemons d ON d.id = c.daemon_id WHERE c.ended_at IS NULL AND c.daemon_id <> $1 \
                     AND d.heartbeat_at < $2 ORDER BY c.started_at"
                )))
                .bind(me)
                .bind(cutoff.unwrap_or(DateTime::<Utc>::MIN_UTC))
                .fetch_all(pool)
                .await?,
            };
            rows.iter().map(super::calls::call_from).collect()
        })
    }

    /// Unfinished calls a daemon starting as `me` finds behind it: the ones it held, and with
    /// `alone` (an embedded database, which no other daemon shares) every unfinished call.
    pub async fn calls_left_behind(&self, me: &str, alone: bool) -> Result<Vec<Call>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{CALL_COLUMNS} WHERE c.ended_at IS NULL AND (c.daemon_id = $1 OR $2) ORDER BY c.started_at"
            )))
            .bind(me)
            .bind(alone)
            .fetch_all(pool)
            .await?;
            rows.iter().map(super::calls::call_from).collect()
        })
    }
}
