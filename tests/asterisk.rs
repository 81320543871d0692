//! End-to-end tests against a real Asterisk 22.10.1 (tests/support/asterisk.rs): the shipped
//! dialplan and ARI configuration, the real `asterai serve` (tests/support/live.rs), speech
//! providers mocked at the HTTP level in their OpenAI shapes, and people on Local channels who
//! speak espeak-ng utterances with real silence between them.
//!
//! Each test asserts on what Asterisk logged (every AGI line, the dialplan's steps) and on what
//! asterai stored and published. Tests share one Asterisk and run side by side, each with its
//! own daemon, keys and numbers; the one that stops and kills Asterisk has its own.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use asterai::store::{Call, CallStatus, Event, Outcome};
use support::asterisk::{Asterisk, Exchange, Options, Script, unique};
use support::live::{Agent, SENTENCE_MS};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn analysis(intent: &str, action: &str) -> String {
    format!(
        "\n<analysis>{{\"intent\": \"{intent}\", \"emotion\": \"neutral\", \"confidence\": 0.9, \"action\": \"{action}\"}}</analysis>"
    )
}

/// A fresh E.164 number for a dialer test, and its digits (the person's key).
fn fresh_number() -> (String, String) {
    let digits = format!("15550{:06}", unique());
    (format!("+{digits}"), digits)
}

/// The files Asterisk played to the end or until the caller left (a reply with a position).
fn played(exchange: &Exchange) -> Vec<String> {
    exchange
        .named("STREAM FILE")
        .into_iter()
        .filter(|(_, reply)| reply.as_deref().and_then(Exchange::endpos).unwrap_or(0) > 0)
        .map(|(command, _)| command.split_whitespace().nth(2).unwrap_or_default().to_owned())
        .collect()
}

/// Every playback ran to its end on a live channel: `200 result=0 endpos=N`, N > 0.
fn assert_all_played(exchange: &Exchange) {
    let streams = exchange.named("STREAM FILE");
    assert!(!streams.is_empty(), "nothing played: {exchange:#?}");
    for (command, reply) in &streams {
        let reply = reply.as_deref().unwrap_or_else(|| panic!("{command}: no reply"));
        assert!(reply.starts_with("200 result=0 "), "{command}: {reply}");
        assert!(Exchange::endpos(reply).unwrap_or(0) > 0, "{command}: {reply}");
    }
}

/// No command was refused (510, 511, 520), and once Asterisk said `HANGUP` only what a dead
/// channel allows was sent: the dialplan's variables and the question of who hung up.
fn assert_clean(exchange: &Exchange) {
    assert!(exchange.errors().is_empty(), "refused commands: {:?}\n{exchange:#?}", exchange.errors());
    for command in exchange.after_hangup() {
        assert!(
            command.starts_with("SET VARIABLE ") || command == "GET VARIABLE HANGUPCAUSE",
            "{command:?} sent on a dead channel:\n{exchange:#?}"
        );
    }
}

/// The agent's lines of the transcript, sentence by sentence, are the files Asterisk played (to
/// the end, or until the caller left): the transcript is what the caller heard.
fn assert_heard_is_transcript(agent: &Agent, exchange: &Exchange, call: &Call) {
    let transcript = call.transcript.clone().unwrap_or_default();
    let said: Vec<String> =
        transcript.lines().filter_map(|l| l.strip_prefix("Agent: ")).flat_map(|text| agent.files_for(text)).collect();
    assert_eq!(played(exchange), said, "what the caller heard is the transcript:\n{transcript}");
}

fn assert_no_warnings(agent: &Agent) {
    let warnings = agent.warnings();
    assert!(warnings.is_empty(), "the daemon warned:\n{}", warnings.join("\n"));
}

/// The types of a call's events, with the status of the status updates.
fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.kind.as_str() {
            "call_status_update" => format!("status:{}", e.data["status"].as_str().unwrap_or("?")),
            kind => kind.to_owned(),
        })
        .collect()
}

/// The call's `call_ended` says what the store says.
fn assert_ended_like_the_store(events: &[Event], call: &Call) {
    let ended = events.iter().find(|e| e.kind.as_str() == "call_ended").expect("call_ended");
    assert_eq!(ended.data["status"].as_str(), Some(call.status.as_str()), "{ended:?} vs {call:?}");
    assert_eq!(ended.data["outcome"].as_str(), call.outcome.map(Outcome::as_str), "{ended:?} vs {call:?}");
    assert_eq!(ended.data["reason"].as_str(), call.outcome_reason.as_deref(), "{ended:?} vs {call:?}");
    assert_eq!(events.last().map(|e| e.kind.as_str()), Some("call_ended"), "call_ended comes last");
}

