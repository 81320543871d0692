//! From ARI events to call statuses: a pure function of what is known about the channel and the
//! event, so every rule can be checked without Asterisk.
//!
//! * The answer to originate (200, state `Down`) proves nothing: statuses come from events.
//! * `ringing`: `ChannelStateChange` to `Ringing`, or `Dial` with `RINGING`.
//! * `in_progress`: `ChannelStateChange` to `Up`, or `Dial` with `ANSWER`.
//! * `busy` (`BUSY`, cause 17), `no_answer` (`NOANSWER`, causes 18 and 19), `failed`
//!   (`CHANUNAVAIL`, `CONGESTION`, cause 1 "unallocated number", cause 0 when a dialplan context
//!   does not exist, …), `canceled` (`CANCEL`, or our own hang-up before the answer).
//! * `ChannelHangupRequest` with `soft` is a flag, not a cause: cause 32 follows our own
//!   DELETE, cause 16 a dialplan with nowhere to go. Only a hard request's cause is kept, for a
//!   `ChannelDestroyed` that says 0 "Unknown".
//!
//! The `reason` stored with each change is Asterisk's own word for it: the dialstatus
//! (`BUSY`), the channel state (`Ringing`), or the cause with its text (`17 User busy`).
//!
//! A final status seen before the channel is gone is the one the call ends with. Over Local
//! channels (and some trunks) Asterisk reports `Dial` with `BUSY`, `NOANSWER` or `CONGESTION`,
//! then destroys the channel with cause 0 "Unknown": the call ends `busy` with reason `BUSY`,
//! not `failed` with "0 Unknown". [`outcome_for`] gives the outcome of each final status.

use crate::ari::AriEvent;
use crate::store::{CallStatus, Outcome};

/// What the tracker knows about a call's channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelFacts {
    /// The far end answered (state `Up` or `Dial ANSWER` seen, or the store says so).
    pub answered: bool,
    /// asterai asked for the hang-up (a DELETE of ours).
    pub hung_up_by_us: bool,
    /// The last real cause of a `ChannelHangupRequest` (not the soft flag), used when
    /// `ChannelDestroyed` says 0 "Unknown".
    pub hangup_cause: Option<(i64, String)>,
    /// A final status reported before the answer (`Dial` `BUSY`, `NOANSWER`, `CONGESTION`…,
    /// or the state `Busy`), with its reason: the call ends with it.
    pub ended_as: Option<(CallStatus, String)>,
}

/// The outcome of a call that ends with `status` without a conversation to say more: busy,
/// no answer, canceled and failed calls have the outcome of the same name, and an answered call
/// whose conversation did not finish it is `completed`.
pub fn outcome_for(status: CallStatus) -> Option<Outcome> {
    match status {
        CallStatus::Busy => Some(Outcome::Busy),
        CallStatus::NoAnswer => Some(Outcome::NoAnswer),
        CallStatus::Canceled => Some(Outcome::Canceled),
        CallStatus::Failed => Some(Outcome::Failed),
        CallStatus::Completed => Some(Outcome::Completed),
        CallStatus::Initiated | CallStatus::Ringing | CallStatus::InProgress => None,
    }
}

/// What an event means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes.
    Nothing,
    /// The call moves to this status (if it may: statuses only move forward).
    Status(CallStatus, String),
    /// The channel is gone: the call ends with this status (unless it has a final one).
    Finish(CallStatus, String),
}

/// Updates `facts` with `event` and says what it means. `event` must be about the call's
/// channel (its `channel`, or the `peer` of a `Dial`).
pub fn step(facts: &mut ChannelFacts, event: &AriEvent) -> Step {
    match event {
        AriEvent::ChannelStateChange { channel } | AriEvent::StasisStart { channel, .. } => {
            match channel.state.as_str() {
                "Ringing" => Step::Status(CallStatus::Ringing, "Ringing".into()),
                "Up" => {
                    facts.answered = true;
                    Step::Status(CallStatus::InProgress, "Up".into())
                }
                "Busy" => final_status(facts, CallStatus::Busy, "Busy"),
                _ => Step::Nothing,
            }
        }
        AriEvent::Dial { dialstatus, .. } => dial_status(facts, dialstatus),
        AriEvent::ChannelHangupRequest { cause, soft, .. } => {
            // A soft hang-up is a flag (32 after a DELETE, 16 when the dialplan has nowhere
            // to go): only a hard request carries the far end's cause.
            if let (Some(cause), None | Some(false)) = (cause, soft)
                && *cause > 0
            {
                facts.hangup_cause = Some((*cause, cause_text(*cause).to_owned()));
            }
            Step::Nothing
        }
        AriEvent::ChannelDestroyed { cause, cause_txt, .. } => {
            if let Some((status, reason)) = facts.ended_as.clone().filter(|_| !facts.answered) {
                return Step::Finish(status, reason);
            }
            let (cause, text) = match (*cause, &facts.hangup_cause) {
                (0, Some((c, t))) => (*c, t.clone()),
                (c, _) => (c, if cause_txt.is_empty() { cause_text(c).to_owned() } else { cause_txt.clone() }),
            };
            let reason = format!("{cause} {text}");
            Step::Finish(destroyed_status(facts, cause), reason)
        }
        _ => Step::Nothing,
    }
}

