//! The supervisors' monitor page in headless Chromium, against the daemon's real HTTP side: the
//! page is loaded from `/`, signs in with a real token, and follows calls published through the
//! event path (store, then hub, then feed).

mod support;

use asterai::feed::{Hub, Publisher};
use asterai::store::{CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Outcome, Store};
use serde_json::Value;
use support::browser::{Browser, output_dir};
use support::db::{Backend, TestDb};
use support::http::{TestDaemon, feed_config};

async fn daemon() -> (TestDb, TestDaemon) {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    (db, daemon)
}

async fn org_id(store: &Store, slug: &str) -> i64 {
    store.org_by_slug(slug).await.unwrap().unwrap().id
}

/// Opens the page and signs in with `token`; returns once the feed is live.
async fn signed_in(daemon: &TestDaemon, token: &str) -> Browser {
    let mut browser = Browser::start(1280, 800).await;
    browser.goto(&daemon.url("/")).await;
    sign_in(&mut browser, token).await;
    browser.wait_for("document.querySelector('#conn').dataset.state === 'live'", "the feed is live").await;
    browser
}

async fn sign_in(browser: &mut Browser, token: &str) {
    browser.wait_for("document.querySelector('#signin')", "the sign-in form shows").await;
    browser
        .eval(&format!(
            "document.querySelector('#token').value = {}; document.querySelector('#signin').requestSubmit(); true",
            Value::from(token)
        ))
        .await;
}

fn visible(selector: &str) -> String {
    format!("(e => e && e.offsetParent !== null)(document.querySelector({}))", Value::from(selector))
}

fn new_call(org_id: i64, from: &str) -> NewCall {
    NewCall {
        id: None,
        org_id,
        direction: Direction::Inbound,
        from: from.into(),
        to: "+15557654321".into(),
        channel: Some("PJSIP/trunk-00000001".into()),
        campaign_id: None,
        contact_id: None,
    }
}

fn turn(call_id: &str, n: i32) -> NewTurn {
    NewTurn {
        call_id: call_id.into(),
        turn: n,
        caller: if n == 0 { String::new() } else { format!("caller line {n}") },
        agent: format!("agent line {n}"),
        emotion: (n > 0).then(|| "neutral".into()),
        intent: (n > 0).then(|| "question".into()),
        confidence: (n > 0).then_some(0.8),
        latency: Latency {
            endpoint: 1000,
            stt: 300,
            llm_first: 400,
            tts_first: 200,
            total: 1900,
            overhead_us: None,
            voice_to_voice: None,
        },
        interrupted: false,
        tools: Vec::new(),
    }
}

fn finish() -> FinishCall {
    FinishCall {
        status: CallStatus::Completed,
        reason: Some("caller said goodbye".into()),
        outcome: Some(Outcome::Interested),
        outcome_reason: None,
        emotion: Some("positive".into()),
        intent_score: Some(0.9),
    }
}

/// The turns the page shows for a call, in page order (each checked against its own text), and
/// the turn numbers it applied.
fn shown_turns(call_id: &str) -> String {
    format!(
        "JSON.stringify([...document.querySelectorAll('#call-view .turn')]
            .filter(t => t.querySelector('.bubble.agent').textContent.includes('agent line ' + t.dataset.turn))
            .map(t => Number(t.dataset.turn)))
            + '|' + JSON.stringify(window.asteraiState.calls.get({id}).turnNumbers)",
        id = Value::from(call_id)
    )
}

