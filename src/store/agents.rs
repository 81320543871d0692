//! Agents and their versions, per organization. A version is never changed: every change and
//! every rollback appends one, and the agent's `current_version` moves to it. The store keeps
//! each version's definition as JSON and knows nothing of its fields; [`crate::agent`] checks
//! them before anything is saved.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

/// An agent with its current version's definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub org_id: i64,
    pub name: String,
    /// The version calls use.
    pub version: i32,
    /// Whether it is the organization's default agent.
    pub default: bool,
    /// The current version's definition.
    pub spec: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One version of an agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentVersion {
    pub agent: String,
    pub version: i32,
    /// Why it exists: `created`, `edited`, `rollback to 2`.
    pub note: String,
    pub spec: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

const AGENT_COLUMNS: &str = "SELECT a.id, a.org_id, a.name, a.current_version, a.created_at, a.updated_at, v.spec, \
     CASE WHEN o.default_agent_id = a.id THEN 1 ELSE 0 END AS is_default \
     FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.current_version \
     JOIN organizations o ON o.id = a.org_id";

fn agent_from(row: &impl RowExt) -> Result<Agent> {
    Ok(Agent {
        id: row.int("id")?,
        org_id: row.int("org_id")?,
        name: row.text("name")?,
        version: row.int32("current_version")?,
        default: row.int32("is_default")? == 1,
        spec: row.json("spec")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn version_from(name: &str, row: &impl RowExt) -> Result<AgentVersion> {
    Ok(AgentVersion {
        agent: name.to_owned(),
        version: row.int32("version")?,
        note: row.text("note")?,
        spec: row.json("spec")?,
        created_at: row.time("created_at")?,
    })
}

fn no_agent(name: &str) -> StoreError {
    StoreError::NotFound(format!("no agent {name:?}"))
}

impl Store {
    /// Creates an agent at version 1. A name the organization uses already is a conflict.
    pub async fn create_agent(&self, org_id: i64, name: &str, spec: &serde_json::Value) -> Result<Agent> {
        let at = now();
        write_tx!(self, tx => {
            let row = sqlx::query(
                "INSERT INTO agents (org_id, name, current_version, created_at, updated_at) VALUES ($1, $2, 1, $3, $3) RETURNING id",
            )
            .bind(org_id)
            .bind(name)
            .bind(at)
            .fetch_one(&mut *tx)
            .await;
            let id: i64 = match row {
                Ok(row) => sqlx::Row::try_get(&row, "id")?,
                Err(e) => {
                    return Err(match StoreError::from(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!("agent {name:?} exists already")),
                        other => other,
                    });
                }
            };
            sqlx::query("INSERT INTO agent_versions (agent_id, version, spec, note, created_at) VALUES ($1, 1, $2, 'created', $3)")
                .bind(id)
                .bind(sqlx::types::Json(spec))
                .bind(at)
                .execute(&mut *tx)
                .await?;
        });
        self.agent(org_id, name).await?.ok_or_else(|| StoreError::Database("agent vanished".into()))
    }

    /// Appends a version with `spec` and makes it current.
    pub async fn update_agent(&self, org_id: i64, name: &str, spec: &serde_json::Value) -> Result<Agent> {
        self.append_version(org_id, name, spec, "edited").await
    }

    /// Appends a version that copies `version`'s definition, and makes it current: a rollback
    /// is a change like any other, so the history keeps what calls ran in between.
    pub async fn rollback_agent(&self, org_id: i64, name: &str, version: i32) -> Result<Agent> {
        let old = self
            .agent_version(org_id, name, version)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("agent {name:?} has no version {version}")))?;
        self.append_version(org_id, name, &old.spec, &format!("rollback to {version}")).await
    }

    async fn append_version(&self, org_id: i64, name: &str, spec: &serde_json::Value, note: &str) -> Result<Agent> {
        let at = now();
        write_tx!(self, tx => {
            // The increment takes the agent's row lock (PostgreSQL), so two concurrent changes
            // get two versions, one after the other.
            let row = sqlx::query(
                "UPDATE agents SET current_version = current_version + 1, updated_at = $1 WHERE org_id = $2 AND name = $3 RETURNING id, current_version",
            )
            .bind(at)
            .bind(org_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Err(no_agent(name)) };
            let (id, version): (i64, i32) = (sqlx::Row::try_get(&row, "id")?, sqlx::Row::try_get(&row, "current_version")?);
            sqlx::query("INSERT INTO agent_versions (agent_id, version, spec, note, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(version)
                .bind(sqlx::types::Json(spec))
                .bind(note)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        });
        self.agent(org_id, name).await?.ok_or_else(|| no_agent(name))
    }

    /// One agent of one organization, at its current version.
    pub async fn agent(&self, org_id: i64, name: &str) -> Result<Option<Agent>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{AGENT_COLUMNS} WHERE a.org_id = $1 AND a.name = $2")))
                .bind(org_id)
                .bind(name)
                .fetch_optional(pool)
                .await?;
            row.map(|r| agent_from(&r)).transpose()
        })
    }

    /// An organization's agents by name.
    pub async fn list_agents(&self, org_id: i64) -> Result<Vec<Agent>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{AGENT_COLUMNS} WHERE a.org_id = $1 ORDER BY a.name")))
                .bind(org_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(agent_from).collect()
        })
    }

    /// The organization's default agent, if it has one.
    pub async fn default_agent(&self, org_id: i64) -> Result<Option<Agent>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{AGENT_COLUMNS} WHERE a.org_id = $1 AND o.default_agent_id = a.id")))
                .bind(org_id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| agent_from(&r)).transpose()
        })
    }

    /// Makes `name` the organization's default agent (`None`: the built-in agent again).
    pub async fn set_default_agent(&self, org_id: i64, name: Option<&str>) -> Result<()> {
        write_tx!(self, tx => {
            let id: Option<i64> = match name {
                Some(name) => {
                    let row = sqlx::query("SELECT id FROM agents WHERE org_id = $1 AND name = $2")
                        .bind(org_id)
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(row) = row else { return Err(no_agent(name)) };
                    Some(sqlx::Row::try_get(&row, "id")?)
                }
                None => None,
            };
            sqlx::query("UPDATE organizations SET default_agent_id = $1 WHERE id = $2")
                .bind(id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// An agent's versions, oldest first.
    pub async fn agent_versions(&self, org_id: i64, name: &str) -> Result<Vec<AgentVersion>> {
        let rows = with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT v.version, v.note, v.spec, v.created_at FROM agent_versions v JOIN agents a ON a.id = v.agent_id \
                 WHERE a.org_id = $1 AND a.name = $2 ORDER BY v.version",
            )
            .bind(org_id)
            .bind(name)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| version_from(name, r)).collect::<Result<Vec<_>>>()?
        });
        if rows.is_empty() {
            return Err(no_agent(name));
        }
        Ok(rows)
    }

    /// One version of an agent.
    pub async fn agent_version(&self, org_id: i64, name: &str, version: i32) -> Result<Option<AgentVersion>> {
        with_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT v.version, v.note, v.spec, v.created_at FROM agent_versions v JOIN agents a ON a.id = v.agent_id \
                 WHERE a.org_id = $1 AND a.name = $2 AND v.version = $3",
            )
            .bind(org_id)
            .bind(name)
            .bind(version)
            .fetch_optional(pool)
            .await?;
            row.map(|r| version_from(name, &r)).transpose()
        })
    }

    /// Records the agent version a call runs (the organization's call only).
    pub async fn set_call_agent(&self, org_id: i64, call_id: &str, name: &str, version: i32) -> Result<()> {
        let changed = write_tx!(self, tx => {
            sqlx::query("UPDATE calls SET agent_name = $1, agent_version = $2 WHERE org_id = $3 AND id = $4")
                .bind(name)
                .bind(version)
                .bind(org_id)
                .bind(call_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no call {call_id}")));
        }
        Ok(())
    }
}
