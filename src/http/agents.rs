//! The organization's agents over the REST API (see [`crate::agent`]). Reading takes the
//! `monitor` scope, changing takes `admin`; another organization's agent is "not found".
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /v1/agents` | monitor | the agents, each at its current version |
//! | `POST /v1/agents[?default=true]` | admin | creates one from a definition (JSON, with `name`): 201 |
//! | `GET /v1/agents/{name}` | monitor | one agent at its current version |
//! | `PUT /v1/agents/{name}[?default=true]` | admin | replaces its definition: a new version |
//! | `GET /v1/agents/{name}/versions` | monitor | every version, oldest first |
//! | `GET /v1/agents/{name}/versions/{version}` | monitor | one version |
//! | `POST /v1/agents/{name}/rollback` | admin | `{"version": 2}`: a new version copying version 2 |
//! | `POST /v1/agents/{name}/default` | admin | makes it the organization's default agent |
//!
//! A definition with an unknown key, an unknown template variable or a provider key in clear
//! is refused with 400 naming the key; nothing is saved.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::extract::{Admin, Authorized, Monitor};
use super::{ApiError, AppState};
use crate::agent::{self, AgentError, AgentSpec};
use crate::store::Agent;

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Invalid(message) => ApiError::bad_request(message),
            AgentError::Store(store) => store.into(),
        }
    }
}

/// `?default=true` on create and update.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    default: bool,
}

/// `POST /v1/agents/{name}/rollback` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    version: i32,
}

fn definition(body: &[u8]) -> Result<AgentSpec, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("expected a JSON agent definition in UTF-8"))?;
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::bad_request(
            "expected a JSON agent definition such as {\"name\": \"sales\", \"greeting_inbound\": \"Hello!\"}",
        ));
    }
    AgentSpec::parse(text).map_err(ApiError::bad_request)
}

async fn agent_of(state: &AppState, org_id: i64, name: &str) -> Result<Agent, ApiError> {
    state.store().agent(org_id, name).await?.ok_or_else(|| ApiError::not_found(format!("no agent {name:?}")))
}

/// `GET /v1/agents`.
pub async fn list(
    State(state): State<AppState>,
    caller: Authorized<Monitor>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agents = state.store().list_agents(caller.org_id).await?;
    Ok(Json(serde_json::json!({ "agents": agents })))
}

/// `POST /v1/agents`.
pub async fn create(
    State(state): State<AppState>,
    caller: Authorized<Admin>,
    Query(options): Query<Options>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    let spec = definition(&body)?;
    let agent = agent::create(state.store(), caller.org_id, &spec, options.default).await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// `GET /v1/agents/{name}`.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Authorized<Monitor>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(agent_of(&state, caller.org_id, &name).await?))
}

/// `PUT /v1/agents/{name}`.
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Authorized<Admin>,
    Query(options): Query<Options>,
    body: axum::body::Bytes,
) -> Result<Json<Agent>, ApiError> {
    let spec = definition(&body)?;
    Ok(Json(agent::update(state.store(), caller.org_id, &name, &spec, options.default).await?))
}

/// `GET /v1/agents/{name}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Authorized<Monitor>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let versions = state.store().agent_versions(caller.org_id, &name).await?;
    Ok(Json(serde_json::json!({ "agent": name, "versions": versions })))
}

/// `GET /v1/agents/{name}/versions/{version}`.
pub async fn version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, i32)>,
    caller: Authorized<Monitor>,
) -> Result<Json<crate::store::AgentVersion>, ApiError> {
    let found = state.store().agent_version(caller.org_id, &name, version).await?;
    found.map(Json).ok_or_else(|| ApiError::not_found(format!("agent {name:?} has no version {version}")))
}

/// `POST /v1/agents/{name}/rollback` with `{"version": 2}`.
pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Authorized<Admin>,
    body: Result<Json<Rollback>, JsonRejection>,
) -> Result<Json<Agent>, ApiError> {
    let Json(rollback) = body.map_err(|e| {
        ApiError::bad_request(format!("expected a JSON body such as {{\"version\": 2}}: {}", e.body_text()))
    })?;
    Ok(Json(state.store().rollback_agent(caller.org_id, &name, rollback.version).await?))
}

/// `POST /v1/agents/{name}/default`.
pub async fn make_default(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Authorized<Admin>,
) -> Result<Json<Agent>, ApiError> {
    state.store().set_default_agent(caller.org_id, Some(&name)).await?;
    Ok(Json(agent_of(&state, caller.org_id, &name).await?))
}