fn dial_status(facts: &mut ChannelFacts, dialstatus: &str) -> Step {
    let status = match dialstatus {
        "RINGING" => CallStatus::Ringing,
        "ANSWER" => {
            facts.answered = true;
            CallStatus::InProgress
        }
        "BUSY" => CallStatus::Busy,
        "NOANSWER" => CallStatus::NoAnswer,
        "CANCEL" => CallStatus::Canceled,
        "CONGESTION" | "CHANUNAVAIL" | "DONTCALL" | "TORTURE" | "INVALIDARGS" => CallStatus::Failed,
        // "" when dialing starts, PROGRESS/PROCEEDING (early media): nothing to report.
        _ => return Step::Nothing,
    };
    if status.is_terminal() {
        return final_status(facts, status, dialstatus);
    }
    Step::Status(status, dialstatus.to_owned())
}

/// A final status before the answer: reported now, and kept for the end of the channel.
fn final_status(facts: &mut ChannelFacts, status: CallStatus, reason: &str) -> Step {
    if !facts.answered && facts.ended_as.is_none() {
        facts.ended_as = Some((status, reason.to_owned()));
    }
    Step::Status(status, reason.to_owned())
}

/// The final status from a hang-up cause (Q.850).
fn destroyed_status(facts: &ChannelFacts, cause: i64) -> CallStatus {
    if facts.answered {
        return match cause {
            // Normal clearing, normal unspecified: the call happened and ended.
            16 | 31 => CallStatus::Completed,
            _ if facts.hung_up_by_us => CallStatus::Completed,
            // 0 "Unknown" after the answer: the dialplan could not run (a context that does not
            // exist, `continue` into nowhere).
            _ => CallStatus::Failed,
        };
    }
    if facts.hung_up_by_us {
        return CallStatus::Canceled;
    }
    match cause {
        17 => CallStatus::Busy,
        18..=19 => CallStatus::NoAnswer,
        // Hung up before any answer without a failure cause: nobody picked up.
        16 | 31 => CallStatus::NoAnswer,
        _ => CallStatus::Failed,
    }
}