/// The WAV files speech-to-text received, decoded: each must be a valid 8 kHz mono 16-bit WAV.
async fn recordings_sent(agent: &Agent) -> Vec<Vec<i16>> {
    let mut out = Vec::new();
    for request in agent.stt.received_requests().await.unwrap() {
        let body = &request.body;
        let start = body.windows(4).position(|w| w == b"RIFF").expect("a WAV part in the multipart body");
        let size = u32::from_le_bytes(body[start + 4..start + 8].try_into().unwrap()) as usize + 8;
        let wav = &body[start..start + size];
        let reader = hound::WavReader::new(std::io::Cursor::new(wav)).expect("a valid WAV");
        let spec = reader.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (1, 8000, 16), "{spec:?}");
        out.push(reader.into_samples::<i16>().map(Result::unwrap).collect());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unknown_routes() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[("ASTERAI_ARI_URL", "")]).await;
    let key = unique().to_string();
    asterisk.put_script(&key, None, &Script::new().quiet(10)).await;
    let mark = asterisk.log_mark();
    let health = agent.call_to(asterisk, "Local/health@asterai-health", &key).await;
    let unknown = agent.call_to(asterisk, "Local/unknown@asterai-test-routes", &key).await;

    let exchange = asterisk.finished_agi(mark, &health.other_leg()).await;
    let commands = exchange.commands();
    assert_eq!(
        commands,
        [
            ("VERBOSE \"asterai ok\" 1".to_owned(), Some("200 result=1".to_owned())),
            ("GET VARIABLE CHANNEL".into(), Some(format!("200 result=1 ({})", health.other_leg()))),
            ("SET VARIABLE ASTERAI_HEALTH ok".into(), Some("200 result=1".into())),
        ]
    );
    asterisk.wait_for_log(mark, &["asterai health: ok AGISTATUS=SUCCESS"]).await;

    let exchange = asterisk.finished_agi(mark, &unknown.other_leg()).await;
    assert_eq!(
        exchange.commands(),
        [
            ("VERBOSE \"asterai: unknown route no-such-route\" 1".to_owned(), Some("200 result=1".to_owned())),
            ("SET VARIABLE ASTERAI_STATUS unknown_route".into(), Some("200 result=1".into())),
        ]
    );
    asterisk.wait_for_log(mark, &["asterai-test unknown route: AGISTATUS=SUCCESS ASTERAI_STATUS=unknown_route"]).await;
    let warnings = agent.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("AGI request for an unknown route") && warnings[0].contains("no-such-route"));
}

/// A whole call on the shipped `[asterai-inbound]`: the greeting and every answer are played,
/// each recording reaches speech-to-text as a valid WAV, turns and transcript are stored and
/// published in order, the recordings are deleted, and Asterisk refused nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_call_is_heard_transcribed_stored_and_cleaned_up() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    agent.transcripts(&["Hi, who is this?", "How much is it?", "Okay, thanks. Goodbye."]).await;
    let (who, price, bye) =
        (analysis("identity", "continue"), analysis("pricing", "continue"), analysis("goodbye", "end"));
    agent
        .answers(&[
            &["I'm Ava, ", "an AI assistant for Acme.", &who],
            &["It is 20 dollars a month.", " The first month is free.", &price],
            &["Thank you for calling. Goodbye!", &bye],
        ])
        .await;
    let feed = agent.follow_feed().await;
    let key = unique().to_string();
    let script = Script::new()
        .wait_for_agent()
        .say(&asterisk.utterance("Hello, who is this?"))
        .wait_for_agent()
        .say(&asterisk.utterance("How much is it?"))
        .wait_for_agent()
        .say(&asterisk.utterance("Okay, thanks. Goodbye."))
        .wait_for_agent()
        .quiet(10);
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(asterisk, &key).await;
    let channel = person.other_leg();
    let call_id = agent.call_on(&channel).await;
    let call = agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &channel).await;

    // Asterisk's side.
    assert_all_played(&exchange);
    assert_clean(&exchange);
    let records = exchange.named("RECORD FILE");
    assert_eq!(records.len(), 3, "{exchange:#?}");
    for (command, reply) in &records {
        let reply = reply.as_deref().unwrap();
        assert!(command.ends_with(" wav # 30000 0 s=1"), "{command}");
        assert!(reply.contains("(timeout)") && Exchange::endpos(reply).unwrap() > 0, "{command}: {reply}");
    }
    assert_eq!(exchange.commands().last().unwrap().0, "HANGUP", "asterai hangs up at the end");
    asterisk.wait_for_log(mark, &[&format!("asterai call {call_id} ended: status=ok outcome=completed")]).await;

    // What speech-to-text received: the three utterances, as Asterisk recorded them.
    let recordings = recordings_sent(&agent).await;
    assert_eq!(recordings.len(), 3);
    for samples in &recordings {
        assert!(samples.len() > 4000, "half a second of speech at least: {} samples", samples.len());
        assert!(!asterai::speech::audio::is_silence(samples, -45.0), "the recording holds speech");
    }

    // asterai's side.
    assert_eq!((call.status, call.outcome, call.turns), (CallStatus::Completed, Some(Outcome::Completed), 3));
    assert_eq!(call.from, "+15551230000");
    assert_eq!(call.outcome_reason.as_deref(), Some("the conversation ended (goodbye)"));
    let transcript = call.transcript.clone().unwrap();
    assert!(transcript.starts_with("Agent: Hello, thank you for calling Acme Inc."), "{transcript}");
    assert!(
        transcript.contains("Caller: How much is it?\nAgent: It is 20 dollars a month. The first month is free.\n"),
        "{transcript}"
    );
    assert_heard_is_transcript(&agent, &exchange, &call);
    let turns = agent.turns(&call_id).await;
    assert_eq!(turns.len(), 4, "the greeting and three turns");
    assert_eq!(turns[2].intent.as_deref(), Some("pricing"));
    assert!(turns[1..].iter().all(|t| t.latency_ms.endpoint == 1000), "the silence window ended each turn");
    let recordings_dir = agent.daemon.dir.path().join("recordings");
    assert_eq!(std::fs::read_dir(&recordings_dir).unwrap().count(), 0, "recordings are deleted");
    assert_no_warnings(&agent);

    // The feed, in order.
    let events = feed.ended(&call_id).await;
    assert_eq!(
        kinds(&events),
        [
            "call_started",
            "status:in_progress",
            "conversation_turn",
            "conversation_turn",
            "conversation_turn",
            "conversation_turn",
            "status:completed",
            "call_ended"
        ]
    );
    assert_ended_like_the_store(&events, &call);
}

