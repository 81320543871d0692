//! One [`Config`] for the whole daemon: a TOML file, then `ASTERAI_*` environment variables on
//! top, validated once at start-up.
//!
//! * The file is `--config PATH`, else `$ASTERAI_CONFIG`, else `/etc/asterai/asterai.toml` if it
//!   exists, else none: every key has a default, so no file is needed.
//! * Every key `section.name` can be overridden by `ASTERAI_SECTION_NAME`, e.g.
//!   `ASTERAI_AGI_LISTEN=0.0.0.0:4573`. Lists take comma-separated values.
//! * An unknown key, an unknown `ASTERAI_*` variable or a bad value stops start-up with a message
//!   naming the key (or variable) and what was expected.
//!
//! `asterisk-config/asterai.toml` documents every key; a test keeps it in step with this file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::agi::PeerRule;

/// The default config file, read when it exists and no other file is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/asterai/asterai.toml";

/// `ASTERAI_*` variables that are command-line options rather than config keys.
pub const CLI_ENV: &[&str] =
    &["ASTERAI_CONFIG", "ASTERAI_TOKEN", "ASTERAI_FEED_URL", "ASTERAI_LOG_FORMAT", "ASTERAI_LOG_LEVEL"];

/// A duration written like `5s`, `250ms`, `2m`, `1h` or `1h 30m` (parsed by `humantime`).
///
/// Whole milliseconds, at most [`Dur::MAX`]: every duration a user writes ends up added to a
/// clock somewhere, and a bound here means no such sum can overflow, whatever the field. Each
/// field has its own, tighter bound on top (see [`Dur::within`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration any setting accepts: 366 days.
    pub const MAX: Dur = Dur(Duration::from_secs(366 * 24 * 3600));

    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// Checks `min ..= max` for the setting `key`; the error names the key and both bounds.
    pub fn within(self, key: &str, min: Dur, max: Dur) -> Result<Dur, String> {
        if self < min {
            return Err(if min.0.is_zero() {
                format!("{key}: expected a duration of at least {min}, got {self}")
            } else if min == Dur::millis(1) {
                format!("{key}: expected a duration above zero, got {self}")
            } else {
                format!("{key}: expected at least {min}, got {self}")
            });
        }
        if self > max {
            return Err(format!("{key}: expected at most {max}, got {self}"));
        }
        Ok(self)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let expected = || format!("expected a duration such as \"5s\", \"250ms\", \"2m\" or \"1h\", got {text:?}");
        let trimmed = text.trim();
        // humantime reads a bare "0" as zero; every other number needs its unit.
        if trimmed.is_empty() || (trimmed.bytes().all(|b| b.is_ascii_digit()) && trimmed != "0") {
            return Err(expected());
        }
        let duration = humantime::parse_duration(trimmed).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => format!("{text:?} is too long; expected at most {}", Dur::MAX),
            _ => expected(),
        })?;
        if duration > Dur::MAX.0 {
            return Err(format!("{text:?} is too long; expected at most {}", Dur::MAX));
        }
        if duration.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!("{text:?}: expected whole milliseconds"));
        }
        Ok(Dur(duration))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            ms if ms % 86_400_000 == 0 && ms >= 2 * 86_400_000 => write!(f, "{}d", ms / 86_400_000),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret (API key, password). It never appears in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

