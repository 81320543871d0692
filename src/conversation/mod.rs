//! The AI conversation on the `ai` route: `AGI(agi://host:4573/ai?org=acme[&campaign=…]
//! [&contact=…][&call_id=…])`, and (streaming) `Stasis(<ari.app>,ai?org=acme…)`.
//!
//! Two layers (see `lib.rs` for the tour):
//! * [`core`]: one call's conversation, media-independent. It consumes what the caller did
//!   ("said X", "was silent", "hung up") and decides what to say and when to end: greeting and
//!   AI disclosure, the responder, analysis, do-not-call handling, transfer, the limits, the
//!   outcome, and every write of the call's record ([`record`]) and feed events.
//! * Media paths that turn audio into those events and speech back into audio:
//!   [`agi`], the FastAGI file loop (`RECORD FILE` until silence, `STREAM FILE` of synthesized
//!   sentences, [`speak`]).
//!
//! For each call:
//! 1. Answer if needed; create the call, or adopt the one the dialer created (`call_id`);
//!    publish `call_started` and `call_status_update(in_progress)`. A `call_id`, `campaign` or
//!    `contact` of another organization is never used (see "Isolation" below).
//! 2. Greet, with the AI disclosure unless it is switched off.
//! 3. Repeat: listen until the caller is done → speech-to-text → the responder → analysis →
//!    store the turn (`conversation_turn`) → speak the answer.
//! 4. Stop on hang-up, an ending intent, the turn or duration limits, or too many silent or
//!    failed turns. A do-not-call request is written to the organization's list before the
//!    caller hears it confirmed.
//! 5. Finish the call record (status, outcome, duration, transcript), publish `call_ended`,
//!    and let the media path hang up (the AGI path also deletes the recordings, unless
//!    `media.keep_recordings`).
//!
//! Providers that time out, rate-limit or fail are retried within the turn's budget; then the
//! caller hears a stock phrase from the cache and the call goes on.
//!
//! **The database is not on the caller's path.** The call's record is written by a task of its
//! own ([`record`]); the organization is looked up once and then kept in memory; the reads a
//! call needs to start (the dialer's call to adopt, the contact) wait at most [`LOOKUP_WAIT`],
//! and not at all for [`DOWN_HOLD`] after one failed. So calls start, and go on, while the
//! database is down; an organization never seen since start-up is refused then
//! (`ASTERAI_STATUS=unavailable`), because nobody can tell whether it exists.
//!
//! **Isolation.** The route's `org` decides whose call it is. A `call_id` that another
//! organization holds is never adopted and nothing is written under it: the call goes on under
//! a fresh id (`ASTERAI_CALL_ID`), with a warning naming the cause. A `campaign` or `contact`
//! that is not the organization's is ignored with a warning. The store refuses such writes too,
//! so a race or a replay cannot cross over either.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::agi::AgiSession;
use crate::config::{Config, ConversationConfig};
use crate::feed::Publisher;
use crate::speech::BoxFuture;
use crate::speech::rules::render;
use crate::store::Org;

pub mod after_call;
pub mod agi;
pub mod analysis;
pub mod barge;
pub mod call_recording;
pub mod core;
pub mod listen;
pub mod live;
pub mod providers;
pub mod record;
pub mod speak;
pub mod stream;
pub mod tools;

pub use self::core::{CallStart, Heard, MediaPath, RouteParams, Utterance};
pub use live::{AiState, LiveCall, LiveCalls};
pub use providers::Providers;
use record::{Change, Recorder, Records};
pub use stream::{StreamCalls, StreamOptions};

/// The longest a call waits for a read it needs to start (the dialer's call, the contact).
pub const LOOKUP_WAIT: Duration = Duration::from_secs(1);
/// After a read failed for lack of a database, calls skip such reads for this long.
pub const DOWN_HOLD: Duration = Duration::from_secs(5);

/// Hands a call to a person. The dialer provides one when ARI is configured.
pub trait Transferer: Send + Sync {
    /// Moves the call's channel to the transfer target. An error says why it failed.
    fn transfer<'a>(&'a self, call: &'a TransferRequest) -> BoxFuture<'a, Result<(), String>>;
}