/// The caller hangs up during the greeting, during a recording, while a provider is slow, while
/// the agent speaks, and right after the end with `hangup_at_end = false`: each call is stored
/// as ended with the reason, nothing is sent on the dead channel, nothing is logged as a warning,
/// and syntheses nobody will hear are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_hangs_up_at_every_moment() {
    let asterisk = Asterisk::shared().await;
    let (greeting, recording, slow, speaking, after_end) = tokio::join!(
        hang_up_during_the_greeting(asterisk),
        hang_up_during_a_recording(asterisk),
        hang_up_while_a_provider_is_slow(asterisk),
        hang_up_while_the_agent_speaks(asterisk),
        hang_up_after_the_end(asterisk),
    );
    let _ = (greeting, recording, slow, speaking, after_end);
}

/// One call of [`the_caller_hangs_up_at_every_moment`]: the person's script, then the call as
/// stored and the exchange as Asterisk logged it.
async fn hang_up_call(asterisk: &Asterisk, agent: &Agent, script: Script) -> (Call, Exchange) {
    let key = unique().to_string();
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(asterisk, &key).await;
    let channel = person.other_leg();
    let call_id = agent.call_on(&channel).await;
    let call = agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &channel).await;
    assert_clean(&exchange);
    assert!(!exchange.commands().iter().any(|(c, _)| c == "HANGUP"), "no HANGUP for a caller who left: {exchange:#?}");
    assert_eq!(call.status, CallStatus::Completed);
    asterisk.wait_for_log(mark, &[&format!("asterai call {call_id} ended: status=ok")]).await;
    (call, exchange)
}

/// Bug 1: Asterisk answers the interrupted STREAM FILE with `200 result=-1 endpos=N` (N > 0) and
/// writes HANGUP a few milliseconds later. Three callers leave at different points of the
/// greeting, so that the reply and the HANGUP line arrive apart at least once.
async fn hang_up_during_the_greeting(asterisk: &Asterisk) {
    let agent = Agent::start(asterisk, &[]).await;
    let pauses = ["0.4", "1.3", "2.2"];
    let calls = pauses.map(|pause| {
        let script = Script::new().wait_for_agent_to_speak().step(format!("Wait({pause})")).hang_up();
        hang_up_call(asterisk, &agent, script)
    });
    let [a, b, c] = calls;
    let results = tokio::join!(a, b, c);
    for (call, exchange) in [results.0, results.1, results.2] {
        assert_eq!(call.outcome_reason.as_deref(), Some("caller hung up during the greeting"), "{call:?}");
        let streams = exchange.named("STREAM FILE");
        let (last, reply) = streams.last().unwrap();
        let reply = reply.as_deref().unwrap_or_default();
        assert!(reply.starts_with("200 result=-1 endpos=") && Exchange::endpos(reply).unwrap() > 0, "{last}: {reply}");
        assert!(
            streams[..streams.len() - 1]
                .iter()
                .all(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with("200 result=0"))),
            "nothing is played after the interrupted sentence: {exchange:#?}"
        );
        assert_heard_is_transcript(&agent, &exchange, &call);
    }
    assert_no_warnings(&agent);
}

async fn hang_up_during_a_recording(asterisk: &Asterisk) {
    let agent = Agent::start(asterisk, &[]).await;
    let script = Script::new().wait_for_agent().say_only(&asterisk.utterance("Well, I was wondering")).hang_up();
    let (call, exchange) = hang_up_call(asterisk, &agent, script).await;
    assert_eq!(call.outcome_reason.as_deref(), Some("caller hung up"), "{call:?}");
    let records = exchange.named("RECORD FILE");
    assert_eq!(records.len(), 1);
    assert!(records[0].1.as_deref().unwrap().starts_with("200 result=-1 (hangup)"), "{records:?}");
    assert_eq!(call.turns, 0);
    assert!(agent.stt.received_requests().await.unwrap().is_empty(), "a caller who left is not transcribed");
    assert_heard_is_transcript(&agent, &exchange, &call);
    assert_eq!(std::fs::read_dir(agent.daemon.dir.path().join("recordings")).unwrap().count(), 0);
    assert_no_warnings(&agent);
}

async fn hang_up_while_a_provider_is_slow(asterisk: &Asterisk) {
    let agent = Agent::start(asterisk, &[]).await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"text": "hello"}))
                .set_delay(Duration::from_secs(20)),
        )
        .mount(&agent.stt)
        .await;
    let script = Script::new().wait_for_agent().say(&asterisk.utterance("Hello there")).quiet(1).hang_up();
    let (call, _) = hang_up_call(asterisk, &agent, script).await;
    assert_eq!(call.outcome_reason.as_deref(), Some("caller hung up while being transcribed"), "{call:?}");
    assert!(agent.llm.received_requests().await.unwrap().is_empty(), "no answer is prepared for a caller who left");
    assert_no_warnings(&agent);
}

/// The caller leaves during the first sentence of an answer: the turn is stored with what they
/// heard (that sentence, not the rest, and not a fallback nobody spoke). Issue 11, item 7: the
/// sentences still being synthesized are cancelled. Text-to-speech is a server that never
/// answers the sentences with "slowly" in them and reports when asterai drops such a request.
async fn hang_up_while_the_agent_speaks(asterisk: &Asterisk) {
    let tts = HoldingTts::start().await;
    let tts_url = format!("http://{}/v1", tts.addr);
    let agent = Agent::start(asterisk, &[("ASTERAI_TTS_URL", &tts_url), ("ASTERAI_TTS_TIMEOUT", "50s")]).await;
    agent.transcripts(&["Tell me everything."]).await;
    agent
        .answers(&[&[
            "Here is the first part, and it is a long one.",
            " Here is the second part.",
            " This part comes slowly.",
            " And this one comes slowly too.",
        ]])
        .await;
    let script = Script::new()
        .wait_for_agent()
        .say(&asterisk.utterance("Tell me everything"))
        .wait_for_agent_to_speak()
        .step("Wait(0.5)")
        .hang_up();
    let (call, exchange) = hang_up_call(asterisk, &agent, script).await;
    assert_eq!(call.outcome_reason.as_deref(), Some("caller hung up while the agent spoke"), "{call:?}");
    assert_eq!(call.turns, 1, "the interrupted turn is stored");
    let turns = agent.turns(&call.id).await;
    assert_eq!(turns[1].agent, "Here is the first part, and it is a long one.", "what the caller heard of the answer");
    assert_heard_is_transcript(&agent, &exchange, &call);
    // Both slow sentences were asked for, and asterai dropped both requests once the caller left.
    tts.wait_dropped(2).await;
    assert_no_warnings(&agent);
}

