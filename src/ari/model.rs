//! The ARI resources asterai reads: channels, playbacks, recordings, applications and the
//! Asterisk system information. Fields Asterisk may leave out are optional or defaulted, and
//! unknown fields are ignored, so a newer Asterisk does not break parsing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A caller id as ARI reports it (`{"name": "AI Dialer", "number": "5551234"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallerId {
    pub name: String,
    pub number: String,
}

/// Where a channel is in the dialplan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DialplanLocation {
    pub context: String,
    pub exten: String,
    pub priority: i64,
    pub app_name: String,
    pub app_data: String,
}

/// A channel. `id` is the channel's unique id: the `channelId` given to originate, or one
/// Asterisk made up (`1795222386.55`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `Down`, `Rsrved`, `OffHook`, `Dialing`, `Ring`, `Ringing`, `Up`, `Busy`,
    /// `Dialing Offhook`, `Pre-ring` or `Unknown`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub caller: CallerId,
    #[serde(default)]
    pub connected: CallerId,
    #[serde(default)]
    pub accountcode: String,
    #[serde(default)]
    pub dialplan: Option<DialplanLocation>,
    #[serde(default)]
    pub creationtime: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    /// Variables asked for in ari.conf's `channelvars`, when configured.
    #[serde(default)]
    pub channelvars: Option<BTreeMap<String, serde_json::Value>>,
}

/// A playback of one or more media URIs on a channel or bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playback {
    pub id: String,
    #[serde(default)]
    pub media_uri: String,
    #[serde(default)]
    pub next_media_uri: Option<String>,
    #[serde(default)]
    pub target_uri: String,
    #[serde(default)]
    pub language: Option<String>,
    /// `queued`, `playing`, `continuing`, `done` or `failed`.
    #[serde(default)]
    pub state: String,
}

/// A recording in progress (or just finished).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecording {
    pub name: String,
    #[serde(default)]
    pub format: String,
    /// `queued`, `recording`, `paused`, `done`, `failed` or `canceled`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub target_uri: String,
    /// Whole seconds (see the fixtures' README).
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub talking_duration: Option<i64>,
    #[serde(default)]
    pub silence_duration: Option<i64>,
    #[serde(default)]
    pub cause: Option<String>,
}

/// A recording stored on the Asterisk host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecording {
    pub name: String,
    #[serde(default)]
    pub format: String,
}

/// A Stasis application: it exists while a WebSocket is connected for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub channel_ids: Vec<String>,
    #[serde(default)]
    pub bridge_ids: Vec<String>,
    #[serde(default)]
    pub endpoint_ids: Vec<String>,
    #[serde(default)]
    pub device_names: Vec<String>,
}

/// `GET /asterisk/info`: what this Asterisk is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AsteriskInfo {
    pub system: Option<SystemInfo>,
    pub build: Option<BuildInfo>,
}

impl AsteriskInfo {
    /// `22.10.1`, when Asterisk said.
    pub fn version(&self) -> Option<&str> {
        self.system.as_ref().map(|s| s.version.as_str()).filter(|v| !v.is_empty())
    }

    /// The entity id (`02:fc:00:00:00:01`): the same `asterisk_id` every event carries.
    pub fn entity_id(&self) -> Option<&str> {
        self.system.as_ref().map(|s| s.entity_id.as_str()).filter(|v| !v.is_empty())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemInfo {
    pub version: String,
    pub entity_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildInfo {
    pub os: String,
    pub kernel: String,
    pub machine: String,
    pub date: String,
}

/// A bridge: channels that hear each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub id: String,
    /// `mixing`, `holding`.
    #[serde(default)]
    pub bridge_type: String,
    #[serde(default)]
    pub technology: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// An Asterisk module (`GET /asterisk/modules`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Module {
    /// `chan_websocket.so`.
    pub name: String,
    pub description: String,
    pub use_count: i64,
    /// `Running`, `Not Running`, …
    pub status: String,
    pub support_level: String,
}

impl Module {
    /// Loaded and running.
    pub fn running(&self) -> bool {
        self.status.eq_ignore_ascii_case("running")
    }
}
