//! The ARI events asterai uses, as typed serde models tagged on `type`.
//!
//! [`parse`] never fails: an event type asterai does not model becomes [`AriEvent::Unknown`]
//! (logged at debug level by the stream), and a known type with an unexpected shape is kept as
//! `Unknown` too, with the reason, so one odd message never stops the stream.
//!
//! What the captures teach (fixtures/asterisk/ari):
//! * `Dial` names the dialed channel in `peer`; `caller` is absent for an originate.
//!   `dialstatus` is empty when dialing starts, then `RINGING`, `ANSWER`, `BUSY`, `NOANSWER`,
//!   `CANCEL`, `CONGESTION`, `CHANUNAVAIL`…
//! * `ChannelDestroyed` carries the Q.850 `cause` and its text (`16`, `Normal Clearing`).
//! * `ChannelHangupRequest` with `soft: true` and cause 32 follows our own `DELETE`: a flag,
//!   not a cause.
//! * `ApplicationReplaced` means another connection took the app name over.

use serde::{Deserialize, Serialize};

use super::model::{Channel, LiveRecording, Playback};

/// One event with the fields every event carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// As Asterisk wrote it: `2026-11-21T00:53:06.673+0000`.
    pub timestamp: Option<String>,
    /// The Stasis application the event was sent to.
    pub application: Option<String>,
    /// The entity id of the Asterisk that sent it.
    pub asterisk_id: Option<String>,
    pub event: AriEvent,
}

/// The event types asterai reads. Variants differ in size (a `Dial` holds up to three
/// channels); each event is parsed once and moved along, so boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AriEvent {
    /// A channel entered the application (`args` from `appArgs` or `Stasis(app,args…)`).
    StasisStart {
        channel: Channel,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        replace_channel: Option<Channel>,
    },
    /// A channel left the application (continued to the dialplan, or hung up).
    StasisEnd {
        channel: Channel,
    },
    ChannelCreated {
        channel: Channel,
    },
    /// `channel.state` changed: `Ringing` while the far end rings, `Up` once answered.
    ChannelStateChange {
        channel: Channel,
    },
    /// The channel is gone, with the Q.850 cause.
    ChannelDestroyed {
        channel: Channel,
        #[serde(default)]
        cause: i64,
        #[serde(default)]
        cause_txt: String,
    },
    /// Someone asked for the channel to hang up. `soft` is a flag (cause 32 after our own
    /// DELETE), not the reason.
    ChannelHangupRequest {
        channel: Channel,
        #[serde(default)]
        cause: Option<i64>,
        #[serde(default)]
        soft: Option<bool>,
    },
    /// A channel variable was set; `channel` is absent for a global variable.
    ChannelVarset {
        #[serde(default)]
        channel: Option<Channel>,
        variable: String,
        #[serde(default)]
        value: String,
    },
    ChannelDialplan {
        channel: Channel,
        #[serde(default)]
        dialplan_app: String,
        #[serde(default)]
        dialplan_app_data: String,
    },
    ChannelDtmfReceived {
        channel: Channel,
        digit: String,
        #[serde(default)]
        duration_ms: Option<i64>,
    },
    ChannelCallerId {
        channel: Channel,
    },
    ChannelConnectedLine {
        channel: Channel,
    },
    /// Dialing progress of `peer`, the dialed channel.
    Dial {
        #[serde(default)]
        caller: Option<Channel>,
        peer: Channel,
        #[serde(default)]
        dialstatus: String,
        #[serde(default)]
        dialstring: Option<String>,
        #[serde(default)]
        forward: Option<String>,
        #[serde(default)]
        forwarded: Option<Channel>,
    },
    /// Another WebSocket took this application over; this connection gets nothing more.
    ApplicationReplaced {
        #[serde(default)]
        application: String,
    },
    PlaybackStarted {
        playback: Playback,
    },
    PlaybackContinuing {
        playback: Playback,
    },
    PlaybackFinished {
        playback: Playback,
    },
    RecordingStarted {
        recording: LiveRecording,
    },
    RecordingFinished {
        recording: LiveRecording,
    },
    RecordingFailed {
        recording: LiveRecording,
    },
    /// Anything else, kept as sent. `reason` says why it was not modelled: an unknown type, or
    /// a known one that did not parse.
    #[serde(skip)]
    Unknown {
        kind: String,
        reason: Option<String>,
        raw: serde_json::Value,
    },
}

/// Names of the modelled types, to tell "unknown" from "malformed".
const KNOWN: &[&str] = &[
    "StasisStart",
    "StasisEnd",
    "ChannelCreated",
    "ChannelStateChange",
    "ChannelDestroyed",
    "ChannelHangupRequest",
    "ChannelVarset",
    "ChannelDialplan",
    "ChannelDtmfReceived",
    "ChannelCallerId",
    "ChannelConnectedLine",
    "Dial",
    "ApplicationReplaced",
    "PlaybackStarted",
    "PlaybackContinuing",
    "PlaybackFinished",
    "RecordingStarted",
    "RecordingFinished",
    "RecordingFailed",
];