impl Serialize for Secret {
    /// Serialized redacted, so `asterai config` never prints it.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for journald or log shippers.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where the embedded database and other state live. Empty: `$STATE_DIRECTORY` (systemd),
    /// else `/var/lib/asterai` for root, else `$XDG_STATE_HOME/asterai` or
    /// `~/.local/state/asterai`.
    pub data_dir: String,
    /// On SIGTERM/SIGINT, how long sessions in flight may take to finish.
    pub shutdown_grace: Dur,
    /// How often the daemon records in the database that it is alive (it holds its calls).
    pub heartbeat_interval: Dur,
    /// A daemon whose last heartbeat is older than this is dead: another daemon of the fleet
    /// finishes its unfinished calls.
    pub dead_after: Dur,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: String::new(),
            shutdown_grace: Dur::secs(30),
            heartbeat_interval: Dur::secs(10),
            dead_after: Dur::secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, or per module like `info,asterai::agi=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgiConfig {
    /// FastAGI listener.
    pub listen: SocketAddr,
    /// Sessions served at once; connections beyond it are closed at once.
    pub max_sessions: usize,
    /// Time allowed for Asterisk's environment block.
    pub handshake_timeout: Dur,
    /// Time allowed for a reply beyond what the command itself may take.
    pub reply_grace: Dur,
    /// Addresses or networks (`10.0.0.0/8`) allowed to connect. Empty allows all.
    pub allowed_peers: Vec<String>,
}

impl Default for AgiConfig {
    fn default() -> Self {
        AgiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4573)),
            max_sessions: 1000,
            handshake_timeout: Dur::secs(5),
            reply_grace: Dur::secs(30),
            allowed_peers: Vec::new(),
        }
    }
}

impl AgiConfig {
    /// The listener settings for [`crate::agi::AgiServer`].
    pub fn server_config(&self) -> crate::agi::ServerConfig {
        crate::agi::ServerConfig {
            max_sessions: self.max_sessions,
            handshake_timeout: self.handshake_timeout.0,
            reply_grace: self.reply_grace.0,
            allowed_peers: self.allowed_peers.iter().filter_map(|p| p.parse().ok()).collect(),
            ..crate::agi::ServerConfig::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTP listener: health, metrics, REST API, live feed and the monitor page.
    pub listen: SocketAddr,
    /// Connections open at once (feed WebSockets included); further ones wait in the kernel's
    /// backlog until one closes.
    pub max_connections: usize,
    /// Time allowed for one request, its body included; then 408. The feed's WebSocket is not
    /// cut: the limit ends with the upgrade.
    pub request_timeout: Dur,
    /// Largest request body, except contact imports; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest CSV body of `POST /v1/campaigns/{id}/contacts`.
    pub max_import_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4574)),
            max_connections: 4096,
            request_timeout: Dur::secs(60),
            max_body_bytes: 1 << 20,
            max_import_bytes: 64 << 20,
        }
    }
}

impl HttpConfig {
    /// The limits the HTTP server applies.
    pub fn limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            max_connections: self.max_connections,
            request_timeout: self.request_timeout.0,
            max_body_bytes: self.max_body_bytes,
            max_import_bytes: self.max_import_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Empty: the embedded SQLite file `asterai.db` in the data directory. Otherwise
    /// `postgres://user:password@host/db` (fleets), `sqlite:///path/to/file.db` or a path.
    pub url: Secret,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Dur,
    /// Apply pending migrations when `asterai serve` starts.
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::default(),
            max_connections: 10,
            connect_timeout: Dur::secs(5),
            migrate_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// How often feed clients are pinged; a client that has not answered by the next ping is
    /// dropped.
    pub ping_interval: Dur,
    /// Events queued per client. When a client falls this far behind it is closed with code
    /// 4001 and the last id delivered, and resumes with ?since=.
    pub client_queue: usize,
    /// How long one write to a client may take before the client is dropped.
    pub write_timeout: Dur,
    /// Largest message a client may send (its filter messages).
    pub max_message_bytes: usize,
    /// How often the hub reads the event log even without a notification.
    pub poll_interval: Dur,
    /// Events are handed to clients at most this often, in batches: fewer writes per event
    /// when many supervisors watch, at the cost of at most this much latency.
    pub batch_window: Dur,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            ping_interval: Dur::secs(20),
            client_queue: 1024,
            write_timeout: Dur::secs(10),
            max_message_bytes: 64 * 1024,
            poll_interval: Dur::secs(1),
            batch_window: Dur::millis(5),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Synthesized speech, cached: asterai writes, Asterisk reads. Empty: `<data_dir>/media`.
    pub dir: String,
    /// Callers' recordings: Asterisk writes, asterai reads. Empty: `<data_dir>/recordings`.
    pub recordings_dir: String,
    /// Keep each call's recordings instead of deleting them once transcribed.
    pub keep_recordings: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationConfig {
    /// The agent's name, `{agent_name}` in prompts and phrases.
    pub agent_name: String,
    /// `{company}` in prompts and phrases. Empty: the organization's name.
    pub company: String,
    /// First words on a call someone placed to us.
    pub greeting_inbound: String,
    /// First words on a call we placed.
    pub greeting_outbound: String,
    /// Say `disclosure` right after the greeting.
    pub ai_disclosure: bool,
    pub disclosure: String,
    /// Said when the caller was silent.
    pub reprompt: String,
    /// Said when a provider failed or ran out of time this turn.
    pub fallback: String,
    /// Said before hanging up, when nothing else said goodbye.
    pub goodbye: String,
    /// Said after a do-not-call request has been recorded.
    pub dnc_confirmation: String,
    /// Said after a callback request.
    pub callback_confirmation: String,
    /// Said when providers keep failing and the call must end.
    pub failure_goodbye: String,
    /// Said when the caller stays silent.
    pub no_response_goodbye: String,
    /// Said when a transfer to a person is not possible.
    pub transfer_unavailable: String,
    /// Left on an answering machine (the dialplan's `AMD()` said MACHINE); empty hangs up
    /// without a message.
    pub voicemail_message: String,
    /// Caller turns before the agent says goodbye.
    pub max_turns: u32,
    /// Longest call before the agent says goodbye.
    pub max_duration: Dur,
    /// Silence that ends the caller's turn. Whole seconds (Asterisk's `s=`).
    pub silence: Dur,
    /// Longest single utterance recorded.
    pub max_utterance: Dur,
    /// Loudness below which a recording counts as silence, in dBFS.
    pub silence_threshold_dbfs: f64,
    /// Silent turns in a row (each answered with `reprompt`) before the call ends.
    pub max_silent_turns: u32,
    /// Turns in a row where a provider failed before the call ends.
    pub max_failed_turns: u32,
    /// Time each turn may spend on speech-to-text and the responder, retries included.
    pub turn_budget: Dur,
    /// Speak the first sentence while the rest is still being written and synthesized.
    pub pipelining: bool,
    /// Hang up when the conversation ends (otherwise the dialplan continues after AGI()).
    pub hangup_at_end: bool,
    /// How outbound calls hold their conversation when a call or campaign does not say:
    /// `agi` (the dialplan's FastAGI route) or `stream` (stays in Stasis, streaming media).
    pub media: String,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        ConversationConfig {
            agent_name: "Ava".into(),
            company: String::new(),
            greeting_inbound: "Hello, thank you for calling {company}. This is {agent_name}. How can I help you today?"
                .into(),
            greeting_outbound:
                "Hello {first_name|there}, this is {agent_name} calling from {company}. Do you have a minute?".into(),
            ai_disclosure: true,
            disclosure: "Just so you know, I'm an AI assistant, and this call may be recorded.".into(),
            reprompt: "Sorry, I didn't hear anything. Are you still there?".into(),
            fallback: "Sorry, I'm having a little trouble on my end. Could you say that again?".into(),
            goodbye: "Thank you for your time. Goodbye!".into(),
            dnc_confirmation: "I've added your number to our do-not-call list, and you won't be called again. Goodbye."
                .into(),
            callback_confirmation: "Someone will call you back. Thank you, and goodbye!".into(),
            failure_goodbye: "I'm sorry, I'm having technical difficulties. Someone will call you back. Goodbye."
                .into(),
            no_response_goodbye: "I can't hear anyone, so I'll hang up now. Goodbye.".into(),
            transfer_unavailable: "I'm sorry, I can't connect you with a person right now, but I can keep helping you."
                .into(),
            voicemail_message:
                "Hello {first_name|there}, this is {agent_name} from {company}. Sorry we missed you; we will try again another time. Goodbye."
                    .into(),
            max_turns: 20,
            max_duration: Dur::secs(600),
            silence: Dur::secs(1),
            max_utterance: Dur::secs(30),
            silence_threshold_dbfs: -45.0,
            max_silent_turns: 2,
            max_failed_turns: 2,
            turn_budget: Dur::secs(8),
            pipelining: true,
            hangup_at_end: true,
            media: "agi".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttConfig {
    /// `openai` (OpenAI-compatible /audio/transcriptions), `deepgram`, or `scripted` (demo and
    /// tests only: reads transcripts a simulated caller attached to its recordings).
    pub provider: String,
    /// Base URL up to `/v1`. Empty: https://api.openai.com/v1 or https://api.deepgram.com/v1.
    pub url: String,
    /// Empty: `whisper-1` (openai) or `nova-3` (deepgram).
    pub model: String,
    pub api_key: Secret,
    /// Language code such as `en`; empty lets the provider detect it.
    pub language: String,
    /// Time allowed for one request.
    pub timeout: Dur,
    /// Retries after a 429, 5xx, timeout or connection error.
    pub retries: u32,
}

impl Default for SttConfig {
    fn default() -> Self {
        SttConfig {
            provider: "openai".into(),
            url: String::new(),
            model: String::new(),
            api_key: Secret::default(),
            language: "en".into(),
            timeout: Dur::secs(10),
            retries: 2,
        }
    }
}

/// The default system prompt of the `openai` responder.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are {agent_name}, a friendly AI phone agent for {company}, on a live phone call. \
Everything you write is spoken aloud: use short, natural sentences, at most three, and no lists, markdown or emojis. \
If the caller asks not to be called again, acknowledge it. If they ask for a person, say you will connect them. \
What we know about the caller: {contact|nothing yet}. \
After your reply, on a new line, write <analysis>{\"intent\": \"one word\", \"emotion\": \"neutral|positive|negative|angry|confused\", \"confidence\": 0.0 to 1.0, \"action\": \"continue|end|do_not_call|transfer|callback\"}</analysis>. The caller never hears it.";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponderConfig {
    /// `rules` (built in, no network) or `openai` (OpenAI-compatible /chat/completions, streamed).
    pub provider: String,
    /// Base URL up to `/v1`. Empty: https://api.openai.com/v1.
    pub url: String,
    /// Empty: `gpt-4o-mini`.
    pub model: String,
    pub api_key: Secret,
    /// The system prompt; `{agent_name}`, `{company}`, `{contact}` and contact fields are filled in.
    pub system_prompt: String,
    pub temperature: f64,
    pub max_tokens: u32,
    /// A TOML file of rules for the `rules` responder; empty uses the built-in rules.
    pub rules_file: String,
    pub timeout: Dur,
    pub retries: u32,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            provider: "rules".into(),
            url: String::new(),
            model: String::new(),
            api_key: Secret::default(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            temperature: 0.4,
            max_tokens: 300,
            rules_file: String::new(),
            timeout: Dur::secs(10),
            retries: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// `espeak` (local espeak-ng, no network), `openai` (OpenAI-compatible /audio/speech) or
    /// `elevenlabs`.
    pub provider: String,
    /// Base URL up to `/v1`. Empty: https://api.openai.com/v1 or https://api.elevenlabs.io/v1.
    pub url: String,
    /// Empty: `tts-1` (openai) or `eleven_flash_v2_5` (elevenlabs).
    pub model: String,
    /// Empty: `alloy` (openai), Rachel `21m00Tcm4TlvDq8ikWAM` (elevenlabs), `en-us` (espeak).
    pub voice: String,
    pub api_key: Secret,
    /// espeak-ng words per minute.
    pub speed: u32,
    /// The espeak-ng program.
    pub espeak_program: String,
    pub timeout: Dur,
    pub retries: u32,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            provider: "espeak".into(),
            url: String::new(),
            model: String::new(),
            voice: String::new(),
            api_key: Secret::default(),
            speed: 165,
            espeak_program: "espeak-ng".into(),
            timeout: Dur::secs(10),
            retries: 2,
        }
    }
}

/// The streaming media path: calls in Stasis with audio over chan_websocket or AudioSocket,
/// voice activity detection, barge-in and speculative transcription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Silence after the caller's speech that ends the turn.
    pub endpoint_silence: Dur,
    /// Caller speech needed to start a turn, and to interrupt the agent.
    pub barge_in_min_speech: Dur,
    /// Let the caller interrupt the agent (false: the agent always finishes its answer).
    pub barge_in: bool,
    /// Silence after which the utterance so far is transcribed speculatively; `0s` turns it off.
    pub speculative_pause: Dur,
    /// `auto` (chan_websocket when Asterisk has it, else AudioSocket), `websocket` or
    /// `audiosocket`.
    pub transport: String,
    /// Where asterai listens for AudioSocket connections (only with the AudioSocket transport).
    pub audiosocket_listen: SocketAddr,
    /// The audio format asked for: `slin16` (16 kHz, better transcripts), `slin` or `ulaw`
    /// (8 kHz). AudioSocket carries `slin16` or `slin`.
    pub format: String,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            endpoint_silence: Dur::millis(500),
            barge_in_min_speech: Dur::millis(250),
            barge_in: true,
            speculative_pause: Dur::millis(200),
            transport: "auto".into(),
            audiosocket_listen: SocketAddr::from(([127, 0, 0, 1], 4575)),
            format: "slin16".into(),
        }
    }
}

