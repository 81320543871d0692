//! The supervisors' console on a live call (scope `supervise`; `monitor` alone gets 403):
//!
//! * `POST /v1/calls/{id}/coach` `{"text": …}`: an instruction for the AI's next answers
//!   (a system message in the model's context, never spoken as it is);
//! * `POST /v1/calls/{id}/pause` and `/resume`: the caller on music on hold, the AI neither
//!   listening nor answering, until resumed;
//! * `GET /v1/calls/{id}/listen`: a WebSocket of the call's audio (see
//!   [`crate::conversation::listen`]); the token may come as `?token=`, as for the feed.
//! * `GET /v1/calls/{id}/barge`: a WebSocket the supervisor's microphone goes through into the
//!   call (see [`crate::conversation::barge`]), one supervisor at a time. A route of its own
//!   rather than a mode of listen: listening is read-only and shared by any number of
//!   supervisors, barging is exclusive and writes into the call; its events and audit rows span
//!   exactly the time the microphone is live; and the page can listen without ever asking for
//!   the microphone.
//! * `POST /v1/calls/{id}/takeover` and `/giveback`: the AI silent and answering nothing while
//!   the supervisor talks with the caller (through a barge), then back with what the caller and
//!   the supervisor said meanwhile (the supervisor's words transcribed from the barge) in its
//!   history.
//! * `GET /v1/token`: the token's own name, organization and scopes (the page shows the
//!   console only to a token that can use it).
//!
//! Each action is an event on the feed with the token's name (`coached`, `ai_paused`,
//! `ai_resumed`, `supervisor_joined`, `supervisor_left`, `barge_started`, `barge_ended`,
//! `takeover_started`, `takeover_ended`) and a row of the audit log (the changes through the
//! audit middleware, listening and barging here). A call of another organization is
//! 404; a call this daemon does not hold is 409 naming the daemon that does, or saying that it
//! is not in conversation.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use super::extract::{Authorized, AuthorizedUpgrade, Supervise};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::conversation::barge::BargeError;
use crate::conversation::live::{AiState, LiveCall, LiveError};
use crate::store::EventKind;
use crate::store::audit::NewAudit;

/// `POST /v1/calls/{id}/coach`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoachRequest {
    pub text: String,
}

/// A live call as the console's actions leave it.
#[derive(Debug, Serialize)]
pub struct LiveState {
    pub call_id: String,
    /// `agi` or `stream`.
    pub media: &'static str,
    pub ai: AiState,
    /// Instructions waiting for the AI's next answer.
    pub pending_coaching: usize,
    /// Supervisors listening now.
    pub listeners: usize,
    /// The supervisor barging in now (the token's name), if any.
    pub barging: Option<String>,
    /// Who took the call over, while it is taken over.
    pub taken_over_by: Option<String>,
}