/// The call to transfer.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub call_id: String,
    pub org_id: i64,
    /// The Asterisk channel name (`agi_channel`).
    pub channel: String,
    /// The channel's unique id (`agi_uniqueid`), which ARI uses as the channel id.
    pub uniqueid: String,
    /// The destination of the agent's target the model named; `None`: the default target.
    pub destination: Option<String>,
}

/// Where things are and how to behave.
#[derive(Clone)]
pub struct Settings {
    pub conversation: ConversationConfig,
    pub recordings_dir: PathBuf,
    pub keep_recordings: bool,
    /// The system prompt template.
    pub system_prompt: String,
    /// Time allowed to synthesize one sentence.
    pub tts_timeout: Duration,
    pub spool_dir: PathBuf,
    /// A provider call that takes longer than this shows the call as waiting on it.
    pub waiting_after: Duration,
    /// The configuration these settings came from: the providers and keys the organizations'
    /// agents inherit (see [`crate::agent`]).
    pub base: Arc<Config>,
    /// The functions the model may call (an agent's `tools`; none for the built-in agent).
    pub tools: Vec<crate::speech::llm::ToolSpec>,
    /// The agent's named transfer targets: (name, destination).
    pub transfer_targets: Vec<(String, String)>,
    /// The agent's HTTP tools (offered in `tools` too).
    pub http_tools: Vec<Arc<tools::HttpTool>>,
    /// The agent's after-call analysis, if it wants one.
    pub analysis: Option<crate::agent::AnalysisSpec>,
    /// The agent's whole-call recording (`[recording]`); a campaign's setting overrides it.
    pub recording: crate::agent::RecordingSpec,
    /// Where whole-call recordings go (`media.call_recordings_dir`).
    pub call_recordings_dir: PathBuf,
    /// The organizations' compliance policies (`dialer.compliance`): which regions need every
    /// party's consent to record.
    pub compliance: Arc<crate::dialer::compliance::Compliance>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            conversation: config.conversation.clone(),
            recordings_dir: config.recordings_dir(),
            keep_recordings: config.media.keep_recordings,
            system_prompt: config.responder.system_prompt.clone(),
            tts_timeout: config.tts.timeout.0,
            spool_dir: config.data_dir().join("spool"),
            waiting_after: WAITING_AFTER,
            base: Arc::new(config.clone()),
            tools: Vec::new(),
            transfer_targets: Vec::new(),
            http_tools: Vec::new(),
            analysis: None,
            recording: crate::agent::RecordingSpec::default(),
            call_recordings_dir: config.call_recordings_dir(),
            compliance: Arc::new(
                crate::dialer::compliance::Compliance::load(&config.dialer.compliance).unwrap_or_else(|e| {
                    tracing::error!("{e}; recordings use the shipped all-party consent regions");
                    crate::dialer::compliance::Compliance::default()
                }),
            ),
        }
    }
}

/// Who speaks on a call and with what: the built-in agent (the config's `[conversation]`,
/// `[responder]`, `[stt]`, `[tts]`), or a version of one of the organization's agents with the
/// settings and providers it gives.
pub struct Profile {
    /// The agent's name and version; none for the built-in agent.
    pub agent: Option<(String, i32)>,
    pub settings: Settings,
    pub providers: Providers,
}

/// Agent versions whose providers are kept built; beyond it the cache starts over.
const PROFILES_KEPT: usize = 256;

/// A provider that has not answered in this time is slower than usual: supervisors see the call
/// as waiting on it (`call_status_update` with `waiting`) until it answers.
pub const WAITING_AFTER: Duration = Duration::from_secs(2);

/// Runs a provider call. If it has not finished after `after`, the call is marked as waiting on
/// `provider` (while the call goes on) and unmarked once it finishes: two events for a slow
/// provider, none for a normal one.
async fn waiting_on<T>(
    recorder: &mut Recorder,
    provider: &'static str,
    after: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        _ = tokio::time::sleep(after) => {}
    }
    let (done, ()) = tokio::join!(work, recorder.push(Change::Waiting(Some(provider.into()))));
    recorder.push(Change::Waiting(None)).await;
    done
}

