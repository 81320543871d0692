//! A campaign's settings (stored as JSON in `campaigns.settings`) and its calling window.
//!
//! ```json
//! {"max_concurrent": 5, "pacing": "2s", "ring_timeout": "30s", "timezone": "America/New_York",
//!  "window": {"start": "08:00", "end": "21:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat"]},
//!  "retries": {"busy": {"attempts": 2, "delay": "10m"}, "no_answer": {"attempts": 2, "delay": "1h"},
//!              "failed": {"attempts": 1, "delay": "30m"}},
//!  "agent": "sales"}
//! ```
//!
//! Every field has a default, so `{}` is a valid campaign. The window is evaluated in each
//! contact's own timezone (its `timezone` column, else the campaign's `timezone`): no call
//! starts outside it, whatever the server's clock says.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration as Span, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::agent::RecordingSpec;
use crate::store::CallStatus;
use crate::types::Dur;

/// Calls of one campaign at once, at most.
pub const MAX_CONCURRENT: u32 = 10_000;
/// The longest pacing between two call starts.
pub const MAX_PACING: Dur = Dur::secs(24 * 3600);
/// The longest a far end may ring.
pub const MAX_RING_TIMEOUT: Dur = Dur::secs(600);
/// The shortest a campaign call may ring: a shorter ring drops people on their way to the
/// phone (FTC's Telemarketing Sales Rule, 16 CFR 310.4(b)(1)(iv), asks for 15 seconds or four
/// rings).
pub const MIN_RING_TIMEOUT: Dur = Dur::secs(15);
/// Retries per outcome, at most.
pub const MAX_RETRY_ATTEMPTS: u32 = 100;
/// The longest wait before a retry.
pub const MAX_RETRY_DELAY: Dur = Dur::secs(30 * 24 * 3600);

/// How often and how soon to call a contact again after a call that did not get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryRule {
    /// Further attempts after this outcome (0: none).
    pub attempts: u32,
    /// Wait before the next attempt.
    pub delay: Dur,
}

impl Default for RetryRule {
    fn default() -> Self {
        RetryRule { attempts: 2, delay: Dur::secs(30 * 60) }
    }
}

/// Retry rules per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    pub busy: RetryRule,
    pub no_answer: RetryRule,
    pub failed: RetryRule,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            busy: RetryRule { attempts: 2, delay: Dur::secs(10 * 60) },
            no_answer: RetryRule { attempts: 2, delay: Dur::secs(60 * 60) },
            failed: RetryRule { attempts: 1, delay: Dur::secs(30 * 60) },
        }
    }
}

impl Retries {
    /// The rule for a call's final status; `None` for statuses that are not retried.
    pub fn for_status(&self, status: CallStatus) -> Option<RetryRule> {
        match status {
            CallStatus::Busy => Some(self.busy),
            CallStatus::NoAnswer => Some(self.no_answer),
            CallStatus::Failed => Some(self.failed),
            _ => None,
        }
    }
}

/// Local times and days when calls may start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Window {
    /// `HH:MM`, local time, inclusive.
    pub start: String,
    /// `HH:MM`, local time, exclusive.
    pub end: String,
    /// `mon` … `sun`.
    pub days: Vec<String>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            start: "08:00".into(),
            end: "21:00".into(),
            days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(String::from).to_vec(),
        }
    }
}

/// A campaign's settings. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSettings {
    /// Calls of this campaign at once, across every daemon of the fleet.
    pub max_concurrent: u32,
    /// Least time between two call starts of this campaign, across the fleet (0s: none).
    pub pacing: Dur,
    /// How long the far end may ring.
    pub ring_timeout: Dur,
    /// The timezone of contacts that have none (IANA name).
    pub timezone: String,
    pub window: Window,
    pub retries: Retries,
    /// The agent that holds the campaign's calls (its name); none: the organization's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `agi` or `stream`: how answered calls talk; absent: `conversation.media`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// `YYYY-MM-DD`: days the campaign does not call (the contact's local date), on top of the
    /// organization's holidays.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    /// Whole-call recording of the campaign's calls: `enabled`, `consent_announcement`; each key
    /// set overrides the agent's `[recording]`.
    #[serde(skip_serializing_if = "RecordingSpec::is_empty")]
    pub recording: RecordingSpec,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        CampaignSettings {
            max_concurrent: 1,
            pacing: Dur::secs(0),
            ring_timeout: Dur::secs(30),
            timezone: "UTC".into(),
            window: Window::default(),
            retries: Retries::default(),
            agent: None,
            media: None,
            holidays: Vec::new(),
            recording: RecordingSpec::default(),
        }
    }
}

