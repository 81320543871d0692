//! `/healthz`, `/readyz` and `/metrics`: unauthenticated, for load balancers and Prometheus.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, AppState};

/// The process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// The database answers within two seconds and every supervised task runs (none failed in
/// the last minute; see [`crate::supervise`]).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store();
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("readiness: the database does not answer: {e}");
            return Err(ApiError::unavailable("database unreachable"));
        }
        Err(_) => return Err(ApiError::unavailable("database did not answer within 2s")),
    }
    let tasks = state.inner.supervisor.as_ref().map(|s| (s.failing(), s.health()));
    if let Some((failing, _)) = &tasks
        && !failing.is_empty()
    {
        return Err(ApiError::unavailable(format!("not ready, failing: {}", failing.join("; "))));
    }
    let tasks = tasks.map(|(_, health)| serde_json::to_value(health).unwrap_or_default());
    Ok(Json(json!({"status": "ready", "database": store.backend(), "tasks": tasks})))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.inner.metrics.as_ref().map(|handle| handle.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
