//! The daemon's own sections: `[daemon]`, `[log]`, the listeners (`[agi]`, `[http]`), `[database]`,
//! `[feed]` and `[media]`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::types::{Dur, Secret};

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

/// `[webhooks]`: the delivery worker of the organizations' webhooks (see [`crate::webhooks`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Run the delivery worker in this daemon. Deliveries are queued either way; in a fleet,
    /// any daemon that runs it delivers them.
    pub enabled: bool,
    /// Requests in flight at most (deliveries of different calls go in parallel).
    pub concurrency: usize,
    /// How long one request may take before it counts as failed.
    pub timeout: Dur,
    /// How long a delivery is retried before it is dead (24 h at least).
    pub retry_for: Dur,
    /// How often the outbox is read when there is nothing to send.
    pub poll_interval: Dur,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            concurrency: 64,
            timeout: Dur::secs(10),
            retry_for: Dur::secs(24 * 3600),
            poll_interval: Dur::millis(500),
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
    /// Whole-call recordings (an agent's or campaign's `recording`): MixMonitor writes them
    /// there on the FastAGI path, asterai on the streaming path; asterai serves them. Empty:
    /// `<recordings_dir>/calls`.
    pub call_recordings_dir: String,
}
