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

/// The turns the open call shows, in page order, each checked against its own text, and how
/// many turn groups there are in all (a doubled or stray one shows up there).
fn shown_turns() -> String {
    "JSON.stringify([...document.querySelectorAll('#call-view .turn')]
        .filter(t => t.querySelector('.bubble.agent').textContent.includes('agent line ' + t.dataset.turn))
        .map(t => Number(t.dataset.turn)))
        + '|' + document.querySelectorAll('#call-view .turn').length"
        .to_owned()
}

/// The last event the page applied, as its connection indicator carries it.
const LAST_EVENT: &str = "Number(document.querySelector('#conn').dataset.lastEvent)";

/// Waits until the browser has written `name` into `dir`, and returns its text.
async fn downloaded(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        // Chromium writes a .crdownload first and renames it when done.
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the page did not download {name} into {}", dir.display());
}

/// The page's files: ES modules with a JavaScript type and the CSP, a fixed list (anything else
/// under `/ui/` is 404), and no test hook in what ships.
#[tokio::test]
async fn the_page_is_served_as_modules_without_test_hooks() {
    let (_db, daemon) = daemon().await;
    let client = reqwest::Client::new();
    let index = client.get(daemon.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(index.contains(r#"<script type="module" src="ui/app.js">"#), "{index}");
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("format.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("dashboard.js", "text/javascript"),
        ("console.js", "text/javascript"),
        ("listen-worklet.js", "text/javascript"),
        ("barge-worklet.js", "text/javascript"),
        ("monitor.css", "text/css"),
    ] {
        let response = client.get(daemon.url(&format!("/ui/{file}"))).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{file}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{file}");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"), "{file}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("window.asterai") && !body.contains("innerHTML"), "{file} has no hook, no HTML sink");
    }
    for path in ["/ui/nope.js", "/ui/..%2FCargo.toml", "/ui/", "/monitor.js"] {
        let status = client.get(daemon.url(path)).send().await.unwrap().status().as_u16();
        assert_eq!(status, 404, "{path}");
    }
    daemon.stop().await;
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
    let expected = "[0,1,2,3,4]|5";
    browser.wait_for(&format!("({}) === {}", shown_turns(), Value::from(expected)), "five turns in order").await;
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

    // Export: the whole transcript, as text and as JSON, downloaded as the supervisor gets it.
    let downloads = tempfile::tempdir().unwrap();
    browser.allow_downloads(downloads.path()).await;
    browser.eval(&format!("{in_history}.click(); true")).await;
    browser.wait_for(&visible("#export-text"), "the export buttons show").await;
    browser.wait_for("!document.querySelector('#export-text').disabled", "the transcript is loaded").await;
    browser.eval("document.querySelector('#export-text').click(); true").await;
    let text = downloaded(downloads.path(), &format!("call-{}.txt", call.id)).await;
    let positions: Vec<usize> = (1..=4).map(|n| text.find(&format!("caller line {n}")).expect("every turn")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "turns in order:\n{text}");
    assert!(text.contains("interested"), "the outcome:\n{text}");
    browser.eval("document.querySelector('#export-json').click(); true").await;
    let json: Value = serde_json::from_str(&downloaded(downloads.path(), &format!("call-{}.json", call.id)).await)
        .expect("the JSON export is JSON");
    assert_eq!(json["id"], Value::from(call.id.as_str()));
    assert_eq!(json["turns"].as_array().unwrap().len(), 5);
    daemon.stop().await;
}

/// The after-call analysis (issue 13): shown in the call view as soon as `call_analyzed`
/// arrives, in both exports, and after a reload from the REST API.
#[tokio::test]
async fn the_after_call_analysis_shows_and_is_exported() {
    let (_db, daemon) = daemon().await;
    let token = daemon.token("acme").await;
    let acme = org_id(&daemon.store, "acme").await;
    let publisher = &daemon.publisher;
    let call = publisher.call_started(&new_call(acme, "+15551234567")).await.unwrap();
    publisher.call_status(acme, &call.id, CallStatus::InProgress, None).await.unwrap();
    publisher.conversation_turn(acme, &turn(&call.id, 1)).await.unwrap();
    publisher.call_ended(acme, &call.id, &finish()).await.unwrap();

    let mut browser = signed_in(&daemon, &token).await;
    let in_history = format!("document.querySelector('#history .history-row[data-call-id=\"{}\"]')", call.id);
    browser.wait_for(&in_history, "the call is in history").await;
    browser.eval(&format!("{in_history}.click(); true")).await;
    browser.wait_for("!document.querySelector('#export-text').disabled", "the transcript is loaded").await;
    let hidden = browser.eval("document.querySelector('#cv-after-call-row').hidden").await;
    assert_eq!(hidden, Value::Bool(true), "no analysis yet, no empty box");

    let analysis = serde_json::json!({
        "summary": "Wants a quote for 3 seats.", "success": true, "success_reason": "asked for a quote",
        "data": {"seats": 3, "budget": "low"}, "data_error": "budget: expected a number", "error": null, "attempts": 2,
    });
    publisher.call_analyzed(acme, &call.id, &analysis).await.unwrap();
    let shown_text = "document.querySelector('#cv-after-call').textContent";
    browser.wait_for(&format!("{shown_text}.includes('Wants a quote for 3 seats.')"), "the analysis shows live").await;
    browser.wait_for(&visible("#cv-after-call"), "the analysis is visible").await;
    let shown = browser.eval(shown_text).await;
    let shown = shown.as_str().unwrap();
    for part in
        ["Success: yes (asked for a quote)", "Data: budget: low; seats: 3", "Data error: budget: expected a number"]
    {
        assert!(shown.contains(part), "{part:?} in {shown:?}");
    }
    browser.screenshot(&output_dir().join("monitor-after-call-analysis.png")).await;

    let downloads = tempfile::tempdir().unwrap();
    browser.allow_downloads(downloads.path()).await;
    browser.eval("document.querySelector('#export-text').click(); true").await;
    let text = downloaded(downloads.path(), &format!("call-{}.txt", call.id)).await;
    assert!(text.contains("Summary: Wants a quote for 3 seats.\n"), "{text}");
    assert!(
        text.contains("Success: yes (asked for a quote)") && text.contains("Data: budget: low; seats: 3"),
        "{text}"
    );
    browser.eval("document.querySelector('#export-json').click(); true").await;
    let json: Value = serde_json::from_str(&downloaded(downloads.path(), &format!("call-{}.json", call.id)).await)
        .expect("the JSON export is JSON");
    assert_eq!(json["analysis"], analysis, "the JSON export carries the analysis as stored");

    // A fresh page reads it from the REST API.
    let mut fresh = signed_in(&daemon, &token).await;
    fresh.wait_for(&in_history, "the call is in history").await;
    fresh.eval(&format!("{in_history}.click(); true")).await;
    fresh.wait_for(&format!("{shown_text}.includes('Success: yes')"), "the analysis shows after a reload").await;
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
    browser.wait_for(&format!("({}) === '[0,1]|2'", shown_turns()), "the first turns").await;

    // The daemon goes away mid-call; the call goes on and its turns are stored meanwhile.
    daemon.stop().await;
    browser.wait_for("document.querySelector('#conn').dataset.state !== 'live'", "the page notices").await;
    let offline = Publisher::new(db.store.clone(), Hub::new());
    offline.conversation_turn(call.org_id, &turn(&call.id, 2)).await.unwrap();
    offline.conversation_turn(call.org_id, &turn(&call.id, 3)).await.unwrap();

    let daemon = TestDaemon::start_with(db.store.clone(), feed_config(), addr).await;
    daemon.publisher.conversation_turn(call.org_id, &turn(&call.id, 4)).await.unwrap();
    browser.wait_for("document.querySelector('#conn').dataset.state === 'live'", "the page reconnects").await;
    let expected = "[0,1,2,3,4]|5";
    browser.wait_for(&format!("({}) === {}", shown_turns(), Value::from(expected)), "no gap").await;
    // Nothing doubled, nothing missed: the page's last event is the log's last.
    let applied = browser.eval(LAST_EVENT).await;
    assert_eq!(applied.as_i64().unwrap(), db.store.last_event_id(acme).await.unwrap());
    let bubbles = browser.eval("document.querySelectorAll('#call-view .turn').length").await;
    assert_eq!(bubbles, Value::from(5));
    daemon.stop().await;
}

/// 200 active calls and 20 events a second: every event lands, and the page does the work of one
/// row per event. What makes the page keep up is asserted as counts, which a loaded machine does
/// not change: no row is rebuilt, each event touches only its own call's row, and the browser
/// lays the page out at most once per event (no layout thrash, no work in idle frames). The
/// durations (longest main-thread task, main-thread time, time to apply) are printed for the
/// record, never asserted: this machine is shared.
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
    // What the page does to the active list while the events come: rows added or removed, and
    // the rows changed outside their duration cell (which the clock updates every second).
    browser
        .eval(
            "window.load = { longest: 0, longTasks: 0, rowsAdded: 0, rowsRemoved: 0, touched: {} }; \
             new PerformanceObserver(list => { for (const e of list.getEntries()) \
             { load.longTasks++; load.longest = Math.max(load.longest, e.duration); } }).observe({type: 'longtask', buffered: false}); \
             const isRow = (n) => n.nodeType === 1 && n.classList.contains('call-row'); \
             new MutationObserver(records => { for (const m of records) { \
               for (const n of m.addedNodes) if (isRow(n)) load.rowsAdded++; \
               for (const n of m.removedNodes) if (isRow(n)) load.rowsRemoved++; \
               const at = m.target.nodeType === 1 ? m.target : m.target.parentElement; \
               if (!at || at.closest('.duration')) continue; \
               const row = at.closest('.call-row'); \
               if (row) load.touched[row.dataset.callId] = (load.touched[row.dataset.callId] || 0) + 1; \
             } }).observe(document.querySelector('#active'), { subtree: true, childList: true, characterData: true, attributes: true }); true",
        )
        .await;
    let before = browser.metrics().await;
    // Ten seconds of traffic: 200 turns, one every 50 ms, one for each call.
    let started = std::time::Instant::now();
    for n in 0..200usize {
        let call = &calls[n % calls.len()];
        daemon.publisher.conversation_turn(acme, &turn(call, (n / calls.len()) as i32 + 1)).await.unwrap();
        let next = started + std::time::Duration::from_millis(50 * (n as u64 + 1));
        tokio::time::sleep_until(next.into()).await;
    }
    // Every event applied: the indicator's last event is the log's, and each of the 200 calls
    // got its turn (each shows the turn's intent).
    let last = daemon.store.last_event_id(acme).await.unwrap();
    browser.wait_for(&format!("{LAST_EVENT} === {last}"), "every event applied").await;
    browser
        .wait_for(
            "[...document.querySelectorAll('#active .call-row')].filter(r => r.textContent.includes('question')).length === 200",
            "every row shows its turn",
        )
        .await;
    let lag = std::time::Instant::now() - started;
    let after = browser.metrics().await;
    let load = browser.eval("window.load").await;
    browser.screenshot(&output_dir().join("monitor-200-calls.png")).await;

    // Rows are updated where they stand: none rebuilt, none moved out and back.
    assert_eq!((load["rowsAdded"].as_i64(), load["rowsRemoved"].as_i64()), (Some(0), Some(0)), "{load}");
    // Each event touched its own call's row and no other: exactly the 200 calls, each changed
    // where the turn changed it (the mood cell), not its every cell rewritten.
    let touched = load["touched"].as_object().unwrap();
    let mut touched_ids: Vec<&String> = touched.keys().collect();
    touched_ids.sort();
    let mut expected: Vec<&String> = calls.iter().collect();
    expected.sort();
    assert_eq!(touched_ids, expected, "the rows changed are the rows of the calls that had a turn");
    let changes: i64 = touched.values().filter_map(Value::as_i64).sum();
    assert!(changes <= 200 * 2, "{changes} changes to rows for 200 turns: {load}");
    // At most one layout per event, plus the clock's second ticks and the indicator: the page
    // batches its writes into animation frames and never reads layout between writes.
    let count = |name: &str| after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0);
    let seconds = lag.as_secs_f64().ceil();
    let layouts = count("LayoutCount");
    assert!(layouts <= 200.0 + 2.0 * seconds + 10.0, "{layouts} layouts for 200 events in {seconds} s");
    eprintln!(
        "monitor load: 200 calls, 200 turns at 20/s: all applied {:.1} s after the first (10 s of traffic); \
         layouts {layouts}, style recalculations {}, row changes {changes}; main-thread time {:.2} s \
         (script {:.2} s); tasks over 50 ms: {} (longest {} ms)",
        lag.as_secs_f64(),
        count("RecalcStyleCount"),
        count("TaskDuration"),
        count("ScriptDuration"),
        load["longTasks"],
        load["longest"],
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

/// The today strip and the campaign view carry the figures worked out again from the store
/// (`support::seed::expected`); history rows have dates, both numbers and badges that agree;
/// search, keyboard, tool calls; pause and resume. Screenshots of each view in `test-output/`.
#[tokio::test]
async fn the_today_strip_and_the_campaign_view_show_the_stores_figures() {
    let (_db, daemon) = daemon().await;
    let seeded = support::seed::seed(&daemon.store).await;
    let token = daemon.token("acme").await;
    let midnight = chrono::Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let today = support::seed::expected(&daemon.store, seeded.org_id, midnight, None).await;
    let mut browser = signed_in(&daemon, &token).await;

    // Today: each figure, as text and as the exact value of its <data>.
    let figure = |root: &str, key: &str| format!("document.querySelector('{root} [data-figure=\"{key}\"]')");
    let value = |root: &str, key: &str| format!("{}.querySelector('data').value", figure(root, key));
    browser.wait_for(&format!("{} === '{}'", value("#today", "calls"), today.calls), "today's calls").await;
    for (key, want) in [("active", today.active), ("answered", today.answered)] {
        assert_eq!(
            browser.eval(&format!("{}.textContent", figure("#today", key))).await,
            Value::from(want.to_string()),
            "{key}"
        );
    }
    let rate: f64 = browser.eval(&value("#today", "answer_rate")).await.as_str().unwrap().parse().unwrap();
    assert!((rate - today.answer_rate.unwrap()).abs() < 1e-9, "answer rate {rate}");
    let shown = browser.eval(&format!("{}.textContent", figure("#today", "answer_rate"))).await;
    assert_eq!(shown, Value::from(format!("{:.1} %", today.answer_rate.unwrap() * 100.0)));
    let aht: f64 = browser.eval(&value("#today", "average_handling_s")).await.as_str().unwrap().parse().unwrap();
    assert!((aht - today.average_handling_s.unwrap()).abs() < 1e-6, "AHT {aht}");
    for (outcome, count) in &today.outcomes {
        let text = browser.eval(&format!("{}.textContent", figure("#today-outcomes", outcome))).await;
        assert_eq!(text, Value::from(count.to_string()), "outcome {outcome}");
    }
    for (stage, (p50, p95)) in &today.latency {
        let text = browser.eval(&format!("{}.textContent", figure("#today-latency", stage))).await;
        assert_eq!(text, Value::from(format!("{} / {} ms", p50.unwrap(), p95.unwrap())), "latency {stage}");
    }
    let hours = browser.eval("document.querySelectorAll('#today-hours svg rect.bar').length").await;
    assert!(hours.as_u64().unwrap() >= 1, "calls per hour drawn");
    browser.screenshot(&output_dir().join("monitor-today.png")).await;

    // History: column headers, a date on each row, both numbers, and a failed call that never
    // reads "completed".
    let failed = format!("document.querySelector('#history .history-row[data-call-id=\"{}\"]')", seeded.failed_call);
    browser.wait_for(&failed, "the failed call is in history").await;
    let head = browser.eval("document.querySelector('.row-head.history-row').textContent").await;
    for column in ["Started", "From", "To", "Contact", "Campaign", "Status"] {
        assert!(head.as_str().unwrap().contains(column), "header {column}: {head}");
    }
    let row = browser.eval(&format!("{failed}.textContent")).await;
    let row = row.as_str().unwrap();
    let day = chrono::Utc::now().format("%b %-d").to_string();
    assert!(row.contains(&day), "the row has a date ({day}): {row}");
    assert!(row.contains("+15550001000"), "our number, in full: {row}");
    assert!(row.contains("0002") && !row.contains("7770002"), "the called number, masked: {row}");
    assert!(row.contains("failed") && !row.contains("completed"), "status and outcome agree: {row}");
    let tone = browser.eval(&format!("{failed}.querySelector('.outcome-badge').dataset.tone")).await;
    assert_eq!(tone, Value::from("bad"));

    // Search by contact, as the daemon searches: only that call stays.
    browser
        .eval("{ const q = document.querySelector('#filter-q'); q.value = 'cy park'; q.dispatchEvent(new Event('input')); } true")
        .await;
    browser.wait_for("document.querySelectorAll('#history .history-row').length === 1", "one call matches").await;
    browser.wait_for(&failed, "and it is Cy Park's").await;
    browser
        .eval("{ const q = document.querySelector('#filter-q'); q.value = ''; q.dispatchEvent(new Event('input')); } true")
        .await;
    browser.wait_for("document.querySelectorAll('#history .history-row').length === 6", "every ended call again").await;
    // Keyboard: the list is one tab stop; arrows move, Enter opens, Escape closes.
    let key = |k: &str| {
        format!(
            "document.activeElement.dispatchEvent(new KeyboardEvent('keydown', {{key: '{k}', bubbles: true}})); true"
        )
    };
    browser.eval("document.querySelector('#history .history-row').focus(); true").await;
    browser.eval(&key("ArrowDown")).await;
    let second = browser.eval("document.activeElement === document.querySelectorAll('#history .history-row')[1]").await;
    assert_eq!(second, Value::Bool(true), "ArrowDown moves to the next row");
    browser.eval(&key("Enter")).await;
    browser.wait_for(&visible("#call-detail"), "Enter opens the call").await;
    browser.eval(&key("Escape")).await;
    browser.wait_for("document.querySelector('#call-detail').hidden", "Escape closes it").await;

    // A call's tool calls and its agent.
    let tool_row = format!("document.querySelector('#history .history-row[data-call-id=\"{}\"]')", seeded.tool_call);
    browser.eval(&format!("{tool_row}.click(); true")).await;
    browser.wait_for("document.querySelector('#call-view .tool-name')", "the tool call shows").await;
    let tool = browser.eval("document.querySelector('#call-view .tool').textContent").await;
    assert!(tool.as_str().unwrap().contains("end_call") && tool.as_str().unwrap().contains("interested"), "{tool}");
    assert_eq!(browser.eval("document.querySelector('#cv-agent').textContent").await, Value::from("built-in agent"));
    let score = daemon.store.call(seeded.org_id, &seeded.tool_call).await.unwrap().unwrap().intent_score;
    let shown = browser.eval("document.querySelector('#cv-analysis').textContent").await;
    assert_eq!(shown, Value::from(score.map_or("—".to_owned(), |s| format!("{s:.2}"))));
    browser.eval("document.querySelector('#call-view .tool').scrollIntoView({block: 'center'}); true").await;
    browser.screenshot(&output_dir().join("monitor-call-tools.png")).await;

    // The campaign view.
    let campaign = support::seed::expected(&daemon.store, seeded.org_id, midnight, Some(seeded.campaign_id)).await;
    browser.eval("document.querySelector('#tab-campaigns').click(); true").await;
    browser
        .wait_for(&format!("{} === '{}'", value("#campaign-detail", "calls"), campaign.calls), "the campaign's calls")
        .await;
    let contacts = |state: &str| campaign.contacts.get(state).copied().unwrap_or(0);
    for (key, want) in [
        ("pending", contacts("pending")),
        ("dialing", contacts("dialing")),
        ("done", contacts("done")),
        ("failed", contacts("failed")),
        ("do_not_call", contacts("dnc")),
        ("total", campaign.contacts.values().sum()),
        ("answered", campaign.answered),
        ("calls_per_hour", campaign.calls),
    ] {
        assert_eq!(
            browser.eval(&format!("{}.textContent", figure("#campaign-detail", key))).await,
            Value::from(want.to_string()),
            "{key}"
        );
    }
    let rate: f64 = browser.eval(&value("#campaign-detail", "answer_rate")).await.as_str().unwrap().parse().unwrap();
    assert!((rate - campaign.answer_rate.unwrap()).abs() < 1e-9, "campaign answer rate {rate}");
    let aht: f64 =
        browser.eval(&value("#campaign-detail", "average_handling_s")).await.as_str().unwrap().parse().unwrap();
    assert!((aht - campaign.average_handling_s.unwrap()).abs() < 1e-6, "campaign AHT {aht}");
    let eta = browser.eval(&value("#campaign-detail", "eta")).await;
    assert!(chrono::DateTime::parse_from_rfc3339(eta.as_str().unwrap()).is_ok(), "an ETA: {eta}");
    for (outcome, count) in &campaign.outcomes {
        let text = browser.eval(&format!("{}.textContent", figure("#cd-outcomes", outcome))).await;
        assert_eq!(text, Value::from(count.to_string()), "campaign outcome {outcome}");
    }
    browser.screenshot(&output_dir().join("monitor-campaign.png")).await;

    // Pause and resume (the token has `dial`): the store follows.
    browser.eval("document.querySelector('#cd-pause').click(); true").await;
    browser.wait_for("document.querySelector('#cd-status').dataset.status === 'paused'", "paused").await;
    let stored = daemon.store.campaign(seeded.org_id, seeded.campaign_id).await.unwrap().unwrap();
    assert_eq!(stored.status, "paused");
    browser.wait_for("!document.querySelector('#cd-resume').disabled", "resume offered").await;
    browser.eval("document.querySelector('#cd-resume').click(); true").await;
    browser.wait_for("document.querySelector('#cd-status').dataset.status === 'running'", "running again").await;
    let stored = daemon.store.campaign(seeded.org_id, seeded.campaign_id).await.unwrap().unwrap();
    assert_eq!(stored.status, "running");

    // Signing out forgets every figure; globex's token then sees globex's day only.
    browser.eval("document.querySelector('#signout').click(); true").await;
    browser.wait_for(&visible("#signin"), "signed out").await;
    for root in ["#today", "#campaign-detail"] {
        let left = browser
            .eval(&format!(
                "[...document.querySelectorAll('{root} [data-figure]')].filter(n => n.textContent !== '—').length"
            ))
            .await;
        assert_eq!(left, Value::from(0), "{root} forgets its figures");
    }
    let globex = daemon.token("globex").await;
    sign_in(&mut browser, &globex).await;
    browser.wait_for(&format!("{} === '3'", value("#today", "calls")), "globex's three calls").await;
    let outcomes = browser.eval("document.querySelector('#today-outcomes').textContent").await;
    assert!(!outcomes.as_str().unwrap().contains("interested"), "nothing of acme's: {outcomes}");
    daemon.stop().await;
}

/// A `monitor` token sees the campaign but cannot pause it: the page says why, nothing changes.
#[tokio::test]
async fn a_monitor_token_cannot_pause_a_campaign() {
    let (_db, daemon) = daemon().await;
    let seeded = support::seed::seed(&daemon.store).await;
    let token = daemon.token_with("acme", asterai::auth::Scopes::parse("monitor").unwrap()).await;
    let mut browser = signed_in(&daemon, &token).await;
    browser.eval("document.querySelector('#tab-campaigns').click(); true").await;
    browser.wait_for("!document.querySelector('#cd-pause').disabled", "the running campaign shows").await;
    browser.eval("document.querySelector('#cd-pause').click(); true").await;
    browser
        .wait_for("document.querySelector('#cd-message').textContent.includes('dial scope')", "the page says why")
        .await;
    let stored = daemon.store.campaign(seeded.org_id, seeded.campaign_id).await.unwrap().unwrap();
    assert_eq!(stored.status, "running");
    // Still signed in: a 403 is not a revoked token.
    assert!(browser.eval(&visible("#app")).await.as_bool().unwrap());
    daemon.stop().await;
}
