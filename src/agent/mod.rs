//! Agents: who speaks on an organization's calls, and how.
//!
//! An agent belongs to one organization and has a name (`sales`, `support-fr`): its system
//! prompt, greetings, AI disclosure, voicemail message, stock phrases, voice, speech-to-text and
//! responder overrides, and limits. Each is an [`AgentSpec`], written as a TOML or JSON file
//! (`asterai agent create FILE`, `POST /v1/agents`) and checked the way the config is: an unknown
//! key names the key, and a template variable no call can fill is refused when the agent is
//! saved, not left blank in a live call.
//!
//! **Versions.** Every change appends a version and a rollback appends a copy of an old one (see
//! [`crate::store::agents`]); a call records the version it ran.
//!
//! **Inheritance.** A key an agent leaves out takes the value of the built-in agent: the config
//! file's `[conversation]`, `[responder]`, `[stt]` and `[tts]` ([`AgentSpec::apply`]). An
//! organization without agents, or a call that names none, runs the built-in agent, so existing
//! installs behave as before.
//!
//! **Secrets.** Provider keys are never stored: an agent names one as `env:ASTERAI_SECRET_…` (a
//! variable of the daemon's environment with that prefix, so an agent can read no other) or as
//! `config:responder.api_key` (a key of the config file; only where the agent keeps that
//! section's URL, so the house key only ever goes where the house sends it).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::speech::rules::placeholders;
use crate::store::{Agent, AgentVersion, Store, StoreError};
use crate::types::Dur;

pub mod schema;

/// Environment variables an agent may name as `env:…` start with this.
pub use crate::config::env::SECRET_ENV_PREFIX;

/// The template variables every call fills (besides the contact's own columns).
pub const VARIABLES: &[(&str, &str)] = &[
    ("agent_name", "the name the agent calls itself"),
    ("company", "the company it speaks for (default: the organization's name)"),
    ("org_name", "the organization's name"),
    ("local_time", "the time of day where the contact is (else the daemon's), e.g. 14:05"),
    ("called_number", "the number that was called"),
    ("contact", "everything known about the contact, for a system prompt"),
    ("first_name", "the contact's first name"),
    ("last_name", "the contact's last name"),
    ("email", "the contact's e-mail"),
    ("phone", "the contact's number"),
    ("timezone", "the contact's time zone"),
    ("contact_company", "the contact's company"),
];

/// The built-in tools an agent may offer its model.
pub const TOOLS: &[&str] = &["end_call", "transfer", "add_to_dnc", "schedule_callback", "send_dtmf"];

/// An HTTP tool of the agent: asterai checks the model's arguments against `parameters`, then
/// calls `url` with them, signed (see [`crate::conversation::tools`]), and gives the model the
/// JSON answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolSpec {
    /// The function's name for the model: 1 to 63 lower-case letters, digits, `-` or `_`, not
    /// a built-in tool's.
    pub name: String,
    /// When and why to call it, for the model.
    pub description: String,
    /// JSON Schema of the arguments (the subset of [`schema`]); default: no arguments.
    #[serde(default = "no_arguments")]
    pub parameters: serde_json::Value,
    /// `http://` or `https://`.
    pub url: String,
    /// `POST` (default), `PUT` or `PATCH`: the arguments go in a JSON body, which is signed.
    #[serde(default = "post")]
    pub method: String,
    /// How long the tool may take (100ms to 30s, default 5s); then the model gets an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Extra request headers: a value is text, or a secret reference `env:ASTERAI_SECRET_…`
    /// (required for headers that carry credentials).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The key of the request's HMAC-SHA-256 signature: `env:ASTERAI_SECRET_…`.
    pub signing_secret: String,
}

fn no_arguments() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

fn post() -> String {
    "POST".to_owned()
}

/// The most HTTP tools an agent may have.
pub const MAX_HTTP_TOOLS: usize = 32;
/// An HTTP tool's default timeout.
pub const HTTP_TOOL_TIMEOUT: Dur = Dur::secs(5);
/// Headers asterai sets itself, which an HTTP tool may not.
const OWN_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "idempotency-key",
    "x-asterai-signature",
    "x-asterai-timestamp",
    "x-asterai-call-id",
];

/// Whether a header's value is a credential, which must be a secret reference.
fn credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["auth", "key", "token", "secret", "cookie", "password"].iter().any(|word| name.contains(word))
}

impl HttpToolSpec {
    /// The function the model sees.
    pub fn to_spec(&self) -> crate::speech::llm::ToolSpec {
        crate::speech::llm::ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.parameters.clone(),
        }
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        validate_name(&self.name).map_err(|e| format!("{key}.{e}"))?;
        if TOOLS.contains(&self.name.as_str()) {
            return Err(format!("{key}.name: {:?} is a built-in tool's name", self.name));
        }
        let description = self.description.trim();
        if description.is_empty() || description.chars().count() > 1024 {
            return Err(format!(
                "{key}.description: expected 1 to 1024 characters (it tells the model when to call it)"
            ));
        }
        schema::check_arguments_schema(&self.parameters).map_err(|e| format!("{key}.parameters.{e}"))?;
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || self.url.chars().any(|c| c.is_control() || c.is_whitespace())
            || reqwest::Url::parse(&self.url).is_err()
        {
            return Err(format!("{key}.url: expected an http:// or https:// URL, got {:?}", self.url));
        }
        if !["POST", "PUT", "PATCH"].contains(&self.method.as_str()) {
            return Err(format!(
                "{key}.method: expected POST, PUT or PATCH (the arguments go in the signed JSON body), got {:?}",
                self.method
            ));
        }
        if let Some(timeout) = self.timeout {
            timeout.within(&format!("{key}.timeout"), Dur::millis(100), Dur::secs(30))?;
        }
        for (name, value) in &self.headers {
            let here = format!("{key}.headers.{name}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
                return Err(format!("{here}: not a header name"));
            }
            if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!("{here}: asterai sets this header itself"));
            }
            if value.starts_with("env:") || value.starts_with("config:") {
                check_tool_secret(&here, value)?;
            } else if credential_header(name) {
                return Err(format!(
                    "{here}: a credential is never stored; name it as \"env:{SECRET_ENV_PREFIX}NAME\" (a variable of the daemon's environment holding the whole value)"
                ));
            } else if value.chars().any(char::is_control) {
                return Err(format!("{here}: control characters are not allowed"));
            }
        }
        check_tool_secret(&format!("{key}.signing_secret"), &self.signing_secret)
    }
}

