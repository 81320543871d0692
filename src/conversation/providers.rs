//! Builds the configured speech providers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::speech::llm::{OpenAiResponder, Responder};
use crate::speech::rules::{RuleSet, RulesResponder};
use crate::speech::stt::{DeepgramStt, OpenAiStt, ScriptedStt, SpeechToText};
use crate::speech::tts::{ElevenLabsTts, EspeakTts, OpenAiTts, TextToSpeech, Voice};
use crate::speech::tts_stream::StreamingTts;
use crate::speech::{HttpPolicy, http_client};

/// The speech providers a conversation uses.
#[derive(Clone)]
pub struct Providers {
    pub stt: Arc<dyn SpeechToText>,
    pub responder: Arc<dyn Responder>,
    pub voice: Voice,
    /// The same text-to-speech provider, streaming raw audio (the streaming media path).
    pub streaming_tts: Arc<dyn StreamingTts>,
    /// The rules, for the analysis of responders that do not give one.
    pub rules: Arc<RuleSet>,
    /// Deepgram live, for the streaming path, when `stt.provider` is `deepgram`.
    pub live_stt: Option<crate::speech::stt_stream::DeepgramLive>,
}

/// One provider behind both text-to-speech traits.
fn both<T: TextToSpeech + StreamingTts + 'static>(tts: T) -> (Arc<dyn TextToSpeech>, Arc<dyn StreamingTts>) {
    let tts = Arc::new(tts);
    (tts.clone(), tts)
}

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.trim().is_empty() { default } else { value.trim() }
}

/// The base URL (up to `/v1`) each configured HTTP provider is reached at: the configured one, or
/// the provider's hosted API. `None` for providers that need no network.
pub fn base_urls(config: &Config) -> [(&'static str, &'static str, Option<String>); 3] {
    let stt = match config.stt.provider.as_str() {
        "scripted" => None,
        "deepgram" => Some(or(&config.stt.url, "https://api.deepgram.com/v1")),
        _ => Some(or(&config.stt.url, "https://api.openai.com/v1")),
    };
    let responder = match config.responder.provider.as_str() {
        "openai" => Some(or(&config.responder.url, "https://api.openai.com/v1")),
        _ => None,
    };
    let tts = match config.tts.provider.as_str() {
        "openai" => Some(or(&config.tts.url, "https://api.openai.com/v1")),
        "elevenlabs" => Some(or(&config.tts.url, "https://api.elevenlabs.io/v1")),
        _ => None,
    };
    [
        ("stt", provider_name(&config.stt.provider), stt.map(str::to_owned)),
        ("responder", provider_name(&config.responder.provider), responder.map(str::to_owned)),
        ("tts", provider_name(&config.tts.provider), tts.map(str::to_owned)),
    ]
}

fn provider_name(name: &str) -> &'static str {
    match name {
        "deepgram" => "deepgram",
        "scripted" => "scripted",
        "rules" => "rules",
        "elevenlabs" => "elevenlabs",
        "espeak" => "espeak",
        _ => "openai",
    }
}

