//! How calls are held: `[conversation]` and the speech providers (`[stt]`, `[responder]`,
//! `[tts]`).

use serde::{Deserialize, Serialize};

use crate::types::{Dur, Secret};

/// How long a tool call may run before the caller hears `tool_filler`.
pub const TOOL_FILLER_AFTER: std::time::Duration = std::time::Duration::from_millis(700);

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
    /// Said when a tool the model called (an agent's HTTP tool) has not answered after
    /// [`TOOL_FILLER_AFTER`], so the caller does not wait in silence.
    pub tool_filler: String,
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
            tool_filler: "One moment while I check.".into(),
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