#[tokio::test]
async fn a_bad_token_is_refused_and_a_good_one_shows_the_page() {
    let (_db, daemon) = daemon().await;
    let token = daemon.token("acme").await;
    let mut browser = Browser::start(1280, 800).await;
    browser.goto(&daemon.url("/")).await;

    sign_in(&mut browser, "not-a-token").await;
    browser.wait_for(&visible("#signin-error"), "the error shows").await;
    let error = browser.eval("document.querySelector('#signin-error').textContent").await;
    assert!(error.as_str().unwrap().contains("refused"), "{error}");
    assert_eq!(browser.eval("sessionStorage.getItem('asterai.token')").await, Value::Null);
    assert!(!browser.eval(&visible("#app")).await.as_bool().unwrap());

    sign_in(&mut browser, &token).await;
    browser.wait_for(&visible("#app"), "the page shows").await;
    browser.wait_for("document.querySelector('#conn').dataset.state === 'live'", "the feed is live").await;
    assert_eq!(browser.eval("sessionStorage.getItem('asterai.token')").await, Value::from(token.as_str()));
    assert_eq!(browser.eval("localStorage.length").await, Value::from(0));
    // The Content-Security-Policy allows this origin's feed (live above) and no other WebSocket.
    let elsewhere = format!("ws://127.0.0.2:{}/v1/feed", daemon.addr.port());
    let attempt = browser
        .eval(&format!(
            "new Promise(resolve => {{
                document.addEventListener('securitypolicyviolation',
                    e => resolve('blocked ' + e.violatedDirective), {{ once: true }});
                try {{
                    const ws = new WebSocket({});
                    ws.onopen = () => resolve('opened');
                    ws.onerror = () => setTimeout(() => resolve('failed without a violation'), 1000);
                }} catch (e) {{ resolve('threw ' + e.name); }}
            }})",
            Value::from(elsewhere)
        ))
        .await;
    let attempt = attempt.as_str().unwrap_or_default();
    assert!(attempt.starts_with("blocked connect-src") || attempt == "threw SecurityError", "{attempt}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_call_appears_streams_its_turns_in_order_and_moves_to_history() {
    let (_db, daemon) = daemon().await;
    let token = daemon.token("acme").await;
    let acme = org_id(&daemon.store, "acme").await;
    let publisher = &daemon.publisher;
    // A call that was already going on when the page opened comes from the snapshot.
    let earlier = publisher.call_started(&new_call(acme, "+15550000001")).await.unwrap();
    publisher.call_status(earlier.org_id, &earlier.id, CallStatus::InProgress, None).await.unwrap();

    let mut browser = signed_in(&daemon, &token).await;
    let row = |id: &str| format!("document.querySelector('#active .call-row[data-call-id=\"{id}\"]')");
    browser.wait_for(&row(&earlier.id), "the earlier call is listed").await;

    let call = publisher.call_started(&new_call(acme, "+15551234567")).await.unwrap();
    browser.wait_for(&row(&call.id), "the new call appears").await;
    let listed = browser.eval(&format!("{}.textContent", row(&call.id))).await;
    let listed = listed.as_str().unwrap();
    assert!(listed.contains("4567") && !listed.contains("1234567"), "the number is masked: {listed}");
    browser.eval(&format!("{}.querySelector('.number').click(); true", row(&call.id))).await;
    browser
        .wait_for(&format!("{}.textContent.includes('+15551234567')", row(&call.id)), "a click shows the number")
        .await;

    publisher.call_status(call.org_id, &call.id, CallStatus::InProgress, None).await.unwrap();
    publisher.conversation_turn(call.org_id, &turn(&call.id, 0)).await.unwrap();
    publisher.conversation_turn(call.org_id, &turn(&call.id, 1)).await.unwrap();
    browser.eval(&format!("{}.click(); true", row(&call.id))).await;
    browser.wait_for(&visible("#call-view"), "the call opens").await;
    for n in 2..=4 {
        publisher.conversation_turn(call.org_id, &turn(&call.id, n)).await.unwrap();
    }
    let expected = "[0,1,2,3,4]|[0,1,2,3,4]";
    browser
        .wait_for(&format!("({}) === {}", shown_turns(&call.id), Value::from(expected)), "five turns in order")
        .await;
    let bars = browser.eval("document.querySelectorAll('#call-view .latency').length").await;
    assert!(bars.as_u64().unwrap() >= 4, "caller turns have latency bars: {bars}");
    let last = browser.eval(&format!("{}.textContent", row(&call.id))).await;
    assert!(last.as_str().unwrap().contains("question"), "the row shows the last intent: {last}");

    // Screenshots for the record: a busy active list, and the live call.
    for i in 0..10 {
        let extra = publisher.call_started(&new_call(acme, &format!("+1555987{i:04}"))).await.unwrap();
        publisher.call_status(extra.org_id, &extra.id, CallStatus::InProgress, None).await.unwrap();
    }
    browser.wait_for("document.querySelectorAll('#active .call-row').length === 12", "12 active calls").await;
    browser.screenshot(&output_dir().join("monitor-active-calls.png")).await;
    browser.screenshot(&output_dir().join("monitor-live-call.png")).await;

    publisher.call_ended(call.org_id, &call.id, &finish()).await.unwrap();
    browser.wait_for(&format!("!{}", row(&call.id)), "the call leaves the active list").await;
    let in_history = format!("document.querySelector('#history .history-row[data-call-id=\"{}\"]')", call.id);
    browser.wait_for(&in_history, "the call is in history").await;

    // Export: the whole transcript, as text and as JSON.
    browser.eval(&format!("{in_history}.click(); true")).await;
    browser.wait_for(&visible("#export-text"), "the export buttons show").await;
    browser.eval("document.querySelector('#export-text').click(); true").await;
    browser
        .wait_for("window.asteraiLastExport && window.asteraiLastExport.type.startsWith('text/plain')", "a text export")
        .await;
    let text = browser.eval("window.asteraiLastExport.content").await;
    let text = text.as_str().unwrap();
    let positions: Vec<usize> = (1..=4).map(|n| text.find(&format!("caller line {n}")).expect("every turn")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "turns in order:\n{text}");
    assert!(text.contains("interested"), "the outcome:\n{text}");
    browser.eval("document.querySelector('#export-json').click(); true").await;
    browser.wait_for("window.asteraiLastExport.type.startsWith('application/json')", "a JSON export").await;
    let json: Value =
        serde_json::from_str(browser.eval("window.asteraiLastExport.content").await.as_str().unwrap()).unwrap();
    assert_eq!(json["id"], Value::from(call.id.as_str()));
    assert_eq!(json["turns"].as_array().unwrap().len(), 5);
    daemon.stop().await;
}