/// An HTTP tool's secret: only `env:ASTERAI_SECRET_…` (a config file key only ever goes to the
/// config's own URL). Never echoes a value that is not a reference.
pub fn check_tool_secret(key: &str, reference: &str) -> Result<(), String> {
    if let Some(name) = reference.strip_prefix("env:") {
        let ok = name.starts_with(SECRET_ENV_PREFIX)
            && name.len() > SECRET_ENV_PREFIX.len()
            && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            return Ok(());
        }
        return Err(format!(
            "{key}: expected env:{SECRET_ENV_PREFIX}NAME (upper-case letters, digits, '_'), got {reference:?}"
        ));
    }
    if reference.starts_with("config:") {
        return Err(format!(
            "{key}: a key of the config file only goes to the config's URL; name a key of your own (env:{SECRET_ENV_PREFIX}…)"
        ));
    }
    Err(format!("{key}: secrets are never stored; name one as \"env:{SECRET_ENV_PREFIX}NAME\""))
}

/// The value of an HTTP tool's secret reference, from `env`.
pub fn resolve_tool_secret(
    key: &str,
    reference: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<crate::types::Secret, String> {
    check_tool_secret(key, reference)?;
    let name = reference.strip_prefix("env:").unwrap_or(reference);
    match env(name).filter(|v| !v.is_empty()) {
        Some(value) => Ok(crate::types::Secret::new(value)),
        None => Err(format!("{key}: the daemon's environment has no {name}")),
    }
}

/// A place the agent's `transfer` tool can send the caller: the model names it, asterai dials
/// its `destination` (never text of the model's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferTargetSpec {
    /// What the model calls it: 1 to 63 lower-case letters, digits, `-` or `_`.
    pub name: String,
    /// `Local/<exten>@<context>` (continue in the dialplan) or `Tech/resource` (redirect).
    pub destination: String,
    /// When the model should pick it, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The most transfer targets an agent may name.
pub const MAX_TRANSFER_TARGETS: usize = 32;

/// Checks a transfer destination as `dialer.transfer_target` is checked.
pub fn valid_destination(destination: &str) -> bool {
    destination.split_once('/').is_some_and(|(tech, rest)| !tech.is_empty() && !rest.is_empty())
        && !destination.contains([' ', ','])
        && !destination.chars().any(char::is_control)
}

/// A built-in tool as the model sees it (OpenAI function calling). `transfer` offers the
/// agent's named targets, if it has any, as an enum the model must pick from.
pub fn builtin_tool(name: &str, targets: &[TransferTargetSpec]) -> Option<crate::speech::llm::ToolSpec> {
    let (description, parameters) = match name {
        "end_call" => (
            "End the call, after you have said goodbye. Give the call's outcome.",
            serde_json::json!({"type": "object", "properties": {
                "outcome": {"type": "string", "enum": ["interested", "not_interested", "callback_requested", "completed"],
                            "description": "How the call went for the business"},
                "reason": {"type": "string", "description": "Why the call ends, in a few words"}},
              "required": ["outcome"], "additionalProperties": false}),
        ),
        "transfer" if targets.is_empty() => (
            "Hand the caller to a person, when they ask for one or you cannot help.",
            serde_json::json!({"type": "object", "properties": {
                "reason": {"type": "string", "description": "Why the caller needs a person"}},
              "additionalProperties": false}),
        ),
        "transfer" => {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            let described: Vec<String> = targets
                .iter()
                .map(|t| match &t.description {
                    Some(d) => format!("{}: {d}", t.name),
                    None => t.name.clone(),
                })
                .collect();
            (
                "Hand the caller to a person, when they ask for one or you cannot help. Pick the target.",
                serde_json::json!({"type": "object", "properties": {
                    "target": {"type": "string", "enum": names,
                               "description": format!("Where to send the caller ({})", described.join("; "))},
                    "reason": {"type": "string", "description": "Why the caller needs a person"}},
                  "required": ["target"], "additionalProperties": false}),
            )
        }
        "add_to_dnc" => (
            "Put the caller's number on the do-not-call list, when they ask not to be called again. The call then ends with a confirmation.",
            serde_json::json!({"type": "object", "properties": {
                "reason": {"type": "string", "description": "What the caller said, in a few words"}},
              "additionalProperties": false}),
        ),
        "schedule_callback" => (
            "Schedule a call back to the contact at the date and time they chose, in their local time. The time is moved into the campaign's calling hours if needed; the result says when the call is booked, tell the caller.",
            serde_json::json!({"type": "object", "properties": {
                "when": {"type": "string", "description": "Local date and time in the contact's timezone, YYYY-MM-DD HH:MM"},
                "reason": {"type": "string", "description": "What the call back is about"}},
              "required": ["when"], "additionalProperties": false}),
        ),
        "send_dtmf" => (
            "Press keys on the phone line (DTMF), for example to navigate a phone menu.",
            serde_json::json!({"type": "object", "properties": {
                "digits": {"type": "string", "description": "The keys, 0-9, *, #, A-D; w waits half a second"}},
              "required": ["digits"], "additionalProperties": false}),
        ),
        _ => return None,
    };
    Some(crate::speech::llm::ToolSpec { name: name.to_owned(), description: description.to_owned(), parameters })
}

/// Why an agent was refused or could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The definition is wrong; the message names the key.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An agent's definition. Every key is optional: what it leaves out, the built-in agent says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The agent's name in its organization: 1 to 63 lower-case letters, digits, `-` or `_`.
    /// In the file when creating; the versions store everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The caller's language, such as `en` or `pt-BR` (speech-to-text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The name the agent calls itself, `{agent_name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// `{company}`; default: the organization's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting_inbound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting_outbound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_disclosure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
    /// Whether the caller can talk over the agent (the streaming path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_in: Option<bool>,
    /// Contact columns beyond the standard ones (CSV columns such as `plan`) its templates use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact_fields: Vec<String>,
    /// Built-in tools the model may call during the call ([`TOOLS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Where the `transfer` tool may send the caller, by name (none: `dialer.transfer_target`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_targets: Vec<TransferTargetSpec>,
    /// Tools of the agent's own that asterai calls over HTTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_tools: Vec<HttpToolSpec>,
    /// What is made of each call once it ended.
    #[serde(default, skip_serializing_if = "AnalysisSpec::is_empty")]
    pub analysis: AnalysisSpec,
    /// Whole-call recording (a campaign's `recording` setting overrides it).
    #[serde(default, skip_serializing_if = "RecordingSpec::is_empty")]
    pub recording: RecordingSpec,
    #[serde(default, skip_serializing_if = "Phrases::is_empty")]
    pub phrases: Phrases,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "VoiceSpec::is_empty")]
    pub voice: VoiceSpec,
    #[serde(default, skip_serializing_if = "SttSpec::is_empty")]
    pub stt: SttSpec,
    #[serde(default, skip_serializing_if = "ResponderSpec::is_empty")]
    pub responder: ResponderSpec,
}

