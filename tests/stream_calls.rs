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
    rig.assert_clean().await;
}
