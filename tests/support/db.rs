//! Databases for tests: SQLite in a temp file, or a fresh PostgreSQL database on the real server
//! (127.0.0.1:5432, user postgres, trust auth), dropped afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use asterai::store::{Store, StoreOptions};

/// The maintenance database the tests connect to first.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_PREFIX: &str = "asterai_t_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated database that disappears with this value.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let db = Self::empty(backend).await;
        db.store.migrate().await.expect("migrate");
        db
    }

    /// A database with no tables yet.
    pub async fn empty(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("asterai.db").display());
                let store = Store::connect(&options(&url)).await.expect("open sqlite");
                TestDb { store, url, backend, _dir: Some(dir), pg_name: None }
            }
            Backend::Postgres => {
                let name = create_pg_database().await;
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                let store = Store::connect(&options(&url)).await.expect("connect postgres");
                TestDb { store, url, backend, _dir: None, pg_name: Some(name) }
            }
        }
    }

    /// Another connection pool on the same database, as a second daemon would have.
    pub async fn second_store(&self) -> Store {
        Store::connect(&options(&self.url)).await.expect("second pool")
    }
}

pub fn options(url: &str) -> StoreOptions {
    StoreOptions { url: url.to_owned(), max_connections: 8, connect_timeout: Duration::from_secs(5) }
}

async fn admin() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(PG_ADMIN_URL)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test-deps starts it)")
}

/// Creates `asterai_t_<pid>_<n>`, first dropping databases left by test processes that died.
async fn create_pg_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    static CLEANED: std::sync::Once = std::sync::Once::new();
    let pool = admin().await;
    let mut clean = false;
    CLEANED.call_once(|| clean = true);
    if clean {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'asterai\\_t\\_%'")
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
        for name in names {
            let pid: Option<u32> = name.strip_prefix(PG_PREFIX).and_then(|rest| rest.split('_').next()?.parse().ok());
            if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&pool)
                    .await;
            }
        }
    }
    let name = format!("{PG_PREFIX}{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    name
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop runs outside async; use a small runtime on a thread of its own. The pool belongs to
        // the test's runtime, so it is not closed here: FORCE ends its connections.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let pool = admin().await;
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&pool)
                    .await;
                pool.close().await;
            });
        })
        .join();
    }
}

/// Defines one test per backend: `backend_tests! { async fn name(db) { … } }`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $db = $crate::support::db::TestDb::new($crate::support::db::Backend::Sqlite).await;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $db = $crate::support::db::TestDb::new($crate::support::db::Backend::Postgres).await;
                    $body
                }
            )*
        }
    };
}