impl Providers {
    /// The providers `config` selects. Values the config left empty get each provider's usual
    /// URL, model and voice.
    pub fn from_config(config: &Config) -> Result<Providers, String> {
        let client = http_client();
        let rules = match config.responder.rules_file.as_str() {
            "" => RuleSet::default_rules(),
            path => RuleSet::from_file(Path::new(path))?,
        };
        let rules = Arc::new(rules);
        let stt_policy =
            HttpPolicy { timeout: config.stt.timeout.0, retries: config.stt.retries, ..HttpPolicy::default() };
        let language = (!config.stt.language.is_empty()).then(|| config.stt.language.clone());
        let live_stt = (config.stt.provider == "deepgram").then(|| crate::speech::stt_stream::DeepgramLive {
            url: or(&config.stt.url, "https://api.deepgram.com/v1").to_owned(),
            api_key: config.stt.api_key.expose().to_owned(),
            model: or(&config.stt.model, "nova-3").to_owned(),
            language: language.clone(),
            // asterai ends the turn itself (stream.endpoint_silence); Deepgram's endpointing
            // only marks speech_final.
            endpointing: Duration::from_millis(300),
            connect_timeout: config.stt.timeout.0.min(Duration::from_secs(5)),
            finalize_wait: Duration::from_secs(2),
        });
        let stt: Arc<dyn SpeechToText> = match config.stt.provider.as_str() {
            "deepgram" => Arc::new(DeepgramStt {
                client: client.clone(),
                url: or(&config.stt.url, "https://api.deepgram.com/v1").to_owned(),
                api_key: config.stt.api_key.expose().to_owned(),
                model: or(&config.stt.model, "nova-3").to_owned(),
                language,
                policy: stt_policy,
            }),
            "scripted" => Arc::new(ScriptedStt),
            _ => Arc::new(OpenAiStt {
                client: client.clone(),
                url: or(&config.stt.url, "https://api.openai.com/v1").to_owned(),
                api_key: config.stt.api_key.expose().to_owned(),
                model: or(&config.stt.model, "whisper-1").to_owned(),
                language,
                policy: stt_policy,
            }),
        };
        let responder: Arc<dyn Responder> = match config.responder.provider.as_str() {
            "openai" => Arc::new(OpenAiResponder {
                client: client.clone(),
                url: or(&config.responder.url, "https://api.openai.com/v1").to_owned(),
                api_key: config.responder.api_key.expose().to_owned(),
                model: or(&config.responder.model, "gpt-4o-mini").to_owned(),
                temperature: config.responder.temperature,
                max_tokens: config.responder.max_tokens,
                policy: HttpPolicy {
                    timeout: config.responder.timeout.0,
                    retries: config.responder.retries,
                    ..HttpPolicy::default()
                },
            }),
            _ => Arc::new(RulesResponder { rules: (*rules).clone(), values: Default::default() }),
        };
        let tts_policy =
            HttpPolicy { timeout: config.tts.timeout.0, retries: config.tts.retries, ..HttpPolicy::default() };
        let (tts, streaming_tts) = match config.tts.provider.as_str() {
            "openai" => both(OpenAiTts {
                client,
                url: or(&config.tts.url, "https://api.openai.com/v1").to_owned(),
                api_key: config.tts.api_key.expose().to_owned(),
                model: or(&config.tts.model, "tts-1").to_owned(),
                voice: or(&config.tts.voice, "alloy").to_owned(),
                pcm_rate: 24000,
                policy: tts_policy,
            }),
            "elevenlabs" => both(ElevenLabsTts {
                client,
                url: or(&config.tts.url, "https://api.elevenlabs.io/v1").to_owned(),
                api_key: config.tts.api_key.expose().to_owned(),
                model: or(&config.tts.model, "eleven_flash_v2_5").to_owned(),
                voice: or(&config.tts.voice, "21m00Tcm4TlvDq8ikWAM").to_owned(),
                policy: tts_policy,
            }),
            _ => both(EspeakTts {
                program: config.tts.espeak_program.clone(),
                voice: or(&config.tts.voice, "en-us").to_owned(),
                speed: config.tts.speed,
                timeout: config.tts.timeout.0,
            }),
        };
        Ok(Providers { stt, responder, voice: Voice::new(tts, &config.media_dir()), streaming_tts, rules, live_stt })
    }

    /// Problems an administrator should hear about at start-up (a provider without its key).
    pub fn warnings(config: &Config) -> Vec<String> {
        let mut warnings = Vec::new();
        if config.stt.provider != "scripted" && !config.stt.api_key.is_set() && config.stt.url.is_empty() {
            warnings.push(format!(
                "stt.api_key is empty: calls on the ai route cannot be transcribed by {} and will hear the fallback phrase (set ASTERAI_STT_API_KEY, or stt.url for a self-hosted server)",
                config.stt.provider
            ));
        }
        if config.responder.provider == "openai"
            && !config.responder.api_key.is_set()
            && config.responder.url.is_empty()
        {
            warnings.push("responder.api_key is empty: the openai responder will fail (set ASTERAI_RESPONDER_API_KEY or responder.url)".into());
        }
        if config.tts.provider != "espeak" && !config.tts.api_key.is_set() && config.tts.url.is_empty() {
            warnings.push(format!(
                "tts.api_key is empty: {} text-to-speech will fail (set ASTERAI_TTS_API_KEY)",
                config.tts.provider
            ));
        }
        warnings
    }
}
