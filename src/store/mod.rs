//! The store: calls, turns, the event log, organizations, tokens, agents, contacts, campaigns
//! and the do-not-call list, in SQLite (embedded, the default) or PostgreSQL (fleets).
//!
//! One [`Store`] type holds one of two typed pools. Queries are written once, with `$N`
//! placeholders that both backends accept, and compiled for each pool by the [`with_pool!`] and
//! [`write_tx!`] macros; rows are read through [`RowExt`], implemented for both row types.
//! (sqlx's `Any` driver cannot bind timestamps or UUIDs, hence two pools.)
//!
//! Each backend has its migrations folder (`migrations/sqlite`, `migrations/postgres`),
//! embedded in the binary and run at start-up or by `asterai migrate`.
//!
//! Writes that change a call also append its event to `call_events` in the same transaction, so
//! the feed's log and the call records never disagree. Event ids are assigned in commit order:
//! SQLite has one writer at a time (and asterai serialises its own writers), and PostgreSQL
//! appends take a transaction-level advisory lock and `pg_notify` the other daemons. Each row
//! has the log's id (internal, the hubs' cursor) and the organization's own number (`org_seq`,
//! the id supervisors see).
//!
//! Every write to a call names its organization and is checked in its transaction: another
//! organization's call is "not found" (see [`calls`]). `daemons` records each daemon's heartbeat
//! and `calls.daemon_id` the daemon that holds a call (see [`crate::fleet`]).

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

pub mod agents;
pub mod audit;
pub mod calls;
pub mod campaigns;
pub mod compliance;
pub mod contacts;
pub mod daemons;
pub mod dnc;
pub mod events;
pub mod orgs;
pub mod recordings;
pub mod retention;
pub mod stats;
mod string_enum;
pub mod webhooks;

pub use agents::{Agent, AgentVersion};
pub use calls::{
    Call, CallFilter, CallPage, CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Orphan, Outcome, ToolUse,
    Turn,
};
pub use events::{Event, EventKind, EventPage, SkipReason, Skipped};
pub use orgs::{Org, TokenRecord};
pub use recordings::{NewRecording, Recording, RecordingEnd, RecordingStatus, RecordingVia};
pub use stats::{CampaignStats, DayStats};

/// The PostgreSQL channel that carries "new events" notifications between daemons.
pub const EVENTS_CHANNEL: &str = "asterai_events";

/// Key of the advisory lock that orders event appends in PostgreSQL.
const EVENTS_LOCK: i64 = 0x6173_7465_7261_6931; // "asterai1"

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    /// The database refused in a way waiting cannot fix (no such database, a wrong password or
    /// role, a missing directory): start-up stops with it.
    #[error("{0}")]
    Refused(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
            sqlx::Error::Database(db) if db.message().contains("database is locked") => {
                StoreError::Unavailable(db.message().to_owned())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The SQLite side: the pool, and a lock that serialises this process's writers so they queue
/// in order instead of retrying on `SQLITE_BUSY`.
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    pub(crate) write: tokio::sync::Mutex<()>,
}

/// The database, whichever backend it is.
#[derive(Clone)]
pub enum Store {
    Sqlite(std::sync::Arc<SqliteStore>),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool; the body is compiled for both.
#[macro_export]
#[doc(hidden)]
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(s) => {
                let $pool = &s.pool;
                $body
            }
            $crate::store::Store::Postgres(p) => {
                let $pool = p;
                $body
            }
        }
    };
}