/// The conversation service, shared by every call on the `ai` route.
#[derive(Clone)]
pub struct Conversations {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Publisher,
    providers: Providers,
    settings: Settings,
    /// The built-in agent.
    builtin: Arc<Profile>,
    /// Agent versions met so far, by agent id and version (versions never change).
    profiles: Mutex<HashMap<(i64, i32), Arc<Profile>>>,
    transferer: Option<Arc<dyn Transferer>>,
    records: Records,
    /// Organizations by slug, once looked up (they are never renamed or removed).
    orgs: Mutex<HashMap<String, Org>>,
    /// Until when reads are skipped: the database failed one recently.
    down_until: Mutex<Option<Instant>>,
    /// The calls in conversation, for the supervisors' console.
    live: LiveCalls,
}

/// Why a read on a call's path gave nothing.
#[derive(Debug)]
enum LookupError {
    /// The database failed or was too slow; the call goes on without.
    Unavailable(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Unavailable(why) => write!(f, "{why}"),
        }
    }
}

impl Inner {
    /// A read a call needs, bounded by [`LOOKUP_WAIT`] and skipped while the database is known
    /// to be down.
    async fn lookup<T>(
        &self,
        what: &str,
        read: impl std::future::Future<Output = crate::store::Result<T>>,
    ) -> Result<T, LookupError> {
        if self.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| Instant::now() < until) {
            return Err(LookupError::Unavailable("the database failed a moment ago".into()));
        }
        let failed = match tokio::time::timeout(LOOKUP_WAIT, read).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => format!("cannot read {what}: {e}"),
            Err(_) => format!("reading {what} took longer than {LOOKUP_WAIT:?}"),
        };
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DOWN_HOLD);
        Err(LookupError::Unavailable(failed))
    }

    /// The organization of a slug: from memory once seen, else from the database.
    async fn org(&self, slug: &str) -> Result<Option<Org>, LookupError> {
        if let Some(org) = self.orgs.lock().unwrap_or_else(|e| e.into_inner()).get(slug) {
            return Ok(Some(org.clone()));
        }
        let found = self.lookup("the organization", self.publisher.store().org_by_slug(slug)).await?;
        if let Some(org) = &found {
            self.orgs.lock().unwrap_or_else(|e| e.into_inner()).insert(slug.to_owned(), org.clone());
        }
        Ok(found)
    }

    /// The agent a call runs (see [`crate::agent::choose`]) with its settings and providers.
    /// When the database cannot say, or the agent's version cannot be used (a key its
    /// environment lacks), the call runs the built-in agent and a warning says why.
    async fn profile(&self, org: &Org, params: &RouteParams) -> Arc<Profile> {
        let campaign = params.get("campaign").and_then(|c| c.parse::<i64>().ok());
        let route = params.non_empty("agent");
        let store = self.publisher.store();
        let agent = match self.lookup("the agent", crate::agent::choose(store, org.id, route, campaign)).await {
            Ok((Some(agent), _)) => agent,
            Ok((None, _)) => return self.builtin.clone(),
            Err(e) => {
                tracing::warn!(org = %org.slug, "{e}; the call runs the built-in agent");
                return self.builtin.clone();
            }
        };
        let key = (agent.id, agent.version);
        if let Some(profile) = self.profiles.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return profile.clone();
        }
        match self.build_profile(&agent) {
            Ok(profile) => {
                let profile = Arc::new(profile);
                let mut profiles = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
                if profiles.len() >= PROFILES_KEPT {
                    profiles.clear();
                }
                profiles.insert(key, profile.clone());
                profile
            }
            Err(e) => {
                tracing::warn!(org = %org.slug, agent = %agent.name, version = agent.version,
                    "the agent cannot hold calls ({e}); the call runs the built-in agent");
                self.builtin.clone()
            }
        }
    }

    fn build_profile(&self, agent: &crate::store::Agent) -> Result<Profile, String> {
        let spec = crate::agent::AgentSpec::from_json(agent.spec.clone())?;
        // The built-in agent as this daemon runs it: its settings may differ from the file's.
        let mut base = (*self.settings.base).clone();
        base.conversation = self.settings.conversation.clone();
        base.responder.system_prompt = self.settings.system_prompt.clone();
        let env = |name: &str| std::env::var(name).ok();
        let config = spec.apply(&base, env)?;
        let providers = Providers::from_config(&config)?;
        let client = tools::tool_client();
        let http_tools = spec
            .http_tools
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                tools::HttpTool::new(&format!("http_tools[{i}]"), tool, client.clone(), &env).map(Arc::new)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let settings = Settings {
            conversation: config.conversation.clone(),
            system_prompt: config.responder.system_prompt.clone(),
            tts_timeout: config.tts.timeout.0,
            base: Arc::new(config),
            tools: spec
                .tools
                .iter()
                .filter_map(|name| crate::agent::builtin_tool(name, &spec.transfer_targets))
                .chain(spec.http_tools.iter().map(crate::agent::HttpToolSpec::to_spec))
                .collect(),
            http_tools,
            analysis: spec.analysis.wanted().then(|| spec.analysis.clone()),
            recording: spec.recording.clone(),
            transfer_targets: spec
                .transfer_targets
                .iter()
                .map(|t| (t.name.clone(), t.destination.trim().to_owned()))
                .collect(),
            ..self.settings.clone()
        };
        Ok(Profile { agent: Some((agent.name.clone(), agent.version)), settings, providers })
    }
}

