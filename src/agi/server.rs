//! The FastAGI listener: accepts Asterisk's connections, reads the environment, routes on the
//! path of `agi_network_script` and runs one handler per session.
//!
//! * A semaphore caps concurrent sessions. When it is full a new connection is closed at once
//!   with a warning; nothing queues.
//! * FastAGI has no authentication, so an optional allow-list of peer addresses applies.
//! * The environment block must arrive within the handshake timeout.
//! * Hostile input ends one session with a logged reason; the listener keeps serving.
//! * Shutdown: stop accepting (the listening socket is closed, so connects are refused), let
//!   sessions finish within the grace period, then cancel [`AgiSession::wrap_up`] and give
//!   handlers a short deadline before their connections are dropped.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::codec::{AgiCodec, DEFAULT_MAX_LINE};
use super::error::AgiError;
use super::handler::{Handler, HandlerResult};
use super::session::{AgiSession, CLOSED_BEFORE_ENV, SessionReader, read_env};

struct Route {
    name: &'static str,
    handler: Arc<dyn Handler>,
    metrics: OnceLock<RouteMetrics>,
}

struct RouteMetrics {
    active: metrics::Gauge,
    total: metrics::Counter,
    failed: metrics::Counter,
}

impl Route {
    fn new(name: &'static str, handler: Arc<dyn Handler>) -> Self {
        Route { name, handler, metrics: OnceLock::new() }
    }

    fn metrics(&self) -> &RouteMetrics {
        self.metrics.get_or_init(|| RouteMetrics {
            active: metrics::gauge!("asterai_agi_sessions_active", "route" => self.name),
            total: metrics::counter!("asterai_agi_sessions_total", "route" => self.name),
            failed: metrics::counter!("asterai_agi_session_errors_total", "route" => self.name),
        })
    }
}

/// Maps the path of `agi_network_script` (before `?`) to a handler, with a fallback for paths
/// nobody registered.
pub struct Router {
    routes: HashMap<&'static str, Route>,
    fallback: Route,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router whose only behaviour is the unknown-route fallback.
    pub fn new() -> Self {
        Router { routes: HashMap::new(), fallback: Route::new("unknown", Arc::new(super::routes::unknown)) }
    }

    /// Serves `path` (e.g. `"ai"` for `agi://host/ai?org=acme`) with `handler`.
    pub fn route(mut self, path: &'static str, handler: impl Handler) -> Self {
        self.routes.insert(path, Route::new(path, Arc::new(handler)));
        self
    }

    /// Replaces the handler for unknown paths.
    pub fn fallback(mut self, handler: impl Handler) -> Self {
        self.fallback = Route::new("unknown", Arc::new(handler));
        self
    }

    fn resolve(&self, path: &str) -> &Route {
        self.routes.get(path).unwrap_or(&self.fallback)
    }
}

/// An address or network allowed to connect, e.g. `127.0.0.1` or `10.0.0.0/8` (an
/// [`ipnet::IpNet`]; an address alone is the network of that one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRule(ipnet::IpNet);

impl std::str::FromStr for PeerRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Ok(net) = trimmed.parse::<ipnet::IpNet>() {
            return Ok(PeerRule(net));
        }
        let expected = || format!("expected an IP address or network such as 10.0.0.0/8, got {text:?}");
        match trimmed.split_once('/') {
            None => trimmed.parse::<IpAddr>().map(|addr| PeerRule(addr.into())).map_err(|_| expected()),
            // The address reads but the prefix does not: say which lengths fit.
            Some((addr, _)) => match addr.trim().parse::<IpAddr>() {
                Ok(addr) => {
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    Err(format!("expected a prefix length of 0 to {max} in {text:?}"))
                }
                Err(_) => Err(expected()),
            },
        }
    }
}

impl PeerRule {
    /// True when `ip` falls inside this rule (an IPv4-mapped IPv6 address as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// Limits and timeouts of the listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Sessions served at once; further connections are closed at once.
    pub max_sessions: usize,
    /// Time allowed for the environment block.
    pub handshake_timeout: Duration,
    /// Extra time allowed for a reply beyond what the command itself may take.
    pub reply_grace: Duration,
    /// Peers allowed to connect; empty allows everyone.
    pub allowed_peers: Vec<PeerRule>,
    /// Longest line accepted from Asterisk.
    pub max_line: usize,
    /// Most `agi_*` variables accepted in the environment block.
    pub max_env_vars: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_sessions: 1000,
            handshake_timeout: Duration::from_secs(5),
            reply_grace: Duration::from_secs(30),
            allowed_peers: Vec::new(),
            max_line: DEFAULT_MAX_LINE,
            max_env_vars: 512,
        }
    }
}

/// Tells a running server to stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: CancellationToken,
    grace: Duration,
    wrap_up_deadline: Duration,
}

