//! Outbound calls, campaigns and the do-not-call list over the REST API. Scoped to the token's
//! organization like every `/v1` route: another organization's campaign is "not found".
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/calls` | places one call (below) |
//! | `GET /v1/campaigns`, `POST /v1/campaigns` | lists campaigns; creates one (`{"name", "settings"}`) |
//! | `GET /v1/campaigns/{id}` | a campaign with its contacts and calls counted by status |
//! | `GET /v1/campaigns/{id}/stats` | its progress and results (see [`crate::store::stats`]), with compliance's `abandon` ([`super::compliance`]) |
//! | `POST /v1/campaigns/{id}/contacts` | imports a CSV body; answers the report |
//! | `POST /v1/campaigns/{id}/start`, `/pause`, `/stop` | changes its state |
//! | `GET /v1/dnc`, `POST /v1/dnc`, `DELETE /v1/dnc/{number}` | the do-not-call list |
//!
//! `POST /v1/calls`:
//!
//! | answer | when |
//! |---|---|
//! | 201 with the call | the call is stored and Asterisk took the originate (its status follows on the feed) |
//! | 400 `bad_request` | not E.164, a malformed body, or a contact with another number; nothing dialed |
//! | 404 `not_found` | an unknown campaign or contact; nothing dialed |
//! | 409 `conflict` | the number is on the organization's do-not-call list; nothing dialed |
//! | 502 `bad_gateway` | Asterisk refused the originate; the call is stored as `failed` with its message |
//! | 503 `unavailable` | ARI is not configured or not connected, or Asterisk did not answer |

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::extract::{Admin, Authorized, Dial, Monitor};
use super::{ApiError, AppState};
use crate::dialer::import::{ImportError, ImportReport};
use crate::dialer::{CallRequest, CampaignSettings, DialError};

impl From<DialError> for ApiError {
    fn from(e: DialError) -> Self {
        let message = e.to_string();
        match e {
            DialError::InvalidNumber(_) | DialError::Invalid(_) => ApiError::bad_request(message),
            DialError::DoNotCall { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            DialError::NotFound(_) => ApiError::not_found(message),
            DialError::Refused { .. } => ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", message),
            DialError::Uncertain { .. } | DialError::Unavailable(_) => ApiError::unavailable(message),
            DialError::Store(store) => store.into(),
        }
    }
}

/// `POST /v1/calls` with `{"to": "+15551230000", "campaign": 3, "contact": 17}`.
pub async fn place_call(
    State(state): State<AppState>,
    principal: Authorized<Dial>,
    body: Result<Json<CallRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(request) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON body such as {{\"to\": \"+15551230000\", \"campaign\": 3, \"contact\": 17}}: {}",
            e.body_text()
        ))
    })?;
    let dialer = state
        .dialer()
        .ok_or_else(|| ApiError::unavailable("this daemon cannot place calls: ARI is not configured (ari.url)"))?;
    let org = state.store().require_org(&principal.org_slug).await?;
    let call = dialer.place_call(&org, &request).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(&call).unwrap_or_default())))
}

/// `POST /v1/campaigns` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    name: String,
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>, example: &str) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|e| ApiError::bad_request(format!("expected a JSON body such as {example}: {}", e.body_text())))
}

async fn campaign_of(state: &AppState, org_id: i64, id: i64) -> Result<crate::store::campaigns::Campaign, ApiError> {
    state.store().campaign(org_id, id).await?.ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))
}

async fn campaign_body(
    state: &AppState,
    campaign: &crate::store::campaigns::Campaign,
) -> Result<serde_json::Value, ApiError> {
    let mut body = serde_json::to_value(campaign).unwrap_or_default();
    body["contacts"] =
        serde_json::to_value(state.store().campaign_contact_counts(campaign.id).await?).unwrap_or_default();
    body["calls"] = serde_json::to_value(state.store().campaign_call_counts(campaign.id).await?).unwrap_or_default();
    Ok(body)
}

/// `GET /v1/campaigns`.
pub async fn list_campaigns(
    State(state): State<AppState>,
    principal: Authorized<Monitor>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let campaigns = state.store().list_campaigns(principal.org_id).await?;
    Ok(Json(serde_json::json!({ "campaigns": campaigns })))
}

/// `POST /v1/campaigns` with `{"name": "spring", "settings": {…}}`: a draft campaign.
pub async fn create_campaign(
    State(state): State<AppState>,
    principal: Authorized<Dial>,
    body: Result<Json<NewCampaign>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let new = json_body(body, r#"{"name": "spring", "settings": {"max_concurrent": 5}}"#)?;
    let settings = CampaignSettings::from_json(&new.settings.unwrap_or_else(|| serde_json::json!({})))
        .map_err(ApiError::bad_request)?;
    if let Some(agent) = &settings.agent
        && state.store().agent(principal.org_id, agent).await?.is_none()
    {
        return Err(ApiError::bad_request(format!("campaign settings: agent: no agent {agent:?}")));
    }
    let campaign = state.store().create_campaign(principal.org_id, &new.name, &settings.to_json()).await?;
    Ok((StatusCode::CREATED, Json(campaign_body(&state, &campaign).await?)))
}

/// `GET /v1/campaigns/{id}`: the campaign with its contacts and calls counted by status.
pub async fn get_campaign(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    principal: Authorized<Monitor>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let campaign = campaign_of(&state, principal.org_id, id).await?;
    Ok(Json(campaign_body(&state, &campaign).await?))
}

/// `POST /v1/campaigns/{id}/{start|pause|stop}`.
pub async fn campaign_action(
    State(state): State<AppState>,
    Path((id, action)): Path<(i64, String)>,
    principal: Authorized<Dial>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = match action.as_str() {
        "start" => "running",
        "pause" => "paused",
        "stop" => "stopped",
        other => {
            return Err(ApiError::not_found(format!("no campaign action {other:?}; expected start, pause or stop")));
        }
    };
    let campaign = campaign_of(&state, principal.org_id, id).await?;
    if status == "running" {
        CampaignSettings::from_json(&campaign.settings).map_err(ApiError::bad_request)?;
    }
    let campaign = state.store().set_campaign_status(principal.org_id, id, status).await?;
    Ok(Json(campaign_body(&state, &campaign).await?))
}

/// `POST /v1/campaigns/{id}/contacts` with a CSV body: the import report (rows, imported,
/// duplicates and rejected rows with their line numbers).
pub async fn import_contacts(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    principal: Authorized<Dial>,
    body: axum::body::Bytes,
) -> Result<Json<ImportReport>, ApiError> {
    let campaign = campaign_of(&state, principal.org_id, id).await?;
    let report = crate::dialer::import::import(state.store(), principal.org_id, campaign.id, &body, &mut |_, _| {})
        .await
        .map_err(|e| match e {
            ImportError::File(message) => ApiError::bad_request(message),
            ImportError::Store(store) => store.into(),
        })?;
    Ok(Json(report))
}

/// `POST /v1/dnc` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDnc {
    number: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `GET /v1/dnc`: the organization's do-not-call list.
pub async fn list_dnc(
    State(state): State<AppState>,
    principal: Authorized<Dial>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let numbers = state.store().list_dnc(principal.org_id).await?;
    Ok(Json(serde_json::json!({ "numbers": numbers })))
}

/// `POST /v1/dnc` with `{"number": "+15551230000", "reason": "…"}`: 201 when added, 200 when
/// it was on the list already.
pub async fn add_dnc(
    State(state): State<AppState>,
    principal: Authorized<Dial>,
    body: Result<Json<NewDnc>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let new = json_body(body, r#"{"number": "+15551230000", "reason": "asked by email"}"#)?;
    let number = crate::phone::parse(&new.number).map_err(ApiError::bad_request)?;
    let added = state.store().add_dnc(principal.org_id, &number, new.reason.as_deref(), "api").await?;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::json!({ "number": number, "added": added }))))
}

/// `DELETE /v1/dnc/{number}`: 204, or 404 when the number is not on the list.
pub async fn remove_dnc(
    State(state): State<AppState>,
    Path(number): Path<String>,
    principal: Authorized<Admin>,
) -> Result<StatusCode, ApiError> {
    if state.store().remove_dnc(principal.org_id, &number).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("{number} is not on the do-not-call list")))
    }
}
