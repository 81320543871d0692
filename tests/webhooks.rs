//! Webhooks: the outbox written with the events, the delivery worker against a real receiver
//! (an axum server that checks each signature), retries with an injected clock, two workers on
//! one PostgreSQL, dead deliveries and `retry`, the CLI, and organizations kept apart.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asterai::dialer::{Clock, ManualClock, SystemClock};
use asterai::feed::{Hub, Publisher};
use asterai::store::webhooks::{DeliveryStatus, NewWebhookEndpoint};
use asterai::store::{CallStatus, Direction, FinishCall, NewCall, NewTurn, Outcome, Store, StoreError};
use asterai::webhooks::{Worker, WorkerConfig};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use support::db::{Backend, TestDb};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec-test-0123456789";
const SECRET_REF: &str = "env:ASTERAI_SECRET_HOOKS";

// ---------------------------------------------------------------------------------------------
// The receiver

/// One request the receiver answered 2xx to.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    body: String,
    json: serde_json::Value,
}

#[derive(Default)]
struct Inbox {
    /// 0: answer 200; otherwise answer this status.
    fail_with: AtomicU16,
    /// How long each request takes, in milliseconds.
    delay_ms: AtomicU64,
    accepted: Mutex<Vec<Received>>,
    attempts: AtomicU64,
    bad_signatures: AtomicU64,
    in_flight: Mutex<HashMap<String, u32>>,
    /// Set when one delivery was being received twice at the same moment.
    overlapped: AtomicBool,
}

struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    stop: CancellationToken,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(addr: SocketAddr) -> Receiver {
        let inbox = Arc::new(Inbox::default());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(inbox.clone());
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(stopping.cancelled_owned()).await.unwrap();
        });
        Receiver { addr, inbox, stop }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted(&self) -> Vec<Received> {
        self.inbox.accepted.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.attempts.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp: i64 = header("x-asterai-timestamp").parse().unwrap_or_default();
    if !asterai::signing::verify(SECRET.as_bytes(), timestamp, &body, &header("x-asterai-signature")) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let json: serde_json::Value = serde_json::from_slice(&body).expect("the body is JSON");
    let delivery = header("x-asterai-delivery");
    assert_eq!(json["id"], delivery.as_str(), "the body's id is the delivery header");
    assert_eq!(json["type"], header("x-asterai-event").as_str());
    {
        let mut flying = inbox.in_flight.lock().unwrap();
        let n = flying.entry(delivery.clone()).or_default();
        *n += 1;
        if *n > 1 {
            inbox.overlapped.store(true, Ordering::SeqCst);
        }
    }
    let delay = inbox.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    *inbox.in_flight.lock().unwrap().get_mut(&delivery).unwrap() -= 1;
    let fail = inbox.fail_with.load(Ordering::SeqCst);
    if fail != 0 {
        return StatusCode::from_u16(fail).unwrap();
    }
    let body = String::from_utf8(body.to_vec()).unwrap();
    inbox.accepted.lock().unwrap().push(Received { delivery, body, json });
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn env() -> asterai::webhooks::Env {
    Arc::new(|name| (name == "ASTERAI_SECRET_HOOKS").then(|| SECRET.to_owned()))
}

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 16,
        timeout: Duration::from_secs(10),
        retry_for: Duration::from_secs(24 * 3600),
        poll_interval: Duration::from_millis(20),
    }
}

fn worker(store: &Store, clock: Arc<dyn Clock>, name: &str) -> Worker {
    Worker::new(store.clone(), clock, config(), name).with_env(env())
}

async fn endpoint(store: &Store, org_id: i64, url: &str, events: &[&str]) -> i64 {
    let new = NewWebhookEndpoint {
        org_id,
        url: url.to_owned(),
        secret: SECRET_REF.to_owned(),
        events: events.iter().map(|e| e.to_string()).collect(),
        enabled: true,
    };
    store.add_webhook_endpoint(&new).await.unwrap().id
}

const ALL: &[&str] = &["call.started", "call.ended", "call.analyzed"];

