//! Outbound calls: composes [`crate::ari`], the store and the feed.
//!
//! One call's life ([`Dialer::place_call`]):
//! 1. The number must be E.164 and not on the organization's do-not-call list; a refusal sends
//!    nothing to Asterisk.
//! 2. The call is stored first (`initiated`, `outbound`, `call_started` on the feed), so every
//!    later event has a call to land on.
//! 3. It is originated in app mode (`app = ari.app`) with `channelId` = the call id, the
//!    endpoint from `dialer.endpoint`, `dialer.caller_id`, `dialer.ring_timeout`, and the
//!    channel variables `ASTERAI_CALL_ID`, `ASTERAI_ORG`, `ASTERAI_CAMPAIGN`, `ASTERAI_CONTACT`.
//!    App mode because the application then receives the channel's events from the first ring
//!    (a dialplan-mode channel sends the application nothing). An originate Asterisk refuses
//!    marks the call `failed` with Asterisk's message as the reason.
//! 4. The [`tracker::Tracker`] follows the channel's events to the call's statuses; once
//!    answered, the channel enters the application and is sent on to `dialer.context`, whose
//!    `ai` route adopts the call by `call_id=${ASTERAI_CALL_ID}`.
//!
//! `asterai call` places calls from the command line the same way, with its own ARI client and
//! the store; the daemon's tracker adopts those calls from the store as their events arrive, so
//! the daemon must be running (the CLI checks that the application is registered).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ari::{AriClient, AriError, Destination, Originate};
use crate::config::Config;
use crate::feed::Publisher;
use crate::store::{Call, CallStatus, Direction, FinishCall, NewCall, Org, Outcome, StoreError};

pub mod campaign;
pub mod clock;
pub mod compliance;
pub mod import;
pub mod report;
pub mod runner;
pub mod status;
pub mod tracker;
pub mod transfer;

pub use campaign::CampaignSettings;
pub use clock::{Clock, ManualClock, SystemClock};
pub use runner::{Runner, RunnerConfig};
pub use tracker::{Tracker, TrackerConfig};
pub use transfer::{AriTransferer, TransferTarget};

/// A new call id: a UUID v7, so ids sort by creation time.
pub fn new_call_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// How calls are placed.
#[derive(Debug, Clone)]
pub struct DialSettings {
    /// `PJSIP/{number}@trunk`.
    pub endpoint: String,
    /// The Stasis application the channel enters when answered (`ari.app`).
    pub app: String,
    pub caller_id: String,
    pub ring_timeout: std::time::Duration,
    /// How answered calls talk unless a call or campaign says otherwise (`conversation.media`).
    pub media: CallMedia,
}

/// How an answered outbound call holds its conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallMedia {
    /// On to `dialer.context`, whose FastAGI `ai` route holds it.
    #[default]
    Agi,
    /// It stays in the Stasis application, its audio streamed (barge-in and all).
    Stream,
}