impl StreamConfig {
    /// The voice activity detector's timing.
    pub fn vad_params(&self) -> crate::speech::vad::VadParams {
        let short_pause =
            if self.speculative_pause.0.is_zero() { self.endpoint_silence.0 } else { self.speculative_pause.0 };
        crate::speech::vad::VadParams {
            start: self.barge_in_min_speech.0,
            stop: self.endpoint_silence.0,
            short_pause,
            ..crate::speech::vad::VadParams::default()
        }
    }

    /// Whether speculative transcription is on.
    pub fn speculative(&self) -> bool {
        !self.speculative_pause.0.is_zero()
    }
}

/// Asterisk's REST Interface: where asterai places calls and follows their channels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AriConfig {
    /// `http://127.0.0.1:8088` (Asterisk's http.conf). Empty: ARI is off; asterai answers calls
    /// over FastAGI but does not place or transfer any.
    pub url: String,
    /// An ARI user from Asterisk's ari.conf.
    pub username: String,
    pub password: Secret,
    /// The Stasis application asterai registers. One WebSocket per name and Asterisk: each
    /// daemon on one Asterisk needs its own.
    pub app: String,
    /// The longest wait between reconnection attempts of the event stream.
    pub reconnect_max: Dur,
    /// Time allowed for one REST request.
    pub timeout: Dur,
}

