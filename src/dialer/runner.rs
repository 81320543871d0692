//! The campaign runner: dials the contacts of running campaigns, within each campaign's limits,
//! and settles each attempt when its call ends.
//!
//! Each [`Runner::tick`], for every running campaign:
//! 1. attempts whose call has ended but that were never settled are settled (a missed
//!    notification, a daemon that stopped mid-call);
//! 2. due contacts are claimed in one transaction ([`Store::claim_contacts`]): the campaign row
//!    is locked, so `max_concurrent` and `pacing` hold across every daemon on the database;
//!    contacts outside their calling window (in their own timezone, with the injected
//!    [`Clock`]) wait for its next opening; numbers on the do-not-call list become `dnc`;
//!    contacts refused by a compliance check (region rules, caps per number, holidays: see
//!    [`super::compliance`]) wait until every check passes, and the refusal is recorded;
//! 3. each claimed contact is checked against the do-not-call list and the compliance checks
//!    once more (a number added since the claim, a cap reached by another campaign, the clock
//!    past the hours: never dialed), then originated with the campaign's ring timeout; the
//!    checks it passed are recorded with the call.
//!
//! A claim is a lease (`dialer.claim_lease`) renewed while the daemon runs: a daemon that dies
//! stops renewing, and its contacts are claimed again by the others once the lease expires.
//!
//! When a call ends, the attempt is settled: `done` after an answered call (`pending` at the
//! booked time when the contact asked for a callback during it, `schedule_callback`); after `busy`,
//! `no_answer` or `failed`, `pending` again after the campaign's delay for that outcome while
//! retries for it remain, else `failed`; `pending` at once after a `canceled` call.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::campaign::{CampaignSettings, parse_tz};
use super::clock::Clock;
use super::compliance::{CampaignRules, Compliance, Place, Verdict, parse_dates};
use super::{CallMedia, DialError, Dialer, new_call_id};
use crate::store::campaigns::Campaign;
use crate::store::compliance::NewCheck;
use crate::store::contacts::{Claim, Decision, Refusal, Settle, later_by};
use crate::store::{Call, CallStatus, Store, StoreError};

/// How a runner claims.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This daemon's name in claims: unique in the fleet.
    pub claimer: String,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How often campaigns are looked at.
    pub poll_interval: Duration,
    /// The calling rules, caps and holidays of every organization (`dialer.compliance`).
    pub compliance: Arc<Compliance>,
}

impl RunnerConfig {
    /// A claimer name unique to this process: host, process id and a random part.
    pub fn claimer_name() -> String {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let host = if host.is_empty() { "asterai".to_owned() } else { host };
        format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
    }
}

/// What one tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tick {
    /// Calls placed (their ids).
    pub dialed: Vec<String>,
    /// Contacts outside their calling window or refused by a compliance check, moved to the
    /// first time every check passes.
    pub deferred: usize,
    /// Compliance refusals (at claim or dial time) by reason: `window`, `region_rule`, `cap`,
    /// `holiday`.
    pub refused: std::collections::BTreeMap<&'static str, usize>,
    /// Contacts found on the do-not-call list (at claim or dial time).
    pub do_not_call: usize,
    /// Attempts settled because their call had ended.
    pub settled: usize,
    /// Campaigns that finished with this tick.
    pub completed: Vec<i64>,
    /// Campaigns paused because they could not be dialed (the reason is stored with them).
    pub paused: Vec<i64>,
    /// The earliest time a paced campaign may start its next call (see
    /// [`crate::store::contacts::Claimed::next_claim_at`]): [`Runner::run`] ticks again then
    /// when that comes before its next poll, so pacing shorter than `poll_interval` is honoured.
    pub next_claim_at: Option<DateTime<Utc>>,
}

/// Why one campaign could not be handled in a tick.
enum CampaignFault {
    /// Something about the campaign itself (its settings, numbers past the calendar): it is
    /// paused with this reason.
    Unusable(String),
    /// The store failed: the campaign is tried again next tick.
    Store(StoreError),
}