async fn hang_up_after_the_end(asterisk: &Asterisk) {
    let agent = Agent::start(asterisk, &[("ASTERAI_CONVERSATION_HANGUP_AT_END", "false")]).await;
    agent.transcripts(&["Goodbye."]).await;
    agent.answers(&[&["Goodbye!", &analysis("goodbye", "end")]]).await;
    let script = Script::new().wait_for_agent().say(&asterisk.utterance("Goodbye")).wait_for_agent().hang_up();
    let mark = asterisk.log_mark();
    let (call, exchange) = hang_up_call(asterisk, &agent, script).await;
    assert_eq!(call.outcome_reason.as_deref(), Some("the conversation ended (goodbye)"), "{call:?}");
    assert_eq!((call.turns, call.outcome), (1, Some(Outcome::Completed)));
    assert!(exchange.named("SET VARIABLE ASTERAI_OUTCOME completed").len() == 1, "{exchange:#?}");
    assert_all_played(&exchange);
    assert_heard_is_transcript(&agent, &exchange, &call);
    // The shipped dialplan went on after AGI() with the outcome (unless the caller was gone).
    let log = asterisk.log_since(mark);
    let went_on = log.contains(&format!("asterai call {} ended: status=ok outcome=completed", call.id));
    assert!(went_on, "the h extension saw the outcome");
    assert_no_warnings(&agent);
}

/// A text-to-speech server in OpenAI's shape that answers every sentence with a second of WAV
/// (three for one with "long"), except those with "slowly", which it holds until asterai drops
/// the request.
struct HoldingTts {
    addr: std::net::SocketAddr,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl HoldingTts {
    async fn start() -> HoldingTts {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = dropped.clone();
        let wav = support::mocks::wav_24k(SENTENCE_MS);
        let long = support::mocks::wav_24k(3 * SENTENCE_MS);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let counter = counter.clone();
                let (wav, long) = (wav.clone(), long.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then the JSON body of Content-Length bytes.
                    let body = loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break String::from_utf8_lossy(&request[end + 4..end + 4 + length]).into_owned();
                        }
                    };
                    if body.contains("slowly") {
                        // Hold it: the only way out is asterai closing the connection.
                        while let Ok(n) = socket.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    let wav = if body.contains("long") { long } else { wav };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        wav.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&wav).await;
                });
            }
        });
        HoldingTts { addr, dropped, _task: task }
    }

    /// Waits until asterai dropped `count` held requests.
    async fn wait_dropped(&self, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.dropped.load(std::sync::atomic::Ordering::SeqCst) < count {
            assert!(
                std::time::Instant::now() < deadline,
                "asterai kept {} synthesis requests running after the caller left",
                count - self.dropped.load(std::sync::atomic::Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Providers fail (500s, a timeout): the caller hears the fallback and the call goes on; when
/// failures keep coming, the caller hears the goodbye. What they heard is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_covered_and_what_was_heard_is_stored() {
    let asterisk = Asterisk::shared().await;
    tokio::join!(the_call_goes_on_after_failures(asterisk), repeated_failures_end_with_the_goodbye(asterisk));
}

async fn the_call_goes_on_after_failures(asterisk: &Asterisk) {
    // Two failed turns in a row, and the call still goes on.
    let agent = Agent::start(
        asterisk,
        &[
            ("ASTERAI_RESPONDER_TIMEOUT", "1s"),
            ("ASTERAI_RESPONDER_RETRIES", "0"),
            ("ASTERAI_CONVERSATION_MAX_FAILED_TURNS", "3"),
        ],
    )
    .await;
    let error = || ResponseTemplate::new(500).set_body_json(serde_json::json!({"error": {"message": "boom"}}));
    let text = |t: &str| ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": t}));
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(support::mocks::Sequence::new(vec![
            // Turn 1: three attempts (stt.retries = 2), all 500.
            error(),
            error(),
            error(),
            // Turn 2 is understood, but the responder times out; turn 3 ends the call.
            text("How much is it?"),
            text("Goodbye."),
        ]))
        .mount(&agent.stt)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(support::mocks::Sequence::new(vec![
            support::mocks::sse(&["Too late."]).set_delay(Duration::from_secs(10)),
            support::mocks::sse(&["Goodbye!", &analysis("goodbye", "end")]),
        ]))
        .mount(&agent.llm)
        .await;
    let key = unique().to_string();
    let script = Script::new()
        .wait_for_agent()
        .say(&asterisk.utterance("Hello"))
        .wait_for_agent()
        .say(&asterisk.utterance("How much is it?"))
        .wait_for_agent()
        .say(&asterisk.utterance("Goodbye"))
        .wait_for_agent()
        .quiet(10);
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(asterisk, &key).await;
    let call_id = agent.call_on(&person.other_leg()).await;
    let call = agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &person.other_leg()).await;
    assert_all_played(&exchange);
    assert_clean(&exchange);
    assert_eq!((call.turns, call.outcome), (3, Some(Outcome::Completed)), "{call:?}");
    let fallback = "Sorry, I'm having a little trouble on my end. Could you say that again?";
    let transcript = call.transcript.clone().unwrap();
    assert_eq!(transcript.matches(fallback).count(), 2, "both fallbacks are in the transcript:\n{transcript}");
    assert!(transcript.contains(&format!("Caller: How much is it?\nAgent: {fallback}\n")), "{transcript}");
    assert_heard_is_transcript(&agent, &exchange, &call);
    assert_eq!(recordings_sent(&agent).await.len(), 5, "three attempts, then two requests");
}

/// Bug 3: after speech-to-text failures the fallback and `failure_goodbye` are heard, and
/// stored in the turns and the transcript.
async fn repeated_failures_end_with_the_goodbye(asterisk: &Asterisk) {
    let agent = Agent::start(asterisk, &[("ASTERAI_STT_RETRIES", "0")]).await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(serde_json::json!({"error": {"message": "service unavailable"}})),
        )
        .mount(&agent.stt)
        .await;
    let key = unique().to_string();
    let script = Script::new()
        .wait_for_agent()
        .say(&asterisk.utterance("Hello"))
        .wait_for_agent()
        .say(&asterisk.utterance("Hello again"))
        .wait_for_agent()
        .quiet(10);
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(asterisk, &key).await;
    let call_id = agent.call_on(&person.other_leg()).await;
    let call = agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &person.other_leg()).await;
    assert_all_played(&exchange);
    assert_clean(&exchange);
    assert_eq!(call.outcome, Some(Outcome::Failed), "{call:?}");
    assert!(call.outcome_reason.as_deref().unwrap().contains("503"), "{call:?}");
    let turns = agent.turns(&call_id).await;
    let agent_lines: Vec<&str> = turns.iter().map(|t| t.agent.as_str()).collect();
    assert_eq!(agent_lines.len(), 3, "{agent_lines:#?}");
    assert_eq!(agent_lines[1], "Sorry, I'm having a little trouble on my end. Could you say that again?");
    assert!(agent_lines[2].starts_with("I'm sorry, I'm having technical difficulties."), "{agent_lines:#?}");
    assert_heard_is_transcript(&agent, &exchange, &call);
}