impl Default for AriConfig {
    fn default() -> Self {
        AriConfig {
            url: String::new(),
            username: String::new(),
            password: Secret::default(),
            app: "asterai".into(),
            reconnect_max: Dur::secs(30),
            timeout: Dur::secs(10),
        }
    }
}

impl AriConfig {
    /// Whether ARI is configured (`ari.url` set).
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The REST client's settings.
    pub fn settings(&self) -> crate::ari::AriSettings {
        crate::ari::AriSettings {
            url: self.url.trim().to_owned(),
            username: self.username.clone(),
            password: self.password.clone(),
            auth: crate::ari::Auth::Header,
            timeout: self.timeout.0,
        }
    }
}

/// Outbound calls: how a number becomes an Asterisk endpoint, and where an answered call goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialerConfig {
    /// The endpoint dialed; `{number}` is the E.164 number (`+15551230000`), `{digits}` the same
    /// without `+`.
    pub endpoint: String,
    /// Where an answered call continues in the dialplan (it runs the `ai` route there).
    pub context: String,
    pub extension: String,
    /// `Name <number>` shown to the called party; empty leaves it to the trunk.
    pub caller_id: String,
    /// How long the far end may ring before the call is `no_answer` (whole seconds).
    pub ring_timeout: Dur,
    /// Where a caller who asks for a person goes: `Local/<exten>@<context>` continues the
    /// channel in the dialplan there; another `Tech/resource` redirects it. Empty: no transfer.
    pub transfer_target: String,
    /// Dial the contacts of running campaigns from this daemon (with ARI configured).
    pub campaigns: bool,
    /// How often running campaigns are looked at for contacts to call.
    pub poll_interval: Dur,
    /// How long a claim on a contact holds without renewal: a daemon that dies leaves its
    /// contacts to the others after this.
    pub claim_lease: Dur,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            endpoint: "PJSIP/{number}@trunk".into(),
            context: "asterai-outbound".into(),
            extension: "s".into(),
            caller_id: String::new(),
            ring_timeout: Dur::secs(30),
            transfer_target: String::new(),
            campaigns: true,
            poll_interval: Dur::secs(1),
            claim_lease: Dur::secs(120),
        }
    }
}

/// The daemon's whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    pub agi: AgiConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub feed: FeedConfig,
    pub media: MediaConfig,
    pub conversation: ConversationConfig,
    pub stt: SttConfig,
    pub responder: ResponderConfig,
    pub tts: TtsConfig,
    pub ari: AriConfig,
    pub dialer: DialerConfig,
    pub stream: StreamConfig,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the configuration came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults (no config file)"),
        }
    }
}