/// A whole call through the publisher: started, a turn, ended, analyzed. Returns its id.
async fn call(publisher: &Publisher, org_id: i64, n: usize) -> String {
    let new = NewCall {
        id: None,
        org_id,
        direction: Direction::Inbound,
        from: format!("+1555000{n:04}"),
        to: "+15550009999".into(),
        channel: None,
        campaign_id: None,
        contact_id: None,
    };
    let call = publisher.call_started(&new).await.unwrap();
    let turn = NewTurn {
        call_id: call.id.clone(),
        turn: 1,
        caller: "hello".into(),
        agent: "hi".into(),
        emotion: None,
        intent: None,
        confidence: None,
        latency: Default::default(),
        tools: Vec::new(),
        interrupted: false,
    };
    publisher.conversation_turn(org_id, &turn).await.unwrap();
    let finish = FinishCall {
        status: CallStatus::Completed,
        reason: None,
        outcome: Some(Outcome::Interested),
        outcome_reason: None,
        emotion: None,
        intent_score: None,
    };
    publisher.call_ended(org_id, &call.id, &finish).await.unwrap();
    publisher.call_analyzed(org_id, &call.id, &serde_json::json!({"summary": format!("call {n}")})).await.unwrap();
    call.id
}

/// Every delivery of `org_id` (status, body) by id.
async fn outbox(store: &Store, org_id: i64) -> BTreeMap<String, (DeliveryStatus, String)> {
    let rows = store.webhook_deliveries(org_id, None, 10_000).await.unwrap();
    rows.into_iter().map(|d| (d.id, (d.status, d.body))).collect()
}

/// Checks what a receiver accepted against the outbox: every delivery once, exactly the body
/// recorded, and each call's events in order (started, ended, analyzed; event ids rising).
fn check_against_outbox(accepted: &[Received], outbox: &BTreeMap<String, (DeliveryStatus, String)>, org: &str) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for r in accepted {
        *seen.entry(&r.delivery).or_default() += 1;
        let (status, body) = outbox.get(&r.delivery).unwrap_or_else(|| panic!("{} is not in the outbox", r.delivery));
        assert_eq!(*status, DeliveryStatus::Delivered);
        assert_eq!(&r.body, body, "the body sent is the body recorded");
        assert_eq!(r.json["org"], org);
    }
    assert_eq!(seen.len(), outbox.len(), "every delivery arrived");
    assert!(seen.values().all(|n| *n == 1), "each delivery arrived once: {seen:?}");
    let mut calls: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for r in accepted {
        let call = r.json["call_id"].as_str().unwrap().to_owned();
        calls
            .entry(call)
            .or_default()
            .push((r.json["type"].as_str().unwrap().to_owned(), r.json["event_id"].as_i64().unwrap()));
    }
    for (call, events) in calls {
        let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["call.started", "call.ended", "call.analyzed"], "call {call}'s events in order");
        assert!(events.windows(2).all(|w| w[0].1 < w[1].1), "call {call}'s event ids rise: {events:?}");
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setup(backend: Backend) -> (TestDb, Publisher, i64) {
    support::init();
    let db = TestDb::new(backend).await;
    let org = db.store.create_org("acme", "Acme Inc.").await.unwrap().id;
    let publisher = Publisher::new(db.store.clone(), Hub::new());
    (db, publisher, org)
}

// ---------------------------------------------------------------------------------------------
// The outbox is written with the event

