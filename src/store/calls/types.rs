//! What the calls table holds and what its queries take and return: calls, turns, their
//! statuses and outcomes, filters and pages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::string_enum::string_enum;

string_enum! {
    /// Which side placed the call.
    Direction ("direction") { Inbound = "inbound", Outbound = "outbound" }
}

string_enum! {
    /// Where a call is in its life: initiated → ringing → in_progress → completed, or one of
    /// busy, no_answer, failed, canceled.
    CallStatus ("status") {
        Initiated = "initiated",
        Ringing = "ringing",
        InProgress = "in_progress",
        Completed = "completed",
        Busy = "busy",
        NoAnswer = "no_answer",
        Failed = "failed",
        Canceled = "canceled",
    }
}

impl CallStatus {
    /// True for statuses a call never leaves.
    pub fn is_terminal(self) -> bool {
        self.rank() == 3
    }

    fn rank(self) -> u8 {
        match self {
            CallStatus::Initiated => 0,
            CallStatus::Ringing => 1,
            CallStatus::InProgress => 2,
            _ => 3,
        }
    }

    /// Whether a call may go from `self` to `next`. Statuses only move forward, so a late or
    /// repeated event (a Dial after the answer, a second ChannelDestroyed) changes nothing.
    pub fn can_become(self, next: CallStatus) -> bool {
        !self.is_terminal() && next.rank() > self.rank()
    }
}

string_enum! {
    /// How a call ended, from the business side.
    Outcome ("outcome") {
        Interested = "interested",
        NotInterested = "not_interested",
        CallbackRequested = "callback_requested",
        DoNotCall = "do_not_call",
        NoResponse = "no_response",
        Completed = "completed",
        Voicemail = "voicemail",
        Transferred = "transferred",
        Failed = "failed",
        // Calls nobody answered end with the outcome of their final status.
        Busy = "busy",
        NoAnswer = "no_answer",
        Canceled = "canceled",
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub id: String,
    pub org: String,
    #[serde(skip)]
    pub org_id: i64,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub channel: Option<String>,
    pub campaign_id: Option<i64>,
    pub contact_id: Option<i64>,
    pub status: CallStatus,
    pub status_reason: Option<String>,
    pub outcome: Option<Outcome>,
    pub outcome_reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from `started_at` to `ended_at`.
    pub duration_s: Option<f64>,
    pub transcript: Option<String>,
    pub emotion: Option<String>,
    pub intent_score: Option<f64>,
    pub turns: i32,
    /// The contact's first and last name, when the call has a contact with a name.
    pub contact_name: Option<String>,
    /// The campaign's name, when the call belongs to one.
    pub campaign_name: Option<String>,
    /// The agent the call ran and its version (none: the built-in agent of the config file).
    pub agent: Option<String>,
    pub agent_version: Option<i32>,
    /// What the agent's after-call analysis made of the call (see
    /// [`crate::conversation::after_call`]); absent until it ran, or without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<serde_json::Value>,
    /// When retention purged the call's words and recordings (its metadata stays); null until
    /// then. See [`crate::retention`].
    pub purged_at: Option<DateTime<Utc>>,
    /// The daemon that holds the call's live state (its conversation, or the dialer following
    /// it); see [`crate::fleet`].
    #[serde(skip)]
    pub daemon_id: Option<String>,
    /// The Asterisk (its ARI entity id) that carries an outbound call.
    #[serde(skip)]
    pub asterisk_id: Option<String>,
}

/// The latency breakdown of one turn, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// The silence window that ended the caller's speech.
    pub endpoint: u32,
    /// Speech-to-text.
    pub stt: u32,
    /// From the transcript to the responder's first sentence.
    pub llm_first: u32,
    /// From the first sentence to its first audio.
    pub tts_first: u32,
    /// From the end of the caller's speech to the start of playback.
    pub total: u32,
    /// asterai's own share of `total` after the recording returned, in microseconds: everything
    /// except waiting for the speech-to-text, responder and text-to-speech providers. Absent when
    /// the turn had no measurable critical path (a failure or fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_us: Option<u32>,
    /// Streaming path: from the caller's last voiced frame to the first frame of the answer
    /// sent. Absent on the AGI path (and for a turn without an answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_to_voice: Option<u32>,
}

/// One exchange: what the caller said and what the agent answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    pub turn: i32,
    pub caller: String,
    pub agent: String,
    pub emotion: Option<String>,
    pub intent: Option<String>,
    pub confidence: Option<f64>,
    pub latency_ms: Latency,
    /// The caller talked over the answer: `agent` is the part they heard.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// The tools the model called in this turn, in order, with what each did.
    pub tools: Vec<ToolUse>,
    pub at: DateTime<Utc>,
}

/// A tool the model called during a turn: its name, the arguments it gave (JSON; the text as
/// written when it was not JSON), and the result (what asterai did, or why it did not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    pub name: String,
    pub arguments: serde_json::Value,
    pub result: serde_json::Value,
}

/// A call to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewCall {
    /// Given by the dialer (it passes it to Asterisk); generated when `None`.
    pub id: Option<String>,
    pub org_id: i64,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub channel: Option<String>,
    pub campaign_id: Option<i64>,
    pub contact_id: Option<i64>,
}

/// A turn to record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTurn {
    pub call_id: String,
    pub turn: i32,
    pub caller: String,
    pub agent: String,
    pub emotion: Option<String>,
    pub intent: Option<String>,
    pub confidence: Option<f64>,
    pub latency: Latency,
    /// The caller talked over the answer (streaming barge-in): `agent` is what they heard.
    #[serde(default)]
    pub interrupted: bool,
    /// The tools the model called in this turn.
    #[serde(default)]
    pub tools: Vec<ToolUse>,
}

/// How a call finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishCall {
    /// The final status; ignored if the call already has a final status.
    pub status: CallStatus,
    pub reason: Option<String>,
    pub outcome: Option<Outcome>,
    pub outcome_reason: Option<String>,
    pub emotion: Option<String>,
    pub intent_score: Option<f64>,
}

/// A call's daemon is presumed dead: the guard of [`Store::finish_orphaned_call`](crate::store::Store::finish_orphaned_call).
#[derive(Debug, Clone, Copy)]
pub struct Orphan<'a> {
    pub daemon_id: &'a str,
    /// How old the daemon's last heartbeat must be.
    pub dead_after: std::time::Duration,
}

/// Filters for listing calls.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub status: Option<CallStatus>,
    /// Only calls still going on: initiated, ringing or in progress.
    pub active: bool,
    pub campaign_id: Option<i64>,
    pub outcome: Option<Outcome>,
    /// Calls that ran this agent (by name).
    pub agent: Option<String>,
    /// Text to find in the call id, the contact's name or either number (case-insensitive; a
    /// number written with spaces, dashes or brackets matches by its digits). 1 to 100
    /// characters.
    pub search: Option<String>,
    /// Calls started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Calls started before this time.
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of calls, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct CallPage {
    pub calls: Vec<Call>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The transcript assembled from the turns, one line per utterance.
pub fn transcript(turns: &[Turn]) -> String {
    let mut out = String::new();
    for turn in turns {
        if !turn.caller.is_empty() {
            out.push_str(&format!("Caller: {}\n", turn.caller));
        }
        if !turn.agent.is_empty() {
            out.push_str(&format!("Agent: {}\n", turn.agent));
        }
    }
    out
}