impl Config {
    /// Loads the config file (see the module docs for which one), applies `ASTERAI_*` from
    /// `env`, and validates the result.
    pub fn load(
        explicit: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, ConfigSource), ConfigError> {
        let (table, source) = match explicit {
            Some(path) => (read_table(path)?, ConfigSource::File(path.to_owned())),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                let path = PathBuf::from(DEFAULT_CONFIG_PATH);
                (read_table(&path)?, ConfigSource::File(path))
            }
            None => (toml::Table::new(), ConfigSource::Defaults),
        };
        let origin = match &source {
            ConfigSource::File(path) => format!("{}", path.display()),
            ConfigSource::Defaults => "config".into(),
        };
        let config = Config::from_parts(table, &origin, env)?;
        Ok((config, source))
    }

    /// Parses a TOML document (no environment), for tests and `doctor`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e| ConfigError(format!("config: {e}")))?;
        Config::from_parts(table, "config", std::iter::empty())
    }

    fn from_parts(
        mut table: toml::Table,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let keys = Config::keys();
        let mut from_env: Vec<(String, String)> = Vec::new();
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(name, _)| name.starts_with("ASTERAI_")).collect();
        env.sort();
        for (name, value) in env {
            if CLI_ENV.contains(&name.as_str()) {
                continue;
            }
            let Some(key) = keys.iter().find(|k| k.env == name) else {
                return Err(ConfigError(format!(
                    "unknown environment variable {name}; config keys are set with ASTERAI_<SECTION>_<KEY>, e.g. ASTERAI_AGI_LISTEN (see `asterai config`)"
                )));
            };
            let parsed = key.kind.parse(&value).map_err(|expected| {
                ConfigError(format!("{name} ({}): expected {expected}, got {value:?}", key.path))
            })?;
            insert(&mut table, &key.path, parsed);
            from_env.push((key.path.clone(), name));
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let message = message.lines().next().unwrap_or_default().to_owned();
            let (key, message) = match message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) {
                Some((field, rest)) => {
                    let key = if path.ends_with(field) {
                        path
                    } else if path == "." || path.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{path}.{field}")
                    };
                    (key, format!("unknown key; {}", rest.trim_start_matches(", ")))
                }
                None => (path, plain_types(&message)),
            };
            match from_env.iter().find(|(path, _)| *path == key) {
                Some((_, var)) => ConfigError(format!("{var} ({key}): {message}")),
                None => ConfigError(format!("{origin}: {key}: {message}")),
            }
        })?;
        config.validate().map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    fn validate(&self) -> Result<(), String> {
        self.validate_bounds()?;
        for peer in &self.agi.allowed_peers {
            peer.parse::<PeerRule>().map_err(|e| format!("agi.allowed_peers: {e}"))?;
        }
        let url = self.database.url.expose();
        let known_scheme = ["postgres://", "postgresql://", "sqlite:", "/"].iter().any(|p| url.starts_with(p));
        if !url.is_empty() && !known_scheme {
            return Err("database.url: expected postgres://…, sqlite:///path or an absolute path".into());
        }
        if self.daemon.dead_after.0 < self.daemon.heartbeat_interval.0.saturating_mul(3) {
            return Err(format!(
                "daemon.dead_after: expected at least three heartbeats (3 × daemon.heartbeat_interval = {:?}), got {}",
                self.daemon.heartbeat_interval.0.saturating_mul(3),
                self.daemon.dead_after
            ));
        }
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(format!("{key}: expected one of {}, got {value:?}", allowed.join(", ")))
            }
        };
        one_of("stt.provider", &self.stt.provider, &["openai", "deepgram", "scripted"])?;
        one_of("responder.provider", &self.responder.provider, &["rules", "openai"])?;
        one_of("tts.provider", &self.tts.provider, &["espeak", "openai", "elevenlabs"])?;
        let c = &self.conversation;
        if c.silence.0.is_zero() || c.silence.0.subsec_millis() != 0 {
            return Err(format!(
                "conversation.silence: expected whole seconds (Asterisk's s=), at least 1s, got {}",
                c.silence
            ));
        }
        if !(-100.0..=0.0).contains(&c.silence_threshold_dbfs) {
            return Err(format!(
                "conversation.silence_threshold_dbfs: expected -100 to 0, got {}",
                c.silence_threshold_dbfs
            ));
        }
        if !(0.0..=2.0).contains(&self.responder.temperature) {
            return Err(format!("responder.temperature: expected 0 to 2, got {}", self.responder.temperature));
        }
        if !self.responder.rules_file.is_empty() {
            crate::speech::rules::RuleSet::from_file(Path::new(&self.responder.rules_file))
                .map_err(|e| format!("responder.rules_file: {e}"))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            format!(
                "log.level: expected a filter such as \"info\" or \"info,asterai::agi=debug\", got {:?} ({e})",
                self.log.level
            )
        })?;
        self.validate_ari()?;
        self.validate_stream()?;
        if self.agi.listen == self.http.listen && self.agi.listen.port() != 0 {
            return Err(format!("agi.listen and http.listen are both {}; they need different ports", self.agi.listen));
        }
        Ok(())
    }

    /// Every duration and count within its bounds: no setting may be zero where zero stops
    /// the daemon (a zero interval, an empty pool) or so large that it overflows a clock or
    /// exhausts memory.
    fn validate_bounds(&self) -> Result<(), String> {
        const ABOVE_ZERO: Dur = Dur::millis(1);
        let minute = |m: u64| Dur::secs(m * 60);
        let hour = |h: u64| Dur::secs(h * 3600);
        let durations = [
            ("daemon.shutdown_grace", self.daemon.shutdown_grace, Dur::secs(0), hour(1)),
            ("daemon.heartbeat_interval", self.daemon.heartbeat_interval, ABOVE_ZERO, hour(1)),
            ("daemon.dead_after", self.daemon.dead_after, ABOVE_ZERO, hour(24)),
            ("agi.handshake_timeout", self.agi.handshake_timeout, ABOVE_ZERO, minute(5)),
            ("agi.reply_grace", self.agi.reply_grace, ABOVE_ZERO, hour(1)),
            ("http.request_timeout", self.http.request_timeout, Dur::secs(1), hour(1)),
            ("database.connect_timeout", self.database.connect_timeout, ABOVE_ZERO, minute(5)),
            ("feed.ping_interval", self.feed.ping_interval, ABOVE_ZERO, hour(1)),
            ("feed.write_timeout", self.feed.write_timeout, ABOVE_ZERO, minute(10)),
            ("feed.poll_interval", self.feed.poll_interval, ABOVE_ZERO, hour(1)),
            ("feed.batch_window", self.feed.batch_window, Dur::secs(0), Dur::secs(1)),
            ("conversation.max_duration", self.conversation.max_duration, ABOVE_ZERO, hour(24)),
            ("conversation.silence", self.conversation.silence, Dur::secs(0), minute(5)),
            ("conversation.max_utterance", self.conversation.max_utterance, ABOVE_ZERO, hour(1)),
            ("conversation.turn_budget", self.conversation.turn_budget, ABOVE_ZERO, minute(10)),
            ("stt.timeout", self.stt.timeout, ABOVE_ZERO, minute(10)),
            ("responder.timeout", self.responder.timeout, ABOVE_ZERO, minute(10)),
            ("tts.timeout", self.tts.timeout, ABOVE_ZERO, minute(10)),
            ("ari.reconnect_max", self.ari.reconnect_max, ABOVE_ZERO, hour(1)),
            ("ari.timeout", self.ari.timeout, ABOVE_ZERO, minute(10)),
            ("dialer.ring_timeout", self.dialer.ring_timeout, Dur::secs(0), minute(10)),
            ("dialer.poll_interval", self.dialer.poll_interval, ABOVE_ZERO, hour(1)),
            ("dialer.claim_lease", self.dialer.claim_lease, Dur::secs(3), hour(24)),
            ("stream.endpoint_silence", self.stream.endpoint_silence, Dur::millis(100), Dur::secs(10)),
            ("stream.barge_in_min_speech", self.stream.barge_in_min_speech, Dur::millis(60), Dur::secs(5)),
            ("stream.speculative_pause", self.stream.speculative_pause, Dur::secs(0), Dur::secs(10)),
        ];
        for (key, value, min, max) in durations {
            value.within(key, min, max)?;
        }
        let counts: [(&str, u64, u64, u64); 15] = [
            ("agi.max_sessions", self.agi.max_sessions as u64, 1, 100_000),
            ("http.max_connections", self.http.max_connections as u64, 1, 1_000_000),
            ("http.max_body_bytes", self.http.max_body_bytes as u64, 1024, 1 << 30),
            ("http.max_import_bytes", self.http.max_import_bytes as u64, 1024, 1 << 30),
            ("database.max_connections", self.database.max_connections as u64, 1, 1000),
            ("feed.client_queue", self.feed.client_queue as u64, 1, 1_000_000),
            ("feed.max_message_bytes", self.feed.max_message_bytes as u64, 128, 16 << 20),
            ("conversation.max_turns", self.conversation.max_turns as u64, 1, 1000),
            ("conversation.max_silent_turns", self.conversation.max_silent_turns as u64, 0, 100),
            ("conversation.max_failed_turns", self.conversation.max_failed_turns as u64, 0, 100),
            ("stt.retries", self.stt.retries as u64, 0, 10),
            ("responder.retries", self.responder.retries as u64, 0, 10),
            ("responder.max_tokens", self.responder.max_tokens as u64, 1, 100_000),
            ("tts.retries", self.tts.retries as u64, 0, 10),
            ("tts.speed", self.tts.speed as u64, 10, 1000),
        ];
        for (key, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return Err(format!("{key}: expected {min} to {max}, got {value}"));
            }
        }
        Ok(())
    }

    /// `[stream]` and `conversation.media`.
    fn validate_stream(&self) -> Result<(), String> {
        let st = &self.stream;
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(format!("{key}: expected one of {}, got {value:?}", allowed.join(", ")))
            }
        };
        one_of("conversation.media", &self.conversation.media, &["agi", "stream"])?;
        one_of("stream.transport", &st.transport, &["auto", "websocket", "audiosocket"])?;
        one_of("stream.format", &st.format, &["slin16", "slin", "ulaw"])?;
        if st.transport == "audiosocket" && st.format == "ulaw" {
            return Err(
                "stream.format: AudioSocket carries slin16 or slin, not ulaw (stream.transport = \"audiosocket\")"
                    .into(),
            );
        }
        if st.speculative_pause > st.endpoint_silence {
            return Err(format!(
                "stream.speculative_pause: expected at most stream.endpoint_silence ({}), got {}",
                st.endpoint_silence, st.speculative_pause
            ));
        }
        if st.audiosocket_listen.port() != 0
            && (st.audiosocket_listen == self.agi.listen || st.audiosocket_listen == self.http.listen)
        {
            return Err(format!(
                "stream.audiosocket_listen: {} is already agi.listen or http.listen; it needs its own port",
                st.audiosocket_listen
            ));
        }
        Ok(())
    }

    /// `[ari]` and `[dialer]`: what types alone cannot check.
    fn validate_ari(&self) -> Result<(), String> {
        let ari = &self.ari;
        let url = ari.url.trim();
        if !url.is_empty() {
            if url.starts_with("https://") {
                return Err(format!(
                    "ari.url: TLS to ARI is not supported by this build (the event stream needs ws://); use http:// on loopback or a tunnel, got {url:?}"
                ));
            }
            let host = url.strip_prefix("http://").unwrap_or_default();
            if host.is_empty() || host.starts_with('/') {
                return Err(format!("ari.url: expected http://host:port such as http://127.0.0.1:8088, got {url:?}"));
            }
            if ari.username.trim().is_empty() {
                return Err("ari.username: expected the ARI user from Asterisk's ari.conf (ari.url is set)".into());
            }
        }
        let app_ok = !ari.app.is_empty()
            && ari.app.len() <= 80
            && ari.app.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !app_ok {
            return Err(format!("ari.app: expected letters, digits, '-', '_' or '.', got {:?}", ari.app));
        }
        let d = &self.dialer;
        let placeholder = d.endpoint.contains("{number}") || d.endpoint.contains("{digits}");
        let tech = d.endpoint.split_once('/').is_some_and(|(tech, rest)| !tech.is_empty() && !rest.is_empty());
        if !placeholder || !tech {
            return Err(format!(
                "dialer.endpoint: expected Tech/resource with {{number}} or {{digits}}, such as \"PJSIP/{{number}}@trunk\", got {:?}",
                d.endpoint
            ));
        }
        let dialplan_name = |text: &str| {
            !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
        };
        if !dialplan_name(&d.context) {
            return Err(format!("dialer.context: expected a dialplan context name, got {:?}", d.context));
        }
        if !dialplan_name(&d.extension) {
            return Err(format!("dialer.extension: expected a dialplan extension, got {:?}", d.extension));
        }
        if d.caller_id.contains(['\r', '\n']) {
            return Err("dialer.caller_id: expected one line such as \"Acme <+15551230000>\"".into());
        }
        if d.ring_timeout.0.as_secs() == 0 || d.ring_timeout.0.subsec_millis() != 0 {
            return Err(format!("dialer.ring_timeout: expected whole seconds, at least 1s, got {}", d.ring_timeout));
        }
        let target = d.transfer_target.trim();
        if !target.is_empty() {
            let ok = target.split_once('/').is_some_and(|(tech, rest)| !tech.is_empty() && !rest.is_empty())
                && !target.contains([' ', ',', '\r', '\n']);
            if !ok {
                return Err(format!(
                    "dialer.transfer_target: expected Local/<exten>@<context> or Tech/resource such as \"Local/support@asterai-transfer\", got {target:?}"
                ));
            }
        }
        Ok(())
    }

    /// Every key of the config, with its environment variable and type, derived from the defaults.
    pub fn keys() -> Vec<Key> {
        let defaults = toml::Value::try_from(Config::default()).expect("the default config serializes");
        let mut keys = Vec::new();
        collect_keys(&defaults, "", &mut keys);
        keys
    }

    /// The data directory, resolved as described on [`DaemonConfig::data_dir`].
    pub fn data_dir(&self) -> PathBuf {
        if !self.daemon.data_dir.is_empty() {
            return PathBuf::from(&self.daemon.data_dir);
        }
        if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            // systemd may pass several, separated by ':'; the first is ours.
            let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
            return PathBuf::from(first);
        }
        if is_root() {
            return PathBuf::from("/var/lib/asterai");
        }
        if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(state).join("asterai");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/state/asterai")
    }

    /// The synthesized-speech directory: `media.dir`, or `<data_dir>/media`.
    pub fn media_dir(&self) -> PathBuf {
        if self.media.dir.is_empty() { self.data_dir().join("media") } else { PathBuf::from(&self.media.dir) }
    }

    /// The recordings directory: `media.recordings_dir`, or `<data_dir>/recordings`.
    pub fn recordings_dir(&self) -> PathBuf {
        if self.media.recordings_dir.is_empty() {
            self.data_dir().join("recordings")
        } else {
            PathBuf::from(&self.media.recordings_dir)
        }
    }

    /// Where the database is: `database.url`, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match self.database.url.expose() {
            "" => format!("sqlite://{}", self.data_dir().join("asterai.db").display()),
            url => url.to_owned(),
        }
    }

    /// Creates the data directory (and its parents) when the SQLite database lives in it: the
    /// one directory asterai makes on its own. A `database.url` elsewhere must point into a
    /// directory that exists ([`crate::store::Store::connect`] refuses a missing one), so a
    /// mistyped path is an error, not a new empty database.
    pub fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let url = self.database_url();
        let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .or_else(|| url.strip_prefix('/').map(|_| url.as_str()))
        else {
            return Ok(());
        };
        let data_dir = self.data_dir();
        if Path::new(path).parent() == Some(data_dir.as_path()) {
            std::fs::create_dir_all(&data_dir).map_err(|e| {
                ConfigError(format!("cannot create the data directory {} (daemon.data_dir): {e}", data_dir.display()))
            })?;
        }
        Ok(())
    }

    /// Connection settings for [`crate::store::Store::connect`].
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            url: self.database_url(),
            max_connections: self.database.max_connections,
            connect_timeout: self.database.connect_timeout.0,
        }
    }

    /// The secret values in use (API keys, the database password), for the log redactor.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> =
            [&self.stt.api_key, &self.responder.api_key, &self.tts.api_key, &self.ari.password]
                .into_iter()
                .filter(|s| s.is_set())
                .map(|s| s.expose().to_owned())
                .collect();
        if self.ari.password.is_set() {
            // The Authorization header's value, should a dependency ever log it.
            secrets.push(self.ari.settings().basic_header().trim_start_matches("Basic ").to_owned());
        }
        // postgres://user:password@host/db: the password alone.
        let url = self.database.url.expose();
        if let Some((_, rest)) = url.split_once("://")
            && let Some((credentials, _)) = rest.rsplit_once('@')
            && let Some((_, password)) = credentials.split_once(':')
        {
            secrets.push(password.to_owned());
            secrets.extend(percent_encoding::percent_decode_str(password).decode_utf8().ok().map(|p| p.into_owned()));
        }
        secrets
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// serde names Rust types ("expected usize"); say what an administrator would write instead.
fn plain_types(message: &str) -> String {
    let mut message = message.to_owned();
    for (rust, plain) in [
        ("usize", "a whole number"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("u16", "a whole number"),
        ("u8", "a whole number"),
        ("i64", "an integer"),
        ("i32", "an integer"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("a boolean", "true or false"),
        ("socket address", "an address such as 127.0.0.1:4573"),
        ("invalid socket address syntax", "expected an address such as 127.0.0.1:4573"),
    ] {
        if rust.contains(' ') && rust.starts_with("invalid") {
            message = message.replace(rust, plain);
        } else {
            message = message.replace(&format!("expected {rust}"), &format!("expected {plain}"));
        }
    }
    message
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    text.parse().map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// One config key.
#[derive(Debug, Clone)]
pub struct Key {
    /// `section.name`.
    pub path: String,
    /// `ASTERAI_SECTION_NAME`.
    pub env: String,
    pub kind: Kind,
}

/// The TOML type of a key, as its default has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Float,
    Boolean,
    List,
    Table,
}

impl Kind {
    fn of(value: &toml::Value) -> Kind {
        match value {
            toml::Value::Integer(_) => Kind::Integer,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Boolean(_) => Kind::Boolean,
            toml::Value::Array(_) => Kind::List,
            toml::Value::Table(_) => Kind::Table,
            _ => Kind::String,
        }
    }

    /// Parses an environment value into this type; on failure, says what was expected.
    fn parse(self, text: &str) -> Result<toml::Value, &'static str> {
        Ok(match self {
            Kind::String => toml::Value::String(text.to_owned()),
            Kind::Integer => toml::Value::Integer(text.trim().parse().map_err(|_| "an integer")?),
            Kind::Float => toml::Value::Float(text.trim().parse().map_err(|_| "a number")?),
            Kind::Boolean => toml::Value::Boolean(match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => true,
                "false" | "no" | "0" | "off" => false,
                _ => return Err("true or false"),
            }),
            Kind::List => toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            Kind::Table => {
                let table: toml::Table =
                    format!("v = {text}").parse().map_err(|_| "an inline TOML table such as { a = \"b\" }")?;
                table.get("v").cloned().ok_or("an inline TOML table")?
            }
        })
    }
}