macro_rules! all_none {
    ($self:ident: $($field:ident),*) => { $($self.$field.is_none())&&* };
}

/// The after-call analysis: run by the agent's responder once the call ended, stored on the
/// call (see [`crate::conversation::after_call`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    /// A summary of the call in a few sentences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<bool>,
    /// What makes the call a success ("The caller booked a demo."): the analysis says whether
    /// it was, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_criteria: Option<String>,
    /// JSON Schema (the subset of [`schema`]) of the data to extract from the call; the answer is
    /// checked against it, asked again once if it does not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_schema: Option<serde_json::Value>,
}

impl AnalysisSpec {
    fn is_empty(&self) -> bool {
        all_none!(self: summary, success_criteria, data_schema)
    }

    /// Whether the agent asks for any analysis.
    pub fn wanted(&self) -> bool {
        self.summary == Some(true) || self.success_criteria.is_some() || self.data_schema.is_some()
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(criteria) = &self.success_criteria
            && (criteria.trim().is_empty() || criteria.chars().count() > 2000)
        {
            return Err("analysis.success_criteria: expected 1 to 2000 characters".into());
        }
        if let Some(schema) = &self.data_schema {
            schema::check_arguments_schema(schema).map_err(|e| format!("analysis.data_schema.{e}"))?;
        }
        Ok(())
    }
}

/// Whole-call recording: an agent's `[recording]`, or a campaign's `recording` setting (which
/// overrides the agent's, key by key). Off unless `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSpec {
    /// Record the whole call (MixMonitor on the FastAGI path, the bridge on the streaming path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Played before the recording starts ("This call is recorded for quality."), a template
    /// like the greeting. Required where the contact's region wants every party's consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_announcement: Option<String>,
}

impl RecordingSpec {
    pub fn is_empty(&self) -> bool {
        all_none!(self: enabled, consent_announcement)
    }

    /// `self` (a campaign's) over `base` (the agent's), key by key.
    pub fn over(&self, base: &RecordingSpec) -> RecordingSpec {
        RecordingSpec {
            enabled: self.enabled.or(base.enabled),
            consent_announcement: self.consent_announcement.clone().or_else(|| base.consent_announcement.clone()),
        }
    }

    /// Whether the call is recorded.
    pub fn records(&self) -> bool {
        self.enabled == Some(true)
    }

    /// The announcement, when it says something.
    pub fn announcement(&self) -> Option<&str> {
        self.consent_announcement.as_deref().filter(|a| !a.trim().is_empty())
    }

    /// Checks the announcement's length; `at` names the key (`recording`, `campaign settings: recording`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if let Some(text) = &self.consent_announcement
            && text.chars().count() > 1000
        {
            return Err(format!("{at}.consent_announcement: at most 1000 characters"));
        }
        Ok(())
    }
}

/// Stock phrases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phrases {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodbye: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnc_confirmation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_confirmation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_goodbye: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_response_goodbye: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_unavailable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_filler: Option<String>,
}

impl Phrases {
    fn is_empty(&self) -> bool {
        all_none!(self: fallback, reprompt, goodbye, dnc_confirmation, callback_confirmation, failure_goodbye, no_response_goodbye, transfer_unavailable, tool_filler)
    }
}