impl Shutdown {
    /// Sessions get `grace` to finish once `stop` is cancelled, then five more seconds after being
    /// told to wrap up.
    pub fn new(stop: CancellationToken, grace: Duration) -> Self {
        Shutdown { stop, grace, wrap_up_deadline: Duration::from_secs(5) }
    }

    /// Changes how long sessions have after being told to wrap up.
    pub fn wrap_up_deadline(mut self, deadline: Duration) -> Self {
        self.wrap_up_deadline = deadline;
        self
    }
}

/// What happened to the sessions when the server stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions still running when the listener closed.
    pub in_flight: usize,
    /// Of those, the ones that had to be told to wrap up.
    pub told_to_wrap_up: usize,
    /// Of those, the ones dropped after the wrap-up deadline.
    pub aborted: usize,
}

/// A bound FastAGI listener.
pub struct AgiServer {
    listener: TcpListener,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
}

impl AgiServer {
    /// Binds the listener.
    pub async fn bind(addr: SocketAddr, router: Router, config: ServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(AgiServer { listener, router: Arc::new(router), config: Arc::new(config) })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves sessions until `shutdown` stops it, then drains.
    pub async fn run(self, shutdown: Shutdown) -> DrainReport {
        let limit = Arc::new(Semaphore::new(self.config.max_sessions));
        let wrap_up = CancellationToken::new();
        let mut sessions = JoinSet::new();
        let mut limit_warning = RateLimited::default();
        loop {
            tokio::select! {
                _ = shutdown.stop.cancelled() => break,
                Some(joined) = sessions.join_next(), if !sessions.is_empty() => report_join(joined),
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::error!("accepting an AGI connection failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if !self.peer_allowed(peer.ip()) {
                        metrics::counter!("asterai_agi_connections_rejected_total", "reason" => "peer").increment(1);
                        tracing::warn!(%peer, "AGI connection from a peer not in agi.allowed_peers; closed");
                        continue;
                    }
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        metrics::counter!("asterai_agi_connections_rejected_total", "reason" => "limit").increment(1);
                        if let Some(suppressed) = limit_warning.ready() {
                            tracing::warn!(%peer, max_sessions = self.config.max_sessions, suppressed,
                                "AGI session limit reached (agi.max_sessions); connection closed");
                        }
                        continue;
                    };
                    let router = self.router.clone();
                    let config = self.config.clone();
                    let wrap_up = wrap_up.clone();
                    sessions.spawn(serve_connection(stream, peer, router, config, wrap_up, permit));
                }
            }
        }
        drop(self.listener);
        drain(sessions, wrap_up, &shutdown).await
    }

    fn peer_allowed(&self, ip: IpAddr) -> bool {
        self.config.allowed_peers.is_empty() || self.config.allowed_peers.iter().any(|rule| rule.contains(ip))
    }
}

async fn drain(mut sessions: JoinSet<()>, wrap_up: CancellationToken, shutdown: &Shutdown) -> DrainReport {
    let mut report = DrainReport { in_flight: sessions.len(), ..DrainReport::default() };
    if report.in_flight > 0 {
        tracing::info!(sessions = report.in_flight, grace = ?shutdown.grace, "waiting for AGI sessions to finish");
    }
    let joined_all = async {
        while let Some(joined) = sessions.join_next().await {
            report_join(joined);
        }
    };
    if tokio::time::timeout(shutdown.grace, joined_all).await.is_ok() {
        return report;
    }
    report.told_to_wrap_up = sessions.len();
    tracing::warn!(sessions = sessions.len(), "grace period over; telling AGI sessions to wrap up");
    wrap_up.cancel();
    let joined_all = async {
        while let Some(joined) = sessions.join_next().await {
            report_join(joined);
        }
    };
    if tokio::time::timeout(shutdown.wrap_up_deadline, joined_all).await.is_err() {
        report.aborted = sessions.len();
        tracing::warn!(
            sessions = sessions.len(),
            "AGI sessions still running after the wrap-up deadline; dropping their connections"
        );
        sessions.shutdown().await;
    }
    report
}

