//! Whole calls on the `ai` route, through the real FastAGI listener: a simulated Asterisk writes
//! real WAV recordings and takes time to play, and the speech providers are HTTP mocks in the
//! OpenAI shapes. Each test checks the stored call, its events on the live feed, and the exact
//! commands the fake Asterisk received.

mod support;

use std::time::Duration;

use asterai::agi::{Router, ServerConfig};
use asterai::config::{Config, Dur, Secret};
use asterai::conversation::{Conversations, Providers, Settings};
use asterai::demo::caller::{CallLog, Caller, HangupAt, Line};
use asterai::store::{Call, CallStatus, EventKind, Outcome};
use support::agi::TestServer;
use support::db::{Backend, TestDb};
use support::http::{FeedClient, TestDaemon};
use support::logs::Logs;
use support::mocks::{Sequence, sse, wav_24k};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(20);

/// A daemon with mocked providers, an organization `acme`, and its HTTP side for the feed.
struct Rig {
    db: TestDb,
    daemon: TestDaemon,
    agi: TestServer,
    stt: MockServer,
    llm: MockServer,
    _tts: MockServer,
    config: Config,
    _dir: tempfile::TempDir,
}

async fn rig(tweak: impl FnOnce(&mut Config)) -> Rig {
    rig_with(tweak, |_| {}).await
}

async fn rig_with(tweak: impl FnOnce(&mut Config), tweak_settings: impl FnOnce(&mut Settings)) -> Rig {
    rig_transferring(tweak, tweak_settings, None).await
}

async fn rig_transferring(
    tweak: impl FnOnce(&mut Config),
    tweak_settings: impl FnOnce(&mut Settings),
    transferer: Option<std::sync::Arc<dyn asterai::conversation::Transferer>>,
) -> Rig {
    let db = TestDb::new(Backend::Sqlite).await;
    db.store.create_org("acme", "Acme Inc.").await.unwrap();
    let daemon = TestDaemon::start(db.store.clone()).await;
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
    config.stt.retries = 2;
    config.responder.provider = "openai".into();
    config.responder.url = format!("{}/v1", llm.uri());
    config.responder.api_key = Secret::new("sk-llm");
    config.tts.provider = "openai".into();
    config.tts.url = format!("{}/v1", tts.uri());
    config.conversation.turn_budget = Dur::secs(5);
    tweak(&mut config);
    let providers = Providers::from_config(&config).unwrap();
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let mut settings = Settings::from_config(&config);
    tweak_settings(&mut settings);
    let conversations = Conversations::new(daemon.publisher.clone(), providers, settings, transferer);
    let agi = TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default()).await;
    Rig { db, daemon, agi, stt, llm, _tts: tts, config, _dir: dir }
}

impl Rig {
    async fn transcripts(&self, texts: &[&str]) {
        let templates =
            texts.iter().map(|t| ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": t}))).collect();
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(Sequence::new(templates))
            .mount(&self.stt)
            .await;
    }

    async fn answers(&self, answers: &[&[&str]]) {
        let templates = answers.iter().map(|pieces| sse(pieces)).collect();
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Sequence::new(templates))
            .mount(&self.llm)
            .await;
    }

    fn caller(&self, script: &[&str]) -> Caller {
        let lines =
            script.iter().map(|l| if l.is_empty() { Line::Silence } else { Line::Say((*l).to_owned()) }).collect();
        Caller::new(lines, "acme")
    }

    async fn call(&self, caller: &Caller) -> (CallLog, Call) {
        let log = tokio::time::timeout(WAIT, caller.call(self.agi.addr))
            .await
            .expect("the call ends")
            .expect("the call runs");
        let call = self.finished_call().await;
        (log, call)
    }