/// How long and how much.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Caller turns before the agent says goodbye (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Longest call (1s to 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Dur>,
    /// Silence that ends the caller's turn on the FastAGI path: whole seconds, 1s to 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Dur>,
    /// Silent turns in a row before the call ends (1 to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_silent_turns: Option<u32>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        all_none!(self: max_turns, max_duration, silence, max_silent_turns)
    }
}

/// Text-to-speech.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSpec {
    /// `espeak`, `openai` or `elevenlabs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// espeak-ng words per minute (80 to 450).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl VoiceSpec {
    fn is_empty(&self) -> bool {
        all_none!(self: provider, url, model, voice, speed, api_key)
    }
}

/// Speech-to-text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttSpec {
    /// `openai`, `deepgram` or `scripted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl SttSpec {
    fn is_empty(&self) -> bool {
        all_none!(self: provider, url, model, api_key)
    }
}

/// The responder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderSpec {
    /// `rules` or `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// 1 to 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl ResponderSpec {
    fn is_empty(&self) -> bool {
        all_none!(self: provider, url, model, api_key, temperature, max_tokens)
    }
}

/// Checks an agent name: 1 to 63 lower-case letters, digits, `-` or `_`, starting with a letter
/// or digit. Names appear in dialplans (`agent=sales`) and URLs.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: expected 1 to 63 lower-case letters, digits, '-' or '_', starting with a letter or digit, got {name:?}"
        ))
    }
}