impl CallMedia {
    /// `agi` or `stream`.
    pub fn parse(text: &str) -> Result<CallMedia, String> {
        match text.trim() {
            "agi" => Ok(CallMedia::Agi),
            "stream" => Ok(CallMedia::Stream),
            other => Err(format!("media: expected \"agi\" or \"stream\", got {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallMedia::Agi => "agi",
            CallMedia::Stream => "stream",
        }
    }
}

impl DialSettings {
    pub fn from_config(config: &Config) -> DialSettings {
        DialSettings {
            endpoint: config.dialer.endpoint.clone(),
            app: config.ari.app.clone(),
            caller_id: config.dialer.caller_id.clone(),
            ring_timeout: config.dialer.ring_timeout.0,
            media: CallMedia::parse(&config.conversation.media).unwrap_or_default(),
        }
    }

    /// The endpoint for an E.164 number: `{number}` is `+15551230000`, `{digits}` `15551230000`.
    pub fn endpoint_for(&self, number: &str) -> String {
        let digits = number.strip_prefix('+').unwrap_or(number);
        self.endpoint.replace("{number}", number).replace("{digits}", digits)
    }

    /// The number part of `dialer.caller_id` (`Acme <+15550000000>` → `+15550000000`).
    pub fn caller_number(&self) -> String {
        let id = self.caller_id.trim();
        match (id.find('<'), id.rfind('>')) {
            (Some(open), Some(close)) if open < close => id[open + 1..close].trim().to_owned(),
            _ if id.chars().all(|c| c.is_ascii_digit() || c == '+') => id.to_owned(),
            _ => String::new(),
        }
    }
}

/// What to call.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The number, E.164.
    pub to: String,
    #[serde(default)]
    pub campaign: Option<i64>,
    #[serde(default)]
    pub contact: Option<i64>,
    /// `agi` or `stream`; absent: `conversation.media`.
    #[serde(default)]
    pub media: Option<String>,
}

/// Why a call was not placed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Not E.164, or not the contact's number. Nothing was sent to Asterisk.
    #[error("{0}; nothing was dialed")]
    InvalidNumber(String),
    /// On the organization's do-not-call list. Nothing was sent to Asterisk.
    #[error("{number} is on {org}'s do-not-call list; nothing was dialed")]
    DoNotCall { number: String, org: String },
    /// A request that cannot be placed as asked (an unknown `media`). Nothing was sent.
    #[error("{0}; nothing was dialed")]
    Invalid(String),
    /// An unknown campaign or contact. Nothing was sent to Asterisk.
    #[error("{0}; nothing was dialed")]
    NotFound(String),
    /// Asterisk refused the originate; the call is stored as `failed` with its message.
    #[error("Asterisk refused call {call_id}: {error}")]
    Refused { call_id: String, error: AriError },
    /// ARI did not answer the originate; whether the call exists is unknown, and its events (or
    /// the next resync) will tell.
    #[error("no answer from Asterisk for call {call_id}: {error}; its status follows from Asterisk's events")]
    Uncertain { call_id: String, error: AriError },
    /// Calls cannot be followed right now (no daemon connected to ARI, the event stream down).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Places single calls (and, through the campaign runner, campaign calls).
pub struct Dialer {
    publisher: Publisher,
    client: AriClient,
    settings: DialSettings,
    tracker: Option<Tracker>,
    asterisk_id: Mutex<Option<String>>,
}

impl Dialer {
    /// `tracker` is the daemon's; `None` for `asterai call`, whose calls the daemon follows.
    pub fn new(publisher: Publisher, client: AriClient, settings: DialSettings, tracker: Option<Tracker>) -> Dialer {
        Dialer { publisher, client, settings, tracker, asterisk_id: Mutex::new(None) }
    }

    pub fn client(&self) -> &AriClient {
        &self.client
    }

    pub fn tracker(&self) -> Option<&Tracker> {
        self.tracker.as_ref()
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// For a dialer without a tracker (`asterai call`): reads Asterisk's identity and checks that
    /// a daemon holds the application, without which an answered call would be dropped
    /// (`STASISSTATUS=FAILED`). Returns the Asterisk version.
    pub async fn check_ready(&self) -> Result<String, DialError> {
        let info = self.client.asterisk_info().await.map_err(|e| DialError::Unavailable(e.to_string()))?;
        if let Some(id) = info.entity_id() {
            *self.asterisk_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.to_owned());
        }
        let apps = self.client.applications().await.map_err(|e| DialError::Unavailable(e.to_string()))?;
        if !apps.iter().any(|a| a.name == self.settings.app) {
            return Err(DialError::Unavailable(format!(
                "no asterai daemon is connected to Asterisk as ARI application {:?}: start `asterai serve` with ari.url set, or an answered call would be dropped",
                self.settings.app
            )));
        }
        Ok(info.version().unwrap_or("unknown").to_owned())
    }

