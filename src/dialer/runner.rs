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
//! 3. each claimed contact is checked against the do-not-call list once more (a number added
//!    since the claim is never dialed), then originated with the campaign's ring timeout.
//!
//! A claim is a lease (`dialer.claim_lease`) renewed while the daemon runs: a daemon that dies
//! stops renewing, and its contacts are claimed again by the others once the lease expires.
//!
//! When a call ends, the attempt is settled: `done` after an answered call; after `busy`,
//! `no_answer` or `failed`, `pending` again after the campaign's delay for that outcome while
//! retries for it remain, else `failed`; `pending` at once after a `canceled` call.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::campaign::{CampaignSettings, parse_tz};
use super::clock::Clock;
use super::{DialError, Dialer, new_call_id};
use crate::store::contacts::{Claim, Decision, Settle};
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
    /// Contacts outside their calling window, moved to its next opening.
    pub deferred: usize,
    /// Contacts found on the do-not-call list (at claim or dial time).
    pub do_not_call: usize,
    /// Attempts settled because their call had ended.
    pub settled: usize,
    /// Campaigns that finished with this tick.
    pub completed: Vec<i64>,
    /// The earliest time a paced campaign may start its next call (see
    /// [`crate::store::contacts::Claimed::next_claim_at`]): [`Runner::run`] ticks again then
    /// when that comes before its next poll, so pacing shorter than `poll_interval` is honoured.
    pub next_claim_at: Option<DateTime<Utc>>,
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

    /// Runs until `stop`: a tick every `poll_interval`, lease renewals, and settling as calls
    /// end.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(self.clone().settle_as_calls_end(stop.clone()));
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
                    let until = self.clock.now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
                    if let Err(e) = self.store().renew_claims(&self.config.claimer, until).await {
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
            if let Err(e) = self.settle(&call).await {
                tracing::warn!(call_id = %call.id, "cannot settle the campaign attempt: {e}");
            }
        }
    }

    /// One pass over the running campaigns. See the module docs.
    pub async fn tick(&self) -> Result<Tick, StoreError> {
        let mut done = Tick::default();
        if let Some(tracker) = self.dialer.tracker()
            && !tracker.connected()
        {
            return Ok(done);
        }
        for campaign in self.store().running_campaigns().await? {
            let settings = match CampaignSettings::from_json(&campaign.settings) {
                Ok(settings) => settings,
                Err(e) => {
                    tracing::error!(campaign = campaign.id, "campaign not dialed, its settings are invalid: {e}");
                    continue;
                }
            };
            for (contact_id, call_id) in self.store().unsettled_attempts(campaign.id).await? {
                if let Some(call) = self.store().call_any(&call_id).await?
                    && call.contact_id == Some(contact_id)
                    && self.settle(&call).await?
                {
                    done.settled += 1;
                }
            }
            let Some(org) = self.store().org_by_id(campaign.org_id).await? else { continue };
            let window = settings.calling_window().map_err(StoreError::Invalid)?;
            let default_tz = parse_tz(&settings.timezone).map_err(StoreError::Invalid)?;
            let now = self.clock.now();
            let decide = move |contact: &crate::store::contacts::Contact| {
                let tz = contact.timezone.as_deref().and_then(|t| parse_tz(t).ok()).unwrap_or(default_tz);
                if window.allows(now, tz) { Decision::Dial } else { Decision::Later(window.next_open(now, tz)) }
            };
            let claim_started = std::time::Instant::now();
            let claimed = self
                .store()
                .claim_contacts(&Claim {
                    campaign_id: campaign.id,
                    claimer: &self.config.claimer,
                    now,
                    lease: self.config.lease,
                    max_concurrent: settings.max_concurrent as i64,
                    pacing: settings.pacing.0,
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
            for contact in &claimed.contacts {
                // At dial time: a number put on the list since the claim is never dialed.
                if self.store().is_dnc(org.id, &contact.phone).await? {
                    self.store().release_contact(contact.id, "dnc", Some("do_not_call")).await?;
                    done.do_not_call += 1;
                    continue;
                }
                let call_id = new_call_id();
                self.store().contact_dialed(contact.id, &call_id).await?;
                let placed = self
                    .dialer
                    .originate_call(
                        &call_id,
                        &org,
                        &contact.phone,
                        Some(campaign.id),
                        Some(contact.id),
                        Some(settings.ring_timeout.0),
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
                    self.store().set_campaign_status(campaign.org_id, campaign.id, "completed").await?;
                    tracing::info!(campaign = campaign.id, name = %campaign.name, "campaign completed");
                    done.completed.push(campaign.id);
                }
            }
        }
        Ok(done)
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
                Settle { status: "done", next_attempt_at: None, last_outcome: outcome, at }
            }
            CallStatus::Canceled => Settle { status: "pending", next_attempt_at: None, last_outcome: outcome, at },
            status => {
                let rule = settings.retries.for_status(status).unwrap_or_default();
                let so_far = self.store().contact_calls_with_status(contact_id, campaign_id, status.as_str()).await?;
                if so_far <= rule.attempts as i64 {
                    let next: DateTime<Utc> = at + chrono::Duration::from_std(rule.delay.0).unwrap_or_default();
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