impl Conversations {
    pub fn new(
        publisher: Publisher,
        providers: Providers,
        settings: Settings,
        transferer: Option<Arc<dyn Transferer>>,
    ) -> Self {
        let records = Records::new(publisher.clone(), settings.spool_dir.clone());
        let builtin = Arc::new(Profile { agent: None, settings: settings.clone(), providers: providers.clone() });
        let live = LiveCalls::new(publisher.daemon());
        Conversations {
            inner: Arc::new(Inner {
                publisher,
                providers,
                settings,
                builtin,
                profiles: Mutex::new(HashMap::new()),
                transferer,
                records,
                orgs: Mutex::new(HashMap::new()),
                down_until: Mutex::new(None),
                live,
            }),
        }
    }

    /// Reads every organization into memory, so that their calls start while the database is
    /// down. Returns how many.
    pub async fn preload_orgs(&self) -> crate::store::Result<usize> {
        let orgs = self.inner.publisher.store().list_orgs().await?;
        let mut known = self.inner.orgs.lock().unwrap_or_else(|e| e.into_inner());
        for org in &orgs {
            known.insert(org.slug.clone(), org.clone());
        }
        Ok(orgs.len())
    }

    /// The calls in conversation on this daemon, which supervisors act on (see [`live`]).
    pub fn live(&self) -> LiveCalls {
        self.inner.live.clone()
    }

    /// The calls' record-keeping: tell it when the daemon stops, and wait for it before exit.
    pub fn records(&self) -> &Records {
        &self.inner.records
    }

    /// The handler for the `ai` route.
    pub fn handler(&self) -> impl crate::agi::Handler {
        let inner = self.inner.clone();
        move |session: AgiSession| {
            let inner = inner.clone();
            async move { agi::run(inner, session).await }
        }
    }

    /// Synthesizes the stock phrases ahead of time, so the fallback can be played from the cache
    /// even while the text-to-speech provider is down. Returns the phrases that failed.
    pub async fn warm_up(&self) -> Vec<String> {
        let c = &self.inner.settings.conversation;
        let values = BTreeMap::from([("agent_name".to_owned(), c.agent_name.clone())]);
        let mut failed = Vec::new();
        for phrase in [
            &c.reprompt,
            &c.fallback,
            &c.goodbye,
            &c.dnc_confirmation,
            &c.callback_confirmation,
            &c.failure_goodbye,
            &c.no_response_goodbye,
            &c.transfer_unavailable,
            &c.tool_filler,
            &c.disclosure,
        ] {
            let text = render(phrase, &values);
            for sentence in split_sentences(&text) {
                let deadline = Instant::now() + self.inner.settings.tts_timeout;
                if let Err(e) = self.inner.providers.voice.speak(&sentence, deadline).await {
                    failed.push(format!("{sentence:?}: {e}"));
                }
            }
        }
        failed
    }
}

fn split_sentences(text: &str) -> Vec<String> {
    let mut splitter = crate::speech::llm::SentenceSplitter::default();
    let mut out = splitter.push(text);
    out.extend(splitter.finish());
    out
}