impl CampaignSettings {
    /// Reads and checks settings; the error names the field.
    pub fn from_json(value: &serde_json::Value) -> Result<CampaignSettings, String> {
        let settings: CampaignSettings = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            format!("campaign settings: {}: {}", if path == "." { "(top)" } else { &path }, e.inner())
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// The settings as stored.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), String> {
        let field = |e: String| format!("campaign settings: {e}");
        if !(1..=MAX_CONCURRENT).contains(&self.max_concurrent) {
            return Err(field(format!("max_concurrent: expected 1 to {MAX_CONCURRENT}, got {}", self.max_concurrent)));
        }
        self.pacing.within("pacing", Dur::secs(0), MAX_PACING).map_err(field)?;
        self.ring_timeout.within("ring_timeout", MIN_RING_TIMEOUT, MAX_RING_TIMEOUT).map_err(field)?;
        if self.ring_timeout.0.subsec_millis() != 0 {
            return Err(field(format!("ring_timeout: expected whole seconds, got {}", self.ring_timeout)));
        }
        for (name, rule) in
            [("busy", self.retries.busy), ("no_answer", self.retries.no_answer), ("failed", self.retries.failed)]
        {
            if rule.attempts > MAX_RETRY_ATTEMPTS {
                return Err(field(format!(
                    "retries.{name}.attempts: expected 0 to {MAX_RETRY_ATTEMPTS}, got {}",
                    rule.attempts
                )));
            }
            rule.delay.within(&format!("retries.{name}.delay"), Dur::secs(0), MAX_RETRY_DELAY).map_err(field)?;
        }
        if self.window.days.len() > 7 {
            return Err(field(format!("window.days: expected at most 7 days, got {}", self.window.days.len())));
        }
        parse_tz(&self.timezone).map_err(|e| format!("campaign settings: timezone: {e}"))?;
        if let Some(agent) = &self.agent {
            let ok = (1..=63).contains(&agent.len())
                && agent.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !ok {
                return Err(field(format!(
                    "agent: expected an agent's name (lower-case letters, digits, '-', '_'), got {agent:?}"
                )));
            }
        }
        if let Some(media) = &self.media {
            super::CallMedia::parse(media).map_err(field)?;
        }
        if self.holidays.len() > 1000 {
            return Err(field(format!("holidays: expected at most 1000 dates, got {}", self.holidays.len())));
        }
        super::compliance::parse_dates("campaign settings: holidays", &self.holidays)?;
        self.recording.validate("campaign settings: recording")?;
        self.calling_window()?;
        Ok(())
    }

    /// The calling window, parsed.
    pub fn calling_window(&self) -> Result<CallingWindow, String> {
        let time = |field: &str, text: &str| {
            NaiveTime::parse_from_str(text.trim(), "%H:%M")
                .map_err(|_| format!("campaign settings: window.{field}: expected HH:MM such as 08:00, got {text:?}"))
        };
        let (start, end) = (time("start", &self.window.start)?, time("end", &self.window.end)?);
        if start >= end {
            return Err(format!(
                "campaign settings: window: start {} must come before end {} (local time, same day)",
                self.window.start, self.window.end
            ));
        }
        let mut days = Vec::new();
        for day in &self.window.days {
            days.push(Weekday::from_str(day.trim()).map_err(|_| {
                format!("campaign settings: window.days: expected mon, tue, wed, thu, fri, sat or sun, got {day:?}")
            })?);
        }
        if days.is_empty() {
            return Err("campaign settings: window.days: expected at least one day".into());
        }
        Ok(CallingWindow { start, end, days })
    }
}

/// An IANA timezone name (`Europe/Paris`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| format!("unknown timezone {name:?}; expected an IANA name such as America/New_York"))
}

/// When calls may start, in local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub days: Vec<Weekday>,
}

impl CallingWindow {
    /// Whether a call may start at `at` for someone in `tz`.
    pub fn allows(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        let local = at.with_timezone(&tz);
        let time = local.time();
        self.days.contains(&local.weekday()) && time >= self.start && time < self.end
    }

