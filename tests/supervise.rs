//! The supervisors' console on live calls: the `supervise` scope, coaching that reaches the
//! model's next request, pausing (music on hold) and resuming, the events on the feed with the
//! token's name, the audit log, organizations kept apart, and a call another daemon holds.
//!
//! The calls run through the real FastAGI listener and conversation core, with the providers
//! mocked in the OpenAI shapes and Asterisk played command by command by the test.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use asterai::agi::command::split_args;
use asterai::agi::{Router, ServerConfig};
use asterai::auth::{Scopes, create_token};
use asterai::config::{Config, Dur, Secret};
use asterai::conversation::{Conversations, Providers, Settings};
use asterai::feed::{Hub, Publisher};
use asterai::http::{AppState, HttpParts};
use asterai::store::{Direction, EventKind, NewCall, Store};
use support::agi::{TestServer, env_block};
use support::db::{Backend, TestDb};
use support::fake_asterisk::FakeAsterisk;
use support::http::{FeedClient, feed_config};
use support::mocks::{Sequence, sse, wav_24k};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(20);

/// The daemon's HTTP side and conversations in-process, on a database with `acme` and `globex`.
struct Rig {
    _db: TestDb,
    store: Store,
    hub: std::sync::Arc<Hub>,
    http: SocketAddr,
    agi: TestServer,
    llm: MockServer,
    stt: MockServer,
    _tts: MockServer,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    live: asterai::conversation::LiveCalls,
}

