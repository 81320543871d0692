//! The live feed and the REST API over real sockets: authentication, organization isolation,
//! resume with `since`, slow clients, heartbeats, filters, hostile frames, two daemons on one
//! PostgreSQL, and readiness through a database outage.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use asterai::feed::subscriber::{CLOSE_HEARTBEAT, CLOSE_SHUTDOWN, CLOSE_SLOW, SubscriberConfig};
use asterai::store::{CallStatus, Latency, NewTurn, Store};
use support::db::{Backend, TestDb};
use support::http::{FeedClient, Received, TestDaemon, feed_config};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(10);

async fn org_id(store: &Store, slug: &str) -> i64 {
    store.org_by_slug(slug).await.unwrap().unwrap().id
}

backend_tests! {
    async fn refuses_missing_wrong_and_revoked_tokens_before_the_upgrade(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let good = daemon.token("acme").await;
        let (status, body) = FeedClient::connect(daemon.addr, "", "").await.err().unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        for bad in [
            "nonsense".to_owned(),
            "ast_0123456789abcdef_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_owned(),
            format!("{}x", &good[..good.len() - 1]),
        ] {
            let (status, _) = FeedClient::connect(daemon.addr, &bad, "").await.err().unwrap();
            assert_eq!(status, 401, "{bad}");
        }
        // ?token= works for browsers, and a good token gets through.
        let url = format!("ws://{}/v1/feed?token={good}", daemon.addr);
        assert!(tokio_tungstenite::connect_async(url).await.is_ok());
        let id = good.split('_').nth(1).unwrap();
        db.store.revoke_token(id).await.unwrap();
        let (status, body) = FeedClient::connect(daemon.addr, &good, "").await.err().unwrap();
        assert_eq!(status, 401);
        assert!(body.contains("revoked"), "{body}");
        // The REST API refuses the same way.
        let response = reqwest::Client::new().get(daemon.url("/v1/calls")).bearer_auth(&good).send().await.unwrap();
        assert_eq!(response.status(), 401);
        daemon.stop().await;
    }

    async fn each_organization_sees_only_its_own_events(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let (acme_token, globex_token) = (daemon.token("acme").await, daemon.token("globex").await);
        let (acme, globex) = (org_id(&db.store, "acme").await, org_id(&db.store, "globex").await);
        let mut acme_client = FeedClient::connect(daemon.addr, &acme_token, "").await.unwrap();
        let mut globex_client = FeedClient::connect(daemon.addr, &globex_token, "").await.unwrap();
        let (mut acme_ids, mut globex_ids) = (Vec::new(), Vec::new());
        for i in 0..30 {
            if i % 3 == 0 {
                globex_ids.push(daemon.publish(globex, "+15552220000").await.1);
            } else {
                acme_ids.push(daemon.publish(acme, "+15551110000").await.1);
            }
        }
        let got = acme_client.events(acme_ids.len(), WAIT).await;
        assert!(got.iter().all(|e| e.org == "acme"), "every event acme receives is acme's");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), acme_ids);
        let got = globex_client.events(globex_ids.len(), WAIT).await;
        assert!(got.iter().all(|e| e.org == "globex"), "every event globex receives is globex's");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), globex_ids);
        // And nothing more arrives for either.
        assert!(matches!(acme_client.next(Duration::from_millis(300)).await, None | Some(Received::Control(_))));
        daemon.stop().await;
    }

    async fn resume_with_since_loses_nothing_while_events_keep_flowing(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let token = daemon.token("acme").await;
        let acme = org_id(&db.store, "acme").await;
        let publisher = daemon.publisher.clone();
        let writer = tokio::spawn({
            let store = db.store.clone();
            async move {
                let mut ids = Vec::new();
                for i in 0..120 {
                    let call = publisher.call_started(&asterai::store::NewCall {
                        id: None, org_id: acme, direction: asterai::store::Direction::Inbound,
                        from: "+15550001111".into(), to: format!("+1555000{i:04}"), channel: None, campaign_id: None, contact_id: None,
                    }).await.unwrap();
                    ids.push(store.call_events(&call.id).await.unwrap()[0].id);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ids
            }
        });
        let mut received = Vec::new();
        let mut since = 0;
        // Connect, take a few events, drop the connection, resume: four times while the writer runs.
        for _ in 0..4 {
            let mut client = FeedClient::connect(daemon.addr, &token, &format!("?since={since}")).await.unwrap();
            for event in client.events(15, WAIT).await {
                since = event.id;
                received.push(event.id);
            }
            drop(client);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let published = writer.await.unwrap();
        let mut client = FeedClient::connect(daemon.addr, &token, &format!("?since={since}")).await.unwrap();
        let missing = published.iter().filter(|id| **id > since).count();
        received.extend(client.events(missing, WAIT).await.iter().map(|e| e.id));
        assert_eq!(received, published, "exactly the published events, in order, none twice");
        daemon.stop().await;
    }

    async fn a_slow_client_is_closed_with_its_last_id_and_resumes(db) {
        // The slow client reads nothing until the end. The server gives up on a client that takes
        // nothing for write_timeout, and closes one that answers no ping for a ping interval: both
        // are long here, because a busy machine may take a while to publish everything, and this
        // client is meant to be closed for its queue, with the close frame it reads at the end.
        let config = SubscriberConfig {
            queue: 32,
            write_timeout: Duration::from_secs(600),
            ping_interval: Duration::from_secs(600),
            ..feed_config()
        };
        let daemon = TestDaemon::start_with(db.store.clone(), config, "127.0.0.1:0".parse().unwrap()).await;
        let token = daemon.token("acme").await;
        let acme = org_id(&db.store, "acme").await;
        // A client that never reads, with a tiny receive buffer so the socket fills fast.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let stream = socket.connect(daemon.addr).await.unwrap();
        let url = format!("ws://{}/v1/feed?since=0", daemon.addr);
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
        let mut slow = FeedClient { ws };
        // A healthy client watches the same events the whole time, reading as they come.
        let mut healthy = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        let (count_tx, count_rx) = tokio::sync::oneshot::channel::<usize>();
        let watching = tokio::spawn(async move {
            let expected = count_rx.await.unwrap();
            healthy.events(expected, WAIT).await.iter().map(|e| e.id).collect::<Vec<i64>>()
        });
        let mut count_tx = Some(count_tx);

        let mut published = Vec::new();
        let big = "x".repeat(2000);
        let _ = count_tx.take().unwrap().send(1002);
        let (call_id, _) = daemon.publish(acme, "+15551230000").await;
        db.store.set_call_status(acme, &call_id, CallStatus::InProgress, None).await.unwrap();
        published.extend(db.store.call_events(&call_id).await.unwrap().iter().map(|e| e.id));
        for turn in 1..=1000 {
            let event = daemon.publisher.conversation_turn(acme, &NewTurn {
                call_id: call_id.clone(), turn, caller: big.clone(), agent: "ok".into(),
                emotion: None, intent: None, confidence: None, latency: Latency::default(), interrupted: false, tools: Vec::new(),
            }).await.unwrap();
            published.push(event.id);
        }
        // The healthy client got everything while the slow one stalled.
        assert_eq!(watching.await.unwrap(), published, "the healthy client is not slowed down");

        // Now read the slow client: contiguous events, then the close that names the last one.
        let mut got = Vec::new();
        let close = loop {
            match slow.next(WAIT).await {
                Some(Received::Event(e)) => got.push(e.id),
                Some(Received::Control(_)) => {}
                Some(Received::Closed(frame)) => break frame.expect("a close frame"),
                None => panic!("the slow client was never closed"),
            }
        };
        assert_eq!(close.code, CloseCode::from(CLOSE_SLOW));
        let last: i64 = close.reason.strip_prefix("slow_client last_id=").unwrap().parse().unwrap();
        assert_eq!(got.last().copied().unwrap_or(0), last, "the reason carries the last id delivered");
        assert_eq!(got, published[..got.len()].to_vec());
        assert!(got.len() < published.len(), "the slow client fell behind");
        // Resume from there: the rest, and nothing twice.
        let mut resumed = FeedClient::connect(daemon.addr, &token, &format!("?since={last}")).await.unwrap();
        got.extend(resumed.events(published.len() - got.len(), WAIT).await.iter().map(|e| e.id));
        assert_eq!(got, published);
        daemon.stop().await;
    }

    async fn filters_narrow_the_feed(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let token = daemon.token("acme").await;
        let acme = org_id(&db.store, "acme").await;
        let (first, _) = daemon.publish(acme, "+15551230001").await;
        let mut by_query = FeedClient::connect(daemon.addr, &token, &format!("?since=0&call_id={first}")).await.unwrap();
        let mut client = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        client.send(&format!(r#"{{"filter": {{"call_id": "{first}", "types": ["call_status_update"]}}}}"#)).await;
        let ack = loop {
            if let Some(Received::Control(c)) = client.next(WAIT).await && c["type"] == "feed.filter" {
                break c;
            }
        };
        assert_eq!(ack["filter"]["call_id"], first.as_str());
        let (_second, _) = daemon.publish(acme, "+15551230002").await;
        daemon.publisher.call_status(acme, &first, CallStatus::InProgress, None).await.unwrap();
        let event = client.event(WAIT).await;
        assert_eq!((event.call_id.as_deref(), event.kind), (Some(first.as_str()), asterai::store::EventKind::CallStatusUpdate));
        let events = by_query.events(2, WAIT).await;
        assert!(events.iter().all(|e| e.call_id.as_deref() == Some(first.as_str())) && events.len() == 2);
        daemon.stop().await;
    }

    async fn malformed_and_huge_frames_leave_the_server_healthy(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let token = daemon.token("acme").await;
        let acme = org_id(&db.store, "acme").await;
        let mut client = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        client.send("{not json").await;
        let reply = loop {
            if let Some(Received::Control(c)) = client.next(WAIT).await && c["type"] == "feed.error" {
                break c;
            }
        };
        assert!(reply["message"].as_str().unwrap().contains("filter"));
        client.send(r#"{"filter": {"bogus": 1}}"#).await;
        loop {
            match client.next(WAIT).await {
                Some(Received::Control(c)) if c["type"] == "feed.error" => break,
                Some(Received::Control(c)) if c["type"] == "feed.ready" => continue,
                other => panic!("expected feed.error, got {other:?}"),
            }
        }
        // The connection still works after both.
        let (_, id) = daemon.publish(acme, "+15551230000").await;
        assert_eq!(client.event(WAIT).await.id, id);

        // A frame over the limit ends that connection only, with 1009 even while the client is
        // still sending it (16 MB: far more than the socket buffers hold).
        let mut huge = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        let sent = futures_util::SinkExt::send(&mut huge.ws, tokio_tungstenite::tungstenite::Message::Text("x".repeat(16 << 20).into())).await;
        assert!(sent.is_ok(), "the server reads what the client sends until it is done: {sent:?}");
        let close = loop {
            match huge.next(WAIT).await {
                Some(Received::Control(_)) => continue,
                Some(Received::Closed(frame)) => break frame,
                other => panic!("expected the connection to close, got {other:?}"),
            }
        };
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Size), "1009: message too big");
        let (_, id) = daemon.publish(acme, "+15551230000").await;
        assert_eq!(client.event(WAIT).await.id, id);
        let health = reqwest::get(daemon.url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
        daemon.stop().await;
    }

    async fn silent_clients_are_dropped_by_the_heartbeat(db) {
        let config = SubscriberConfig { ping_interval: Duration::from_millis(500), ..feed_config() };
        let daemon = TestDaemon::start_with(db.store.clone(), config, "127.0.0.1:0".parse().unwrap()).await;
        let token = daemon.token("acme").await;
        let acme = org_id(&db.store, "acme").await;
        // A client that reads but never answers a ping (raw frames, no pong): closed with 4002.
        let closed = tokio::time::timeout(Duration::from_secs(60), silent_client_close(daemon.addr, &token)).await;
        assert_eq!(closed.expect("the silent client is closed"), CLOSE_HEARTBEAT);
        // A client that keeps reading answers pings and stays connected.
        let mut lively = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reading = tokio::spawn(async move {
            loop {
                if let Some(received) = lively.next(WAIT).await {
                    let closed = matches!(received, Received::Closed(_));
                    if tx.send(received).is_err() || closed {
                        return;
                    }
                }
            }
        });
        // Several ping intervals pass while it reads.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (_, id) = daemon.publish(acme, "+15551230000").await;
        loop {
            match tokio::time::timeout(WAIT, rx.recv()).await.expect("the lively client hears the event") {
                Some(Received::Event(event)) => {
                    assert_eq!(event.id, id);
                    break;
                }
                Some(Received::Control(_)) => continue,
                other => panic!("the lively client was closed: {other:?}"),
            }
        }
        reading.abort();
        daemon.stop().await;
    }

    async fn shutdown_closes_clients_with_going_away(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let token = daemon.token("acme").await;
        let mut client = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        let acme = org_id(&db.store, "acme").await;
        let (_, id) = daemon.publish(acme, "+15551230000").await;
        assert_eq!(client.event(WAIT).await.id, id);
        let stopping = tokio::spawn(daemon.stop());
        let close = loop {
            match client.next(WAIT).await {
                Some(Received::Closed(frame)) => break frame.unwrap(),
                Some(_) => continue,
                None => panic!("not closed"),
            }
        };
        assert_eq!(close.code, CloseCode::from(CLOSE_SHUTDOWN));
        assert_eq!(close.reason.as_str(), format!("shutdown last_id={id}"));
        stopping.await.unwrap();
    }

    async fn an_event_of_an_unknown_type_never_stalls_the_feed(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let token = daemon.token("acme").await;
        let acme = org_id(&db.store, "acme").await;
        let mut client = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        let (_, first) = daemon.publish(acme, "+15551230000").await;
        assert_eq!(client.event(WAIT).await.id, first);
        // A newer daemon of the fleet writes a type this one does not know.
        insert_event_row(&db, acme, "call_transferred", first + 1, r#"{"to": "+15551230000"}"#).await;
        daemon.hub.wake();
        let (_, next) = daemon.publish(acme, "+15551230001").await;
        assert_eq!(client.event(WAIT).await.id, next, "the feed goes on past the unknown row");
        // A replay from the start skips it too, and the client is told where the log ends.
        let mut replayed = FeedClient::connect(daemon.addr, &token, "?since=0").await.unwrap();
        assert_eq!(replayed.events(2, WAIT).await.iter().map(|e| e.id).collect::<Vec<_>>(), [first, next]);
        let (_, last) = daemon.publish(acme, "+15551230002").await;
        assert_eq!(replayed.event(WAIT).await.id, last);
        daemon.stop().await;
    }

    async fn calls_api_lists_and_shows_one_organizations_calls(db) {
        let daemon = TestDaemon::start(db.store.clone()).await;
        let token = daemon.token("acme").await;
        let other = daemon.token("globex").await;
        let acme = org_id(&db.store, "acme").await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(daemon.publish(acme, &format!("+155512300{i:02}")).await.0);
        }
        daemon.publisher.call_status(acme, &ids[0], CallStatus::InProgress, None).await.unwrap();
        daemon.publisher.conversation_turn(acme, &NewTurn {
            call_id: ids[0].clone(), turn: 1, caller: "hello?".into(), agent: "Hi, this is Ava.".into(),
            emotion: Some("neutral".into()), intent: Some("greeting".into()), confidence: Some(0.8), latency: Latency::default(), interrupted: false, tools: Vec::new(),
        }).await.unwrap();
        let http = reqwest::Client::new();
        let page: serde_json::Value = http.get(daemon.url("/v1/calls?limit=2")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["calls"].as_array().unwrap().len(), 2);
        let cursor = page["next_cursor"].as_str().unwrap();
        let next: serde_json::Value = http.get(daemon.url(&format!("/v1/calls?limit=2&cursor={cursor}"))).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(next["calls"].as_array().unwrap().len(), 2);
        let live: serde_json::Value = http.get(daemon.url("/v1/calls?status=in_progress")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(live["calls"][0]["id"], ids[0].as_str());

        let one: serde_json::Value = http.get(daemon.url(&format!("/v1/calls/{}", ids[0]))).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(one["turns"][0]["caller"], "hello?");
        assert_eq!(one["transcript"], "Caller: hello?\nAgent: Hi, this is Ava.\n");
        assert_eq!(one["org"], "acme");

        let hidden = http.get(daemon.url(&format!("/v1/calls/{}", ids[0]))).bearer_auth(&other).send().await.unwrap();
        assert_eq!(hidden.status(), 404, "another organization's call does not exist for this token");
        let empty: serde_json::Value = http.get(daemon.url("/v1/calls")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
        assert_eq!(empty["calls"].as_array().unwrap().len(), 0);

        for (query, expected) in [("status=nope", "status"), ("limit=0", "limit"), ("since=yesterday", "since"), ("colour=red", "unknown parameter")] {
            let response = http.get(daemon.url(&format!("/v1/calls?{query}"))).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), 400, "{query}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "bad_request");
            assert!(body["error"]["message"].as_str().unwrap().contains(expected), "{body}");
        }
        let missing = http.get(daemon.url("/v1/nothing")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<serde_json::Value>().await.unwrap()["error"]["code"], "not_found");
        let metrics = http.get(daemon.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("asterai_http_requests_total"), "{metrics}");
        daemon.stop().await;
    }
}

/// A row of a known type whose payload does not decode (malformed JSON, which only SQLite can
/// hold, and JSON nested deeper than the decoder's limit, which PostgreSQL's `jsonb` takes) is
/// skipped with a warning naming it, like a row of an unknown type: the live feed and a replay
/// from the start both go on past it. A current-thread runtime, so that the hub's warnings are
/// captured.
async fn a_malformed_event_row_never_stalls_the_feed(backend: Backend) {
    let (logs, _guard) = support::logs::Logs::capture();
    let db = TestDb::new(backend).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let token = daemon.token("acme").await;
    let acme = org_id(&db.store, "acme").await;
    let mut client = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
    let (_, first) = daemon.publish(acme, "+15551230000").await;
    assert_eq!(client.event(WAIT).await.id, first);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut bad = vec![format!(r#"{{"nested": {deep}}}"#)];
    if backend == Backend::Sqlite {
        bad.push(r#"{"to": "+1555"#.to_owned());
    }
    let mut seq = first;
    for payload in &bad {
        seq += 1;
        insert_event_row(&db, acme, "call_started", seq, payload).await;
    }
    daemon.hub.wake();
    let (_, next) = daemon.publish(acme, "+15551230001").await;
    assert_eq!(next, seq + 1);
    assert_eq!(client.event(WAIT).await.id, next, "the feed goes on past the malformed rows");
    for id in first + 1..=seq {
        let warning = logs.wait_for(&["WARN", "feed hub: event", &format!("event {id} (call_started)")]).await;
        assert!(warning.contains("cannot be read"), "{warning}");
    }
    // A replay from the start skips them too, and the client is told where the log ends.
    let mut replayed = FeedClient::connect(daemon.addr, &token, "?since=0").await.unwrap();
    assert_eq!(replayed.events(2, WAIT).await.iter().map(|e| e.id).collect::<Vec<_>>(), [first, next]);
    let (_, last) = daemon.publish(acme, "+15551230002").await;
    assert_eq!(replayed.event(WAIT).await.id, last);
    logs.wait_for(&["WARN", "feed: replay skips event", &format!("event {}", first + 1)]).await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_malformed_event_row_never_stalls_the_feed_sqlite() {
    a_malformed_event_row_never_stalls_the_feed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_malformed_event_row_never_stalls_the_feed_postgres() {
    a_malformed_event_row_never_stalls_the_feed(Backend::Postgres).await;
}

/// Opens the feed over a raw socket and reads frames without ever answering a ping; returns the
/// code of the close frame the server sends.
async fn silent_client_close(addr: std::net::SocketAddr, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/feed HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    loop {
        let (first, second) = (tcp.read_u8().await.unwrap(), tcp.read_u8().await.unwrap());
        let len = match second & 0x7f {
            126 => u64::from(tcp.read_u16().await.unwrap()),
            127 => tcp.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        tcp.read_exact(&mut payload).await.unwrap();
        if first & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// A feed client speaking raw frames over a real socket, to send what a WebSocket library
/// would refuse to.
struct RawClient {
    tcp: tokio::net::TcpStream,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr, token: &str) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /v1/feed HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        RawClient { tcp }
    }

    /// Sends one frame: `first` is the FIN, RSV and opcode byte; masked as a client must unless
    /// `masked` is false.
    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let bit = if masked { 0x80 } else { 0 };
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(bit | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(bit | 126);
                frame.extend((len as u16).to_be_bytes());
            }
            len => {
                frame.push(bit | 127);
                frame.extend((len as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend(mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend(payload);
        }
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next frame from the server (opcode, payload); `None` once the connection ends.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let (first, second) = (self.tcp.read_u8().await?, self.tcp.read_u8().await?);
            assert_eq!(second & 0x80, 0, "server frames are not masked");
            let len = match second & 0x7f {
                126 => u64::from(self.tcp.read_u16().await?),
                127 => self.tcp.read_u64().await?,
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.tcp.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>((first & 0x0f, payload))
        };
        tokio::time::timeout(WAIT, read).await.expect("a frame or the end of the connection").ok()
    }

    /// The next frame of `opcode`, skipping the others (events, pings).
    async fn next_of(&mut self, opcode: u8) -> Option<Vec<u8>> {
        loop {
            match self.frame().await? {
                (op, payload) if op == opcode => return Some(payload),
                (0x8, payload) => panic!("closed while waiting for opcode {opcode}: {payload:?}"),
                _ => continue,
            }
        }
    }

    /// The server's close frame: its code (`None` for an empty one) and reason.
    async fn close(&mut self) -> (Option<u16>, String) {
        loop {
            match self.frame().await {
                Some((0x8, payload)) => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8(payload.get(2..).unwrap_or_default().to_vec()).unwrap();
                    return (code, reason);
                }
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// Client frames are read as RFC 6455 says: fragments reassembled with control frames between
/// them, pings answered, and every violation closing that connection (only) with the code the
/// RFC names: 1002 for a protocol error (unmasked, extension bits, a bad opcode, a fragmented or
/// oversized control frame, a continuation of nothing, a close code a peer may not send), 1007
/// for invalid UTF-8 (in a close reason too), 1009 for a message over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_frames_are_read_as_rfc_6455_says() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let token = daemon.token("acme").await;
    let acme = org_id(&db.store, "acme").await;

    let mut client = RawClient::connect(daemon.addr, &token).await;
    client.send(0x01, br#"{"filter":"#, true).await;
    client.send(0x89, b"are you there?", true).await;
    client.send(0x00, br#" {"types": "#, true).await;
    client.send(0x8A, b"unsolicited pong", true).await;
    client.send(0x80, br#"["call_started"]}}"#, true).await;
    let (mut pong, mut ack) = (None, None);
    while pong.is_none() || ack.is_none() {
        match client.frame().await.expect("the connection stays open") {
            (0xA, payload) => pong = Some(payload),
            (0x1, text) => {
                let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
                if value["type"] == "feed.filter" {
                    ack = Some(value);
                }
            }
            (0x8, payload) => panic!("closed: {payload:?}"),
            _ => {}
        }
    }
    assert_eq!(pong.unwrap(), b"are you there?", "a ping's pong carries its payload");
    let ack = ack.unwrap();
    assert_eq!(ack["filter"]["types"], serde_json::json!(["call_started"]), "the fragments make one message");
    client.send(0x82, b"\x01\x02", true).await;
    let error: serde_json::Value = serde_json::from_slice(&client.next_of(0x1).await.unwrap()).unwrap();
    assert_eq!(error["type"], "feed.error", "binary: {error}");
    let (_, id) = daemon.publish(acme, "+15551230000").await;
    let event: serde_json::Value = serde_json::from_slice(&client.next_of(0x1).await.unwrap()).unwrap();
    assert_eq!(event["id"], id, "the connection still works");

    let big = vec![b'x'; 40 * 1024];
    // (what, frames as (first byte, payload, masked), the close code expected)
    type Frames = Vec<(u8, Vec<u8>, bool)>;
    let mut cases: Vec<(String, Frames, u16)> = vec![
        ("unmasked".into(), vec![(0x81, b"{}".to_vec(), false)], 1002),
        ("extension bit".into(), vec![(0xC1, b"{}".to_vec(), true)], 1002),
        ("reserved data opcode".into(), vec![(0x83, b"{}".to_vec(), true)], 1002),
        ("reserved control opcode".into(), vec![(0x8B, Vec::new(), true)], 1002),
        ("fragmented ping".into(), vec![(0x09, b"p".to_vec(), true)], 1002),
        ("ping over 125 bytes".into(), vec![(0x89, vec![b'p'; 126], true)], 1002),
        ("continuation of nothing".into(), vec![(0x80, b"x".to_vec(), true)], 1002),
        (
            "new message inside a fragmented one".into(),
            vec![(0x01, b"a".to_vec(), true), (0x81, b"b".to_vec(), true)],
            1002,
        ),
        ("text not UTF-8".into(), vec![(0x81, vec![0xff, 0xfe], true)], 1007),
        ("one-byte close".into(), vec![(0x88, vec![3], true)], 1002),
        (
            "close reason not UTF-8".into(),
            vec![(0x88, [&1000u16.to_be_bytes()[..], &[0xce, 0xba, 0xe1, 0xbd]].concat(), true)],
            1007,
        ),
        ("message over the limit in fragments".into(), vec![(0x01, big.clone(), true), (0x80, big, true)], 1009),
    ];
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        cases.push((format!("close code {code}"), vec![(0x88, code.to_be_bytes().to_vec(), true)], 1002));
    }
    for (what, frames, expected) in cases {
        let mut client = RawClient::connect(daemon.addr, &token).await;
        client.next_of(0x1).await.unwrap(); // feed.ready
        for (first, payload, masked) in frames {
            client.send(first, &payload, masked).await;
        }
        let (code, reason) = client.close().await;
        assert_eq!(code, Some(expected), "{what}: {reason}");
        assert!(client.frame().await.is_none(), "{what}: nothing after the close frame");
    }
    // A client's close with a code a peer may send is answered with that code.
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
        let mut client = RawClient::connect(daemon.addr, &token).await;
        let payload = [&code.to_be_bytes()[..], "κόσμε".as_bytes()].concat();
        client.send(0x88, &payload, true).await;
        assert_eq!(client.close().await.0, Some(code), "close {code}");
    }
    let mut client = RawClient::connect(daemon.addr, &token).await;
    client.send(0x88, b"", true).await;
    client.close().await;

    // The server is healthy after all of it.
    let mut healthy = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
    let (_, id) = daemon.publish(acme, "+15551230001").await;
    assert_eq!(healthy.event(WAIT).await.id, id);
    daemon.stop().await;
}

/// Writes a `call_events` row directly, as another version of asterai (or a hand) would, with
/// `payload` as its JSON text.
async fn insert_event_row(db: &TestDb, org_id: i64, kind: &str, org_seq: i64, payload: &str) {
    let at = chrono::Utc::now();
    let columns = "INSERT INTO call_events (org_id, call_id, campaign_id, type, payload, at, org_seq)";
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let sql = format!("{columns} VALUES ($1, NULL, NULL, $2, $3, $4, $5)");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(org_id)
                .bind(kind)
                .bind(payload)
                .bind(at)
                .bind(org_seq)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let sql = format!("{columns} VALUES ($1, NULL, NULL, $2, $3::jsonb, $4, $5)");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(org_id)
                .bind(kind)
                .bind(payload)
                .bind(at)
                .bind(org_seq)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

/// Two daemons on one PostgreSQL: what one writes, the other's clients receive (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgres_share_the_feed() {
    let db = TestDb::new(Backend::Postgres).await;
    let one = TestDaemon::start(db.store.clone()).await;
    let two = TestDaemon::start(db.second_store().await).await;
    let token = one.token("acme").await;
    let acme = org_id(&db.store, "acme").await;
    let mut on_one = FeedClient::connect(one.addr, &token, "").await.unwrap();
    let mut on_two = FeedClient::connect(two.addr, &token, "").await.unwrap();
    let mut published = Vec::new();
    for i in 0..20 {
        let daemon = if i % 2 == 0 { &one } else { &two };
        published.push(daemon.publish(acme, "+15551230000").await.1);
    }
    let ids = |events: Vec<asterai::store::Event>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(on_one.events(20, WAIT).await), published);
    assert_eq!(ids(on_two.events(20, WAIT).await), published);
    one.stop().await;
    two.stop().await;
}

/// `/readyz` answers 503 while PostgreSQL is unreachable and 200 again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut proxy = support::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let store = Store::connect(&asterai::store::StoreOptions {
        url,
        max_connections: 4,
        connect_timeout: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let daemon = TestDaemon::start(store).await;
    let ready = || async { reqwest::get(daemon.url("/readyz")).await.unwrap() };
    assert_eq!(ready().await.status(), 200);

    proxy.stop();
    let mut status = 0;
    for _ in 0..50 {
        let response = ready().await;
        status = response.status().as_u16();
        if status == 503 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "not ready while the database is down");
    assert_eq!(reqwest::get(daemon.url("/healthz")).await.unwrap().status(), 200, "still alive");

    proxy.restart().await;
    for _ in 0..100 {
        status = ready().await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again once the database is back");
    daemon.stop().await;
}

/// `/readyz` answers 503 naming a supervised task that keeps failing (here one that panics on
/// every start), while `/healthz` still answers; the healthy tasks are listed when ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_task_that_cannot_run() {
    let db = TestDb::new(Backend::Sqlite).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let supervisor = asterai::supervise::Supervisor::with_backoff(stop.clone(), Duration::from_millis(20));
    supervisor.spawn("spool replay", |stop| async move {
        stop.cancelled().await;
        Ok(())
    });
    let daemon = TestDaemon::start_custom(
        db.store.clone(),
        feed_config(),
        "127.0.0.1:0".parse().unwrap(),
        Some(supervisor.clone()),
        Default::default(),
    )
    .await;
    let ready: serde_json::Value = reqwest::get(daemon.url("/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["tasks"]["spool replay"]["state"].as_str()),
        (Some("ready"), Some("running"))
    );

    supervisor.spawn("campaign runner", |_| async { panic!("boom in the runner") });
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        let response = reqwest::get(daemon.url("/readyz")).await.unwrap();
        if response.status() == 503 {
            body = response.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("campaign runner") && message.contains("boom in the runner"), "{body}");
    assert!(!message.contains("spool replay"), "only the failing task is named: {message}");
    assert_eq!(reqwest::get(daemon.url("/healthz")).await.unwrap().status(), 200, "still alive");
    assert!(supervisor.health()["campaign runner"].failures >= 1);
    stop.cancel();
    daemon.stop().await;
}

/// Every REST route checks its scope: a token with every scope but the one a route needs gets
/// 403 naming that scope; a token with just that scope gets through (whatever the route then
/// answers). A token in a REST URL is refused; the feed's upgrade accepts one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_scope() {
    use asterai::auth::{Scope, Scopes};
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let http = reqwest::Client::new();
    let routes = [
        ("GET", "/v1/calls", Scope::Monitor),
        ("GET", "/v1/calls/nope", Scope::Monitor),
        ("POST", "/v1/calls", Scope::Dial),
        ("GET", "/v1/campaigns", Scope::Monitor),
        ("POST", "/v1/campaigns", Scope::Dial),
        ("GET", "/v1/campaigns/1", Scope::Monitor),
        ("POST", "/v1/campaigns/1/contacts", Scope::Dial),
        ("POST", "/v1/campaigns/1/start", Scope::Dial),
        ("POST", "/v1/campaigns/1/pause", Scope::Dial),
        ("POST", "/v1/campaigns/1/stop", Scope::Dial),
        ("GET", "/v1/dnc", Scope::Dial),
        ("POST", "/v1/dnc", Scope::Dial),
        ("DELETE", "/v1/dnc/+15550001111", Scope::Admin),
        ("GET", "/v1/feed", Scope::Monitor),
    ];
    for (method, path, scope) in routes {
        let without = daemon.token_with("acme", Scope::ALL.into_iter().filter(|s| *s != scope).collect()).await;
        let with = daemon.token_with("acme", Scopes::from_iter([scope])).await;
        let send = |token: String| {
            let request = http.request(method.parse().unwrap(), daemon.url(path)).bearer_auth(token);
            async move { request.send().await.unwrap() }
        };
        let refused = send(without).await;
        assert_eq!(refused.status(), 403, "{method} {path} without {scope}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{scope}` scope")), "{method} {path}: {message}");
        let allowed = send(with).await.status().as_u16();
        assert!(![401, 403].contains(&allowed), "{method} {path} with {scope}: {allowed}");
    }
    // A wallboard's monitor token cannot place a call, start a campaign or remove a DNC entry.
    let wallboard = daemon.token_with("acme", Scopes::from_iter([Scope::Monitor])).await;
    let call = http
        .post(daemon.url("/v1/calls"))
        .bearer_auth(&wallboard)
        .json(&serde_json::json!({"to": "+15551230000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 403);

    // ?token= only on the WebSocket upgrades, which the message lists.
    let in_url = http.get(daemon.url(&format!("/v1/calls?token={wallboard}"))).send().await.unwrap();
    assert_eq!(in_url.status(), 401);
    let body: serde_json::Value = in_url.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    for upgrade in ["GET /v1/feed", "GET /v1/calls/{id}/listen", "GET /v1/calls/{id}/barge"] {
        assert!(message.contains(upgrade), "{message}");
    }
    let url = format!("ws://{}/v1/feed?token={wallboard}", daemon.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_ok(), "the feed takes ?token=");
    let dial_only = daemon.token_with("acme", Scopes::from_iter([Scope::Dial])).await;
    let (status, body) = FeedClient::connect(daemon.addr, &dial_only, "").await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    daemon.stop().await;
}

/// Tokens made before the HMAC scheme (an Argon2id hash, no scopes) keep working with every
/// scope they had, and their hash is replaced by the HMAC on first use; a wrong secret for a
/// known id is refused. New tokens are found by their HMAC alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_before_the_hmac_scheme_keep_working_and_are_upgraded() {
    use asterai::auth::{Authenticator, Scopes};
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::empty(backend).await;
        let mut migrator = db.store.migrator();
        migrator.migrations = std::borrow::Cow::Owned(migrator.migrations[..2].to_vec());
        let (id, secret) = ("0123456789abcdef", "old-secret-old-secret-old-secret-old-secret");
        let insert_old = |pool_url: String| async move {
            let hash = asterai::auth::hash_secret(secret);
            let at = chrono::Utc::now();
            macro_rules! old_rows {
                ($pool:expr) => {{
                    migrator.run($pool).await.unwrap();
                    sqlx::query("INSERT INTO organizations (slug, name, created_at) VALUES ('acme', 'Acme', $1)")
                        .bind(at)
                        .execute($pool)
                        .await
                        .unwrap();
                    sqlx::query("INSERT INTO api_tokens (id, org_id, name, secret_hash, created_at) SELECT $1, id, 'wallboard', $2, $3 FROM organizations")
                        .bind(id)
                        .bind(&hash)
                        .bind(at)
                        .execute($pool)
                        .await
                        .unwrap();
                }};
            }
            if pool_url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(&pool_url).await.unwrap();
                old_rows!(&pool);
            } else {
                let pool = sqlx::SqlitePool::connect(&pool_url).await.unwrap();
                old_rows!(&pool);
            }
        };
        insert_old(db.url.clone()).await;
        assert!(db.store.migrate().await.unwrap() >= 1, "{backend:?}: 0003 runs on the old database");
        let before = db.store.token(id).await.unwrap().unwrap();
        assert_eq!(before.scopes, ["monitor", "dial", "admin"], "{backend:?}: old tokens keep what they could do");
        assert!(before.secret_hash.starts_with("$argon2id$"));

        let auth = Authenticator::new(db.store.clone());
        let wrong = format!("ast_{id}_{}", "x".repeat(43));
        assert!(auth.authenticate(&wrong).await.is_err(), "{backend:?}: a wrong secret is refused");
        let old = format!("ast_{id}_{secret}");
        let principal = auth.authenticate(&old).await.unwrap();
        // What they could do then; `supervise` came later and is granted only on purpose.
        assert_eq!(
            (principal.org_slug.as_str(), principal.scopes),
            ("acme", Scopes::parse("monitor,dial,admin").unwrap())
        );
        let after = db.store.token(id).await.unwrap().unwrap();
        assert!(after.secret_hash.starts_with("hmac-sha256:"), "{backend:?}: upgraded on first use");
        assert_eq!(db.store.legacy_tokens().await.unwrap(), 0);
        // From now on the HMAC finds it, in a fresh daemon too.
        let fresh = Authenticator::new(db.store.clone());
        assert_eq!(fresh.authenticate(&old).await.unwrap().token_id, id);
        assert!(fresh.authenticate(&wrong).await.is_err());

        // A new token is stored as its HMAC only, and found by it.
        let acme = db.store.org_by_slug("acme").await.unwrap().unwrap();
        let created = asterai::auth::create_token(&db.store, acme.id, "new", Scopes::default()).await;
        assert!(created.is_err(), "a token needs a scope");
        let created = asterai::auth::create_token(&db.store, acme.id, "new", Scopes::all()).await.unwrap();
        let stored = db.store.token(&created.record.id).await.unwrap().unwrap();
        let secret = created.token.rsplit('_').next().unwrap();
        assert!(stored.secret_hash.starts_with("hmac-sha256:") && !stored.secret_hash.contains(secret));
        assert_eq!(fresh.authenticate(&created.token).await.unwrap().token_id, created.record.id);
        let (other_id, _) = created.token.trim_start_matches("ast_").split_once('_').unwrap();
        let swapped = format!("ast_{id}_{secret}");
        assert!(fresh.authenticate(&swapped).await.is_err(), "{backend:?}: the id must match the secret's row");
        assert_ne!(other_id, id);
    }
}

/// A database error answers 500 with a generic message and a reference; the database's own
/// text (table names, the driver's words) stays in the log under that reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_never_reaches_the_client() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let token = daemon.token("acme").await;
    let raw = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE calls RENAME TO calls_elsewhere").execute(&raw).await.unwrap();
    let response = reqwest::Client::new().get(daemon.url("/v1/calls")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    let reference = body["error"]["reference"].as_str().unwrap();
    assert!(message.starts_with("internal error") && message.contains(reference), "{body}");
    for leak in ["calls", "table", "sqlite", "database error", "returned from database"] {
        assert!(!message.to_lowercase().contains(leak), "the answer says {leak:?}: {body}");
    }
    daemon.stop().await;
}

/// The HTTP limits: a body over `max_body_bytes` gets 413 (a contact import may be larger), a
/// request still incomplete at `request_timeout` gets 408, the feed's WebSocket outlives the
/// timeout, and connections beyond `max_connections` wait until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_have_a_time_limit_a_body_limit_and_a_connection_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new(Backend::Sqlite).await;
    let limits = asterai::http::HttpLimits {
        max_connections: 3,
        request_timeout: Duration::from_secs(1),
        max_body_bytes: 4096,
        max_import_bytes: 1 << 20,
    };
    let daemon =
        TestDaemon::start_custom(db.store.clone(), feed_config(), "127.0.0.1:0".parse().unwrap(), None, limits).await;
    let token = daemon.token("acme").await;
    let http = reqwest::Client::new();

    let big = format!("{{\"number\": \"+15551230000\", \"reason\": \"{}\"}}", "x".repeat(8000));
    let response = http
        .post(daemon.url("/v1/dnc"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "over max_body_bytes");
    let campaign =
        db.store.create_campaign(org_id(&db.store, "acme").await, "c", &serde_json::json!({})).await.unwrap();
    let csv = format!("phone,notes\n+15551230000,{}\n", "y".repeat(8000));
    let response = http
        .post(daemon.url(&format!("/v1/campaigns/{}/contacts", campaign.id)))
        .bearer_auth(&token)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an import may be larger, up to max_import_bytes");

    // A client that sends half a body and stalls is answered 408 once the time is up.
    let mut slow = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let head = format!(
        "POST /v1/dnc HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"number\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), slow.read(&mut answer)).await.expect("an answer").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"), "{answer}");
    drop(slow);

    // The feed stays open past the timeout, and delivers.
    let mut feed = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, event_id) = daemon.publish(org_id(&db.store, "acme").await, "+15551239999").await;
    assert_eq!(feed.event(WAIT).await.id, event_id, "the feed outlived http.request_timeout");

    daemon.stop().await;

    // Two connections at most: two kept-alive clients fill the cap; a third waits for one.
    let limits = asterai::http::HttpLimits { max_connections: 2, ..Default::default() };
    let daemon =
        TestDaemon::start_custom(db.store.clone(), feed_config(), "127.0.0.1:0".parse().unwrap(), None, limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut answer)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
        held.push(socket);
    }
    let third = tokio::spawn({
        let url = daemon.url("/healthz");
        async move { reqwest::Client::builder().build().unwrap().get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a connection over the cap is not served while the cap is full");
    held.pop();
    let status = tokio::time::timeout(Duration::from_secs(30), third).await.expect("served once one closed").unwrap();
    assert_eq!(status, 200);
    daemon.stop().await;
}

/// Seen over the wire: the shapes the supervisors' clients parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_have_the_documented_shape() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let token = daemon.token("acme").await;
    let acme = org_id(&db.store, "acme").await;
    let mut client = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
    let (call, _) = daemon.publish(acme, "+15551230000").await;
    daemon.publisher.call_status(acme, &call, CallStatus::InProgress, Some("ANSWER")).await.unwrap();
    daemon
        .publisher
        .conversation_turn(
            acme,
            &NewTurn {
                call_id: call.clone(),
                turn: 3,
                caller: "how much is it?".into(),
                agent: "It is 20 dollars a month.".into(),
                emotion: Some("neutral".into()),
                intent: Some("question".into()),
                confidence: Some(0.91),
                latency: Latency {
                    endpoint: 1000,
                    stt: 310,
                    llm_first: 420,
                    tts_first: 180,
                    total: 1950,
                    overhead_us: None,
                    voice_to_voice: None,
                },
                interrupted: false,
                tools: Vec::new(),
            },
        )
        .await
        .unwrap();
    let events = client.events(3, WAIT).await;
    let json: Vec<serde_json::Value> = events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    for event in &json {
        for key in ["id", "type", "org", "call_id", "at", "data"] {
            assert!(event.get(key).is_some(), "{key} in {event}");
        }
    }
    assert_eq!(json[0]["data"]["direction"], "inbound");
    assert_eq!(
        json[1]["data"],
        serde_json::json!({"status": "in_progress", "previous": "initiated", "reason": "ANSWER"})
    );
    assert_eq!(
        json[2]["data"],
        serde_json::json!({"turn": 3, "caller": "how much is it?", "agent": "It is 20 dollars a month.", "emotion": "neutral",
            "intent": "question", "confidence": 0.91, "latency_ms": {"endpoint": 1000, "stt": 310, "llm_first": 420, "tts_first": 180, "total": 1950},
            "tools": []})
    );
    let ids: BTreeSet<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3);
    daemon.stop().await;
}
