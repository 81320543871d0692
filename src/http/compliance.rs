//! Compliance over the REST API: a campaign's figures (`GET /v1/campaigns/{id}/stats`, scope
//! `monitor`), its compliance report (`GET /v1/campaigns/{id}/compliance`, scope `monitor`, JSON
//! or CSV), and the audit log (`GET /v1/audit`, scope `admin`). Scoped to the token's
//! organization: another organization's campaign is "not found".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::extract::{Admin, Authorized, Monitor};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::audit::NewAudit;
use crate::store::compliance::AbandonStats;

/// `GET /v1/campaigns/{id}/stats`: the campaign's figures ([`crate::store::stats`]: progress,
/// outcomes, answer rate, …) and, under `abandon`, compliance's.
#[derive(Debug, serde::Serialize)]
pub struct CampaignStats {
    #[serde(flatten)]
    pub figures: crate::store::stats::CampaignStats,
    /// The abandon rate over the rolling 30 days, its threshold and whether it slowed the campaign.
    pub abandon: AbandonStats,
}

/// `GET /v1/campaigns/{id}/stats`.
pub async fn campaign_stats(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    principal: Authorized<Monitor>,
) -> Result<Json<CampaignStats>, ApiError> {
    let not_found = || ApiError::not_found(format!("no campaign {id}"));
    let campaign = state.store().campaign(principal.org_id, id).await?.ok_or_else(not_found)?;
    let now = crate::store::now();
    let figures = state.store().campaign_stats(principal.org_id, id, now).await?.ok_or_else(not_found)?;
    let compliance = state.compliance();
    let policy = compliance.for_org(&principal.org_slug);
    let abandon = state.store().abandon_stats(&campaign, &policy.abandon, now).await?;
    Ok(Json(CampaignStats { figures, abandon }))
}

/// Where the [`Authorized`] extractor leaves the principal of a request the audit middleware
/// watches.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Principal>>>);

impl AuditSlot {
    pub fn set(&self, principal: &Principal) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(principal.clone());
    }

    fn take(&self) -> Option<Principal> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The audit log's name for a change, from the route's template.
fn action_name(method: &Method, route: &str, path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or_default();
    match (method.as_str(), route) {
        ("POST", "/v1/calls") => "call.placed".into(),
        ("POST", "/v1/campaigns") => "campaign.created".into(),
        ("POST", "/v1/campaigns/{id}/contacts") => "campaign.contacts_imported".into(),
        ("POST", "/v1/campaigns/{id}/{action}") => match last {
            "start" => "campaign.started".into(),
            "pause" => "campaign.paused".into(),
            "stop" => "campaign.stopped".into(),
            other => format!("campaign.{other}"),
        },
        ("POST", "/v1/calls/{id}/coach") => "call.coached".into(),
        ("POST", "/v1/calls/{id}/pause") => "call.ai_paused".into(),
        ("POST", "/v1/calls/{id}/resume") => "call.ai_resumed".into(),
        ("POST", "/v1/calls/{id}/takeover") => "call.takeover_started".into(),
        ("POST", "/v1/calls/{id}/giveback") => "call.takeover_ended".into(),
        ("POST", "/v1/agents") => "agent.created".into(),
        ("PUT", "/v1/agents/{name}") => "agent.changed".into(),
        ("POST", "/v1/agents/{name}/rollback") => "agent.rolled_back".into(),
        ("POST", "/v1/agents/{name}/default") => "agent.made_default".into(),
        ("POST", "/v1/dnc") => "dnc.added".into(),
        ("DELETE", "/v1/dnc/{number}") => "dnc.removed".into(),
        ("GET", "/v1/calls/{id}/recording") => "call.recording_downloaded".into(),
        (method, route) => format!("{method} {route}"),
    }
}

/// Reads of personal data the audit log records like changes: who downloaded a call's
/// recording, when, and which bytes.
const AUDITED_READS: &[&str] = &["/v1/calls/{id}/recording"];

/// Largest answer the audit reads for the id of what was created.
const AUDIT_BODY_LIMIT: usize = 1 << 20;