/// Bug 2 and the ARI paths: answered, busy, ringing without an answer, congestion, and an
/// answering machine. Each call's status, outcome and reason are the same in the store and in
/// its `call_ended`, and the feed carried its events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_end_with_what_asterisk_reported() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    agent.transcripts(&["No thanks, I'm not interested. Goodbye."]).await;
    agent.answers(&[&["I understand. Goodbye!", &analysis("not_interested", "end")]]).await;
    let feed = agent.follow_feed().await;
    let hello = asterisk.utterance("Hello?");
    let person = Script::new()
        .answer()
        .say(&hello)
        .silence(1)
        .wait_for_agent()
        .say(&asterisk.utterance("No thanks, I'm not interested. Goodbye."))
        .wait_for_agent()
        .quiet(10);
    let machine = Script::new()
        .answer()
        .say_only(&asterisk.utterance(
            "Hi, you have reached Jane at Acme. I cannot take your call right now. Please leave your name and number after the tone.",
        ))
        .quiet(30);
    let cases: [(&str, Script); 5] = [
        ("answered", person),
        ("busy", Script::new().busy()),
        ("no answer", Script::new().ring_forever()),
        ("congestion", Script::new().congestion()),
        ("machine", machine),
    ];
    let mark = asterisk.log_mark();
    let mut calls = Vec::new();
    for (name, script) in cases {
        let (number, digits) = fresh_number();
        asterisk.put_script(&digits, None, &script).await;
        calls.push((name, agent.place_call(&number).await, digits));
    }
    let mut ended = BTreeMap::new();
    for (name, call_id, digits) in &calls {
        let call = agent.finished(call_id).await;
        let events = feed.ended(call_id).await;
        assert_ended_like_the_store(&events, &call);
        assert_eq!(asterisk.person_calls(digits).await, 1, "{name}: dialed once");
        ended.insert(*name, (call, kinds(&events)));
    }
    let show = |name: &str| format!("{name}: {:#?}", ended[name]);

    let (answered, kinds_answered) = &ended["answered"];
    assert_eq!(
        (answered.status, answered.outcome),
        (CallStatus::Completed, Some(Outcome::NotInterested)),
        "{}",
        show("answered")
    );
    assert!(kinds_answered.starts_with(&["call_started".into()]), "{}", show("answered"));
    let progress = kinds_answered.iter().position(|k| k == "status:in_progress").expect("in_progress");
    assert!(
        kinds_answered[progress..].iter().filter(|k| *k == "conversation_turn").count() == 2,
        "{}",
        show("answered")
    );
    asterisk.wait_for_log(mark, &["AMD: HUMAN"]).await;

    for (name, status, outcome, reason) in [
        ("busy", CallStatus::Busy, Outcome::Busy, "BUSY"),
        ("no answer", CallStatus::NoAnswer, Outcome::NoAnswer, "19 User alerting, no answer"),
        ("congestion", CallStatus::Failed, Outcome::Failed, "CONGESTION"),
    ] {
        let (call, kinds) = &ended[name];
        assert_eq!((call.status, call.outcome), (status, Some(outcome)), "{}", show(name));
        assert_eq!(call.status_reason.as_deref(), Some(reason), "{}", show(name));
        assert_eq!(call.outcome_reason.as_deref(), Some(reason), "{}", show(name));
        assert_eq!(kinds.first().map(String::as_str), Some("call_started"), "{}", show(name));
        assert_eq!(kinds[kinds.len() - 2], format!("status:{}", status.as_str()), "{}", show(name));
        assert!(call.answered_at.is_none(), "{}", show(name));
    }

    let (machine, kinds_machine) = &ended["machine"];
    assert_eq!(
        (machine.status, machine.outcome),
        (CallStatus::Completed, Some(Outcome::Voicemail)),
        "{}",
        show("machine")
    );
    assert!(kinds_machine.contains(&"status:in_progress".into()), "{}", show("machine"));
    asterisk.wait_for_log(mark, &["AMD: MACHINE"]).await;
    let turns = agent.turns(&machine.id).await;
    assert_eq!(turns.len(), 1, "the message, and nothing recorded");
    assert!(turns[0].agent.contains("Sorry we missed you"), "{turns:?}");
    // The machine heard the whole message.
    let channel = machine.channel.clone().unwrap();
    let exchange = asterisk.finished_agi(mark, &channel).await;
    assert_all_played(&exchange);
    assert_clean(&exchange);
    assert!(exchange.named("RECORD FILE").is_empty());
    assert_heard_is_transcript(&agent, &exchange, machine);
}

