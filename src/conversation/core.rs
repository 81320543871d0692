//! The conversation core: one call's turns, whichever media path carries its audio.
//!
//! The core knows nothing of AGI commands or audio frames. A media path ([`MediaPath`]: the
//! FastAGI file loop of [`super::agi`], or the ARI media stream) turns the caller's
//! audio into [`Heard`] ("the caller said X", "the caller was silent", "the caller hung up")
//! and speaks what the core decides ("say Y", a fixed phrase or the responder's streamed
//! answer). The core owns everything else: the call record (adopting the dialer's), the greeting
//! and the AI disclosure, the voicemail of an answering machine, the responder, each turn's
//! analysis, do-not-call requests, transfer, the limits (turns, duration, silent and failed
//! turns), the outcome, and every write of the call's record and feed events ([`super::record`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::analysis::{self, TurnAnalysis};
use super::call_recording::{self, Collect, RecordingPlan, RecordingStart};
use super::record::{Change, Recorder};
use super::speak::Speech;
use super::tools::{HttpTool, callback_time, valid_dtmf};
use super::{Inner, Profile, TransferRequest, waiting_on};
use crate::config::ConversationConfig;
use crate::config::conversation::TOOL_FILLER_AFTER;
use crate::speech::llm::{Action, ChunkStream, Message, ResponseRequest, Role};
use crate::speech::rules::render;
use crate::speech::{BoxFuture, SpeechError};
use crate::store::{
    CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Org, Outcome, RecordingStatus, RecordingVia, ToolUse,
};

/// The parameters of the `ai` route (`ai?org=acme&campaign=7&contact=12&call_id=…&amd=…`), read
/// from the FastAGI script or the Stasis argument by the same code ([`crate::agi::env`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteParams {
    pairs: Vec<(String, String)>,
}

impl RouteParams {
    /// The parameters of a query string (what follows `?`).
    pub fn from_query(query: &str) -> RouteParams {
        RouteParams {
            pairs: crate::agi::env::query_params(query).map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        }
    }

    /// The route and parameters of a script such as `ai?org=acme` (a Stasis argument).
    pub fn from_script(script: &str) -> (String, RouteParams) {
        let (route, query) = crate::agi::env::split_script(script);
        (route.to_owned(), RouteParams::from_query(query))
    }

    /// Sets `name` (replacing every earlier value).
    pub fn set(&mut self, name: &str, value: &str) {
        self.pairs.retain(|(key, _)| key != name);
        self.pairs.push((name.to_owned(), value.to_owned()));
    }

    /// The first parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The first parameter called `name`, when not empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|value| !value.is_empty())
    }
}

/// What a media path knows of a call when it starts: the route's parameters and the channel.
#[derive(Debug, Clone, Default)]
pub struct CallStart {
    pub params: RouteParams,
    /// The caller id number of the channel.
    pub caller_id: String,
    /// The number dialled (the DNID, else the extension).
    pub dialed: String,
    /// The Asterisk channel name.
    pub channel: String,
    /// The channel's unique id, which ARI uses as the channel id.
    pub uniqueid: String,
}

/// What the media path heard when the core listened.
pub enum Heard {
    /// The caller spoke; the utterance still has to be transcribed.
    Utterance(Utterance),
    /// Nothing but silence.
    Silence,
    /// Listening failed (the reason says how); counts as a failed turn.
    Failed(String),
    /// The caller hung up.
    HungUp,
    /// The call cannot go on (the reason says why).
    Gone(String),
}

/// A transcription the media path prepared; it runs when called with the turn's deadline.
pub type Transcribe = Box<dyn FnOnce(Instant) -> BoxFuture<'static, Result<String, SpeechError>> + Send>;

/// One utterance of the caller.
pub struct Utterance {
    /// The silence that ended it, in milliseconds.
    pub endpoint_ms: u32,
    /// When the media path knew the caller had finished (the recording returned, the endpoint
    /// was reached): the turn's clock starts here.
    pub ended_at: Instant,
    /// When the caller's last voiced audio arrived, if the media path saw it (streaming).
    pub last_voice_at: Option<Instant>,
    pub transcribe: Transcribe,
}

/// A media path: how the core hears the caller and speaks to them.
pub trait MediaPath: Send + Sync {
    /// The call runs `profile`'s agent: speak with its voice and listen with its settings.
    /// Called once, before [`MediaPath::answer`].
    fn use_profile(&mut self, profile: &Arc<Profile>);
    /// Answers the channel if it is not up yet. An error ends the call, with it as the reason.
    fn answer(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// The call's id is settled (the dialplan may want it).
    fn call_id(&mut self, call_id: &str) -> impl Future<Output = ()> + Send;
    /// Speaks a fixed phrase (greeting, reprompt, goodbye…).
    fn say(&self, text: &str) -> impl Future<Output = Speech> + Send;
    /// Speaks the responder's answer as it streams in.
    fn speak(&self, answer: ChunkStream) -> impl Future<Output = Speech> + Send;
    /// Listens for the caller's next utterance, for at most `limit`.
    fn listen(&mut self, limit: Duration) -> impl Future<Output = Heard> + Send;
    /// Resolves when the caller hangs up (or the connection ends).
    fn hung_up(&self) -> impl Future<Output = ()> + Send;
    /// The caller or the connection is gone.
    fn is_gone(&self) -> bool;
    /// asterai is shutting down: the call should end at the next turn.
    fn is_wrapping_up(&self) -> bool;
    /// The reason of a call that ended because the channel went away, `when` describing the
    /// moment (" during the greeting", …): the caller, Asterisk, or the connection to it.
    fn who_hung_up(&self, when: &str) -> impl Future<Output = String> + Send;
    /// Sends DTMF `digits` on the caller's channel (already checked: `0-9*#A-Dw`); the error
    /// says why not.
    fn send_dtmf(&self, digits: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// The call is over: tell the dialplan the outcome, and hang up when `hang_up` (and the
    /// caller is still there). A whole-call recording still running is stopped.
    fn finish(&mut self, outcome: Outcome, hang_up: bool) -> impl Future<Output = ()> + Send;
    /// Which whole-call recording this path makes (MixMonitor, the bridge's).
    fn recording_via(&self) -> RecordingVia;
    /// Starts recording the whole call as `name` (asterai's own name, no extension) into `dir`;
    /// returns how to collect the file once the call ended, or why it could not start.
    fn start_recording(
        &mut self,
        name: &str,
        dir: &std::path::Path,
    ) -> impl Future<Output = Result<Collect, String>> + Send;
    /// Tells the channel (`ASTERAI_RECORDING`) and Asterisk's log where recording stands:
    /// `on`, `refused` or `failed`, with why.
    fn recording_note(&self, state: &str, why: &str) -> impl Future<Output = ()> + Send;
    /// The call is live as `call` (registered for the supervisors' console): while it is taken
    /// over, what the path hears while the barging supervisor speaks is taken for silence (the
    /// path hears the supervisor mixed into the line).
    fn supervised_as(&mut self, call: &Arc<super::live::LiveCall>) {
        let _ = call;
    }
    /// Whether a [`MediaPath::listen`] may be dropped midway without losing what the caller
    /// says next (the streaming ear keeps hearing; an AGI `RECORD FILE` runs on in Asterisk, and
    /// what it records is lost). The give-back waits for a listen that is not.
    fn listen_cancel_safe(&self) -> bool {
        false
    }
    /// The path's name for supervisors: `agi` or `stream`.
    fn kind(&self) -> &'static str {
        "agi"
    }
    /// The call's mixing bridge, when the path has one (streaming): a supervisor's barge joins
    /// it rather than whispering into the caller's channel.
    fn bridge(&self) -> Option<&str> {
        None
    }
    /// Holds the caller (`on`: music on hold, nothing heard or answered) or ends the hold, for
    /// a supervisor who paused the AI. The error says why the music could not start or stop.
    fn hold(&self, on: bool) -> impl Future<Output = Result<(), String>> + Send {
        async move {
            let _ = on;
            Err("this media path cannot hold the caller".to_owned())
        }
    }
}

/// How the conversation ended.
pub(super) struct Ending {
    status: CallStatus,
    reason: String,
    outcome: Option<Outcome>,
}

impl Ending {
    pub(super) fn completed(reason: impl Into<String>, outcome: Option<Outcome>) -> Ending {
        Ending { status: CallStatus::Completed, reason: reason.into(), outcome }
    }
}

/// How the caller's words said while a supervisor had the call begin, in the stored turns and the
/// model's history: the caller talked with the supervisor (whose voice the recording may hold
/// too), not with the AI.
pub const WITH_SUPERVISOR: &str = "(with the supervisor)";

/// A supervisor's words to the caller while they had the call (`supervisor`: their name), as
/// stored (the agent's side of a turn of its own) and in the model's history:
/// `(supervisor alice) Let me check that for you.`
pub fn said_by_supervisor(supervisor: &str, text: &str) -> String {
    format!("{} {}", supervisor_mark(supervisor), text.trim())
}

/// The mark of a supervisor's words: `(supervisor alice)`.
fn supervisor_mark(supervisor: &str) -> String {
    format!("(supervisor {supervisor})")
}

/// How long the core waits, after each thing the caller said to the supervisor, for the
/// supervisor's words before it to be transcribed (the AGI path records nothing meanwhile).
const SUPERVISOR_WORDS_WAIT: Duration = Duration::from_millis(1500);
/// How long the give-back waits for the supervisor's last words to be transcribed.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

/// How the reasons of calls that ended because the channel went away begin.
pub const CALLER_HUNG_UP: &str = "caller hung up";

/// One call's state.
pub(super) struct Conversation<'a, M: MediaPath> {
    inner: &'a Inner,
    /// The agent the call runs, with its settings and providers.
    profile: Arc<Profile>,
    media: M,
    recorder: Recorder,
    call_id: String,
    org: Org,
    /// The other party's number, for the do-not-call list.
    number: String,
    direction: Direction,
    channel: String,
    uniqueid: String,
    values: BTreeMap<String, String>,
    system_prompt: String,
    history: Vec<Message>,
    analyses: Vec<TurnAnalysis>,
    started: Instant,
    turn: i32,
    caller_spoke: bool,
    do_not_call: bool,
    transferred: bool,
    /// Asterisk's `AMD()` said an answering machine took the call (`amd=MACHINE`).
    machine: bool,
    /// Whom `schedule_callback` books: the call's contact of a campaign.
    callback: Option<CallbackTarget>,
    /// A callback was booked: the call's outcome unless something else decides it.
    callback_booked: bool,
    /// What the media path heard in a listen the give-back did not cut short (an AGI recording
    /// runs to its end): the next turn's, once the AI has the call again. (In a mutex so that
    /// the conversation is `Sync`: an utterance is only `Send`.)
    carried: std::sync::Mutex<Option<Heard>>,
    /// The agent's first audio was recorded (answer → first audio, for abandonment).
    heard_agent: bool,
    /// Whether and how the call is recorded whole (see [`super::call_recording`]).
    recording: RecordingPlan,
    /// The whole-call recording, once started.
    active_recording: Option<call_recording::Active>,
    /// The call's place among the live calls, which supervisors act on.
    live: super::live::Registration,
}