impl AgentSpec {
    /// Reads a definition from a file's text: JSON when it starts with `{`, else TOML. An
    /// unknown key or a wrong type names the key.
    pub fn parse(text: &str) -> Result<AgentSpec, String> {
        if text.trim_start().starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(text);
            let spec: AgentSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| located(&e))?;
            de.end().map_err(|e| format!("agent: {e}"))?;
            Ok(spec)
        } else {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("agent: {}", e.message()))?;
            serde_path_to_error::deserialize(table).map_err(|e| located(&e))
        }
    }

    /// Reads a definition from JSON (a request body, a stored version).
    pub fn from_json(value: serde_json::Value) -> Result<AgentSpec, String> {
        serde_path_to_error::deserialize(value).map_err(|e| located(&e))
    }

    /// The definition as stored: without its name (the agent's), keys left out omitted.
    pub fn to_stored(&self) -> serde_json::Value {
        let mut spec = self.clone();
        spec.name = None;
        serde_json::to_value(&spec).unwrap_or_default()
    }

    /// Checks everything types cannot: the name, templates, providers, bounds and secret
    /// references. The error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(language) = &self.language {
            let (lang, region) = language.split_once('-').unwrap_or((language, ""));
            let ok = (2..=3).contains(&lang.len())
                && lang.bytes().all(|b| b.is_ascii_lowercase())
                && (region.is_empty()
                    || ((2..=4).contains(&region.len()) && region.bytes().all(|b| b.is_ascii_alphanumeric())))
                && !language.ends_with('-');
            if !ok {
                return Err(format!(
                    "language: expected a language code such as \"en\" or \"pt-BR\", got {language:?}"
                ));
            }
        }
        for field in &self.contact_fields {
            let standard = VARIABLES.iter().any(|(name, _)| name == field);
            if field.is_empty() || standard || !placeholders(&format!("{{{field}}}")).iter().any(|p| p.name == field) {
                return Err(format!(
                    "contact_fields: {field:?} is not a column name to declare (letters, digits and '_', not a standard variable)"
                ));
            }
        }
        self.validate_templates()?;
        for tool in &self.tools {
            if !TOOLS.contains(&tool.as_str()) {
                return Err(format!("tools: unknown tool {tool:?}; expected one of {}", TOOLS.join(", ")));
            }
        }
        if self.transfer_targets.len() > MAX_TRANSFER_TARGETS {
            return Err(format!(
                "transfer_targets: at most {MAX_TRANSFER_TARGETS}, got {}",
                self.transfer_targets.len()
            ));
        }
        if !self.transfer_targets.is_empty() && !self.tools.iter().any(|t| t == "transfer") {
            return Err("transfer_targets: the agent has no \"transfer\" in tools to use them".into());
        }
        for (i, target) in self.transfer_targets.iter().enumerate() {
            validate_name(&target.name).map_err(|e| format!("transfer_targets[{i}].name: {e}"))?;
            if self.transfer_targets[..i].iter().any(|t| t.name == target.name) {
                return Err(format!("transfer_targets[{i}].name: {:?} is named twice", target.name));
            }
            if !valid_destination(target.destination.trim()) {
                return Err(format!(
                    "transfer_targets[{i}].destination: expected Local/<exten>@<context> or Tech/resource such as \"Local/600@from-internal\", got {:?}",
                    target.destination
                ));
            }
            if target.description.as_ref().is_some_and(|d| d.chars().count() > 200) {
                return Err(format!("transfer_targets[{i}].description: at most 200 characters"));
            }
        }
        self.analysis.validate()?;
        self.recording.validate("recording")?;
        if self.http_tools.len() > MAX_HTTP_TOOLS {
            return Err(format!("http_tools: at most {MAX_HTTP_TOOLS}, got {}", self.http_tools.len()));
        }
        for (i, tool) in self.http_tools.iter().enumerate() {
            tool.validate(&format!("http_tools[{i}]"))?;
            if self.http_tools[..i].iter().any(|t| t.name == tool.name) {
                return Err(format!("http_tools[{i}].name: {:?} is named twice", tool.name));
            }
        }
        let l = &self.limits;
        bounded("limits.max_turns", l.max_turns, 1, 1000)?;
        bounded("limits.max_silent_turns", l.max_silent_turns, 1, 20)?;
        if let Some(d) = l.max_duration {
            d.within("limits.max_duration", Dur::secs(1), Dur::secs(24 * 3600))?;
        }
        if let Some(d) = l.silence {
            d.within("limits.silence", Dur::secs(1), Dur::secs(30))?;
            if d.0.subsec_millis() != 0 {
                return Err(format!("limits.silence: expected whole seconds (Asterisk's s=), got {d}"));
            }
        }
        one_of("voice.provider", &self.voice.provider, &["espeak", "openai", "elevenlabs"])?;
        one_of("stt.provider", &self.stt.provider, &["openai", "deepgram", "scripted"])?;
        one_of("responder.provider", &self.responder.provider, &["rules", "openai"])?;
        bounded("voice.speed", self.voice.speed, 80, 450)?;
        bounded("responder.max_tokens", self.responder.max_tokens, 1, 100_000)?;
        if let Some(t) = self.responder.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(format!("responder.temperature: expected 0 to 2, got {t}"));
        }
        for (section, url, key) in [
            ("voice", &self.voice.url, &self.voice.api_key),
            ("stt", &self.stt.url, &self.stt.api_key),
            ("responder", &self.responder.url, &self.responder.api_key),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(format!("{section}.url: expected an http:// or https:// URL, got {url:?}"));
            }
            if let Some(key) = key {
                check_secret_ref(section, key, url.is_some())?;
            }
        }
        Ok(())
    }

    /// Every template with its key.
    fn templates(&self) -> Vec<(&'static str, &String)> {
        let p = &self.phrases;
        [
            ("agent_name", &self.agent_name),
            ("company", &self.company),
            ("system_prompt", &self.system_prompt),
            ("greeting_inbound", &self.greeting_inbound),
            ("greeting_outbound", &self.greeting_outbound),
            ("disclosure", &self.disclosure),
            ("voicemail_message", &self.voicemail_message),
            ("recording.consent_announcement", &self.recording.consent_announcement),
            ("phrases.fallback", &p.fallback),
            ("phrases.reprompt", &p.reprompt),
            ("phrases.goodbye", &p.goodbye),
            ("phrases.dnc_confirmation", &p.dnc_confirmation),
            ("phrases.callback_confirmation", &p.callback_confirmation),
            ("phrases.failure_goodbye", &p.failure_goodbye),
            ("phrases.no_response_goodbye", &p.no_response_goodbye),
            ("phrases.transfer_unavailable", &p.transfer_unavailable),
            ("phrases.tool_filler", &p.tool_filler),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
        .collect()
    }

    fn validate_templates(&self) -> Result<(), String> {
        let known: BTreeSet<&str> =
            VARIABLES.iter().map(|(name, _)| *name).chain(self.contact_fields.iter().map(String::as_str)).collect();
        for (key, template) in self.templates() {
            if key == "agent_name" || key == "company" {
                // Values, not templates: a brace in them would be read as a placeholder later.
                if let Some(p) = placeholders(template).first() {
                    return Err(format!("{key}: a name, not a template (found {{{}}})", p.name));
                }
                continue;
            }
            for p in placeholders(template) {
                if !known.contains(p.name) {
                    return Err(format!(
                        "{key}: unknown variable {{{}}}; expected one of {}, or a contact column declared in contact_fields",
                        p.name,
                        known.iter().map(|n| format!("{{{n}}}")).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The configuration a call of this agent runs with: `base` (the built-in agent) with every
    /// key the agent sets put in its place, and its secret references resolved from `env`.
    pub fn apply(&self, base: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut config = base.clone();
        let c = &mut config.conversation;
        set(&mut c.agent_name, &self.agent_name);
        set(&mut c.company, &self.company);
        set(&mut c.greeting_inbound, &self.greeting_inbound);
        set(&mut c.greeting_outbound, &self.greeting_outbound);
        set(&mut c.ai_disclosure, &self.ai_disclosure);
        set(&mut c.disclosure, &self.disclosure);
        set(&mut c.voicemail_message, &self.voicemail_message);
        let p = &self.phrases;
        set(&mut c.fallback, &p.fallback);
        set(&mut c.reprompt, &p.reprompt);
        set(&mut c.goodbye, &p.goodbye);
        set(&mut c.dnc_confirmation, &p.dnc_confirmation);
        set(&mut c.callback_confirmation, &p.callback_confirmation);
        set(&mut c.failure_goodbye, &p.failure_goodbye);
        set(&mut c.no_response_goodbye, &p.no_response_goodbye);
        set(&mut c.transfer_unavailable, &p.transfer_unavailable);
        set(&mut c.tool_filler, &p.tool_filler);
        set(&mut c.max_turns, &self.limits.max_turns);
        set(&mut c.max_duration, &self.limits.max_duration);
        set(&mut c.silence, &self.limits.silence);
        set(&mut c.max_silent_turns, &self.limits.max_silent_turns);
        set(&mut config.stt.language, &self.language);
        // The agent's word over `[stream] barge_in` (the streaming path reads it per call).
        set(&mut config.stream.barge_in, &self.barge_in);
        let r = &mut config.responder;
        set(&mut r.system_prompt, &self.system_prompt);
        set(&mut r.provider, &self.responder.provider);
        set(&mut r.url, &self.responder.url);
        set(&mut r.model, &self.responder.model);
        set(&mut r.temperature, &self.responder.temperature);
        set(&mut r.max_tokens, &self.responder.max_tokens);
        let s = &mut config.stt;
        set(&mut s.provider, &self.stt.provider);
        set(&mut s.url, &self.stt.url);
        set(&mut s.model, &self.stt.model);
        let t = &mut config.tts;
        set(&mut t.provider, &self.voice.provider);
        set(&mut t.url, &self.voice.url);
        set(&mut t.model, &self.voice.model);
        set(&mut t.voice, &self.voice.voice);
        set(&mut t.speed, &self.voice.speed);
        // A provider changed without a key of its own must not be sent the house's key for
        // another provider.
        if self.responder.provider.is_some() || self.responder.url.is_some() {
            config.responder.api_key = Default::default();
        }
        if self.stt.provider.is_some() || self.stt.url.is_some() {
            config.stt.api_key = Default::default();
        }
        if self.voice.provider.is_some() || self.voice.url.is_some() {
            config.tts.api_key = Default::default();
        }
        for (section, key) in
            [("responder", &self.responder.api_key), ("stt", &self.stt.api_key), ("voice", &self.voice.api_key)]
        {
            let Some(reference) = key else { continue };
            let secret = resolve_secret(section, reference, base, &env)?;
            match section {
                "responder" => config.responder.api_key = secret,
                "stt" => config.stt.api_key = secret,
                _ => config.tts.api_key = secret,
            }
        }
        Ok(config)
    }
}

fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        *slot = value.clone();
    }
}

fn located<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path == "." || path.is_empty() { format!("agent: {}", e.inner()) } else { format!("{path}: {}", e.inner()) }
}

fn bounded(key: &str, value: Option<u32>, min: u32, max: u32) -> Result<(), String> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(format!("{key}: expected {min} to {max}, got {v}")),
        _ => Ok(()),
    }
}

fn one_of(key: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), String> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => {
            Err(format!("{key}: expected one of {}, got {v:?}", allowed.join(", ")))
        }
        _ => Ok(()),
    }
}