impl LiveState {
    async fn of(call: &LiveCall) -> LiveState {
        let listeners = call.listeners().await;
        LiveState {
            call_id: call.call_id.clone(),
            media: call.media,
            ai: call.state(),
            pending_coaching: call.pending_coaching(),
            listeners,
            barging: call.barging(),
            taken_over_by: (call.state() == AiState::TakenOver).then(|| call.taken_over_by()).flatten(),
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> ApiError {
        match e {
            LiveError::Invalid(message) => ApiError::bad_request(message),
            LiveError::Unavailable(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        }
    }
}

/// The organization's live call `id` on this daemon, or why not: 404 (no such call in the
/// organization), 409 (ended, not in conversation yet, or held by another daemon), 503 (this
/// daemon holds no conversations).
async fn live_call(state: &AppState, principal: &Principal, id: &str) -> Result<Arc<LiveCall>, ApiError> {
    let live = state.live().ok_or_else(|| ApiError::unavailable("this daemon runs no conversations"))?;
    if let Some(call) = live.get(principal.org_id, id) {
        return Ok(call);
    }
    let call = state
        .store()
        .call(principal.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no call {id:?} in this organization")))?;
    let conflict = |message: String| ApiError::new(StatusCode::CONFLICT, "not_here", message);
    if call.status.is_terminal() {
        return Err(conflict(format!("call {id:?} has ended ({})", call.status.as_str())));
    }
    match (&call.daemon_id, live.daemon()) {
        (Some(holder), Some(me)) if holder != me => Err(conflict(format!(
            "call {id:?} is held by daemon {holder}; send this request to that daemon (this is {me})"
        ))),
        _ => Err(conflict(format!(
            "call {id:?} is not in conversation on this daemon (status {}): it may not be answered yet",
            call.status.as_str()
        ))),
    }
}

/// The token's name, for the events (its id when the name cannot be read).
async fn supervisor_name(state: &AppState, principal: &Principal) -> String {
    match state.store().token(&principal.token_id).await {
        Ok(Some(token)) if !token.name.is_empty() => token.name,
        _ => principal.token_id.clone(),
    }
}

/// Publishes a supervisor's event on the call; a failure is logged (the action stands).
async fn publish(state: &AppState, principal: &Principal, call_id: &str, kind: EventKind, mut data: serde_json::Value) {
    data["supervisor"] = serde_json::json!(supervisor_name(state, principal).await);
    data["token_id"] = serde_json::json!(principal.token_id);
    match state.store().supervisor_event(principal.org_id, call_id, kind, data).await {
        Ok(_) => state.inner.hub.wake(),
        Err(e) => tracing::warn!(call_id, kind = kind.as_str(), "cannot store the supervisor's event: {e}"),
    }
}

/// `POST /v1/calls/{id}/coach`.
pub async fn coach(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Authorized<Supervise>,
    body: Result<Json<CoachRequest>, JsonRejection>,
) -> Result<Json<LiveState>, ApiError> {
    let Json(request) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON body such as {{\"text\": \"offer the annual plan\"}}: {}",
            e.body_text()
        ))
    })?;
    let call = live_call(&state, &principal, &id).await?;
    call.coach(&request.text)?;
    publish(&state, &principal, &id, EventKind::Coached, serde_json::json!({"text": request.text.trim()})).await;
    Ok(Json(LiveState::of(&call).await))
}

/// Moves the AI of the organization's live call `id` from one state to another: `change`
/// makes the move (given the token's name) and says whether the state changed; only a change
/// is an event (`kind`), so a repeated request publishes nothing.
async fn transition(
    state: &AppState,
    principal: &Principal,
    id: &str,
    kind: EventKind,
    change: impl FnOnce(&LiveCall, &str) -> bool,
) -> Result<Json<LiveState>, ApiError> {
    let call = live_call(state, principal, id).await?;
    let name = supervisor_name(state, principal).await;
    if change(&call, &name) {
        publish(state, principal, id, kind, serde_json::json!({})).await;
    }
    Ok(Json(LiveState::of(&call).await))
}

/// `POST /v1/calls/{id}/pause`: an event only when the AI was not paused already.
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Authorized<Supervise>,
) -> Result<Json<LiveState>, ApiError> {
    transition(&state, &principal, &id, EventKind::AiPaused, |call, _| call.pause()).await
}

/// `POST /v1/calls/{id}/resume`: an event only when the AI was paused.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Authorized<Supervise>,
) -> Result<Json<LiveState>, ApiError> {
    transition(&state, &principal, &id, EventKind::AiResumed, |call, _| call.resume()).await
}

/// `POST /v1/calls/{id}/takeover`: an event only when the call was not taken over already.
/// The AI goes silent at once while it listens, at the end of its answer while it speaks.
pub async fn takeover(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Authorized<Supervise>,
) -> Result<Json<LiveState>, ApiError> {
    transition(&state, &principal, &id, EventKind::TakeoverStarted, |call, name| call.take_over(name)).await
}

/// `POST /v1/calls/{id}/giveback`: an event only when the call was taken over.
pub async fn giveback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Authorized<Supervise>,
) -> Result<Json<LiveState>, ApiError> {
    transition(&state, &principal, &id, EventKind::TakeoverEnded, |call, _| call.give_back()).await
}

/// `GET /v1/token`.
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub token_id: String,
    pub name: String,
    /// The organization's slug.
    pub org: String,
    pub scopes: Vec<&'static str>,
}

/// `GET /v1/token`: what the token itself is (any token with `monitor`, as the page needs).
pub async fn token_info(
    State(state): State<AppState>,
    principal: Authorized<super::extract::Monitor>,
) -> Json<TokenInfo> {
    Json(TokenInfo {
        token_id: principal.token_id.clone(),
        name: supervisor_name(&state, &principal).await,
        org: principal.org_slug.clone(),
        scopes: principal.scopes.iter().map(|s| s.as_str()).collect(),
    })
}

