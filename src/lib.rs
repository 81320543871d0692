//! asterai lets an Asterisk PBX hold AI phone calls: Asterisk carries the call; asterai listens,
//! answers, keeps a record of every call and shows it live to supervisors.
//!
//! This page is the tour: the life of one call, inbound and then outbound, module by module,
//! and then the rule of which module may use which. Each module's own page goes deeper.
//!
//! # An inbound call (FastAGI)
//!
//! 1. **Asterisk connects.** The dialplan runs `AGI(agi://127.0.0.1:4573/ai?org=acme)`.
//!    [`agi::server`] accepts the connection on `agi.listen`: it checks the peer against
//!    `agi.allowed_peers` and the session cap, reads the environment block ([`agi::env`], through
//!    the codec [`agi::codec`] and the parsers of [`agi::parse`]), and routes on the path of
//!    `agi_network_script` with its [`agi::Router`]: `ai` goes to the conversation, `health` and
//!    unknown paths to [`agi::routes`].
//! 2. **One session.** The route's [`agi::Handler`] gets an [`agi::AgiSession`]: one command in
//!    flight, a hang-up seen at any line, Asterisk's dead-channel rules. Commands are typed, one
//!    per AGI command with its reply type ([`agi::command`]); every argument is quoted and checked
//!    in one place ([`agi::command::args`]), so text from callers or models never reaches a
//!    command line raw.
//! 3. **The conversation.** [`conversation`] holds the call, in two layers: its core
//!    ([`conversation::core`]) decides what to say and when to end, whatever carries the audio;
//!    a media path ([`conversation::agi`] here) hears the caller and speaks the core's answers.
//!    The core first picks the call's agent ([`agent::choose`]: the route's `agent=`, the
//!    campaign's, the organization's default, or the built-in agent of the config), whose
//!    version gives the prompt, phrases, voice and limits; it records the call (see step 5)
//!    with that version, greets the caller, then turn after turn: `RECORD FILE` until silence, speech-to-text
//!    ([`speech::stt`]), the responder that decides what to say (an LLM, [`speech::llm`], or the
//!    built-in [`speech::rules`]), the turn's intent and emotion, and the answer spoken:
//!    [`speech::tts`] synthesizes each sentence once into a file ([`speech::tts::SpeechCache`])
//!    that Asterisk plays with `STREAM FILE`.
//!    An agent may give its model tools: the core runs them ([`conversation::tools`]: the
//!    agent's signed HTTP tools, callbacks, DTMF; transfer, do-not-call, the end) and asks the
//!    model again with their results.
//! 4. **The end.** On a hang-up, a goodbye, a do-not-call request (written to the organization's
//!    list first) or a limit, the conversation finishes the call: status, outcome, duration,
//!    transcript; then it hangs up, and the agent's after-call analysis
//!    ([`conversation::after_call`]) runs.
//! 5. **The record and the feed.** Every change to the call goes through the
//!    [`feed::Publisher`], which writes it to the [`store`] and appends its event to the event
//!    log in the same transaction. A writer task per call keeps the caller from ever waiting on
//!    the database, and spools what it cannot write yet. The [`feed::hub`] tails the event log
//!    and hands each event to the supervisors watching ([`feed::subscriber`], one per WebSocket
//!    on `GET /v1/feed` of [`http`]); the monitor page ([`http::monitor`]) draws them.
//!    `call_started`, `call_ended` and `call_analyzed` also write, in that transaction, a
//!    delivery for each of the organization's webhook endpoints ([`store::webhooks`], the
//!    outbox); the [`webhooks`] worker POSTs them, signed ([`signing`]), in order per call,
//!    retrying until they are accepted or a day has passed.
//!
//! # An outbound call (ARI)
//!
//! 1. **Asked for.** `POST /v1/calls` ([`http`]), `asterai call` ([`cli`]) or a running
//!    campaign's [`dialer::runner`] (which claims due contacts within each campaign's limits and
//!    calling windows) hands a number to the [`dialer::Dialer`].
//! 2. **Placed.** The dialer checks the number ([`phone`]) and the do-not-call list, stores the
//!    call (`initiated`, on the feed at once), and originates it through [`ari::AriClient`] with
//!    the call's id as the channel's id.
//! 3. **Followed.** The [`dialer::tracker`] reads the channel's events from the ARI event
//!    WebSocket ([`ari::stream`], typed in [`ari::events`]) and turns them into the call's
//!    statuses: ringing, in progress, busy, no answer, failed. After a reconnect it resyncs
//!    against Asterisk's channel list.
//! 4. **Answered.** The answered channel is sent on to the dialplan (`dialer.context`), whose
//!    `ai` route runs it exactly as an inbound call from step 1, adopting the stored call by
//!    `call_id`. A caller who asks for a person is moved through ARI ([`dialer::transfer`]).
//! 5. **Settled.** When the call ends, the runner settles the contact's attempt: done, called
//!    again later, or failed.
//!
//! # A streaming call (ARI)
//!
//! 1. **In Stasis.** The dialplan runs `Stasis(asterai,ai?org=acme)` (or the dialer placed the
//!    call with `media = "stream"`: step 4 above keeps it in the application). The
//!    [`dialer::tracker`], the one reader of the application's events, hands the channel to the
//!    conversations' [`conversation::StreamCalls`] (an [`ari::StasisCalls`]); the argument is
//!    read by the `ai` route's own parameter code ([`conversation::RouteParams`]).
//! 2. **Media.** [`conversation::stream`] answers, bridges the caller with an external media
//!    channel ([`ari::ExternalMedia`]) and connects to it ([`media`]: chan_websocket, or
//!    AudioSocket).
//! 3. **The same conversation.** The core of step 3 above runs over the stream instead of the
//!    file loop: voice activity detection ([`speech::vad`]) and speech-to-text per turn
//!    ([`speech::stt_stream`]) hear the caller, answers are synthesized as they stream
//!    ([`speech::tts_stream`]), and a caller who talks over the agent stops it (barge-in).
//!
//! # Around every call
//!
//! * [`config`]: the one configuration (TOML file, then `ASTERAI_*`), validated once at start.
//!   [`types`] holds [`types::Dur`] and [`types::Secret`], used by config and by the modules it
//!   configures.
//! * [`cli`]: `asterai serve` ([`cli::serve`]) builds and wires everything; the other
//!   subcommands work on the store or talk to a running daemon.
//! * [`http`]: health, readiness, metrics ([`telemetry`]), the REST API (tokens and scopes in
//!   [`auth`], checked by the extractors of [`http::extract`]), the feed and the monitor page.
//! * [`conversation::live`]: the calls in conversation, by id, for the supervisors' console of
//!   [`http`] (coach the AI, pause it with the caller on hold, take it over and give it back
//!   with both sides of the conversation meanwhile transcribed, listen through an ARI snoop:
//!   [`conversation::listen`], barge in with the supervisor's microphone, joining a streaming
//!   call's bridge or whispering into an AGI call: [`conversation::barge`]).
//! * [`fleet`]: which daemon holds which call, and finishing the calls of a daemon that died.
//! * [`supervise`]: the long-lived tasks (hub, ARI stream, campaign runner, spool replay, webhooks),
//!   restarted with backoff; [`systemd`]: readiness and the watchdog; [`logging`]: text or JSON.
//! * [`demo`]: the simulated caller behind `asterai demo`.
//! * [`tls`]: the one TLS client set-up (rustls) for ARI, media and `asterai feed`.
//! * [`retention`]: what callers said is purged once older than the organization's retention
//!   (a daily job, and `asterai purge`); with redaction on ([`types::redact`]), card numbers
//!   and configured patterns are masked by the [`feed::Publisher`] before anything is stored.
//!
//! # Being added
//!
//! * **Tools and after-call work** (in [`conversation`], [`speech::llm`]): more tools the
//!   model may use during a call ([`speech::llm::ToolCallAssembler`] reads them from the
//!   stream), and the work after it.
//!
//! Their modules describe them; this tour gains their steps when they land.
//!
//! # Which module may use which
//!
//! Arrows point one way, from the wiring down to the protocols:
//!
//! ```text
//! cli, http                     wire everything (http: auth, config, dialer, feed, store, supervise)
//! conversation                  agi, ari, media, speech, store, feed, config, phone, agent
//! agent                         store, config, speech (templates), types
//! dialer                        ari, store, feed, config, supervise, phone, types
//! fleet                         feed, store
//! retention                     store, config
//! config                        agi, ari, speech, store, types (it builds their settings)
//! feed, auth                    store
//! webhooks                      store, agent (secret references), signing, dialer (its Clock), config
//! media                         ari (to read the errors of Asterisk's HTTP server)
//! agi   ari   speech   store    nothing of each other (ari: types, tls; store: phone)
//! types   phone   signing   systemd   telemetry   tls    nothing of asterai
//! ```
//!
//! `agi`, `ari`, `speech` and `store` never read the config: [`config`] turns its sections into
//! their settings ([`config::AgiConfig::server_config`], [`config::AriConfig::settings`],
//! [`config::Config::store_options`]). A module that needs to reach "up" is a sign the boundary
//! is in the wrong place. One pair still points both ways: the dialer implements the
//! conversation's `Transferer`, and the conversation takes new call ids from the dialer. The
//! streaming path does not add one: the tracker hands calls over through [`ari::StasisCalls`],
//! which the conversations implement.

pub mod agent;
pub mod agi;
pub mod ari;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod demo;
pub mod dialer;
pub mod feed;
pub mod fleet;
pub mod http;
pub mod logging;
pub mod media;
pub mod phone;
pub mod retention;
pub mod signing;
pub mod speech;
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod types;
pub mod webhooks;