/// Runs `$body` inside a write transaction bound to `$tx` and commits it; an early return
/// (`?`) rolls back. SQLite transactions start with `BEGIN IMMEDIATE` under the writer lock.
/// The optional `$pg` names a `bool` that is true on PostgreSQL, for steps only it needs.
#[macro_export]
#[doc(hidden)]
macro_rules! write_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        $crate::store::write_tx!($store, $tx, _pg => $body)
    };
    ($store:expr, $tx:ident, $pg:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(s) => {
                let _writer = s.write.lock().await;
                let mut $tx = s.pool.begin_with("BEGIN IMMEDIATE").await?;
                #[allow(unused_variables)]
                let $pg = false;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::Store::Postgres(p) => {
                let mut $tx = p.begin().await?;
                #[allow(unused_variables)]
                let $pg = true;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

pub(crate) use {with_pool, write_tx};

/// How to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://…`, `sqlite://PATH` or a plain path to a SQLite file.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

/// PostgreSQL errors at connect time that heal by waiting: the server is starting up or
/// shutting down (57P0x), has no free connection slot (53xxx), or the connection broke (08xxx).
/// Everything else (3D000 no such database, 28P01 a wrong password, 28000 an unknown role or no
/// pg_hba.conf entry, 42501 no permission) stays the same until someone fixes the config.
fn pg_connect_error(e: sqlx::Error) -> StoreError {
    let heals = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
        }
        _ => false,
    };
    if heals {
        return StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}"));
    }
    let code = match &e {
        sqlx::Error::Database(db) => db.code().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default(),
        _ => String::new(),
    };
    let message = match &e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    StoreError::Refused(format!(
        "PostgreSQL refused the connection: {message}{code}; waiting will not fix this: check database.url (the database name, the user and its password)"
    ))
}

