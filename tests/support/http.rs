//! The daemon's HTTP side in-process on an ephemeral port, with a feed client to talk to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use asterai::feed::client::ClientConfig;
use asterai::feed::{Hub, Publisher};
use asterai::http::{AppState, HttpParts};
use asterai::store::{Direction, Event, NewCall, Store};
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};
use tokio_util::sync::CancellationToken;

pub fn feed_config() -> ClientConfig {
    ClientConfig {
        ping_interval: Duration::from_secs(20),
        queue: 1024,
        write_timeout: Duration::from_secs(10),
        max_message_bytes: 64 * 1024,
    }
}

/// A store, its hub and publisher, and the HTTP server, like `asterai serve` builds them.
pub struct TestDaemon {
    pub addr: SocketAddr,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub publisher: Publisher,
    stop: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    hub_task: JoinHandle<()>,
}

impl TestDaemon {
    pub async fn start(store: Store) -> TestDaemon {
        Self::start_with(store, feed_config(), "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_with(store: Store, feed: ClientConfig, addr: SocketAddr) -> TestDaemon {
        Self::start_custom(store, feed, addr, None, Default::default()).await
    }

    /// With the daemon's supervisor (whose failing tasks `/readyz` reports) and HTTP limits.
    pub async fn start_custom(
        store: Store,
        feed: ClientConfig,
        addr: SocketAddr,
        supervisor: Option<asterai::supervise::Supervisor>,
        limits: asterai::http::HttpLimits,
    ) -> TestDaemon {
        crate::support::init();
        let hub = Hub::new();
        // Everything published from here on is handed out, whenever the hub's task first runs.
        hub.prime(&store).await.expect("read where the event log ends");
        let stop = CancellationToken::new();
        let hub_task = tokio::spawn(hub.clone().run(
            store.clone(),
            Duration::from_millis(200),
            Duration::from_millis(10),
            stop.child_token(),
        ));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind HTTP");
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(HttpParts {
            store: store.clone(),
            hub: hub.clone(),
            feed,
            metrics: asterai::telemetry::install(),
            shutdown: CancellationToken::new(),
            limits,
            supervisor,
        });
        let http = tokio::spawn(asterai::http::serve(listener, state, stop.clone()));
        let publisher = Publisher::new(store.clone(), hub.clone());
        TestDaemon { addr, store, hub, publisher, stop, http, hub_task }
    }

    /// Stops the HTTP server (feed clients get code 1001) and the hub.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.http.await;
        let _ = self.hub_task.await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Creates the organization if needed and a token for it with every scope.
    pub async fn token(&self, org: &str) -> String {
        self.token_with(org, asterai::auth::Scopes::all()).await
    }

    /// Creates the organization if needed and a token for it with `scopes`.
    pub async fn token_with(&self, org: &str, scopes: asterai::auth::Scopes) -> String {
        let org = match self.store.org_by_slug(org).await.unwrap() {
            Some(org) => org,
            None => self.store.create_org(org, org).await.unwrap(),
        };
        asterai::auth::create_token(&self.store, org.id, "test", scopes).await.unwrap().token
    }

    /// Publishes `call_started` for a new call of `org` and returns its event id.
    pub async fn publish(&self, org_id: i64, to: &str) -> (String, i64) {
        let call = self
            .publisher
            .call_started(&NewCall {
                id: None,
                org_id,
                direction: Direction::Inbound,
                from: "+15550001111".into(),
                to: to.into(),
                channel: None,
                campaign_id: None,
                contact_id: None,
            })
            .await
            .unwrap();
        let events = self.store.call_events(&call.id).await.unwrap();
        (call.id, events[0].id)
    }
}

/// A WebSocket feed client.
pub struct FeedClient {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What came out of the feed.
#[derive(Debug)]
pub enum Received {
    Event(Event),
    Control(serde_json::Value),
    Closed(Option<CloseFrame>),
}

impl FeedClient {
    pub async fn connect(addr: SocketAddr, token: &str, query: &str) -> Result<FeedClient, (u16, String)> {
        let url = format!("ws://{addr}/v1/feed{query}");
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(FeedClient { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body =
                    response.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                Err((response.status().as_u16(), body))
            }
            Err(e) => Err((0, e.to_string())),
        }
    }

    /// The next event or control message, skipping pings; `None` after `wait` with nothing.
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        loop {
            let message = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Received::Closed(None)),
                Ok(Some(Err(_))) => return Some(Received::Closed(None)),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON from the feed");
                    if value["type"].as_str().is_some_and(|t| t.starts_with("feed.")) {
                        return Some(Received::Control(value));
                    }
                    return Some(Received::Event(serde_json::from_value(value).expect("an event")));
                }
                Message::Close(frame) => return Some(Received::Closed(frame)),
                _ => continue,
            }
        }
    }

    /// The next event, skipping control messages; panics after `wait` with none.
    pub async fn event(&mut self, wait: Duration) -> Event {
        loop {
            match self.next(wait).await {
                Some(Received::Event(event)) => return event,
                Some(Received::Control(_)) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// Events until `count` have arrived or `wait` passes with none.
    pub async fn events(&mut self, count: usize, wait: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next(wait).await {
                Some(Received::Event(event)) => out.push(event),
                Some(Received::Control(_)) => continue,
                _ => break,
            }
        }
        out
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }
}
