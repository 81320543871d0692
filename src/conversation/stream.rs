//! The streaming media path: the conversation core ([`super::core`]) over a call held in
//! Stasis, its audio streamed both ways through an ARI external media channel.
//!
//! A call enters it with `Stasis(<ari.app>,ai?org=acme[&campaign=…&contact=…])` (the argument
//! is the FastAGI route's path and query, read by the same code), or as an outbound call the
//! dialer placed with `media = "stream"`. The dialer's tracker, the one reader of the
//! application's events, hands such channels over ([`StreamCalls`] is its
//! [`crate::ari::StasisCalls`]).
//!
//! For each call: answer; create a mixing bridge and an external media channel
//! (chan_websocket in server mode, asterai connecting to Asterisk's `/media/<id>`, or the
//! AudioSocket fallback) in `slin16` when the caller's channel is wideband, else `slin`; bridge
//! both; then the core talks over a [`StreamPath`]:
//!
//! * **Hearing.** A task of its own (the "ear") reads every caller frame, runs the voice
//!   activity detector on it (and on the gaps: chan_websocket sends nothing while the caller's
//!   side is silent), and feeds the turn's speech-to-text ([`UtteranceStt`]: the utterance so
//!   far is transcribed at the short pause, and kept if the caller does not go on). The turn
//!   ends after `stream.endpoint_silence` of silence; `stream.no_input` without speech is a
//!   silent turn. A DTMF digit is a turn of its own ("The caller pressed 1.").
//! * **Speaking.** Fixed phrases come from the speech cache; answers are synthesized sentence
//!   by sentence with the provider's streaming endpoint, each chunk sent as it arrives
//!   (resampled on the fly), a mark after each sentence.
//! * **Barge-in.** Caller speech of `stream.barge_in_min_speech` while the agent's audio is
//!   queued or playing (or its answer is being prepared): the ear sends FLUSH_MEDIA at once,
//!   the answer's synthesis is cancelled, and the turn keeps only what the caller heard
//!   (sentences whose audio played, the interrupted one cut where playback stopped).
//! * **A supervisor.** A barge joins the bridge, which mixes the supervisor into what the ear
//!   hears: the AI hears them as it hears the caller. While the call is taken over, though, the
//!   ear takes what it hears while the supervisor's voice is heard
//!   ([`super::live::LiveCall::supervisor_speaking`]) for silence, so that what the caller said
//!   to the supervisor never holds the supervisor's words (transcribed from the barge's own
//!   audio, [`super::barge`]); the AGI path silences the same parts of its recordings.
//! * **The end.** The caller's hang-up comes from ARI's events (the media socket stays
//!   silent); the media channel and the bridge are removed, and the caller hung up (or, with
//!   `conversation.hangup_at_end = false`, returned to the dialplan).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::call_recording::Collect;
use super::core::{CallStart, Conversation, Heard, MediaPath, RouteParams, Utterance};
use super::speak::Speech;
use super::{Conversations, Inner, Profile};
use crate::ari::{AriClient, AriEvent, Channel, ExternalMedia, MediaSupport, StasisRoute};
use crate::config::StreamingConfig;
use crate::media::audiosocket::AudioSocketServer;
use crate::media::websocket::{self, WebSocketOptions};
use crate::media::{Codec, ControlFormat, MediaEvent, MediaSender, MediaSession};
use crate::speech::SpeechError;
use crate::speech::audio::{self, StreamResampler};
use crate::speech::llm::{Chunk, ChunkStream, SentenceSplitter};
use crate::speech::stt::SpeechToText;
use crate::speech::stt_stream::{LiveTurn, TurnStt, UtteranceStt};
use crate::speech::vad::{VadEvent, VadState, VoiceActivity};
use crate::store::{CallStatus, Outcome, RecordingVia};

/// The id prefix of the external media channels asterai creates.
pub const MEDIA_CHANNEL_PREFIX: &str = "asterai-media-";

/// Caller audio kept from before the detector decided speech began, so the transcript has the
/// first syllable.
const PREROLL_FRAMES: usize = 25;

/// How long a media connection may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the streaming path is set up.
#[derive(Clone)]
pub struct StreamOptions {
    /// The Stasis application (`ari.app`).
    pub app: String,
    pub stream: StreamingConfig,
    /// What the connected Asterisk offers; `None`: asked ([`crate::ari::detect_media`]) at the
    /// first call, and kept.
    pub support: Option<MediaSupport>,
    /// The AudioSocket listener, when the transport is AudioSocket.
    pub audiosocket: Option<Arc<AudioSocketServer>>,
}

impl StreamOptions {
    /// The transport for a call: `stream.transport`, `auto` meaning what Asterisk has.
    fn transport(&self, support: &MediaSupport) -> Option<crate::media::Transport> {
        use crate::media::Transport;
        match self.stream.transport.as_str() {
            "websocket" => Some(Transport::WebSocket),
            "audiosocket" => self.audiosocket.is_some().then_some(Transport::AudioSocket),
            _ if support.chan_websocket => Some(Transport::WebSocket),
            _ if support.audiosocket && self.audiosocket.is_some() => Some(Transport::AudioSocket),
            _ => None,
        }
    }
}

/// The calls held in Stasis. Cheap to clone.
#[derive(Clone)]
pub struct StreamCalls {
    inner: Arc<StreamInner>,
}

