//! The AI conversation on the `ai` route: `AGI(agi://host:4573/ai?org=acme[&campaign=…]
//! [&contact=…][&call_id=…])`.
//!
//! For each call:
//! 1. Answer if needed; create the call, or adopt the one the dialer created (`call_id`);
//!    publish `call_started` and `call_status_update(in_progress)`. A `call_id`, `campaign` or
//!    `contact` of another organization is never used (see "Isolation" below).
//! 2. Greet, with the AI disclosure unless it is switched off.
//! 3. Repeat: `RECORD FILE` until silence → speech-to-text → the responder → analysis → store the
//!    turn (`conversation_turn`) → speak the answer (see [`speak`]).
//! 4. Stop on hang-up, an ending intent, the turn or duration limits, or too many silent or
//!    failed turns. A do-not-call request is written to the organization's list before the
//!    caller hears it confirmed.
//! 5. Finish the call record (status, outcome, duration, transcript), publish `call_ended`,
//!    delete the recordings (unless `media.keep_recordings`), and hang up.
//!
//! Providers that time out, rate-limit or fail are retried within the turn's budget; then the
//! caller hears a stock phrase from the cache and the call goes on. Text from callers and models
//! only ever reaches Asterisk as a synthesized file path or a quoted argument.
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::agi::command::{
    Answer, ChannelState, ChannelStatus, GetVariable, Hangup, RecordEnd, RecordFile, SetVariable, Verbose,
};
use crate::agi::{AgiSession, HandlerResult};
use crate::config::{Config, ConversationConfig};
use crate::feed::Publisher;
use crate::speech::llm::{Action, Message, ResponseRequest, Role};
use crate::speech::rules::render;
use crate::speech::stt::SttRequest;
use crate::speech::{BoxFuture, audio};
use crate::store::{CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Org, Outcome};

pub mod analysis;
pub mod providers;
pub mod record;
pub mod speak;

use analysis::TurnAnalysis;
pub use providers::Providers;
use record::{Change, Recorder, Records};

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
        }
    }
}

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
    transferer: Option<Arc<dyn Transferer>>,
    records: Records,
    /// Organizations by slug, once looked up (they are never renamed or removed).
    orgs: Mutex<HashMap<String, Org>>,
    /// Until when reads are skipped: the database failed one recently.
    down_until: Mutex<Option<Instant>>,
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
}

