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
//! | `POST /v1/calls/{id}/coach`, `/pause`, `/resume`; `GET …/listen` | token | the supervisors' console on a live call (see `supervise.rs`, [`crate::conversation::live`]) |
//! | `GET /v1/stats` | token | the day's figures: calls, answer rate, outcomes, latency per stage |
//! | `/v1/agents…` | token | the organization's agents and their versions (see [`agents`]) |
//! | `GET /v1/feed` | token | WebSocket live feed (see [`crate::feed::subscriber`]) |
//! | `GET /v1/openapi.json` | none | the OpenAPI 3.1 document of every route (see [`openapi`]) |
//!
//! Every route is one entry of [`openapi::operations`], the table both [`router`] and the
//! OpenAPI document are built from.
//!
//! A token is sent as `Authorization: Bearer <token>` (the feed's WebSocket upgrade also takes
//! `?token=`, since a browser cannot set headers there, and no other route does); it selects the
//! only organization whose data the request can see, and its scopes what the request may do:
//! `monitor` for reads, `dial` for calls, campaigns and adding to the do-not-call list, `admin`
//! for removing from it and for changing agents. A token without the route's scope gets 403
//! naming the scope. The extractors of [`extract`] do this: a handler names its scope in its
//! signature (`caller: Authorized<Dial>`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::HttpConfig;
use crate::dialer::Dialer;
use crate::feed::hub::Hub;
use crate::feed::subscriber::SubscriberConfig;
use crate::store::Store;
use crate::supervise::Supervisor;

mod agents;
mod api;
mod compliance;
mod dialer;
pub mod error;
pub mod extract;
mod feed;
mod health;
pub mod monitor;
pub mod openapi;
pub mod recordings;
mod supervise;
pub mod upgrade;

pub use api::recording_url;

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
    feed: SubscriberConfig,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
    limits: HttpLimits,
    supervisor: Option<Supervisor>,
    /// Present when ARI is configured: outbound calls and campaigns.
    dialer: Option<Arc<Dialer>>,
    /// The organizations' compliance policies (`dialer.compliance`); unset: the shipped rules.
    compliance: std::sync::OnceLock<Arc<crate::dialer::compliance::Compliance>>,
    /// The calls in conversation on this daemon, for the supervisors' console.
    live: std::sync::OnceLock<crate::conversation::LiveCalls>,
}

/// Everything the HTTP side needs.
pub struct HttpParts {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub feed: SubscriberConfig,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Cancelled when the daemon stops: feed clients are closed with code 1001.
    pub shutdown: CancellationToken,
    pub limits: HttpLimits,
    /// The daemon's supervised tasks, whose failures `/readyz` reports.
    pub supervisor: Option<Supervisor>,
    /// The dialer, when ARI is configured: it enables the routes that place calls (without it
    /// they answer 503).
    pub dialer: Option<Arc<Dialer>>,
}

/// What one client may ask of the HTTP server (`[http]` in the config).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time allowed for one request until its response starts (408 after it). A WebSocket
    /// upgrade's response is the 101, so the feed itself is never cut.
    pub request_timeout: Duration,
    /// Largest body of any request but a contact import (413 beyond).
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/campaigns/{id}/contacts`.
    pub max_import_bytes: usize,
}

impl From<&HttpConfig> for HttpLimits {
    fn from(config: &HttpConfig) -> Self {
        HttpLimits {
            max_connections: config.max_connections,
            request_timeout: config.request_timeout.0,
            max_body_bytes: config.max_body_bytes,
            max_import_bytes: config.max_import_bytes,
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from(&HttpConfig::default())
    }
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
                limits: parts.limits,
                supervisor: parts.supervisor,
                dialer: parts.dialer,
                compliance: std::sync::OnceLock::new(),
                live: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Sets the organizations' compliance policies (once; later calls change nothing).
    pub fn set_compliance(&self, compliance: Arc<crate::dialer::compliance::Compliance>) {
        let _ = self.inner.compliance.set(compliance);
    }

    /// Sets the live calls the supervisors' console acts on (once; later calls change
    /// nothing). Without them its routes answer 503.
    pub fn set_live_calls(&self, live: crate::conversation::LiveCalls) {
        let _ = self.inner.live.set(live);
    }

    /// The live calls, when this daemon runs conversations.
    pub fn live(&self) -> Option<&crate::conversation::LiveCalls> {
        self.inner.live.get()
    }

    /// The organizations' compliance policies.
    pub fn compliance(&self) -> Arc<crate::dialer::compliance::Compliance> {
        self.inner.compliance.get_or_init(Default::default).clone()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The dialer, when ARI is configured.
    pub fn dialer(&self) -> Option<&Arc<Dialer>> {
        self.inner.dialer.as_ref()
    }
}

/// The router: exactly the routes of [`openapi::operations`], each with its body limit. Add a
/// route there, never here, so that `/v1/openapi.json` describes every route there is.
pub fn router(state: AppState) -> Router {
    let limits = state.inner.limits.clone();
    let mut router = Router::new();
    for operation in openapi::operations() {
        let max = match operation.limit {
            openapi::BodyLimit::Default => limits.max_body_bytes,
            openapi::BodyLimit::Import => limits.max_import_bytes,
        };
        let handler = operation
            .handler
            .layer::<_, std::convert::Infallible>(tower_http::limit::RequestBodyLimitLayer::new(max))
            .layer(axum::extract::DefaultBodyLimit::max(max));
        // Several methods on one path merge into one route.
        router = router.route(operation.path, handler);
    }
    router
        // Every change a token makes goes to the audit log (after routing: the route's template).
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), compliance::audit))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(limits.request_timeout, time_limit))
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// `http.request_timeout`: a request whose response has not started in time gets 408 and its
/// handler is dropped. The feed's response is the 101 of its upgrade, sent at once.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {limit:?} (http.request_timeout)"),
        )
        .into_response(),
    }
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
    let listener = CappedListener::new(listener, state.inner.limits.max_connections);
    let app = router(state);
    // The peer's address, for the audit log.
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            shutdown.cancel();
            hub.shutdown();
            // Give feed clients a moment to receive their close frames.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await
}

/// The address of a request's peer (for the audit log).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CappedListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, CappedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A TCP listener that holds at most `http.max_connections` connections open: it accepts the
/// next one only when one has closed (the rest wait in the kernel's backlog). Each connection
/// keeps its permit for its whole life, a feed WebSocket's included.
struct CappedListener {
    inner: TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
    warned: bool,
}

impl CappedListener {
    fn new(inner: TcpListener, max: usize) -> Self {
        CappedListener { inner, permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))), warned: false }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Capped;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Capped, std::net::SocketAddr) {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !self.warned {
                    tracing::warn!("http.max_connections reached: new HTTP connections wait until one closes");
                    self.warned = true;
                }
                self.permits.clone().acquire_owned().await.expect("the connection semaphore is never closed")
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    // Feed events are small writes: without TCP_NODELAY, Nagle holds each one until
                    // the previous is acknowledged, which a delayed ACK stretches to tens of ms.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY on an HTTP connection: {e}");
                    }
                    return (Capped { tcp, _permit: permit }, addr);
                }
                // Out of file descriptors and the like: wait, as axum's own listener does.
                Err(e) => {
                    tracing::warn!("cannot accept an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its place under the cap.
struct Capped {
    tcp: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