async fn outbox_is_written_with_the_event(backend: Backend) {
    let (db, publisher, org) = setup(backend).await;
    let store = &db.store;
    // No endpoint: nothing queued.
    call(&publisher, org, 0).await;
    assert!(outbox(store, org).await.is_empty());
    let all = endpoint(store, org, "http://127.0.0.1:9/all", ALL).await;
    let ended_only = endpoint(store, org, "http://127.0.0.1:9/ended", &["call.ended"]).await;
    let off = endpoint(store, org, "http://127.0.0.1:9/off", ALL).await;
    store.set_webhook_endpoint_enabled(org, off, false).await.unwrap();
    let id = call(&publisher, org, 1).await;
    // Each publisher call returned after its transaction: the rows are there already.
    let rows = store.webhook_deliveries(org, None, 100).await.unwrap();
    let mut kinds: Vec<(i64, String)> = rows.iter().map(|d| (d.endpoint_id, d.kind.clone())).collect();
    kinds.sort();
    let mut want = vec![
        (all, "call.started".to_owned()),
        (all, "call.ended".to_owned()),
        (all, "call.analyzed".to_owned()),
        (ended_only, "call.ended".to_owned()),
    ];
    want.sort();
    assert_eq!(kinds, want);
    for d in &rows {
        assert_eq!((d.status, d.attempts, d.call_id.as_str()), (DeliveryStatus::Pending, 0, id.as_str()));
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["id"], d.id.as_str());
        assert_eq!(body["call_id"], id.as_str());
        assert_eq!(body["org"], "acme");
        if d.kind == "call.analyzed" {
            assert_eq!(body["data"]["summary"], "call 1");
        }
        if d.kind == "call.ended" {
            assert_eq!(body["data"]["outcome"], "interested");
        }
    }
    // The event ids are the feed's.
    let events = store.events_after(org, 0, 100).await.unwrap().events;
    let analyzed = events.iter().rfind(|e| e.kind == asterai::store::EventKind::CallAnalyzed).unwrap();
    assert!(rows.iter().any(|d| d.kind == "call.analyzed"
        && serde_json::from_str::<serde_json::Value>(&d.body).unwrap()["event_id"] == analyzed.id));
    // A removed endpoint gets nothing more, and its pending deliveries are dead.
    assert_eq!(store.remove_webhook_endpoint(org, ended_only).await.unwrap(), 1);
    call(&publisher, org, 2).await;
    let dead = store.webhook_deliveries(org, Some(DeliveryStatus::Dead), 100).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("the endpoint was removed"));
    assert_eq!(store.webhook_deliveries(org, Some(DeliveryStatus::Pending), 100).await.unwrap().len(), 6);
    assert_eq!(store.webhook_endpoints(org).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_is_written_with_the_event_sqlite() {
    outbox_is_written_with_the_event(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_is_written_with_the_event_postgres() {
    outbox_is_written_with_the_event(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// A receiver gets each call's events, signed, in order

async fn events_arrive_signed_and_in_order(backend: Backend) {
    let (db, publisher, org) = setup(backend).await;
    let receiver = Receiver::start().await;
    endpoint(&db.store, org, &receiver.url(), ALL).await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker(&db.store, Arc::new(SystemClock), "daemon-a").run(stop.clone()));
    for n in 0..6 {
        call(&publisher, org, n).await;
    }
    wait_for("18 deliveries", async || receiver.accepted().len() >= 18).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(receiver.inbox.bad_signatures.load(Ordering::SeqCst), 0);
    check_against_outbox(&receiver.accepted(), &outbox(&db.store, org).await, "acme");
    assert_eq!(db.store.webhook_backlog().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_in_order_sqlite() {
    events_arrive_signed_and_in_order(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_in_order_postgres() {
    events_arrive_signed_and_in_order(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// The receiver down, the daemon restarted: nothing lost, nothing out of order

async fn receiver_down_and_restarts_lose_nothing(backend: Backend) {
    let (db, publisher, org) = setup(backend).await;
    // A port nobody listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    endpoint(&db.store, org, &format!("http://{port}/hook"), ALL).await;
    for n in 0..5 {
        call(&publisher, org, n).await;
    }
    let clock = Arc::new(ManualClock::new(asterai::store::now()));
    let first = worker(&db.store, clock.clone(), "daemon-a");
    // Refused: one attempt per call (a call's later events wait for its first).
    assert_eq!(first.run_once().await.unwrap(), 5);
    let pending = db.store.webhook_deliveries(org, Some(DeliveryStatus::Pending), 100).await.unwrap();
    assert_eq!(pending.len(), 15);
    let tried: Vec<_> = pending.iter().filter(|d| d.attempts == 1).collect();
    assert_eq!(tried.len(), 5);
    assert!(tried.iter().all(|d| d.kind == "call.started" && d.last_error.as_deref().unwrap().contains("connect")));
    // A call's later deliveries wait behind its first: moved to its next attempt.
    for later in pending.iter().filter(|d| d.attempts == 0) {
        let first_of_call = tried.iter().find(|d| d.call_id == later.call_id).unwrap();
        assert_eq!(later.next_attempt_at, first_of_call.next_attempt_at);
        assert!(later.next_attempt_at > clock.now());
    }
    // Nothing is due again before its backoff.
    assert_eq!(first.run_once().await.unwrap(), 0);

    // The receiver comes up answering 500.
    let receiver = Receiver::start_on(port).await;
    receiver.inbox.fail_with.store(500, Ordering::SeqCst);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(first.run_once().await.unwrap(), 5);
    assert_eq!(receiver.inbox.attempts.load(Ordering::SeqCst), 5);
    let failed = db.store.webhook_deliveries(org, Some(DeliveryStatus::Pending), 100).await.unwrap();
    assert!(failed.iter().filter(|d| d.attempts == 2).all(|d| d.last_status == Some(500)));

    // The daemon dies holding rows: claimed (leased), never answered.
    clock.advance(Duration::from_secs(3600));
    let held = db.store.claim_webhook_deliveries("daemon-a", clock.now(), config().lease(), 100).await.unwrap();
    assert_eq!(held.len(), 5);
    receiver.inbox.fail_with.store(0, Ordering::SeqCst);

    // Another daemon, on its own pool: the leased rows are not its own until the lease ends.
    let other_store = db.second_store().await;
    let second = worker(&other_store, clock.clone(), "daemon-b");
    assert_eq!(second.run_once().await.unwrap(), 0, "rows under another daemon's lease are left alone");
    clock.advance(config().lease() + Duration::from_secs(1));
    // A restarted daemon-a would take them back at once; daemon-b takes them after the lease.
    let mut rounds = 0;
    loop {
        let sent = second.run_once().await.unwrap();
        if sent == 0 && db.store.webhook_backlog().await.unwrap() == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 20, "the outbox does not drain");
        clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(receiver.inbox.bad_signatures.load(Ordering::SeqCst), 0);
    check_against_outbox(&receiver.accepted(), &outbox(&db.store, org).await, "acme");
    let delivered = db.store.webhook_deliveries(org, Some(DeliveryStatus::Delivered), 100).await.unwrap();
    assert_eq!(delivered.len(), 15);
    assert!(delivered.iter().filter(|d| d.kind == "call.started").all(|d| d.attempts == 3), "refused, 500, then 2xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_and_restarts_lose_nothing_sqlite() {
    receiver_down_and_restarts_lose_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_and_restarts_lose_nothing_postgres() {
    receiver_down_and_restarts_lose_nothing(Backend::Postgres).await;
}

/// A worker that starts again under its own name takes back the rows it held at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_takes_its_own_rows_back() {
    let (db, publisher, org) = setup(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    endpoint(&db.store, org, &receiver.url(), ALL).await;
    call(&publisher, org, 0).await;
    let clock = Arc::new(ManualClock::new(asterai::store::now()));
    let held = db.store.claim_webhook_deliveries("daemon-a", clock.now(), config().lease(), 100).await.unwrap();
    assert_eq!(held.len(), 1);
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker(&db.store, clock.clone(), "daemon-a").run(stop.clone()));
    wait_for("3 deliveries", async || receiver.accepted().len() >= 3).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    check_against_outbox(&receiver.accepted(), &outbox(&db.store, org).await, "acme");
}

// ---------------------------------------------------------------------------------------------
// Two workers on one PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_send_one_row_at_once() {
    let (db, publisher, org) = setup(Backend::Postgres).await;
    let receiver = Receiver::start().await;
    receiver.inbox.delay_ms.store(5, Ordering::SeqCst);
    endpoint(&db.store, org, &receiver.url(), ALL).await;
    for n in 0..40 {
        call(&publisher, org, n).await;
    }
    let stop = CancellationToken::new();
    let other = db.second_store().await;
    let a = tokio::spawn(worker(&db.store, Arc::new(SystemClock), "daemon-a").run(stop.clone()));
    let b = tokio::spawn(worker(&other, Arc::new(SystemClock), "daemon-b").run(stop.clone()));
    wait_for("120 deliveries", async || db.store.webhook_backlog().await.unwrap() == 0).await;
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert!(!receiver.inbox.overlapped.load(Ordering::SeqCst), "one delivery was sent by two workers at once");
    check_against_outbox(&receiver.accepted(), &outbox(&db.store, org).await, "acme");
    assert_eq!(receiver.inbox.attempts.load(Ordering::SeqCst), 120);
}

// ---------------------------------------------------------------------------------------------
// Dead after the window; retry

async fn dead_after_the_window_and_retried(backend: Backend) {
    let (db, publisher, org) = setup(backend).await;
    let receiver = Receiver::start().await;
    receiver.inbox.fail_with.store(503, Ordering::SeqCst);
    endpoint(&db.store, org, &receiver.url(), ALL).await;
    let call_id = call(&publisher, org, 0).await;
    let clock = Arc::new(ManualClock::new(asterai::store::now()));
    let w = worker(&db.store, clock.clone(), "daemon-a");
    assert_eq!(w.run_once().await.unwrap(), 1);
    // Retried for the whole window: still pending just before 24 h.
    clock.advance(Duration::from_secs(24 * 3600 - 60));
    assert_eq!(w.run_once().await.unwrap(), 1);
    let started = |rows: &[asterai::store::webhooks::WebhookDelivery]| {
        rows.iter().find(|d| d.kind == "call.started").cloned().unwrap()
    };
    let first = started(&db.store.webhook_deliveries(org, None, 100).await.unwrap());
    assert_eq!((first.status, first.attempts), (DeliveryStatus::Pending, 2));
    // The first failure after the window: dead, still listed with why.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(w.run_once().await.unwrap(), 1);
    let dead = db.store.webhook_deliveries(org, Some(DeliveryStatus::Dead), 100).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), (first.id.as_str(), 3));
    assert!(dead[0].last_error.as_deref().unwrap().contains("503"), "{:?}", dead[0].last_error);
    // The call's next event goes now (its first attempt starts its own window: not dead at once).
    assert_eq!(w.run_once().await.unwrap(), 1);
    let ended = db.store.webhook_deliveries(org, Some(DeliveryStatus::Pending), 100).await.unwrap();
    assert!(ended.iter().any(|d| d.kind == "call.ended" && d.attempts == 1));

    // Revived: pending, due now, and before the call's later events again.
    receiver.inbox.fail_with.store(0, Ordering::SeqCst);
    db.store.retry_webhook_delivery(org, &first.id, clock.now()).await.unwrap();
    assert_eq!(w.run_once().await.unwrap(), 1);
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(receiver.accepted()[0].delivery, first.id);
    // A delivered one cannot be retried; an unknown one is not found.
    assert!(matches!(db.store.retry_webhook_delivery(org, &first.id, clock.now()).await, Err(StoreError::Conflict(_))));
    assert!(matches!(db.store.retry_webhook_delivery(org, "nope", clock.now()).await, Err(StoreError::NotFound(_))));
    for _ in 0..10 {
        clock.advance(Duration::from_secs(3600));
        w.run_once().await.unwrap();
    }
    let accepted = receiver.accepted();
    let types: Vec<&str> = accepted.iter().map(|r| r.json["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["call.started", "call.ended", "call.analyzed"]);
    assert!(accepted.iter().all(|r| r.json["call_id"] == call_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_after_the_window_and_retried_sqlite() {
    dead_after_the_window_and_retried(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_after_the_window_and_retried_postgres() {
    dead_after_the_window_and_retried(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// Organizations apart

async fn organizations_are_kept_apart(backend: Backend) {
    let (db, publisher, acme) = setup(backend).await;
    let globex = db.store.create_org("globex", "Globex").await.unwrap().id;
    let (to_acme, to_globex) = (Receiver::start().await, Receiver::start().await);
    let acme_endpoint = endpoint(&db.store, acme, &to_acme.url(), ALL).await;
    let globex_endpoint = endpoint(&db.store, globex, &to_globex.url(), ALL).await;
    let mut calls = BTreeMap::new();
    for n in 0..3 {
        calls.insert(call(&publisher, acme, n).await, "acme");
        calls.insert(call(&publisher, globex, 10 + n).await, "globex");
    }
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker(&db.store, Arc::new(SystemClock), "daemon-a").run(stop.clone()));
    wait_for("9 deliveries each", async || to_acme.accepted().len() >= 9 && to_globex.accepted().len() >= 9).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    for (receiver, org, slug) in [(&to_acme, acme, "acme"), (&to_globex, globex, "globex")] {
        check_against_outbox(&receiver.accepted(), &outbox(&db.store, org).await, slug);
        for r in receiver.accepted() {
            assert_eq!(calls[r.json["call_id"].as_str().unwrap()], slug, "{slug}'s endpoint got another's call");
        }
    }
    // One organization cannot touch the other's endpoints or deliveries.
    let globex_delivery = db.store.webhook_deliveries(globex, None, 1).await.unwrap().remove(0);
    assert!(db.store.webhook_delivery(acme, &globex_delivery.id).await.unwrap().is_none());
    assert!(matches!(
        db.store.retry_webhook_delivery(acme, &globex_delivery.id, asterai::store::now()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        db.store.set_webhook_endpoint_enabled(acme, globex_endpoint, false).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(db.store.remove_webhook_endpoint(acme, globex_endpoint).await, Err(StoreError::NotFound(_))));
    assert_eq!(db.store.retry_dead_webhooks(acme, asterai::store::now()).await.unwrap(), 0);
    let acme_endpoints = db.store.webhook_endpoints(acme).await.unwrap();
    assert_eq!(acme_endpoints.iter().map(|e| e.id).collect::<Vec<_>>(), [acme_endpoint]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_are_kept_apart_sqlite() {
    organizations_are_kept_apart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_are_kept_apart_postgres() {
    organizations_are_kept_apart(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// The CLI

fn cli(dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = support::daemon::command(dir).env("ASTERAI_DATABASE_URL", url).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

async fn cli_adds_lists_and_retries(backend: Backend) {
    let (db, publisher, org) = setup(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let receiver = Receiver::start().await;
    receiver.inbox.fail_with.store(500, Ordering::SeqCst);

    let (ok, _, err) =
        cli(dir, &db.url, &["webhooks", "add", "--org", "acme", "--url", &receiver.url(), "--secret", "hunter2"]);
    assert!(!ok && err.contains("env:ASTERAI_SECRET_") && !err.contains("hunter2"), "{err}");
    let (ok, out, err) = cli(
        dir,
        &db.url,
        &[
            "webhooks",
            "add",
            "--org",
            "acme",
            "--url",
            &receiver.url(),
            "--secret",
            SECRET_REF,
            "--events",
            "call.started,call.ended",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("call.started, call.ended") && out.contains("ASTERAI_SECRET_HOOKS"), "{out}");
    let (ok, out, _) = cli(dir, &db.url, &["webhooks", "endpoints", "--org", "acme", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && listed["endpoints"][0]["secret"] == SECRET_REF, "{out}");
    assert!(!out.contains(SECRET));

    call(&publisher, org, 0).await;
    let clock = Arc::new(ManualClock::new(asterai::store::now()));
    let w = worker(&db.store, clock.clone(), "daemon-a");
    w.run_once().await.unwrap();
    clock.advance(Duration::from_secs(25 * 3600));
    w.run_once().await.unwrap();
    let (ok, out, err) = cli(dir, &db.url, &["webhooks", "list", "--org", "acme", "--status", "dead", "--json"]);
    assert!(ok, "{err}");
    let dead: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dead = dead["deliveries"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{out}");
    assert_eq!((dead[0]["type"].as_str(), dead[0]["status"].as_str()), (Some("call.started"), Some("dead")));
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    let (ok, out, _) = cli(dir, &db.url, &["webhooks", "list", "--org", "acme"]);
    assert!(ok && out.contains(&id) && out.contains("dead") && out.contains("500"), "{out}");
    let (ok, _, err) = cli(dir, &db.url, &["webhooks", "list", "--org", "acme", "--status", "lost"]);
    assert!(!ok && err.contains("pending, delivered, dead"), "{err}");

    let (ok, out, err) = cli(dir, &db.url, &["webhooks", "retry", "--org", "acme", "--dead"]);
    assert!(ok && out.ends_with(": 1\n"), "{out}{err}");
    assert_eq!(db.store.webhook_delivery(org, &id).await.unwrap().unwrap().status, DeliveryStatus::Pending);
    let (ok, _, err) = cli(dir, &db.url, &["webhooks", "retry", "--org", "acme", "no-such-delivery"]);
    assert!(!ok && err.contains("no webhook delivery"), "{err}");
    let (ok, out, err) = cli(dir, &db.url, &["webhooks", "retry", "--org", "acme", &id]);
    assert!(ok && out.contains(&id), "{out}{err}");
    receiver.inbox.fail_with.store(0, Ordering::SeqCst);
    clock.set(asterai::store::now());
    assert_eq!(w.run_once().await.unwrap(), 1);
    assert_eq!(receiver.accepted()[0].delivery, id);

    // Changing commands are in the audit log; reading ones are not.
    let log = db.store.audit_log(Some(org), 0, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["webhooks add", "webhooks retry", "webhooks retry"], "{log:?}");
    assert!(log.iter().all(|e| !e.detail.to_string().contains(SECRET)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_adds_lists_and_retries_sqlite() {
    cli_adds_lists_and_retries(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_adds_lists_and_retries_postgres() {
    cli_adds_lists_and_retries(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// The real daemon: started by `asterai serve`, stopped and started again

fn serve(dir: tempfile::TempDir) -> support::daemon::Daemon {
    let mut cmd = support::daemon::command(dir.path());
    cmd.arg("serve")
        .env("ASTERAI_AGI_LISTEN", "127.0.0.1:0")
        .env("ASTERAI_HTTP_LISTEN", "127.0.0.1:0")
        .env("ASTERAI_WEBHOOKS_POLL_INTERVAL", "50ms")
        .env("ASTERAI_SECRET_HOOKS", SECRET)
        .stdout(std::process::Stdio::null());
    support::daemon::Daemon::spawn(cmd, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_across_a_restart() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("asterai.db").display());
    assert!(cli(dir.path(), &sqlite, &["org", "create", "acme"]).0);
    let url = format!("http://{port}/hook");
    let (ok, _, err) =
        cli(dir.path(), &sqlite, &["webhooks", "add", "--org", "acme", "--url", &url, "--secret", SECRET_REF]);
    assert!(ok, "{err}");

    let mut daemon = serve(dir);
    let http = daemon.listener("HTTP");
    let store = Store::connect(&support::db::options(&sqlite)).await.unwrap();
    let org = store.require_org("acme").await.unwrap().id;
    let publisher = Publisher::new(store.clone(), Hub::new());
    for n in 0..3 {
        call(&publisher, org, n).await;
    }
    // Nothing listens yet: each call's first delivery is tried and fails.
    wait_for("a failed attempt per call", async || {
        let rows = store.webhook_deliveries(org, None, 100).await.unwrap();
        rows.iter().filter(|d| d.attempts > 0 && d.last_error.is_some()).count() == 3
    })
    .await;
    let ready: serde_json::Value = reqwest::get(format!("http://{http}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["tasks"]["webhook deliveries"]["state"], "running", "{ready}");
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(30)).success());

    // The receiver comes up while the daemon is down; the failed ones are made due now.
    let receiver = Receiver::start_on(port).await;
    for d in store.webhook_deliveries(org, Some(DeliveryStatus::Pending), 100).await.unwrap() {
        if d.attempts > 0 {
            let (ok, _, err) = cli(daemon.dir.path(), &sqlite, &["webhooks", "retry", "--org", "acme", &d.id]);
            assert!(ok, "{err}");
        }
    }
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    drop(daemon);
    let mut daemon = serve(dir);
    wait_for("9 deliveries", async || receiver.accepted().len() >= 9).await;
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(30)).success());
    check_against_outbox(&receiver.accepted(), &outbox(&store, org).await, "acme");
    assert_eq!(receiver.inbox.bad_signatures.load(Ordering::SeqCst), 0);
}
