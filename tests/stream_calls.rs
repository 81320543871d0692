//! Whole streaming calls against a fake Asterisk (`support::fake_pbx`: ARI REST, events and
//! chan_websocket media), with the conversations, the tracker and the store in-process and the
//! providers mocked in their real shapes: the per-agent barge-in switch, provider failures in
//! the middle of a call, and a caller who hangs up in the middle of a sentence. Each call must
//! end with its turns stored and nothing left in Asterisk (channels, bridges).

mod support;

use std::time::Duration;

use asterai::config::{Config, Dur};
use asterai::store::{Call, Turn};
use support::fake_pbx::{FakePbx, Step, espeak16};
use support::mocks::{Sequence, sse};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const APP: &str = "asterai-stream-test";
const PATIENCE: Duration = Duration::from_secs(90);

/// A long answer, so the caller can talk over it.
const LONG: [&str; 3] = [
    "Our basic plan costs twenty dollars a month and includes unlimited calls to every number in the country. ",
    "The premium plan adds international calls, voicemail transcription and a second line for your family. ",
    "Both plans can be cancelled at any time without a fee, and the first month is always free of charge.",
];

struct Rig {
    pbx: FakePbx,
    db: support::db::TestDb,
    _daemon: support::http::TestDaemon,
    stop: CancellationToken,
    _mocks: (MockServer, MockServer),
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The store with `acme`, the conversations with mocked STT and LLM and espeak-ng's voice, the
/// tracker reading the fake's events and handing calls to the streaming path.
async fn rig(stt: Vec<ResponseTemplate>, llm: Vec<ResponseTemplate>, tune: impl FnOnce(&mut Config)) -> Rig {
    use asterai::conversation::{Conversations, Providers, Settings, StreamCalls, StreamOptions};
    use asterai::dialer::{Tracker, TrackerConfig};

    support::init();
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=info").with_test_writer().try_init();
    let pbx = FakePbx::start(APP).await;
    let db = support::db::TestDb::new(support::db::Backend::Sqlite).await;
    db.store.create_org("acme", "Acme Inc.").await.unwrap();
    let daemon = support::http::TestDaemon::start(db.store.clone()).await;
    let (stt_mock, llm_mock) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(Sequence::new(stt))
        .mount(&stt_mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Sequence::new(llm))
        .mount(&llm_mock)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "openai".into();
    config.stt.url = format!("{}/v1", stt_mock.uri());
    config.stt.api_key = asterai::config::Secret::new("sk-stt");
    config.stt.timeout = Dur::secs(3);
    config.responder.provider = "openai".into();
    config.responder.url = format!("{}/v1", llm_mock.uri());
    config.responder.api_key = asterai::config::Secret::new("sk-llm");
    config.tts.provider = "espeak".into();
    config.conversation.greeting_inbound = "Hello.".into();
    config.conversation.ai_disclosure = false;
    config.conversation.turn_budget = Dur::secs(8);
    config.stream.speculative_pause = Dur::secs(0);
    config.stream.barge_in_min_speech = Dur::millis(120);
    config.stream.no_input = Dur::secs(12);
    tune(&mut config);
    std::fs::create_dir_all(config.media_dir()).unwrap();
    let providers = Providers::from_config(&config).unwrap();
    let conversations = Conversations::new(daemon.publisher.clone(), providers, Settings::from_config(&config), None);
    let client = asterai::ari::AriClient::new(asterai::ari::AriSettings {
        url: pbx.url(),
        username: "asterai".into(),
        password: asterai::config::Secret::new("test"),
        auth: asterai::ari::Auth::Header,
        timeout: Duration::from_secs(10),
        ca_file: None,
    })
    .unwrap();
    let tracker = Tracker::new(
        daemon.publisher.clone(),
        client.clone(),
        TrackerConfig {
            context: "default".into(),
            extension: "s".into(),
            orphan_grace: Duration::from_secs(60),
            reconcile_unassigned: false,
            conversation_grace: Duration::from_secs(10),
        },
    );
    let options = StreamOptions { app: APP.into(), stream: config.stream.clone(), support: None, audiosocket: None };
    tracker.set_stasis_calls(std::sync::Arc::new(StreamCalls::new(conversations, client.clone(), options)));
    let stop = CancellationToken::new();
    let items = asterai::ari::stream::spawn(
        asterai::ari::StreamConfig::new(client.settings().clone(), APP, Duration::from_secs(5)),
        stop.clone(),
    );
    tokio::spawn(tracker.clone().run(items));
    pbx.wait_connected().await;
    Rig { pbx, db, _daemon: daemon, stop, _mocks: (stt_mock, llm_mock), _dir: dir }
}

impl Rig {
    /// The stored call of the fake's caller `id`, once it has ended, and its turns.
    async fn ended_call(&self, id: &str) -> (Call, Vec<Turn>) {
        let acme = self.db.store.org_by_slug("acme").await.unwrap().unwrap();
        let channel = format!("PJSIP/caller-{id}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let call = loop {
            let page = self.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
            if let Some(call) =
                page.calls.iter().find(|c| c.channel.as_deref() == Some(&channel) && c.ended_at.is_some())
            {
                break call.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the call of {id} never ended: {:?}\n{:?}",
                page.calls,
                self.pbx.log(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let turns = self.db.store.turns(acme.id, &call.id).await.unwrap();
        (call, turns)
    }

    /// Nothing is left in the fake Asterisk: no channel, no bridge.
    async fn assert_clean(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.pbx.live_channels().is_empty() || self.pbx.bridges() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "left in Asterisk: channels {:?}, {} bridges",
                self.pbx.live_channels(),
                self.pbx.bridges()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn said(turns: &[Turn]) -> Vec<(String, String, bool)> {
    turns.iter().map(|t| (t.caller.clone(), t.agent.clone(), t.interrupted)).collect()
}

/// The agent's `barge_in` decides, per call, whether talking over the agent stops it: the same
/// caller talks over the same long answer on two calls at once, one with an agent whose
/// `barge_in = false`, one with `barge_in = true`; `[stream] barge_in` is on (the default), so
/// the first agent overrides it.
#[tokio::test]
async fn an_agent_without_barge_in_is_not_interrupted_and_one_with_it_is() {
    let stt = vec![ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "How much does it cost?"}))];
    let rig = rig(stt, vec![sse(&LONG)], |_| {}).await;
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    rig.db.store.create_agent(acme.id, "patient", &serde_json::json!({"barge_in": false})).await.unwrap();
    rig.db.store.create_agent(acme.id, "eager", &serde_json::json!({"barge_in": true})).await.unwrap();

    let ask = std::sync::Arc::new(espeak16("How much does it cost?"));
    let over = std::sync::Arc::new(espeak16("Wait, wait, I have another question."));
    let script = vec![
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::Say(ask.clone()),
        Step::SayOver { after: Duration::from_millis(800), samples: over.clone() },
        Step::AwaitAnswer(Duration::from_millis(500)),
        Step::HangUp,
    ];
    rig.pbx.call("patient", "ai?org=acme&agent=patient", script.clone());
    rig.pbx.call("eager", "ai?org=acme&agent=eager", script);

    let (eager_call, eager) = rig.ended_call("eager").await;
    let (patient_call, patient) = rig.ended_call("patient").await;
    let (eager_log, patient_log) = (rig.pbx.log("eager"), rig.pbx.log("patient"));
    assert_eq!(eager_log.talked_over.len(), 1, "{eager_log:?}");
    assert_eq!(patient_log.talked_over.len(), 1, "{patient_log:?}");

    // With barge-in: FLUSH_MEDIA after the caller began to talk, the turn cut and marked.
    assert!(!eager_log.barge_in().is_empty(), "no FLUSH_MEDIA after the caller talked over the agent: {eager_log:?}");
    let full = LONG.concat();
    let answered = eager.iter().find(|t| t.caller == "How much does it cost?").expect("the question's turn");
    assert!(answered.interrupted, "{:?}", said(&eager));
    assert!(answered.agent.len() < full.trim().len(), "{:?}", said(&eager));
    assert_eq!(eager_call.agent.as_deref(), Some("eager"), "{eager_call:?}");

    // Without: no FLUSH_MEDIA at all, the whole answer spoken and stored, not interrupted.
    assert!(!patient_log.commands.iter().any(|c| c == "FLUSH_MEDIA"), "{patient_log:?}");
    let answered = patient.iter().find(|t| t.caller == "How much does it cost?").expect("the question's turn");
    assert!(!answered.interrupted, "{:?}", said(&patient));
    assert_eq!(answered.agent.trim(), full.trim(), "{:?}", said(&patient));
    assert_eq!(patient_call.agent.as_deref(), Some("patient"), "{patient_call:?}");
    // What the caller said over it is a turn of its own, answered after.
    let asked = patient.iter().filter(|t| t.caller == "How much does it cost?").count();
    assert!(asked >= 2, "{:?}", said(&patient));
    rig.assert_clean().await;
}

fn transcript(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({ "text": text }))
}

/// The greeting, a question, the answer, the question again, the answer, then the caller
/// hangs up.
fn two_questions() -> Vec<Step> {
    let ask = std::sync::Arc::new(espeak16("How much does it cost?"));
    vec![
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::Say(ask.clone()),
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::Say(ask),
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::HangUp,
    ]
}

/// The fields of a multipart form body, by name (the text ones).
fn form_fields(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    let mut fields = std::collections::BTreeMap::new();
    for part in text.split("Content-Disposition: form-data; name=\"").skip(1) {
        let Some((name, rest)) = part.split_once('"') else { continue };
        if rest.starts_with("; filename=") {
            continue;
        }
        let value = rest.split_once("\r\n\r\n").map(|(_, v)| v).unwrap_or_default();
        let value = value.split("\r\n--").next().unwrap_or_default();
        fields.insert(name.to_owned(), value.to_owned());
    }
    fields
}

/// The call's agent has speech-to-text settings of its own (a model and a language): every
/// turn of the call, the first one included, is transcribed with them, not with the house's.
/// (On the daemon's multi-threaded runtime, where the call's tasks start at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_is_transcribed_with_the_agents_speech_to_text() {
    let stt = vec![transcript("How much does it cost?")];
    let rig = rig(stt, vec![sse(&["It is twenty dollars a month."])], |_| {}).await;
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let agent = serde_json::json!({"language": "fr", "stt": {"model": "agent-whisper"}});
    rig.db.store.create_agent(acme.id, "french", &agent).await.unwrap();
    rig.pbx.call("fr", "ai?org=acme&agent=french", two_questions());
    let (call, turns) = rig.ended_call("fr").await;
    assert_eq!(call.agent.as_deref(), Some("french"), "{call:?}");
    let said = said(&turns);
    let answered = said.iter().filter(|t| t.0 == "How much does it cost?").count();
    assert_eq!(answered, 2, "{said:?}");
    let requests = rig._mocks.0.received_requests().await.unwrap();
    assert!(requests.len() >= 2, "{} transcriptions", requests.len());
    for (i, request) in requests.iter().enumerate() {
        let fields = form_fields(&request.body);
        assert_eq!(fields.get("model").map(String::as_str), Some("agent-whisper"), "request {i}: {fields:?}");
        assert_eq!(fields.get("language").map(String::as_str), Some("fr"), "request {i}: {fields:?}");
    }
    rig.assert_clean().await;
}

/// Speech-to-text answers 500 in the middle of a call: the caller hears the fallback phrase
/// (stored as the agent's side of a turn nobody understood), the log says why, and the next
/// turn, transcribed, is answered as usual.
#[tokio::test]
async fn speech_to_text_failing_mid_call_gets_the_fallback_and_the_call_goes_on() {
    let (logs, _guard) = support::logs::Logs::capture();
    let stt = vec![
        ResponseTemplate::new(500).set_body_json(serde_json::json!({"error": {"message": "upstream overloaded"}})),
        transcript("How much does it cost?"),
    ];
    // No retry (a 500 is retried once by default), so the failure reaches the call.
    let rig = rig(stt, vec![sse(&["It is twenty dollars a month."])], |c| c.stt.retries = 0).await;
    rig.pbx.call("stt", "ai?org=acme", two_questions());
    let (call, turns) = rig.ended_call("stt").await;
    let fallback = Config::default().conversation.fallback;
    let said = said(&turns);
    assert_eq!(call.status, asterai::store::CallStatus::Completed, "{call:?}");
    assert!(said.contains(&(String::new(), fallback, false)), "{said:?}");
    assert!(
        said.contains(&("How much does it cost?".into(), "It is twenty dollars a month.".into(), false)),
        "{said:?}"
    );
    let text = logs.text();
    let line = text.lines().find(|l| l.contains("speech-to-text failed")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("500"), "the log line names the cause: {line}");
    assert!(!text.contains("panicked"), "{text}");
    rig.assert_clean().await;
}

/// The responder fails twice in a row, a 500 and then a timeout: the first time the caller
/// hears the fallback, the second the failure goodbye; asterai hangs up, and the call is stored
/// as failed with the reason, each failure logged with its cause.
#[tokio::test]
async fn a_responder_failing_twice_ends_the_call_with_the_failure_goodbye() {
    let (logs, _guard) = support::logs::Logs::capture();
    let llm = vec![
        ResponseTemplate::new(500).set_body_json(serde_json::json!({"error": {"message": "model melted"}})),
        sse(&["Too late."]).set_delay(Duration::from_secs(30)),
    ];
    let rig = rig(vec![transcript("How much does it cost?")], llm, |c| {
        c.conversation.turn_budget = Dur::secs(3);
        c.responder.retries = 0;
    })
    .await;
    let mut script = two_questions();
    script.pop();
    script.push(Step::Pause(Duration::from_secs(60)));
    rig.pbx.call("llm", "ai?org=acme", script);
    let (call, turns) = rig.ended_call("llm").await;
    let said = said(&turns);
    let defaults = Config::default().conversation;
    assert_eq!(call.outcome, Some(asterai::store::Outcome::Failed), "{call:?}");
    assert!(call.outcome_reason.as_deref().unwrap_or_default().contains("repeated failures"), "{call:?}");
    assert!(said.iter().any(|(_, agent, _)| *agent == defaults.fallback), "{said:?}");
    assert_eq!(said.last().map(|t| t.1.clone()), Some(defaults.failure_goodbye), "{said:?}");
    let log = rig.pbx.wait_log("llm", "asterai's hang-up", PATIENCE, |l| l.ended.is_some()).await;
    assert_eq!(log.ended.as_deref(), Some("hangup"), "asterai ended the call: {log:?}");
    assert_eq!(log.vars.get("ASTERAI_OUTCOME").map(String::as_str), Some("failed"), "{log:?}");
    let text = logs.text();
    let failures: Vec<&str> = text.lines().filter(|l| l.contains("the answer could not be given")).collect();
    assert_eq!(failures.len(), 2, "{text}");
    assert!(failures[0].contains("500"), "{}", failures[0]);
    assert!(failures[1].contains("no answer within"), "{}", failures[1]);
    assert!(!text.contains("panicked"), "{text}");
    rig.assert_clean().await;
}

/// Streaming text-to-speech answers 500 mid-call: each sentence is spoken from the speech
/// cache's provider (the same provider's non-streaming WAV) instead, the log says so, and the
/// turn is stored whole.
#[tokio::test]
async fn streaming_text_to_speech_failing_falls_back_to_the_speech_cache() {
    use wiremock::matchers::body_string_contains;
    let (logs, _guard) = support::logs::Logs::capture();
    let tts = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .and(body_string_contains("\"pcm\""))
        .respond_with(ResponseTemplate::new(500).set_body_string("speech engine down"))
        .mount(&tts)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .and(body_string_contains("\"wav\""))
        .respond_with(ResponseTemplate::new(200).set_body_raw(support::mocks::wav_24k(800), "audio/wav"))
        .mount(&tts)
        .await;
    let url = format!("{}/v1", tts.uri());
    let rig = rig(vec![transcript("How much does it cost?")], vec![sse(&["It is twenty dollars a month."])], |c| {
        c.tts.provider = "openai".into();
        c.tts.url = url;
        c.tts.api_key = asterai::config::Secret::new("sk-tts");
    })
    .await;
    rig.pbx.call("tts", "ai?org=acme", two_questions());
    let (call, turns) = rig.ended_call("tts").await;
    let said = said(&turns);
    assert_eq!(call.status, asterai::store::CallStatus::Completed, "{call:?}");
    let answers = said.iter().filter(|t| t.1 == "It is twenty dollars a month." && !t.2).count();
    assert_eq!(answers, 2, "{said:?}");
    let log = rig.pbx.log("tts");
    assert!(log.agent_frames.len() > 100, "the answers were heard: {log:?}");
    let text = logs.text();
    let line = text.lines().find(|l| l.contains("streaming text-to-speech failed")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("500") && line.contains("speech cache"), "{line}");
    rig.assert_clean().await;
}

/// The caller hangs up in the middle of a sentence: the turn keeps the part of the answer the
/// caller heard, the call ends as the caller's hang-up, and the media channel and the bridge
/// are taken down.
#[tokio::test]
async fn a_hang_up_in_the_middle_of_a_sentence() {
    let (logs, _guard) = support::logs::Logs::capture();
    let rig = rig(vec![transcript("How much does it cost?")], vec![sse(&LONG)], |_| {}).await;
    let ask = std::sync::Arc::new(espeak16("How much does it cost?"));
    let script = vec![
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::Say(ask),
        Step::AwaitPlaying(Duration::from_millis(1500)),
        Step::HangUp,
    ];
    rig.pbx.call("gone", "ai?org=acme", script);
    let (call, turns) = rig.ended_call("gone").await;
    let said = said(&turns);
    assert_eq!(call.status, asterai::store::CallStatus::Completed, "{call:?}");
    assert!(call.status_reason.as_deref().unwrap_or_default().contains("hung up"), "{call:?}");
    let full = LONG.concat();
    let answered = turns.iter().find(|t| t.caller == "How much does it cost?").unwrap_or_else(|| panic!("{said:?}"));
    assert!(!answered.agent.trim().is_empty(), "the caller heard the start of the answer: {said:?}");
    assert!(full.starts_with(answered.agent.trim()), "{said:?}");
    assert!(answered.agent.trim().len() < full.trim().len(), "only what was heard is kept: {said:?}");
    let log = rig.pbx.log("gone");
    assert_eq!(log.ended.as_deref(), Some("caller hung up"), "{log:?}");
    rig.assert_clean().await;
    assert!(rig.pbx.requests().iter().any(|r| r.starts_with("DELETE /ari/bridges/")), "the bridge is destroyed");
    assert!(!logs.text().contains("panicked"), "{}", logs.text());
}

/// What the fake Deepgram saw.
#[derive(Debug, Default, Clone)]
struct DeepgramSeen {
    connections: usize,
    queries: Vec<String>,
    authorization: Vec<String>,
    audio_bytes: usize,
    finalizes: usize,
    keepalives: usize,
    close_streams: usize,
}

/// A fake of Deepgram's live endpoint (`/v1/listen`, WebSocket): interim `Results` as audio
/// comes, a final one (`is_final`, `speech_final`, `from_finalize`) answering `Finalize`, with
/// the transcript given; KeepAlive and CloseStream counted.
// The handshake callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn fake_deepgram(transcript: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<DeepgramSeen>>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<DeepgramSeen>> = Default::default();
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = shared.clone();
            tokio::spawn(async move {
                let mut query = String::new();
                let mut auth = String::new();
                let callback =
                    |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                     response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        query = request.uri().to_string();
                        auth =
                            request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").into();
                        Ok(response)
                    };
                let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                {
                    let mut s = seen.lock().unwrap();
                    s.connections += 1;
                    s.queries.push(query);
                    s.authorization.push(auth);
                }
                let (mut sink, mut stream) = socket.split();
                let mut bytes = 0usize;
                let mut interim_sent = false;
                let result = |text: &str, secs: f64, last: bool| {
                    serde_json::json!({"type": "Results", "channel_index": [0, 1], "duration": secs, "start": 0.0,
                        "is_final": last, "speech_final": last, "from_finalize": last,
                        "channel": {"alternatives": [{"transcript": text, "confidence": 0.97, "words": []}]},
                        "metadata": {"request_id": "fake", "model_info": {"name": "nova-3"}}})
                    .to_string()
                };
                while let Some(Ok(message)) = stream.next().await {
                    match message {
                        Message::Binary(audio) => {
                            bytes += audio.len();
                            seen.lock().unwrap().audio_bytes += audio.len();
                            if !interim_sent && bytes > 16000 {
                                interim_sent = true;
                                let secs = bytes as f64 / 32000.0;
                                let _ = sink.send(Message::Text(result("how much", secs, false).into())).await;
                            }
                        }
                        Message::Text(text) => {
                            let kind = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()["type"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned();
                            match kind.as_str() {
                                "Finalize" => {
                                    seen.lock().unwrap().finalizes += 1;
                                    let secs = (bytes as f64 / 32000.0).max(0.1);
                                    let _ = sink.send(Message::Text(result(transcript, secs, true).into())).await;
                                }
                                "KeepAlive" => seen.lock().unwrap().keepalives += 1,
                                "CloseStream" => {
                                    seen.lock().unwrap().close_streams += 1;
                                    let _ = sink.send(Message::Close(None)).await;
                                    return;
                                }
                                _ => {}
                            }
                        }
                        Message::Close(_) => return,
                        _ => {}
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1"), seen)
}

/// `stt.provider = "deepgram"` on the streaming path: each turn streams the caller's audio to
/// Deepgram live (`/v1/listen` over a WebSocket, linear16 at the call's rate, the key in
/// `Authorization: Token …`), `Finalize` at the end of the turn, and the final result is the
/// turn's transcript; nothing is posted to a pre-recorded endpoint.
#[tokio::test]
async fn deepgram_live_transcribes_the_turns_of_a_streaming_call() {
    let (url, seen) = fake_deepgram("How much does it cost?").await;
    let rig =
        rig(vec![transcript("wrong: the pre-recorded endpoint")], vec![sse(&["It is twenty dollars a month."])], |c| {
            c.stt.provider = "deepgram".into();
            c.stt.url = url;
            c.stt.api_key = asterai::config::Secret::new("dg-key");
        })
        .await;
    rig.pbx.call("dg", "ai?org=acme", two_questions());
    let (call, turns) = rig.ended_call("dg").await;
    let said = said(&turns);
    assert_eq!(call.status, asterai::store::CallStatus::Completed, "{call:?}");
    let answered =
        said.iter().filter(|t| t.0 == "How much does it cost?" && t.1 == "It is twenty dollars a month.").count();
    assert_eq!(answered, 2, "{said:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.finalizes >= 2, "{seen:?}");
    assert!(seen.audio_bytes > 32000, "at least a second of audio was streamed: {seen:?}");
    assert!(
        seen.queries.iter().all(|q| q.starts_with("/v1/listen?")
            && q.contains("encoding=linear16")
            && q.contains("sample_rate=16000")),
        "{seen:?}"
    );
    assert!(seen.authorization.iter().all(|a| a == "Token dg-key"), "{seen:?}");
    assert_eq!(rig._mocks.0.received_requests().await.unwrap().len(), 0, "the OpenAI mock was not used");
    rig.assert_clean().await;
}
