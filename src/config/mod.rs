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
//! `asterisk-config/asterai.toml` documents every key; a test (`tests/docs.rs`) keeps it in step
//! with these sections.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Config`], loading, and the effective configuration as TOML |
//! | [`daemon`] | `[daemon]`, `[log]`, `[agi]`, `[http]`, `[database]`, `[feed]`, `[media]`, `[webhooks]` |
//! | [`conversation`] | `[conversation]`, `[stt]`, `[responder]`, `[tts]` |
//! | [`outbound`] | `[ari]`, `[dialer]` |
//! | [`env`](mod@env) | the `ASTERAI_*` overlay and the list of keys |
//! | [`privacy`] | `[retention]`, `[redaction]` |
//! | `validate.rs` | what types alone cannot check, and the bounds of every value |
//! | `paths.rs` | the data directory and what lives in it |
//!
//! [`Dur`] and [`Secret`] live in [`crate::types`] and are re-exported here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod conversation;
pub mod daemon;
pub mod env;
pub mod outbound;
mod paths;
pub mod privacy;
pub mod streaming;
mod validate;

pub use crate::types::{Dur, Secret};
pub use conversation::{ConversationConfig, DEFAULT_SYSTEM_PROMPT, ResponderConfig, SttConfig, TtsConfig};
pub use daemon::{
    AgiConfig, DaemonConfig, DatabaseConfig, FeedConfig, HttpConfig, LogConfig, LogFormat, MediaConfig, WebhooksConfig,
};
pub use env::{CLI_ENV, Key, Kind};
pub use outbound::{AriConfig, DialerConfig};
pub use privacy::{RedactionConfig, RetentionConfig};
pub use streaming::StreamingConfig;
pub use validate::check_log_filter;

/// The default config file, read when it exists and no other file is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/asterai/asterai.toml";

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
    pub stream: StreamingConfig,
    pub retention: RetentionConfig,
    pub redaction: RedactionConfig,
    pub webhooks: WebhooksConfig,
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
        let from_env = env::overlay(&mut table, env)?;
        let given = Given(table.clone());
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
                None => {
                    let message = plain_types(&message, &path);
                    // serde leaves out what it was given for some types (addresses): say it.
                    let message = match given.get(&path) {
                        Some(value) if !message.contains("got ") => format!("{message}, got {value}"),
                        _ => message,
                    };
                    (path, message)
                }
            };
            match from_env.iter().find(|(path, _)| *path == key) {
                Some((_, var)) => ConfigError(format!("{var} ({key}): {message}")),
                None => ConfigError(format!("{origin}: {key}: {message}")),
            }
        })?;
        config.validate().map_err(|e| {
            // A key whose value came from the environment is named by its variable.
            match from_env.iter().find(|(path, _)| e.starts_with(&format!("{path}:"))) {
                Some((_, var)) => ConfigError(format!("{var} ({e})")),
                None => ConfigError(format!("{origin}: {e}")),
            }
        })?;
        Ok(config)
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

/// The document as it was read, to quote a value an error is about.
struct Given(toml::Table);

impl Given {
    /// The value at `section.key`, as TOML writes it.
    fn get(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let mut value = self.0.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        Some(value.to_string())
    }
}

/// serde names Rust types ("expected usize"); say what an administrator would write instead.
/// An address's example is the key's own port (`http.listen` 4574, `agi.listen` 4573).
fn plain_types(message: &str, key: &str) -> String {
    let example = match key {
        "http.listen" => "127.0.0.1:4574",
        "stream.audiosocket_listen" => "127.0.0.1:4575",
        _ => "127.0.0.1:4573",
    };
    let address = format!("an address such as {example}");
    let expected_address = format!("expected {address}");
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
        ("socket address", address.as_str()),
        ("invalid socket address syntax", expected_address.as_str()),
    ] {
        if rust.contains(' ') && rust.starts_with("invalid") {
            message = message.replace(rust, plain);
        } else {
            message = message.replace(&format!("expected {rust}"), &format!("expected {plain}"));
        }
    }
    message
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    text.parse().map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().unwrap();
        Config::from_parts(table, "test.toml", env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn errors_quote_the_value_and_name_the_variable() {
        let err = load("", &[("ASTERAI_HTTP_LISTEN", "8080")]).unwrap_err().to_string();
        assert!(err.starts_with("ASTERAI_HTTP_LISTEN (http.listen)"), "{err}");
        assert!(
            err.contains("such as 127.0.0.1:4574") && err.contains("got \"8080\""),
            "the HTTP port, and the value: {err}"
        );
        let err = load("[agi]\nlisten = \"nope\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("agi.listen") && err.contains("127.0.0.1:4573") && err.contains("\"nope\""), "{err}");
        let err = load("", &[("ASTERAI_LOG_LEVEL", "x")]).map(|_| ()).err();
        assert!(err.is_none(), "ASTERAI_LOG_LEVEL is the command line's: {err:?}");
        let err = load("", &[("ASTERAI_AGI_ALLOWED_PEERS", "10.0.0.0/99")]).unwrap_err().to_string();
        assert!(err.starts_with("ASTERAI_AGI_ALLOWED_PEERS (agi.allowed_peers:"), "{err}");
        let err = load("[log]\nlevel = \"verbose\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.contains("\"verbose\" is not a level"), "{err}");
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
        let tls = load("[ari]\nurl = \"https://pbx:8089\"\nusername = \"a\"\n", &[]).unwrap();
        assert_eq!(tls.ari.settings().events_url("x", false), "wss://pbx:8089/ari/events?app=x&subscribeAll=false");
        assert!(on.secrets().contains(&"pw".to_owned()), "the ARI password is redacted from logs");
        for (text, key) in [
            ("[ari]\nurl = \"http://127.0.0.1:8088\"\n", "ari.username"),
            ("[ari]\nurl = \"https://\"\nusername = \"a\"\n", "ari.url"),
            ("[ari]\nurl = \"https://pbx:8089\"\nusername = \"a\"\nca_file = \"/nonexistent.pem\"\n", "ari.ca_file"),
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
    fn stream_settings_are_checked() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.stream.endpoint_silence, Dur::millis(500));
        assert_eq!(config.stream.audiosocket_listen.to_string(), "127.0.0.1:4575", "loopback by default");
        assert_eq!(config.conversation.media, "agi");
        let vad = config.stream.vad_params();
        assert_eq!(
            (vad.start, vad.stop, vad.short_pause),
            (
                std::time::Duration::from_millis(250),
                std::time::Duration::from_millis(500),
                std::time::Duration::from_millis(200)
            )
        );
        let off = load("[stream]\nspeculative_pause = \"0s\"\n", &[]).unwrap();
        assert!(!off.stream.speculative());
        assert_eq!(off.stream.vad_params().short_pause, std::time::Duration::from_millis(500));
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
}