/// `GET /v1/calls/{id}/barge`: the barge (snoop, bridge, media channel) is set up before the
/// 101, so a call that cannot be barged in on gets an HTTP error naming the cause: 409 while
/// another supervisor barges.
pub async fn barge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: AuthorizedUpgrade<Supervise>,
    request: Request,
) -> Result<Response, ApiError> {
    let principal = principal.into_principal();
    let peer = request.extensions().get::<ConnectInfo<super::Peer>>().map(|c| c.0.0.to_string());
    let accept = super::upgrade::accept(request.headers())
        .map_err(|e| ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", e.to_string()))?;
    let call = live_call(&state, &principal, &id).await?;
    let live = state.live().ok_or_else(|| ApiError::unavailable("this daemon runs no conversations"))?;
    let setup = live.listen_setup().ok_or_else(|| {
        ApiError::unavailable("barging in needs ARI (ari.url): the supervisor's audio is whispered with an ARI snoop")
    })?;
    let name = supervisor_name(&state, &principal).await;
    let mut barge = crate::conversation::barge::barge(&call, setup, &name).await.map_err(|e| match e {
        BargeError::Busy(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        BargeError::Asterisk(m) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "asterisk", format!("cannot barge in on the call: {m}"))
        }
    })?;
    audit_at(&state, &principal, "call.barge_started", &id, "barge", peer.as_deref(), serde_json::json!({})).await;
    publish(&state, &principal, &id, EventKind::BargeStarted, serde_json::json!({})).await;
    let upgrade = hyper::upgrade::on(request);
    let shutdown = state.inner.shutdown.clone();
    tokio::spawn(async move {
        let why = match upgrade.await {
            Ok(upgraded) => {
                let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(crate::conversation::barge::socket_config()),
                )
                .await;
                crate::conversation::barge::relay(&mut socket, &mut barge, &call, &shutdown).await
            }
            Err(e) => format!("the WebSocket upgrade did not complete: {e}"),
        };
        drop(barge);
        audit_at(
            &state,
            &principal,
            "call.barge_ended",
            &id,
            "barge",
            peer.as_deref(),
            serde_json::json!({"reason": why}),
        )
        .await;
        publish(&state, &principal, &id, EventKind::BargeEnded, serde_json::json!({"reason": why})).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .map_err(ApiError::internal)
}

/// `GET /v1/calls/{id}/listen`: the tap is set up before the 101, so a call that cannot be
/// listened to gets an HTTP error naming the cause.
pub async fn listen(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: AuthorizedUpgrade<Supervise>,
    request: Request,
) -> Result<Response, ApiError> {
    let principal = principal.into_principal();
    let peer = request.extensions().get::<ConnectInfo<super::Peer>>().map(|c| c.0.0.to_string());
    let accept = super::upgrade::accept(request.headers())
        .map_err(|e| ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", e.to_string()))?;
    let call = live_call(&state, &principal, &id).await?;
    let live = state.live().ok_or_else(|| ApiError::unavailable("this daemon runs no conversations"))?;
    let setup = live.listen_setup().ok_or_else(|| {
        ApiError::unavailable("listening needs ARI (ari.url): the call's audio is tapped with an ARI snoop")
    })?;
    let mut listener = crate::conversation::listen::listen(&call, setup)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "asterisk", format!("cannot listen to the call: {e}")))?;
    audit(&state, &principal, "call.listen_started", &id, peer.as_deref(), serde_json::json!({})).await;
    publish(
        &state,
        &principal,
        &id,
        EventKind::SupervisorJoined,
        serde_json::json!({"listeners": listener.tap.listeners()}),
    )
    .await;
    let upgrade = hyper::upgrade::on(request);
    let shutdown = state.inner.shutdown.clone();
    tokio::spawn(async move {
        let why = match upgrade.await {
            Ok(upgraded) => {
                let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                crate::conversation::listen::relay(&mut socket, &mut listener, &id, &shutdown).await
            }
            Err(e) => format!("the WebSocket upgrade did not complete: {e}"),
        };
        drop(listener);
        // The audit row first: whoever sees the event on the feed finds the row.
        audit(&state, &principal, "call.listen_ended", &id, peer.as_deref(), serde_json::json!({"reason": why})).await;
        publish(&state, &principal, &id, EventKind::SupervisorLeft, serde_json::json!({"reason": why})).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .map_err(ApiError::internal)
}

/// An audit row for listening (the REST changes are written by the audit middleware).
async fn audit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    call_id: &str,
    peer: Option<&str>,
    detail: serde_json::Value,
) {
    audit_at(state, principal, action, call_id, "listen", peer, detail).await;
}

/// An audit row for a WebSocket of the console (`route`: `listen` or `barge`).
async fn audit_at(
    state: &AppState,
    principal: &Principal,
    action: &str,
    call_id: &str,
    route: &str,
    peer: Option<&str>,
    detail: serde_json::Value,
) {
    let actor = format!("token:{} ({})", supervisor_name(state, principal).await, principal.token_id);
    let target = format!("/v1/calls/{call_id}/{route}");
    let entry = NewAudit {
        org_id: Some(principal.org_id),
        actor: &actor,
        via: "api",
        action,
        target: Some(&target),
        detail,
        peer,
    };
    if let Err(e) = state.store().audit(&entry).await {
        tracing::error!(%actor, action, call_id, "cannot write the audit log: {e}");
    }
}