#[tokio::test]
async fn a_supervisor_sees_only_their_own_organization() {
    let (_db, daemon) = daemon().await;
    let _ = daemon.token("acme").await;
    let globex_token = daemon.token("globex").await;
    let acme = org_id(&daemon.store, "acme").await;
    let globex = org_id(&daemon.store, "globex").await;
    let before = daemon.publisher.call_started(&new_call(acme, "+15550000002")).await.unwrap();

    let mut browser = signed_in(&daemon, &globex_token).await;
    let theirs = daemon.publisher.call_started(&new_call(acme, "+15550000003")).await.unwrap();
    daemon.publisher.conversation_turn(theirs.org_id, &turn(&theirs.id, 0)).await.unwrap();
    let ours = daemon.publisher.call_started(&new_call(globex, "+15550000004")).await.unwrap();
    let row = |id: &str| format!("document.querySelector('.call-row[data-call-id=\"{id}\"]')");
    browser.wait_for(&row(&ours.id), "globex's call appears").await;
    // Events arrive in order, so acme's earlier ones would be here by now if they were sent.
    for id in [&before.id, &theirs.id] {
        assert_eq!(browser.eval(&format!("!!{}", row(id))).await, Value::Bool(false), "acme's call {id} is hidden");
    }
    let page = browser.eval("document.body.innerText").await;
    assert!(!page.as_str().unwrap().contains("0000003"), "no trace of acme's number");
    daemon.stop().await;
}

#[tokio::test]
async fn the_page_resumes_after_a_restart_without_gap_or_duplicate() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let addr = daemon.addr;
    let token = daemon.token("acme").await;
    let acme = org_id(&db.store, "acme").await;
    let call = daemon.publisher.call_started(&new_call(acme, "+15551112222")).await.unwrap();
    daemon.publisher.call_status(call.org_id, &call.id, CallStatus::InProgress, None).await.unwrap();

    let mut browser = signed_in(&daemon, &token).await;
    let row = format!("document.querySelector('#active .call-row[data-call-id=\"{}\"]')", call.id);
    browser.wait_for(&row, "the call is listed").await;
    browser.eval(&format!("{row}.click(); true")).await;
    daemon.publisher.conversation_turn(call.org_id, &turn(&call.id, 0)).await.unwrap();
    daemon.publisher.conversation_turn(call.org_id, &turn(&call.id, 1)).await.unwrap();
    browser.wait_for(&format!("({}) === '[0,1]|[0,1]'", shown_turns(&call.id)), "the first turns").await;

    // The daemon goes away mid-call; the call goes on and its turns are stored meanwhile.
    daemon.stop().await;
    browser.wait_for("document.querySelector('#conn').dataset.state !== 'live'", "the page notices").await;
    let offline = Publisher::new(db.store.clone(), Hub::new());
    offline.conversation_turn(call.org_id, &turn(&call.id, 2)).await.unwrap();
    offline.conversation_turn(call.org_id, &turn(&call.id, 3)).await.unwrap();

    let daemon = TestDaemon::start_with(db.store.clone(), feed_config(), addr).await;
    daemon.publisher.conversation_turn(call.org_id, &turn(&call.id, 4)).await.unwrap();
    browser.wait_for("document.querySelector('#conn').dataset.state === 'live'", "the page reconnects").await;
    let expected = "[0,1,2,3,4]|[0,1,2,3,4]";
    browser.wait_for(&format!("({}) === {}", shown_turns(&call.id), Value::from(expected)), "no gap").await;
    // Nothing doubled: every applied event id is unique and the count matches the log.
    let applied = browser.eval("window.asteraiState.lastEventId").await;
    assert_eq!(applied.as_i64().unwrap(), db.store.last_event_id(acme).await.unwrap());
    let bubbles = browser.eval("document.querySelectorAll('#call-view .turn').length").await;
    assert_eq!(bubbles, Value::from(5));
    daemon.stop().await;
}

