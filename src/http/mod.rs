//! The HTTP listener (default 127.0.0.1:4574): health, readiness, metrics, the REST API and the
//! supervisors' live feed.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /` | none | the supervisors' monitor page (see [`monitor`]) |
//! | `GET /healthz` | none | the process is up |
//! | `GET /readyz` | none | 200 when the database answers, 503 while it does not |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /v1/calls` | token | the organization's calls, filtered and paginated |
//! | `POST /v1/calls` | token | places an outbound call (see [`dialer`]) |
//! | `/v1/campaigns…`, `/v1/dnc…` | token | campaigns and the do-not-call list (see [`dialer`]) |
//! | `GET /v1/calls/{id}` | token | one call with its turns and transcript |
//! | `GET /v1/feed` | token | WebSocket live feed (see [`crate::feed::client`]) |
//!
//! A token is sent as `Authorization: Bearer <token>`, or `?token=` where a browser cannot set
//! headers; it selects the only organization whose data the request can see.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::feed::client::ClientConfig;
use crate::feed::hub::Hub;
use crate::store::Store;

mod api;
mod dialer;
pub mod error;
mod feed;
mod health;
pub mod monitor;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

struct AppInner {
    store: Store,
    auth: Authenticator,
    hub: Arc<Hub>,
    feed: ClientConfig,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
    /// Set when ARI is configured: outbound calls and campaigns.
    dialer: std::sync::OnceLock<Arc<crate::dialer::Dialer>>,
}

/// Everything the HTTP side needs.
pub struct HttpParts {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub feed: ClientConfig,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Cancelled when the daemon stops: feed clients are closed with code 1001.
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(parts: HttpParts) -> Self {
        let auth = Authenticator::new(parts.store.clone());
        AppState {
            inner: Arc::new(AppInner {
                store: parts.store,
                auth,
                hub: parts.hub,
                feed: parts.feed,
                metrics: parts.metrics,
                shutdown: parts.shutdown,
                dialer: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Enables the routes that place calls. Only the first dialer set is kept.
    pub fn set_dialer(&self, dialer: Arc<crate::dialer::Dialer>) {
        let _ = self.inner.dialer.set(dialer);
    }

    /// The dialer, when ARI is configured.
    pub fn dialer(&self) -> Option<&Arc<crate::dialer::Dialer>> {
        self.inner.dialer.get()
    }

    /// The caller's organization, from `Authorization: Bearer` or `?token=`.
    pub async fn principal(&self, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Principal, ApiError> {
        let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = match header {
            Some(value) => {
                value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(AuthError::Malformed)?
            }
            None => query.get("token").map(String::as_str).ok_or(AuthError::Missing)?,
        };
        Ok(self.inner.auth.authenticate(token).await?)
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(monitor::index))
        .route("/monitor.js", get(monitor::script))
        .route("/monitor.css", get(monitor::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/calls", get(api::list_calls).post(dialer::place_call))
        .route("/v1/calls/{id}", get(api::get_call))
        .route("/v1/campaigns", get(dialer::list_campaigns).post(dialer::create_campaign))
        .route("/v1/campaigns/{id}", get(dialer::get_campaign))
        .route(
            "/v1/campaigns/{id}/contacts",
            axum::routing::post(dialer::import_contacts).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/v1/campaigns/{id}/{action}", axum::routing::post(dialer::campaign_action))
        .route("/v1/dnc", get(dialer::list_dnc).post(dialer::add_dnc))
        .route("/v1/dnc/{number}", axum::routing::delete(dialer::remove_dnc))
        .route("/v1/feed", get(feed::feed))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", request.method(), request.uri().path()))
}

/// Counts and times every request, by route pattern (never the raw URI, which may hold a token).
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    metrics::counter!("asterai_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!("asterai_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, %status, ?elapsed, "HTTP request");
    response
}

/// Serves until `stop` is cancelled, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, state: AppState, stop: CancellationToken) -> std::io::Result<()> {
    let shutdown = state.inner.shutdown.clone();
    let hub = state.inner.hub.clone();
    let app = router(state);
    // Feed events are small writes: without TCP_NODELAY, Nagle holds each one until the
    // previous is acknowledged, which a delayed ACK stretches to tens of milliseconds.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on an HTTP connection: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            shutdown.cancel();
            hub.shutdown();
            // Give feed clients a moment to receive their close frames.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await
}
