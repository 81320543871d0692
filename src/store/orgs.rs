//! Organizations and their API tokens. A token's secret is stored only as a hash.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

/// An organization: the unit that owns calls, campaigns, contacts, tokens and a DNC list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A token as stored: everything but the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub org_id: i64,
    pub org_slug: String,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: String,
    /// What the token may do: `monitor`, `dial`, `admin`.
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn org_from(row: &impl RowExt) -> Result<Org> {
    Ok(Org {
        id: row.int("id")?,
        slug: row.text("slug")?,
        name: row.text("name")?,
        created_at: row.time("created_at")?,
    })
}

fn token_from(row: &impl RowExt) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.text("id")?,
        org_id: row.int("org_id")?,
        org_slug: row.text("slug")?,
        name: row.text("name")?,
        secret_hash: row.text("secret_hash")?,
        scopes: row.text("scopes")?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        created_at: row.time("created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
        revoked_at: row.opt_time("revoked_at")?,
    })
}

/// Checks an organization slug: lower-case letters, digits and `-`, 1 to 63 characters,
/// starting with a letter or digit. Slugs appear in URLs and dialplans.
pub fn validate_slug(slug: &str) -> Result<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "organization slug {slug:?}: expected 1 to 63 lower-case letters, digits or '-', not starting with '-'"
        )))
    }
}

const TOKEN_COLUMNS: &str = "SELECT t.id, t.org_id, o.slug, t.name, t.secret_hash, t.scopes, t.created_at, t.last_used_at, t.revoked_at \
     FROM api_tokens t JOIN organizations o ON o.id = t.org_id";

impl Store {
    /// Creates an organization. A slug that exists already is a [`StoreError::Conflict`].
    pub async fn create_org(&self, slug: &str, name: &str) -> Result<Org> {
        validate_slug(slug)?;
        let created_at = now();
        let result = write_tx!(self, tx => {
            let row = sqlx::query("INSERT INTO organizations (slug, name, created_at) VALUES ($1, $2, $3) RETURNING id, slug, name, created_at")
                .bind(slug)
                .bind(name)
                .bind(created_at)
                .fetch_one(&mut *tx)
                .await;
            match row {
                Ok(row) => org_from(&row)?,
                Err(e) => {
                    return Err(match StoreError::from(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!("organization {slug:?} already exists")),
                        other => other,
                    })
                }
            }
        });
        Ok(result)
    }

    /// The organization with this slug.
    pub async fn org_by_slug(&self, slug: &str) -> Result<Option<Org>> {
        with_pool!(self, pool => {
            let row = sqlx::query("SELECT id, slug, name, created_at FROM organizations WHERE slug = $1").bind(slug).fetch_optional(pool).await?;
            row.map(|r| org_from(&r)).transpose()
        })
    }

    /// The organization with this id.
    pub async fn org_by_id(&self, id: i64) -> Result<Option<Org>> {
        with_pool!(self, pool => {
            let row = sqlx::query("SELECT id, slug, name, created_at FROM organizations WHERE id = $1").bind(id).fetch_optional(pool).await?;
            row.map(|r| org_from(&r)).transpose()
        })
    }

    /// The organization with this slug, or a [`StoreError::NotFound`] naming it.
    pub async fn require_org(&self, slug: &str) -> Result<Org> {
        self.org_by_slug(slug).await?.ok_or_else(|| {
            StoreError::NotFound(format!("no organization {slug:?} (create it with `asterai org create {slug}`)"))
        })
    }

    /// Every organization, by slug.
    pub async fn list_orgs(&self) -> Result<Vec<Org>> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT id, slug, name, created_at FROM organizations ORDER BY slug").fetch_all(pool).await?;
            rows.iter().map(org_from).collect()
        })
    }

    /// Stores a token's id, the hash of its secret and its scopes (`monitor,dial`).
    pub async fn insert_token(
        &self,
        id: &str,
        org_id: i64,
        name: &str,
        secret_hash: &str,
        scopes: &str,
    ) -> Result<TokenRecord> {
        let created_at = now();
        write_tx!(self, tx => {
            sqlx::query("INSERT INTO api_tokens (id, org_id, name, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id)
                .bind(org_id)
                .bind(name)
                .bind(secret_hash)
                .bind(scopes)
                .bind(created_at)
                .execute(&mut *tx)
                .await?;
        });
        self.token(id).await?.ok_or_else(|| StoreError::Database("token vanished after insert".into()))
    }

    /// The token whose secret hashes to `secret_hash`, revoked or not: one indexed query.
    pub async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} WHERE t.secret_hash = $1")))
                .bind(secret_hash)
                .fetch_optional(pool)
                .await?;
            row.map(|r| token_from(&r)).transpose()
        })
    }

    /// Replaces a token's hash, if it is still `old` (another daemon may have done it first).
    pub async fn rehash_token(&self, id: &str, old: &str, new: &str) -> Result<bool> {
        let changed = write_tx!(self, tx => {
            sqlx::query("UPDATE api_tokens SET secret_hash = $1 WHERE id = $2 AND secret_hash = $3")
                .bind(new)
                .bind(id)
                .bind(old)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(changed > 0)
    }

    /// How many active tokens still have an Argon2 hash (made before the HMAC scheme).
    pub async fn legacy_tokens(&self) -> Result<i64> {
        with_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE secret_hash LIKE '$argon2%' AND revoked_at IS NULL")
                .fetch_one(pool)
                .await?;
            Ok(n)
        })
    }

    /// The server key `name`, stored as `fresh` if there is none yet. Daemons sharing the
    /// database race to store theirs; all of them read the one that won.
    pub async fn server_key(&self, name: &str, fresh: &str) -> Result<String> {
        let at = now();
        let value: String = write_tx!(self, tx => {
            sqlx::query("INSERT INTO server_keys (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(fresh)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1").bind(name).fetch_one(&mut *tx).await?
        });
        Ok(value)
    }

    /// A token by id, revoked or not.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} WHERE t.id = $1"))).bind(id).fetch_optional(pool).await?;
            row.map(|r| token_from(&r)).transpose()
        })
    }

    /// An organization's tokens, newest first.
    pub async fn list_tokens(&self, org_id: i64) -> Result<Vec<TokenRecord>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} WHERE t.org_id = $1 ORDER BY t.created_at DESC, t.id")))
                .bind(org_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(token_from).collect()
        })
    }

    /// Revokes a token. Returns false when it was already revoked; an unknown id is
    /// [`StoreError::NotFound`].
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let at = now();
        let changed = write_tx!(self, tx => {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL").bind(at).bind(id).execute(&mut *tx).await?.rows_affected()
        });
        if changed == 0 && self.token(id).await?.is_none() {
            return Err(StoreError::NotFound(format!("no token {id:?}")));
        }
        Ok(changed > 0)
    }

    /// Records that a token was used (at most a few times a minute, by the caller's choice).
    pub async fn touch_token(&self, id: &str) -> Result<()> {
        let at = now();
        write_tx!(self, tx => {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2").bind(at).bind(id).execute(&mut *tx).await?;
        });
        Ok(())
    }
}