struct StreamInner {
    conversations: Conversations,
    client: AriClient,
    options: StreamOptions,
    /// The caller channels of the calls running, and how to tell each it is gone.
    calls: Mutex<HashMap<String, watch::Sender<Option<String>>>>,
    /// The media channels asterai created, each with whether it has entered the application:
    /// Asterisk puts a new external media channel into Stasis shortly after
    /// `POST /channels/externalMedia` answers, and refuses to bridge it before (422 "Channel not
    /// in Stasis application").
    media_channels: Mutex<HashMap<String, watch::Sender<bool>>>,
    support: tokio::sync::Mutex<Option<MediaSupport>>,
    /// Cancelled when asterai shuts down: each call ends at its next turn.
    wrap_up: tokio_util::sync::CancellationToken,
}

impl StreamCalls {
    pub fn new(conversations: Conversations, client: AriClient, options: StreamOptions) -> StreamCalls {
        StreamCalls {
            inner: Arc::new(StreamInner {
                conversations,
                client,
                support: tokio::sync::Mutex::new(options.support.clone()),
                options,
                calls: Mutex::new(HashMap::new()),
                media_channels: Mutex::new(HashMap::new()),
                wrap_up: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    /// Streaming calls running now.
    pub fn active(&self) -> usize {
        self.inner.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// asterai is shutting down: each call ends at its next turn.
    pub fn wrap_up(&self) {
        self.inner.wrap_up.cancel();
    }
}

impl crate::ari::StasisCalls for StreamCalls {
    fn start(&self, channel: &Channel, args: &[String], call_id: Option<&str>) -> bool {
        if channel.id.starts_with(MEDIA_CHANNEL_PREFIX)
            || self.inner.media_channels.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&channel.id)
        {
            return true;
        }
        let Some(route) = StasisRoute::from_args(args) else { return false };
        if route.route() != "ai" {
            return false;
        }
        let mut params = RouteParams::from_query(route.query());
        if let Some(id) = call_id {
            params.set("call_id", id);
        }
        let (gone, _) = watch::channel(None);
        {
            let mut calls = self.inner.calls.lock().unwrap_or_else(|e| e.into_inner());
            if calls.contains_key(&channel.id) {
                return true;
            }
            calls.insert(channel.id.clone(), gone.clone());
        }
        let inner = self.inner.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            let id = channel.id.clone();
            run_call(&inner, channel, params, gone).await;
            inner.calls.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
        true
    }

    fn event(&self, event: &AriEvent) {
        if let AriEvent::StasisStart { channel, .. } = event {
            if let Some(entered) = self.inner.media_channels.lock().unwrap_or_else(|e| e.into_inner()).get(&channel.id)
            {
                entered.send_replace(true);
            }
            return;
        }
        let (channel, why) = match event {
            AriEvent::ChannelDestroyed { channel, cause_txt, .. } => {
                (channel, format!("the channel ended ({cause_txt})"))
            }
            AriEvent::StasisEnd { channel } => (channel, "the channel left the application".to_owned()),
            AriEvent::ChannelHangupRequest { channel, .. } => (channel, "hang-up requested".to_owned()),
            _ => return,
        };
        if let Some(gone) = self.inner.calls.lock().unwrap_or_else(|e| e.into_inner()).get(&channel.id) {
            gone.send_if_modified(|state| {
                if state.is_some() {
                    return false;
                }
                tracing::debug!(channel = %channel.id, "the streaming call's channel is gone: {why}");
                *state = Some(why.clone());
                true
            });
        }
        if matches!(event, AriEvent::ChannelDestroyed { .. }) {
            self.inner.media_channels.lock().unwrap_or_else(|e| e.into_inner()).remove(&channel.id);
        }
    }

    fn wrap_up(&self) {
        StreamCalls::wrap_up(self);
    }

    fn active(&self) -> usize {
        StreamCalls::active(self)
    }
}

/// What a call's set-up made, to take down at the end.
struct Setup {
    bridge: String,
    media_channel: String,
    session: MediaSession,
}

/// One streaming call from StasisStart to its end.
async fn run_call(inner: &StreamInner, channel: Channel, params: RouteParams, gone: watch::Sender<Option<String>>) {
    let client = &inner.client;
    let conversations = &inner.conversations.inner;
    let slug = params.non_empty("org").map(str::to_owned);
    let org = match &slug {
        None => {
            tracing::warn!(channel = %channel.name, "Stasis ai route without ?org=<slug>; nobody to answer for");
            None
        }
        Some(slug) => match conversations.org(slug).await {
            Ok(Some(org)) => Some(org),
            Ok(None) => {
                tracing::warn!(org = %slug, "Stasis ai route for an unknown organization");
                None
            }
            Err(e) => {
                tracing::error!(org = %slug, "cannot look up an organization not seen since start-up, the database is unavailable: {e}");
                None
            }
        },
    };
    let Some(org) = org else {
        // Back to the dialplan, which may route the call elsewhere.
        let _ = client.set_variable(&channel.id, "ASTERAI_STATUS", "unavailable").await;
        let _ = client.continue_after_stasis(&channel.id).await;
        return;
    };
    let setup = match set_up(inner, &channel).await {
        Ok(setup) => setup,
        Err(e) => {
            let _ = client.set_variable(&channel.id, "ASTERAI_STATUS", "media_failed").await;
            match params.non_empty("call_id") {
                // An outbound call has no dialplan to go back to: it fails, with the reason.
                Some(call_id) => {
                    tracing::error!(channel = %channel.name, %call_id, "cannot set up streaming media: {e}; hanging up the outbound call");
                    let reason = format!("streaming media could not be set up: {e}");
                    if let Err(e) =
                        conversations.publisher.call_status(org.id, call_id, CallStatus::Failed, Some(&reason)).await
                    {
                        tracing::warn!(%call_id, "cannot store that the call failed: {e}");
                    }
                    let _ = client.hangup(&channel.id, Some(crate::ari::HangupReason::Normal)).await;
                }
                None => {
                    tracing::error!(channel = %channel.name, "cannot set up streaming media: {e}; the call goes back to the dialplan");
                    let _ = client.continue_after_stasis(&channel.id).await;
                }
            }
            return;
        }
    };
    let Setup { bridge, media_channel, session } = setup;
    let sender = session.sender();
    let start = CallStart {
        params,
        caller_id: channel.caller.number.clone(),
        dialed: channel.dialplan.as_ref().map(|d| d.exten.clone()).unwrap_or_default(),
        channel: channel.name.clone(),
        uniqueid: channel.id.clone(),
    };
    let mut path = StreamPath::new(conversations, inner, session, gone.subscribe(), channel.id.clone());
    path.bridge = bridge.clone();
    metrics::gauge!("asterai_conversations_active").increment(1.0);
    metrics::gauge!("asterai_stream_calls_active").increment(1.0);
    Conversation::start(conversations, path, start, org).await.converse().await;
    let stats = sender.stats();
    tracing::debug!(
        channel = %channel.name,
        frames_sent = stats.frames_sent,
        late_frames = stats.late_frames,
        frames_flushed = stats.frames_flushed,
        xoffs = stats.xoffs,
        "streaming call's outbound audio"
    );
    metrics::gauge!("asterai_stream_calls_active").decrement(1.0);
    metrics::gauge!("asterai_conversations_active").decrement(1.0);
    let _ = client.hangup(&media_channel, None).await;
    let _ = client.destroy_bridge(&bridge).await;
}

/// Answers, creates the bridge and the external media channel, connects, bridges.
async fn set_up(inner: &StreamInner, channel: &Channel) -> Result<Setup, String> {
    let client = &inner.client;
    let options = &inner.options;
    if channel.state != "Up" {
        client.answer(&channel.id).await.map_err(|e| format!("cannot answer: {e}"))?;
    }
    let support = {
        let mut known = inner.support.lock().await;
        match &*known {
            Some(support) => support.clone(),
            None => {
                let support = crate::ari::detect_media(client)
                    .await
                    .map_err(|e| format!("cannot ask Asterisk for its media transports: {e}"))?;
                tracing::info!("{}", support.describe());
                *known = Some(support.clone());
                support
            }
        }
    };
    let transport = options.transport(&support).ok_or_else(|| {
        "no media transport: Asterisk has neither chan_websocket nor (with stream.transport audiosocket) AudioSocket"
            .to_owned()
    })?;
    let codec = choose_codec(client, channel, &options.stream.format, transport).await;
    let bridge = client
        .create_bridge("mixing", Some(&format!("asterai-bridge-{}", uuid::Uuid::new_v4())), Some("asterai"))
        .await
        .map_err(|e| format!("cannot create the bridge: {e}"))?;
    let id = format!("{MEDIA_CHANNEL_PREFIX}{}", uuid::Uuid::new_v4());
    let (entered, in_app) = watch::channel(false);
    inner.media_channels.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), entered);
    match connect_media(inner, channel, &support, transport, codec, &bridge.id, &id, in_app).await {
        Ok(session) => {
            tracing::info!(channel = %channel.name, transport = %transport, format = %codec, "streaming media connected");
            Ok(Setup { bridge: bridge.id, media_channel: id, session })
        }
        Err(e) => {
            // Nothing of a failed set-up is left behind in Asterisk.
            let _ = client.hangup(&id, None).await;
            let _ = client.destroy_bridge(&bridge.id).await;
            inner.media_channels.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            Err(e)
        }
    }
}

/// Creates the external media channel `id`, connects to it, and bridges it with the caller once
/// Asterisk has put it into the application.
#[allow(clippy::too_many_arguments)]
async fn connect_media(
    inner: &StreamInner,
    channel: &Channel,
    support: &MediaSupport,
    transport: crate::media::Transport,
    codec: Codec,
    bridge: &str,
    id: &str,
    mut in_app: watch::Receiver<bool>,
) -> Result<MediaSession, String> {
    let client = &inner.client;
    let options = &inner.options;
    let session = match transport {
        crate::media::Transport::WebSocket => {
            let mut media = ExternalMedia::websocket_server(&options.app, codec.name(), support.json_control);
            media.channel_id = Some(id.to_owned());
            let created = client.external_media(&media).await.map_err(|e| format!("externalMedia: {e}"))?;
            let connection_id = created
                .channelvars
                .as_ref()
                .and_then(|vars| vars.get("MEDIA_WEBSOCKET_CONNECTION_ID"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| id.to_owned());
            let url = client.settings().media_url(&connection_id).map_err(|e| e.to_string())?;
            let control = if support.json_control { ControlFormat::Json } else { ControlFormat::PlainText };
            let ws = WebSocketOptions {
                control,
                connect_timeout: CONNECT_TIMEOUT,
                tls: client.tls(),
                ..WebSocketOptions::default()
            };
            websocket::connect(&url, ws).await.map_err(|e| e.to_string())?
        }
        crate::media::Transport::AudioSocket => {
            let server = options.audiosocket.as_ref().ok_or("no AudioSocket listener")?;
            let expected = server.expect(codec).map_err(|e| e.to_string())?;
            let host = server.local_addr().to_string();
            let mut media = ExternalMedia::audiosocket(&options.app, &host, &expected.uuid().to_string(), codec.name());
            media.channel_id = Some(id.to_owned());
            client.external_media(&media).await.map_err(|e| format!("externalMedia: {e}"))?;
            expected.connected(CONNECT_TIMEOUT).await.map_err(|e| e.to_string())?
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, in_app.wait_for(|entered| *entered)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err("the media channel ended before it entered the application".into()),
        Err(_) => {
            return Err(format!("the media channel did not enter the application within {CONNECT_TIMEOUT:?}"));
        }
    }
    client
        .add_to_bridge(bridge, &[channel.id.as_str(), id])
        .await
        .map_err(|e| format!("cannot bridge the caller with the media channel: {e}"))?;
    Ok(session)
}

/// `slin16` when asked for and the caller's channel is wideband (or cannot tell), else the
/// 8 kHz `slin`; `ulaw` only on chan_websocket when asked for.
async fn choose_codec(
    client: &AriClient,
    channel: &Channel,
    wanted: &str,
    transport: crate::media::Transport,
) -> Codec {
    let wanted = Codec::from_name(wanted).unwrap_or(Codec::Slin16);
    if wanted == Codec::Ulaw && transport == crate::media::Transport::AudioSocket {
        return Codec::Slin;
    }
    if wanted != Codec::Slin16 {
        return wanted;
    }
    match client.variable(&channel.id, "CHANNEL(audionativeformat)").await {
        Ok(native) => {
            let native = native.to_ascii_lowercase();
            let wideband = ["slin16", "g722", "opus", "slin24", "slin32", "slin48", "siren", "speex16", "silk16"]
                .iter()
                .any(|w| native.contains(w));
            if wideband { Codec::Slin16 } else { Codec::Slin }
        }
        Err(_) => Codec::Slin16,
    }
}

/// What the ear hands the call.
enum Ear {
    /// The caller finished a turn; its speech-to-text holds the audio.
    Turn {
        stt: Box<dyn TurnStt>,
        endpoint_ms: u32,
        last_voice_at: Instant,
        ended_at: Instant,
    },
    Dtmf(char),
}

/// State shared by the ear and the speaking side.
struct Shared {
    /// The agent is saying something (its audio may not be queued yet).
    speaking: AtomicBool,
    /// A caller turn has begun and not ended.
    in_turn: AtomicBool,
    /// The caller may talk over the agent: `[stream] barge_in`, or the call's agent's
    /// `barge_in` once the core has chosen the agent.
    barge_in: AtomicBool,
    /// The last barge-in (changes with each one).
    barge: watch::Sender<Barge>,
    /// Marks the caller has heard past.
    marks: Mutex<HashSet<String>>,
    /// A supervisor paused the AI: the ear drops what it hears.
    held: AtomicBool,
    /// The call as the supervisors' console sees it, once registered.
    live: std::sync::OnceLock<Arc<super::live::LiveCall>>,
}

impl Shared {
    /// The call is taken over and the supervisor speaks: what the ear hears is theirs.
    fn supervisor_heard(&self) -> bool {
        self.live
            .get()
            .is_some_and(|live| live.state() == super::live::AiState::TakenOver && live.supervisor_speaking())
    }
}

/// A barge-in, as the ear saw it.
#[derive(Debug, Clone, Copy, Default)]
struct Barge {
    /// Barge-ins so far.
    count: u64,
    /// Where the caller's speech began.
    onset: Option<Instant>,
    /// Agent audio not yet heard when the ear flushed it.
    unplayed: Duration,
}

/// One call's media as the core's media path.
pub struct StreamPath<'a> {
    stream: &'a StreamInner,
    sender: MediaSender,
    rate: u32,
    ear: tokio::sync::Mutex<mpsc::Receiver<Ear>>,
    gone: watch::Receiver<Option<String>>,
    shared: Arc<Shared>,
    caller_channel: String,
    /// The call's mixing bridge (the caller and the agent's media channel), which a whole-call
    /// recording records.
    bridge: String,
    answers: std::sync::atomic::AtomicU64,
    /// The agent the call runs (the built-in one until the core says).
    profile: Arc<Profile>,
    /// The speech-to-text of that agent (and its Deepgram live settings), which the ear reads
    /// for each utterance.
    stt: Arc<Mutex<AgentStt>>,
    /// The ear, until the agent is known (see [`StreamPath::new`]).
    /// (In a mutex so that the path is `Sync`: the ear is only `Send`.)
    pending_ear: Mutex<Option<EarTask>>,
    _ear_task: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

impl<'a> StreamPath<'a> {
    fn new(
        inner: &'a Inner,
        stream: &'a StreamInner,
        session: MediaSession,
        gone: watch::Receiver<Option<String>>,
        caller_channel: String,
    ) -> StreamPath<'a> {
        let sender = session.sender();
        let rate = session.format().rate();
        let (barge, _) = watch::channel(Barge::default());
        let shared = Arc::new(Shared {
            speaking: AtomicBool::new(false),
            in_turn: AtomicBool::new(false),
            barge_in: AtomicBool::new(stream.options.stream.barge_in),
            barge,
            marks: Mutex::new(HashSet::new()),
            held: AtomicBool::new(false),
            live: std::sync::OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel(8);
        let options = &stream.options.stream;
        let providers = &inner.builtin.providers;
        let stt = Arc::new(Mutex::new((providers.stt.clone(), providers.live_stt.clone())));
        let agent_stt = stt.clone();
        let new_stt: SttFactory = Box::new(move || -> Box<dyn TurnStt> {
            let (stt, live) = agent_stt.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match live {
                Some(live) => Box::new(LiveTurn::new(live, stt, rate)),
                None => Box::new(UtteranceStt::new(stt, rate)),
            }
        });
        let vad = VoiceActivity::new(rate, options.vad_params());
        // The ear starts once the core has chosen the agent ([`MediaPath::use_profile`]), so
        // that even the first turn is transcribed with the agent's speech-to-text; the caller's
        // frames wait in the media session's queue meanwhile (nothing is lost).
        let (pending_ear, ear_task) = match vad {
            Ok(vad) => {
                let ear = EarTask {
                    session,
                    vad,
                    new_stt,
                    speculative: options.speculative(),
                    shared: shared.clone(),
                    tx,
                    gone: gone.clone(),
                };
                (Some(ear), None)
            }
            Err(e) => {
                tracing::error!("{e}; the call cannot hear the caller");
                let deaf = tokio::spawn(async move {
                    let _session = session;
                    let _tx = tx;
                    std::future::pending::<()>().await
                });
                (None, Some(tokio_util::task::AbortOnDropHandle::new(deaf)))
            }
        };
        StreamPath {
            stream,
            sender,
            rate,
            ear: tokio::sync::Mutex::new(rx),
            gone,
            shared,
            caller_channel,
            bridge: String::new(),
            answers: std::sync::atomic::AtomicU64::new(0),
            profile: inner.builtin.clone(),
            stt,
            pending_ear: Mutex::new(pending_ear),
            _ear_task: ear_task,
        }
    }

    /// Starts the ear if it has not started yet.
    fn start_ear(&mut self) {
        let pending = self.pending_ear.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ear) = pending {
            self._ear_task = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(ear.run())));
        }
    }

    fn gone_now(&self) -> bool {
        self.gone.borrow().is_some() || self.sender.is_closed()
    }

    async fn wait_gone(&self) {
        let mut gone = self.gone.clone();
        let _ = gone.wait_for(|g| g.is_some()).await;
    }

    /// Speaks a stream of text, sentence by sentence; see the module docs.
    async fn play(&self, mut chunks: ChunkStream, cached: bool) -> Speech {
        let answer = self.answers.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = Speech::default();
        let mut barge = self.shared.barge.subscribe();
        barge.mark_unchanged();
        self.shared.speaking.store(true, Ordering::SeqCst);
        let mut splitter = SentenceSplitter::default();
        // Each sentence sent: its text, the length of its audio queued, and its mark.
        let mut sent: Vec<(String, Duration, String)> = Vec::new();
        let mut interrupted = None;
        'answer: loop {
            let next = tokio::select! {
                next = chunks.next() => next,
                _ = barge.changed() => { interrupted = Some(*barge.borrow()); break 'answer; }
                _ = self.wait_gone() => { out.hung_up = true; break 'answer; }
            };
            let ended = !matches!(next, Some(Ok(_)));
            let sentences = match next {
                None => splitter.finish().into_iter().collect::<Vec<_>>(),
                Some(Ok(Chunk::Text(text))) => {
                    out.text.push_str(&text);
                    splitter.push(&text)
                }
                Some(Ok(Chunk::Analysis(analysis))) => {
                    out.analysis = Some(analysis);
                    continue;
                }
                Some(Ok(Chunk::ToolCalls(calls))) => {
                    out.tool_calls = calls;
                    continue;
                }
                Some(Err(error)) => {
                    out.error = Some(error);
                    splitter.finish().into_iter().collect()
                }
            };
            for sentence in sentences {
                out.first_sentence_at.get_or_insert_with(Instant::now);
                let mark = format!("a{answer}-s{}", sent.len() + 1);
                let mut queued = Duration::ZERO;
                let said = tokio::select! {
                    said = self.say_sentence(&sentence, cached, &mut out, &mut queued) => said,
                    _ = barge.changed() => {
                        interrupted = Some(*barge.borrow());
                        sent.push((sentence.trim().to_owned(), queued, mark));
                        break 'answer;
                    }
                    _ = self.wait_gone() => {
                        out.hung_up = true;
                        sent.push((sentence.trim().to_owned(), queued, mark));
                        break 'answer;
                    }
                };
                match said {
                    Ok(()) => {
                        let _ = self.sender.mark(&mark).await;
                        sent.push((sentence.trim().to_owned(), queued, mark));
                        out.played += 1;
                    }
                    Err(error) => {
                        tracing::warn!("text-to-speech failed; the sentence is skipped: {error}");
                        out.tts_failures += 1;
                        out.tts_error.get_or_insert(error);
                    }
                }
            }
            if ended {
                break;
            }
        }
        // Everything is queued: wait until the caller heard it, talked over it, or left.
        if interrupted.is_none() && !out.hung_up {
            loop {
                if !self.sender.is_playing() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = barge.changed() => { interrupted = Some(*barge.borrow()); break; }
                    _ = self.wait_gone() => { out.hung_up = true; break; }
                }
            }
        }
        // A barge-in that came as the audio ran out (the flush emptied the queue) still is one.
        if interrupted.is_none() && barge.has_changed().unwrap_or(false) {
            interrupted = Some(*barge.borrow_and_update());
        }
        let mut unplayed = self.sender.unplayed();
        if let Some(barge) = interrupted {
            // The ear flushed already; this stops whatever the answer queued since.
            let _ = self.sender.flush().await;
            unplayed = barge.unplayed;
            out.interrupted = true;
            metrics::counter!("asterai_barge_ins_total").increment(1);
        }
        self.shared.speaking.store(false, Ordering::SeqCst);
        out.heard = if out.interrupted || out.hung_up {
            let heard_marks = self.shared.marks.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let total = sent.iter().map(|(_, length, _)| *length).sum::<Duration>();
            heard_of(&sent, total.saturating_sub(unplayed), &heard_marks)
        } else {
            sent.iter().map(|(text, _, _)| text.clone()).collect()
        };
        out
    }

    /// Synthesizes one sentence and queues its audio as it arrives, counting it in `queued`.
    async fn say_sentence(
        &self,
        sentence: &str,
        cached: bool,
        out: &mut Speech,
        queued: &mut Duration,
    ) -> Result<(), SpeechError> {
        let deadline = Instant::now() + self.profile.settings.tts_timeout;
        if !cached {
            let asked = Instant::now();
            match self.profile.providers.streaming_tts.stream(sentence, self.rate, deadline).await {
                Ok(pcm) => match pcm.to_rate(self.rate) {
                    Ok(mut pcm) => {
                        let mut samples = 0usize;
                        while let Some(chunk) = pcm.next().await {
                            let chunk = chunk?;
                            if samples == 0 {
                                let now = Instant::now();
                                out.first_audio_at.get_or_insert(now);
                                out.first_tts_provider.get_or_insert(now - asked);
                                out.first_play_at.get_or_insert(now);
                            }
                            samples += chunk.len();
                            self.sender.send_audio(&chunk).await.map_err(|e| closed(&e.to_string()))?;
                            *queued = Duration::from_secs_f64(samples as f64 / self.rate as f64);
                        }
                        return Ok(());
                    }
                    Err(e) => tracing::warn!("{e}; using the speech cache"),
                },
                Err(e) => tracing::warn!("streaming text-to-speech failed ({e}); trying the speech cache"),
            }
        }
        let spoken = self.profile.providers.voice.speak(sentence, deadline).await?;
        let file = spoken.file.with_extension("wav");
        let rate = self.rate;
        let samples = tokio::task::spawn_blocking(move || -> Result<Vec<i16>, String> {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let samples = audio::decode_wav(&bytes).map_err(|e| e.to_string())?;
            // The cache holds 8 kHz audio.
            if rate == 8000 {
                return Ok(samples);
            }
            let mut resampler = StreamResampler::new(8000, rate).map_err(|e| e.to_string())?;
            let mut out = resampler.push_i16(&samples);
            out.extend(resampler.finish_i16());
            Ok(out)
        })
        .await
        .map_err(|e| closed(&e.to_string()))?
        .map_err(|message| SpeechError::Failed { provider: "cache", message })?;
        let now = Instant::now();
        out.first_audio_at.get_or_insert(now);
        out.first_tts_provider.get_or_insert(spoken.provider_time);
        out.first_play_at.get_or_insert(now);
        self.sender.send_audio(&samples).await.map_err(|e| closed(&e.to_string()))?;
        *queued = Duration::from_secs_f64(samples.len() as f64 / rate as f64);
        Ok(())
    }
}

fn closed(message: &str) -> SpeechError {
    SpeechError::Failed { provider: "media", message: message.to_owned() }
}

/// What the caller heard of the sentences sent: those whose mark came back, and those that
/// fit in `played`; the first one past it cut in proportion, at a word boundary.
fn heard_of(sent: &[(String, Duration, String)], played: Duration, marks: &HashSet<String>) -> Vec<String> {
    let mut heard = Vec::new();
    let mut at = Duration::ZERO;
    for (text, length, mark) in sent {
        if marks.contains(mark) || at + *length <= played {
            heard.push(text.clone());
            at += *length;
            continue;
        }
        let part = played.saturating_sub(at).as_secs_f64() / length.as_secs_f64().max(0.001);
        let words: Vec<&str> = text.split_whitespace().collect();
        let keep = (words.len() as f64 * part).floor() as usize;
        if keep > 0 {
            heard.push(words[..keep].join(" "));
        }
        break;
    }
    heard
}

impl MediaPath for StreamPath<'_> {
    fn use_profile(&mut self, profile: &Arc<Profile>) {
        *self.stt.lock().unwrap_or_else(|e| e.into_inner()) =
            (profile.providers.stt.clone(), profile.providers.live_stt.clone());
        // An agent's configuration has its `barge_in` over the daemon's (see AgentSpec::apply);
        // the built-in agent follows `[stream] barge_in`.
        let barge_in = match &profile.agent {
            Some(_) => profile.settings.base.stream.barge_in,
            None => self.stream.options.stream.barge_in,
        };
        if !barge_in {
            tracing::debug!(agent = ?profile.agent, "barge-in is off for this call");
        }
        self.shared.barge_in.store(barge_in, Ordering::SeqCst);
        self.profile = profile.clone();
        self.start_ear();
    }

    /// The ear hears on while nobody listens: a turn it finishes waits in its queue.
    fn listen_cancel_safe(&self) -> bool {
        true
    }

    fn supervised_as(&mut self, call: &Arc<super::live::LiveCall>) {
        let _ = self.shared.live.set(call.clone());
    }

    async fn answer(&mut self) -> Result<(), String> {
        // Answered before the media was set up.
        Ok(())
    }

    async fn call_id(&mut self, call_id: &str) {
        let _ = self.stream.client.set_variable(&self.caller_channel, "ASTERAI_CALL_ID", call_id).await;
    }

    async fn say(&self, text: &str) -> Speech {
        let chunks: ChunkStream = Box::pin(futures_util::stream::iter(vec![Ok(Chunk::Text(text.to_owned()))]));
        self.play(chunks, true).await
    }

    async fn speak(&self, answer: ChunkStream) -> Speech {
        self.play(answer, false).await
    }

    async fn listen(&mut self, limit: Duration) -> Heard {
        let config = &self.profile.settings.conversation;
        let no_input = self.stream.options.stream.no_input.0.min(limit);
        let started = Instant::now();
        let hard_limit = started + limit.min(config.max_utterance.0 + no_input);
        // The core chose the agent before listening; should it not have, the ear hears anyway.
        self.start_ear();
        let mut ear = self.ear.lock().await;
        let mut quiet_until = started + no_input;
        loop {
            let wake =
                if self.shared.in_turn.load(Ordering::SeqCst) { hard_limit } else { quiet_until.min(hard_limit) };
            tokio::select! {
                heard = ear.recv() => match heard {
                    Some(Ear::Turn { mut stt, endpoint_ms, last_voice_at, ended_at }) => {
                        return Heard::Utterance(Utterance {
                            endpoint_ms,
                            // A turn that ended while the agent was still talking (barge-in
                            // off) waited for it: its turn budget starts now, not then.
                            ended_at: ended_at.max(started),
                            last_voice_at: Some(last_voice_at),
                            transcribe: Box::new(move |deadline| {
                                Box::pin(async move { stt.finish(deadline).await.map(|t| t.text) })
                            }),
                        });
                    }
                    Some(Ear::Dtmf(digit)) => {
                        let now = Instant::now();
                        return Heard::Utterance(Utterance {
                            endpoint_ms: 0,
                            ended_at: now,
                            last_voice_at: None,
                            transcribe: Box::new(move |_| Box::pin(async move { Ok(format!("The caller pressed {digit}.")) })),
                        });
                    }
                    None => return Heard::HungUp,
                },
                _ = self.wait_gone() => return Heard::HungUp,
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= hard_limit {
                        return Heard::Silence;
                    }
                    if self.shared.in_turn.load(Ordering::SeqCst) {
                        continue;
                    }
                    if Instant::now() >= quiet_until {
                        return Heard::Silence;
                    }
                    quiet_until = Instant::now() + no_input;
                }
            }
        }
    }