    /// The one call of the test, once its record is finished.
    async fn finished_call(&self) -> Call {
        for _ in 0..200 {
            let calls = self.db.store.unfinished_calls(None).await.unwrap();
            let acme = self.db.store.org_by_slug("acme").await.unwrap().unwrap();
            let page = self.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
            // The list is read after the unfinished calls: the call may have been started in
            // between, so it must have ended itself.
            if calls.is_empty() && page.calls.first().is_some_and(|call| call.ended_at.is_some()) {
                return page.calls[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the call was never finished");
    }

    fn phrase_file(&self, text: &str) -> std::path::PathBuf {
        let providers = Providers::from_config(&self.config).unwrap();
        providers.voice.path_for(text)
    }
}

/// What the daemon may send once the channel is gone: the dialplan's variables, and the question
/// of who hung up.
fn dead_safe(command: &str) -> bool {
    command.starts_with("SET VARIABLE") || command == "GET VARIABLE HANGUPCAUSE"
}

fn commands_named<'a>(log: &'a CallLog, prefix: &str) -> Vec<&'a String> {
    log.commands.iter().filter(|c| c.starts_with(prefix)).collect()
}

fn analysis(intent: &str, action: &str) -> String {
    format!(
        "\n<analysis>{{\"intent\": \"{intent}\", \"emotion\": \"neutral\", \"confidence\": 0.9, \"action\": \"{action}\"}}</analysis>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_ending_in_goodbye() {
    let rig = rig(|_| {}).await;
    rig.transcripts(&["Hi, who is this?", "How much is it?", "Okay, thanks. Goodbye."]).await;
    let greet = analysis("identity", "continue");
    let price = analysis("pricing", "continue");
    let bye = analysis("goodbye", "end");
    rig.answers(&[
        &["I'm Ava, ", "an AI assistant for Acme.", &greet],
        &["It is 20 dollars a month.", " The first month is free.", &price],
        &["Thank you for calling. Goodbye!", &bye],
    ])
    .await;
    let token = rig.daemon.token("acme").await;
    let mut feed = FeedClient::connect(rig.daemon.addr, &token, "").await.unwrap();
    let (log, call) = rig.call(&rig.caller(&["hello", "price", "bye"])).await;

    assert_eq!((call.status, call.outcome, call.turns), (CallStatus::Completed, Some(Outcome::Completed), 3));
    assert_eq!(call.direction.as_str(), "inbound");
    assert_eq!(call.from, "+15551230000");
    let transcript = call.transcript.clone().unwrap();
    assert!(transcript.starts_with("Agent: Hello, thank you for calling Acme Inc. This is Ava."), "{transcript}");
    assert!(
        transcript.contains("Caller: How much is it?\nAgent: It is 20 dollars a month. The first month is free.\n"),
        "{transcript}"
    );

    let turns = rig.db.store.turns(call.org_id, &call.id).await.unwrap();
    assert_eq!(turns.len(), 4, "the greeting and three caller turns");
    assert_eq!((turns[2].intent.as_deref(), turns[2].confidence), (Some("pricing"), Some(0.9)));
    let latency = turns[2].latency_ms;
    assert_eq!(latency.endpoint, 1000, "the silence window");
    assert!(latency.total >= latency.endpoint + latency.stt, "{latency:?}");
    let overhead_ms = latency.overhead_us.expect("an answered turn measures asterai's overhead") / 1000;
    assert!(overhead_ms <= latency.total - latency.endpoint, "{latency:?}");
    assert_eq!(turns[0].latency_ms.overhead_us, None, "the greeting has no caller to answer");
    // Abandonment: the greeting's first STREAM FILE is the agent's first audio after the answer.
    let (first_audio, waited) = rig.db.store.first_audio(call.org_id, &call.id).await.unwrap().expect("first audio");
    assert!(first_audio >= call.answered_at.unwrap() && waited.is_some(), "{first_audio} {waited:?} {call:?}");

    // The responder saw the whole conversation so far.
    let requests = rig.llm.received_requests().await.unwrap();
    let last: serde_json::Value = serde_json::from_slice(&requests[2].body).unwrap();
    let roles: Vec<&str> = last["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "assistant", "user", "assistant", "user", "assistant", "user"]);
    assert!(last["messages"][0]["content"].as_str().unwrap().contains("Ava"));

    // What Asterisk saw: answer check, recordings with the silence window, playback of cached
    // files only, the outcome, and the hang-up at the end.
    assert_eq!(log.commands[0], "CHANNEL STATUS");
    let records = commands_named(&log, "RECORD FILE");
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.ends_with(" wav # 30000 0 s=1")), "{records:?}");
    assert!(log.played.iter().all(|p| p.starts_with(rig.config.media_dir().join("tts"))));
    assert!(log.variables.contains(&("ASTERAI_OUTCOME".into(), "completed".into())));
    assert_eq!(log.commands.last().unwrap(), "HANGUP");
    assert!(log.after_hangup.is_empty());

    // Recordings are deleted once transcribed.
    assert_eq!(std::fs::read_dir(rig.config.recordings_dir()).unwrap().count(), 0);

    // The feed carried it all, in order, for acme.
    let events = feed.events(8, WAIT).await;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [
            CallStarted,
            CallStatusUpdate,
            ConversationTurn,
            ConversationTurn,
            ConversationTurn,
            ConversationTurn,
            CallStatusUpdate,
            CallEnded
        ]
    );
    assert!(events.iter().all(|e| e.org == "acme" && e.call_id.as_deref() == Some(call.id.as_str())));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(events[7].data["outcome"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_do_not_call_request_is_recorded_before_the_goodbye() {
    let rig = rig(|_| {}).await;
    rig.transcripts(&["Please take me off your list, don't call me again."]).await;
    // No analysis tag: the rules read the request.
    rig.answers(&[&["Understood."]]).await;
    let (log, call) = rig.call(&rig.caller(&["stop calling"])).await;
    assert_eq!(call.outcome, Some(Outcome::DoNotCall));
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    assert!(rig.db.store.is_dnc(acme.id, "+15551230000").await.unwrap(), "the number is on acme's list");
    let entry = &rig.db.store.list_dnc(acme.id).await.unwrap()[0];
    assert_eq!(entry.source, "caller");
    // The confirmation was played after the request.
    let confirmation =
        rig.phrase_file("I've added your number to our do-not-call list, and you won't be called again.");
    assert!(log.played.contains(&confirmation), "{:?}", log.played);
    assert_eq!(log.commands.last().unwrap(), "HANGUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_recording() {
    let rig = rig(|_| {}).await;
    rig.transcripts(&["How much is it?"]).await;
    let price = analysis("pricing", "continue");
    rig.answers(&[&["Twenty dollars.", &price]]).await;
    let mut caller = rig.caller(&["price", "more"]);
    caller.hangup = Some(HangupAt::Recording(2));
    let (log, call) = rig.call(&caller).await;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.turns, 1);
    assert_eq!(call.outcome_reason.as_deref(), Some("caller hung up"));
    assert!(
        log.after_hangup.iter().all(|c| dead_safe(c)),
        "only dead-safe commands after the hang-up: {:?}",
        log.after_hangup
    );
    assert!(log.closed_by_daemon, "the daemon closes the connection so Asterisk can destroy the channel");
}

/// A call whose caller asks for an answer of three sentences and hangs up while its first one
/// plays (the greeting is the first playback), `HANGUP` following the reply after
/// `hangup_line_after` (zero: in the same write).
async fn hung_up_in_the_first_sentence(hangup_line_after: Duration) -> (Rig, CallLog, Call) {
    let rig = rig(|config| {
        config.conversation.greeting_inbound = "Hello.".into();
        config.conversation.ai_disclosure = false;
    })
    .await;
    rig.transcripts(&["tell me everything"]).await;
    rig.answers(&[&["First sentence here.", " Second sentence here.", " Third sentence here."]]).await;
    let mut caller = rig.caller(&["everything"]);
    caller.hangup = Some(HangupAt::Playback(2));
    caller.hangup_line_after = hangup_line_after;
    let (log, call) = rig.call(&caller).await;
    (rig, log, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_playback() {
    let (_rig, log, call) = hung_up_in_the_first_sentence(Duration::ZERO).await;
    assert_eq!(call.status, CallStatus::Completed);
    assert!(call.outcome_reason.unwrap().contains("hung up"));
    assert_eq!(commands_named(&log, "STREAM FILE").len(), 2, "no sentence is played after the hang-up");
    assert!(log.after_hangup.iter().all(|c| dead_safe(c)), "{:?}", log.after_hangup);
    assert_eq!(call.turns, 1, "the interrupted turn is still recorded");
}

/// A real Asterisk answers a STREAM FILE cut by a hang-up with `200 result=-1 endpos=N` and
/// sends `HANGUP` in a write of its own a few milliseconds later. The reply alone ends the
/// answer: nothing more is played, and it is no "could not play" warning. A
/// current-thread runtime, so that the daemon's warnings are captured.
#[tokio::test]
async fn a_hang_up_during_playback_is_known_from_the_reply_before_hangup_comes() {
    let (logs, _guard) = Logs::capture();
    let (rig, log, call) = hung_up_in_the_first_sentence(Duration::from_millis(50)).await;
    let played = commands_named(&log, "STREAM FILE");
    assert_eq!(played.len(), 2, "{played:?}");
    let first = rig.phrase_file("First sentence here.");
    assert!(played[1].contains(first.to_str().unwrap()), "{played:?}");
    // After the reply, only what a dead channel takes (who hung up, the dialplan's variables).
    assert!(log.after_hangup.iter().all(|c| dead_safe(c)), "{:?}", log.after_hangup);
    assert!(call.ended_at.is_some(), "{call:?}");
    assert!(call.outcome_reason.as_deref().unwrap_or_default().contains("hung up"), "{call:?}");
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_a_provider_call() {
    let rig = rig(|_| {}).await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"text": "hello"}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&rig.stt)
        .await;
    let mut caller = rig.caller(&["hello"]);
    caller.hangup = Some(HangupAt::AfterRecording(1));
    let started = std::time::Instant::now();
    let (log, call) = rig.call(&caller).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the daemon does not wait for the provider once the caller is gone"
    );
    assert_eq!(call.outcome_reason.as_deref(), Some("caller hung up while being transcribed"));
    assert!(log.after_hangup.iter().all(|c| dead_safe(c)), "{:?}", log.after_hangup);
    assert!(rig.llm.received_requests().await.unwrap().is_empty(), "no answer is prepared for a caller who left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_500_is_retried_and_the_call_recovers() {
    let rig = rig(|_| {}).await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(500).set_body_json(serde_json::json!({"error": {"message": "boom"}})),
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "How much is it?"})),
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "Goodbye."})),
        ]))
        .mount(&rig.stt)
        .await;
    let price = analysis("pricing", "continue");
    let bye = analysis("goodbye", "end");
    rig.answers(&[&["Twenty dollars.", &price], &["Bye!", &bye]]).await;
    let (_, call) = rig.call(&rig.caller(&["price", "bye"])).await;
    assert_eq!((call.turns, call.outcome), (2, Some(Outcome::Completed)));
    let turns = rig.db.store.turns(call.org_id, &call.id).await.unwrap();
    assert_eq!(turns[1].caller, "How much is it?", "the retried request gave the first turn");
    assert_eq!(rig.stt.received_requests().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_timeout_plays_the_fallback_and_the_call_goes_on() {
    let rig = rig(|config| {
        config.conversation.turn_budget = Dur::millis(700);
        config.stt.timeout = Dur::millis(400);
        config.stt.retries = 0;
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"text": "too late"}))
                .set_delay(Duration::from_secs(3)),
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "Goodbye."})),
        ]))
        .mount(&rig.stt)
        .await;
    let bye = analysis("goodbye", "end");
    rig.answers(&[&["Goodbye!", &bye]]).await;
    let (log, call) = rig.call(&rig.caller(&["slow", "bye"])).await;
    let fallback = rig.phrase_file("Sorry, I'm having a little trouble on my end.");
    assert!(log.played.contains(&fallback), "the caller heard the fallback: {:?}", log.played);
    assert_eq!((call.turns, call.outcome), (2, Some(Outcome::Completed)), "then the call went on to a normal end");
    // The turn nobody understood is in the record with what the caller heard.
    let turns = rig.db.store.turns(call.org_id, &call.id).await.unwrap();
    let fallback = "Sorry, I'm having a little trouble on my end. Could you say that again?";
    assert_eq!((turns[1].caller.as_str(), turns[1].agent.as_str()), ("", fallback));
    assert!(call.transcript.unwrap().contains(&format!("Agent: {fallback}\n")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_shows_the_call_as_waiting_until_it_answers() {
    let rig = rig_with(|_| {}, |settings| settings.waiting_after = Duration::from_millis(200)).await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"text": "Goodbye."}))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&rig.stt)
        .await;
    let bye = analysis("goodbye", "end");
    rig.answers(&[&["Goodbye!", &bye]]).await;
    let (_, call) = rig.call(&rig.caller(&["bye"])).await;
    let events = rig.db.store.call_events(&call.id).await.unwrap();
    let waiting: Vec<(String, &serde_json::Value)> = events
        .iter()
        .filter(|e| e.data.get("waiting").is_some())
        .map(|e| (e.data["status"].as_str().unwrap().to_owned(), &e.data["waiting"]))
        .collect();
    assert_eq!(
        waiting,
        [("in_progress".to_owned(), &serde_json::json!("stt")), ("in_progress".to_owned(), &serde_json::Value::Null)],
        "marked while speech-to-text was slow, then cleared; the fast responder was not marked"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let turn = kinds.iter().position(|k| *k == "conversation_turn").unwrap();
    let cleared = events.iter().position(|e| e.data.get("waiting") == Some(&serde_json::Value::Null)).unwrap();
    assert!(
        cleared < events.iter().rposition(|e| e.kind.as_str() == "conversation_turn").unwrap() && turn < cleared,
        "{kinds:?}"
    );
}