/// The contact a callback is booked for.
#[derive(Debug, Clone)]
struct CallbackTarget {
    contact_id: i64,
    campaign_id: i64,
    /// The contact's timezone, if known (else the campaign's).
    timezone: Option<String>,
}

/// Whether and how a call is recorded: the campaign's `recording` over the agent's, and whether
/// the contact's region needs every party's consent. A campaign the database cannot read
/// leaves the agent's choice.
#[allow(clippy::too_many_arguments)]
async fn recording_plan(
    inner: &Inner,
    org: &Org,
    profile: &Profile,
    campaign: Option<crate::store::campaigns::Campaign>,
    campaign_id: Option<i64>,
    existing_campaign: &Option<i64>,
    contact: Option<&crate::store::contacts::Contact>,
    number: &str,
) -> RecordingPlan {
    let agent = profile.settings.recording.clone();
    let campaign = match (campaign, campaign_id.or(*existing_campaign)) {
        (Some(campaign), _) => Some(campaign),
        (None, Some(id)) => match inner.lookup("the campaign", inner.publisher.store().campaign(org.id, id)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(campaign = id, "{e}; the call is recorded as its agent says");
                None
            }
        },
        (None, None) => None,
    };
    let spec = match campaign.map(|c| crate::dialer::campaign::CampaignSettings::from_json(&c.settings)) {
        Some(Ok(settings)) => settings.recording.over(&agent),
        Some(Err(e)) => {
            tracing::warn!(org = %org.slug, "{e}; the call is recorded as its agent says");
            agent
        }
        None => agent,
    };
    let place = crate::dialer::compliance::Place::of(
        number,
        contact.and_then(|c| c.state.as_deref()),
        None,
        chrono_tz::Tz::UTC,
    );
    let consent_required = place
        .region
        .as_deref()
        .is_some_and(|region| inner.settings.compliance.for_org(&org.slug).needs_all_party_consent(region));
    RecordingPlan { spec, region: place.region, consent_required }
}