impl Conversations {
    pub fn new(
        publisher: Publisher,
        providers: Providers,
        settings: Settings,
        transferer: Option<Arc<dyn Transferer>>,
    ) -> Self {
        let records = Records::new(publisher.clone(), settings.spool_dir.clone());
        Conversations {
            inner: Arc::new(Inner {
                publisher,
                providers,
                settings,
                transferer,
                records,
                orgs: Mutex::new(HashMap::new()),
                down_until: Mutex::new(None),
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

    /// The calls' record-keeping: tell it when the daemon stops, and wait for it before exit.
    pub fn records(&self) -> &Records {
        &self.inner.records
    }

    /// The handler for the `ai` route.
    pub fn handler(&self) -> impl crate::agi::Handler {
        let inner = self.inner.clone();
        move |session: AgiSession| {
            let inner = inner.clone();
            async move { run(inner, session).await }
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

/// A safe file name part from a call id (which may come from a dialplan).
fn file_safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

async fn run(inner: Arc<Inner>, session: AgiSession) -> HandlerResult {
    let env = session.env();
    let Some(slug) = env.param("org").map(|s| s.into_owned()).filter(|s| !s.is_empty()) else {
        tracing::warn!("ai route without ?org=<slug>; nobody to answer for");
        session.send(Verbose::new("asterai: the ai route needs ?org=<organization>", 1)).await?;
        session.send(SetVariable::new("ASTERAI_STATUS", "missing_org")).await?;
        return Ok(());
    };
    let org = match inner.org(&slug).await {
        Ok(Some(org)) => org,
        Ok(None) => {
            tracing::warn!(org = %slug, "ai route for an unknown organization");
            session
                .send(Verbose::new(
                    format!("asterai: unknown organization {}", slug.replace(|c: char| c.is_control(), "?")),
                    1,
                ))
                .await?;
            session.send(SetVariable::new("ASTERAI_STATUS", "unknown_org")).await?;
            return Ok(());
        }
        Err(e) => {
            // An organization never seen since start-up, and no database to tell whether it
            // exists: let the dialplan route the call elsewhere.
            tracing::error!(org = %slug, "cannot look up an organization not seen since start-up, the database is unavailable: {e}");
            session.send(SetVariable::new("ASTERAI_STATUS", "unavailable")).await?;
            return Ok(());
        }
    };
    metrics::gauge!("asterai_conversations_active").increment(1.0);
    let result = Conversation::start(&inner, &session, org).await.converse().await;
    metrics::gauge!("asterai_conversations_active").decrement(1.0);
    result
}

/// How the conversation ended.
struct Ending {
    status: CallStatus,
    reason: String,
    outcome: Option<Outcome>,
}

/// One call's state.
struct Conversation<'a> {
    inner: &'a Inner,
    session: &'a AgiSession,
    recorder: Recorder,
    call_id: String,
    org: Org,
    /// The other party's number, for the do-not-call list.
    number: String,
    direction: Direction,
    values: BTreeMap<String, String>,
    system_prompt: String,
    history: Vec<Message>,
    analyses: Vec<TurnAnalysis>,
    started: Instant,
    turn: i32,
    recordings: u32,
    caller_spoke: bool,
    do_not_call: bool,
    transferred: bool,
    /// Asterisk's `AMD()` said an answering machine took the call (`amd=MACHINE`).
    machine: bool,
}

impl<'a> Conversation<'a> {
    /// Resolves the call record (adopting the dialer's) and the personalisation values.
    async fn start(inner: &'a Inner, session: &'a AgiSession, org: Org) -> Conversation<'a> {
        let env = session.env();
        let store = inner.publisher.store();
        let mut given_id = env.param("call_id").map(|s| s.into_owned()).filter(|s| !s.is_empty());
        // AMDSTATUS from the dialplan's AMD(): MACHINE, HUMAN, NOTSURE or HANGUP.
        let machine = env.param("amd").is_some_and(|status| status.eq_ignore_ascii_case("MACHINE"));
        let mut campaign_id = env.param("campaign").and_then(|c| c.parse::<i64>().ok());
        let mut contact_id = env.param("contact").and_then(|c| c.parse::<i64>().ok());
        // The dialer's call to adopt: this organization's only. Another organization's id is
        // never used; without a database the writer sorts it out (see `record`).
        let existing = match &given_id {
            Some(id) => match inner.lookup("the call", store.call(org.id, id)).await {
                Ok(Some(call)) => Some(call),
                Ok(None) => {
                    if let Ok(true) = inner.lookup("the call", store.call_id_taken(id)).await {
                        tracing::warn!(call_id = %id, org = %org.slug,
                            "the route's call_id belongs to another organization; the call goes on under a new id");
                        given_id = None;
                    }
                    None
                }
                Err(e) => {
                    tracing::warn!(call_id = %id, "{e}; the call starts without checking its call_id");
                    None
                }
            },
            None => None,
        };
        if let Some(id) = campaign_id {
            match inner.lookup("the campaign", store.campaign(org.id, id)).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(campaign = id, org = %org.slug, "the route's campaign is not the organization's; ignored");
                    campaign_id = None;
                }
                Err(e) => tracing::warn!(campaign = id, "{e}; the campaign is checked when the call is written"),
            }
        }
        let contact = match contact_id.or(existing.as_ref().and_then(|c| c.contact_id)) {
            Some(id) => match inner.lookup("the contact", store.contact(org.id, id)).await {
                Ok(Some(contact)) => Some(contact),
                Ok(None) => {
                    tracing::warn!(contact = id, org = %org.slug, "the route's contact is not the organization's; ignored");
                    contact_id = contact_id.filter(|c| *c != id);
                    None
                }
                Err(e) => {
                    tracing::warn!(contact = id, "{e}; the call is not personalised");
                    None
                }
            },
            None => None,
        };
        let mut values = contact.as_ref().map(|c| c.values()).unwrap_or_default();
        let c = &inner.settings.conversation;
        values.insert("agent_name".into(), c.agent_name.clone());
        values.insert("company".into(), if c.company.is_empty() { org.name.clone() } else { c.company.clone() });
        let contact_summary = values
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "agent_name" | "company"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut prompt_values = values.clone();
        prompt_values.insert("contact".into(), contact_summary);
        let system_prompt = render(&inner.settings.system_prompt, &prompt_values);

        let callerid = env.callerid().to_owned();
        let dnid = if env.dnid() == "unknown" { env.extension().to_owned() } else { env.dnid().to_owned() };
        let (call_id, direction, number, start) = match existing {
            Some(call) => {
                let number = if call.direction == Direction::Outbound { call.to.clone() } else { call.from.clone() };
                (call.id.clone(), call.direction, number, None)
            }
            None => {
                let direction = if campaign_id.is_some() || contact_id.is_some() {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                let (from, to) = match direction {
                    Direction::Inbound => (callerid.clone(), dnid),
                    Direction::Outbound => (dnid, contact.as_ref().map_or(callerid.clone(), |c| c.phone.clone())),
                };
                let number = if direction == Direction::Inbound { from.clone() } else { to.clone() };
                let id = given_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                let new = NewCall {
                    id: Some(id.clone()),
                    org_id: org.id,
                    direction,
                    from,
                    to,
                    channel: Some(env.channel().to_owned()),
                    campaign_id,
                    contact_id,
                };
                (id, direction, number, Some(new))
            }
        };
        let mut recorder = inner.records.recorder(org.id, call_id.clone());
        match start {
            Some(new) => recorder.push(Change::Start(new)).await,
            None => recorder.push(Change::Channel(env.channel().to_owned())).await,
        }
        tracing::info!(call_id = %call_id, org = %org.slug, ?direction, number = %crate::phone::mask(&number), "conversation started");
        Conversation {
            inner,
            session,
            recorder,
            call_id,
            org,
            number,
            direction,
            values,
            system_prompt,
            history: Vec::new(),
            analyses: Vec::new(),
            started: Instant::now(),
            turn: 0,
            recordings: 0,
            caller_spoke: false,
            do_not_call: false,
            transferred: false,
            machine,
        }
    }

    fn config(&self) -> &ConversationConfig {
        &self.inner.settings.conversation
    }

    fn phrase(&self, template: &str) -> String {
        render(template, &self.values)
    }

    /// Speaks a fixed phrase; returns false when the caller is gone.
    async fn say(&self, text: &str) -> bool {
        let spoken = speak::say(self.session, &self.inner.providers.voice, text, self.inner.settings.tts_timeout).await;
        !spoken.hung_up
    }

    async fn converse(mut self) -> HandlerResult {
        let ending = self.talk().await;
        self.finish(ending).await;
        Ok(())
    }

    /// Everything between answering and hanging up.
    async fn talk(&mut self) -> Ending {
        let session = self.session;
        match session.send(ChannelStatus::default()).await {
            Ok(ChannelState::Up) => {}
            Ok(_) => {
                if let Err(e) = session.send(Answer).await {
                    return self.gone(&e.to_string());
                }
            }
            Err(e) => return self.gone(&e.to_string()),
        }
        self.recorder.push(Change::Status { status: CallStatus::InProgress, reason: Some("answered".into()) }).await;
        let _ = session.send(SetVariable::new("ASTERAI_CALL_ID", self.call_id.clone())).await;

        if self.machine {
            return self.leave_voicemail().await;
        }

        // The greeting, as turn 0.
        let mut greeting = self.phrase(match self.direction {
            Direction::Inbound => &self.config().greeting_inbound,
            Direction::Outbound => &self.config().greeting_outbound,
        });
        if self.config().ai_disclosure {
            greeting = format!("{greeting} {}", self.phrase(&self.config().disclosure));
        }
        let spoken = speak::say(session, &self.inner.providers.voice, &greeting, self.inner.settings.tts_timeout).await;
        self.history.push(Message { role: Role::Assistant, content: greeting.clone() });
        self.store_turn(0, "", &what_was_heard(&spoken, &greeting), None, Latency::default()).await;
        if spoken.hung_up {
            return self.gone("caller hung up during the greeting");
        }

        let mut silent_in_row = 0;
        let mut failed_in_row = 0;
        loop {
            if session.is_hung_up() || session.is_closed() {
                return self.gone("caller hung up");
            }
            if session.wrap_up().is_cancelled() {
                return Ending {
                    status: CallStatus::Completed,
                    reason: "asterai is shutting down".into(),
                    outcome: None,
                };
            }
            if self.turn >= self.config().max_turns as i32 {
                let goodbye = self.phrase(&self.config().goodbye);
                self.say(&goodbye).await;
                return Ending {
                    status: CallStatus::Completed,
                    reason: format!("reached conversation.max_turns ({})", self.config().max_turns),
                    outcome: None,
                };
            }
            let elapsed = self.started.elapsed();
            let Some(left) =
                self.config().max_duration.0.checked_sub(elapsed).filter(|left| *left > Duration::from_secs(1))
            else {
                let goodbye = self.phrase(&self.config().goodbye);
                self.say(&goodbye).await;
                return Ending {
                    status: CallStatus::Completed,
                    reason: format!("reached conversation.max_duration ({})", self.config().max_duration),
                    outcome: None,
                };
            };

            // Listen.
            self.recordings += 1;
            let base =
                self.inner.settings.recordings_dir.join(format!("{}-{}", file_safe(&self.call_id), self.recordings));
            let max_ms = self.config().max_utterance.0.min(left).as_millis() as i64;
            let silence_s = self.config().silence.0.as_secs() as u32;
            let recording =
                session.send(RecordFile::wav(base.to_string_lossy().into_owned(), max_ms).silence(silence_s)).await;
            let recorded_at = Instant::now();
            let endpoint_ms = match &recording {
                Ok(r) => match r.end {
                    RecordEnd::Hangup => return self.gone("caller hung up"),
                    RecordEnd::Error { ref reason, code } => {
                        tracing::warn!(call_id = %self.call_id, "Asterisk could not record ({reason}, {code}); can it write to the recordings directory?");
                        failed_in_row += 1;
                        if failed_in_row >= self.config().max_failed_turns {
                            self.turn += 1;
                            let goodbye = self.phrase(&self.config().failure_goodbye);
                            self.store_turn(self.turn, "", &goodbye, None, Latency::default()).await;
                            return self.give_up(&format!("recording failed: {reason}")).await;
                        }
                        continue;
                    }
                    RecordEnd::Timeout { leftover_ms } if leftover_ms > 0 => silence_s * 1000,
                    _ => 0,
                },
                Err(e) if e.is_hangup() => return self.gone("caller hung up"),
                Err(e) => return self.gone(&format!("recording failed: {e}")),
            };
            let wav_path = base.with_extension("wav");
            let heard = read_recording(wav_path.clone(), self.config().silence_threshold_dbfs as f32).await;
            let Some(wav) = heard else {
                self.forget_recording(&base);
                silent_in_row += 1;
                match self.nothing_heard(silent_in_row, "the caller stayed silent").await {
                    Some(ending) => return ending,
                    None => continue,
                }
            };

            // Understand.
            let deadline = recorded_at + self.config().turn_budget.0;
            let request = SttRequest { wav, path: &wav_path, deadline };
            let stt_started = Instant::now();
            let waiting_after = self.inner.settings.waiting_after;
            let transcribed = tokio::select! {
                result = waiting_on(&mut self.recorder, "stt", waiting_after, self.inner.providers.stt.transcribe(request)) => result,
                _ = session.hung_up() => {
                    self.forget_recording(&base);
                    return self.gone("caller hung up while being transcribed");
                }
            };
            let stt_done = Instant::now();
            self.forget_recording(&base);
            let transcript = match transcribed {
                Ok(t) => t.text,
                Err(e) => {
                    tracing::warn!(call_id = %self.call_id, "speech-to-text failed: {e}");
                    failed_in_row += 1;
                    // The caller took a turn nobody understood. Its answer (the fallback, or the
                    // goodbye) is stored like any other: the transcript is what the caller heard.
                    self.turn += 1;
                    let giving_up = failed_in_row >= self.config().max_failed_turns;
                    let answer =
                        self.phrase(if giving_up { &self.config().failure_goodbye } else { &self.config().fallback });
                    self.store_turn(self.turn, "", &answer, None, Latency::default()).await;
                    if giving_up {
                        return self.give_up(&e.to_string()).await;
                    }
                    if !self.say(&answer).await {
                        return self.gone("caller hung up");
                    }
                    continue;
                }
            };
            if transcript.trim().is_empty() {
                silent_in_row += 1;
                match self.nothing_heard(silent_in_row, "nothing the caller said could be understood").await {
                    Some(ending) => return ending,
                    None => continue,
                }
            }
            silent_in_row = 0;
            self.caller_spoke = true;
            self.turn += 1;

            // Answer.
            let request = ResponseRequest {
                system: &self.system_prompt,
                history: &self.history,
                caller: &transcript,
                values: &self.values,
                deadline,
            };
            let llm_started = Instant::now();
            let stream = tokio::select! {
                stream = waiting_on(&mut self.recorder, "responder", waiting_after, self.inner.providers.responder.respond(request)) => stream,
                _ = session.hung_up() => return self.gone("caller hung up while the answer was prepared"),
            };
            let speech = match stream {
                Ok(stream) => {
                    speak::speak(
                        session,
                        &self.inner.providers.voice,
                        stream,
                        self.config().pipelining,
                        self.inner.settings.tts_timeout,
                    )
                    .await
                }
                Err(error) => speak::Speech { error: Some(error), ..Default::default() },
            };
            let answered = !speech.text.trim().is_empty() && !speech.heard.is_empty();
            let provider_error =
                speech.error.clone().or_else(|| (!answered).then(|| speech.tts_error.clone()).flatten());
            let mut agent_text = what_was_heard(&speech, speech.text.trim());
            if !answered && !speech.hung_up {
                // Nothing was heard: the caller gets the stock phrase from the cache, or the
                // goodbye (said by give_up below) when failures keep coming.
                failed_in_row += 1;
                if let Some(e) = &provider_error {
                    tracing::warn!(call_id = %self.call_id, "the answer could not be given: {e}");
                }
                let giving_up = failed_in_row >= self.config().max_failed_turns;
                agent_text =
                    self.phrase(if giving_up { &self.config().failure_goodbye } else { &self.config().fallback });
                if !giving_up && !speech.hung_up && !self.say(&agent_text).await {
                    return self.gone("caller hung up");
                }
            } else if answered {
                failed_in_row = 0;
            }
            let analysis = analysis::analyse(&self.inner.providers.rules, &transcript, speech.analysis.as_ref());
            let clock = TurnClock { endpoint_ms, recorded_at, stt_started, stt_done, llm_started };
            let latency = clock.latency(&speech, answered);
            self.history.push(Message { role: Role::User, content: transcript.clone() });
            // What the agent says next because of this turn belongs to its transcript too.
            let follow_up = match analysis.action {
                Action::Callback => Some(self.phrase(&self.config().callback_confirmation)),
                Action::DoNotCall => Some(self.phrase(&self.config().dnc_confirmation)),
                _ => None,
            };
            let said = match &follow_up {
                Some(phrase) => format!("{agent_text} {phrase}").trim().to_owned(),
                None => agent_text.clone(),
            };
            self.history.push(Message { role: Role::Assistant, content: said.clone() });
            self.analyses.push(analysis.clone());
            self.store_turn(self.turn, &transcript, &said, Some(&analysis), latency).await;
            if speech.hung_up {
                return self.gone("caller hung up while the agent spoke");
            }
            if !answered && failed_in_row >= self.config().max_failed_turns {
                return self
                    .give_up(&provider_error.map_or_else(|| "no answer could be spoken".to_owned(), |e| e.to_string()))
                    .await;
            }

            // Act.
            match analysis.action {
                Action::Continue => {}
                Action::End => {
                    return Ending {
                        status: CallStatus::Completed,
                        reason: format!("the conversation ended ({})", analysis.intent),
                        outcome: None,
                    };
                }
                Action::Callback => {
                    self.say(follow_up.as_deref().unwrap_or_default()).await;
                    return Ending {
                        status: CallStatus::Completed,
                        reason: "the caller asked to be called back".into(),
                        outcome: Some(Outcome::CallbackRequested),
                    };
                }
                Action::DoNotCall => {
                    self.record_do_not_call().await;
                    self.say(follow_up.as_deref().unwrap_or_default()).await;
                    return Ending {
                        status: CallStatus::Completed,
                        reason: "the caller asked not to be called again".into(),
                        outcome: Some(Outcome::DoNotCall),
                    };
                }
                Action::Transfer => {
                    if self.transfer().await {
                        return Ending {
                            status: CallStatus::Completed,
                            reason: "transferred to a person".into(),
                            outcome: Some(Outcome::Transferred),
                        };
                    }
                    let sorry = self.phrase(&self.config().transfer_unavailable);
                    if !self.say(&sorry).await {
                        return self.gone("caller hung up");
                    }
                }
            }
        }
    }

    /// An answering machine took the call (the dialplan waited for its greeting to end): leave
    /// `conversation.voicemail_message`, or hang up when it is empty. Nobody is recorded.
    async fn leave_voicemail(&mut self) -> Ending {
        let message = self.phrase(&self.config().voicemail_message);
        tracing::info!(call_id = %self.call_id, leave_message = !message.is_empty(), "an answering machine took the call (AMD)");
        if !message.is_empty() {
            let spoken =
                speak::say(self.session, &self.inner.providers.voice, &message, self.inner.settings.tts_timeout).await;
            self.store_turn(0, "", &what_was_heard(&spoken, &message), None, Latency::default()).await;
        }
        Ending {
            status: CallStatus::Completed,
            reason: if message.is_empty() {
                "answering machine (AMD): hung up without a message".into()
            } else {
                "answering machine (AMD): message left".into()
            },
            outcome: Some(Outcome::Voicemail),
        }
    }

    /// A turn with nothing to answer (silence, or an empty transcript): reprompt, or after
    /// `max_silent_turns` in a row say goodbye. `Some` ends the call.
    async fn nothing_heard(&self, silent_in_row: u32, reason: &str) -> Option<Ending> {
        if silent_in_row > self.config().max_silent_turns {
            let goodbye = self.phrase(&self.config().no_response_goodbye);
            self.say(&goodbye).await;
            let outcome = (!self.caller_spoke).then_some(Outcome::NoResponse);
            return Some(Ending { status: CallStatus::Completed, reason: reason.into(), outcome });
        }
        let reprompt = self.phrase(&self.config().reprompt);
        (!self.say(&reprompt).await).then(|| self.gone("caller hung up"))
    }

    /// Who ended a call that ended with "caller hung up`when`": the caller, Asterisk itself
    /// (stopping, or a hang-up from its console: no hang-up cause), or the connection to Asterisk
    /// (Asterisk crashed or was killed: no `HANGUP` at all).
    ///
    /// Asterisk writes `HANGUP` on its own line a few milliseconds after the reply that showed the
    /// hang-up (`result=-1`); it is awaited here, so that nothing refused on a dead channel (the
    /// final `HANGUP` command) is sent. `HANGUPCAUSE` is readable on a dead channel.
    async fn who_hung_up(&self, when: &str) -> String {
        let session = self.session;
        if !session.is_hung_up() && !session.is_closed() {
            let _ = tokio::time::timeout(HANGUP_GRACE, session.hung_up()).await;
        }
        if !session.is_hung_up() {
            let why = session.close_reason().unwrap_or_else(|| "no HANGUP from Asterisk".into());
            return format!(
                "the connection to Asterisk ended{when} without a hang-up (Asterisk stopped or crashed: {why})"
            );
        }
        match session.send(GetVariable::new("HANGUPCAUSE")).await {
            Ok(Some(cause)) if cause.trim() == "0" => format!(
                "Asterisk hung up the channel{when} with no hang-up cause (Asterisk is stopping, or an operator hung it up)"
            ),
            _ => format!("{CALLER_HUNG_UP}{when}"),
        }
    }

    /// The caller is gone (or the connection is).
    fn gone(&self, reason: &str) -> Ending {
        Ending { status: CallStatus::Completed, reason: reason.to_owned(), outcome: None }
    }

    /// Providers keep failing: apologise and end with a clear reason.
    async fn give_up(&self, reason: &str) -> Ending {
        tracing::warn!(call_id = %self.call_id, "ending the call after repeated failures: {reason}");
        let goodbye = self.phrase(&self.config().failure_goodbye);
        self.say(&goodbye).await;
        Ending {
            status: CallStatus::Completed,
            reason: format!("repeated failures: {reason}"),
            outcome: Some(Outcome::Failed),
        }
    }

    /// Adds the caller's number to the organization's do-not-call list, before the caller hears
    /// it confirmed.
    async fn record_do_not_call(&mut self) {
        self.do_not_call = true;
        match crate::phone::normalize(&self.number).or_else(|| crate::phone::e164(&self.number).ok()) {
            Some(number) => {
                self.recorder
                    .push(Change::DoNotCall {
                        org_id: self.org.id,
                        number,
                        reason: format!("asked during call {}", self.call_id),
                    })
                    .await;
                metrics::counter!("asterai_dnc_requests_total").increment(1);
            }
            None => tracing::warn!(call_id = %self.call_id, number = %self.number,
                "the caller asked not to be called again, but the number is not E.164 and cannot go on the do-not-call list"),
        }
    }

    async fn transfer(&mut self) -> bool {
        let Some(transferer) = &self.inner.transferer else {
            tracing::info!(call_id = %self.call_id, "the caller asked for a person, but no transfer target is configured");
            return false;
        };
        let request = TransferRequest {
            call_id: self.call_id.clone(),
            org_id: self.org.id,
            channel: self.session.env().channel().to_owned(),
            uniqueid: self.session.env().uniqueid().to_owned(),
        };
        match transferer.transfer(&request).await {
            Ok(()) => {
                self.transferred = true;
                true
            }
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, "transfer failed, the agent carries on: {e}");
                false
            }
        }
    }

    async fn store_turn(
        &mut self,
        turn: i32,
        caller: &str,
        agent: &str,
        analysis: Option<&TurnAnalysis>,
        latency: Latency,
    ) {
        if turn > 0 {
            for (stage, ms) in [
                ("endpoint", latency.endpoint),
                ("stt", latency.stt),
                ("llm_first", latency.llm_first),
                ("tts_first", latency.tts_first),
                ("total", latency.total),
            ] {
                metrics::histogram!("asterai_turn_latency_seconds", "stage" => stage).record(ms as f64 / 1000.0);
            }
            if let Some(us) = latency.overhead_us {
                metrics::histogram!("asterai_turn_overhead_seconds").record(us as f64 / 1e6);
            }
        }
        let new = NewTurn {
            call_id: self.call_id.clone(),
            turn,
            caller: caller.to_owned(),
            agent: agent.to_owned(),
            emotion: analysis.map(|a| a.emotion.clone()),
            intent: analysis.map(|a| a.intent.clone()),
            confidence: analysis.map(|a| a.confidence),
            latency,
        };
        self.recorder.push(Change::Turn(new)).await;
    }

    /// Deletes a recording (and a demo transcript beside it) once it is transcribed, in the
    /// background: it is not on the caller's critical path, and what a shutdown interrupts the
    /// end-of-call sweep removes.
    fn forget_recording(&self, base: &Path) {
        if self.inner.settings.keep_recordings {
            return;
        }
        let base = base.to_owned();
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(base.with_extension("wav"));
            let _ = std::fs::remove_file(base.with_extension("txt"));
        });
    }

