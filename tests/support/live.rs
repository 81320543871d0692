//! `asterai serve` beside a real Asterisk ([`super::asterisk`]): the real binary on free ports
//! with its own SQLite database, speech providers mocked at the HTTP level in their OpenAI shapes,
//! ARI pointed at the Asterisk under test, and the dialer dialing Local channels into
//! `[asterai-test-person]`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use asterai::store::{Call, Event, Store, StoreOptions};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::asterisk::{Asterisk, Originated, WAIT, ari_credentials, unique};
use super::daemon::{Daemon, command};
use super::http::FeedClient;
use super::mocks::{Sequence, sse, wav_24k};

/// How long each synthesized sentence plays: long enough that a person who finished speaking
/// (1.2 s of trailing silence) still hears the agent's answer start.
pub const SENTENCE_MS: u32 = 1000;

/// The live feed of one organization, collected in the background.
pub struct Feed {
    events: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Feed {
    /// The events of one call received so far, in the order the feed sent them.
    pub fn of(&self, call_id: &str) -> Vec<Event> {
        self.events.lock().unwrap().iter().filter(|e| e.call_id.as_deref() == Some(call_id)).cloned().collect()
    }

    /// Waits until the feed carried the call's `call_ended`, and returns the call's events.
    pub async fn ended(&self, call_id: &str) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.of(call_id);
            if events.iter().any(|e| e.kind.as_str() == "call_ended") {
                return events;
            }
            assert!(Instant::now() < deadline, "no call_ended for {call_id} on the feed: {events:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An `asterai serve` wired to a real Asterisk.
pub struct Agent {
    pub daemon: Daemon,
    pub agi: SocketAddr,
    pub http: SocketAddr,
    pub stt: MockServer,
    pub llm: MockServer,
    pub tts: MockServer,
    pub store: Store,
    /// The daemon's key in AstDB (`asterai-test-agi/<key>`) and its `dialer.extension`.
    pub key: u32,
    /// `ari.app`.
    pub app: String,
    /// `tts.url`: the cache key of every sentence includes it.
    pub tts_url: String,
    /// The `ASTERAI_*` environment the daemon runs with.
    pub env: Vec<(String, String)>,
}

impl Agent {
    /// Starts a daemon for `asterisk` with organization `acme`, ARI and the dialer configured,
    /// and `env` on top (`ASTERAI_*` overrides).
    pub async fn start(asterisk: &Asterisk, env: &[(&str, &str)]) -> Agent {
        super::init();
        let (stt, llm, tts) = (MockServer::start().await, MockServer::start().await, MockServer::start().await);
        Mock::given(method("POST"))
            .and(path("/v1/audio/speech"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(wav_24k(SENTENCE_MS), "audio/wav"))
            .mount(&tts)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("asterai.db").display());
        let store = Store::connect(&StoreOptions {
            url: url.clone(),
            max_connections: 4,
            connect_timeout: Duration::from_secs(10),
        })
        .await
        .expect("open the daemon's SQLite database");
        store.migrate().await.unwrap();
        store.create_org("acme", "Acme Inc.").await.unwrap();

        let key = unique();
        let app = format!("asterai-test-{}-{key}", std::process::id());
        let (user, password) = ari_credentials();
        let stt_url = format!("{}/v1", stt.uri());
        let llm_url = format!("{}/v1", llm.uri());
        let tts_url = env
            .iter()
            .find(|(k, _)| *k == "ASTERAI_TTS_URL")
            .map_or_else(|| format!("{}/v1", tts.uri()), |(_, v)| (*v).to_owned());
        let ari_url = asterisk.ari_url();
        let key_text = key.to_string();
        let mut cmd = command(dir.path());
        cmd.arg("serve")
            .env("ASTERAI_AGI_LISTEN", "127.0.0.1:0")
            .env("ASTERAI_HTTP_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null());
        let defaults: Vec<(&str, &str)> = vec![
            ("ASTERAI_STT_PROVIDER", "openai"),
            ("ASTERAI_STT_URL", &stt_url),
            ("ASTERAI_STT_API_KEY", "sk-stt"),
            ("ASTERAI_RESPONDER_PROVIDER", "openai"),
            ("ASTERAI_RESPONDER_URL", &llm_url),
            ("ASTERAI_RESPONDER_API_KEY", "sk-llm"),
            ("ASTERAI_TTS_PROVIDER", "openai"),
            ("ASTERAI_TTS_URL", &tts_url),
            ("ASTERAI_TTS_API_KEY", "sk-tts"),
            ("ASTERAI_CONVERSATION_TURN_BUDGET", "6s"),
            ("ASTERAI_ARI_URL", &ari_url),
            ("ASTERAI_ARI_USERNAME", &user),
            ("ASTERAI_ARI_PASSWORD", &password),
            ("ASTERAI_ARI_APP", &app),
            ("ASTERAI_ARI_RECONNECT_MAX", "1s"),
            ("ASTERAI_DIALER_ENDPOINT", "Local/{digits}@asterai-test-person"),
            ("ASTERAI_DIALER_CONTEXT", "asterai-test-outbound"),
            ("ASTERAI_DIALER_EXTENSION", &key_text),
            ("ASTERAI_DIALER_CALLER_ID", "Acme <+15550000000>"),
            ("ASTERAI_DIALER_RING_TIMEOUT", "4s"),
            ("ASTERAI_DIALER_POLL_INTERVAL", "250ms"),
            ("ASTERAI_DIALER_TRANSFER_TARGET", "Local/support@asterai-transfer"),
        ];
        let mut all: Vec<(String, String)> = Vec::new();
        for (k, v) in defaults.into_iter().chain(env.iter().copied()) {
            cmd.env(k, v);
            all.push((k.to_owned(), v.to_owned()));
        }
        let daemon = Daemon::spawn(cmd, dir);
        let agi = daemon.listener("FastAGI");
        let http = daemon.listener("HTTP");
        if !env.iter().any(|(k, v)| *k == "ASTERAI_ARI_URL" && v.is_empty()) {
            daemon.wait_for_line(&["ARI resync done"]);
        }
        asterisk.db_put("asterai-test-agi", &key_text, &format!("agi://{agi}")).await;
        Agent { daemon, agi, http, stt, llm, tts, store, key, app, tts_url, env: all }
    }

    /// `asterai` with the daemon's configuration (its data directory, environment and the
    /// addresses it listens on), for other commands such as `doctor`.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = command(self.daemon.dir.path());
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.env("ASTERAI_AGI_LISTEN", self.agi.to_string()).env("ASTERAI_HTTP_LISTEN", self.http.to_string());
        cmd
    }

    /// The files the daemon plays for `text`, sentence by sentence, as `STREAM FILE` names them
    /// (its text-to-speech cache).
    pub fn files_for(&self, text: &str) -> Vec<String> {
        let mut config = asterai::config::Config::default();
        config.daemon.data_dir = self.daemon.dir.path().display().to_string();
        config.tts.provider = "openai".into();
        config.tts.url = self.tts_url.clone();
        let voice = asterai::conversation::Providers::from_config(&config).unwrap().voice;
        let mut splitter = asterai::speech::llm::SentenceSplitter::default();
        let mut sentences = splitter.push(text);
        sentences.extend(splitter.finish());
        sentences.iter().map(|s| voice.path_for(s).display().to_string()).collect()
    }

    /// Keeps every event of `acme` from the live feed, as it comes.
    pub async fn follow_feed(&self) -> Feed {
        let mut client = self.feed().await;
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(received) = client.next(Duration::from_secs(3600)).await {
                match received {
                    super::http::Received::Event(event) => sink.lock().unwrap().push(event),
                    super::http::Received::Control(_) => {}
                    super::http::Received::Closed(_) => break,
                }
            }
        });
        Feed { events, _task: AbortOnDrop(task) }
    }

    /// `agi://127.0.0.1:<port>`, for the `ASTERAI` variable of a call.
    pub fn agi_url(&self) -> String {
        format!("agi://{}", self.agi)
    }

    /// Answers transcription requests with these texts in turn (the last one repeats).
    pub async fn transcripts(&self, texts: &[&str]) {
        let templates =
            texts.iter().map(|t| ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": t}))).collect();
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(Sequence::new(templates))
            .mount(&self.stt)
            .await;
    }

    /// Answers chat requests with these streamed answers in turn (the last one repeats).
    pub async fn answers(&self, answers: &[&[&str]]) {
        let templates = answers.iter().map(|pieces| sse(pieces)).collect();
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Sequence::new(templates))
            .mount(&self.llm)
            .await;
    }

    /// An inbound call to this daemon through the shipped `[asterai-inbound]`: the person `key`
    /// (its script stored with [`Asterisk::put_script`]) calls from `+15551230000`. Returns the
    /// person's channel; the agent's is its [`Originated::other_leg`].
    pub async fn call_in(&self, asterisk: &Asterisk, key: &str) -> Originated {
        self.call_to(asterisk, "Local/s@asterai-inbound", key).await
    }

    /// A call from the person `key` to `endpoint`, with `${ASTERAI}` pointing at this daemon.
    pub async fn call_to(&self, asterisk: &Asterisk, endpoint: &str, key: &str) -> Originated {
        asterisk.originate(endpoint, key, "\"Caller\" <+15551230000>", &[("ASTERAI", &self.agi_url())]).await
    }

    /// A token of `acme` for the HTTP API and the feed.
    pub async fn token(&self) -> String {
        let org = self.store.org_by_slug("acme").await.unwrap().unwrap();
        asterai::auth::create_token(&self.store, org.id, "test", asterai::auth::Scopes::all()).await.unwrap().token
    }

    /// The live feed of `acme`, from the start of the log.
    pub async fn feed(&self) -> FeedClient {
        let token = self.token().await;
        FeedClient::connect(self.http, &token, "?since=0").await.expect("open the feed")
    }

    /// Waits until the call is finished in the store, and returns it.
    pub async fn finished(&self, call_id: &str) -> Call {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(call)) = self.store.call_any(call_id).await
                && call.ended_at.is_some()
            {
                return call;
            }
            assert!(Instant::now() < deadline, "call {call_id} never finished; daemon log:\n{}", self.log().join("\n"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a call whose channel is `channel` exists in the store, and returns its id.
    pub async fn call_on(&self, channel: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let org = self.store.org_by_slug("acme").await.unwrap().unwrap();
            let page = self.store.list_calls(org.id, &Default::default()).await.unwrap();
            if let Some(call) = page.calls.iter().find(|c| c.channel.as_deref() == Some(channel)) {
                return call.id.clone();
            }
            assert!(Instant::now() < deadline, "no call on {channel}; daemon log:\n{}", self.log().join("\n"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The call's turns, in order (read in the call's own organization).
    pub async fn turns(&self, call_id: &str) -> Vec<asterai::store::Turn> {
        let call = self.store.call_any(call_id).await.unwrap().expect("the call is stored");
        self.store.turns(call.org_id, call_id).await.unwrap()
    }

    /// The events of a call, as the feed carries them (the store's log).
    pub async fn events(&self, call_id: &str) -> Vec<Event> {
        self.store.call_events(call_id).await.unwrap()
    }

    /// Everything the daemon logged.
    pub fn log(&self) -> Vec<String> {
        self.daemon.stderr.lock().unwrap().clone()
    }

    /// The daemon's warnings and errors.
    pub fn warnings(&self) -> Vec<String> {
        self.log().into_iter().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect()
    }

    /// Places a call through the REST API (`POST /v1/calls`) and returns its id.
    pub async fn place_call(&self, to: &str) -> String {
        self.place(serde_json::json!({ "to": to })).await
    }

    /// Places a streaming call (`"media": "stream"`) through the REST API and returns its id.
    pub async fn place_streaming_call(&self, to: &str) -> String {
        self.place(serde_json::json!({ "to": to, "media": "stream" })).await
    }

    async fn place(&self, request: serde_json::Value) -> String {
        let token = self.token().await;
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/calls", self.http))
            .bearer_auth(token)
            .json(&request)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 201, "POST /v1/calls {request}: {body}");
        body["id"].as_str().unwrap().to_owned()
    }
}