/// The dialplan ran AMD() before the ai route: a machine gets the voicemail message and nothing
/// is recorded; a person gets the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answering_machine_gets_the_message_and_a_person_the_conversation() {
    let rig = rig(|_| {}).await;
    let mut machine = rig.caller(&["Hi, you have reached the voicemail of Jane."]);
    machine.script_path = "ai?org=acme&amd=MACHINE".into();
    let (log, call) = rig.call(&machine).await;
    assert_eq!(call.outcome, Some(Outcome::Voicemail));
    assert!(call.outcome_reason.as_deref().unwrap().contains("message left"), "{call:?}");
    assert!(!log.commands.iter().any(|c| c.starts_with("RECORD FILE")), "nothing recorded: {:?}", log.commands);
    let turns = rig.db.store.turns(call.org_id, &call.id).await.unwrap();
    assert_eq!(turns.len(), 1);
    assert!(turns[0].agent.contains("Sorry we missed you"), "{:?}", turns[0]);
    assert_eq!(log.played.len(), 2, "the message's two sentences: {:?}", log.played);
    assert_eq!(rig.db.store.first_audio(call.org_id, &call.id).await.unwrap(), None, "a machine is not measured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answering_machine_is_hung_up_on_without_a_message_when_so_configured() {
    let rig = rig(|config| config.conversation.voicemail_message = String::new()).await;
    let mut machine = rig.caller(&["Please leave a message."]);
    machine.script_path = "ai?org=acme&amd=MACHINE".into();
    let (log, call) = rig.call(&machine).await;
    assert_eq!(call.outcome, Some(Outcome::Voicemail));
    assert!(log.played.is_empty(), "{:?}", log.played);
    assert!(log.commands.iter().any(|c| c.starts_with("HANGUP")), "{:?}", log.commands);

    rig.transcripts(&["Goodbye."]).await;
    let bye = analysis("goodbye", "end");
    rig.answers(&[&["Bye!", &bye]]).await;
    let mut person = rig.caller(&["bye"]);
    person.script_path = "ai?org=acme&amd=HUMAN".into();
    person.uniqueid = "1795000001.2".into();
    let log = tokio::time::timeout(WAIT, person.call(rig.agi.addr)).await.unwrap().unwrap();
    assert!(log.commands.iter().any(|c| c.starts_with("RECORD FILE")), "a person is listened to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_end_the_call_politely() {
    let rig = rig(|config| config.conversation.max_failed_turns = 2).await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(serde_json::json!({"error": {"message": "service unavailable"}})),
        )
        .mount(&rig.stt)
        .await;
    let (log, call) = rig.call(&rig.caller(&["one", "two", "three"])).await;
    assert_eq!(call.outcome, Some(Outcome::Failed));
    let reason = call.outcome_reason.unwrap();
    assert!(
        reason.contains("repeated failures") && reason.contains("503") && reason.contains("service unavailable"),
        "{reason}"
    );
    let goodbye = rig.phrase_file("I'm sorry, I'm having technical difficulties.");
    assert!(log.played.contains(&goodbye));
    assert_eq!(commands_named(&log, "RECORD FILE").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_reprompted_then_the_call_ends() {
    let rig = rig(|config| config.conversation.max_silent_turns = 2).await;
    let (log, call) = rig.call(&rig.caller(&["", "", "", ""])).await;
    assert_eq!(call.outcome, Some(Outcome::NoResponse));
    // Each silence is a turn of the transcript: what the caller heard, with no words of theirs.
    assert_eq!(call.turns, 3);
    let turns = rig.db.store.turns(call.org_id, &call.id).await.unwrap();
    let said: Vec<(&str, &str)> = turns.iter().skip(1).map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    let heard = "Sorry, I didn't hear anything. Are you still there?";
    assert_eq!(said, [("", heard), ("", heard), ("", "I can't hear anyone, so I'll hang up now. Goodbye.")]);
    let reprompt = rig.phrase_file("Sorry, I didn't hear anything.");
    assert_eq!(log.played.iter().filter(|p| **p == reprompt).count(), 2, "two reprompts before giving up");
    assert!(rig.stt.received_requests().await.unwrap().is_empty(), "silence never reaches speech-to-text");
    assert!(rig.llm.received_requests().await.unwrap().is_empty(), "nor the responder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_transcript_is_reprompted_without_asking_the_responder() {
    let rig = rig(|_| {}).await;
    rig.transcripts(&["", "Goodbye."]).await;
    let bye = analysis("goodbye", "end");
    rig.answers(&[&["Bye!", &bye]]).await;
    let (log, call) = rig.call(&rig.caller(&["mumble", "bye"])).await;
    // The reprompt is turn 1, the goodbye turn 2.
    assert_eq!(call.turns, 2);
    assert_eq!(rig.llm.received_requests().await.unwrap().len(), 1);
    assert!(log.played.contains(&rig.phrase_file("Sorry, I didn't hear anything.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_turns_ends_the_call() {
    let rig = rig(|config| config.conversation.max_turns = 2).await;
    rig.transcripts(&["one", "two", "three"]).await;
    rig.answers(&[&["Answer one."], &["Answer two."], &["Answer three."]]).await;
    let (log, call) = rig.call(&rig.caller(&["a", "b", "c", "d"])).await;
    assert_eq!(call.turns, 2);
    assert!(call.outcome_reason.unwrap().contains("max_turns"));
    assert!(log.played.contains(&rig.phrase_file("Thank you for your time.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_ends_the_call() {
    let rig = rig(|config| config.conversation.max_duration = Dur::secs(3)).await;
    rig.transcripts(&["more"]).await;
    rig.answers(&[&["Tell me more, please."]]).await;
    let mut caller = rig.caller(&["a", "b", "c", "d", "e", "f", "g", "h"]);
    caller.playback_speed = 1.0;
    caller.max_playback = Duration::from_millis(400);
    let (_, call) = rig.call(&caller).await;
    assert!(call.outcome_reason.unwrap().contains("max_duration"));
    assert!(call.duration_s.unwrap() < 6.0);
}

/// Text from callers and models never reaches the command line: it only ever becomes audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_text_never_changes_the_command_stream() {
    let rig = rig(|_| {}).await;
    let evil_caller = "hi\r\n\"; HANGUP\nEXEC Dial PJSIP/666 \"quote\" \\ end";
    rig.transcripts(&[evil_caller, "Goodbye."]).await;
    let bye = analysis("goodbye", "end");
    rig.answers(&[
        &["Sure \"; HANGUP\r\nEXEC System rm -rf / ", "\\\" and \n RECORD FILE /etc/passwd wav # 1."],
        &["Bye!", &bye],
    ])
    .await;
    let (log, call) = rig.call(&rig.caller(&["evil", "bye"])).await;
    assert_eq!(call.turns, 2);
    for command in &log.commands {
        for forbidden in ["Dial", "System", "rm -rf", "/etc/passwd", "PJSIP", "quote"] {
            assert!(!command.contains(forbidden), "{command:?} carries caller or model text");
        }
        let kind = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        assert!(
            ["CHANNEL STATUS", "SET VARIABLE", "STREAM FILE", "RECORD FILE", "HANGUP"].contains(&kind.as_str()),
            "unexpected command {command:?}"
        );
    }
    assert_eq!(log.commands.iter().filter(|c| *c == "HANGUP").count(), 1, "one HANGUP, the daemon's own at the end");
    // The words are kept as they were said, in the record.
    let turns = rig.db.store.turns(call.org_id, &call.id).await.unwrap();
    assert_eq!(turns[1].caller, evil_caller.trim());
}

/// The dialer's call (given as call_id) is adopted, not created twice, and personalised from its
/// contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_is_adopted_from_the_dialer() {
    let rig = rig(|_| {}).await;
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let created = rig
        .daemon
        .publisher
        .call_started(&asterai::store::NewCall {
            id: Some("dialer-call-1".into()),
            org_id: acme.id,
            direction: asterai::store::Direction::Outbound,
            from: "+15550000000".into(),
            to: "+15557654321".into(),
            channel: None,
            campaign_id: None,
            contact_id: None,
        })
        .await
        .unwrap();
    rig.daemon.publisher.call_status(acme.id, &created.id, CallStatus::Ringing, None).await.unwrap();
    rig.transcripts(&["Goodbye."]).await;
    let bye = analysis("goodbye", "end");
    rig.answers(&[&["Bye!", &bye]]).await;
    let mut caller = rig.caller(&["bye"]);
    caller.script_path = "ai?org=acme&call_id=dialer-call-1".into();
    let (log, call) = rig.call(&caller).await;
    assert_eq!((call.id.as_str(), call.direction.as_str(), call.turns), ("dialer-call-1", "outbound", 1));
    assert!(call.answered_at.is_some());
    assert!(call.channel.unwrap().starts_with("PJSIP/demo-"));
    let greeting = rig.db.store.turns(acme.id, "dialer-call-1").await.unwrap()[0].agent.clone();
    assert!(greeting.starts_with("Hello there, this is Ava calling from Acme Inc."), "{greeting}");
    assert!(log.variables.contains(&("ASTERAI_CALL_ID".into(), "dialer-call-1".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_organization_is_refused_cleanly() {
    let rig = rig(|_| {}).await;
    let mut caller = rig.caller(&["hello"]);
    caller.script_path = "ai?org=nobody".into();
    let log = tokio::time::timeout(WAIT, caller.call(rig.agi.addr)).await.unwrap().unwrap();
    assert!(log.variables.contains(&("ASTERAI_STATUS".into(), "unknown_org".into())));
    assert!(log.closed_by_daemon);
    assert!(commands_named(&log, "RECORD").is_empty());
}

/// With the database down, the caller still has a conversation and nothing is lost: the record
/// is spooled and written once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_call_loses_nothing() {
    let db = TestDb::new(Backend::Postgres).await;
    db.store.create_org("acme", "Acme Inc.").await.unwrap();
    let mut proxy = support::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let store = asterai::store::Store::connect(&asterai::store::StoreOptions {
        url,
        max_connections: 4,
        connect_timeout: Duration::from_millis(500),
    })
    .await
    .unwrap();
    let daemon = TestDaemon::start(store.clone()).await;
    let (stt, llm, tts) = (MockServer::start().await, MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(wav_24k(300), "audio/wav"))
        .mount(&tts)
        .await;
    Mock::given(method("POST"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "How much is it?"})),
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "Goodbye."})),
        ]))
        .mount(&stt)
        .await;
    let price = analysis("pricing", "continue");
    let bye = analysis("goodbye", "end");
    Mock::given(method("POST"))
        .respond_with(Sequence::new(vec![sse(&["Twenty dollars.", &price]), sse(&["Bye!", &bye])]))
        .mount(&llm)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.url = format!("{}/v1", stt.uri());
    config.responder.provider = "openai".into();
    config.responder.url = format!("{}/v1", llm.uri());
    config.tts.provider = "openai".into();
    config.tts.url = format!("{}/v1", tts.uri());
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let settings = Settings::from_config(&config);
    let spool = settings.spool_dir.clone();
    let conversations =
        Conversations::new(daemon.publisher.clone(), Providers::from_config(&config).unwrap(), settings, None);
    let agi = TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default()).await;

    // The caller is playing the greeting when the database goes away.
    let mut caller = Caller::new(vec![Line::Say("price".into()), Line::Say("bye".into())], "acme");
    caller.playback_speed = 1.0;
    caller.max_playback = Duration::from_millis(300);
    let running = tokio::spawn(async move { caller.call(agi.addr).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.stop();
    let log = tokio::time::timeout(WAIT, running).await.unwrap().unwrap().unwrap();
    assert_eq!(commands_named(&log, "RECORD FILE").len(), 2, "the conversation went on without the database");

    // Spooled while the database was away...
    let mut spooled = false;
    for _ in 0..100 {
        if std::fs::read_dir(&spool).map(|d| d.count() > 0).unwrap_or(false) {
            spooled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spooled, "the call's record was spooled");
    // ...and written once it is back.
    proxy.restart().await;
    let mut written = 0;
    for _ in 0..50 {
        written += asterai::conversation::record::replay(&daemon.publisher, &spool).await;
        if written > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(written, 1);
    let acme = db.store.org_by_slug("acme").await.unwrap().unwrap();
    let call = db.store.list_calls(acme.id, &Default::default()).await.unwrap().calls.remove(0);
    assert_eq!((call.status, call.turns, call.outcome), (CallStatus::Completed, 2, Some(Outcome::Completed)));
    assert!(call.transcript.unwrap().contains("Caller: How much is it?\nAgent: Twenty dollars."));
    daemon.stop().await;
}

/// The route's `agent=` picks the organization's agent: its greeting, prompt (with the call's
/// variables), voice settings and limits hold the call, and the call records the version. Without
/// it the organization's default holds the next call; an agent edited since runs its new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_or_the_default_agent_holds_the_call() {
    use asterai::agent::{self, AgentSpec};
    let rig = rig(|_| {}).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let sales = AgentSpec::parse(
        r#"
name = "sales"
agent_name = "Max"
greeting_inbound = "Max at {org_name} here, you called {called_number}."
ai_disclosure = false
system_prompt = "You are {agent_name} of {company} for {org_name}; the caller dialled {called_number} at {local_time}."
[limits]
max_turns = 1
[phrases]
goodbye = "Bye from {agent_name}."
"#,
    )
    .unwrap();
    agent::create(store, acme.id, &sales, false).await.unwrap();
    agent::create(
        store,
        acme.id,
        &AgentSpec::parse(
            "name = \"house\"\ngreeting_inbound = \"House agent.\"\nai_disclosure = false\n[limits]\nmax_turns = 1",
        )
        .unwrap(),
        true,
    )
    .await
    .unwrap();
    rig.transcripts(&["How much is it?", "How much is it?"]).await;
    let price = analysis("pricing", "continue");
    rig.answers(&[&["It is 20 dollars.", &price], &["It is 20 dollars.", &price]]).await;

    let mut caller = rig.caller(&["price", ""]);
    caller.script_path = "ai?org=acme&agent=sales".into();
    let (log, call) = rig.call(&caller).await;
    assert_eq!((call.agent.as_deref(), call.agent_version), (Some("sales"), Some(1)));
    let transcript = call.transcript.clone().unwrap();
    assert!(transcript.starts_with("Agent: Max at Acme Inc. here, you called 5550100.\n"), "{transcript}");
    assert_eq!(call.turns, 1, "the agent's max_turns");
    assert_eq!(log.played.last(), Some(&rig.phrase_file("Bye from Max.")), "the agent's goodbye");
    let requests = rig.llm.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are Max of Acme Inc. for Acme Inc.; the caller dialled 5550100 at "), "{system}");
    assert!(!system.contains('{'), "{system}");

    // No agent on the route: the organization's default, and its version.
    store.update_agent(acme.id, "house", &serde_json::json!({"greeting_inbound": "House agent, v2.", "ai_disclosure": false, "limits": {"max_turns": 1}})).await.unwrap();
    rig.call(&rig.caller(&["price", ""])).await;
    let call = nth_finished_call(&rig, 2).await;
    assert_eq!((call.agent.as_deref(), call.agent_version), (Some("house"), Some(2)));
    assert!(call.transcript.unwrap().starts_with("Agent: House agent, v2.\n"));
}

/// An agent with tools: the model's streamed function calls (fragments in OpenAI's shapes) act.
/// `end_call` ends the call with the model's outcome (its goodbye, else the agent's);
/// `transfer` without a transfer target says so and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_ends_or_transfers_the_call_with_tools() {
    use asterai::agent::{self, AgentSpec};
    use support::mocks::sse_tool_call;
    let rig = rig(|_| {}).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let spec = "name = \"closer\"\ntools = [\"end_call\", \"transfer\"]\nai_disclosure = false\n[phrases]\ngoodbye = \"Closer says bye.\"";
    agent::create(store, acme.id, &AgentSpec::parse(spec).unwrap(), true).await.unwrap();
    rig.transcripts(&["Can I talk to a person?", "Fine, book me in.", "Okay.", "Bye."]).await;
    let templates = vec![
        sse_tool_call("", "transfer", r#"{"reason": "asked for a person"}"#),
        sse_tool_call("Great, you're booked.", "end_call", r#"{"outcome": "interested", "reason": "booked a demo"}"#),
    ];
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(support::mocks::Sequence::new(templates))
        .mount(&rig.llm)
        .await;
    let (log, call) = rig.call(&rig.caller(&["person", "book", "ok", "bye"])).await;
    assert_eq!((call.status, call.outcome), (CallStatus::Completed, Some(Outcome::Interested)));
    assert_eq!(call.status_reason.as_deref(), Some("the agent ended the call (end_call: booked a demo)"));
    assert_eq!(call.turns, 2);
    let transcript = call.transcript.unwrap();
    assert!(transcript.contains("Caller: Fine, book me in.\nAgent: Great, you're booked."), "{transcript}");
    let sorry_text = "I'm sorry, I can't connect you with a person right now, but I can keep helping you.";
    let sorry = rig.phrase_file(sorry_text);
    assert!(log.played.contains(&sorry), "no transfer target: the caller hears so: {:?}", log.played);
    // A turn where the model only called a tool keeps what the caller heard, and every turn
    // keeps the tools called in it, with their results, in the store and on the feed.
    assert!(transcript.contains(&format!("Caller: Can I talk to a person?\nAgent: {sorry_text}\n")), "{transcript}");
    let turns = store.turns(acme.id, &call.id).await.unwrap();
    let tools: Vec<serde_json::Value> =
        turns.iter().filter(|t| t.turn > 0).map(|t| serde_json::to_value(&t.tools).unwrap()).collect();
    let expected = [
        serde_json::json!([{
            "name": "transfer",
            "arguments": {"reason": "asked for a person"},
            "result": {"transferred": false, "error": "no transfer target is configured"},
        }]),
        serde_json::json!([{
            "name": "end_call",
            "arguments": {"outcome": "interested", "reason": "booked a demo"},
            "result": {"ended": true, "outcome": "interested"},
        }]),
    ];
    assert_eq!(tools, expected);
    let page = store.events_after(acme.id, 0, 100).await.unwrap();
    let fed: Vec<&serde_json::Value> = page
        .events
        .iter()
        .filter(|e| e.call_id.as_deref() == Some(call.id.as_str()) && e.data["turn"].as_i64() > Some(0))
        .filter(|e| e.kind == asterai::store::EventKind::ConversationTurn)
        .map(|e| &e.data["tools"])
        .collect();
    assert_eq!(fed, expected.iter().collect::<Vec<_>>(), "conversation_turn carries the turn's tools");
    assert_eq!((turns[0].turn, turns[0].tools.len()), (0, 0), "the greeting called no tool");
    assert_eq!(turns[1].agent, sorry_text);
    let requests = rig.llm.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let names: Vec<&str> =
        body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["end_call", "transfer"]);
    // The next request carries the tool call and its result in OpenAI's shape: the assistant
    // message with `tool_calls` (no words: null content), the `tool` message answering it by
    // id with the result as JSON, then what the caller heard after it.
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "assistant", "user", "assistant", "tool", "assistant", "user"]);
    assert_eq!(messages[2]["content"], "Can I talk to a person?");
    assert_eq!(
        messages[3],
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_Qx1", "type": "function",
            "function": {"name": "transfer", "arguments": r#"{"reason": "asked for a person"}"#}}]})
    );
    assert_eq!(messages[4]["tool_call_id"], "call_Qx1");
    let result: serde_json::Value = serde_json::from_str(messages[4]["content"].as_str().unwrap()).unwrap();
    assert_eq!(result, serde_json::json!({"transferred": false, "error": "no transfer target is configured"}));
    assert_eq!(messages[5], serde_json::json!({"role": "assistant", "content": sorry_text}));
    assert_eq!(messages[6], serde_json::json!({"role": "user", "content": "Fine, book me in."}));

    // end_call without a word of the model's: the agent's goodbye is said and stored.
    rig.llm.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(sse_tool_call("", "end_call", r#"{"outcome": "not_interested"}"#))
        .mount(&rig.llm)
        .await;
    rig.stt.reset().await;
    rig.transcripts(&["No thanks."]).await;
    let (log, _) = rig.call(&rig.caller(&["no"])).await;
    let call = nth_finished_call(&rig, 2).await;
    assert_eq!(call.outcome, Some(Outcome::NotInterested));
    let transcript = call.transcript.unwrap();
    assert!(transcript.contains("Caller: No thanks.\nAgent: Closer says bye."), "{transcript}");
    let turns = store.turns(acme.id, &call.id).await.unwrap();
    let last = turns.last().unwrap();
    assert_eq!(last.agent, "Closer says bye.");
    assert_eq!(
        serde_json::to_value(&last.tools).unwrap(),
        serde_json::json!([{"name": "end_call", "arguments": {"outcome": "not_interested"}, "result": {"ended": true, "outcome": "not_interested"}}])
    );
    assert_eq!(log.played.last(), Some(&rig.phrase_file("Closer says bye.")));
}

/// The newest call once there are `n` calls and it has ended (its writer may not have created
/// it yet when the caller's side is over).
async fn nth_finished_call(rig: &Rig, n: usize) -> Call {
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    for _ in 0..200 {
        let page = rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if page.calls.len() == n && page.calls[0].ended_at.is_some() {
            return page.calls[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("call {n} was never finished");
}

/// Records the transfers asked of it and makes them.
#[derive(Default)]
struct RecordingTransferer {
    asked: std::sync::Mutex<Vec<Option<String>>>,
}

impl asterai::conversation::Transferer for RecordingTransferer {
    fn transfer<'a>(
        &'a self,
        call: &'a asterai::conversation::TransferRequest,
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
        self.asked.lock().unwrap().push(call.destination.clone());
        Box::pin(async { Ok(()) })
    }
}

/// An agent's named transfer targets: the tool's schema offers their names as an enum; the
/// target the model names is dialled at its destination; a name the agent does not have is
/// never dialled: the tool's result says why and the caller hears `transfer_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_goes_to_the_target_the_agent_names() {
    use asterai::agent::{self, AgentSpec};
    use support::mocks::sse_tool_call;
    let transferer = std::sync::Arc::new(RecordingTransferer::default());
    let rig = rig_transferring(|_| {}, |_| {}, Some(transferer.clone())).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let spec = r#"
name = "desk"
tools = ["transfer"]
ai_disclosure = false
[[transfer_targets]]
name = "sales"
destination = "Local/600@from-internal"
description = "buying something"
[[transfer_targets]]
name = "support"
destination = "PJSIP/100"
"#;
    agent::create(store, acme.id, &AgentSpec::parse(spec).unwrap(), true).await.unwrap();
    rig.transcripts(&["Put me through to the boss.", "Sales then."]).await;
    let templates = vec![
        sse_tool_call("", "transfer", r#"{"target": "Local/666@evil", "reason": "boss"}"#),
        sse_tool_call("Connecting you to sales.", "transfer", r#"{"target": "sales"}"#),
    ];
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(support::mocks::Sequence::new(templates))
        .mount(&rig.llm)
        .await;
    let (log, call) = rig.call(&rig.caller(&["boss", "sales"])).await;
    assert_eq!((call.status, call.outcome), (CallStatus::Completed, Some(Outcome::Transferred)));
    assert_eq!(*transferer.asked.lock().unwrap(), [Some("Local/600@from-internal".to_owned())]);
    let sorry_text = "I'm sorry, I can't connect you with a person right now, but I can keep helping you.";
    assert!(log.played.contains(&rig.phrase_file(sorry_text)), "{:?}", log.played);
    let turns = store.turns(acme.id, &call.id).await.unwrap();
    assert_eq!(turns[1].agent, sorry_text);
    assert_eq!(
        serde_json::to_value(&turns[1].tools).unwrap(),
        serde_json::json!([{"name": "transfer", "arguments": {"target": "Local/666@evil", "reason": "boss"},
            "result": {"transferred": false, "error": "no transfer target named \"Local/666@evil\"; expected one of sales, support"}}])
    );
    assert_eq!(turns[2].agent, "Connecting you to sales.");
    assert_eq!(turns[2].tools[0].result, serde_json::json!({"transferred": true}));

    let requests = rig.llm.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let transfer = &body["tools"][0]["function"];
    assert_eq!(transfer["name"], "transfer");
    assert_eq!(transfer["parameters"]["properties"]["target"]["enum"], serde_json::json!(["sales", "support"]));
    assert_eq!(transfer["parameters"]["required"], serde_json::json!(["target"]));
}

/// The built-in tools that act during the call, on the FastAGI path: `schedule_callback` books
/// the contact's next attempt at the local time they chose (their timezone), and the model hears
/// when; `send_dtmf` presses keys through `EXEC SendDTMF` with the digits as one argument (keys
/// that are not DTMF, a CR/LF among them, never reach an AGI line: the model gets the error and
/// tries again); `add_to_dnc` puts the number on the list, says the confirmation and ends the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_tools_book_a_callback_press_keys_and_add_to_dnc() {
    use asterai::agent::{self, AgentSpec};
    use chrono::{TimeZone, Timelike};
    use support::mocks::sse_tool_call;
    let rig = rig(|_| {}).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let spec = "name = \"desk\"\ntools = [\"schedule_callback\", \"send_dtmf\", \"add_to_dnc\", \"end_call\"]\nai_disclosure = false";
    agent::create(store, acme.id, &AgentSpec::parse(spec).unwrap(), true).await.unwrap();
    let settings = serde_json::json!({"timezone": "America/New_York", "window": {"start": "08:00", "end": "21:00"}});
    let campaign = store.create_campaign(acme.id, "callbacks", &settings).await.unwrap();
    let csv = "phone,first_name,timezone\n+15557654321,Pat,Europe/Paris\n";
    asterai::dialer::import::import(store, acme.id, campaign.id, csv.as_bytes(), &mut |_, _| {}).await.unwrap();
    let contact = store.list_contacts(campaign.id).await.unwrap().remove(0);

    let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let tomorrow = chrono::Utc::now().with_timezone(&paris).date_naive().succ_opt().unwrap();
    let when = format!("{tomorrow} 15:00");
    let booked =
        paris.from_local_datetime(&tomorrow.and_hms_opt(15, 0, 0).unwrap()).unwrap().with_timezone(&chrono::Utc);
    rig.transcripts(&["Call me back tomorrow at three.", "Press one and hash for me.", "Don't call me again."]).await;
    let templates = vec![
        sse_tool_call("", "schedule_callback", &format!(r#"{{"when": "{when}"}}"#)),
        sse(&["You're booked for tomorrow at three."]),
        sse_tool_call("", "send_dtmf", r#"{"digits": "1\r\nHANGUP"}"#),
        sse_tool_call("", "send_dtmf", r##"{"digits": "1#"}"##),
        sse(&["Done."]),
        sse_tool_call("", "add_to_dnc", r#"{"reason": "asked"}"#),
    ];
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Sequence::new(templates))
        .mount(&rig.llm)
        .await;
    let mut caller = rig.caller(&["callback", "keys", "stop"]);
    caller.script_path = format!("ai?org=acme&campaign={}&contact={}", campaign.id, contact.id);
    let (log, call) = rig.call(&caller).await;

    // add_to_dnc: on the list, confirmed, the call's outcome.
    assert_eq!(call.outcome, Some(Outcome::DoNotCall));
    assert!(store.is_dnc(acme.id, "+15557654321").await.unwrap());
    let confirmation =
        rig.phrase_file("I've added your number to our do-not-call list, and you won't be called again.");
    assert!(log.played.contains(&confirmation), "{:?}", log.played);
    // schedule_callback: the contact's next attempt, in their own timezone.
    let contact = store.contact(acme.id, contact.id).await.unwrap().unwrap();
    assert_eq!(contact.next_attempt_at, Some(booked));
    assert_eq!(contact.next_attempt_at.unwrap().with_timezone(&paris).hour(), 15);
    // send_dtmf: one EXEC, the digits one argument; the CR/LF attempt never reached the line.
    assert_eq!(commands_named(&log, "EXEC"), ["EXEC SendDTMF 1#"]);
    assert!(!log.commands.iter().any(|c| c.contains("HANGUP") && c != "HANGUP"), "{:?}", log.commands);

    let turns = store.turns(acme.id, &call.id).await.unwrap();
    let results: Vec<serde_json::Value> = turns[1..].iter().map(|t| serde_json::to_value(&t.tools).unwrap()).collect();
    assert_eq!(
        results[0],
        serde_json::json!([{"name": "schedule_callback", "arguments": {"when": when},
            "result": {"scheduled": true, "at": when, "timezone": "Europe/Paris", "moved_into_calling_hours": false}}])
    );
    assert_eq!(turns[1].agent, "You're booked for tomorrow at three.");
    assert_eq!(results[1][0]["result"]["error"], "digits: expected 1 to 32 of 0-9, *, #, A-D and w");
    assert_eq!(
        results[1][1],
        serde_json::json!({"name": "send_dtmf", "arguments": {"digits": "1#"}, "result": {"sent": "1#"}})
    );
    assert_eq!(turns[2].agent, "Done.");
    assert_eq!(results[2][0]["result"], serde_json::json!({"added": true}));

    // The model heard each result before it spoke: the second request of the first turn ends
    // with the call and its result.
    let requests = rig.llm.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    let messages = body["messages"].as_array().unwrap();
    let last = &messages[messages.len() - 1];
    assert_eq!((last["role"].as_str(), last["tool_call_id"].as_str()), (Some("tool"), Some("call_Qx1")));
    let result: serde_json::Value = serde_json::from_str(last["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["at"], when.as_str());
    assert_eq!(messages[messages.len() - 2]["tool_calls"][0]["function"]["name"], "schedule_callback");
}

/// A tool receiver that checks asterai's signature as the README tells receivers to: HMAC-SHA-256
/// of the timestamp, a dot and the raw body, with the shared secret; a fresh timestamp. A
/// request that fails the check gets 401 (and the model would read that error).
struct SignedReceiver {
    secret: &'static str,
    answer: ResponseTemplate,
}

impl wiremock::Respond for SignedReceiver {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        use hmac::Mac;
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let timestamp = header("x-asterai-timestamp");
        let fresh = timestamp.parse::<i64>().is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&request.body);
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        if fresh && header("x-asterai-signature") == format!("v1={expected}") {
            self.answer.clone()
        } else {
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"message": "bad signature"}))
        }
    }
}

const TOOL_SECRET: &str = "whsec-test-0123456789";

/// An agent with HTTP tools on the receiver `tools`, its secrets in the environment.
fn http_tools_agent(tools: &MockServer) -> String {
    // SAFETY: set before any call of the test reads them; the names are this test file's own.
    unsafe {
        std::env::set_var("ASTERAI_SECRET_TOOLTEST_SIGNING", TOOL_SECRET);
        std::env::set_var("ASTERAI_SECRET_TOOLTEST_KEY", "crm-key-42");
    }
    let url = tools.uri();
    format!(
        r#"name = "desk"
ai_disclosure = false
greeting_inbound = "Hi."
tools = ["end_call"]

[phrases]
tool_filler = "Hold on, checking."

[[http_tools]]
name = "lookup_order"
description = "Look up an order's status"
url = "{url}/tools/order"
signing_secret = "env:ASTERAI_SECRET_TOOLTEST_SIGNING"
headers = {{ "X-Api-Key" = "env:ASTERAI_SECRET_TOOLTEST_KEY", "X-Team" = "support" }}
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string", minLength = 3 }} }}, required = ["order_id"], additionalProperties = false }}

[[http_tools]]
name = "flaky"
description = "The other system"
url = "{url}/tools/flaky"
signing_secret = "env:ASTERAI_SECRET_TOOLTEST_SIGNING"

[[http_tools]]
name = "slow"
description = "A slow system"
url = "{url}/tools/slow"
method = "PUT"
timeout = "5s"
signing_secret = "env:ASTERAI_SECRET_TOOLTEST_SIGNING"

[[http_tools]]
name = "stuck"
description = "A system that hangs"
url = "{url}/tools/stuck"
timeout = "200ms"
signing_secret = "env:ASTERAI_SECRET_TOOLTEST_SIGNING"
"#
    )
}

/// HTTP tools of the agent, over a whole call: the model's streamed call (fragments in
/// OpenAI's shapes) is checked against the tool's schema (invalid arguments: an error result,
/// the tool is not called, the model tries again), then sent signed (the receiver verifies the
/// HMAC), with the idempotency key of the call and tool call, the agent's headers (a secret
/// from the environment), and the answer goes back to the model, which speaks about it. A 500
/// and a timeout are error results and the call goes on; a tool slower than 700 ms gets the
/// agent's filler said while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tools_are_checked_signed_and_answer_the_model() {
    use asterai::agent::{self, AgentSpec};
    use support::mocks::sse_tool_call_id;
    let rig = rig(|_| {}).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let tools = MockServer::start().await;
    let shipped = serde_json::json!({"status": "shipped", "eta": "2026-12-03"});
    Mock::given(method("POST"))
        .and(path("/tools/order"))
        .respond_with(SignedReceiver {
            secret: TOOL_SECRET,
            answer: ResponseTemplate::new(200).set_body_json(&shipped),
        })
        .mount(&tools)
        .await;
    Mock::given(method("POST"))
        .and(path("/tools/flaky"))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({"message": "db down"})))
        .mount(&tools)
        .await;
    let slow_answer = ResponseTemplate::new(200)
        .set_body_json(serde_json::json!({"ok": "slow"}))
        .set_delay(Duration::from_millis(1500));
    Mock::given(method("PUT"))
        .and(path("/tools/slow"))
        .respond_with(SignedReceiver { secret: TOOL_SECRET, answer: slow_answer })
        .mount(&tools)
        .await;
    Mock::given(method("POST"))
        .and(path("/tools/stuck"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&tools)
        .await;
    agent::create(store, acme.id, &AgentSpec::parse(&http_tools_agent(&tools)).unwrap(), true).await.unwrap();
    rig.transcripts(&["Where is order A-123?", "Try the other system.", "And the slow one?", "The stuck one?", "Bye."])
        .await;
    let templates = vec![
        sse_tool_call_id("call_bad", "", "lookup_order", r#"{"order_id": 42}"#),
        sse_tool_call_id("call_ok", "", "lookup_order", r#"{"order_id": "A-123"}"#),
        sse(&["It has shipped."]),
        sse_tool_call_id("call_flaky", "", "flaky", "{}"),
        sse(&["That system is down."]),
        sse_tool_call_id("call_slow", "", "slow", "{}"),
        sse(&["Slow says ok."]),
        sse_tool_call_id("call_stuck", "", "stuck", "{}"),
        sse(&["It timed out."]),
        sse_tool_call_id("call_end", "Bye!", "end_call", r#"{"outcome": "completed"}"#),
    ];
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Sequence::new(templates))
        .mount(&rig.llm)
        .await;
    let (log, call) = rig.call(&rig.caller(&["order", "other", "slow", "stuck", "bye"])).await;
    assert_eq!((call.status, call.outcome), (CallStatus::Completed, Some(Outcome::Completed)));

    // The receiver got the valid call only, signed (it answered 200 only then), with its headers.
    let received = tools.received_requests().await.unwrap();
    let orders: Vec<&wiremock::Request> = received.iter().filter(|r| r.url.path() == "/tools/order").collect();
    assert_eq!(orders.len(), 1, "schema-invalid arguments never reach the tool");
    let header = |r: &wiremock::Request, name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header(orders[0], "idempotency-key"), format!("{}:call_ok", call.id));
    assert_eq!(header(orders[0], "x-asterai-call-id"), call.id);
    assert_eq!(header(orders[0], "x-api-key"), "crm-key-42");
    assert_eq!(header(orders[0], "x-team"), "support");
    assert_eq!(header(orders[0], "content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(&orders[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"tool": "lookup_order", "call_id": call.id, "tool_call_id": "call_ok", "arguments": {"order_id": "A-123"}})
    );

    let turns = store.turns(acme.id, &call.id).await.unwrap();
    let tools_of = |turn: usize| serde_json::to_value(&turns[turn].tools).unwrap();
    assert_eq!(
        tools_of(1),
        serde_json::json!([
            {"name": "lookup_order", "arguments": {"order_id": 42},
             "result": {"error": "invalid arguments, the tool was not called: /order_id: expected string, got integer"}},
            {"name": "lookup_order", "arguments": {"order_id": "A-123"}, "result": shipped},
        ])
    );
    assert_eq!(turns[1].agent, "It has shipped.");
    assert_eq!(
        tools_of(2)[0]["result"],
        serde_json::json!({"error": "the tool answered HTTP 500", "answer": {"message": "db down"}})
    );
    assert_eq!(turns[2].agent, "That system is down.");
    assert_eq!(tools_of(3)[0]["result"], serde_json::json!({"ok": "slow"}));
    assert_eq!(turns[3].agent, "Hold on, checking. Slow says ok.", "the filler is part of what the caller heard");
    assert!(log.played.contains(&rig.phrase_file("Hold on, checking.")), "{:?}", log.played);
    assert_eq!(tools_of(4)[0]["result"], serde_json::json!({"error": "the tool did not answer within 200 ms"}));
    assert_eq!(turns[4].agent, "It timed out.");

    // Each answer reached the model: the request after the valid call ends with its result.
    let requests = rig.llm.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[2].body).unwrap();
    let messages = body["messages"].as_array().unwrap();
    let tail: Vec<(&str, Option<&str>)> = messages[messages.len() - 4..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["tool_call_id"].as_str()))
        .collect();
    assert_eq!(tail, [("assistant", None), ("tool", Some("call_bad")), ("assistant", None), ("tool", Some("call_ok"))]);
    let result: serde_json::Value =
        serde_json::from_str(messages[messages.len() - 1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(result, shipped);
    let offered: Vec<&str> =
        body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["end_call", "lookup_order", "flaky", "slow", "stuck"]);
    assert_eq!(body["tools"][1]["function"]["parameters"]["required"], serde_json::json!(["order_id"]));
}

/// The caller hangs up while an HTTP tool runs (during the filler): the tool's request is
/// dropped, the call ends, and the turn records the tool call as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_cancels_the_tool_call() {
    use asterai::agent::{self, AgentSpec};
    use asterai::demo::caller::HangupAt;
    use support::mocks::sse_tool_call_id;
    let rig = rig(|_| {}).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let tools = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/tools/slow"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": 1})).set_delay(Duration::from_secs(4)),
        )
        .mount(&tools)
        .await;
    agent::create(store, acme.id, &AgentSpec::parse(&http_tools_agent(&tools)).unwrap(), true).await.unwrap();
    rig.transcripts(&["Check the slow system."]).await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Sequence::new(vec![sse_tool_call_id("call_slow", "", "slow", "{}"), sse(&["Never said."])]))
        .mount(&rig.llm)
        .await;
    let mut caller = rig.caller(&["slow", "more"]);
    // The greeting is the first playback, the filler the second.
    caller.hangup = Some(HangupAt::Playback(2));
    let (log, call) = rig.call(&caller).await;
    assert!(
        call.status_reason.as_deref().unwrap_or_default().contains("during a tool call"),
        "{:?}",
        call.status_reason
    );
    assert_eq!(tools.received_requests().await.unwrap().len(), 1, "the tool was called");
    let turns = store.turns(acme.id, &call.id).await.unwrap();
    assert_eq!(
        serde_json::to_value(&turns[1].tools).unwrap(),
        serde_json::json!([{"name": "slow", "arguments": {}, "result": {"cancelled": true, "error": "the caller hung up during the tool call"}}])
    );
    assert_eq!(rig.llm.received_requests().await.unwrap().len(), 1, "the model is not asked again");
    assert!(log.after_hangup.iter().all(|c| dead_safe(c)), "{:?}", log.after_hangup);
}

/// After the call, the agent's analysis: a summary, the success evaluation and structured data
/// against its schema, asked of its responder once the call ended; stored on the call (and in
/// `GET /v1/calls/{id}`), published as `call_analyzed` after `call_ended`. Data that does not fit
/// is asked again once, with the error; still wrong, it is stored with `data_error`; a responder
/// that fails leaves `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_is_analysed_after_it_ends() {
    use asterai::agent::{self, AgentSpec};
    let rig = rig(|_| {}).await;
    let store = &rig.db.store;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let spec = r#"
name = "analyst"
ai_disclosure = false
greeting_inbound = "Hi."
[limits]
max_turns = 1
[analysis]
summary = true
success_criteria = "The caller booked a demo."
data_schema = { type = "object", properties = { interested = { type = "boolean" }, budget = { type = "number" } }, required = ["interested"] }
"#;
    agent::create(store, acme.id, &AgentSpec::parse(spec).unwrap(), true).await.unwrap();
    let valid = r#"{"summary": "The caller booked a demo.", "success": true, "success_reason": "a demo is booked", "data": {"interested": true, "budget": 500}}"#;
    let invalid = r#"{"summary": "The caller booked a demo.", "success": true, "success_reason": "booked", "data": {"interested": "yes"}}"#;

    // 1. Valid at once.
    rig.transcripts(&["I'd like a demo, my budget is 500."]).await;
    let llm = |answers: Vec<ResponseTemplate>| {
        Mock::given(method("POST")).and(path("/v1/chat/completions")).respond_with(Sequence::new(answers))
    };
    llm(vec![sse(&["Great, it's booked."]), sse(&["```json\n", valid, "\n```"])]).mount(&rig.llm).await;
    rig.call(&rig.caller(&["demo"])).await;
    let analysed = analysed_call(&rig, 1).await;
    let analysis = analysed.analysis.clone().unwrap();
    assert_eq!(
        analysis,
        serde_json::json!({"summary": "The caller booked a demo.", "success": true, "success_reason": "a demo is booked",
            "data": {"interested": true, "budget": 500}, "attempts": 1})
    );
    let requests = rig.llm.received_requests().await.unwrap();
    let asked: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    let system = asked["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("The caller booked a demo.") && system.contains("\"budget\""), "{system}");
    assert_eq!(
        asked["messages"][1]["content"],
        "Agent: Hi.\nCaller: I'd like a demo, my budget is 500.\nAgent: Great, it's booked."
    );
    assert!(asked.get("tools").is_none());
    let events = store.call_events(&analysed.id).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(&kinds[kinds.len() - 2..], [EventKind::CallEnded, EventKind::CallAnalyzed]);
    assert_eq!(events.last().unwrap().data, analysis);
    let token = rig.daemon.token("acme").await;
    let body: serde_json::Value = asterai::speech::http_client()
        .get(format!("http://{}/v1/calls/{}", rig.daemon.addr, analysed.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["analysis"], analysis, "{body}");

    // 2. Invalid, then asked again with the error: the second answer is stored.
    rig.llm.reset().await;
    llm(vec![sse(&["Sure."]), sse(&[invalid]), sse(&[valid])]).mount(&rig.llm).await;
    rig.call(&rig.caller(&["demo"])).await;
    let analysis = analysed_call(&rig, 2).await.analysis.unwrap();
    assert_eq!((analysis["data"]["interested"].as_bool(), analysis["attempts"].as_u64()), (Some(true), Some(2)));
    assert!(analysis.get("data_error").is_none(), "{analysis}");
    let retry: serde_json::Value = serde_json::from_slice(&rig.llm.received_requests().await.unwrap()[2].body).unwrap();
    let correction = retry["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
    assert_eq!(
        correction,
        "That answer is invalid: \"data\" does not fit the schema: /interested: expected boolean, got string. Answer again with one corrected JSON object."
    );

    // 3. Invalid twice: stored as it came, with the validation error.
    rig.llm.reset().await;
    llm(vec![sse(&["Sure."]), sse(&[invalid]), sse(&["not JSON at all"])]).mount(&rig.llm).await;
    rig.call(&rig.caller(&["demo"])).await;
    let analysis = analysed_call(&rig, 3).await.analysis.unwrap();
    assert_eq!(analysis["attempts"], 2);
    assert_eq!(analysis["data_error"], "the answer holds no JSON object");

    // 4. The responder is down: the analysis says so; the call itself was answered.
    rig.llm.reset().await;
    llm(vec![
        sse(&["Sure."]),
        ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": {"message": "invalid key"}})),
    ])
    .mount(&rig.llm)
    .await;
    rig.call(&rig.caller(&["demo"])).await;
    let call = analysed_call(&rig, 4).await;
    let analysis = call.analysis.unwrap();
    assert!(analysis["error"].as_str().unwrap().starts_with("the responder failed: "), "{analysis}");
    assert_eq!(call.turns, 1);
}

/// The newest call once there are `n` calls and its analysis is stored.
async fn analysed_call(rig: &Rig, n: usize) -> Call {
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    for _ in 0..400 {
        let page = rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if page.calls.len() == n && page.calls[0].analysis.is_some() {
            return page.calls[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("call {n} was never analysed");
}
