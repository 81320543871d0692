//! `GET /v1/feed`: authenticates, then upgrades to the live feed WebSocket.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::extract::{AuthorizedUpgrade, Monitor};
use super::{ApiError, AppState};
use crate::feed::Filter;
use crate::feed::subscriber;

/// `GET /v1/feed[?since=<id>][&call_id=…][&campaign=…]`. Refuses a missing, wrong or revoked
/// token with 401 before the upgrade.
pub async fn feed(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    principal: AuthorizedUpgrade<Monitor>,
    request: Request,
) -> Result<Response, ApiError> {
    let principal = principal.into_principal();
    let accept = super::upgrade::accept(request.headers())
        .map_err(|e| ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", e.to_string()))?;
    let since = match query.get("since") {
        Some(text) => Some(text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "since: expected the id of the last event received (0 for everything), got {text:?}"
            ))
        })?),
        None => None,
    };
    let campaign = match query.get("campaign") {
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("campaign: expected a campaign id, got {text:?}")))?,
        ),
        None => None,
    };
    let inner = state.inner.clone();
    let filter = Filter { call_id: query.get("call_id").cloned(), campaign, types: None };
    // Subscribed before the 101 goes out: nothing stored after the client sees it is missed.
    let (start, subscription) = subscriber::start(
        &inner.hub,
        &inner.store,
        principal.org_id,
        principal.org_slug,
        since,
        filter,
        inner.feed.queue,
    )
    .await
    .map_err(ApiError::unavailable)?;
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                subscriber::serve(
                    TokioIo::new(upgraded),
                    start,
                    subscription,
                    inner.store.clone(),
                    inner.feed.clone(),
                    inner.shutdown.clone(),
                )
                .await;
            }
            Err(e) => tracing::debug!("feed: the WebSocket upgrade did not complete: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .map_err(ApiError::internal)
}