    /// Finishes the record, tells the dialplan, and hangs up if the caller is still there.
    async fn finish(self, mut ending: Ending) {
        let session = self.session;
        if let Some(when) = ending.reason.strip_prefix(CALLER_HUNG_UP) {
            ending.reason = self.who_hung_up(when).await;
        }
        let outcome =
            ending.outcome.unwrap_or_else(|| analysis::outcome(&self.analyses, self.do_not_call, self.caller_spoke));
        let finish = FinishCall {
            status: ending.status,
            reason: Some(ending.reason.clone()),
            outcome: Some(outcome),
            outcome_reason: Some(ending.reason.clone()),
            emotion: self.analyses.last().map(|a| a.emotion.clone()),
            intent_score: analysis::intent_score(&self.analyses),
        };
        let mut recorder = self.recorder;
        recorder.push(Change::Finish(finish)).await;
        metrics::counter!("asterai_calls_finished_total", "status" => ending.status.as_str(), "outcome" => outcome.as_str()).increment(1);
        tracing::info!(call_id = %self.call_id, turns = self.turn, outcome = outcome.as_str(), reason = %ending.reason, "conversation ended");
        if !session.is_closed() {
            let _ = session.send(SetVariable::new("ASTERAI_OUTCOME", outcome.as_str())).await;
            let _ = session.send(SetVariable::new("ASTERAI_STATUS", "ok")).await;
            let hang_up = self.inner.settings.conversation.hangup_at_end && !self.transferred && !session.is_hung_up();
            if hang_up {
                let _ = session.send(Hangup::default()).await;
            }
        }
        if !self.inner.settings.keep_recordings {
            remove_call_recordings(&self.inner.settings.recordings_dir, &file_safe(&self.call_id)).await;
        }
        // The writer finishes the record on its own; the channel does not wait for it.
        recorder.close();
    }
}