    fn asterisk_id(&self) -> Option<String> {
        self.tracker
            .as_ref()
            .and_then(Tracker::asterisk_id)
            .or_else(|| self.asterisk_id.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Validates, stores, then originates one call. See the module docs.
    pub async fn place_call(&self, org: &Org, request: &CallRequest) -> Result<Call, DialError> {
        let store = self.publisher.store();
        let number = crate::phone::parse(&request.to).map_err(DialError::InvalidNumber)?;
        if store.is_dnc(org.id, &number).await? {
            tracing::info!(org = %org.slug, number = %crate::phone::mask(&number), "call refused: the number is on the do-not-call list");
            return Err(DialError::DoNotCall { number, org: org.slug.clone() });
        }
        if let Some(id) = request.campaign
            && store.campaign(org.id, id).await?.is_none()
        {
            return Err(DialError::NotFound(format!("no campaign {id} in {}", org.slug)));
        }
        if let Some(id) = request.contact {
            let contact = store
                .contact(org.id, id)
                .await?
                .ok_or_else(|| DialError::NotFound(format!("no contact {id} in {}", org.slug)))?;
            if contact.phone != number {
                return Err(DialError::InvalidNumber(format!(
                    "contact {id}'s number is {}, not {number}",
                    contact.phone
                )));
            }
        }
        let media = request.media.as_deref().map(CallMedia::parse).transpose().map_err(DialError::Invalid)?;
        if let Some(tracker) = &self.tracker
            && !tracker.connected()
        {
            return Err(DialError::Unavailable(
                "the ARI event stream is not connected, so the call could not be followed; try again shortly".into(),
            ));
        }
        let call_id = new_call_id();
        // Counted by the caps per number like a campaign's attempts (see `compliance`).
        let at = crate::store::now();
        let check = crate::store::compliance::NewCheck {
            org_id: org.id,
            campaign_id: request.campaign,
            contact_id: request.contact,
            call_id: Some(&call_id),
            number: &number,
            stage: "dial",
            passed: true,
            reason: None,
            detail: "a single call (POST /v1/calls or asterai call), not checked against the campaign rules",
            region: None,
            local_time: None,
            not_before: None,
            at,
        };
        store.record_check(&check).await?;
        self.originate_call(&call_id, org, &number, request.campaign, request.contact, None, media).await
    }

    /// Stores and originates a call whose checks are done (the campaign runner checks the
    /// do-not-call list itself, at dial time).
    pub async fn originate(
        &self,
        org: &Org,
        number: &str,
        campaign: Option<i64>,
        contact: Option<i64>,
    ) -> Result<Call, DialError> {
        let call_id = new_call_id();
        self.originate_call(&call_id, org, number, campaign, contact, None, None).await
    }

    /// [`Dialer::originate`] with the call's id chosen beforehand (the campaign runner records
    /// it on the contact first, so an end that comes at once finds its attempt) and, for a
    /// campaign, its own ring timeout and media (`None`: `conversation.media`).
    #[allow(clippy::too_many_arguments)]
    pub async fn originate_call(
        &self,
        call_id: &str,
        org: &Org,
        number: &str,
        campaign: Option<i64>,
        contact: Option<i64>,
        ring_timeout: Option<std::time::Duration>,
        media: Option<CallMedia>,
    ) -> Result<Call, DialError> {
        let store = self.publisher.store();
        let call_id = call_id.to_owned();
        let new = NewCall {
            id: Some(call_id.clone()),
            org_id: org.id,
            direction: Direction::Outbound,
            from: self.settings.caller_number(),
            to: number.to_owned(),
            channel: None,
            campaign_id: campaign,
            contact_id: contact,
        };
        self.publisher.call_started(&new).await?;
        if let Some(asterisk_id) = self.asterisk_id() {
            store.set_call_asterisk(org.id, &call_id, &asterisk_id).await?;
        }
        let variables = BTreeMap::from([
            ("ASTERAI_CALL_ID".to_owned(), call_id.clone()),
            ("ASTERAI_ORG".to_owned(), org.slug.clone()),
            ("ASTERAI_CAMPAIGN".to_owned(), campaign.map(|c| c.to_string()).unwrap_or_default()),
            ("ASTERAI_CONTACT".to_owned(), contact.map(|c| c.to_string()).unwrap_or_default()),
        ]);
        let originate = Originate {
            endpoint: self.settings.endpoint_for(number),
            destination: Destination::App {
                app: self.settings.app.clone(),
                args: app_args(&call_id, org, campaign, contact, media.unwrap_or(self.settings.media)),
            },
            variables,
            channel_id: Some(call_id.clone()),
            other_channel_id: None,
            caller_id: Some(self.settings.caller_id.clone()).filter(|c| !c.trim().is_empty()),
            timeout: Some(ring_timeout.unwrap_or(self.settings.ring_timeout)),
        };
        tracing::info!(%call_id, org = %org.slug, number = %crate::phone::mask(number), ?campaign, ?contact, "placing a call");
        let result = match self.client.originate(&originate).await {
            Err(error @ AriError::Transport { .. }) => match self.client.channel(&call_id).await {
                // The answer was lost, the channel was made.
                Ok(channel) => Ok(channel),
                Err(AriError::NotFound(_)) => Err(error),
                Err(_) => return Err(DialError::Uncertain { call_id, error }),
            },
            other => other,
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(AriError::Transport { .. }) => "unreachable",
            Err(_) => "refused",
        };
        metrics::counter!("asterai_originates_total", "result" => label).increment(1);
        match result {
            Ok(channel) => {
                if let Some(tracker) = &self.tracker {
                    tracker.watch(org.id, &call_id);
                }
                if !channel.name.is_empty() {
                    store.set_call_channel(org.id, &call_id, &channel.name).await?;
                }
                let call = store
                    .call(org.id, &call_id)
                    .await?
                    .ok_or_else(|| StoreError::Database(format!("call {call_id} vanished")))?;
                Ok(call)
            }
            Err(error) => {
                tracing::warn!(%call_id, "Asterisk refused the call: {error}");
                let finish = FinishCall {
                    status: CallStatus::Failed,
                    reason: Some(error.reason()),
                    outcome: Some(Outcome::Failed),
                    outcome_reason: Some(error.to_string()),
                    emotion: None,
                    intent_score: None,
                };
                self.publisher.call_ended(org.id, &call_id, &finish).await?;
                Err(DialError::Refused { call_id, error })
            }
        }
    }

    /// Hangs up a call asterai placed; before the answer it ends `canceled`.
    pub async fn hang_up(&self, call_id: &str) -> Result<(), AriError> {
        if let Some(tracker) = &self.tracker {
            tracker.hanging_up(call_id);
        }
        self.client.hangup(call_id, Some(crate::ari::HangupReason::Normal)).await
    }
}

/// The Stasis arguments of an outbound call: `outbound`, and for a streaming call the `ai`
/// route it is held with (the same parameters as the dialplan's FastAGI route).
fn app_args(call_id: &str, org: &Org, campaign: Option<i64>, contact: Option<i64>, media: CallMedia) -> Vec<String> {
    let mut args = vec!["outbound".to_owned()];
    if media == CallMedia::Stream {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let mut route = format!(
            "ai?org={}&call_id={}",
            utf8_percent_encode(&org.slug, NON_ALPHANUMERIC),
            utf8_percent_encode(call_id, NON_ALPHANUMERIC)
        );
        if let Some(campaign) = campaign {
            route.push_str(&format!("&campaign={campaign}"));
        }
        if let Some(contact) = contact {
            route.push_str(&format!("&contact={contact}"));
        }
        args.push(route);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_caller_numbers() {
        let mut s = DialSettings {
            endpoint: "PJSIP/{number}@trunk".into(),
            app: "asterai".into(),
            caller_id: "Acme <+15550000000>".into(),
            ring_timeout: std::time::Duration::from_secs(30),
            media: CallMedia::Agi,
        };
        assert_eq!(s.endpoint_for("+15551230000"), "PJSIP/+15551230000@trunk");
        assert_eq!(s.caller_number(), "+15550000000");
        s.endpoint = "SIP/trunk/{digits}".into();
        assert_eq!(s.endpoint_for("+15551230000"), "SIP/trunk/15551230000");
        s.caller_id = "+15550000001".into();
        assert_eq!(s.caller_number(), "+15550000001");
        s.caller_id = "Acme".into();
        assert_eq!(s.caller_number(), "");
    }

    #[test]
    fn streaming_calls_carry_their_route_in_the_stasis_arguments() {
        let org = Org { id: 1, slug: "acme".into(), name: "Acme".into(), created_at: crate::store::now() };
        assert_eq!(app_args("c-1", &org, Some(7), None, CallMedia::Agi), vec!["outbound".to_owned()]);
        let args = app_args("c-1", &org, Some(7), Some(12), CallMedia::Stream);
        assert_eq!(args, vec!["outbound".to_owned(), "ai?org=acme&call_id=c%2D1&campaign=7&contact=12".to_owned()]);
        // Read back by the ai route's own parameter code.
        let route = crate::ari::StasisRoute::from_args(&args[1..]).unwrap();
        assert_eq!((route.route(), route.param("call_id").as_deref()), ("ai", Some("c-1")));
        assert_eq!(CallMedia::parse("stream"), Ok(CallMedia::Stream));
        assert!(CallMedia::parse("rtp").unwrap_err().contains("\"agi\" or \"stream\""));
    }
}