const CONFIG_KEYS: &[&str] = &["config:responder.api_key", "config:stt.api_key", "config:tts.api_key"];

fn check_secret_ref(section: &str, reference: &str, own_url: bool) -> Result<(), String> {
    let key = format!("{section}.api_key");
    if let Some(name) = reference.strip_prefix("env:") {
        let ok = name.starts_with(SECRET_ENV_PREFIX)
            && name.len() > SECRET_ENV_PREFIX.len()
            && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(format!(
                "{key}: expected env:{SECRET_ENV_PREFIX}NAME (upper-case letters, digits, '_'), got {reference:?}"
            ));
        }
        return Ok(());
    }
    if reference.starts_with("config:") {
        if !CONFIG_KEYS.contains(&reference) {
            return Err(format!("{key}: expected one of {}, got {reference:?}", CONFIG_KEYS.join(", ")));
        }
        if own_url {
            return Err(format!(
                "{key}: a key of the config file only goes to the config's URL; with {section}.url set, name a key of your own (env:{SECRET_ENV_PREFIX}…)"
            ));
        }
        return Ok(());
    }
    // Never echo what may be a key.
    Err(format!(
        "{key}: provider keys are never stored; name one as \"env:{SECRET_ENV_PREFIX}NAME\" (a variable of the daemon's environment) or \"config:{}.api_key\"",
        if section == "voice" { "tts" } else { section }
    ))
}

fn resolve_secret(
    section: &str,
    reference: &str,
    base: &Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<crate::types::Secret, String> {
    match reference {
        "config:responder.api_key" => Ok(base.responder.api_key.clone()),
        "config:stt.api_key" => Ok(base.stt.api_key.clone()),
        "config:tts.api_key" => Ok(base.tts.api_key.clone()),
        other => {
            let name = other.strip_prefix("env:").unwrap_or(other);
            match env(name).filter(|v| !v.is_empty()) {
                Some(value) => Ok(crate::types::Secret::new(value)),
                None => Err(format!("{section}.api_key: the daemon's environment has no {name}")),
            }
        }
    }
}

/// Creates an agent of the organization from a checked definition, which must have a name;
/// `default` makes it the organization's default agent.
pub async fn create(store: &Store, org_id: i64, spec: &AgentSpec, default: bool) -> Result<Agent, AgentError> {
    spec.validate().map_err(AgentError::Invalid)?;
    let name = spec.name.as_deref().ok_or_else(|| AgentError::Invalid("name: required to create an agent".into()))?;
    let agent = store.create_agent(org_id, name, &spec.to_stored()).await?;
    if default {
        store.set_default_agent(org_id, Some(name)).await?;
        return Ok(store.agent(org_id, name).await?.unwrap_or(agent));
    }
    Ok(agent)
}

/// Replaces an agent's definition with a new version. A name in the definition must be the
/// agent's (agents are not renamed).
pub async fn update(
    store: &Store,
    org_id: i64,
    name: &str,
    spec: &AgentSpec,
    default: bool,
) -> Result<Agent, AgentError> {
    spec.validate().map_err(AgentError::Invalid)?;
    if let Some(other) = spec.name.as_deref().filter(|n| *n != name) {
        return Err(AgentError::Invalid(format!(
            "name: the agent is {name:?}, the definition says {other:?}; agents are not renamed"
        )));
    }
    let agent = store.update_agent(org_id, name, &spec.to_stored()).await?;
    if default {
        store.set_default_agent(org_id, Some(name)).await?;
        return Ok(store.agent(org_id, name).await?.unwrap_or(agent));
    }
    Ok(agent)
}

/// A stored version as an agent definition (with its name), for `show` and the API.
pub fn spec_of(name: &str, version: &AgentVersion) -> Result<AgentSpec, String> {
    let mut spec = AgentSpec::from_json(version.spec.clone())?;
    spec.name = Some(name.to_owned());
    Ok(spec)
}

/// Why a call runs the agent it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    /// The route's `agent=<name>`.
    Route,
    /// The campaign's `agent` setting.
    Campaign,
    /// The organization's default agent.
    Default,
    /// None of those: the built-in agent of the config file.
    BuiltIn,
}

