//! [`ApiError`]: every HTTP error, as `{"error": {"code": "…", "message": "…"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

/// An error answer. `code` is stable and machine-readable; `message` is for people.
/// `reference`, on 500 and 503 answers whose cause stays in the daemon's log, finds that line.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub reference: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), reference: None }
    }

    /// A server-side failure whose `detail` (a database's error text, a path, a query) must not
    /// reach the client: it is logged with a reference, and the client gets `message` and the
    /// reference.
    pub fn hidden(status: StatusCode, code: &'static str, message: &str, detail: &str) -> Self {
        let reference: String = (0..4).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        tracing::error!(%reference, status = status.as_u16(), "HTTP request failed: {detail}");
        ApiError {
            status,
            code,
            message: format!("{message} (reference {reference} in the daemon's log)"),
            reference: Some(reference),
        }
    }

    /// 500 with the cause only in the log.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::hidden(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error", &detail.to_string())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.reference.is_none() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, "HTTP request failed: {}", self.message);
        }
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(reference) = self.reference {
            error["reference"] = json!(reference);
        }
        let body = Json(json!({ "error": error }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            // The driver's text can name hosts, tables and queries: it stays in the log.
            StoreError::Unavailable(m) => {
                ApiError::hidden(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "database unavailable", &m)
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(store) => store.into(),
            forbidden @ AuthError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", forbidden.to_string())
            }
            other => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", other.to_string()),
        }
    }
}