/// Writes every change a token makes (a `POST`, `PUT`, `PATCH` or `DELETE` under `/v1` by a
/// token that passed its scope check) to the audit log: the token's name and id, the action,
/// the path, the answer's status (and the id of a call or campaign it created), the peer's
/// address; and the reads of [`AUDITED_READS`] (with the `Range` asked for). A request refused
/// before its token was checked acted for nobody and is not logged.
pub async fn audit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route =
        request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| path.clone());
    let changes = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let reads_personal_data = method == Method::GET && AUDITED_READS.contains(&route.as_str());
    if !(changes || reads_personal_data) || !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    let range = request.headers().get(axum::http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
    let peer = request.extensions().get::<ConnectInfo<super::Peer>>().map(|c| c.0.0.to_string());
    let response = next.run(request).await;
    let Some(principal) = slot.take() else { return response };
    let action = action_name(&method, &route, &path);
    let status = response.status();
    let mut detail = serde_json::json!({"method": method.as_str(), "status": status.as_u16()});
    if let Some(range) = range {
        detail["range"] = serde_json::json!(range);
    }
    // The id of the call or campaign created: read from the answer, which is sent on as it was.
    let response = if status.is_success() && matches!(action.as_str(), "call.placed" | "campaign.created") {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, AUDIT_BODY_LIMIT).await {
            Ok(bytes) => {
                if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    detail["id"] = value["id"].clone();
                }
                Response::from_parts(parts, axum::body::Body::from(bytes))
            }
            Err(e) => {
                tracing::warn!("audit: cannot read the answer of {path}: {e}");
                Response::from_parts(parts, axum::body::Body::empty())
            }
        }
    } else {
        response
    };
    let name = match state.store().token(&principal.token_id).await {
        Ok(Some(token)) => token.name,
        _ => String::new(),
    };
    let actor = format!("token:{name} ({})", principal.token_id);
    let entry = NewAudit {
        org_id: Some(principal.org_id),
        actor: &actor,
        via: "api",
        action: &action,
        target: Some(&path),
        detail,
        peer: peer.as_deref(),
    };
    if let Err(e) = state.store().audit(&entry).await {
        tracing::error!(%actor, %action, %path, "cannot write the audit log: {e}");
    }
    response
}

/// `GET /v1/audit?after=N&limit=M` (scope `admin`): the organization's audit log, oldest first.
pub async fn audit_log(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    principal: Authorized<Admin>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let number = |key: &str, default: i64, max: i64| -> Result<i64, ApiError> {
        match query.get(key) {
            None => Ok(default),
            Some(text) => text.parse::<i64>().ok().filter(|n| (0..=max).contains(n)).ok_or_else(|| {
                ApiError::bad_request(format!("{key}: expected a number from 0 to {max}, got {text:?}"))
            }),
        }
    };
    let (after, limit) = (number("after", 0, i64::MAX)?, number("limit", 100, 1000)?);
    let entries = state.store().audit_log(Some(principal.org_id), after, limit).await?;
    let next = entries.last().map_or(after, |e| e.id);
    Ok(Json(serde_json::json!({ "entries": entries, "next": next })))
}

/// `GET /v1/campaigns/{id}/compliance[?format=csv]` (scope `monitor`): the campaign's
/// compliance report, JSON (default) or CSV.
pub async fn compliance_report(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
    principal: Authorized<Monitor>,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse as _;
    let csv = match query.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request(format!("format: expected json or csv, got {other:?}"))),
    };
    let campaign = state
        .store()
        .campaign(principal.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    let compliance = state.compliance();
    let report = crate::dialer::report::Report::for_campaign(
        state.store(),
        &compliance,
        &principal.org_slug,
        &campaign,
        crate::store::now(),
    )
    .await?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let text = report.to_csv().map_err(|e| ApiError::internal(format!("cannot write the report as CSV: {e}")))?;
    let disposition = format!("attachment; filename=\"campaign-{id}-compliance.csv\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}