impl<'a, M: MediaPath> Conversation<'a, M> {
    /// Resolves the call record (adopting the dialer's) and the personalisation values.
    pub(super) async fn start(inner: &'a Inner, mut media: M, call: CallStart, org: Org) -> Conversation<'a, M> {
        let params = &call.params;
        let store = inner.publisher.store();
        let profile = inner.profile(&org, params).await;
        media.use_profile(&profile);
        let mut given_id = params.non_empty("call_id").map(str::to_owned);
        // AMDSTATUS from the dialplan's AMD(): MACHINE, HUMAN, NOTSURE or HANGUP.
        let machine = params.get("amd").is_some_and(|status| status.eq_ignore_ascii_case("MACHINE"));
        let mut campaign_id = params.get("campaign").and_then(|c| c.parse::<i64>().ok());
        let mut contact_id = params.get("contact").and_then(|c| c.parse::<i64>().ok());
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
        let mut campaign = None;
        if let Some(id) = campaign_id {
            match inner.lookup("the campaign", store.campaign(org.id, id)).await {
                Ok(Some(found)) => campaign = Some(found),
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
        let callback = contact.as_ref().and_then(|c| {
            Some(CallbackTarget {
                contact_id: c.id,
                campaign_id: campaign_id.or(c.campaign_id)?,
                timezone: c.timezone.clone().filter(|t| !t.trim().is_empty()),
            })
        });
        let mut values = contact.as_ref().map(|c| c.values()).unwrap_or_default();
        let c = &profile.settings.conversation;
        values.insert("agent_name".into(), c.agent_name.clone());
        values.insert("company".into(), if c.company.is_empty() { org.name.clone() } else { c.company.clone() });
        values.insert("org_name".into(), org.name.clone());
        values.insert("local_time".into(), local_time(contact.as_ref().and_then(|c| c.timezone.as_deref())));
        let contact_summary = values
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "agent_name" | "company" | "org_name" | "local_time"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut prompt_values = values.clone();
        prompt_values.insert("contact".into(), contact_summary);
        let system_prompt_template = profile.settings.system_prompt.clone();

        let callerid = call.caller_id.clone();
        let existing_to = existing.as_ref().map(|e| e.to.clone());
        let existing_campaign =
            existing.as_ref().and_then(|e| e.campaign_id).or(contact.as_ref().and_then(|c| c.campaign_id));
        let (call_id, direction, number, start) = match existing {
            Some(existing) => {
                let number =
                    if existing.direction == Direction::Outbound { existing.to.clone() } else { existing.from.clone() };
                (existing.id.clone(), existing.direction, number, None)
            }
            None => {
                let direction = if campaign_id.is_some() || contact_id.is_some() {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                let (from, to) = match direction {
                    Direction::Inbound => (callerid.clone(), call.dialed.clone()),
                    Direction::Outbound => {
                        (call.dialed.clone(), contact.as_ref().map_or(callerid.clone(), |c| c.phone.clone()))
                    }
                };
                let number = if direction == Direction::Inbound { from.clone() } else { to.clone() };
                let id = given_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                let new = NewCall {
                    id: Some(id.clone()),
                    org_id: org.id,
                    direction,
                    from,
                    to,
                    channel: Some(call.channel.clone()),
                    campaign_id,
                    contact_id,
                };
                (id, direction, number, Some(new))
            }
        };
        let called = match (&start, &existing_to) {
            (Some(new), _) => new.to.clone(),
            (None, Some(to)) => to.clone(),
            (None, None) => call.dialed.clone(),
        };
        values.insert("called_number".into(), called.clone());
        prompt_values.insert("called_number".into(), called);
        let system_prompt = render(&system_prompt_template, &prompt_values);
        let recording =
            recording_plan(inner, &org, &profile, campaign, campaign_id, &existing_campaign, contact.as_ref(), &number)
                .await;
        let mut recorder = inner.records.recorder(org.id, call_id.clone());
        match start {
            Some(new) => recorder.push(Change::Start(new)).await,
            None => recorder.push(Change::Channel(call.channel.clone())).await,
        }
        if let Some((name, version)) = &profile.agent {
            recorder.push(Change::Agent { name: name.clone(), version: *version }).await;
        }
        let agent = profile.agent.as_ref().map_or_else(|| "built-in".to_owned(), |(n, v)| format!("{n} v{v}"));
        tracing::info!(call_id = %call_id, org = %org.slug, ?direction, number = %crate::phone::mask(&number), %agent, "conversation started");
        let live = inner.live.register(&call_id, org.id, &call.uniqueid, media.kind());
        if let Some(bridge) = media.bridge().filter(|b| !b.is_empty()) {
            live.call().set_bridge(bridge);
        }
        live.call().set_stt(profile.providers.stt.clone());
        media.supervised_as(live.call());
        Conversation {
            inner,
            profile,
            media,
            recorder,
            call_id,
            org,
            number,
            direction,
            channel: call.channel,
            uniqueid: call.uniqueid,
            values,
            system_prompt,
            history: Vec::new(),
            analyses: Vec::new(),
            started: Instant::now(),
            turn: 0,
            caller_spoke: false,
            do_not_call: false,
            transferred: false,
            machine,
            callback,
            callback_booked: false,
            carried: std::sync::Mutex::new(None),
            heard_agent: false,
            recording,
            active_recording: None,
            live,
        }
    }

    fn config(&self) -> &ConversationConfig {
        &self.profile.settings.conversation
    }

    fn phrase(&self, template: &str) -> String {
        render(template, &self.values)
    }

    /// Records when the agent's first audio started (the first STREAM FILE on the AGI path,
    /// the first frame sent on the streaming path), once per call: a live person who waits more
    /// than 2 s for it, or hangs up before it, is an abandoned call (see `dialer::compliance`).
    async fn first_audio(&mut self, speech: &Speech) {
        let Some(played) = speech.first_play_at.filter(|_| !self.heard_agent) else { return };
        self.heard_agent = true;
        let ago = chrono::Duration::from_std(played.elapsed()).unwrap_or_default();
        let at = chrono::Utc::now() - ago;
        let at = chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
        self.recorder.push(Change::FirstAudio(at)).await;
    }

    /// Speaks a fixed phrase; returns false when the caller is gone.
    async fn say(&self, text: &str) -> bool {
        !self.media.say(text).await.hung_up
    }

    /// Starts the whole-call recording when the call is recorded: the consent announcement
    /// first (mandatory where the contact's region needs every party's consent), then the
    /// recording. Returns an ending when the caller hung up during the announcement.
    async fn begin_recording(&mut self) -> Option<Ending> {
        let plan = self.recording.clone();
        if !plan.spec.records() {
            return None;
        }
        let announcement = plan.spec.announcement().map(|text| self.phrase(text));
        let mut announced = false;
        if let Some(text) = &announcement {
            let spoken = self.media.say(text).await;
            self.first_audio(&spoken).await;
            if spoken.hung_up {
                return Some(self.gone("caller hung up during the recording's consent announcement"));
            }
            announced = spoken.played > 0 && spoken.tts_failures == 0;
        }
        let name = call_recording::recording_name(&self.call_id);
        let dir = self.inner.settings.call_recordings_dir.clone();
        let path = dir.join(format!("{name}.wav"));
        let mut start = RecordingStart {
            via: self.media.recording_via(),
            name: name.clone(),
            path: path.to_string_lossy().into_owned(),
            format: "wav".into(),
            region: plan.region.clone(),
            consent_required: plan.consent_required,
            consent_announced: announced,
            status: RecordingStatus::Recording,
            reason: None,
        };
        if plan.consent_required && !announced {
            let region = plan.region.as_deref().unwrap_or("the contact's region");
            let why = match &announcement {
                None => format!(
                    "{region} requires every party's consent to record and the agent (or campaign) has no recording.consent_announcement; the call is not recorded"
                ),
                Some(_) => format!(
                    "{region} requires every party's consent to record and the consent announcement could not be played; the call is not recorded"
                ),
            };
            tracing::warn!(call_id = %self.call_id, org = %self.org.slug, "{why}");
            self.media.recording_note("refused", &why).await;
            start.status = RecordingStatus::Refused;
            start.reason = Some(why);
            self.recorder.push(Change::RecordingStarted(start)).await;
            return None;
        }
        // The row first: a file never exists without its row.
        self.recorder.push(Change::RecordingStarted(start)).await;
        match self.media.start_recording(&name, &dir).await {
            Ok(collect) => {
                tracing::info!(call_id = %self.call_id, recording = %name, consent_announced = announced, "recording the call");
                self.media.recording_note("on", &name).await;
                self.active_recording = Some(call_recording::Active { name, collect });
            }
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, recording = %name, "cannot record the call: {e}");
                self.media.recording_note("failed", &e).await;
                let failed = call_recording::RecordingResult {
                    name,
                    status: RecordingStatus::Failed,
                    reason: Some(e),
                    size_bytes: None,
                    duration_ms: None,
                };
                self.recorder.push(Change::RecordingEnded(failed)).await;
            }
        }
        None
    }

    /// Holds the call from answering to the end, then finishes it.
    pub(super) async fn converse(mut self) {
        let ending = self.talk().await;
        self.finish(ending).await;
    }

    /// Everything between answering and hanging up.
    async fn talk(&mut self) -> Ending {
        if let Err(e) = self.media.answer().await {
            return self.gone(&e);
        }
        self.recorder.push(Change::Status { status: CallStatus::InProgress, reason: Some("answered".into()) }).await;
        self.media.call_id(&self.call_id).await;

        if self.machine {
            return self.leave_voicemail().await;
        }
        if let Some(ending) = self.begin_recording().await {
            return ending;
        }

        // The greeting, as turn 0.
        let mut greeting = self.phrase(match self.direction {
            Direction::Inbound => &self.config().greeting_inbound,
            Direction::Outbound => &self.config().greeting_outbound,
        });
        if self.config().ai_disclosure {
            greeting = format!("{greeting} {}", self.phrase(&self.config().disclosure));
        }
        let spoken = self.media.say(&greeting).await;
        self.first_audio(&spoken).await;
        self.history.push(Message::new(Role::Assistant, greeting.clone()));
        self.store_turn(0, "", &what_was_heard(&spoken, &greeting), None, Latency::default(), false).await;
        if spoken.hung_up {
            return self.gone("caller hung up during the greeting");
        }

        let mut silent_in_row = 0;
        let mut failed_in_row = 0;
        loop {
            if self.media.is_gone() {
                return self.gone("caller hung up");
            }
            if self.media.is_wrapping_up() {
                return Ending::completed("asterai is shutting down", None);
            }
            if self.turn >= self.config().max_turns as i32 {
                let goodbye = self.phrase(&self.config().goodbye);
                self.say(&goodbye).await;
                return Ending::completed(
                    format!("reached conversation.max_turns ({})", self.config().max_turns),
                    None,
                );
            }
            let elapsed = self.started.elapsed();
            let Some(left) =
                self.config().max_duration.0.checked_sub(elapsed).filter(|left| *left > Duration::from_secs(1))
            else {
                let goodbye = self.phrase(&self.config().goodbye);
                self.say(&goodbye).await;
                return Ending::completed(
                    format!("reached conversation.max_duration ({})", self.config().max_duration),
                    None,
                );
            };

            match self.live.call().state() {
                super::live::AiState::Paused => match self.hold().await {
                    Some(ending) => return ending,
                    None => continue,
                },
                super::live::AiState::TakenOver => match self.taken_over().await {
                    Some(ending) => return ending,
                    None => continue,
                },
                super::live::AiState::Active => {}
            }

            // Listen (a supervisor's pause or take-over stops it at once), unless the give-back
            // left what was heard.
            let live = self.live.call().clone();
            let carried = self.carried.get_mut().unwrap_or_else(|e| e.into_inner()).take();
            let heard = match carried {
                Some(heard) => heard,
                None => tokio::select! {
                    heard = self.media.listen(left) => heard,
                    _ = live.interrupted() => continue,
                },
            };
            let utterance = match heard {
                Heard::Utterance(utterance) => utterance,
                Heard::HungUp => return self.gone("caller hung up"),
                Heard::Gone(reason) => return self.gone(&reason),
                Heard::Failed(reason) => {
                    failed_in_row += 1;
                    if failed_in_row >= self.config().max_failed_turns {
                        self.turn += 1;
                        let goodbye = self.phrase(&self.config().failure_goodbye);
                        self.store_turn(self.turn, "", &goodbye, None, Latency::default(), false).await;
                        return self.give_up(&reason).await;
                    }
                    continue;
                }
                Heard::Silence => {
                    // No reprompt over a barging supervisor.
                    if let Some(ending) = self.supervisor_quiet().await {
                        return ending;
                    }
                    silent_in_row += 1;
                    match self.nothing_heard(silent_in_row, "the caller stayed silent").await {
                        Some(ending) => return ending,
                        None => continue,
                    }
                }
            };
            let Utterance { endpoint_ms, ended_at, last_voice_at, transcribe } = utterance;

            // Understand.
            let deadline = ended_at + self.config().turn_budget.0;
            let stt_started = Instant::now();
            let waiting_after = self.inner.settings.waiting_after;
            let transcribed = tokio::select! {
                result = waiting_on(&mut self.recorder, "stt", waiting_after, transcribe(deadline)) => result,
                _ = self.media.hung_up() => return self.gone("caller hung up while being transcribed"),
            };
            let stt_done = Instant::now();
            let transcript = match transcribed {
                Ok(text) => text,
                Err(e) => {
                    tracing::warn!(call_id = %self.call_id, "speech-to-text failed: {e}");
                    failed_in_row += 1;
                    // The caller took a turn nobody understood. Its answer (the fallback, or the
                    // goodbye) is stored like any other: the transcript is what the caller heard.
                    self.turn += 1;
                    let giving_up = failed_in_row >= self.config().max_failed_turns;
                    let answer =
                        self.phrase(if giving_up { &self.config().failure_goodbye } else { &self.config().fallback });
                    self.store_turn(self.turn, "", &answer, None, Latency::default(), false).await;
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
            // Taken over while the caller's words were transcribed: they were said to the
            // supervisor, and the AI does not answer them.
            if self.live.call().state() == super::live::AiState::TakenOver {
                self.with_supervisor(&transcript).await;
                continue;
            }
            // A supervisor barging in is speaking: the AI lets them finish.
            if let Some(ending) = self.supervisor_quiet().await {
                return ending;
            }
            self.turn += 1;

            // Answer: the model speaks; while it calls tools that report back (an HTTP tool,
            // schedule_callback, send_dtmf) they run, and it is asked again with their results.
            let llm_started = Instant::now();
            let mut speech = Speech::default();
            let mut pending: Vec<Message> = Vec::new();
            let mut tool_uses: Vec<ToolUse> = Vec::new();
            let mut filler_said = false;
            let mut tool_hang_up = false;
            let mut last_heard = String::new();
            let mut rounds = 0;
            let (tools, last_round) = loop {
                self.take_coaching();
                let request = ResponseRequest {
                    system: &self.system_prompt,
                    history: &self.history,
                    caller: &transcript,
                    pending: &pending,
                    values: &self.values,
                    tools: &self.profile.settings.tools,
                    deadline: if rounds == 0 { deadline } else { Instant::now() + self.config().turn_budget.0 },
                };
                let responder = self.profile.providers.responder.clone();
                let stream = tokio::select! {
                    stream = waiting_on(&mut self.recorder, "responder", waiting_after, responder.respond(request)) => stream,
                    _ = self.media.hung_up() => {
                        if rounds == 0 {
                            return self.gone("caller hung up while the answer was prepared");
                        }
                        speech.hung_up = true;
                        break (ToolDecision::None, None);
                    }
                };
                let round = match stream {
                    Ok(stream) => self.media.speak(stream).await,
                    Err(error) => Speech { error: Some(error), ..Default::default() },
                };
                let heard = what_was_heard(&round, round.text.trim());
                last_heard.clone_from(&heard);
                let calls = round.tool_calls.clone();
                let (decision, uses, runs) = ToolDecision::read(&self.call_id, &calls, &self.profile.settings);
                let first_use = tool_uses.len();
                tool_uses.extend(uses);
                let stop = round.hung_up || round.interrupted || round.error.is_some();
                speech.absorb(round);
                // The tools called before a deciding one run (a callback booked, then the call
                // ended); a hang-up cancels the one running and the ones after it.
                for (index, run) in runs {
                    let slot = first_use + index;
                    if speech.hung_up {
                        tool_uses[slot].result = cancelled();
                        continue;
                    }
                    let (result, hung_up) = self.run_tool(run, &calls[index], &mut filler_said, &mut speech).await;
                    tool_uses[slot].result = result;
                    speech.hung_up |= hung_up;
                    tool_hang_up |= hung_up;
                }
                let ran_only = decision == ToolDecision::None && !calls.is_empty();
                if ran_only && !stop && !speech.hung_up && rounds < MAX_TOOL_ROUNDS {
                    pending.push(Message::assistant_calls(heard, calls.clone()));
                    for (call, used) in calls.iter().zip(&tool_uses[first_use..]) {
                        pending.push(Message::tool_result(&call.id, &used.result));
                    }
                    rounds += 1;
                    continue;
                }
                let last = (!calls.is_empty()).then_some((heard, calls, first_use));
                break (decision, last);
            };
            self.first_audio(&speech).await;
            // An answer the caller talked over was given, however little of it they heard; a
            // model may also act without a word (a call of end_call or transfer).
            let answered = (!speech.text.trim().is_empty() && (!speech.heard.is_empty() || speech.interrupted))
                || (tools.action().is_some() && speech.error.is_none());
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
            let mut analysis = analysis::analyse(&self.profile.providers.rules, &transcript, speech.analysis.as_ref());
            if let Some(action) = tools.action() {
                analysis.action = action;
            } else if analysis.action == Action::Callback && self.callback_booked {
                // The model booked the callback with its tool and told the caller when: the
                // call goes on rather than ending on the stock confirmation.
                analysis.action = Action::Continue;
            }
            let clock =
                TurnClock { endpoint_ms, recorded_at: ended_at, last_voice_at, stt_started, stt_done, llm_started };
            let latency = clock.latency(&speech, answered);
            // A transfer is tried before the turn is stored: the turn keeps what the caller
            // heard, the apology when nobody could take the call.
            let transfer = match analysis.action {
                Action::Transfer if !speech.hung_up => Some(match &tools {
                    ToolDecision::Transfer { destination, .. } => self.transfer(destination.clone()).await,
                    _ => self.transfer(Ok(None)).await,
                }),
                _ => None,
            };
            // The number goes on the list before the caller hears it confirmed.
            let dnc_added = match analysis.action {
                Action::DoNotCall => Some(self.record_do_not_call().await),
                _ => None,
            };
            // What the agent says next because of this turn belongs to its transcript too.
            let follow_up = match analysis.action {
                Action::Transfer if matches!(transfer, Some(Err(_))) => {
                    Some(self.phrase(&self.config().transfer_unavailable))
                }
                Action::Callback => Some(self.phrase(&self.config().callback_confirmation)),
                Action::DoNotCall => Some(self.phrase(&self.config().dnc_confirmation)),
                // end_call without a goodbye of the model's own: the agent's.
                Action::End if matches!(tools, ToolDecision::End { .. }) && agent_text.is_empty() => {
                    Some(self.phrase(&self.config().goodbye))
                }
                _ => None,
            };
            let said = match &follow_up {
                Some(phrase) => format!("{agent_text} {phrase}").trim().to_owned(),
                None => agent_text.clone(),
            };
            self.analyses.push(analysis.clone());
            if let Some(slot) = tools.slot(last_round.as_ref().map_or(0, |(_, _, first)| *first)) {
                tool_uses[slot].result = match (&tools, &transfer) {
                    (ToolDecision::End { outcome, .. }, _) => serde_json::json!({ "ended": true, "outcome": outcome }),
                    (ToolDecision::Transfer { .. }, Some(Ok(()))) => serde_json::json!({ "transferred": true }),
                    (ToolDecision::Transfer { .. }, Some(Err(e))) => {
                        serde_json::json!({ "transferred": false, "error": e })
                    }
                    (ToolDecision::Transfer { .. }, None) => {
                        serde_json::json!({ "transferred": false, "error": "the caller hung up" })
                    }
                    (ToolDecision::DoNotCall { .. }, _) => match &dnc_added {
                        Some(Ok(())) => serde_json::json!({ "added": true }),
                        Some(Err(e)) => serde_json::json!({ "added": false, "error": e }),
                        None => serde_json::Value::Null,
                    },
                    (ToolDecision::None, _) => serde_json::Value::Null,
                };
            }
            // The model's next request sees this turn as OpenAI's chat shape has it: what the
            // caller said, each answer with the functions it called, their results, and what
            // the agent said after them.
            self.history.push(Message::new(Role::User, transcript.clone()));
            self.history.append(&mut pending);
            match last_round {
                Some((heard, calls, first)) if answered => {
                    let results: Vec<Message> = calls
                        .iter()
                        .zip(&tool_uses[first..])
                        .map(|(call, used)| Message::tool_result(&call.id, &used.result))
                        .collect();
                    self.history.push(Message::assistant_calls(heard, calls));
                    self.history.extend(results);
                    if let Some(phrase) = &follow_up {
                        self.history.push(Message::new(Role::Assistant, phrase.clone()));
                    }
                }
                _ if rounds > 0 && answered => {
                    let text = match &follow_up {
                        Some(phrase) => format!("{last_heard} {phrase}").trim().to_owned(),
                        None => last_heard,
                    };
                    self.history.push(Message::new(Role::Assistant, text));
                }
                _ => self.history.push(Message::new(Role::Assistant, said.clone())),
            }
            self.store_turn_with_tools(
                self.turn,
                &transcript,
                &said,
                Some(&analysis),
                latency,
                speech.interrupted,
                tool_uses,
            )
            .await;
            if speech.hung_up {
                let during = if tool_hang_up { "during a tool call" } else { "while the agent spoke" };
                return self.gone(&format!("caller hung up {during}"));
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
                    if let ToolDecision::End { outcome, reason, .. } = tools {
                        if let Some(goodbye) = &follow_up {
                            self.say(goodbye).await;
                        }
                        return Ending::completed(format!("the agent ended the call (end_call: {reason})"), outcome);
                    }
                    return Ending::completed(format!("the conversation ended ({})", analysis.intent), None);
                }
                Action::Callback => {
                    self.say(follow_up.as_deref().unwrap_or_default()).await;
                    return Ending::completed("the caller asked to be called back", Some(Outcome::CallbackRequested));
                }
                Action::DoNotCall => {
                    self.say(follow_up.as_deref().unwrap_or_default()).await;
                    return Ending::completed("the caller asked not to be called again", Some(Outcome::DoNotCall));
                }
                Action::Transfer => {
                    if matches!(transfer, Some(Ok(()))) {
                        return Ending::completed("transferred to a person", Some(Outcome::Transferred));
                    }
                    if !self.say(follow_up.as_deref().unwrap_or_default()).await {
                        return self.gone("caller hung up");
                    }
                }
            }
        }
    }

    /// Gives the model the supervisors' instructions waiting for its next answer: each a system
    /// message in the history, so later answers keep following it (never in the transcript).
    fn take_coaching(&mut self) {
        for text in self.live.call().take_coaching() {
            tracing::info!(call_id = %self.call_id, "a supervisor's instruction goes to the model");
            self.history.push(Message::new(Role::System, super::live::coaching_message(&text)));
        }
        for note in self.live.call().take_notes() {
            self.history.push(Message::new(Role::System, note));
        }
    }

    /// Waits while a barging supervisor speaks (the AI never talks over them). `Some` ends the
    /// call (the caller hung up meanwhile).
    async fn supervisor_quiet(&mut self) -> Option<Ending> {
        let live = self.live.call().clone();
        if !live.supervisor_speaking() {
            return None;
        }
        tracing::info!(call_id = %self.call_id, "a supervisor is speaking: the AI waits before it answers");
        tokio::select! {
            _ = live.supervisor_quiet() => None,
            _ = self.media.hung_up() => Some(self.gone("caller hung up while a supervisor spoke")),
        }
    }

    /// A supervisor took the call over: the AI says nothing and answers nothing; it listens,
    /// and each thing the caller says is stored as a turn with the supervisor (`caller` begins
    /// with [`WITH_SUPERVISOR`]) and kept in the model's history. What the supervisor says, cut
    /// and transcribed by the barge ([`super::barge`]), is stored as turns of the supervisor's
    /// ([`said_by_supervisor`], on the agent's side) and kept in the history too: after each
    /// thing the caller said (or a silence), the supervisor's words said before it, and all the
    /// rest before the give-back. Marker turns say when the supervisor took the call and gave it
    /// back. The media path's `listen` is never cut short for the supervisor's words, nor by the
    /// give-back when that would lose audio (an AGI `RECORD FILE` runs to its end, and what it
    /// heard is the AI's next turn). `Some` ends the call.
    async fn taken_over(&mut self) -> Option<Ending> {
        let live = self.live.call().clone();
        let who = live.taken_over_by().unwrap_or_else(|| "a supervisor".to_owned());
        tracing::info!(call_id = %self.call_id, supervisor = %who, "a supervisor took the call over: the AI is silent");
        // Lines of an earlier take-over transcribed after its give-back are not this one's.
        let late = live.take_supervisor_lines(Instant::now(), false, Duration::ZERO).await;
        if !late.is_empty() {
            tracing::warn!(call_id = %self.call_id, lines = late.len(), "the supervisor's words of an earlier take-over were transcribed too late for the transcript");
        }
        self.take_coaching();
        self.supervisor_marker(
            format!("[{who} (supervisor) took the call over]"),
            format!(
                "A supervisor ({who}) took this call over here and talks with the caller; you are silent until \
                 they give the call back. The caller's words meanwhile follow, marked {WITH_SUPERVISOR:?}, and the \
                 supervisor's, marked {:?}.",
                supervisor_mark(&who)
            ),
        )
        .await;
        loop {
            if live.state() != super::live::AiState::TakenOver {
                break;
            }
            if self.media.is_gone() {
                return Some(self.gone("caller hung up while a supervisor had the call"));
            }
            if self.media.is_wrapping_up() {
                return Some(Ending::completed("asterai is shutting down", None));
            }
            let Some(left) = self
                .config()
                .max_duration
                .0
                .checked_sub(self.started.elapsed())
                .filter(|left| *left > Duration::from_secs(1))
            else {
                return Some(Ending::completed(
                    format!("reached conversation.max_duration ({})", self.config().max_duration),
                    None,
                ));
            };
            let heard = if self.media.listen_cancel_safe() {
                tokio::select! {
                    heard = self.media.listen(left) => heard,
                    _ = live.given_back() => break,
                }
            } else {
                self.media.listen(left).await
            };
            if live.state() != super::live::AiState::TakenOver {
                // Given back while listening: what the caller said is the AI's to answer.
                *self.carried.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(heard);
                break;
            }
            let utterance = match heard {
                Heard::Utterance(utterance) => utterance,
                Heard::HungUp => return Some(self.gone("caller hung up while a supervisor had the call")),
                Heard::Gone(reason) => return Some(self.gone(&reason)),
                Heard::Silence => {
                    self.supervisor_words(Instant::now(), false, SUPERVISOR_WORDS_WAIT).await;
                    continue;
                }
                Heard::Failed(reason) => {
                    tracing::warn!(call_id = %self.call_id, "listening during the take-over failed: {reason}");
                    // Not a busy loop when the media path keeps failing at once.
                    tokio::select! {
                        _ = live.given_back() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let ended_at = utterance.ended_at;
            let deadline = ended_at + self.config().turn_budget.0;
            let transcribed = tokio::select! {
                result = (utterance.transcribe)(deadline) => result,
                _ = self.media.hung_up() => return Some(self.gone("caller hung up while a supervisor had the call")),
            };
            // The supervisor's words before the caller's, in the order they were said.
            self.supervisor_words(ended_at, false, SUPERVISOR_WORDS_WAIT).await;
            match transcribed {
                Ok(text) if !text.trim().is_empty() => {
                    self.caller_spoke = true;
                    self.with_supervisor(&text).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(call_id = %self.call_id, "speech-to-text failed during the take-over: {e}"),
            }
        }
        // The supervisor's last words (an utterance the give-back ended too) before the marker.
        self.supervisor_words(Instant::now(), true, GIVE_BACK_WAIT).await;
        tracing::info!(call_id = %self.call_id, supervisor = %who, "the supervisor gave the call back to the AI");
        self.supervisor_marker(
            format!("[{who} (supervisor) gave the call back]"),
            format!(
                "The supervisor ({who}) gave the call back to you. Go on from where the conversation is now, with \
                 what the caller and the supervisor said in mind; do not repeat what was settled."
            ),
        )
        .await;
        None
    }

    /// A marker turn of the take-over (`marker`, on the agent's side, never spoken) and the
    /// system message that tells the model the same.
    async fn supervisor_marker(&mut self, marker: String, message: String) {
        self.turn += 1;
        self.store_turn(self.turn, "", &marker, None, Latency::default(), false).await;
        self.history.push(Message::new(Role::System, message));
    }

    /// Stores what the supervisor said before `before` (transcribed by the barge), each line a
    /// turn of its own and in the model's history, once the transcriptions under way are done or
    /// `wait` passed (`finished`: the utterance under way too); later lines wait for next time.
    async fn supervisor_words(&mut self, before: Instant, finished: bool, wait: Duration) {
        let live = self.live.call().clone();
        for line in live.take_supervisor_lines(before, finished, wait).await {
            let said = said_by_supervisor(&line.supervisor, &line.text);
            self.turn += 1;
            self.store_turn(self.turn, "", &said, None, Latency::default(), false).await;
            self.history.push(Message::new(Role::Assistant, said));
        }
    }

    /// Stores what the caller said while a supervisor had the call, as a turn of its own and in
    /// the model's history.
    async fn with_supervisor(&mut self, transcript: &str) {
        let caller = format!("{WITH_SUPERVISOR} {}", transcript.trim());
        self.turn += 1;
        self.store_turn(self.turn, &caller, "", None, Latency::default(), false).await;
        self.history.push(Message::new(Role::User, caller));
    }

    /// A supervisor paused the AI: the caller hears music on hold until the AI is resumed.
    /// `Some` ends the call (the caller hung up, or asterai is shutting down).
    async fn hold(&mut self) -> Option<Ending> {
        let live = self.live.call().clone();
        tracing::info!(call_id = %self.call_id, "a supervisor paused the AI: the caller is on hold");
        if let Err(e) = self.media.hold(true).await {
            tracing::warn!(call_id = %self.call_id, "music on hold could not start ({e}); the caller hears silence");
        }
        let ending = loop {
            tokio::select! {
                _ = live.resumed() => break None,
                _ = self.media.hung_up() => break Some(self.gone("caller hung up while on hold")),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if self.media.is_gone() {
                        break Some(self.gone("caller hung up while on hold"));
                    }
                    if self.media.is_wrapping_up() {
                        break Some(Ending::completed("asterai is shutting down", None));
                    }
                }
            }
        };
        if ending.is_none() {
            tracing::info!(call_id = %self.call_id, "a supervisor resumed the AI");
            if let Err(e) = self.media.hold(false).await {
                tracing::warn!(call_id = %self.call_id, "music on hold could not stop: {e}");
            }
        }
        ending
    }

    /// An answering machine took the call (the dialplan waited for its greeting to end): leave
    /// `conversation.voicemail_message`, or hang up when it is empty. Nobody is recorded.
    async fn leave_voicemail(&mut self) -> Ending {
        let message = self.phrase(&self.config().voicemail_message);
        tracing::info!(call_id = %self.call_id, leave_message = !message.is_empty(), "an answering machine took the call (AMD)");
        if !message.is_empty() {
            let spoken = self.media.say(&message).await;
            self.store_turn(0, "", &what_was_heard(&spoken, &message), None, Latency::default(), false).await;
        }
        Ending::completed(
            if message.is_empty() {
                "answering machine (AMD): hung up without a message"
            } else {
                "answering machine (AMD): message left"
            },
            Some(Outcome::Voicemail),
        )
    }

    /// A turn with nothing to answer (silence, or an empty transcript): reprompt, or after
    /// `max_silent_turns` in a row say goodbye. The turn is stored with an empty caller and what
    /// the agent said, so the transcript holds everything the caller heard. `Some` ends the call.
    async fn nothing_heard(&mut self, silent_in_row: u32, reason: &str) -> Option<Ending> {
        self.turn += 1;
        if silent_in_row > self.config().max_silent_turns {
            let goodbye = self.phrase(&self.config().no_response_goodbye);
            self.store_turn(self.turn, "", &goodbye, None, Latency::default(), false).await;
            self.say(&goodbye).await;
            let outcome = (!self.caller_spoke).then_some(Outcome::NoResponse);
            return Some(Ending::completed(reason, outcome));
        }
        let reprompt = self.phrase(&self.config().reprompt);
        self.store_turn(self.turn, "", &reprompt, None, Latency::default(), false).await;
        (!self.say(&reprompt).await).then(|| self.gone("caller hung up"))
    }

    /// The caller is gone (or the connection is).
    fn gone(&self, reason: &str) -> Ending {
        Ending::completed(reason, None)
    }

    /// Providers keep failing: apologise and end with a clear reason.
    async fn give_up(&self, reason: &str) -> Ending {
        tracing::warn!(call_id = %self.call_id, "ending the call after repeated failures: {reason}");
        let goodbye = self.phrase(&self.config().failure_goodbye);
        self.say(&goodbye).await;
        Ending::completed(format!("repeated failures: {reason}"), Some(Outcome::Failed))
    }

    /// Adds the caller's number to the organization's do-not-call list, before the caller hears
    /// it confirmed. The error says why it could not.
    async fn record_do_not_call(&mut self) -> Result<(), String> {
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
                Ok(())
            }
            None => {
                tracing::warn!(call_id = %self.call_id, number = %self.number,
                    "the caller asked not to be called again, but the number is not E.164 and cannot go on the do-not-call list");
                Err("the caller's number is not a phone number the list can hold".to_owned())
            }
        }
    }

    /// Runs a tool call that reports back. A tool that has not answered after
    /// [`TOOL_FILLER_AFTER`] gets the agent's `tool_filler` said (once a turn, added to what the
    /// caller heard in `speech`) while it goes on; a hang-up cancels it (its request is dropped)
    /// and it is recorded as cancelled. Returns the result and whether the caller hung up.
    async fn run_tool(
        &mut self,
        run: ToolRun,
        call: &crate::speech::llm::ToolCall,
        filler_said: &mut bool,
        speech: &mut Speech,
    ) -> (serde_json::Value, bool) {
        let started = Instant::now();
        let (result, change) = {
            let work = self.tool_work(run, &call.id);
            let mut work = std::pin::pin!(work);
            let early = tokio::select! {
                done = &mut work => Some(Some(done)),
                _ = self.media.hung_up() => Some(None),
                _ = tokio::time::sleep(TOOL_FILLER_AFTER), if !*filler_said => None,
            };
            let done = match early {
                Some(done) => done,
                None => {
                    *filler_said = true;
                    let filler = self.phrase(&self.config().tool_filler);
                    let waited = async {
                        tokio::select! {
                            done = &mut work => Some(done),
                            _ = self.media.hung_up() => None,
                        }
                    };
                    let (done, spoken) = tokio::join!(waited, self.media.say(&filler));
                    let heard = what_was_heard(&spoken, &filler);
                    if !heard.is_empty() {
                        speech.text = format!("{} {filler}", speech.text).trim().to_owned();
                        speech.heard.push(heard);
                    }
                    done
                }
            };
            match done {
                Some(done) => done,
                None => {
                    tracing::info!(call_id = %self.call_id, tool = %call.name, "the caller hung up during the tool call; cancelled");
                    metrics::counter!("asterai_tool_calls_cancelled_total", "tool" => call.name.clone()).increment(1);
                    return (cancelled(), true);
                }
            }
        };
        tracing::debug!(call_id = %self.call_id, tool = %call.name, ms = started.elapsed().as_millis() as u64, "tool call done");
        if let Some(change) = change {
            self.callback_booked |= matches!(change, Change::Callback { .. });
            self.recorder.push(change).await;
        }
        (result, false)
    }

    /// The work of a tool call: its result, and the change to the record it makes.
    async fn tool_work(&self, run: ToolRun, tool_call_id: &str) -> (serde_json::Value, Option<Change>) {
        match run {
            ToolRun::Http(tool, arguments) => (tool.call(&self.call_id, tool_call_id, &arguments).await, None),
            ToolRun::Dtmf(digits) => match self.media.send_dtmf(&digits).await {
                Ok(()) => (serde_json::json!({ "sent": digits }), None),
                Err(e) => {
                    tracing::warn!(call_id = %self.call_id, "DTMF could not be sent: {e}");
                    (serde_json::json!({ "error": format!("the keys could not be sent: {e}") }), None)
                }
            },
            ToolRun::Callback { when } => match self.book_callback(&when).await {
                Ok((result, change)) => (result, Some(change)),
                Err(e) => (serde_json::json!({ "scheduled": false, "error": e }), None),
            },
        }
    }

    /// The callback `schedule_callback` asked for: the contact's local time `when`, in their
    /// timezone (else the campaign's), moved into the campaign's calling window.
    async fn book_callback(&self, when: &str) -> Result<(serde_json::Value, Change), String> {
        let Some(target) = &self.callback else {
            return Err("this call has no contact of a campaign to call back".into());
        };
        let store = self.inner.publisher.store();
        let campaign = match self.inner.lookup("the campaign", store.campaign(self.org.id, target.campaign_id)).await {
            Ok(Some(campaign)) => campaign,
            Ok(None) => return Err("the contact's campaign is gone".into()),
            Err(e) => return Err(format!("the callback cannot be booked now ({e})")),
        };
        let settings = crate::dialer::campaign::CampaignSettings::from_json(&campaign.settings)?;
        let window = settings.calling_window()?;
        let zone = target.timezone.clone().unwrap_or_else(|| settings.timezone.clone());
        let tz = crate::dialer::campaign::parse_tz(&zone)?;
        let (at, moved) = callback_time(when, tz, &window, chrono::Utc::now())?;
        let local = at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
        tracing::info!(call_id = %self.call_id, contact = target.contact_id, %at, moved, "callback booked");
        let result = serde_json::json!({ "scheduled": true, "at": local, "timezone": tz.name(), "moved_into_calling_hours": moved });
        Ok((result, Change::Callback { contact_id: target.contact_id, at }))
    }

    /// Hands the caller to a person, at the agent's target the model named (`Ok(None)`: the
    /// default target); the error says why not. A name the agent does not have is never dialled.
    async fn transfer(&mut self, destination: Result<Option<String>, String>) -> Result<(), String> {
        let destination = destination.inspect_err(|e| {
            tracing::warn!(call_id = %self.call_id, "the model asked for a transfer asterai cannot make: {e}");
        })?;
        let Some(transferer) = &self.inner.transferer else {
            if destination.is_some() {
                tracing::info!(call_id = %self.call_id, "the agent names a transfer target, but transfers need ARI (ari.url)");
                return Err("transfers need ARI (ari.url)".to_owned());
            }
            tracing::info!(call_id = %self.call_id, "the caller asked for a person, but no transfer target is configured");
            return Err("no transfer target is configured".to_owned());
        };
        let request = TransferRequest {
            call_id: self.call_id.clone(),
            org_id: self.org.id,
            channel: self.channel.clone(),
            uniqueid: self.uniqueid.clone(),
            destination,
        };
        match transferer.transfer(&request).await {
            Ok(()) => {
                self.transferred = true;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, "transfer failed, the agent carries on: {e}");
                Err(format!("the transfer failed: {e}"))
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
        interrupted: bool,
    ) {
        self.store_turn_with_tools(turn, caller, agent, analysis, latency, interrupted, Vec::new()).await;
    }

    /// Stores a turn with the tools the model called in it.
    #[allow(clippy::too_many_arguments)]
    async fn store_turn_with_tools(
        &mut self,
        turn: i32,
        caller: &str,
        agent: &str,
        analysis: Option<&TurnAnalysis>,
        latency: Latency,
        interrupted: bool,
        tools: Vec<ToolUse>,
    ) {
        // The greeting and turns with nothing to time (silence, failures) stay out of the figures.
        if turn > 0 && latency.total > 0 {
            for (stage, ms) in [
                ("endpoint", latency.endpoint),
                ("stt", latency.stt),
                ("llm_first", latency.llm_first),
                ("tts_first", latency.tts_first),
                ("total", latency.total),
            ] {
                metrics::histogram!("asterai_turn_latency_seconds", "stage" => stage).record(ms as f64 / 1000.0);
            }
            if let Some(ms) = latency.voice_to_voice {
                metrics::histogram!("asterai_turn_latency_seconds", "stage" => "voice_to_voice")
                    .record(ms as f64 / 1000.0);
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
            interrupted,
            tools,
        };
        self.recorder.push(Change::Turn(new)).await;
    }

    /// Finishes the record, tells the media path, which hangs up if the caller is still there.
    async fn finish(self, mut ending: Ending) {
        let Conversation {
            inner,
            mut media,
            mut recorder,
            call_id,
            analyses,
            do_not_call,
            caller_spoke,
            turn,
            transferred,
            callback_booked,
            profile,
            history,
            active_recording,
            ..
        } = self;
        if let Some(when) = ending.reason.strip_prefix(CALLER_HUNG_UP) {
            ending.reason = media.who_hung_up(when).await;
        }
        let outcome = ending.outcome.unwrap_or_else(|| {
            if callback_booked && !do_not_call {
                Outcome::CallbackRequested
            } else {
                analysis::outcome(&analyses, do_not_call, caller_spoke)
            }
        });
        let finish = FinishCall {
            status: ending.status,
            reason: Some(ending.reason.clone()),
            outcome: Some(outcome),
            outcome_reason: Some(ending.reason.clone()),
            emotion: analyses.last().map(|a| a.emotion.clone()),
            intent_score: analysis::intent_score(&analyses),
        };
        recorder.push(Change::Finish(finish)).await;
        metrics::counter!("asterai_calls_finished_total", "status" => ending.status.as_str(), "outcome" => outcome.as_str()).increment(1);
        tracing::info!(call_id = %call_id, turns = turn, outcome = outcome.as_str(), reason = %ending.reason, "conversation ended");
        let hang_up = inner.settings.conversation.hangup_at_end && !transferred;
        media.finish(outcome, hang_up).await;
        // The writer finishes the record on its own; the channel does not wait for it. The
        // after-call analysis (of a call where the caller spoke) runs after the channel is
        // released, and its result goes through the same writer, after the call's end.
        // The whole-call recording's file is collected the same way (Asterisk finishes it
        // once the channel is gone).
        let analysis = profile.settings.analysis.clone().filter(|_| caller_spoke);
        if analysis.is_none() && active_recording.is_none() {
            recorder.close();
            return;
        }
        let responder = profile.providers.responder.clone();
        let transcript = super::after_call::transcript(&history);
        tokio::spawn(async move {
            let collected = async {
                match active_recording {
                    Some(active) => {
                        let result = call_recording::collect(active.name, active.collect).await;
                        match &result.reason {
                            Some(reason) => {
                                tracing::warn!(call_id = %call_id, recording = %result.name, "the call's recording failed: {reason}")
                            }
                            None => {
                                tracing::info!(call_id = %call_id, recording = %result.name, bytes = ?result.size_bytes, duration_ms = ?result.duration_ms, "the call's recording is available")
                            }
                        }
                        Some(result)
                    }
                    None => None,
                }
            };
            let analysed = async {
                match analysis {
                    Some(spec) => Some(super::after_call::analyse(&*responder, &spec, &transcript).await),
                    None => None,
                }
            };
            // Each is written as soon as it is known.
            tokio::pin!(collected, analysed);
            let (mut collected_done, mut analysed_done) = (false, false);
            while !(collected_done && analysed_done) {
                tokio::select! {
                    result = &mut collected, if !collected_done => {
                        collected_done = true;
                        if let Some(result) = result {
                            recorder.push(Change::RecordingEnded(result)).await;
                        }
                    }
                    analysis = &mut analysed, if !analysed_done => {
                        analysed_done = true;
                        if let Some(analysis) = analysis {
                            recorder.push(Change::Analysis(analysis)).await;
                        }
                    }
                }
            }
            recorder.close();
        });
    }
}

/// How many times a turn may ask the model again with its tools' results before the turn ends
/// with what was said (a model that keeps calling tools must not hold the caller forever).
pub const MAX_TOOL_ROUNDS: u32 = 4;

/// The result of a tool call a hang-up interrupted.
fn cancelled() -> serde_json::Value {
    serde_json::json!({ "cancelled": true, "error": "the caller hung up during the tool call" })
}

/// A tool call that runs and reports back to the model.
#[derive(Debug, Clone)]
enum ToolRun {
    /// One of the agent's HTTP tools, with the model's arguments.
    Http(Arc<HttpTool>, serde_json::Map<String, serde_json::Value>),
    /// `schedule_callback` at the contact's local time `when`.
    Callback { when: String },
    /// `send_dtmf`, checked.
    Dtmf(String),
}

/// What the model's tool calls ask for. `end_call`, `transfer` and `add_to_dnc` end the turn,
/// so the first of them the model called decides (`index`: its place in the answer's calls);
/// the tools called before it run, the ones after it do not. Calls of tools the agent does not
/// have, or with arguments that do not fit, get their error as result (the model's words still
/// stand). Every call is also recorded for the turn: the deciding one with a null result the
/// turn fills in once it has acted.
#[derive(Debug, Clone, PartialEq)]
enum ToolDecision {
    None,
    /// `end_call`, with the outcome the model gave (when it is one of the allowed ones).
    End {
        index: usize,
        outcome: Option<Outcome>,
        reason: String,
    },
    /// `transfer`: the destination of the agent's target the model named (`None`: the agent
    /// names none, the default target), or why the model's choice is refused.
    Transfer {
        index: usize,
        destination: Result<Option<String>, String>,
    },
    /// `add_to_dnc`: the caller's number goes on the list, the call ends with the confirmation.
    DoNotCall {
        index: usize,
    },
}

impl ToolDecision {
    fn read(
        call_id: &str,
        calls: &[crate::speech::llm::ToolCall],
        settings: &super::Settings,
    ) -> (ToolDecision, Vec<ToolUse>, Vec<(usize, ToolRun)>) {
        let targets = &settings.transfer_targets;
        let mut decision = ToolDecision::None;
        let mut uses = Vec::with_capacity(calls.len());
        let mut runs = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            let mut used = ToolUse {
                name: call.name.clone(),
                arguments: serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone())),
                result: serde_json::Value::Null,
            };
            if decision != ToolDecision::None {
                used.result = serde_json::json!({ "error": "not run: an earlier tool call ended the turn" });
                uses.push(used);
                continue;
            }
            let arguments = match call.arguments_json() {
                Ok(arguments) => arguments,
                Err(e) => {
                    tracing::warn!(call_id, tool = %call.name, "the model's tool call is ignored: {e}");
                    used.result = serde_json::json!({ "error": e });
                    uses.push(used);
                    continue;
                }
            };
            if !settings.tools.iter().any(|tool| tool.name == call.name) {
                let name: String = call.name.chars().filter(|c| !c.is_control()).take(64).collect();
                tracing::warn!(call_id, tool = %name, "the model called a tool the agent does not have; ignored");
                used.result = serde_json::json!({ "error": format!("no tool named {name:?}") });
                uses.push(used);
                continue;
            }
            tracing::info!(call_id, tool = %call.name, id = %call.id, "the model called a tool");
            metrics::counter!("asterai_tool_calls_total", "tool" => call.name.clone()).increment(1);
            let text = |key: &str| arguments.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            match call.name.as_str() {
                "end_call" => {
                    let outcome = arguments.get("outcome").and_then(|o| o.as_str());
                    let outcome = outcome.and_then(|o| match o.parse::<Outcome>() {
                        Ok(outcome @ (Outcome::Interested
                        | Outcome::NotInterested
                        | Outcome::CallbackRequested
                        | Outcome::Completed)) => Some(outcome),
                        _ => {
                            tracing::warn!(call_id, outcome = %o, "end_call with an outcome it may not give; the call's outcome is read from its turns");
                            None
                        }
                    });
                    let reason = arguments.get("reason").and_then(|r| r.as_str()).unwrap_or("no reason given");
                    let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
                    decision = ToolDecision::End { index, outcome, reason };
                }
                "transfer" => {
                    let destination = if targets.is_empty() {
                        Ok(None)
                    } else {
                        let named = text("target");
                        match targets.iter().find(|(name, _)| *name == named) {
                            Some((_, destination)) => Ok(Some(destination.clone())),
                            None => {
                                let names: Vec<&str> = targets.iter().map(|(name, _)| name.as_str()).collect();
                                let named: String = named.chars().filter(|c| !c.is_control()).take(64).collect();
                                Err(format!("no transfer target named {named:?}; expected one of {}", names.join(", ")))
                            }
                        }
                    };
                    decision = ToolDecision::Transfer { index, destination };
                }
                "add_to_dnc" => decision = ToolDecision::DoNotCall { index },
                "schedule_callback" => runs.push((index, ToolRun::Callback { when: text("when") })),
                "send_dtmf" => {
                    let digits = text("digits");
                    if valid_dtmf(&digits) {
                        runs.push((index, ToolRun::Dtmf(digits)));
                    } else {
                        used.result =
                            serde_json::json!({ "error": "digits: expected 1 to 32 of 0-9, *, #, A-D and w" });
                    }
                }
                name => match settings.http_tools.iter().find(|tool| tool.name == name) {
                    Some(tool) => runs.push((index, ToolRun::Http(tool.clone(), arguments))),
                    None => used.result = serde_json::json!({ "error": format!("no tool named {name:?}") }),
                },
            }
            uses.push(used);
        }
        (decision, uses, runs)
    }

    fn action(&self) -> Option<Action> {
        match self {
            ToolDecision::None => None,
            ToolDecision::End { .. } => Some(Action::End),
            ToolDecision::Transfer { .. } => Some(Action::Transfer),
            ToolDecision::DoNotCall { .. } => Some(Action::DoNotCall),
        }
    }

    /// Where the deciding call's result goes among the turn's tool uses, its answer's calls
    /// starting at `first`.
    fn slot(&self, first: usize) -> Option<usize> {
        match self {
            ToolDecision::None => None,
            ToolDecision::End { index, .. }
            | ToolDecision::Transfer { index, .. }
            | ToolDecision::DoNotCall { index } => Some(first + index),
        }
    }
}

/// `{local_time}`: the time of day in the contact's timezone, else the daemon's.
fn local_time(timezone: Option<&str>) -> String {
    let now = chrono::Utc::now();
    match timezone.and_then(|tz| tz.parse::<chrono_tz::Tz>().ok()) {
        Some(tz) => now.with_timezone(&tz).format("%H:%M").to_string(),
        None => now.with_timezone(&chrono::Local).format("%H:%M").to_string(),
    }
}

/// What the caller heard of `text`: all of it, or after a hang-up (or a sentence text-to-speech
/// could not say) the sentences played, the last one perhaps in part. The transcript is what
/// the caller heard.
pub(super) fn what_was_heard(speech: &Speech, text: &str) -> String {
    if speech.hung_up || speech.interrupted || speech.tts_failures > 0 {
        speech.heard.join(" ")
    } else {
        text.to_owned()
    }
}

/// When a turn's stages began and ended.
struct TurnClock {
    endpoint_ms: u32,
    recorded_at: Instant,
    /// When the caller's last voiced audio arrived, when the media path knows (streaming).
    last_voice_at: Option<Instant>,
    stt_started: Instant,
    stt_done: Instant,
    llm_started: Instant,
}

impl TurnClock {
    fn latency(&self, speech: &Speech, answered: bool) -> Latency {
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
            voice_to_voice: self.last_voice_at.and_then(|voice| speech.first_play_at.map(|play| ms(voice, Some(play)))),
        }
    }
}
