//! The event WebSocket (`ws://host:8088/ari/events?app=…`), kept open for as long as the daemon
//! runs.
//!
//! * Reconnects after any failure with capped exponential backoff and jitter (from
//!   [`StreamConfig::reconnect_min`] up to `ari.reconnect_max`), so a restarted Asterisk is
//!   picked up again without a thundering herd of daemons.
//! * Sends [`StreamItem::Connected`] after every (re)connect, before any event of that
//!   connection: the consumer resyncs there, because events sent while we were away are lost.
//! * Pings every [`StreamConfig::ping_interval`]; a connection silent through a whole interval
//!   after a ping is dropped and reopened (a half-open TCP connection would otherwise look
//!   healthy forever).
//! * `ApplicationReplaced` is logged as an error (two daemons, or another program, use the same
//!   `ari.app` on one Asterisk): this connection gets nothing more, so it is closed, and the next
//!   attempt waits the longest backoff so two owners do not fight over the name.
//! * Unknown event types are logged at debug level and passed on; nothing in a message can stop
//!   the stream.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;

use super::client::{AriSettings, Auth};
use super::error::AriError;
use super::events::{AriEvent, Envelope, parse};

/// How the stream connects and reconnects.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub settings: AriSettings,
    /// The Stasis application (`ari.app`).
    pub app: String,
    /// Ask for every event of the system, not only the app's channels. Only needed to follow
    /// channels originated in dialplan mode.
    pub subscribe_all: bool,
    /// The first retry's delay; it doubles per failure up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub ping_interval: Duration,
}

impl StreamConfig {
    pub fn new(settings: AriSettings, app: impl Into<String>, reconnect_max: Duration) -> StreamConfig {
        StreamConfig {
            settings,
            app: app.into(),
            subscribe_all: false,
            reconnect_min: Duration::from_millis(500).min(reconnect_max),
            reconnect_max,
            ping_interval: Duration::from_secs(20),
        }
    }
}

/// What the stream hands to its consumer, in order.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A connection is open (the first, or a reconnect): resync now. `connection` counts from 1.
    Connected {
        connection: u64,
    },
    Event(Box<Envelope>),
    /// The connection ended; a new one will be attempted.
    Disconnected {
        reason: String,
    },
}

/// Starts the stream on its own task; items arrive on the returned receiver until `stop`.
pub fn spawn(config: StreamConfig, stop: CancellationToken) -> mpsc::Receiver<StreamItem> {
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(run(config, tx, stop));
    rx
}