/// A campaign of six contacts, at most two at once: one number is busy at the first attempt and
/// answers the retry. Each answering contact is dialed exactly once, per Asterisk's log and per
/// the store, and no more than two calls were ever up together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_dials_each_answering_contact_once() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    let hello = asterisk.utterance("Hello?");
    // A person: picks up, says hello (AMD hears a person), listens to a bit of the greeting.
    let person = Script::new().answer().say(&hello).silence(1).wait_for_agent_to_speak().quiet(1).hang_up();
    let numbers: Vec<(String, String)> = (0..6).map(|_| fresh_number()).collect();
    for (n, (_, digits)) in numbers.iter().enumerate() {
        asterisk.put_script(digits, None, &person).await;
        if n == 2 {
            asterisk.put_script(digits, Some(1), &Script::new().busy()).await;
        }
    }
    let token = agent.token().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1", agent.http);
    let created: serde_json::Value = http
        .post(format!("{base}/campaigns"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "spring", "settings": {
            "max_concurrent": 2,
            "timezone": afternoon_somewhere(),
            "ring_timeout": "15s",
            "retries": {"busy": {"attempts": 1, "delay": "1s"}, "no_answer": {"attempts": 0, "delay": "1s"}, "failed": {"attempts": 0, "delay": "1s"}},
        }}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let campaign = created["id"].as_i64().unwrap_or_else(|| panic!("{created}"));
    let csv = std::iter::once("phone,first_name".to_owned())
        .chain(numbers.iter().enumerate().map(|(n, (number, _))| format!("{number},Contact{n}")))
        .collect::<Vec<_>>()
        .join("\n");
    let imported: serde_json::Value = http
        .post(format!("{base}/campaigns/{campaign}/contacts"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imported["imported"].as_u64(), Some(6), "{imported}");
    let mark = asterisk.log_mark();
    let started = http.post(format!("{base}/campaigns/{campaign}/start")).bearer_auth(&token).send().await.unwrap();
    assert!(started.status().is_success(), "{:?}", started.text().await);

    // Until the campaign is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let status: serde_json::Value = http
            .get(format!("{base}/campaigns/{campaign}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "completed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the campaign did not complete: {status:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let filter = asterai::store::CallFilter { campaign_id: Some(campaign), limit: Some(100), ..Default::default() };
    let calls = agent.store.list_calls(org.id, &filter).await.unwrap().calls;
    let log = asterisk.log_since(mark);
    for (n, (number, digits)) in numbers.iter().enumerate() {
        let to_number: Vec<&Call> = calls.iter().filter(|c| c.to == *number).collect();
        let dialed_in_log = log.matches(&format!("Executing [{digits}@asterai-test-person:1]")).count();
        let counted = asterisk.person_calls(digits).await;
        let statuses: Vec<CallStatus> = to_number.iter().map(|c| c.status).collect();
        if n == 2 {
            assert_eq!((to_number.len(), dialed_in_log, counted), (2, 2, 2), "busy, then answered: {statuses:?}");
            assert!(statuses.contains(&CallStatus::Busy) && statuses.contains(&CallStatus::Completed), "{statuses:?}");
        } else {
            assert_eq!((to_number.len(), dialed_in_log, counted), (1, 1, 1), "{number}: dialed once: {statuses:?}");
            assert_eq!(statuses, [CallStatus::Completed]);
        }
    }
    // At most two calls up at once.
    let mut edges: Vec<(chrono::DateTime<chrono::Utc>, i32)> = Vec::new();
    for call in &calls {
        edges.push((call.started_at, 1));
        edges.push((call.ended_at.expect("every call ended"), -1));
    }
    edges.sort_by_key(|(at, delta)| (*at, *delta));
    let (mut live, mut most) = (0, 0);
    for (_, delta) in edges {
        live += delta;
        most = most.max(live);
    }
    assert!(most <= 2, "{most} calls were up at once");
    assert_eq!(most, 2, "the campaign used both of its lines");
}

/// A timezone where it is about two in the afternoon now: inside the default calling window.
fn afternoon_somewhere() -> String {
    use chrono::Timelike;
    let offset = 14 - chrono::Utc::now().hour() as i32;
    // Etc/GMT zones count the other way: Etc/GMT-2 is two hours ahead of UTC.
    match offset {
        0 => "UTC".into(),
        o => format!("Etc/GMT{:+}", -o),
    }
}

/// A call is up when Asterisk stops (`core stop now`), and again when it is killed (SIGKILL):
/// asterai says what happened, reconnects to ARI, resyncs (finishing a call that was still
/// ringing), and the next call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_stopped_and_killed_mid_call() {
    let asterisk = Asterisk::start(Options::default()).await;
    let agent = Agent::start(&asterisk, &[("ASTERAI_DIALER_RING_TIMEOUT", "60s")]).await;
    agent.transcripts(&["Goodbye."]).await;
    agent.answers(&[&["Goodbye!", &analysis("goodbye", "end")]]).await;
    let feed = agent.follow_feed().await;
    let listener = Script::new().answer().say(&asterisk.utterance("Hello?")).silence(1).quiet(60);
    for (connection, crash) in [(2, false), (3, true)] {
        let (number, digits) = fresh_number();
        asterisk.put_script(&digits, None, &listener).await;
        let (ringing_number, ringing_digits) = fresh_number();
        asterisk.put_script(&ringing_digits, None, &Script::new().ring_forever()).await;
        let mark = asterisk.log_mark();
        let call_id = agent.place_call(&number).await;
        let ringing_id = agent.place_call(&ringing_number).await;
        let channel = asterisk.wait_for_log(mark, &["AGI Rx << STREAM FILE"]).await;
        assert!(channel.contains(&digits), "{channel}");
        if crash {
            asterisk.kill().await;
        } else {
            asterisk.stop().await;
        }
        let call = agent.finished(&call_id).await;
        let reason = call.outcome_reason.clone().unwrap();
        if crash {
            assert!(
                reason.starts_with("the connection to Asterisk ended during the greeting without a hang-up"),
                "{reason}"
            );
        } else {
            assert!(
                reason.starts_with("Asterisk hung up the channel during the greeting with no hang-up cause"),
                "{reason}"
            );
        }
        assert_eq!(call.status, CallStatus::Completed);
        assert_ended_like_the_store(&feed.ended(&call_id).await, &call);

        asterisk.start_again().await;
        agent.daemon.wait_for_line(&["ARI resync done", &format!("connection={connection}")]);
        let ringing = agent.finished(&ringing_id).await;
        if crash {
            // No event said how the ringing call ended: the resync finished it.
            assert_eq!(
                (ringing.status, ringing.outcome, ringing.outcome_reason.as_deref()),
                (CallStatus::Failed, Some(Outcome::Failed), Some(asterai::dialer::tracker::GONE_AFTER_RECONNECT)),
                "{ringing:?}"
            );
        } else {
            // Stopping, Asterisk ended the dial and said so.
            assert_eq!(
                (ringing.status, ringing.outcome),
                (CallStatus::NoAnswer, Some(Outcome::NoAnswer)),
                "{ringing:?}"
            );
        }
        assert_ended_like_the_store(&feed.ended(&ringing_id).await, &ringing);

        // The next call works.
        let (number, digits) = fresh_number();
        let caller = Script::new()
            .answer()
            .say(&asterisk.utterance("Hello?"))
            .silence(1)
            .wait_for_agent()
            .say(&asterisk.utterance("Goodbye"))
            .wait_for_agent()
            .quiet(10);
        asterisk.put_script(&digits, None, &caller).await;
        let mark = asterisk.log_mark();
        let next_id = agent.place_call(&number).await;
        let next = agent.finished(&next_id).await;
        assert_eq!(
            (next.status, next.outcome_reason.as_deref()),
            (CallStatus::Completed, Some("the conversation ended (goodbye)"))
        );
        let exchange = asterisk.finished_agi(mark, next.channel.as_deref().unwrap()).await;
        assert_all_played(&exchange);
        assert_clean(&exchange);
    }
}

/// A caller who asks for a person goes, through the shipped dialplan, to `[asterai-transfer]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_goes_through_the_shipped_dialplan() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    agent.transcripts(&["Can I talk to a real person?"]).await;
    agent.answers(&[&["Of course, let me connect you.", &analysis("transfer", "transfer")]]).await;
    let key = unique().to_string();
    let script = Script::new()
        .wait_for_agent()
        .say(&asterisk.utterance("Can I talk to a real person?"))
        .wait_for_agent()
        .quiet(20);
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(asterisk, &key).await;
    let channel = person.other_leg();
    let call_id = agent.call_on(&channel).await;
    let call = agent.finished(&call_id).await;
    assert_eq!(
        (call.outcome, call.outcome_reason.as_deref()),
        (Some(Outcome::Transferred), Some("transferred to a person"))
    );
    let exchange = asterisk.finished_agi(mark, &channel).await;
    assert_all_played(&exchange);
    assert_clean(&exchange);
    assert!(!exchange.commands().iter().any(|(c, _)| c == "HANGUP"), "a transferred call is not hung up");
    assert_eq!(exchange.named("SET VARIABLE ASTERAI_OUTCOME transferred").len(), 1);
    // The shipped [asterai-inbound] sent the caller on to [asterai-transfer].
    asterisk
        .wait_for_log(
            mark,
            &[&format!(
                "Executing [support@asterai-transfer:1] NoOp(\"{channel}\", \"asterai transfer of call {call_id}"
            )],
        )
        .await;
    asterisk.wait_for_log(mark, &["Playback(\"", &channel, "vm-nobodyavail"]).await;
    asterisk.wait_for_log(mark, &[&format!("asterai transfer of call {call_id} ended")]).await;
    assert_heard_is_transcript(&agent, &exchange, &call);
}

/// Runs `asterai doctor --json` and returns the report.
fn doctor(agent: &Agent, asterisk: &Asterisk) -> serde_json::Value {
    let out = agent
        .command()
        .args(["doctor", "--json", "--timeout", "10", "--asterisk-conf"])
        .arg(asterisk.conf())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("doctor --json printed {stdout:?} ({e}); stderr {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn doctor_check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

/// Bug 5: `asterai doctor` probes a running daemon's FastAGI port the way Asterisk would, to the
/// end of the `health` route, and the daemon logs no warning for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_leaves_a_running_daemon_in_peace() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[("ASTERAI_LOG_LEVEL", "info,asterai::agi=debug")]).await;
    let report = doctor(&agent, asterisk);
    let fastagi = doctor_check(&report, "fastagi");
    assert_eq!(fastagi["level"], "ok", "{report:#}");
    assert!(fastagi["detail"].as_str().unwrap().contains("in use by a running asterai"), "{report:#}");
    assert_eq!(doctor_check(&report, "ari")["level"], "ok", "{report:#}");
    assert!(doctor_check(&report, "ari")["detail"].as_str().unwrap().contains("Asterisk 22.10.1"), "{report:#}");
    let running = doctor_check(&report, "asterisk");
    assert_eq!(running["level"], "ok", "{report:#}");
    assert!(running["detail"].as_str().unwrap().contains(&format!("pid {}", asterisk.pid().unwrap())), "{report:#}");
    for name in ["media", "recordings"] {
        assert_eq!(doctor_check(&report, name)["level"], "ok", "{report:#}");
    }
    // The probe's session ended like any other.
    agent.daemon.wait_for_line(&["asterai-doctor", "AGI session ended"]);
    assert_no_warnings(&agent);
}

/// A user of this host who is a member of a group other than its own, as the `asterisk` user is
/// a member of `asterai`: (user, its own group, the other group).
fn user_with_a_second_group() -> (String, String, String) {
    let group = std::fs::read_to_string("/etc/group").unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let name_of = |gid: &str| {
        group.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[2] == gid).map(|f| f[0].to_owned())
    };
    for line in group.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        for member in fields.get(3).unwrap_or(&"").split(',').filter(|m| !m.is_empty() && *m != "root") {
            let Some(account) = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[0] == member)
            else {
                continue;
            };
            if account[3] != fields[2]
                && let Some(own) = name_of(account[3])
            {
                return (member.to_owned(), own, fields[0].to_owned());
            }
        }
    }
    panic!(
        "no user on this host is a member of a second group (PostgreSQL's user in ssl-cert is one; scripts/test-deps installs it)"
    );
}