impl Store {
    /// Connects (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(options: &StoreOptions) -> Result<Store> {
        let url = options.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect =
                PgConnectOptions::from_str(url).map_err(|e| StoreError::Invalid(format!("database.url: {e}")))?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.connect_timeout)
                .connect_with(connect)
                .await
                .map_err(pg_connect_error)?;
            return Ok(Store::Postgres(pool));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        // A mistyped path must not become a new, empty database in a new directory: the
        // directory must exist (the configured data directory is created by the caller, see
        // `Config::prepare_data_dir`).
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StoreError::Refused(format!(
                "the directory of the SQLite database {path} does not exist ({}); create it, or fix database.url (empty uses the data directory)",
                dir.display()
            )));
        }
        if !Path::new(path).exists() && path != ":memory:" {
            tracing::info!(path, "creating a new SQLite database");
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        // Processes opening one new database together (several `asterai demo`s on one data
        // directory) race to switch it to WAL, and SQLite may answer the loser "database is
        // locked" at once, without waiting in its busy handler: opening is retried while the
        // busy timeout lasts.
        let deadline = std::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
        let pool = loop {
            let opened = SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(options.connect_timeout)
                .connect_with(connect.clone())
                .await;
            match opened {
                Ok(pool) => break pool,
                Err(e) if sqlite_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(StoreError::Unavailable(format!("cannot open SQLite database {path}: {e}"))),
            }
        };
        Ok(Store::Sqlite(std::sync::Arc::new(SqliteStore { pool, write: tokio::sync::Mutex::new(()) })))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The embedded migrations for this backend.
    pub fn migrator(&self) -> Migrator {
        let files: &[(i64, &str, &'static str)] = match self {
            Store::Sqlite(_) => &[
                (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
                (2, "dialer", include_str!("../../migrations/sqlite/0002_dialer.sql")),
                (3, "hardening", include_str!("../../migrations/sqlite/0003_hardening.sql")),
                (4, "ownership", include_str!("../../migrations/sqlite/0004_ownership.sql")),
                (5, "agents", include_str!("../../migrations/sqlite/0005_agents.sql")),
                (6, "tools", include_str!("../../migrations/sqlite/0006_tools.sql")),
                (8, "stream", include_str!("../../migrations/sqlite/0008_stream.sql")),
                (9, "analysis", include_str!("../../migrations/sqlite/0009_analysis.sql")),
                (10, "webhooks", include_str!("../../migrations/sqlite/0010_webhooks.sql")),
                (11, "compliance", include_str!("../../migrations/sqlite/0011_compliance.sql")),
                (12, "audit", include_str!("../../migrations/sqlite/0012_audit.sql")),
                (13, "recordings", include_str!("../../migrations/sqlite/0013_recordings.sql")),
                (14, "retention", include_str!("../../migrations/sqlite/0014_retention.sql")),
            ],
            Store::Postgres(_) => &[
                (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
                (2, "dialer", include_str!("../../migrations/postgres/0002_dialer.sql")),
                (3, "hardening", include_str!("../../migrations/postgres/0003_hardening.sql")),
                (4, "ownership", include_str!("../../migrations/postgres/0004_ownership.sql")),
                (5, "agents", include_str!("../../migrations/postgres/0005_agents.sql")),
                (6, "tools", include_str!("../../migrations/postgres/0006_tools.sql")),
                (8, "stream", include_str!("../../migrations/postgres/0008_stream.sql")),
                (9, "analysis", include_str!("../../migrations/postgres/0009_analysis.sql")),
                (10, "webhooks", include_str!("../../migrations/postgres/0010_webhooks.sql")),
                (11, "compliance", include_str!("../../migrations/postgres/0011_compliance.sql")),
                (12, "audit", include_str!("../../migrations/postgres/0012_audit.sql")),
                (13, "recordings", include_str!("../../migrations/postgres/0013_recordings.sql")),
                (14, "retention", include_str!("../../migrations/postgres/0014_retention.sql")),
            ],
        };
        let migrations = files
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect::<Vec<_>>();
        Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
    }

    /// Applies the migrations not applied yet. Returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let before = self.applied_migrations().await.unwrap_or(0);
        let migrator = self.migrator();
        with_pool!(self, pool => migrator.run(pool).await?);
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    /// How many migrations the database has applied (0 for a database never migrated).
    pub async fn applied_migrations(&self) -> Result<usize> {
        let exists: bool = with_pool!(self, pool => {
            let sql = match self {
                Store::Sqlite(_) => "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                Store::Postgres(_) => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            };
            sqlx::query_scalar(sql).fetch_one(pool).await?
        });
        if !exists {
            return Ok(0);
        }
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?);
        Ok(n as usize)
    }

    /// The number of migrations this binary carries.
    pub fn known_migrations(&self) -> usize {
        self.migrator().migrations.len()
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// Reads columns the same way from either backend's rows.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn int32(&self, col: &str) -> Result<i32>;
    fn boolean(&self, col: &str) -> Result<bool>;
    fn opt_float(&self, col: &str) -> Result<Option<f64>>;
    fn time(&self, col: &str) -> Result<DateTime<Utc>>;
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn json(&self, col: &str) -> Result<serde_json::Value>;
    fn opt_json(&self, col: &str) -> Result<Option<serde_json::Value>>;
}

macro_rules! row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            fn boolean(&self, col: &str) -> Result<bool> {
                Ok(self.try_get(col)?)
            }
            fn int32(&self, col: &str) -> Result<i32> {
                Ok(self.try_get(col)?)
            }
            fn opt_float(&self, col: &str) -> Result<Option<f64>> {
                Ok(self.try_get(col)?)
            }
            fn time(&self, col: &str) -> Result<DateTime<Utc>> {
                Ok(self.try_get(col)?)
            }
            fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
                Ok(self.try_get(col)?)
            }
            fn json(&self, col: &str) -> Result<serde_json::Value> {
                let value: sqlx::types::Json<serde_json::Value> = self.try_get(col)?;
                Ok(value.0)
            }
            fn opt_json(&self, col: &str) -> Result<Option<serde_json::Value>> {
                let value: Option<sqlx::types::Json<serde_json::Value>> = self.try_get(col)?;
                Ok(value.map(|v| v.0))
            }
        }
    };
}

row_ext!(SqliteRow);
row_ext!(PgRow);

/// The current time, truncated to microseconds so it round-trips through both backends.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// How long a SQLite connection waits for another's lock (and opening retries a locked database).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's `SQLITE_BUSY` (or one of its extended codes): another connection holds the lock.
fn sqlite_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}