    /// The first instant at or after `at` when a call may start in `tz` (within two weeks).
    pub fn next_open(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        if self.allows(at, tz) {
            return at;
        }
        let local = at.with_timezone(&tz);
        for offset in 0..15 {
            let Some(date) = local.date_naive().checked_add_signed(Span::days(offset)) else { break };
            if !self.days.contains(&date.weekday()) {
                continue;
            }
            // A start that falls in a DST gap does not exist: take the next valid instant.
            let start = match tz.from_local_datetime(&date.and_time(self.start)) {
                chrono::LocalResult::Single(t) => t,
                chrono::LocalResult::Ambiguous(first, _) => first,
                chrono::LocalResult::None => {
                    let Some(later) = date.and_time(self.start).checked_add_signed(Span::hours(1)) else { continue };
                    match tz.from_local_datetime(&later) {
                        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
                        chrono::LocalResult::None => continue,
                    }
                }
            };
            let start = start.with_timezone(&Utc);
            if start >= at {
                return start;
            }
            // Today's window has not closed yet (we are inside it but on an excluded minute?):
            // handled by `allows`; a past start means today is over.
        }
        // Clocks this close to the end of time are not worth a call; never overflow.
        at.checked_add_signed(Span::days(1)).unwrap_or(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn defaults_and_errors() {
        let settings = CampaignSettings::from_json(&serde_json::json!({})).unwrap();
        assert_eq!(settings, CampaignSettings::default());
        for (bad, field) in [
            (serde_json::json!({"max_concurrent": 0}), "max_concurrent"),
            (serde_json::json!({"timezone": "Mars/Olympus"}), "timezone"),
            (serde_json::json!({"window": {"start": "9am"}}), "window.start"),
            (serde_json::json!({"window": {"start": "22:00", "end": "08:00"}}), "window"),
            (serde_json::json!({"window": {"days": ["someday"]}}), "window.days"),
            (serde_json::json!({"retries": {"busy": {"delay": "soon"}}}), "retries.busy.delay"),
            (serde_json::json!({"pacing": 5}), "pacing"),
            (serde_json::json!({"unknown": 1}), "unknown"),
            // Bounds: each names its field, none panics.
            (serde_json::json!({"max_concurrent": 4294967295u64}), "max_concurrent"),
            (serde_json::json!({"max_concurrent": 99999999999u64}), "max_concurrent"),
            (serde_json::json!({"max_concurrent": -1}), "max_concurrent"),
            (serde_json::json!({"pacing": "10000000000h"}), "pacing"),
            (serde_json::json!({"pacing": "2d"}), "pacing"),
            (serde_json::json!({"ring_timeout": "1h"}), "ring_timeout"),
            (serde_json::json!({"ring_timeout": "0s"}), "ring_timeout"),
            (serde_json::json!({"ring_timeout": "14s"}), "ring_timeout"),
            (serde_json::json!({"holidays": ["12/25/2026"]}), "holidays"),
            (serde_json::json!({"retries": {"busy": {"delay": "18446744073709551615h"}}}), "retries.busy.delay"),
            (serde_json::json!({"retries": {"no_answer": {"delay": "31d"}}}), "retries.no_answer.delay"),
            (serde_json::json!({"retries": {"failed": {"attempts": 101}}}), "retries.failed.attempts"),
            (serde_json::json!({"window": {"days": vec!["mon"; 8]}}), "window.days"),
        ] {
            let err = CampaignSettings::from_json(&bad).unwrap_err();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn the_window_is_local_to_the_contact() {
        let window = CampaignSettings::default().calling_window().unwrap();
        let server = at("2026-11-23T15:00:00Z"); // Monday 15:00 UTC
        assert!(window.allows(server, parse_tz("America/New_York").unwrap())); // 10:00
        assert!(!window.allows(server, parse_tz("Asia/Tokyo").unwrap())); // 00:00 Tuesday
        assert!(!window.allows(at("2026-11-23T14:30:00Z"), parse_tz("America/Los_Angeles").unwrap())); // 06:30
        let tokyo = parse_tz("Asia/Tokyo").unwrap();
        assert_eq!(window.next_open(server, tokyo), at("2026-11-23T23:00:00Z")); // 08:00 Tuesday in Tokyo
        let weekdays =
            Window { days: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(), ..Window::default() };
        let settings = CampaignSettings { window: weekdays, ..Default::default() };
        let window = settings.calling_window().unwrap();
        let saturday = at("2026-11-28T12:00:00Z");
        assert!(!window.allows(saturday, Tz::UTC));
        assert_eq!(window.next_open(saturday, Tz::UTC), at("2026-11-30T08:00:00Z"));
    }
}