/// Bug 4: with `rungroup` (the same as `asterisk -G`) Asterisk drops its supplementary groups,
/// so a user's membership of the media directories' group gives it nothing: it cannot play the
/// agent's words nor write the caller's. `asterai doctor` says so and how to fix it; without
/// rungroup the same set-up works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_sees_that_asterisk_dropped_its_groups() {
    use std::os::unix::fs::PermissionsExt;
    let (user, own_group, shared_group) = user_with_a_second_group();
    let shared_gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f[0] == shared_group)
        .map(|f| f[2].parse::<u32>().unwrap())
        .unwrap();
    // The shared-group set-up of the README, with `shared_group` for `asterai`.
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let (media, recordings) = (base.path().join("media"), base.path().join("recordings"));
    for dir in [&media, &recordings] {
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(0), Some(shared_gid)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2770)).unwrap();
    }
    let env = [
        ("ASTERAI_MEDIA_DIR", media.to_str().unwrap()),
        ("ASTERAI_MEDIA_RECORDINGS_DIR", recordings.to_str().unwrap()),
        ("ASTERAI_CONVERSATION_MAX_FAILED_TURNS", "1"),
    ];

    // rungroup: Asterisk runs as `user` with `own_group` only.
    let asterisk = Asterisk::start(Options {
        run_user: Some(user.clone()),
        run_group: Some(own_group.clone()),
        ..Default::default()
    })
    .await;
    let agent = Agent::start(&asterisk, &env).await;
    let report = doctor(&agent, &asterisk);
    for name in ["media", "recordings"] {
        let check = doctor_check(&report, name);
        assert_eq!(check["level"], "fail", "{report:#}");
        let detail = check["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("rungroup = {own_group}")) && detail.contains(&shared_group), "{detail}");
        assert!(check["fix"].as_str().unwrap().contains("remove rungroup"), "{report:#}");
    }
    assert_eq!(doctor_check(&report, "asterisk")["level"], "warn", "{report:#}");
    assert_eq!(report["ok"], false);
    // And indeed the call fails: nothing can be played, nothing recorded.
    let key = unique().to_string();
    asterisk.put_script(&key, None, &Script::new().quiet(3).say(&asterisk.utterance("Hello")).quiet(10)).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(&asterisk, &key).await;
    let call_id = agent.call_on(&person.other_leg()).await;
    let call = agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &person.other_leg()).await;
    assert!(
        exchange.named("STREAM FILE").iter().all(|(_, r)| r.as_deref() == Some("200 result=-1 endpos=0")),
        "{exchange:#?}"
    );
    assert!(
        exchange.named("RECORD FILE").iter().all(|(_, r)| r.as_deref() == Some("200 result=-1 (writefile)")),
        "{exchange:#?}"
    );
    asterisk.wait_for_log(mark, &["does not exist in any format"]).await;
    assert_eq!(call.outcome, Some(Outcome::Failed), "{call:?}");
    drop(agent);
    drop(asterisk);

    // Without rungroup Asterisk keeps the user's groups, and the same directories work.
    let asterisk = Asterisk::start(Options { run_user: Some(user.clone()), ..Default::default() }).await;
    let agent = Agent::start(&asterisk, &env).await;
    agent.transcripts(&["Goodbye."]).await;
    agent.answers(&[&["Goodbye!", &analysis("goodbye", "end")]]).await;
    let report = doctor(&agent, &asterisk);
    for name in ["asterisk", "media", "recordings"] {
        assert_eq!(doctor_check(&report, name)["level"], "ok", "{report:#}");
    }
    assert!(doctor_check(&report, "media")["detail"].as_str().unwrap().contains(&shared_group), "{report:#}");
    let key = unique().to_string();
    let script = Script::new().wait_for_agent().say(&asterisk.utterance("Goodbye")).wait_for_agent().quiet(10);
    asterisk.put_script(&key, None, &script).await;
    let mark = asterisk.log_mark();
    let person = agent.call_in(&asterisk, &key).await;
    let call_id = agent.call_on(&person.other_leg()).await;
    let call = agent.finished(&call_id).await;
    let exchange = asterisk.finished_agi(mark, &person.other_leg()).await;
    assert_all_played(&exchange);
    assert_clean(&exchange);
    assert_eq!((call.turns, call.outcome_reason.as_deref()), (1, Some("the conversation ended (goodbye)")));
}