/// Keeps the stream connected until `stop` is cancelled or the receiver is dropped.
pub async fn run(config: StreamConfig, tx: mpsc::Sender<StreamItem>, stop: CancellationToken) {
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut connection = 0;
    let mut failures = 0u32;
    loop {
        if stop.is_cancelled() || tx.is_closed() {
            return;
        }
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = tokio::time::timeout(Duration::from_secs(10), connect(&config)) => connected,
        };
        match connected {
            Ok(Ok(ws)) => {
                connection += 1;
                failures = 0;
                tracing::info!(app = %config.app, connection, "ARI event stream connected");
                if tx.send(StreamItem::Connected { connection }).await.is_err() {
                    return;
                }
                let started = Instant::now();
                let ended = read(ws, &config, &tx, &stop).await;
                match &ended {
                    Ended::Stopped => return,
                    Ended::Replaced => {
                        backoff.exhaust();
                    }
                    Ended::Lost(reason) => {
                        tracing::warn!(app = %config.app, "ARI event stream lost: {reason}; reconnecting");
                        if started.elapsed() >= config.reconnect_max {
                            backoff.reset();
                        }
                    }
                }
                let reason = match ended {
                    Ended::Replaced => "application replaced".to_owned(),
                    Ended::Lost(reason) => reason,
                    Ended::Stopped => return,
                };
                if tx.send(StreamItem::Disconnected { reason }).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                // The first failure in a row is news; the rest repeat it.
                if failures == 1 {
                    tracing::warn!(app = %config.app, "cannot open the ARI event stream: {e}; retrying with backoff");
                } else {
                    tracing::debug!(app = %config.app, failures, "ARI event stream still unavailable: {e}");
                }
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(app = %config.app, "opening the ARI event stream timed out; retrying with backoff");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket; a refused upgrade keeps Asterisk's message (JSON or HTML).
async fn connect(config: &StreamConfig) -> Result<Socket, AriError> {
    let url = config.settings.events_url(&config.app, config.subscribe_all);
    // The URL may carry an api_key: name the place without it.
    let shown = url.split('?').next().unwrap_or_default().to_owned();
    let mut request = url
        .into_client_request()
        .map_err(|e| AriError::Invalid(format!("ari.url: cannot build the event stream request for {shown}: {e}")))?;
    if config.settings.auth == Auth::Header {
        let value = config
            .settings
            .basic_header()
            .parse()
            .map_err(|_| AriError::Invalid("ari.username/ari.password cannot be sent in a header".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    let connector = config.settings.tls()?.map(tokio_tungstenite::Connector::Rustls);
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
            Err(AriError::from_response(
                response.status().as_u16(),
                content_type,
                response.body().as_deref().unwrap_or_default(),
            ))
        }
        Err(e) => Err(AriError::Transport { url: shown, message: e.to_string() }),
    }
}

enum Ended {
    Stopped,
    Replaced,
    Lost(String),
}

async fn read(mut ws: Socket, config: &StreamConfig, tx: &mpsc::Sender<StreamItem>, stop: &CancellationToken) -> Ended {
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard_since_ping = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return Ended::Stopped;
            }
            _ = ping.tick() => {
                if !heard_since_ping {
                    return Ended::Lost(format!("no answer to a ping within {:?}", config.ping_interval));
                }
                heard_since_ping = false;
                if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                    return Ended::Lost(format!("cannot ping: {e}"));
                }
            }
            message = ws.next() => {
                heard_since_ping = true;
                let text = match message {
                    None => return Ended::Lost("Asterisk closed the connection".into()),
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str())).unwrap_or_default();
                        return Ended::Lost(format!("Asterisk closed the connection{why}"));
                    }
                    Some(Ok(_)) => continue,
                };
                let envelope = parse(text.as_str());
                match &envelope.event {
                    AriEvent::ApplicationReplaced { application } => {
                        tracing::error!(
                            app = %application,
                            "ARI application replaced: another connection took over ari.app {:?} on this Asterisk, so this daemon no longer receives its events. Give each daemon its own ari.app (or stop the other program); reconnecting after {:?}",
                            config.app,
                            config.reconnect_max
                        );
                        let _ = tx.send(StreamItem::Event(Box::new(envelope))).await;
                        let _ = ws.close(None).await;
                        return Ended::Replaced;
                    }
                    AriEvent::Unknown { kind, reason: None, .. } => {
                        tracing::debug!(kind = %kind, "ARI event of a type asterai does not use");
                    }
                    AriEvent::Unknown { kind, reason: Some(reason), .. } => {
                        tracing::debug!(kind = %kind, "ARI event not understood: {reason}");
                    }
                    _ => {}
                }
                if tx.send(StreamItem::Event(Box::new(envelope))).await.is_err() {
                    let _ = ws.close(None).await;
                    return Ended::Stopped;
                }
            }
        }
    }
}

/// Capped exponential backoff with "equal jitter": each delay is between half and all of the
/// current step, so daemons that lost Asterisk together do not come back together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff { min, max: max.max(min), step: min }
    }

    /// The next delay, then doubles the step up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let half = self.step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        let delay = half + Duration::from_millis(jitter);
        self.step = (self.step * 2).min(self.max);
        delay.min(self.max)
    }

    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// Jumps to the cap.
    pub fn exhaust(&mut self) {
        self.step = self.max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(b.step);
            let d = b.next_delay();
            assert!(d >= steps.last().copied().unwrap() / 2 && d <= Duration::from_secs(4), "{d:?}");
        }
        assert_eq!(steps[..5], [500, 1000, 2000, 4000, 4000].map(Duration::from_millis));
        b.reset();
        assert_eq!(b.step, Duration::from_millis(500));
        b.exhaust();
        assert_eq!(b.step, Duration::from_secs(4));
    }
}