    async fn hung_up(&self) {
        self.wait_gone().await
    }

    fn is_gone(&self) -> bool {
        self.gone_now()
    }

    fn is_wrapping_up(&self) -> bool {
        self.stream.wrap_up.is_cancelled()
    }

    async fn who_hung_up(&self, when: &str) -> String {
        match self.gone.borrow().as_deref() {
            Some(why) => format!("{}{when} ({why})", super::core::CALLER_HUNG_UP),
            None => format!("{}{when}", super::core::CALLER_HUNG_UP),
        }
    }

    async fn send_dtmf(&self, digits: &str) -> Result<(), String> {
        self.stream.client.send_dtmf(&self.caller_channel, digits).await.map_err(|e| e.to_string())
    }

    fn recording_via(&self) -> RecordingVia {
        RecordingVia::Bridge
    }

    async fn start_recording(&mut self, name: &str, dir: &std::path::Path) -> Result<Collect, String> {
        if self.bridge.is_empty() {
            return Err("the call has no bridge to record".into());
        }
        super::call_recording::ensure_dir(dir).await?;
        let record = crate::ari::Record {
            if_exists: Some("fail".into()),
            terminate_on: Some("none".into()),
            ..crate::ari::Record::wav(name)
        };
        let client = &self.stream.client;
        client
            .record_bridge(&self.bridge, &record)
            .await
            .map_err(|e| format!("Asterisk refused to record the bridge: {e}"))?;
        Ok(Collect::Ari { client: client.clone(), name: name.to_owned(), path: dir.join(format!("{name}.wav")) })
    }