/// The agent a call runs: the route's `agent=<name>`, else the campaign's agent, else the
/// organization's default, else none (the built-in agent). A name that is not the
/// organization's agent is skipped with a warning (the call goes on with the next choice), so
/// a typo in a dialplan never leaves a caller in silence.
pub async fn choose(
    store: &Store,
    org_id: i64,
    route: Option<&str>,
    campaign_id: Option<i64>,
) -> Result<(Option<Agent>, ChosenBy), StoreError> {
    if let Some(name) = route.filter(|n| !n.is_empty()) {
        match store.agent(org_id, name).await? {
            Some(agent) => return Ok((Some(agent), ChosenBy::Route)),
            None => tracing::warn!(agent = %name.replace(|c: char| c.is_control(), "?"), org_id,
                "the route names an agent the organization does not have; using the next choice"),
        }
    }
    if let Some(id) = campaign_id
        && let Some(campaign) = store.campaign(org_id, id).await?
        && let Some(name) = campaign.settings.get("agent").and_then(|a| a.as_str())
    {
        match store.agent(org_id, name).await? {
            Some(agent) => return Ok((Some(agent), ChosenBy::Campaign)),
            None => {
                tracing::warn!(agent = %name, campaign = id, "the campaign's agent does not exist any more; using the next choice")
            }
        }
    }
    if let Some(agent) = store.default_agent(org_id).await? {
        return Ok((Some(agent), ChosenBy::Default));
    }
    Ok((None, ChosenBy::BuiltIn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_variables_are_named() {
        let e = AgentSpec::parse("name = \"a\"\n[voice]\nspeeed = 3\n").unwrap_err();
        assert!(e.starts_with("voice.speeed: unknown field `speeed`"), "{e}");
        let e = AgentSpec::parse(r#"{"name": "a", "phrases": {"goodby": "x"}}"#).unwrap_err();
        assert!(e.starts_with("phrases.goodby: unknown field `goodby`"), "{e}");
        let e = AgentSpec::parse("limits = { max_turns = \"many\" }").unwrap_err();
        assert!(e.starts_with("limits.max_turns: "), "{e}");
        let spec = AgentSpec::parse("greeting_inbound = \"Hi {frist_name}\"").unwrap();
        let e = spec.validate().unwrap_err();
        assert!(e.starts_with("greeting_inbound: unknown variable {frist_name}"), "{e}");
        let spec = AgentSpec::parse("contact_fields = [\"plan\"]\nsystem_prompt = \"{plan|basic} at {local_time} to {called_number} for {org_name}; JSON {\\\"a\\\": 1}\"").unwrap();
        spec.validate().unwrap();
    }

    #[test]
    fn secrets_are_references_only() {
        let spec = AgentSpec::parse("[responder]\napi_key = \"sk-live-123\"").unwrap();
        let e = spec.validate().unwrap_err();
        assert!(e.starts_with("responder.api_key: provider keys are never stored"), "{e}");
        assert!(!e.contains("sk-live"));
        let spec = AgentSpec::parse("[responder]\napi_key = \"env:HOME\"").unwrap();
        assert!(spec.validate().is_err());
        let spec =
            AgentSpec::parse("[responder]\nurl = \"https://evil.example\"\napi_key = \"config:responder.api_key\"")
                .unwrap();
        assert!(spec.validate().unwrap_err().contains("only goes to the config's URL"));
        let spec =
            AgentSpec::parse("[responder]\nprovider = \"openai\"\napi_key = \"env:ASTERAI_SECRET_SALES\"").unwrap();
        spec.validate().unwrap();
        let base = Config::default();
        let config = spec.apply(&base, |n| (n == "ASTERAI_SECRET_SALES").then(|| "k".to_owned())).unwrap();
        assert_eq!(config.responder.api_key.expose(), "k");
        assert!(spec.apply(&base, |_| None).unwrap_err().contains("no ASTERAI_SECRET_SALES"));
    }

    #[test]
    fn apply_keeps_what_the_agent_leaves_out() {
        let mut base = Config::default();
        base.responder.api_key = crate::types::Secret::new("house");
        let spec =
            AgentSpec::parse("greeting_inbound = \"Hi\"\n[limits]\nmax_turns = 3\n[voice]\nspeed = 200").unwrap();
        spec.validate().unwrap();
        let config = spec.apply(&base, |_| None).unwrap();
        assert_eq!(config.conversation.greeting_inbound, "Hi");
        assert_eq!(config.conversation.max_turns, 3);
        assert_eq!(config.tts.speed, 200);
        assert_eq!(config.conversation.goodbye, base.conversation.goodbye);
        assert_eq!(config.responder.api_key.expose(), "house");
        let spec = AgentSpec::parse("[responder]\nurl = \"https://other.example/v1\"").unwrap();
        assert_eq!(spec.apply(&base, |_| None).unwrap().responder.api_key.expose(), "");
        // barge_in: the agent's word over [stream] barge_in, the daemon's when it says nothing.
        assert!(config.stream.barge_in);
        let off = AgentSpec::parse("barge_in = false").unwrap().apply(&base, |_| None).unwrap();
        assert!(!off.stream.barge_in);
        base.stream.barge_in = false;
        assert!(AgentSpec::parse("barge_in = true").unwrap().apply(&base, |_| None).unwrap().stream.barge_in);
        assert!(!AgentSpec::parse("").unwrap().apply(&base, |_| None).unwrap().stream.barge_in);
    }

    #[test]
    fn the_built_in_phrases_pass_validation() {
        let c = Config::default();
        let spec = AgentSpec {
            system_prompt: Some(c.responder.system_prompt.clone()),
            greeting_inbound: Some(c.conversation.greeting_inbound.clone()),
            greeting_outbound: Some(c.conversation.greeting_outbound.clone()),
            voicemail_message: Some(c.conversation.voicemail_message.clone()),
            ..Default::default()
        };
        spec.validate().unwrap();
    }

    #[test]
    fn transfer_targets_are_checked_when_saved() {
        let target = |name: &str, destination: &str| {
            format!("[[transfer_targets]]\nname = \"{name}\"\ndestination = \"{destination}\"\n")
        };
        let with = |targets: &str| AgentSpec::parse(&format!("tools = [\"transfer\"]\n{targets}")).unwrap().validate();
        with(&(target("sales", "Local/600@from-internal") + &target("support", "PJSIP/100"))).unwrap();
        let e = with(&target("Sales Team", "PJSIP/100")).unwrap_err();
        assert!(e.starts_with("transfer_targets[0].name: "), "{e}");
        let e = with(&(target("sales", "PJSIP/100") + &target("sales", "PJSIP/101"))).unwrap_err();
        assert_eq!(e, "transfer_targets[1].name: \"sales\" is named twice");
        for bad in ["600", "Local/600@x,then", "PJSIP/1 00", "/100", "PJSIP/"] {
            let e = with(&target("sales", bad)).unwrap_err();
            assert!(e.starts_with("transfer_targets[0].destination: expected Local/<exten>@<context>"), "{bad}: {e}");
        }
        let e = with("[[transfer_targets]]\nname = \"sales\"\ndestination = \"PJSIP/100\\r\\nHangup\"\n").unwrap_err();
        assert!(e.starts_with("transfer_targets[0].destination: "), "CR/LF refused: {e}");
        let e = AgentSpec::parse(&target("sales", "PJSIP/100")).unwrap().validate().unwrap_err();
        assert!(e.contains("no \"transfer\" in tools"), "{e}");
        let e = AgentSpec::parse("[[transfer_targets]]\nname = \"a\"\ndest = \"PJSIP/1\"").unwrap_err();
        assert!(e.contains("unknown field `dest`"), "{e}");
        let tool = builtin_tool(
            "transfer",
            &[TransferTargetSpec { name: "sales".into(), destination: "PJSIP/1".into(), description: None }],
        )
        .unwrap();
        assert_eq!(tool.parameters["properties"]["target"]["enum"], serde_json::json!(["sales"]));
        assert!(builtin_tool("transfer", &[]).unwrap().parameters["properties"].get("target").is_none());
    }

    #[test]
    fn http_tools_are_checked_when_saved() {
        let tool = |extra: &str| {
            format!(
                "[[http_tools]]\nname = \"lookup\"\ndescription = \"Look it up\"\nurl = \"https://crm.example/t\"\nsigning_secret = \"env:ASTERAI_SECRET_CRM\"\n{extra}"
            )
        };
        let check = |text: &str| AgentSpec::parse(text).and_then(|spec| spec.validate());
        check(&tool("headers = { \"X-Team\" = \"support\", \"Authorization\" = \"env:ASTERAI_SECRET_CRM_AUTH\" }"))
            .unwrap();
        for (extra, expected) in [
            (
                "parameters = { type = \"object\", properties = { a = { type = \"string\", pattern = \"x\" } } }",
                "http_tools[0].parameters.properties.a.pattern: the JSON Schema keyword \"pattern\" is not supported",
            ),
            (
                "headers = { \"X-Api-Key\" = \"sk-live-1\" }",
                "http_tools[0].headers.X-Api-Key: a credential is never stored",
            ),
            (
                "headers = { \"X-Api-Key\" = \"config:responder.api_key\" }",
                "http_tools[0].headers.X-Api-Key: a key of the config file",
            ),
            (
                "headers = { \"Idempotency-Key\" = \"x\" }",
                "http_tools[0].headers.Idempotency-Key: asterai sets this header itself",
            ),
            ("method = \"GET\"", "http_tools[0].method: expected POST, PUT or PATCH"),
            ("timeout = \"1m\"", "http_tools[0].timeout: "),
        ] {
            let e = check(&tool(extra)).unwrap_err();
            assert!(e.starts_with(expected), "{extra}: {e}");
            assert!(!e.contains("sk-live"), "a clear-text secret is never echoed: {e}");
        }
        let e = check(&tool("").replace("env:ASTERAI_SECRET_CRM", "whsec_123")).unwrap_err();
        assert!(
            e.starts_with("http_tools[0].signing_secret: secrets are never stored") && !e.contains("whsec_123"),
            "{e}"
        );
        let e = check(&tool("").replace("\"lookup\"", "\"transfer\"")).unwrap_err();
        assert!(e.starts_with("http_tools[0].name: \"transfer\" is a built-in tool's name"), "{e}");
        let e = check(&format!("{}{}", tool(""), tool(""))).unwrap_err();
        assert_eq!(e, "http_tools[1].name: \"lookup\" is named twice");
        let e = check(&tool("").replace("url = \"https://crm.example/t\"", "url = \"ftp://crm.example\"")).unwrap_err();
        assert!(e.starts_with("http_tools[0].url: "), "{e}");
        let e = check(&tool("verb = 1")).unwrap_err();
        assert!(e.contains("unknown field `verb`"), "{e}");
    }
}