/// 200 active calls and 20 events a second: every event lands, and the page stays responsive.
/// The figures (longest main-thread task, time to apply) are printed for the record, never
/// asserted: this machine is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_at_twenty_events_a_second() {
    let (_db, daemon) = daemon().await;
    let token = daemon.token("acme").await;
    let acme = org_id(&daemon.store, "acme").await;
    let mut calls = Vec::new();
    for i in 0..200 {
        let call = daemon.publisher.call_started(&new_call(acme, &format!("+1555300{i:04}"))).await.unwrap();
        daemon.publisher.call_status(call.org_id, &call.id, CallStatus::InProgress, None).await.unwrap();
        calls.push(call.id);
    }
    let mut browser = signed_in(&daemon, &token).await;
    browser.wait_for("document.querySelectorAll('#active .call-row').length === 200", "200 calls listed").await;
    browser
        .eval(
            "window.longest = 0; window.longTasks = 0; new PerformanceObserver(list => { for (const e of list.getEntries()) \
             { window.longTasks++; window.longest = Math.max(window.longest, e.duration); } }).observe({type: 'longtask', buffered: false}); true",
        )
        .await;
    let applied_before = browser.eval("window.asteraiState.applied").await.as_u64().unwrap();
    // Ten seconds of traffic: 200 turns, one every 50 ms, spread over the calls.
    let started = std::time::Instant::now();
    for n in 0..200usize {
        let call = &calls[n % calls.len()];
        daemon.publisher.conversation_turn(acme, &turn(call, (n / calls.len()) as i32 + 1)).await.unwrap();
        let next = started + std::time::Duration::from_millis(50 * (n as u64 + 1));
        tokio::time::sleep_until(next.into()).await;
    }
    let target = applied_before + 200;
    browser.wait_for(&format!("window.asteraiState.applied >= {target}"), "every event applied").await;
    let lag = std::time::Instant::now() - started;
    let longest = browser.eval("window.longest").await;
    let long_tasks = browser.eval("window.longTasks").await;
    browser.screenshot(&output_dir().join("monitor-200-calls.png")).await;
    // Every row still shows its last turn's intent.
    let with_intent = browser
        .eval("[...document.querySelectorAll('#active .call-row')].filter(r => r.textContent.includes('question')).length")
        .await;
    assert_eq!(with_intent, Value::from(200));
    eprintln!(
        "monitor load: 200 calls, 200 turns at 20/s: all applied {:.1} s after the first (10 s of traffic); \
         main-thread tasks over 50 ms: {long_tasks} (longest {longest} ms)",
        lag.as_secs_f64()
    );
    daemon.stop().await;
}

/// The page on a tablet: one column, everything reachable.
#[tokio::test]
async fn the_page_fits_a_tablet() {
    let (_db, daemon) = daemon().await;
    let token = daemon.token("acme").await;
    let acme = org_id(&daemon.store, "acme").await;
    let call = daemon.publisher.call_started(&new_call(acme, "+15551239876")).await.unwrap();
    daemon.publisher.call_status(call.org_id, &call.id, CallStatus::InProgress, None).await.unwrap();
    daemon.publisher.conversation_turn(call.org_id, &turn(&call.id, 0)).await.unwrap();
    let mut browser = Browser::start(768, 1024).await;
    browser.goto(&daemon.url("/")).await;
    sign_in(&mut browser, &token).await;
    let row = format!("document.querySelector('#active .call-row[data-call-id=\"{}\"]')", call.id);
    browser.wait_for(&row, "the call is listed").await;
    browser.eval(&format!("{row}.click(); true")).await;
    browser.wait_for(&visible("#call-view"), "the call opens").await;
    let overflow = browser.eval("document.documentElement.scrollWidth > window.innerWidth").await;
    assert_eq!(overflow, Value::Bool(false), "no sideways scrolling on a tablet");
    browser.screenshot(&output_dir().join("monitor-tablet.png")).await;
    daemon.stop().await;
}