    async fn recording_note(&self, state: &str, why: &str) {
        if self.gone_now() {
            return;
        }
        let _ = self.stream.client.set_variable(&self.caller_channel, "ASTERAI_RECORDING", state).await;
        if state != "on" {
            tracing::info!(channel = %self.caller_channel, "call recording {state}: {why}");
        }
    }

    fn kind(&self) -> &'static str {
        "stream"
    }

    fn bridge(&self) -> Option<&str> {
        Some(&self.bridge)
    }

    /// Music on hold on the caller's channel (ARI), the agent's audio flushed, and the ear deaf
    /// until the hold ends (what it heard meanwhile is dropped).
    async fn hold(&self, on: bool) -> Result<(), String> {
        self.shared.held.store(on, Ordering::SeqCst);
        let client = &self.stream.client;
        if on {
            let _ = self.sender.flush().await;
            client.start_moh(&self.caller_channel, None).await.map_err(|e| e.to_string())
        } else {
            let mut ear = self.ear.lock().await;
            while ear.try_recv().is_ok() {}
            client.stop_moh(&self.caller_channel).await.map_err(|e| e.to_string())
        }
    }

    async fn finish(&mut self, outcome: Outcome, hang_up: bool) {
        let client = &self.stream.client;
        let channel = &self.caller_channel;
        if self.gone_now() {
            return;
        }
        // Let the last words play out.
        while self.sender.is_playing() && !self.gone_now() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = client.set_variable(channel, "ASTERAI_OUTCOME", outcome.as_str()).await;
        let _ = client.set_variable(channel, "ASTERAI_STATUS", "ok").await;
        if outcome == Outcome::Transferred && !hang_up {
            // The transfer moved the channel out of the application already (its StasisEnd may
            // not have arrived yet): a second continue could send it back to the dialplan
            // after Stasis() instead of to the transfer target.
            return;
        }
        let result = if hang_up {
            client.hangup(channel, Some(crate::ari::HangupReason::Normal)).await
        } else {
            client.continue_after_stasis(channel).await
        };
        if let Err(e) = result {
            tracing::debug!(channel = %channel, "ending the streaming call: {e}");
        }
    }
}