fn report_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!("an AGI session handler panicked; that session was closed: {e}");
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    wrap_up: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    let mut codec = AgiCodec::new(config.max_line);
    // Boxed so that its state does not widen this future for the whole life of the call.
    let handshake = Box::pin(tokio::time::timeout(
        config.handshake_timeout,
        read_env(&mut stream, &mut buf, &mut codec, config.max_env_vars),
    ));
    let env = match handshake.await {
        Ok(Ok(env)) => env,
        Ok(Err(AgiError::Closed { reason })) if reason == CLOSED_BEFORE_ENV => {
            // A TCP check (a load balancer, monitoring) connects and closes without a word.
            tracing::debug!(%peer, "connection closed without sending anything (a port check?)");
            return;
        }
        Ok(Err(e)) => {
            metrics::counter!("asterai_agi_connections_rejected_total", "reason" => "handshake").increment(1);
            tracing::warn!(%peer, "AGI handshake failed, connection closed: {e}");
            return;
        }
        Err(_) => {
            metrics::counter!("asterai_agi_connections_rejected_total", "reason" => "handshake").increment(1);
            tracing::warn!(%peer, timeout = ?config.handshake_timeout,
                "AGI handshake not complete within agi.handshake_timeout (no empty line after the agi_ variables); connection closed");
            return;
        }
    };
    let route = router.resolve(env.route());
    let span =
        tracing::info_span!("agi", agi_uniqueid = env.uniqueid(), agi_channel = env.channel(), route = route.name);
    let (session, reader) = AgiSession::start(stream, env, buf, codec, peer, config.reply_grace, wrap_up);
    let metrics = route.metrics();
    metrics.total.increment(1);
    metrics.active.increment(1.0);
    let started = Instant::now();
    span.in_scope(|| tracing::debug!(%peer, script = session.env().network_script(), "AGI session started"));
    let result = Drive::new(reader, route.handler.call(session.clone())).instrument(span.clone()).await;
    // Read before closing: the daemon's own close is not a fault.
    let fault = session.fault();
    session.close().await;
    span.in_scope(|| log_end(result, fault, started, metrics));
    metrics.active.decrement(1.0);
}

fn log_end(result: HandlerResult, fault: Option<String>, started: Instant, metrics: &RouteMetrics) {
    match (result, fault) {
        (Err(e), _) => {
            metrics.failed.increment(1);
            tracing::warn!(elapsed = ?started.elapsed(), "AGI session ended with an error: {e}");
        }
        (Ok(()), Some(fault)) => {
            metrics.failed.increment(1);
            tracing::warn!(elapsed = ?started.elapsed(), "AGI session ended after a fault: {fault}");
        }
        (Ok(()), None) => tracing::debug!(elapsed = ?started.elapsed(), "AGI session ended"),
    }
}

/// Runs a session's reader and its user side by side in one task, until the user is done. The
/// reader is polled first, so the user always sees everything that has arrived.
///
/// Written by hand rather than with `select!`: a daemon holds one per live call, and this keeps
/// it to the reader's state and one pointer.
pub struct Drive<F: ?Sized> {
    reader: Option<SessionReader>,
    user: Pin<Box<F>>,
}

impl<F: Future + ?Sized> Drive<F> {
    pub fn new(reader: SessionReader, user: Pin<Box<F>>) -> Self {
        Drive { reader: Some(reader), user }
    }
}

impl<F: Future + ?Sized> Future for Drive<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        if let Some(reader) = &mut self.reader
            && reader.poll_run(cx).is_ready()
        {
            self.reader = None;
        }
        self.user.as_mut().poll(cx)
    }
}

/// Lets a warning through at most once a second and counts what it held back.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: AtomicU64,
}

impl RateLimited {
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_rules() {
        let rule: PeerRule = "10.0.0.0/8".parse().unwrap();
        assert!(rule.contains("10.1.2.3".parse().unwrap()));
        assert!(!rule.contains("11.0.0.1".parse().unwrap()));
        assert!(rule.contains("::ffff:10.9.9.9".parse().unwrap()));
        let one: PeerRule = "192.168.1.20".parse().unwrap();
        assert!(one.contains("192.168.1.20".parse().unwrap()));
        assert!(!one.contains("192.168.1.21".parse().unwrap()));
        let v6: PeerRule = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        let odd: PeerRule = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains("172.31.255.1".parse().unwrap()));
        assert!(!odd.contains("172.32.0.1".parse().unwrap()));
        let host_bits: PeerRule = " 10.1.2.3/8 ".parse().unwrap();
        assert!(host_bits.contains("10.200.0.1".parse().unwrap()), "the host bits of a network are ignored");
        let v6_host: PeerRule = "::1".parse().unwrap();
        assert!(v6_host.contains("::1".parse().unwrap()) && !v6_host.contains("::2".parse().unwrap()));
        assert!(!rule.contains("::a00:1".parse().unwrap()), "an IPv4-compatible (not mapped) address is IPv6");
        let all: PeerRule = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()) && !all.contains("2001:db8::1".parse().unwrap()));
        let err = "10.0.0.0/33".parse::<PeerRule>().unwrap_err();
        assert!(err.contains("0 to 32"), "{err}");
        assert!("fd00::/129".parse::<PeerRule>().unwrap_err().contains("0 to 128"));
        assert!("example.com".parse::<PeerRule>().unwrap_err().contains("such as 10.0.0.0/8"));
        assert!("10.0.0/8".parse::<PeerRule>().is_err());
    }
}