async fn rig(backend: Backend, daemon: &str) -> Rig {
    support::init();
    let db = TestDb::new(backend).await;
    let store = db.store.clone();
    store.create_org("acme", "Acme Inc.").await.unwrap();
    store.create_org("globex", "Globex").await.unwrap();
    let hub = Hub::new();
    hub.prime(&store).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(hub.clone().run(
        store.clone(),
        Duration::from_millis(200),
        Duration::from_millis(10),
        stop.child_token(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let state = AppState::new(HttpParts {
        store: store.clone(),
        hub: hub.clone(),
        feed: feed_config(),
        metrics: asterai::telemetry::install(),
        shutdown: CancellationToken::new(),
        limits: Default::default(),
        supervisor: None,
        dialer: None,
    });
    let (stt, llm, tts) = (MockServer::start().await, MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(wav_24k(400), "audio/wav"))
        .mount(&tts)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "openai".into();
    config.stt.url = format!("{}/v1", stt.uri());
    config.stt.api_key = Secret::new("sk-stt");
    config.responder.provider = "openai".into();
    config.responder.url = format!("{}/v1", llm.uri());
    config.responder.api_key = Secret::new("sk-llm");
    config.tts.provider = "openai".into();
    config.tts.url = format!("{}/v1", tts.uri());
    config.conversation.turn_budget = Dur::secs(5);
    config.conversation.max_duration = Dur::secs(600);
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let publisher = Publisher::new(store.clone(), hub.clone()).with_daemon(daemon);
    let conversations =
        Conversations::new(publisher, Providers::from_config(&config).unwrap(), Settings::from_config(&config), None);
    state.set_live_calls(conversations.live());
    tokio::spawn(asterai::http::serve(listener, state, stop.clone()));
    let agi = TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default()).await;
    let live = conversations.live();
    Rig { _db: db, store, hub, http, agi, llm, stt, _tts: tts, stop, _dir: dir, live }
}

impl Rig {
    async fn token(&self, org: &str, name: &str, scopes: &str) -> String {
        let org = self.store.org_by_slug(org).await.unwrap().unwrap();
        create_token(&self.store, org.id, name, Scopes::parse(scopes).unwrap()).await.unwrap().token
    }

    async fn post(&self, token: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().post(format!("http://{}{path}", self.http)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }
}

/// Asterisk's side of one AGI call, played by the test.
struct Phone {
    fake: FakeAsterisk,
    call_id: Option<String>,
}

fn default_reply(command: &str) -> String {
    let upper = command.to_ascii_uppercase();
    let reply = if upper.starts_with("ANSWER") {
        "200 result=0"
    } else if upper.starts_with("CHANNEL STATUS") {
        "200 result=6"
    } else if upper.starts_with("SET VARIABLE") || upper.starts_with("VERBOSE") {
        "200 result=1"
    } else if upper.starts_with("STREAM FILE") {
        "200 result=0 endpos=8000"
    } else if upper.starts_with("SET MUSIC") {
        "200 result=0"
    } else if upper.starts_with("GET VARIABLE") {
        "200 result=1 (16)"
    } else if upper.starts_with("HANGUP") {
        "200 result=1\nHANGUP"
    } else {
        "510 Invalid or unknown command"
    };
    format!("{reply}\n")
}

impl Phone {
    async fn dial(addr: SocketAddr) -> Phone {
        let mut fake = FakeAsterisk::connect(addr).await;
        let uniqueid = format!("{}.{}", chrono::Utc::now().timestamp(), rand::random::<u32>());
        fake.write(env_block("ai?org=acme", &uniqueid).as_bytes()).await.unwrap();
        Phone { fake, call_id: None }
    }

    /// Answers the daemon's commands as Asterisk would until one that `stop` picks, which is
    /// returned unanswered.
    async fn until(&mut self, stop: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.fake.read_line().await.unwrap().expect("the daemon closed the call");
            let args = split_args(&line);
            if line.to_ascii_uppercase().starts_with("SET VARIABLE")
                && args.get(2).map(String::as_str) == Some("ASTERAI_CALL_ID")
            {
                self.call_id = args.get(3).cloned();
            }
            if stop(&line) {
                return line;
            }
            self.fake.write(default_reply(&line).as_bytes()).await.unwrap();
        }
    }

    async fn next_recording(&mut self) -> String {
        self.until(|c| c.to_ascii_uppercase().starts_with("RECORD FILE")).await
    }

    /// Answers a `RECORD FILE` with the caller's speech (a tone) or silence, as Asterisk does
    /// when silence ends the recording.
    async fn recorded(&mut self, command: &str, speech: bool) {
        let base = split_args(command)[2].clone();
        let samples: Vec<i16> = (0..8000)
            .map(|i| {
                if speech {
                    (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin()) as i16
                } else {
                    0
                }
            })
            .collect();
        std::fs::write(format!("{base}.wav"), asterai::speech::audio::encode_wav(&samples)).unwrap();
        self.fake.write(b"200 result=1200 (timeout) endpos=8000\n").await.unwrap();
    }

    /// The caller hangs up during `command` (a recording); the daemon's last commands are
    /// answered until it closes.
    async fn hang_up(&mut self) {
        self.fake.write(b"200 result=-1 (hangup) endpos=0\nHANGUP\n").await.unwrap();
        while let Ok(Some(line)) = self.fake.read_line().await {
            let reply = if line.to_ascii_uppercase().starts_with("GET VARIABLE") {
                "200 result=1 (16)\n".to_owned()
            } else if line.to_ascii_uppercase().starts_with("SET VARIABLE") {
                "200 result=1\n".to_owned()
            } else {
                "511 Command Not Permitted on a dead channel or intercept routine\n".to_owned()
            };
            if self.fake.write(reply.as_bytes()).await.is_err() {
                break;
            }
        }
    }
}

async fn mount_stt(server: &MockServer, texts: &[&str]) {
    let templates =
        texts.iter().map(|t| ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": t}))).collect();
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(Sequence::new(templates))
        .mount(server)
        .await;
}

async fn mount_llm(server: &MockServer, answers: &[&[&str]]) {
    let templates = answers.iter().map(|pieces| sse(pieces)).collect();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Sequence::new(templates))
        .mount(server)
        .await;
}

/// The system messages of the model's requests, in order.
async fn system_messages(llm: &MockServer) -> Vec<Vec<String>> {
    llm.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "system")
                .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_monitor_token_cannot_supervise_and_a_supervise_token_can() {
    let rig = rig(Backend::Sqlite, "daemon-a").await;
    let monitor = rig.token("acme", "wallboard", "monitor,dial,admin").await;
    let supervise = rig.token("acme", "alice", "supervise").await;
    let client = reqwest::Client::new();
    for (verb, route) in [
        ("POST", "coach"),
        ("POST", "pause"),
        ("POST", "resume"),
        ("GET", "listen"),
        ("GET", "barge"),
        ("POST", "takeover"),
        ("POST", "giveback"),
    ] {
        let url = format!("http://{}/v1/calls/nope/{route}", rig.http);
        let request = |token: &str| {
            let builder = if verb == "POST" {
                client.post(&url).json(&serde_json::json!({"text": "x"}))
            } else {
                client.get(&url)
            };
            builder.bearer_auth(token.to_owned())
        };
        let refused = request(&monitor).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{verb} {route} with every scope but supervise");
        let body = refused.text().await.unwrap();
        assert!(body.contains("`supervise`"), "the 403 names the scope: {body}");
        let allowed = request(&supervise).send().await.unwrap();
        let status = allowed.status().as_u16();
        // Past the scope check: an unknown call (404), or not a WebSocket upgrade (426).
        assert!(status == 404 || status == 426, "{verb} {route} with supervise: {status}");
    }
    rig.stop.cancel();
}

#[tokio::test]
async fn coaching_reaches_the_models_next_request_and_pause_holds_the_caller_until_resumed() {
    let rig = rig(Backend::Sqlite, "daemon-a").await;
    let alice = rig.token("acme", "alice", "monitor,supervise").await;
    let outsider = rig.token("globex", "mallory", "supervise").await;
    mount_stt(&rig.stt, &["How much is it?", "And per year?"]).await;
    mount_llm(&rig.llm, &[&["It is 20 dollars ", "a month."], &["240 dollars a year."]]).await;

    let mut phone = Phone::dial(rig.agi.addr).await;
    // The greeting plays; the AI listens for the caller's first words.
    let recording = phone.next_recording().await;
    let call_id = phone.call_id.clone().expect("the daemon told the dialplan the call's id");

    // Another organization does not see the call; a supervisor of this one coaches it.
    let (status, body) =
        rig.post(&outsider, &format!("/v1/calls/{call_id}/coach"), Some(serde_json::json!({"text": "hi"}))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        rig.post(&alice, &format!("/v1/calls/{call_id}/coach"), Some(serde_json::json!({"text": ""}))).await;
    assert_eq!(status, 400, "empty coaching: {body}");
    let (status, body) = rig
        .post(
            &alice,
            &format!("/v1/calls/{call_id}/coach"),
            Some(serde_json::json!({"text": "Offer the annual plan."})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["ai"].as_str(), body["media"].as_str(), body["pending_coaching"].as_i64()),
        (Some("active"), Some("agi"), Some(1))
    );
    assert!(system_messages(&rig.llm).await.is_empty(), "nothing asked of the model yet");

    // The caller speaks: the model's request carries the instruction as a system message.
    phone.recorded(&recording, true).await;
    let recording = phone.next_recording().await;
    let requests = system_messages(&rig.llm).await;
    assert_eq!(requests.len(), 1, "one answer so far");
    assert!(
        requests[0].iter().any(|m| m.contains("Offer the annual plan.") && m.contains("never read it out")),
        "the model's next request carries the instruction: {requests:?}"
    );
    let spoken: Vec<String> = phone.fake.received.iter().filter(|l| l.contains("annual plan")).cloned().collect();
    assert!(spoken.is_empty(), "the instruction never reaches Asterisk: {spoken:?}");

    // Paused while listening: the recording under way ends, then the caller hears music.
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/pause"), None).await;
    assert_eq!((status, body["ai"].as_str()), (200, Some("paused")), "{body}");
    let (status, _) = rig.post(&alice, &format!("/v1/calls/{call_id}/pause"), None).await;
    assert_eq!(status, 200, "pausing twice is no error");
    phone.recorded(&recording, true).await;
    let music = phone.until(|_| true).await;
    assert_eq!(music.to_ascii_uppercase(), "SET MUSIC ON", "the caller is put on hold");
    phone.fake.write(b"200 result=0\n").await.unwrap();
    // On hold, nothing is recorded or played until the AI is resumed.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), phone.fake.read_line()).await;
    assert!(quiet.is_err(), "no command while on hold: {quiet:?}");
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/resume"), None).await;
    assert_eq!((status, body["ai"].as_str()), (200, Some("active")), "{body}");
    let music = phone.until(|_| true).await;
    assert_eq!(music.to_ascii_uppercase(), "SET MUSIC OFF", "the hold ends");
    phone.fake.write(b"200 result=0\n").await.unwrap();
    let recording = phone.next_recording().await;

    // The caller speaks again: the instruction is still in the model's context.
    phone.recorded(&recording, true).await;
    let _recording = phone.next_recording().await;
    let requests = system_messages(&rig.llm).await;
    assert_eq!(requests.len(), 2, "the utterance cut by the pause was not answered");
    assert!(requests[1].iter().any(|m| m.contains("Offer the annual plan.")), "{requests:?}");
    phone.hang_up().await;

    // Each action is on the feed with the token's name, and in the audit log.
    let acme = rig.store.org_by_slug("acme").await.unwrap().unwrap();
    let mut feed = FeedClient::connect(rig.http, &alice, &format!("?since=0&call_id={call_id}")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = feed.event(WAIT).await;
        if matches!(event.kind, EventKind::Coached | EventKind::AiPaused | EventKind::AiResumed) {
            assert_eq!(event.data["supervisor"], "alice", "{event:?}");
            seen.push(event.kind);
        }
    }
    assert_eq!(seen, vec![EventKind::Coached, EventKind::AiPaused, EventKind::AiResumed]);
    let coached =
        rig.store.call_events(&call_id).await.unwrap().into_iter().find(|e| e.kind == EventKind::Coached).unwrap();
    assert_eq!(coached.data["text"], "Offer the annual plan.");
    let audit = rig.store.audit_log(Some(acme.id), 0, 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().filter(|a| a.actor.contains("alice")).map(|a| a.action.as_str()).collect();
    for action in ["call.coached", "call.ai_paused", "call.ai_resumed"] {
        assert!(actions.contains(&action), "{action} in the audit log: {actions:?}");
    }
    let transcript = loop {
        let call = rig.store.call(acme.id, &call_id).await.unwrap().unwrap();
        if call.ended_at.is_some() {
            break call.transcript.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!transcript.contains("annual plan"), "the instruction is not in the transcript: {transcript}");
    // The call is over: nothing to act on.
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/pause"), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("has ended"), "{body}");
    rig.stop.cancel();
}

/// The user messages of the model's requests, in order.
async fn user_messages(llm: &MockServer) -> Vec<Vec<String>> {
    llm.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "user")
                .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

/// Take over and give back on an AGI call: while taken over nothing is played to the caller
/// (no `STREAM FILE`, only recordings) and the model is not asked; what the caller says is
/// stored as a turn with the supervisor; given back, the AI answers again with the caller's
/// words in the model's next request. A `monitor` token changes nothing; another organization
/// gets 404 and an ended call 409; the events and audit rows carry the supervisor's name.
#[tokio::test]
async fn taking_over_silences_the_ai_and_giving_back_hands_it_what_was_said() {
    let rig = rig(Backend::Sqlite, "daemon-a").await;
    let alice = rig.token("acme", "alice", "monitor,supervise").await;
    let wallboard = rig.token("acme", "wallboard", "monitor,dial,admin").await;
    let outsider = rig.token("globex", "mallory", "supervise").await;
    mount_stt(&rig.stt, &["My account number is 42.", "So what happens now?"]).await;
    mount_llm(&rig.llm, &[&["Your case is open ", "and on its way."]]).await;

    let mut phone = Phone::dial(rig.agi.addr).await;
    let recording = phone.next_recording().await;
    let call_id = phone.call_id.clone().expect("the daemon told the dialplan the call's id");

    // Neither a token without `supervise` nor another organization changes anything.
    let (status, _) = rig.post(&wallboard, &format!("/v1/calls/{call_id}/takeover"), None).await;
    assert_eq!(status, 403);
    let (status, _) = rig.post(&outsider, &format!("/v1/calls/{call_id}/takeover"), None).await;
    assert_eq!(status, 404);
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/giveback"), None).await;
    assert_eq!((status, body["ai"].as_str()), (200, Some("active")), "nothing to give back: {body}");

    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/takeover"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["ai"].as_str(), body["taken_over_by"].as_str()), (Some("taken_over"), Some("alice")), "{body}");
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/pause"), None).await;
    assert_eq!((status, body["ai"].as_str()), (200, Some("taken_over")), "a call taken over stays so: {body}");

    // The recording under way ends; while taken over the daemon only records, and transcribes.
    phone.recorded(&recording, true).await;
    let next = phone
        .until(|c| {
            let upper = c.to_ascii_uppercase();
            upper.starts_with("RECORD FILE") || upper.starts_with("STREAM FILE")
        })
        .await;
    assert!(next.to_ascii_uppercase().starts_with("RECORD FILE"), "no agent audio while taken over: {next}");
    phone.recorded(&next, true).await;
    let next = phone
        .until(|c| {
            let upper = c.to_ascii_uppercase();
            upper.starts_with("RECORD FILE") || upper.starts_with("STREAM FILE")
        })
        .await;
    assert!(next.to_ascii_uppercase().starts_with("RECORD FILE"), "no agent audio while taken over: {next}");
    assert_eq!(rig.stt.received_requests().await.unwrap_or_default().len(), 1, "the caller's words were transcribed");
    assert!(user_messages(&rig.llm).await.is_empty(), "the model is not asked while the call is taken over");
    let played = phone.fake.received.iter().filter(|l| l.to_ascii_uppercase().starts_with("STREAM FILE")).count();

    // Given back during the recording: it runs to its end (what the caller says in it is not
    // lost), and the AI answers it.
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/giveback"), None).await;
    assert_eq!((status, body["ai"].as_str()), (200, Some("active")), "{body}");
    phone.recorded(&next, true).await;
    let _recording = phone.next_recording().await;
    let after = phone.fake.received.iter().filter(|l| l.to_ascii_uppercase().starts_with("STREAM FILE")).count();
    assert!(after > played, "the AI speaks again once given back");
    let requests = user_messages(&rig.llm).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].iter().any(|m| m == "(with the supervisor) My account number is 42."),
        "the caller's words to the supervisor are in the model's next request: {requests:?}"
    );
    assert_eq!(requests[0].last().map(String::as_str), Some("So what happens now?"));
    let system = system_messages(&rig.llm).await;
    assert!(system[0].iter().any(|m| m.contains("took this call over")), "{system:?}");
    assert!(system[0].iter().any(|m| m.contains("gave the call back")), "{system:?}");
    phone.hang_up().await;

    // The stored transcript holds the take-over, the caller's part and the give-back.
    let acme = rig.store.org_by_slug("acme").await.unwrap().unwrap();
    let transcript = loop {
        let call = rig.store.call(acme.id, &call_id).await.unwrap().unwrap();
        if call.ended_at.is_some() {
            break call.transcript.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in [
        "[alice (supervisor) took the call over]",
        "Caller: (with the supervisor) My account number is 42.",
        "[alice (supervisor) gave the call back]",
        "Caller: So what happens now?",
        "Agent: Your case is open and on its way.",
    ] {
        assert!(transcript.contains(line), "{line:?} in the transcript:\n{transcript}");
    }
    let events = rig.store.call_events(&call_id).await.unwrap();
    let supervised: Vec<(EventKind, String)> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TakeoverStarted | EventKind::TakeoverEnded))
        .map(|e| (e.kind, e.data["supervisor"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        supervised,
        vec![(EventKind::TakeoverStarted, "alice".to_owned()), (EventKind::TakeoverEnded, "alice".to_owned())]
    );
    let audit = rig.store.audit_log(Some(acme.id), 0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = audit.iter().map(|a| (a.action.as_str(), a.actor.as_str())).collect();
    for action in ["call.takeover_started", "call.takeover_ended"] {
        assert!(
            actions.iter().any(|(a, actor)| *a == action && actor.contains("alice")),
            "{action} in the audit log: {actions:?}"
        );
    }
    assert!(
        !actions.iter().any(|(_, actor)| actor.contains("wallboard")),
        "the refused token did nothing: {actions:?}"
    );
    let (status, body) = rig.post(&alice, &format!("/v1/calls/{call_id}/takeover"), None).await;
    assert_eq!(status, 409, "{body}");
    rig.stop.cancel();
}

/// While a barging supervisor speaks the AI starts no answer: the caller's words are
/// transcribed, but the model is asked only once the supervisor is quiet, and its request says
/// a supervisor joined the line. (The barge's audio path is the real-Asterisk tests'; here the
/// supervisor's voice is signalled as the barge's relay does.)
#[tokio::test]
async fn the_ai_waits_while_a_barging_supervisor_speaks() {
    let rig = rig(Backend::Sqlite, "daemon-a").await;
    mount_stt(&rig.stt, &["Is anyone there?"]).await;
    mount_llm(&rig.llm, &[&["Yes, we are both here."]]).await;
    let mut phone = Phone::dial(rig.agi.addr).await;
    let recording = phone.next_recording().await;
    let call_id = phone.call_id.clone().unwrap();
    let acme = rig.store.org_by_slug("acme").await.unwrap().unwrap();
    let call = rig.live.get(acme.id, &call_id).expect("the call is live");
    let mut barge = call.begin_barge("alice").unwrap();
    barge.joined();
    barge.speaking(true);

    phone.recorded(&recording, true).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while rig.stt.received_requests().await.unwrap_or_default().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the caller's words are transcribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(1500), phone.fake.read_line()).await;
    assert!(quiet.is_err(), "nothing is played while the supervisor speaks: {quiet:?}");
    assert!(system_messages(&rig.llm).await.is_empty(), "the model is not asked while the supervisor speaks");

    barge.speaking(false);
    let next = phone
        .until(|c| {
            let upper = c.to_ascii_uppercase();
            upper.starts_with("STREAM FILE") || upper.starts_with("RECORD FILE")
        })
        .await;
    assert!(
        next.to_ascii_uppercase().starts_with("STREAM FILE"),
        "the AI answers once the supervisor is quiet: {next}"
    );
    let system = system_messages(&rig.llm).await;
    assert!(system[0].iter().any(|m| m.contains("(alice) has joined the line")), "{system:?}");
    drop(barge);
    phone.fake.write(b"200 result=0 endpos=8000\n").await.unwrap();
    let _recording = phone.next_recording().await;
    phone.hang_up().await;
    rig.stop.cancel();
}

/// In a fleet only the daemon holding a call acts on it: another answers 409 naming the holder.
async fn a_call_held_elsewhere_is_409_naming_its_daemon(backend: Backend) {
    let rig = rig(backend, "daemon-a").await;
    let alice = rig.token("acme", "alice", "supervise").await;
    let acme = rig.store.org_by_slug("acme").await.unwrap().unwrap();
    let elsewhere = Publisher::new(rig.store.clone(), rig.hub.clone()).with_daemon("daemon-b");
    let call = elsewhere
        .call_started(&NewCall {
            id: None,
            org_id: acme.id,
            direction: Direction::Inbound,
            from: "+15550001111".into(),
            to: "5550100".into(),
            channel: None,
            campaign_id: None,
            contact_id: None,
        })
        .await
        .unwrap();
    for action in ["coach", "pause", "resume"] {
        let (status, body) =
            rig.post(&alice, &format!("/v1/calls/{}/{action}", call.id), Some(serde_json::json!({"text": "x"}))).await;
        assert_eq!(status, 409, "{action}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("daemon-b"), "{action} names the holder: {body}");
    }
    // The store writes supervisors' events for the organization's calls only.
    let globex = rig.store.org_by_slug("globex").await.unwrap().unwrap();
    let refused = rig.store.supervisor_event(globex.id, &call.id, EventKind::Coached, serde_json::json!({})).await;
    assert!(refused.is_err(), "another organization's call is not found");
    let event = rig
        .store
        .supervisor_event(acme.id, &call.id, EventKind::AiPaused, serde_json::json!({"supervisor": "alice"}))
        .await
        .unwrap();
    assert_eq!((event.kind, event.call_id.as_deref()), (EventKind::AiPaused, Some(call.id.as_str())));
    rig.stop.cancel();
}

#[tokio::test]
async fn a_call_held_elsewhere_is_409_sqlite() {
    a_call_held_elsewhere_is_409_naming_its_daemon(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_call_held_elsewhere_is_409_postgres() {
    a_call_held_elsewhere_is_409_naming_its_daemon(Backend::Postgres).await;
}

/// An AGI call against the shared real Asterisk, as the live tests set it up.
struct LiveAgi {
    asterisk: &'static support::asterisk::Asterisk,
    agent: support::live::Agent,
    call_id: String,
    /// The agent's channel (the AGI leg).
    channel: String,
    org: asterai::store::Org,
    /// alice's token.
    token: String,
    /// Asterisk's log before the call.
    mark: u64,
    /// The person's key (its script in AstDB).
    key: String,
}

/// Starts a daemon that hears `transcripts` and answers `answers`, lets the person of
/// `script(asterisk, key)` call it, and makes alice a token of `scopes`.
async fn live_agi_call(
    transcripts: &[&str],
    answers: &[&[&str]],
    scopes: &str,
    script: impl FnOnce(&support::asterisk::Asterisk, &str) -> support::asterisk::Script,
) -> LiveAgi {
    let asterisk = support::asterisk::Asterisk::shared().await;
    let agent = support::live::Agent::start(asterisk, &[]).await;
    agent.transcripts(transcripts).await;
    agent.answers(answers).await;
    let key = support::asterisk::unique().to_string();
    asterisk.put_script(&key, None, &script(asterisk, &key)).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(asterisk, &key).await;
    let channel = person.other_leg();
    let call_id = agent.call_on(&channel).await;
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let token = create_token(&agent.store, org.id, "alice", Scopes::parse(scopes).unwrap()).await.unwrap().token;
    LiveAgi { asterisk, agent, call_id, channel, org, token, mark, key }
}

/// A supervisor listens on `GET /v1/calls/{id}/listen` (once the call is in conversation: it is
/// 409 a moment after the call is stored), then `go` lets the caller speak: what arrives must be
/// real sound, not silence, and carry the [`CALLER_HZ`] tone the caller plays (at the
/// listener's 16 kHz). The socket is closed on return.
async fn hears_the_callers_tone(
    agent: &support::live::Agent,
    call_id: &str,
    token: &str,
    go: impl std::future::Future<Output = ()>,
) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    // The call is in conversation a moment after it is stored.
    let url = format!("ws://{}/v1/calls/{call_id}/listen?token={token}", agent.http);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 409 => {}
            Err(e) => panic!("cannot listen: {e}; daemon log:\n{}", agent.log().join("\n")),
        }
        assert!(tokio::time::Instant::now() < deadline, "the call never came into conversation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let start = match tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        other => panic!("expected listen.start, got {other:?}"),
    };
    assert_eq!(
        (start["type"].as_str(), start["rate"].as_i64(), start["format"].as_str()),
        (Some("listen.start"), Some(16000), Some("s16le"))
    );
    go.await;

    // The caller's words reach the listener: frames of real sound, not silence; and what the
    // caller played is what the listener hears (the tone, at the listener's 16 kHz).
    let (mut frames, mut voiced, mut toned) = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while voiced < 50 || toned < 25 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{voiced} voiced and {toned} with the caller's tone of {frames} frames; daemon log:\n{}",
            agent.log().join("\n")
        );
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("frames keep coming").expect("open").unwrap();
        let Message::Binary(pcm) = message else { continue };
        assert_eq!(pcm.len() % 2, 0);
        frames += 1;
        let samples: Vec<f64> = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f64).collect();
        let rms = (samples.iter().map(|s| s * s).sum::<f64>() / samples.len().max(1) as f64).sqrt();
        if rms > 300.0 {
            voiced += 1;
        }
        let pcm: Vec<i16> = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        toned += tone_windows_at(&pcm, CALLER_HZ, 16000);
    }
    ws.close(None).await.unwrap();
}

/// Listening against the real Asterisk: `asterai serve` (ARI configured) holds an AGI call; a
/// supervisor's WebSocket on `GET /v1/calls/{id}/listen` gets the call's audio (an ARI snoop,
/// bridged with a chan_websocket channel), which is not silent while the caller speaks and
/// carries what the caller played (a [`CALLER_HZ`] tone after their words); the feed says who
/// joined and left.
#[tokio::test]
async fn a_supervisor_listens_to_an_agi_call_against_the_real_asterisk() {
    use support::asterisk::Script;

    let LiveAgi { asterisk, agent, call_id, org, token, .. } =
        live_agi_call(&["Can you hear me?"], &[&["Yes, I can hear you."]], "monitor,supervise", |asterisk, _| {
            let speech = asterisk
                .utterance("Hello, can you hear me? I am talking for a while so that the supervisor hears me well.");
            let tone = asterisk.tone(CALLER_HZ, 2.0);
            Script::new().wait_for_agent().quiet(3).say(&speech).say(&tone).wait_for_agent().quiet(10)
        })
        .await;
    let mut feed = FeedClient::connect(agent.http, &token, &format!("?since=0&call_id={call_id}")).await.unwrap();

    hears_the_callers_tone(&agent, &call_id, &token, async {}).await;

    let mut kinds = Vec::new();
    while !kinds.contains(&EventKind::SupervisorLeft) {
        let event = feed.event(WAIT).await;
        if matches!(event.kind, EventKind::SupervisorJoined | EventKind::SupervisorLeft) {
            assert_eq!(event.data["supervisor"], "alice", "{event:?}");
            kinds.push(event.kind);
        }
    }
    assert_eq!(kinds, vec![EventKind::SupervisorJoined, EventKind::SupervisorLeft]);
    let audit = agent.store.audit_log(Some(org.id), 0, 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(actions.contains(&"call.listen_started") && actions.contains(&"call.listen_ended"), "{actions:?}");
    agent.finished(&call_id).await;
    // The tap's channels are gone with the call.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (user, password) = support::asterisk::ari_credentials();
        let channels: Vec<serde_json::Value> = reqwest::Client::new()
            .get(format!("{}/ari/channels", asterisk.ari_url()))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = channels.iter().filter_map(|c| c["id"].as_str()).collect();
        if !ids.iter().any(|id| id.starts_with("asterai-snoop-") || id.contains("listen-")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "tap channels left behind: {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A probe the test puts into the page before its scripts: whatever the page connects to its
/// audio output is also analysed, and `window.probeTone.hits` counts the moments (every 50 ms)
/// where the loudest sound played is within 50 Hz of `window.probeTone.hz` (the test sets it).
const AUDIO_OUT_PROBE: &str = r#"
window.probeTone = { hz: 0, hits: 0, checks: 0 };
const connect = AudioNode.prototype.connect;
AudioNode.prototype.connect = function (target, ...rest) {
  if (target instanceof AudioDestinationNode) {
    const analyser = this.context.createAnalyser();
    analyser.fftSize = 4096;
    connect.call(this, analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    setInterval(() => {
      analyser.getFloatFrequencyData(bins);
      let peak = 0;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[peak]) peak = i;
      const hz = peak * this.context.sampleRate / analyser.fftSize;
      window.probeTone.checks++;
      if (bins[peak] > -60 && Math.abs(hz - window.probeTone.hz) < 50) window.probeTone.hits++;
    }, 50);
  }
  return connect.call(this, target, ...rest);
};
"#;

/// The page's console in headless Chromium against the real Asterisk: a supervisor opens a live
/// AGI call, clicks Listen, and the AudioWorklet plays the call's audio (it reports sound out,
/// and what it plays holds the [`CALLER_HZ`] tone the caller played, as a probe on the page's
/// audio output finds); Stop listening closes the socket.
#[tokio::test]
async fn the_page_plays_a_live_call_against_the_real_asterisk() {
    use support::asterisk::Script;
    use support::browser::{Browser, output_dir};

    let LiveAgi { asterisk, agent, call_id, token, key, .. } =
        live_agi_call(&["Can you hear me?"], &[&["Yes, I can hear you."]], "monitor,supervise", |asterisk, key| {
            let speech =
                asterisk.utterance("Hello, hello. I am talking so that the supervisor can hear me in the browser.");
            let tone = asterisk.tone(CALLER_HZ, 3.0);
            // The caller talks once the page listens (the test's word in AstDB).
            Script::new()
                .wait_for_agent()
                .wait_for_db("asterai-test", &format!("{key}-listening"), 60)
                .say(&speech)
                .say(&tone)
                .say(&speech)
                .wait_for_agent()
                .quiet(10)
        })
        .await;

    let mut browser = Browser::start(1280, 800).await;
    browser.on_new_document(&format!("{AUDIO_OUT_PROBE}\nwindow.probeTone.hz = {CALLER_HZ};")).await;
    browser.goto(&format!("http://{}/", agent.http)).await;
    browser.wait_for("document.querySelector('#signin')", "the sign-in form shows").await;
    browser
        .eval(&format!(
            "document.querySelector('#token').value = {}; document.querySelector('#signin').requestSubmit(); true",
            serde_json::Value::from(token.as_str())
        ))
        .await;
    let row = format!("document.querySelector('#active .call-row[data-call-id=\"{call_id}\"]')");
    browser.wait_for(&row, "the live call is listed").await;
    browser.eval(&format!("{row}.click(); true")).await;
    browser
        .wait_for(
            "!document.querySelector('#console').hidden && !document.querySelector('#listen').disabled",
            "the console shows",
        )
        .await;
    browser.eval_as_user("document.querySelector('#listen').click(); true").await;
    browser
        .wait_for("Number(document.querySelector('#listen').dataset.frames || 0) > 50", "frames reach the page")
        .await;
    asterisk.db_put("asterai-test", &format!("{key}-listening"), "1").await;
    browser
        .wait_for("Number(document.querySelector('#listen').dataset.heard || 0) > 0", "the worklet plays sound")
        .await;
    browser.wait_for("window.probeTone.hits >= 10", "the page plays the caller's tone").await;
    let status = browser.eval("document.querySelector('#console-status').textContent").await;
    assert_eq!(status, "Listening.");
    browser.screenshot(&output_dir().join("console-listening.png")).await;
    browser.eval_as_user("document.querySelector('#listen').click(); true").await;
    browser.wait_for("document.querySelector('#listen').textContent === 'Listen'", "listening stops").await;
    // The daemon saw the supervisor join and leave.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let kinds: Vec<EventKind> = agent.events(&call_id).await.into_iter().map(|e| e.kind).collect();
        if kinds.contains(&EventKind::SupervisorLeft) {
            assert!(kinds.contains(&EventKind::SupervisorJoined), "{kinds:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no supervisor_left: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.finished(&call_id).await;
}

/// Pausing a streaming call against the real Asterisk: the dialer places it with
/// `media = "stream"`; paused during the greeting, the AI holds the caller (ARI music on hold on
/// the bridged channel, accepted, and heard on the caller's leg, which records itself with
/// MixMonitor) and does not hear what the caller says meanwhile; resumed, it hears and answers
/// the caller's next words.
#[tokio::test]
async fn pausing_a_streaming_call_against_the_real_asterisk() {
    use support::asterisk::{Asterisk, MUSIC_ON_HOLD_HZ, Script, unique};
    use support::live::Agent;

    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    agent.transcripts(&["I am back."]).await;
    agent.answers(&[&["Welcome back."]]).await;
    let digits = format!("15550{:06}", unique());
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("caller.wav");
    // The caller listens to the hold for 2 s once the test says the AI is paused (the music
    // never falls silent, so waiting for the agent to be quiet would not end).
    let script = Script::new()
        .answer()
        .step(format!("MixMonitor({})", wav.display()))
        .wait_for_db("asterai-test", &format!("{digits}-paused"), 60)
        .quiet(2)
        .say(&asterisk.utterance("Are you still there? Hello? I am talking while you are paused."))
        .step(format!("Set(DB(asterai-test/{digits}-said)=1)"))
        .step("Wait(8)")
        .say(&asterisk.utterance("I am back."))
        .wait_for_agent()
        .quiet(10);
    asterisk.put_script(&digits, None, &script).await;
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let token = create_token(&agent.store, org.id, "alice", Scopes::all()).await.unwrap().token;
    let client = reqwest::Client::new();
    let call_id = agent.place_streaming_call(&format!("+{digits}")).await;
    let post = |action: &str| {
        client.post(format!("http://{}/v1/calls/{call_id}/{action}", agent.http)).bearer_auth(&token).send()
    };
    // Paused as soon as the call is in conversation (during the greeting).
    let deadline = tokio::time::Instant::now() + WAIT;
    let paused: serde_json::Value = loop {
        let response = post("pause").await.unwrap();
        if response.status() == 200 {
            break response.json().await.unwrap();
        }
        assert_eq!(response.status(), 409, "{}", response.text().await.unwrap());
        assert!(tokio::time::Instant::now() < deadline, "the call never came into conversation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((paused["media"].as_str(), paused["ai"].as_str()), (Some("stream"), Some("paused")), "{paused}");
    asterisk.db_put("asterai-test", &format!("{digits}-paused"), "1").await;

    // The caller talks while the AI is paused: nothing is transcribed or answered.
    asterisk.wait_for_db("asterai-test", &format!("{digits}-said")).await;
    let transcribed = agent.stt.received_requests().await.unwrap_or_default().len();
    assert_eq!(transcribed, 0, "the AI heard nothing while paused");
    let response = post("resume").await.unwrap();
    assert_eq!(response.status(), 200);

    // Resumed: the caller's next words are heard and answered.
    let call = agent.finished(&call_id).await;
    let turns = agent.turns(&call_id).await;
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    assert!(said.contains(&("I am back.", "Welcome back.")), "{said:?}\n{call:?}\n{}", agent.log().join("\n"));
    assert_eq!(agent.stt.received_requests().await.unwrap_or_default().len(), 1, "{said:?}");
    let warnings = agent.warnings();
    assert!(!warnings.iter().any(|w| w.contains("music on hold")), "ARI took the music on hold: {warnings:#?}");
    let music = tone_windows(&finished_recording(&wav).await, MUSIC_ON_HOLD_HZ);
    assert!(music >= 50, "the caller hears the music on hold: {music} windows of 20 ms");
    let kinds: Vec<EventKind> = agent.events(&call_id).await.into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::AiPaused) && kinds.contains(&EventKind::AiResumed), "{kinds:?}");
}

/// Pausing an AGI call against the real Asterisk: `SET MUSIC on` while paused (Asterisk
/// accepts it, and the caller's leg, which records itself with MixMonitor, hears the music),
/// nothing recorded or transcribed meanwhile, `SET MUSIC off` and the AI answers again once
/// resumed.
#[tokio::test]
async fn pausing_an_agi_call_against_the_real_asterisk() {
    use support::asterisk::{MUSIC_ON_HOLD_HZ, Script};

    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("caller.wav");
    let LiveAgi { asterisk, agent, call_id, channel, token, mark, key, .. } =
        live_agi_call(&["I am back."], &[&["Welcome back."]], "supervise", |asterisk, key| {
            // The caller listens to the hold for 2 s once the test says the AI is paused.
            Script::new()
                .step(format!("MixMonitor({})", wav.display()))
                .wait_for_db("asterai-test", &format!("{key}-paused"), 60)
                .quiet(2)
                .say(&asterisk.utterance("Are you still there? Hello? I am talking while you are paused."))
                .step(format!("Set(DB(asterai-test/{key}-said)=1)"))
                .step("Wait(8)")
                .say(&asterisk.utterance("I am back."))
                .wait_for_agent()
                .quiet(10)
        })
        .await;
    let client = reqwest::Client::new();
    let post = |action: &str| {
        client.post(format!("http://{}/v1/calls/{call_id}/{action}", agent.http)).bearer_auth(&token).send()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = post("pause").await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 409, "{}", response.text().await.unwrap());
        assert!(tokio::time::Instant::now() < deadline, "the call never came into conversation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    asterisk.db_put("asterai-test", &format!("{key}-paused"), "1").await;
    asterisk.wait_for_db("asterai-test", &format!("{key}-said")).await;
    assert_eq!(agent.stt.received_requests().await.unwrap_or_default().len(), 0, "nothing heard while paused");
    assert_eq!(post("resume").await.unwrap().status(), 200);

    agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &channel).await;
    let music = exchange.named("SET MUSIC");
    assert_eq!(
        music,
        [
            ("SET MUSIC on".to_owned(), Some("200 result=0".to_owned())),
            ("SET MUSIC off".to_owned(), Some("200 result=0".to_owned()))
        ],
        "{:#?}",
        exchange.commands()
    );
    let turns = agent.turns(&call_id).await;
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    assert!(said.contains(&("I am back.", "Welcome back.")), "{said:?}");
    assert_eq!(agent.stt.received_requests().await.unwrap_or_default().len(), 1, "{said:?}");
    let music = tone_windows(&finished_recording(&wav).await, MUSIC_ON_HOLD_HZ);
    assert!(music >= 50, "the caller hears the music on hold: {music} windows of 20 ms");
}

/// The share of a window's energy at `hz` (samples at `rate`): 1 for a pure tone at `hz`, near
/// 0 for speech or another tone (Goertzel).
fn tone_share(window: &[i16], hz: f64, rate: f64) -> f64 {
    let n = window.len() as f64;
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for sample in window {
        let x = *sample as f64;
        energy += x * x;
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    if energy == 0.0 { 0.0 } else { 2.0 * power / (n * energy) }
}

/// The windows (20 ms) of a recording where a tone at `hz` is most of what is heard.
fn tone_windows(samples: &[i16], hz: f64) -> usize {
    tone_windows_at(samples, hz, 8000)
}

/// [`tone_windows`] of samples at `rate`.
fn tone_windows_at(samples: &[i16], hz: f64, rate: usize) -> usize {
    samples
        .chunks_exact(rate / 50)
        .filter(|w| {
            let rms = (w.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
            rms > 200.0 && tone_share(w, hz, rate as f64) > 0.5
        })
        .count()
}

/// The tone a caller plays for the listen test: apart from the agent's 300 Hz, the music on
/// hold's 600 Hz and the supervisor's 1 kHz.
const CALLER_HZ: f64 = 1400.0;

/// The supervisor's tone: 1 kHz, far from the agent's 300 Hz and clear of speech's harmonics
/// taken as a whole.
const SUPERVISOR_HZ: f64 = 1000.0;

/// A live call a supervisor barges in on, against the real Asterisk: the caller's leg records
/// itself with MixMonitor into `wav`.
struct BargeCall {
    agent: support::live::Agent,
    call_id: String,
    wav: std::path::PathBuf,
    _dir: tempfile::TempDir,
    org: asterai::store::Org,
    /// alice's token, `monitor,supervise`.
    token: String,
}

/// Starts a daemon and a call for a barge (`stream`: a streaming call placed by the dialer;
/// else an inbound AGI call), and waits until the agent has greeted and listens.
async fn barge_call(asterisk: &support::asterisk::Asterisk, stream: bool) -> BargeCall {
    use support::asterisk::{Script, unique};
    use support::live::Agent;

    let agent = Agent::start(asterisk, &[]).await;
    agent.transcripts(&["Hello?"]).await;
    agent.answers(&[&["I am here."]]).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("caller.wav");
    let key = if stream { format!("15550{:06}", unique()) } else { unique().to_string() };
    let mut script = Script::new();
    if stream {
        script = script.answer();
    }
    let script = script.step(format!("MixMonitor({})", wav.display()));
    // On a streaming call the caller waits for the greeting to end. On an AGI call Asterisk
    // transmits silence while the agent records, which WaitForSilence does not take for the end
    // of the agent's words: the test waits for the recording in Asterisk's log instead, and the
    // caller's line sends silent audio meanwhile, as a phone's does.
    let script = if stream {
        script.wait_for_agent().step(format!("Set(DB(asterai-test/{key}-ready)=1)")).quiet(12)
    } else {
        script.silence(10).silence(10)
    };
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let token =
        create_token(&agent.store, org.id, "alice", Scopes::parse("monitor,supervise").unwrap()).await.unwrap().token;
    let call_id = if stream {
        agent.place_streaming_call(&format!("+{key}")).await
    } else {
        let person = agent.call_in(asterisk, &key).await;
        agent.call_on(&person.other_leg()).await
    };
    if !stream {
        asterisk.wait_for_log(mark, &["RECORD FILE"]).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while stream && asterisk.db_get("asterai-test", &format!("{key}-ready")).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the caller never heard the agent finish its greeting; daemon log:\n{}",
            agent.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    BargeCall { agent, call_id, wav, _dir: dir, org, token }
}

/// Listening to a streaming call against the real Asterisk: the snoop taps the caller's
/// channel as on an AGI call (the call's own bridge is left alone); the caller plays the
/// [`CALLER_HZ`] tone once the supervisor listens, and the listener hears it.
#[tokio::test]
async fn a_supervisor_listens_to_a_streaming_call_against_the_real_asterisk() {
    use support::asterisk::{Asterisk, Script, unique};

    let asterisk = Asterisk::shared().await;
    let agent = support::live::Agent::start(asterisk, &[]).await;
    agent.transcripts(&["Hello?"]).await;
    agent.answers(&[&["I am here."]]).await;
    let key = format!("15550{:06}", unique());
    let script = Script::new()
        .answer()
        .wait_for_agent()
        .wait_for_db("asterai-test", &format!("{key}-listening"), 60)
        .say(&asterisk.tone(CALLER_HZ, 2.0))
        .quiet(10);
    asterisk.put_script(&key, None, &script).await;
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let token =
        create_token(&agent.store, org.id, "alice", Scopes::parse("monitor,supervise").unwrap()).await.unwrap().token;
    let call_id = agent.place_streaming_call(&format!("+{key}")).await;
    let listening = format!("{key}-listening");
    let go = asterisk.db_put("asterai-test", &listening, "1");
    hears_the_callers_tone(&agent, &call_id, &token, go).await;
    agent.finished(&call_id).await;
}

/// The 20 ms windows of the caller's finished MixMonitor recording where the supervisor's tone
/// is most of what is heard.
async fn tone_in_recording(wav: &std::path::Path) -> usize {
    let samples = finished_recording(wav).await;
    let toned = tone_windows(&samples, SUPERVISOR_HZ);
    eprintln!("{}: the supervisor's tone in {toned} of {} windows of 20 ms", wav.display(), samples.len() / 160);
    toned
}

/// The samples of the caller's MixMonitor recording, once finished (MixMonitor finishes the
/// file once the caller's channel is gone).
async fn finished_recording(wav: &std::path::Path) -> Vec<i16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let first = std::fs::read(wav).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = std::fs::read(wav).unwrap_or_default();
        if !first.is_empty()
            && first == second
            && let Ok(samples) = asterai::speech::audio::decode_wav(&second)
        {
            return samples;
        }
        assert!(tokio::time::Instant::now() < deadline, "no finished recording at {}", wav.display());
    }
}

/// A supervisor barges in on a live call against the real Asterisk: a Rust WebSocket client
/// sends a 1 kHz tone as 16 kHz PCM on `GET /v1/calls/{id}/barge`; the caller's leg, recorded
/// with MixMonitor by the test's dialplan, holds the tone (and no such tone without the barge:
/// the agent speaks at 300 Hz, the caller not at all). The feed and the audit log name the
/// supervisor. `stream`: a streaming call placed by the dialer; else an AGI call, which needs
/// Asterisk's `transmit_silence`.
async fn the_caller_hears_a_barging_supervisor(asterisk: &support::asterisk::Asterisk, stream: bool) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let BargeCall { agent, call_id, wav, _dir, org, token } = barge_call(asterisk, stream).await;
    let url = format!("ws://{}/v1/calls/{call_id}/barge?token={token}", agent.http);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 409 => {}
            Err(e) => panic!("cannot barge in: {e}; daemon log:\n{}", agent.log().join("\n")),
        }
        assert!(tokio::time::Instant::now() < deadline, "the call never came into conversation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let start = match tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        other => panic!("expected barge.start, got {other:?}"),
    };
    assert_eq!(start["type"].as_str(), Some("barge.start"), "{start}");
    let rate = start["rate"].as_f64().expect("the rate to send at");
    // A second supervisor waits for the first.
    let second = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        matches!(&second, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 409),
        "one barge at a time: {second:?}"
    );
    // Three seconds of tone, sent at about the pace a microphone gives it.
    let mut phase = 0.0f64;
    for _ in 0..150 {
        let mut frame = Vec::with_capacity(640);
        for _ in 0..(rate as usize / 50) {
            let sample = (phase.sin() * 8000.0) as i16;
            phase += 2.0 * std::f64::consts::PI * SUPERVISOR_HZ / rate;
            frame.extend_from_slice(&sample.to_le_bytes());
        }
        ws.send(Message::Binary(frame.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if stream {
        ws.close(None).await.unwrap();
    } else {
        // A malformed frame (an odd number of bytes) closes the socket with a reason.
        ws.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
        let closed = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("the daemon closes the socket") {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let frame = closed.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1007, "{frame:?}");
        assert!(frame.reason.contains("even length"), "{frame:?}");
    }

    agent.finished(&call_id).await;
    let toned = tone_in_recording(&wav).await;
    assert!(
        toned >= 50,
        "the caller's recording holds the supervisor's tone: {toned} windows of 20 ms; daemon log:\n{}",
        agent.log().join("\n")
    );

    let events = agent.events(&call_id).await;
    let barged: Vec<(EventKind, &str)> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BargeStarted | EventKind::BargeEnded))
        .map(|e| (e.kind, e.data["supervisor"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(barged, vec![(EventKind::BargeStarted, "alice"), (EventKind::BargeEnded, "alice")]);
    let audit = agent.store.audit_log(Some(org.id), 0, 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().filter(|a| a.actor.contains("alice")).map(|a| a.action.as_str()).collect();
    assert!(actions.contains(&"call.barge_started") && actions.contains(&"call.barge_ended"), "{actions:?}");
    // The barge's channels are gone.
    let (user, password) = support::asterisk::ari_credentials();
    let channels: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{}/ari/channels", asterisk.ari_url()))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = channels.iter().filter_map(|c| c["id"].as_str()).collect();
    assert!(!ids.iter().any(|id| id.contains("barge-")), "barge channels left behind: {ids:?}");
}

#[tokio::test]
async fn a_barging_supervisor_is_heard_on_a_streaming_call_against_the_real_asterisk() {
    let asterisk = support::asterisk::Asterisk::shared().await;
    the_caller_hears_a_barging_supervisor(asterisk, true).await;
}

#[tokio::test]
async fn a_barging_supervisor_is_heard_on_an_agi_call_against_the_real_asterisk() {
    // The AGI path needs Asterisk to transmit silence while it records (see the README).
    let options = support::asterisk::Options { transmit_silence: true, ..Default::default() };
    let asterisk = support::asterisk::Asterisk::start(options).await;
    the_caller_hears_a_barging_supervisor(&asterisk, false).await;
}

/// The page's Barge button in headless Chromium against the real Asterisk: the fake microphone
/// plays a 1 kHz tone (`--use-file-for-fake-audio-capture`), the console sends it through the
/// AudioWorklet of barge-worklet.js on the barge WebSocket, and the caller's recording holds
/// it. A `monitor` token first sees no console at all.
#[tokio::test]
async fn the_page_barges_in_with_the_microphone_against_the_real_asterisk() {
    use support::browser::{Browser, output_dir};

    let asterisk = support::asterisk::Asterisk::shared().await;
    let BargeCall { agent, call_id, wav, _dir, org, token } = barge_call(asterisk, true).await;
    let wallboard =
        create_token(&agent.store, org.id, "wallboard", Scopes::parse("monitor").unwrap()).await.unwrap().token;
    let microphone = _dir.path().join("microphone.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&microphone, spec).unwrap();
    for i in 0..(48000 * 10) {
        let sample = ((i as f64 * 2.0 * std::f64::consts::PI * SUPERVISOR_HZ / 48000.0).sin() * 9000.0) as i16;
        writer.write_sample(sample).unwrap();
    }
    writer.finalize().unwrap();
    let flags = [
        "--use-fake-ui-for-media-stream".to_owned(),
        "--use-fake-device-for-media-stream".to_owned(),
        format!("--use-file-for-fake-audio-capture={}", microphone.display()),
        "--autoplay-policy=no-user-gesture-required".to_owned(),
    ];
    let mut browser = Browser::start_with(1280, 800, &flags).await;
    let row = format!("document.querySelector('#active .call-row[data-call-id=\"{call_id}\"]')");
    for (who, token) in [("wallboard", &wallboard), ("alice", &token)] {
        browser.goto(&format!("http://{}/", agent.http)).await;
        browser.eval("sessionStorage.clear(); true").await;
        browser.goto(&format!("http://{}/", agent.http)).await;
        browser.wait_for("document.querySelector('#signin')", "the sign-in form shows").await;
        browser
            .eval(&format!(
                "document.querySelector('#token').value = {}; document.querySelector('#signin').requestSubmit(); true",
                serde_json::Value::from(token.as_str())
            ))
            .await;
        browser.wait_for(&row, "the live call is listed").await;
        browser.eval(&format!("{row}.click(); true")).await;
        if who == "wallboard" {
            browser
                .wait_for(
                    "document.querySelector('#console').dataset.supervise === 'no'",
                    "the page asked the token's scopes",
                )
                .await;
            let hidden = browser.eval("document.querySelector('#console').hidden").await;
            assert_eq!(hidden, serde_json::Value::Bool(true), "a monitor token sees no supervisor buttons");
        }
    }
    browser
        .wait_for(
            "!document.querySelector('#console').hidden && !document.querySelector('#barge').disabled",
            "the console shows to a supervise token",
        )
        .await;
    browser.eval_as_user("document.querySelector('#barge').click(); true").await;
    browser
        .wait_for("Number(document.querySelector('#barge').dataset.loud || 0) > 100", "the microphone's tone is sent")
        .await;
    let status = browser.eval("document.querySelector('#console-status').textContent").await;
    assert_eq!(status, "Barging in: the caller and the AI hear you.");
    browser.screenshot(&output_dir().join("console-barging.png")).await;
    // Take over and give back from the page while barging.
    browser.eval_as_user("document.querySelector('#takeover').click(); true").await;
    browser
        .wait_for(
            "document.querySelector('#console-status').textContent === 'Taken over: the AI is silent. The caller hears you.'",
            "the call is taken over",
        )
        .await;
    browser.eval_as_user("document.querySelector('#giveback').click(); true").await;
    browser
        .wait_for(
            "document.querySelector('#console-status').textContent === 'Given back: the AI answers again.'",
            "the call is given back",
        )
        .await;
    browser.eval_as_user("document.querySelector('#barge').click(); true").await;
    browser.wait_for("document.querySelector('#barge').textContent === 'Barge'", "barging stops").await;

    agent.finished(&call_id).await;
    let toned = tone_in_recording(&wav).await;
    assert!(toned >= 50, "the caller heard the page's microphone: {toned} windows of 20 ms");
    let kinds: Vec<EventKind> = agent.events(&call_id).await.into_iter().map(|e| e.kind).collect();
    for kind in [EventKind::BargeStarted, EventKind::BargeEnded, EventKind::TakeoverStarted, EventKind::TakeoverEnded] {
        assert!(kinds.contains(&kind), "{kind:?} stored: {kinds:?}");
    }
}

/// What the supervisor says in the take-over tests (the STT mock's answer to audio holding the
/// supervisor's tone).
const SUPERVISOR_SAYS: &str = "I have refunded your order.";
/// What the caller says once the call is given back (the STT mock's answer to anything else).
const CALLER_SAYS: &str = "Thanks, what happens now?";
/// The AI's answer to it.
const AI_ANSWERS: &str = "Glad I could help.";

/// How many requests a mock has received.
async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

/// Speech-to-text that tells the supervisor from the caller by what it hears: a request whose
/// WAV (any rate) holds the supervisor's 1 kHz tone for 200 ms or more is the supervisor's,
/// anything else the caller's. (The barge's relay sends the supervisor's own audio; the AI's
/// ear would send the line mixed, tone and all, if it took the supervisor for the caller.)
struct ByTone;

impl wiremock::Respond for ByTone {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let body = &request.body;
        let at = body.windows(4).position(|w| w == b"RIFF").expect("a WAV in the multipart body");
        let mut reader = hound::WavReader::new(std::io::Cursor::new(&body[at..])).expect("a readable WAV");
        let rate = reader.spec().sample_rate as usize;
        let samples: Vec<i16> = reader.samples::<i16>().map_while(Result::ok).collect();
        let toned = tone_windows_at(&samples, SUPERVISOR_HZ, rate);
        let text = if toned >= 10 { SUPERVISOR_SAYS } else { CALLER_SAYS };
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": text}))
    }
}

/// Take over and give back against the real Asterisk (`stream`: a streaming call placed by the
/// dialer; else an inbound AGI call, which needs `transmit_silence`). Once the agent listens,
/// alice takes the call over and barges in with two seconds of a 1 kHz tone (as 16-bit PCM on
/// the barge socket), then gives the call back; only then does the caller speak (the person's
/// script waits for an AstDB key in a loop of one-second silences). Checked: no agent audio
/// while taken over (AGI: no `STREAM FILE` in Asterisk's log between take-over and give-back;
/// streaming: no request to the model or the text-to-speech); the stored turns hold the
/// markers and the supervisor's words as `(supervisor alice) …`, and the caller's side never
/// holds them (the AI's ear hears the supervisor mixed into the line, and the STT mock would
/// answer the tone with the supervisor's words); given back, the AI answers the caller's next
/// words, and the model's request holds what the supervisor said.
async fn take_over_and_give_back(asterisk: &support::asterisk::Asterisk, stream: bool) {
    use futures_util::{SinkExt, StreamExt};
    use support::asterisk::{Script, unique};
    use support::live::Agent;
    use tokio_tungstenite::tungstenite::Message;

    let agent = Agent::start(asterisk, &[]).await;
    Mock::given(method("POST")).and(path("/v1/audio/transcriptions")).respond_with(ByTone).mount(&agent.stt).await;
    agent.answers(&[&[AI_ANSWERS]]).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("caller.wav");
    let key = if stream { format!("15550{:06}", unique()) } else { unique().to_string() };
    let mut script = Script::new();
    if stream {
        script = script.answer();
    }
    script = script.step(format!("MixMonitor({})", wav.display()));
    if stream {
        script = script.wait_for_agent().step(format!("Set(DB(asterai-test/{key}-ready)=1)"));
    }
    // Silent audio, a second at a time, until the test has given the call back.
    script = script
        .silence(1)
        .step(format!("ExecIf($[${{DB_EXISTS(asterai-test/{key}-back)}}=0]?Set(STEP=$[${{STEP}}-2]))"))
        .say(&asterisk.utterance(CALLER_SAYS));
    script = if stream { script.wait_for_agent().quiet(3) } else { script.silence(10) };
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let token =
        create_token(&agent.store, org.id, "alice", Scopes::parse("monitor,supervise").unwrap()).await.unwrap().token;
    let (call_id, channel) = if stream {
        (agent.place_streaming_call(&format!("+{key}")).await, String::new())
    } else {
        let person = agent.call_in(asterisk, &key).await;
        let channel = person.other_leg();
        (agent.call_on(&channel).await, channel)
    };
    if stream {
        asterisk.wait_for_db("asterai-test", &format!("{key}-ready")).await;
    } else {
        asterisk.wait_for_log(mark, &["RECORD FILE"]).await;
    }

    let client = reqwest::Client::new();
    let post = |action: &str| {
        client.post(format!("http://{}/v1/calls/{call_id}/{action}", agent.http)).bearer_auth(&token).send()
    };
    let taken_at = asterisk.log_mark();
    let (llm_before, tts_before) = (requests(&agent.llm).await, requests(&agent.tts).await);
    let response = post("takeover").await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let url = format!("ws://{}/v1/calls/{call_id}/barge?token={token}", agent.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot barge in: {e}; daemon log:\n{}", agent.log().join("\n")));
    let start = match tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        other => panic!("expected barge.start, got {other:?}"),
    };
    let rate = start["rate"].as_f64().expect("the rate to send at");
    if !stream {
        // The supervisor speaks into the take-over's own recording (the one under way when the
        // call was taken over is dropped).
        asterisk.wait_for_log(taken_at, &[&format!("<{channel}>AGI Rx << RECORD FILE")]).await;
    }
    // Two seconds of tone, then a second and a half of silence, at a microphone's pace.
    let mut phase = 0.0f64;
    for i in 0..175 {
        let mut frame = Vec::with_capacity(640);
        for _ in 0..(rate as usize / 50) {
            let sample = if i < 100 { (phase.sin() * 8000.0) as i16 } else { 0 };
            phase += 2.0 * std::f64::consts::PI * SUPERVISOR_HZ / rate;
            frame.extend_from_slice(&sample.to_le_bytes());
        }
        ws.send(Message::Binary(frame.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = post("giveback").await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let given_at = asterisk.log_mark();
    let (llm_given, tts_given) = (requests(&agent.llm).await, requests(&agent.tts).await);
    ws.close(None).await.unwrap();
    asterisk.db_put("asterai-test", &format!("{key}-back"), "1").await;

    agent.finished(&call_id).await;
    let log = agent.log().join("\n");
    let turns = agent.turns(&call_id).await;
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    let at = |agent_side: &str| said.iter().position(|(_, a)| *a == agent_side);
    let taken = at("[alice (supervisor) took the call over]").unwrap_or_else(|| panic!("{said:#?}\n{log}"));
    let supervisor = format!("(supervisor alice) {SUPERVISOR_SAYS}");
    let words = at(&supervisor).unwrap_or_else(|| panic!("the supervisor's words are stored: {said:#?}\n{log}"));
    let given = at("[alice (supervisor) gave the call back]").unwrap_or_else(|| panic!("{said:#?}\n{log}"));
    assert!(taken < words && words < given, "{said:#?}");
    assert!(
        !said.iter().any(|(caller, _)| caller.contains(SUPERVISOR_SAYS)),
        "the caller's side never holds the supervisor's words: {said:#?}"
    );
    let answered = said.iter().position(|turn| *turn == (CALLER_SAYS, AI_ANSWERS));
    assert!(answered.is_some_and(|a| a > given), "the AI answers again once given back: {said:#?}\n{log}");

    // No agent audio while taken over; played again afterwards.
    assert_eq!(llm_given, llm_before, "the model was not asked while the call was taken over");
    if stream {
        assert_eq!(tts_given, tts_before, "nothing was synthesized while the call was taken over");
        assert!(requests(&agent.tts).await > tts_given, "the AI's answer is spoken");
    } else {
        let window = asterisk.log_since(taken_at);
        let window = &window[..(given_at - taken_at) as usize];
        let played: Vec<&str> =
            window.lines().filter(|l| l.contains(&format!("<{channel}>AGI Rx << STREAM FILE"))).collect();
        assert!(played.is_empty(), "no STREAM FILE while taken over: {played:#?}");
        let exchange = asterisk.finished_agi(given_at, &channel).await;
        assert!(!exchange.named("STREAM FILE").is_empty(), "the AI's answer is played: {:#?}", exchange.commands());
    }
    // The model's request after the give-back holds what the supervisor said.
    let bodies: Vec<serde_json::Value> = agent
        .llm
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let first = bodies.first().expect("the model is asked after the give-back");
    let messages = first["messages"].as_array().unwrap();
    assert!(
        messages.iter().any(|m| m["role"] == "assistant" && m["content"].as_str() == Some(supervisor.as_str())),
        "the supervisor's words are in the model's history: {messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "system" && m["content"].as_str().is_some_and(|c| c.contains("gave the call back"))),
        "{messages:#?}"
    );
    // The caller heard the supervisor.
    let toned = tone_in_recording(&wav).await;
    assert!(toned >= 50, "the caller's recording holds the supervisor's tone: {toned} windows of 20 ms");
}

#[tokio::test]
async fn taking_over_a_streaming_call_against_the_real_asterisk() {
    let asterisk = support::asterisk::Asterisk::shared().await;
    take_over_and_give_back(asterisk, true).await;
}

#[tokio::test]
async fn taking_over_an_agi_call_against_the_real_asterisk() {
    // Barging in on the AGI path needs Asterisk to transmit silence while it records.
    let options = support::asterisk::Options { transmit_silence: true, ..Default::default() };
    let asterisk = support::asterisk::Asterisk::start(options).await;
    take_over_and_give_back(&asterisk, false).await;
}