type SttFactory = Box<dyn Fn() -> Box<dyn TurnStt> + Send>;

/// An agent's speech-to-text, and its Deepgram live settings when it uses Deepgram.
type AgentStt = (Arc<dyn SpeechToText>, Option<crate::speech::stt_stream::DeepgramLive>);

/// The task that hears the caller: frames in, voice activity, speech-to-text, barge-in.
struct EarTask {
    session: MediaSession,
    vad: VoiceActivity,
    new_stt: SttFactory,
    speculative: bool,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Ear>,
    gone: watch::Receiver<Option<String>>,
}

impl EarTask {
    async fn run(mut self) {
        let sender = self.session.sender();
        let frame = self.session.format().frame_duration();
        let mut stt = (self.new_stt)();
        let mut preroll: VecDeque<Vec<i16>> = VecDeque::new();
        let mut in_turn = false;
        let mut started = false;
        let mut heard_until = Instant::now();
        let mut tick = tokio::time::interval(frame);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let events = tokio::select! {
                event = self.session.recv() => match event {
                    None | Some(MediaEvent::Closed(_)) => return,
                    Some(MediaEvent::Audio(_)) if self.shared.held.load(Ordering::SeqCst) => {
                        // On hold: nothing is heard, and a turn begun is dropped.
                        if in_turn {
                            stt.cancel();
                            stt = (self.new_stt)();
                            in_turn = false;
                            started = false;
                            self.shared.in_turn.store(false, Ordering::SeqCst);
                        }
                        preroll.clear();
                        continue;
                    }
                    Some(MediaEvent::Audio(samples)) => {
                        heard_until = Instant::now();
                        // Taken over, the supervisor's voice (mixed in by the bridge) is not
                        // the caller's: silence, which also ends a caller's turn under way.
                        let samples = if self.shared.supervisor_heard() { vec![0; samples.len()] } else { samples };
                        if in_turn {
                            stt.audio(&samples);
                        } else {
                            preroll.push_back(samples.clone());
                            if preroll.len() > PREROLL_FRAMES {
                                preroll.pop_front();
                            }
                        }
                        let events = self.vad.push(&samples);
                        if !in_turn && self.vad.state() != VadState::Quiet {
                            in_turn = true;
                            for frame in preroll.drain(..) {
                                stt.audio(&frame);
                            }
                        }
                        events
                    }
                    Some(MediaEvent::Dtmf(digit)) => {
                        if self.tx.send(Ear::Dtmf(digit)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(MediaEvent::MarkProcessed(mark)) => {
                        self.shared.marks.lock().unwrap_or_else(|e| e.into_inner()).insert(mark);
                        continue;
                    }
                    Some(MediaEvent::Error(e)) => {
                        tracing::debug!("media channel error: {e}");
                        continue;
                    }
                    Some(_) => continue,
                },
                _ = tick.tick() => {
                    // chan_websocket sends nothing while the caller's side is silent: that
                    // time is silence to the detector.
                    let silent = heard_until.elapsed();
                    if silent < frame * 3 {
                        continue;
                    }
                    heard_until = Instant::now();
                    self.vad.push_gap(silent)
                }
                _ = gone_changed(&mut self.gone) => return,
            };
            let now = Instant::now();
            for event in events {
                match event {
                    VadEvent::SpeechStarted { onset, .. } => {
                        started = true;
                        self.shared.in_turn.store(true, Ordering::SeqCst);
                        let talking = sender.is_playing() || self.shared.speaking.load(Ordering::SeqCst);
                        if talking && self.shared.barge_in.load(Ordering::SeqCst) {
                            let speech = self.vad.clock().saturating_sub(onset);
                            let onset_at = now.checked_sub(speech).unwrap_or(now);
                            let unplayed = sender.unplayed();
                            // Where the time of a barge-in goes: the speech the detector needed,
                            // the caller frames still waiting for the ear, writing the flush.
                            let backlog = self.session.backlog();
                            let detected = Instant::now();
                            let _ = sender.flush().await;
                            tracing::debug!(
                                speech_ms = speech.as_millis() as u64,
                                backlog_frames = backlog,
                                flush_ms = detected.elapsed().as_millis() as u64,
                                "barge-in: FLUSH_MEDIA sent"
                            );
                            metrics::histogram!("asterai_barge_in_seconds").record(onset_at.elapsed().as_secs_f64());
                            self.shared.barge.send_modify(|barge| {
                                barge.count += 1;
                                barge.onset = Some(onset_at);
                                barge.unplayed = unplayed;
                            });
                        }
                    }
                    VadEvent::ShortPause { .. } if self.speculative => stt.short_pause(),
                    VadEvent::SpeechResumed { .. } if self.speculative => stt.resumed(),
                    VadEvent::SpeechEnded { last_voiced, at } => {
                        let endpoint = at.saturating_sub(last_voiced);
                        let last_voice_at =
                            now.checked_sub(self.vad.clock().saturating_sub(last_voiced)).unwrap_or(now);
                        let turn = std::mem::replace(&mut stt, (self.new_stt)());
                        in_turn = false;
                        started = false;
                        self.shared.in_turn.store(false, Ordering::SeqCst);
                        let ear = Ear::Turn {
                            stt: turn,
                            endpoint_ms: endpoint.as_millis() as u32,
                            last_voice_at,
                            ended_at: now,
                        };
                        if self.tx.send(ear).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
            }
            if in_turn && !started && self.vad.state() == VadState::Quiet {
                // A sound too short to be speech (a click, a cough).
                stt.cancel();
                in_turn = false;
            }
        }
    }
}

async fn gone_changed(gone: &mut watch::Receiver<Option<String>>) {
    let _ = gone.wait_for(|g| g.is_some()).await;
}