/// Asterisk's text for the common causes, for a `ChannelHangupRequest` (which has none).
pub fn cause_text(cause: i64) -> &'static str {
    match cause {
        0 => "Unknown",
        1 => "Unallocated (unassigned) number",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        21 => "Call Rejected",
        22 => "Number changed",
        27 => "Destination out of order",
        28 => "Invalid number format (addr incomplete)",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        41 => "Temporary failure",
        42 => "Switching equipment congestion",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ari::Channel;

    fn channel(state: &str) -> Channel {
        serde_json::from_value(serde_json::json!({"id": "c1", "name": "PJSIP/trunk-1", "state": state})).unwrap()
    }

    fn destroyed(cause: i64, text: &str) -> AriEvent {
        AriEvent::ChannelDestroyed { channel: channel("Down"), cause, cause_txt: text.into() }
    }

    fn dial(status: &str) -> AriEvent {
        AriEvent::Dial {
            caller: None,
            peer: channel("Down"),
            dialstatus: status.into(),
            dialstring: None,
            forward: None,
            forwarded: None,
        }
    }

    #[test]
    fn ringing_answer_and_normal_end() {
        let mut facts = ChannelFacts::default();
        assert_eq!(
            step(&mut facts, &AriEvent::ChannelStateChange { channel: channel("Ringing") }),
            Step::Status(CallStatus::Ringing, "Ringing".into())
        );
        assert_eq!(step(&mut facts, &dial("")), Step::Nothing);
        assert_eq!(step(&mut facts, &dial("ANSWER")), Step::Status(CallStatus::InProgress, "ANSWER".into()));
        assert_eq!(
            step(&mut facts, &destroyed(16, "Normal Clearing")),
            Step::Finish(CallStatus::Completed, "16 Normal Clearing".into())
        );
    }

    #[test]
    fn causes_before_the_answer() {
        let cases = [
            (17, "User busy", CallStatus::Busy),
            (18, "No user responding", CallStatus::NoAnswer),
            (19, "User alerting, no answer", CallStatus::NoAnswer),
            (1, "Unallocated (unassigned) number", CallStatus::Failed),
            (0, "Unknown", CallStatus::Failed),
            (34, "Circuit/channel congestion", CallStatus::Failed),
            (21, "Call Rejected", CallStatus::Failed),
        ];
        for (cause, text, status) in cases {
            let mut facts = ChannelFacts::default();
            assert_eq!(step(&mut facts, &destroyed(cause, text)), Step::Finish(status, format!("{cause} {text}")));
        }
    }

    #[test]
    fn dialstatuses() {
        for (dialstatus, status) in [
            ("RINGING", CallStatus::Ringing),
            ("BUSY", CallStatus::Busy),
            ("NOANSWER", CallStatus::NoAnswer),
            ("CANCEL", CallStatus::Canceled),
            ("CONGESTION", CallStatus::Failed),
            ("CHANUNAVAIL", CallStatus::Failed),
        ] {
            assert_eq!(step(&mut ChannelFacts::default(), &dial(dialstatus)), Step::Status(status, dialstatus.into()));
        }
        assert_eq!(step(&mut ChannelFacts::default(), &dial("PROGRESS")), Step::Nothing);
    }

    /// Over Local channels: `Dial` says how it went, then the channel goes with cause 0.
    #[test]
    fn a_dialstatus_before_the_end_is_how_the_call_ends() {
        for (dialstatus, status, outcome) in [
            ("BUSY", CallStatus::Busy, Outcome::Busy),
            ("NOANSWER", CallStatus::NoAnswer, Outcome::NoAnswer),
            ("CONGESTION", CallStatus::Failed, Outcome::Failed),
            ("CHANUNAVAIL", CallStatus::Failed, Outcome::Failed),
            ("CANCEL", CallStatus::Canceled, Outcome::Canceled),
        ] {
            let mut facts = ChannelFacts::default();
            step(&mut facts, &dial("RINGING"));
            assert_eq!(step(&mut facts, &dial(dialstatus)), Step::Status(status, dialstatus.into()));
            assert_eq!(step(&mut facts, &destroyed(0, "Unknown")), Step::Finish(status, dialstatus.into()));
            assert_eq!(outcome_for(status), Some(outcome));
        }
        // After the answer the end of the channel decides, as before.
        let mut facts = ChannelFacts::default();
        step(&mut facts, &dial("ANSWER"));
        step(&mut facts, &dial("BUSY"));
        assert_eq!(
            step(&mut facts, &destroyed(16, "Normal Clearing")),
            Step::Finish(CallStatus::Completed, "16 Normal Clearing".into())
        );
        assert_eq!(outcome_for(CallStatus::Completed), Some(Outcome::Completed));
        assert_eq!(outcome_for(CallStatus::Ringing), None);
    }

    #[test]
    fn our_own_hangup_is_a_flag_not_a_cause() {
        let mut facts = ChannelFacts { hung_up_by_us: true, ..Default::default() };
        for cause in [32, 16] {
            let soft =
                AriEvent::ChannelHangupRequest { channel: channel("Ringing"), cause: Some(cause), soft: Some(true) };
            assert_eq!(step(&mut facts, &soft), Step::Nothing);
            assert_eq!(facts.hangup_cause, None);
        }
        assert_eq!(
            step(&mut facts, &destroyed(16, "Normal Clearing")),
            Step::Finish(CallStatus::Canceled, "16 Normal Clearing".into())
        );
    }

    #[test]
    fn an_unknown_cause_falls_back_to_the_hangup_request() {
        let mut facts = ChannelFacts { answered: true, ..Default::default() };
        let far_end = AriEvent::ChannelHangupRequest { channel: channel("Up"), cause: Some(16), soft: None };
        step(&mut facts, &far_end);
        assert_eq!(
            step(&mut facts, &destroyed(0, "Unknown")),
            Step::Finish(CallStatus::Completed, "16 Normal Clearing".into())
        );
        let mut answered = ChannelFacts { answered: true, ..Default::default() };
        assert_eq!(step(&mut answered, &destroyed(0, "Unknown")), Step::Finish(CallStatus::Failed, "0 Unknown".into()));
    }
}