impl AriEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        match self {
            AriEvent::StasisStart { .. } => "StasisStart",
            AriEvent::StasisEnd { .. } => "StasisEnd",
            AriEvent::ChannelCreated { .. } => "ChannelCreated",
            AriEvent::ChannelStateChange { .. } => "ChannelStateChange",
            AriEvent::ChannelDestroyed { .. } => "ChannelDestroyed",
            AriEvent::ChannelHangupRequest { .. } => "ChannelHangupRequest",
            AriEvent::ChannelVarset { .. } => "ChannelVarset",
            AriEvent::ChannelDialplan { .. } => "ChannelDialplan",
            AriEvent::ChannelDtmfReceived { .. } => "ChannelDtmfReceived",
            AriEvent::ChannelCallerId { .. } => "ChannelCallerId",
            AriEvent::ChannelConnectedLine { .. } => "ChannelConnectedLine",
            AriEvent::Dial { .. } => "Dial",
            AriEvent::ApplicationReplaced { .. } => "ApplicationReplaced",
            AriEvent::PlaybackStarted { .. } => "PlaybackStarted",
            AriEvent::PlaybackContinuing { .. } => "PlaybackContinuing",
            AriEvent::PlaybackFinished { .. } => "PlaybackFinished",
            AriEvent::RecordingStarted { .. } => "RecordingStarted",
            AriEvent::RecordingFinished { .. } => "RecordingFinished",
            AriEvent::RecordingFailed { .. } => "RecordingFailed",
            AriEvent::Unknown { kind, .. } => kind,
        }
    }

    /// The channel the event is about: `channel`, or the dialed `peer` of a `Dial`.
    pub fn channel(&self) -> Option<&Channel> {
        match self {
            AriEvent::StasisStart { channel, .. }
            | AriEvent::StasisEnd { channel }
            | AriEvent::ChannelCreated { channel }
            | AriEvent::ChannelStateChange { channel }
            | AriEvent::ChannelDestroyed { channel, .. }
            | AriEvent::ChannelHangupRequest { channel, .. }
            | AriEvent::ChannelDialplan { channel, .. }
            | AriEvent::ChannelDtmfReceived { channel, .. }
            | AriEvent::ChannelCallerId { channel }
            | AriEvent::ChannelConnectedLine { channel } => Some(channel),
            AriEvent::ChannelVarset { channel, .. } => channel.as_ref(),
            AriEvent::Dial { peer, .. } => Some(peer),
            _ => None,
        }
    }
}

/// Parses one WebSocket text message. Never fails: see the module docs.
pub fn parse(text: &str) -> Envelope {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            return Envelope {
                timestamp: None,
                application: None,
                asterisk_id: None,
                event: AriEvent::Unknown {
                    kind: String::new(),
                    reason: Some(format!("not JSON: {e}")),
                    raw: serde_json::Value::String(text.chars().take(200).collect()),
                },
            };
        }
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let (timestamp, application, asterisk_id) = (field("timestamp"), field("application"), field("asterisk_id"));
    let kind = field("type").unwrap_or_default();
    let event = if KNOWN.contains(&kind.as_str()) {
        match serde_json::from_value::<AriEvent>(value.clone()) {
            Ok(event) => event,
            Err(e) => AriEvent::Unknown { kind, reason: Some(format!("malformed: {e}")), raw: value },
        }
    } else {
        AriEvent::Unknown { kind, reason: None, raw: value }
    };
    Envelope { timestamp, application, asterisk_id, event }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unknown_and_malformed() {
        let destroyed = r#"{"type":"ChannelDestroyed","timestamp":"2026-11-21T00:53:16.516+0000","cause":17,"cause_txt":"User busy","channel":{"id":"c1","name":"PJSIP/trunk-1","state":"Ringing"},"asterisk_id":"02:fc","application":"asterai"}"#;
        let envelope = parse(destroyed);
        assert_eq!(envelope.asterisk_id.as_deref(), Some("02:fc"));
        match &envelope.event {
            AriEvent::ChannelDestroyed { channel, cause, cause_txt } => {
                assert_eq!((channel.id.as_str(), *cause, cause_txt.as_str()), ("c1", 17, "User busy"));
            }
            other => panic!("{other:?}"),
        }
        let unknown = parse(r#"{"type":"DeviceStateChanged","device_state":{}}"#);
        assert!(
            matches!(unknown.event, AriEvent::Unknown { ref kind, reason: None, .. } if kind == "DeviceStateChanged")
        );
        let malformed = parse(r#"{"type":"Dial","dialstatus":"BUSY"}"#);
        assert!(matches!(malformed.event, AriEvent::Unknown { reason: Some(_), .. }));
        let garbage = parse("not json at all");
        assert!(matches!(garbage.event, AriEvent::Unknown { reason: Some(_), .. }));
        assert_eq!(garbage.event.kind(), "");
    }
}