fn collect_keys(value: &toml::Value, prefix: &str, keys: &mut Vec<Key>) {
    let toml::Value::Table(table) = value else { return };
    for (name, value) in table {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        match value {
            // Sections recurse; a table-valued key (a map) is a key of its own.
            toml::Value::Table(_) if prefix.is_empty() => collect_keys(value, &path, keys),
            _ => keys.push(Key {
                env: format!("ASTERAI_{}", path.replace('.', "_").to_ascii_uppercase()),
                path,
                kind: Kind::of(value),
            }),
        }
    }
}

fn insert(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().unwrap();
        Config::from_parts(table, "test.toml", env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_bind_loopback() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.agi.listen.to_string(), "127.0.0.1:4573");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:4574");
        assert_eq!(config.agi.handshake_timeout, Dur::secs(5));
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            "[agi]\nmax_sessions = 10\n",
            &[("ASTERAI_AGI_MAX_SESSIONS", "20"), ("ASTERAI_AGI_ALLOWED_PEERS", "10.0.0.0/8, 127.0.0.1")],
        )
        .unwrap();
        assert_eq!(config.agi.max_sessions, 20);
        assert_eq!(config.agi.allowed_peers, ["10.0.0.0/8", "127.0.0.1"]);
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        let err = load("[agi]\nlisen = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("agi.lisen") && err.contains("unknown key") && err.contains("listen"), "{err}");

        let err = load("[agi]\nlisten = \"nowhere\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("agi.listen"), "{err}");

        let err = load("[agi]\nhandshake_timeout = \"5 parsecs\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("agi.handshake_timeout") && err.contains("expected a duration"), "{err}");

        let err = load("", &[("ASTERAI_AGI_MAX_SESSIONS", "many")]).unwrap_err().to_string();
        assert!(err.contains("ASTERAI_AGI_MAX_SESSIONS") && err.contains("integer"), "{err}");

        let err = load("", &[("ASTERAI_AGI_LISTEN", "bad")]).unwrap_err().to_string();
        assert!(err.contains("ASTERAI_AGI_LISTEN (agi.listen)"), "{err}");

        let err = load("", &[("ASTERAI_NO_SUCH_THING", "1")]).unwrap_err().to_string();
        assert!(err.contains("unknown environment variable ASTERAI_NO_SUCH_THING"), "{err}");

        let err = load("[agi]\nallowed_peers = [\"10.0.0.0/99\"]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("agi.allowed_peers"), "{err}");

        let err = load("[nope]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("unknown key"), "{err}");
    }

    #[test]
    fn ari_and_dialer_are_checked_at_load() {
        let config = load("", &[]).unwrap();
        assert!(!config.ari.enabled(), "ARI is off by default");
        assert_eq!((config.ari.app.as_str(), config.dialer.endpoint.as_str()), ("asterai", "PJSIP/{number}@trunk"));
        let on =
            load("[ari]\nurl = \"http://127.0.0.1:8088\"\nusername = \"asterai\"\npassword = \"pw\"\n", &[]).unwrap();
        assert!(on.ari.enabled());
        assert_eq!(on.ari.settings().rest_base(), "http://127.0.0.1:8088/ari");
        assert!(on.secrets().contains(&"pw".to_owned()), "the ARI password is redacted from logs");
        for (text, key) in [
            ("[ari]\nurl = \"http://127.0.0.1:8088\"\n", "ari.username"),
            ("[ari]\nurl = \"https://pbx:8089\"\nusername = \"a\"\n", "ari.url"),
            ("[ari]\nurl = \"127.0.0.1:8088\"\nusername = \"a\"\n", "ari.url"),
            ("[ari]\napp = \"a b\"\n", "ari.app"),
            ("[ari]\nreconnect_max = \"0s\"\n", "ari.reconnect_max"),
            ("[dialer]\nendpoint = \"PJSIP/trunk\"\n", "dialer.endpoint"),
            ("[dialer]\ncontext = \"a,b\"\n", "dialer.context"),
            ("[dialer]\nring_timeout = \"1500ms\"\n", "dialer.ring_timeout"),
            ("[dialer]\ntransfer_target = \"support\"\n", "dialer.transfer_target"),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = load("", &[("ASTERAI_ARI_USERNAME", "x"), ("ASTERAI_ARI_URL", "ftp://x")]).unwrap_err().to_string();
        assert!(err.contains("ari.url"), "{err}");
    }

    #[test]
    fn stream_settings_are_checked() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.stream.endpoint_silence, Dur::millis(500));
        assert_eq!(config.stream.audiosocket_listen.to_string(), "127.0.0.1:4575", "loopback by default");
        assert_eq!(config.conversation.media, "agi");
        let vad = config.stream.vad_params();
        assert_eq!(
            (vad.start, vad.stop, vad.short_pause),
            (Duration::from_millis(250), Duration::from_millis(500), Duration::from_millis(200))
        );
        let off = load("[stream]\nspeculative_pause = \"0s\"\n", &[]).unwrap();
        assert!(!off.stream.speculative());
        assert_eq!(off.stream.vad_params().short_pause, Duration::from_millis(500));
        for (text, key) in [
            ("[stream]\nendpoint_silence = \"20ms\"\n", "stream.endpoint_silence"),
            ("[stream]\nendpoint_silence = \"1h\"\n", "stream.endpoint_silence"),
            ("[stream]\nbarge_in_min_speech = \"0s\"\n", "stream.barge_in_min_speech"),
            ("[stream]\nspeculative_pause = \"600ms\"\n", "stream.speculative_pause"),
            ("[stream]\ntransport = \"rtp\"\n", "stream.transport"),
            ("[stream]\nformat = \"opus\"\n", "stream.format"),
            ("[stream]\ntransport = \"audiosocket\"\nformat = \"ulaw\"\n", "stream.format"),
            ("[stream]\naudiosocket_listen = \"127.0.0.1:4573\"\n", "stream.audiosocket_listen"),
            ("[conversation]\nmedia = \"rtp\"\n", "conversation.media"),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let env = load("", &[("ASTERAI_STREAM_BARGE_IN", "false"), ("ASTERAI_CONVERSATION_MEDIA", "stream")]).unwrap();
        assert!(!env.stream.barge_in);
        assert_eq!(env.conversation.media, "stream");
    }

    #[test]
    fn durations() {
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur::millis(250));
        assert_eq!("2m".parse::<Dur>().unwrap(), Dur::secs(120));
        assert_eq!(Dur::secs(90).to_string(), "90s");
        assert_eq!(Dur::secs(120).to_string(), "2m");
        assert!("5".parse::<Dur>().is_err());
        assert!("-5s".parse::<Dur>().is_err());
        assert_eq!("0".parse::<Dur>().unwrap(), Dur::secs(0));
        assert_eq!("1h 30m".parse::<Dur>().unwrap(), Dur::secs(5400));
        assert_eq!("30d".parse::<Dur>().unwrap().to_string(), "30d");
        // Numbers that overflow a u64, or a clock, are refused with a message, never a panic.
        for huge in ["18446744073709551615h", "99999999999999999999999s", "10000000000h", "367d", "2y"] {
            let err = huge.parse::<Dur>().unwrap_err();
            assert!(err.contains("too long") && err.contains("366d"), "{huge}: {err}");
        }
        assert!("1us".parse::<Dur>().unwrap_err().contains("whole milliseconds"));
    }

    #[test]
    fn every_duration_and_count_is_bounded() {
        for (text, key) in [
            ("[dialer]\nclaim_lease = \"300d\"\n", "dialer.claim_lease"),
            ("[dialer]\npoll_interval = \"0s\"\n", "dialer.poll_interval"),
            ("[daemon]\nshutdown_grace = \"300d\"\n", "daemon.shutdown_grace"),
            ("[database]\nconnect_timeout = \"0s\"\n", "database.connect_timeout"),
            ("[database]\nmax_connections = 100000\n", "database.max_connections"),
            ("[feed]\nbatch_window = \"1h\"\n", "feed.batch_window"),
            ("[feed]\nclient_queue = 99999999999\n", "feed.client_queue"),
            ("[stt]\ntimeout = \"0s\"\n", "stt.timeout"),
            ("[stt]\nretries = 1000\n", "stt.retries"),
            ("[tts]\nspeed = 0\n", "tts.speed"),
            ("[agi]\nmax_sessions = 0\n", "agi.max_sessions"),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            ("[http]\nrequest_timeout = \"2h\"\n", "http.request_timeout"),
            ("[conversation]\nmax_duration = \"10000000000h\"\n", "conversation.max_duration"),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = load("", &[("ASTERAI_DIALER_CLAIM_LEASE", "18446744073709551615h")]).unwrap_err().to_string();
        assert!(err.contains("ASTERAI_DIALER_CLAIM_LEASE") && err.contains("too long"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("sk-very-secret");
        assert!(!format!("{secret:?}").contains("very"));
        assert!(!toml::to_string(&std::collections::BTreeMap::from([("k", secret)])).unwrap().contains("very"));
    }
}