impl From<StoreError> for CampaignFault {
    fn from(e: StoreError) -> Self {
        match e {
            // Checked arithmetic and validation report through Invalid: the campaign's fault.
            StoreError::Invalid(reason) => CampaignFault::Unusable(reason),
            other => CampaignFault::Store(other),
        }
    }
}

/// Runs campaigns for one daemon.
pub struct Runner {
    dialer: Arc<Dialer>,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
}

impl Runner {
    pub fn new(dialer: Arc<Dialer>, clock: Arc<dyn Clock>, config: RunnerConfig) -> Arc<Runner> {
        Arc::new(Runner { dialer, clock, config })
    }

    fn store(&self) -> &Store {
        self.dialer.publisher().store()
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Runs until `stop`: a tick every `poll_interval` and lease renewals. Settling as calls
    /// end is [`Runner::settle_as_calls_end`], a task of its own.
    ///
    /// A campaign the runner cannot dial is paused with the reason (see [`Runner::tick`]); a
    /// tick that fails as a whole (the database away) is logged and the next one tries again.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval((self.config.lease / 3).max(Duration::from_secs(1)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    match self.tick().await {
                        Ok(done) => {
                            if !done.dialed.is_empty() || !done.completed.is_empty() {
                                tracing::debug!(dialed = done.dialed.len(), deferred = done.deferred, "campaign tick");
                            }
                            // A paced campaign's next call may start before the next poll.
                            if let Some(at) = done.next_claim_at {
                                let wait = (at - self.clock.now()).to_std().unwrap_or_default();
                                if wait < self.config.poll_interval {
                                    tick.reset_after(wait);
                                }
                            }
                        }
                        Err(e) => tracing::warn!("campaign tick failed: {e}"),
                    }
                }
                _ = renew.tick() => {
                    let renewed = match later_by(self.clock.now(), self.config.lease, "the claim lease") {
                        Ok(until) => self.store().renew_claims(&self.config.claimer, until).await.map(drop),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = renewed {
                        tracing::warn!("cannot renew the campaign claims: {e}; they expire at the end of their lease");
                    }
                }
            }
        }
    }

    /// Settles each campaign attempt as soon as the tracker sees its call end (ticks settle
    /// whatever this misses).
    pub async fn settle_as_calls_end(self: Arc<Self>, stop: CancellationToken) {
        let Some(tracker) = self.dialer.tracker() else { return };
        let mut ended = tracker.subscribe();
        loop {
            let call = tokio::select! {
                _ = stop.cancelled() => return,
                received = ended.recv() => match received {
                    Ok(ended) => ended.call,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "call ends missed by the campaign runner; the next tick settles them");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            let settled = AssertUnwindSafe(self.settle(&call)).catch_unwind().await;
            let fault = match settled {
                Ok(Ok(_)) => continue,
                Ok(Err(StoreError::Invalid(reason))) => reason,
                Ok(Err(e)) => {
                    tracing::warn!(call_id = %call.id, "cannot settle the campaign attempt: {e}");
                    continue;
                }
                Err(panic) => format!("settling a call failed: {}", crate::supervise::panic_message(&*panic)),
            };
            if let Some(campaign) = call.campaign_id {
                self.pause(campaign, &fault).await;
            }
        }
    }

    /// One pass over the running campaigns. See the module docs.
    ///
    /// Each campaign is handled on its own: one whose settings are invalid, whose numbers
    /// overflow the calendar, or on which the dialer panics is paused with the reason
    /// ([`Store::pause_campaign`], published as `campaign_status_update`), and the others are
    /// dialed as usual. A database that does not answer ends the tick with the error.
    pub async fn tick(&self) -> Result<Tick, StoreError> {
        let mut done = Tick::default();
        if let Some(tracker) = self.dialer.tracker()
            && !tracker.connected()
        {
            return Ok(done);
        }
        for campaign in self.store().running_campaigns().await? {
            let outcome = AssertUnwindSafe(self.tick_campaign(&campaign, &mut done)).catch_unwind().await;
            let fault = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(CampaignFault::Unusable(reason))) => reason,
                Ok(Err(CampaignFault::Store(e @ StoreError::Unavailable(_)))) => return Err(e),
                Ok(Err(CampaignFault::Store(e))) => {
                    tracing::warn!(campaign = campaign.id, "campaign skipped this tick: {e}");
                    continue;
                }
                Err(panic) => {
                    format!("the dialer failed on this campaign: {}", crate::supervise::panic_message(&*panic))
                }
            };
            self.pause(campaign.id, &fault).await;
            done.paused.push(campaign.id);
        }
        Ok(done)
    }

    /// Pauses a campaign the runner cannot dial, with the reason (logged, stored, published).
    async fn pause(&self, campaign_id: i64, reason: &str) {
        tracing::error!(campaign = campaign_id, "campaign paused: {reason}");
        match self.store().pause_campaign(campaign_id, reason).await {
            Ok(_) => self.dialer.publisher().hub().wake(),
            Err(e) => tracing::warn!(campaign = campaign_id, "cannot pause the campaign: {e}"),
        }
    }

    async fn tick_campaign(&self, campaign: &Campaign, done: &mut Tick) -> Result<(), CampaignFault> {
        let settings = CampaignSettings::from_json(&campaign.settings)
            .map_err(|e| CampaignFault::Unusable(format!("its settings are invalid: {e}")))?;
        for (contact_id, call_id) in self.store().unsettled_attempts(campaign.id).await? {
            if let Some(call) = self.store().call_any(&call_id).await?
                && call.contact_id == Some(contact_id)
                && self.settle(&call).await?
            {
                done.settled += 1;
            }
        }
        let Some(org) = self.store().org_by_id(campaign.org_id).await? else { return Ok(()) };
        let window = settings.calling_window().map_err(CampaignFault::Unusable)?;
        let default_tz = parse_tz(&settings.timezone).map_err(CampaignFault::Unusable)?;
        let holidays =
            parse_dates("campaign settings: holidays", &settings.holidays).map_err(CampaignFault::Unusable)?;
        let policy = self.config.compliance.for_org(&org.slug);
        let now = self.clock.now();
        let slowed = self.watch_abandonment(campaign, policy, now).await?;
        // Slowed for its abandon rate: one call at a time, twice the pacing (10 s at least).
        let (max_concurrent, pacing) = if slowed {
            (1, (settings.pacing.0 * 2).max(Duration::from_secs(10)))
        } else {
            (settings.max_concurrent as i64, settings.pacing.0)
        };
        let campaign_id = campaign.id;
        let decide = |contact: &crate::store::contacts::Contact, history: &super::compliance::History| {
            let place = Place::of(&contact.phone, contact.state.as_deref(), contact.timezone.as_deref(), default_tz);
            let rules = CampaignRules { campaign_id, window: &window, holidays: &holidays };
            match policy.check(&rules, &place, history, now) {
                Verdict::Pass { .. } => Decision::Dial,
                Verdict::Refuse { reason, detail, not_before } => Decision::Refuse(Refusal {
                    reason: reason.as_str(),
                    detail,
                    not_before,
                    local_time: place.local_time(now),
                    region: place.region,
                }),
            }
        };
        let claim_started = std::time::Instant::now();
        let claimed = self
            .store()
            .claim_contacts(&Claim {
                campaign_id: campaign.id,
                claimer: &self.config.claimer,
                now,
                lease: self.config.lease,
                max_concurrent,
                pacing,
                decide: &decide,
            })
            .await?;
        // The claim's whole transaction, waiting on the campaign's row included.
        metrics::histogram!("asterai_campaign_claim_seconds").record(claim_started.elapsed().as_secs_f64());
        metrics::counter!("asterai_dialer_claims_total").increment(claimed.contacts.len() as u64);
        done.deferred += claimed.deferred;
        done.next_claim_at = match (done.next_claim_at, claimed.next_claim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        done.do_not_call += claimed.do_not_call;
        for (reason, n) in &claimed.refused {
            *done.refused.entry(reason).or_default() += n;
            metrics::counter!("asterai_compliance_refusals_total", "reason" => *reason, "stage" => "claim")
                .increment(*n as u64);
        }
        for contact in &claimed.contacts {
            let now = self.clock.now();
            let place = Place::of(&contact.phone, contact.state.as_deref(), contact.timezone.as_deref(), default_tz);
            let local_time = place.local_time(now);
            let mut check = NewCheck {
                org_id: org.id,
                campaign_id: Some(campaign.id),
                contact_id: Some(contact.id),
                call_id: None,
                number: &contact.phone,
                stage: "dial",
                passed: false,
                reason: None,
                detail: "",
                region: place.region.as_deref(),
                local_time: Some(&local_time),
                not_before: None,
                at: now,
            };
            // At dial time: a number put on the list since the claim is never dialed.
            if self.store().is_dnc(org.id, &contact.phone).await? {
                self.store().release_contact(contact.id, "dnc", Some("do_not_call")).await?;
                let detail = "the number is on the organization's do-not-call list";
                self.store().record_check(&NewCheck { reason: Some("do_not_call"), detail, ..check }).await?;
                done.do_not_call += 1;
                continue;
            }
            // And the rules again: the clock moved, another campaign may have called the number.
            let since = now.checked_sub_signed(chrono::Duration::days(30)).unwrap_or(now);
            let history = self.store().number_history(org.id, &contact.phone, since).await?;
            let rules = CampaignRules { campaign_id: campaign.id, window: &window, holidays: &holidays };
            let passed = match policy.check(&rules, &place, &history, now) {
                Verdict::Refuse { reason, detail, not_before } => {
                    self.store().defer_contact(contact.id, not_before, now).await?;
                    let refused = NewCheck {
                        reason: Some(reason.as_str()),
                        detail: &detail,
                        not_before: Some(not_before),
                        ..check
                    };
                    self.store().record_check(&refused).await?;
                    metrics::counter!("asterai_compliance_refusals_total", "reason" => reason.as_str(), "stage" => "dial").increment(1);
                    done.deferred += 1;
                    *done.refused.entry(reason.as_str()).or_default() += 1;
                    continue;
                }
                Verdict::Pass { detail } => detail,
            };
            let call_id = new_call_id();
            self.store().contact_dialed(contact.id, &call_id).await?;
            check.call_id = Some(&call_id);
            self.store().record_check(&NewCheck { passed: true, detail: &passed, ..check }).await?;
            let placed = self
                .dialer
                .originate_call(
                    &call_id,
                    &org,
                    &contact.phone,
                    Some(campaign.id),
                    Some(contact.id),
                    Some(settings.ring_timeout.0),
                    settings.media.as_deref().map(CallMedia::parse).transpose().unwrap_or_default(),
                )
                .await;
            match placed {
                Ok(call) => done.dialed.push(call.id),
                Err(DialError::Refused { call_id, .. }) => {
                    if let Some(call) = self.store().call_any(&call_id).await? {
                        self.settle(&call).await?;
                    }
                }
                // Asterisk may have the call: its events (or the next resync) end it.
                Err(DialError::Uncertain { call_id, error }) => {
                    tracing::warn!(%call_id, "campaign call uncertain: {error}");
                }
                Err(e) => {
                    tracing::warn!(contact = contact.id, "campaign call not placed: {e}");
                    self.store().release_contact(contact.id, "pending", None).await?;
                }
            }
        }
        if claimed.contacts.is_empty() {
            let counts = self.store().campaign_contact_counts(campaign.id).await?;
            let open = counts.get("pending").copied().unwrap_or(0) + counts.get("dialing").copied().unwrap_or(0);
            if open == 0 {
                match self.store().set_campaign_status(campaign.org_id, campaign.id, "completed").await {
                    Ok(_) => {
                        tracing::info!(campaign = campaign.id, name = %campaign.name, "campaign completed");
                        done.completed.push(campaign.id);
                    }
                    // Paused or stopped since this tick read it: that state stands.
                    Err(crate::store::StoreError::Conflict(why)) => {
                        tracing::debug!(campaign = campaign.id, "not completed: {why}");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The campaign's abandon rate over the last 30 days against its organization's threshold:
    /// past it (with `min_answered` answered live calls) the campaign is slowed, and once
    /// `pause_after` more live calls were answered since, with the rate still past it, paused.
    /// Each with the reason on the feed (`campaign_status_update`). Returns whether the campaign
    /// is slowed; the error that pauses it.
    async fn watch_abandonment(
        &self,
        campaign: &Campaign,
        policy: &super::compliance::Policy,
        now: DateTime<Utc>,
    ) -> Result<bool, CampaignFault> {
        let abandon = policy.abandon;
        let stats = self.store().abandon_stats(campaign, &abandon, now).await?;
        let (answered, abandoned, rate) = (stats.answered, stats.abandoned, stats.rate);
        metrics::gauge!("asterai_campaign_abandon_rate", "campaign" => campaign.id.to_string()).set(rate);
        if answered < i64::from(abandon.min_answered) || rate <= abandon.threshold {
            return Ok(campaign.slowed_at.is_some());
        }
        let reason = format!(
            "abandon rate {rate:.1} % over 30 days ({abandoned} of {answered} answered calls waited more than {} ms for the agent or hung up before it spoke), above the {} % threshold",
            abandon.max_wait_ms, abandon.threshold
        );
        let Some(slowed_at) = campaign.slowed_at else {
            if self.store().slow_campaign(campaign.id, &format!("slowed: {reason}")).await? {
                tracing::warn!(campaign = campaign.id, "campaign slowed: {reason}");
                self.dialer.publisher().hub().wake();
            }
            return Ok(true);
        };
        if self.store().answered_since(campaign.id, slowed_at).await? >= i64::from(abandon.pause_after) {
            // Paused by the tick, with the reason, like any campaign that cannot be dialed.
            return Err(CampaignFault::Unusable(format!("paused: {reason}, still after slowing down")));
        }
        Ok(true)
    }

    /// Settles the attempt of an ended campaign call. Returns whether an attempt was settled
    /// (false for calls of no campaign, calls not ended, attempts settled already).
    pub async fn settle(&self, call: &Call) -> Result<bool, StoreError> {
        let (Some(contact_id), Some(campaign_id)) = (call.contact_id, call.campaign_id) else { return Ok(false) };
        if call.ended_at.is_none() && !call.status.is_terminal() {
            return Ok(false);
        }
        let settings = match self.store().campaign_any(campaign_id).await? {
            Some(campaign) => CampaignSettings::from_json(&campaign.settings).unwrap_or_default(),
            None => return Ok(false),
        };
        let at = self.clock.now();
        let outcome = call.outcome.map(|o| o.as_str().to_owned()).unwrap_or_else(|| call.status.as_str().to_owned());
        let settle = match call.status {
            CallStatus::Completed | CallStatus::InProgress | CallStatus::Ringing | CallStatus::Initiated => {
                // A callback the contact booked during the call (schedule_callback) is the
                // next attempt: a dialling contact's next_attempt_at is in the future only then.
                let callback = match self.store().contact(call.org_id, contact_id).await? {
                    Some(contact) => contact.next_attempt_at.filter(|next| *next > at),
                    None => None,
                };
                match callback {
                    Some(next) => Settle { status: "pending", next_attempt_at: Some(next), last_outcome: outcome, at },
                    None => Settle { status: "done", next_attempt_at: None, last_outcome: outcome, at },
                }
            }
            CallStatus::Canceled => Settle { status: "pending", next_attempt_at: None, last_outcome: outcome, at },
            status => {
                let rule = settings.retries.for_status(status).unwrap_or_default();
                let so_far = self.store().contact_calls_with_status(contact_id, campaign_id, status.as_str()).await?;
                if so_far <= rule.attempts as i64 {
                    let next: DateTime<Utc> = later_by(at, rule.delay.0, "the retry delay")?;
                    Settle { status: "pending", next_attempt_at: Some(next), last_outcome: outcome, at }
                } else {
                    Settle { status: "failed", next_attempt_at: None, last_outcome: outcome, at }
                }
            }
        };
        let settled = self.store().settle_contact(contact_id, &call.id, &settle).await?;
        if settled {
            tracing::debug!(call_id = %call.id, contact = contact_id, status = settle.status, "campaign attempt settled");
        }
        Ok(settled)
    }
}