/// What the caller heard of `text`: all of it, or after a hang-up (or a sentence text-to-speech
/// could not say) the sentences played, the last one perhaps in part. The transcript is what
/// the caller heard.
fn what_was_heard(speech: &speak::Speech, text: &str) -> String {
    if speech.hung_up || speech.tts_failures > 0 { speech.heard.join(" ") } else { text.to_owned() }
}

/// How the reasons of calls that ended because the channel went away begin.
const CALLER_HUNG_UP: &str = "caller hung up";

/// How long to wait for Asterisk's `HANGUP` line after a reply that showed the hang-up.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// When a turn's stages began and ended.
struct TurnClock {
    endpoint_ms: u32,
    recorded_at: Instant,
    stt_started: Instant,
    stt_done: Instant,
    llm_started: Instant,
}

impl TurnClock {
    fn latency(&self, speech: &speak::Speech, answered: bool) -> Latency {
        let ms = |from: Instant, to: Option<Instant>| {
            to.map_or(0, |to| to.saturating_duration_since(from).as_millis() as u32)
        };
        let first_sentence = speech.first_sentence_at.unwrap_or(self.stt_done);
        // The critical path from the recording's return to the first STREAM FILE, less the time
        // spent waiting on providers along it: what is left is asterai's own work.
        let overhead_us = match (answered && speech.tts_failures == 0, speech.first_sentence_at, speech.first_play_at) {
            (true, Some(sentence), Some(play)) => {
                let path = play.saturating_duration_since(self.recorded_at);
                let waited = self.stt_done.saturating_duration_since(self.stt_started)
                    + sentence.saturating_duration_since(self.llm_started)
                    + speech.first_tts_provider.unwrap_or_default();
                Some(path.saturating_sub(waited).as_micros().min(u32::MAX as u128) as u32)
            }
            _ => None,
        };
        Latency {
            endpoint: self.endpoint_ms,
            stt: ms(self.recorded_at, Some(self.stt_done)),
            llm_first: ms(self.stt_done, speech.first_sentence_at),
            tts_first: ms(first_sentence, speech.first_audio_at),
            total: self.endpoint_ms + ms(self.recorded_at, speech.first_play_at),
            overhead_us,
        }
    }
}

/// Reads a recording and decides whether it holds speech, on the blocking pool (file I/O and
/// decoding are on the turn's critical path). Returns the WAV to transcribe (8 kHz mono 16-bit;
/// re-encoded only when its header is unfinished, so it cannot upset a provider), or `None` for
/// silence and unreadable files.
async fn read_recording(path: PathBuf, threshold_dbfs: f32) -> Option<bytes::Bytes> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).ok()?;
        let samples = audio::decode_wav(&bytes).ok()?;
        if audio::is_silence(&samples, threshold_dbfs) {
            return None;
        }
        // A recording Asterisk finished goes out as it is; anything else is re-encoded.
        Some(if audio::is_native_wav(&bytes) { bytes.into() } else { audio::encode_wav(&samples).into() })
    })
    .await
    .ok()
    .flatten()
}

/// Sweeps a call's recordings left behind (an error between recording and transcription).
async fn remove_call_recordings(dir: &Path, prefix: &str) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return };
    let prefix = format!("{prefix}-");
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}
