//! The [`Tracker`] follows the channels of the calls asterai placed and writes each change of
//! status through the [`Publisher`] (stored, then on the live feed as `call_status_update`).
//!
//! * A channel's id is its call's id (the dialer originates with `channelId = call id`), so an
//!   event names its call. A channel the tracker has not met is looked up in the store once: a
//!   call placed by `asterai call` in another process is adopted that way, and anything else is
//!   remembered as a stranger and ignored.
//! * When an answered call enters the Stasis application, it is sent on to the dialplan
//!   (`dialer.context`, `dialer.extension`), where the `ai` route adopts it by `call_id`.
//!   A channel that enters the application and is no call of ours goes back to its dialplan.
//! * After every (re)connect of the event stream it resyncs: events sent while the stream was
//!   down are lost, so it lists the channels and finishes each call whose channel is gone
//!   (`completed` if it was answered, else `failed`; reason "channel gone after reconnect").
//!   On a database shared by several daemons it only reconciles the calls carried by its own
//!   Asterisk (their `asterisk_id`); alone on its database it also reconciles inbound calls
//!   begun before this process started (their conversation died with the previous one).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::status::{ChannelFacts, Step, outcome_for, step};
use crate::ari::{AriClient, AriError, AriEvent, Envelope, MEDIA_CHANNEL_TAG, StasisCalls, StreamItem};
use crate::feed::Publisher;
use crate::store::{Call, CallStatus, Direction, FinishCall};

/// The reason stored for a call whose channel vanished while the stream was down.
pub const GONE_AFTER_RECONNECT: &str = "channel gone after reconnect";

/// Strangers remembered before the set is cleared (it only saves store lookups).
const MAX_STRANGERS: usize = 10_000;

/// How the tracker behaves.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Where an answered call continues: `dialer.context`, `dialer.extension`, priority 1.
    pub context: String,
    pub extension: String,
    /// A live call the tracker never followed (placed by another process, or before a
    /// restart) is reconciled only once it is this old: it may be in the middle of being
    /// originated.
    pub orphan_grace: Duration,
    /// Also reconcile calls that no dialer assigned to an Asterisk (inbound calls). Right when
    /// this daemon is alone on its database (SQLite).
    pub reconcile_unassigned: bool,
    /// How long the end of an answered call waits for its conversation to finish it (with the
    /// outcome the conversation knows) before the tracker finishes it with the channel's cause.
    pub conversation_grace: Duration,
}

/// The default [`TrackerConfig::conversation_grace`]: a conversation that sees the hang-up
/// stores its end within moments; this is for one that never started or died.
pub const CONVERSATION_GRACE: Duration = Duration::from_secs(5);

/// A call that has ended, as the tracker saw it (for the campaign runner).
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub call: Call,
}

/// What a resync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resync {
    /// Channels Asterisk listed.
    pub channels: usize,
    /// Calls found live and followed.
    pub live: usize,
    /// Calls finished because their channel was gone.
    pub finished: Vec<String>,
}

struct Tracked {
    call_id: String,
    /// The call's organization: every write names it.
    org_id: i64,
    facts: ChannelFacts,
}

#[derive(Default)]
struct State {
    calls: HashMap<String, Tracked>,
    strangers: HashSet<String>,
    /// Channels of answered calls that are gone, whose calls wait for their conversation to
    /// finish them: later events about them change nothing.
    finishing: HashSet<String>,
    /// Channels whose calls this tracker finished: a [`Tracker::watch`] that comes after all
    /// of a call's events (the originate's answer can be slower than the event stream) must not
    /// follow it again.
    ended: HashSet<String>,
}

struct Inner {
    publisher: Publisher,
    client: AriClient,
    config: TrackerConfig,
    state: Mutex<State>,
    asterisk_id: Mutex<Option<String>>,
    ended: broadcast::Sender<Ended>,
    connected: AtomicBool,
    /// When this tracker (this process) started: an inbound call begun since then belongs to a
    /// conversation still running here, which finishes it.
    started: chrono::DateTime<chrono::Utc>,
    /// The calls held in the application (streaming conversations), when there are any.
    stasis: Mutex<Option<Arc<dyn StasisCalls>>>,
}

/// Follows calls through ARI events. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

impl Tracker {
    pub fn new(publisher: Publisher, client: AriClient, config: TrackerConfig) -> Tracker {
        let (ended, _) = broadcast::channel(1024);
        Tracker {
            inner: Arc::new(Inner {
                publisher,
                client,
                config,
                state: Mutex::new(State::default()),
                asterisk_id: Mutex::new(None),
                ended,
                connected: AtomicBool::new(false),
                started: crate::store::now(),
                stasis: Mutex::new(None),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than stopping call tracking would.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands channels entering the application with a route (`Stasis(app,ai?org=…)`, or a
    /// streaming call the dialer placed) to `calls`, and every channel event with them.
    pub fn set_stasis_calls(&self, calls: Arc<dyn StasisCalls>) {
        *self.inner.stasis.lock().unwrap_or_else(|e| e.into_inner()) = Some(calls);
    }

    fn stasis_calls(&self) -> Option<Arc<dyn StasisCalls>> {
        self.inner.stasis.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Tells the streaming calls held in the application that asterai is shutting down.
    pub fn wrap_up_stasis_calls(&self) {
        if let Some(calls) = self.stasis_calls() {
            calls.wrap_up();
        }
    }

    /// The streaming calls held in the application right now.
    pub fn stasis_calls_active(&self) -> usize {
        self.stasis_calls().map_or(0, |calls| calls.active())
    }

    /// The entity id of the Asterisk behind ARI, once known.
    pub fn asterisk_id(&self) -> Option<String> {
        self.inner.asterisk_id.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_asterisk_id(&self, id: &str) {
        *self.inner.asterisk_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.to_owned());
    }

    /// Whether the event stream is connected: a call placed while it is not could not be
    /// followed.
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    /// Follows a call of `org_id` from now on (the dialer calls this once Asterisk took the
    /// originate; an event that comes first finds the call in the store).
    pub fn watch(&self, org_id: i64, call_id: &str) {
        let mut state = self.state();
        if state.ended.contains(call_id) {
            return;
        }
        state.strangers.remove(call_id);
        state.calls.entry(call_id.to_owned()).or_insert_with(|| Tracked {
            call_id: call_id.to_owned(),
            org_id,
            facts: ChannelFacts::default(),
        });
    }

    /// Resolves once no call is followed any more, or at once if none is.
    pub async fn idle(&self) {
        while self.followed() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Remembers that asterai itself hangs up this call, so its end reads `canceled` (before the
    /// answer) rather than a cause.
    pub fn hanging_up(&self, call_id: &str) {
        if let Some(tracked) = self.state().calls.get_mut(call_id) {
            tracked.facts.hung_up_by_us = true;
        }
    }

    /// The calls followed right now.
    pub fn followed(&self) -> usize {
        let state = self.state();
        state.calls.len() + state.finishing.len()
    }

    /// Ended calls, as they end.
    pub fn subscribe(&self) -> broadcast::Receiver<Ended> {
        self.inner.ended.subscribe()
    }

    /// Consumes the event stream until it ends: resyncs on every connect, handles each event.
    pub async fn run(self, mut items: mpsc::Receiver<StreamItem>) {
        while let Some(item) = items.recv().await {
            match item {
                StreamItem::Connected { connection } => {
                    metrics::counter!("asterai_ari_connections_total").increment(1);
                    metrics::gauge!("asterai_ari_connected").set(1.0);
                    // Events may have been missed: reconcile, retrying while ARI's REST side is
                    // not answering yet (Asterisk still starting).
                    let mut wait = Duration::from_millis(200);
                    loop {
                        match self.resync().await {
                            Ok(report) => {
                                tracing::info!(
                                    connection,
                                    channels = report.channels,
                                    live = report.live,
                                    finished = report.finished.len(),
                                    "ARI resync done"
                                );
                                // Only now: calls placed from here on carry Asterisk's id.
                                self.inner.connected.store(true, Ordering::SeqCst);
                                break;
                            }
                            Err(e) => {
                                tracing::warn!("ARI resync failed: {e}; retrying in {wait:?}");
                                if items.is_closed() {
                                    return;
                                }
                                tokio::time::sleep(wait).await;
                                wait = (wait * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                }
                StreamItem::Event(envelope) => self.handle(&envelope).await,
                StreamItem::Disconnected { reason } => {
                    self.inner.connected.store(false, Ordering::SeqCst);
                    metrics::gauge!("asterai_ari_connected").set(0.0);
                    tracing::debug!("ARI event stream disconnected: {reason}");
                }
            }
        }
    }

    /// The call an event is about (its organization and id), if it is one of ours; adopts
    /// calls from the store.
    async fn tracked_call(&self, channel_id: &str) -> Option<(i64, String)> {
        {
            let state = self.state();
            if let Some(tracked) = state.calls.get(channel_id) {
                return Some((tracked.org_id, tracked.call_id.clone()));
            }
            if state.strangers.contains(channel_id) || state.finishing.contains(channel_id) {
                return None;
            }
        }
        let found = match self.inner.publisher.store().call_any(channel_id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(channel = %channel_id, "cannot look up the call of an ARI channel: {e}");
                return None;
            }
        };
        let Some(call) = found.filter(|call| call.direction == Direction::Outbound && call.ended_at.is_none()) else {
            let mut state = self.state();
            if state.strangers.len() >= MAX_STRANGERS {
                state.strangers.clear();
            }
            state.strangers.insert(channel_id.to_owned());
            return None;
        };
        let facts = ChannelFacts {
            answered: call.answered_at.is_some() || call.status == CallStatus::InProgress,
            ..Default::default()
        };
        tracing::debug!(call_id = %call.id, "following a call placed elsewhere");
        self.state()
            .calls
            .insert(channel_id.to_owned(), Tracked { call_id: call.id.clone(), org_id: call.org_id, facts });
        // A call nobody holds (placed by `asterai call`) is this daemon's from now on, so the
        // fleet finishes it if this daemon dies.
        if call.daemon_id.is_none()
            && let Some(daemon) = self.inner.publisher.daemon()
            && let Err(e) = self.inner.publisher.store().hold_call(call.org_id, &call.id, daemon).await
        {
            tracing::warn!(call_id = %call.id, "cannot record that this daemon holds the call: {e}");
        }
        Some((call.org_id, call.id))
    }

    /// Applies one event.
    pub async fn handle(&self, envelope: &Envelope) {
        if let Some(id) = &envelope.asterisk_id
            && self.asterisk_id().is_none()
        {
            self.set_asterisk_id(id);
        }
        let event = &envelope.event;
        let kind = if matches!(event, AriEvent::Unknown { .. }) { "unknown" } else { event.kind() };
        metrics::counter!("asterai_ari_events_total", "type" => kind.to_owned()).increment(1);
        let Some(channel) = event.channel() else { return };
        let stasis = self.stasis_calls();
        if let Some(calls) = &stasis {
            calls.event(event);
        }
        // Dial events name the dialed channel in `peer`; one of ours dialing out (a transfer)
        // is not about our call's status.
        let channel_id = channel.id.clone();
        let call_id = self.tracked_call(&channel_id).await;
        if let AriEvent::ChannelDestroyed { .. } = event {
            self.state().strangers.remove(&channel_id);
        }
        let Some((org_id, call_id)) = call_id else {
            if let AriEvent::StasisStart { channel, args, .. } = event {
                // asterai's own external media channels are no strangers; nor are the calls
                // that enter with a route for the streaming conversations.
                let ours = args.first().is_some_and(|a| a == MEDIA_CHANNEL_TAG)
                    || stasis.as_ref().is_some_and(|calls| calls.start(channel, args, None));
                if !ours {
                    self.return_stranger(&channel.id, args);
                }
            }
            return;
        };
        let outcome = {
            let mut state = self.state();
            match state.calls.get_mut(&channel_id) {
                Some(tracked) => step(&mut tracked.facts, event),
                None => return,
            }
        };
        if let AriEvent::StasisStart { channel, args, .. } = event {
            // A streaming call (`outbound` then its route) stays in the application.
            let streaming =
                args.len() > 1 && stasis.as_ref().is_some_and(|calls| calls.start(channel, &args[1..], Some(&call_id)));
            if !streaming {
                self.send_to_dialplan(&call_id, &channel.id);
            }
        }
        match outcome {
            Step::Nothing => {}
            Step::Status(status, reason) => {
                match self.inner.publisher.call_status(org_id, &call_id, status, Some(&reason)).await {
                    Ok(Some(_)) => tracing::debug!(%call_id, status = status.as_str(), %reason, "call status"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%call_id, "cannot store the call's status {status}: {e}"),
                }
            }
            Step::Finish(status, reason) => {
                let answered = {
                    let mut state = self.state();
                    if state.ended.len() >= MAX_STRANGERS {
                        state.ended.clear();
                    }
                    state.ended.insert(channel_id.clone());
                    state.calls.remove(&channel_id).is_some_and(|t| t.facts.answered)
                };
                if answered || self.in_conversation(org_id, &call_id).await {
                    // The conversation on this call learns of the hang-up too, and finishes the
                    // call with its outcome (and its transcript): let it write first.
                    self.state().finishing.insert(channel_id.clone());
                    let tracker = self.clone();
                    tokio::spawn(async move {
                        let _done = Finishing(&tracker, channel_id);
                        tracker.await_conversation(org_id, &call_id).await;
                        tracker.finish(org_id, &call_id, status, &reason).await;
                    });
                } else {
                    self.finish(org_id, &call_id, status, &reason).await;
                }
            }
        }
    }

    /// Whether a conversation holds the call: it was answered and has not ended.
    async fn in_conversation(&self, org_id: i64, call_id: &str) -> bool {
        match self.inner.publisher.store().call(org_id, call_id).await {
            Ok(Some(call)) => {
                call.ended_at.is_none() && (call.answered_at.is_some() || call.status == CallStatus::InProgress)
            }
            _ => false,
        }
    }

    /// Waits until the call has ended in the store, or for the conversation grace.
    async fn await_conversation(&self, org_id: i64, call_id: &str) {
        let deadline = tokio::time::Instant::now() + self.inner.config.conversation_grace;
        let mut wait = Duration::from_millis(20);
        loop {
            match self.inner.publisher.store().call(org_id, call_id).await {
                Ok(Some(call)) if call.ended_at.is_some() => return,
                Ok(None) => return,
                _ => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::debug!(%call_id, "no conversation finished the answered call; finishing it from the channel");
                return;
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Ends a call (a no-op for one the conversation finished already) and announces it. The
    /// outcome and its reason follow the final status: the one given, or the one the store has
    /// already (a `Dial` `BUSY` stored before the channel went), so that `call_ended` says what
    /// the store says.
    async fn finish(&self, org_id: i64, call_id: &str, status: CallStatus, reason: &str) {
        let (status, reason) = match self.inner.publisher.store().call(org_id, call_id).await {
            Ok(Some(call)) if call.status.is_terminal() && call.ended_at.is_none() => {
                let reason = call.status_reason.unwrap_or_else(|| reason.to_owned());
                (call.status, reason)
            }
            _ => (status, reason.to_owned()),
        };
        let reason = reason.as_str();
        let finish = FinishCall {
            status,
            reason: Some(reason.to_owned()),
            outcome: outcome_for(status),
            outcome_reason: Some(reason.to_owned()),
            emotion: None,
            intent_score: None,
        };
        match self.inner.publisher.call_ended(org_id, call_id, &finish).await {
            // Calls that never reached a conversation (busy, no answer, failed) are counted
            // here; the conversation counts the ones it finished.
            Ok(events) if !events.is_empty() => {
                let outcome = finish.outcome.map_or("none", |o| o.as_str());
                metrics::counter!("asterai_calls_finished_total", "status" => status.as_str(), "outcome" => outcome)
                    .increment(1);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%call_id, "cannot finish the call ({status}, {reason}): {e}");
                return;
            }
        }
        tracing::info!(%call_id, status = status.as_str(), %reason, "call ended");
        match self.inner.publisher.store().call(org_id, call_id).await {
            Ok(Some(call)) => {
                let _ = self.inner.ended.send(Ended { call });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%call_id, "cannot read the ended call: {e}"),
        }
    }
}

/// Counts an answered call as followed until its deferred finish is done (even if the task
/// that finishes it panics).
struct Finishing<'a>(&'a Tracker, String);

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        self.0.state().finishing.remove(&self.1);
    }
}

impl Tracker {
    /// An answered call of ours entered the application: on to the dialplan, where the `ai`
    /// route picks it up.
    fn send_to_dialplan(&self, call_id: &str, channel_id: &str) {
        let client = self.inner.client.clone();
        let (context, extension) = (self.inner.config.context.clone(), self.inner.config.extension.clone());
        let (call_id, channel_id) = (call_id.to_owned(), channel_id.to_owned());
        tokio::spawn(async move {
            match client.continue_in_dialplan(&channel_id, &context, &extension, 1).await {
                Ok(()) => tracing::debug!(%call_id, %context, %extension, "answered call sent to the dialplan"),
                // The far end hung up in between: ChannelDestroyed tells the rest.
                Err(AriError::NotFound(_)) => {
                    tracing::debug!(%call_id, "answered call gone before it reached the dialplan")
                }
                Err(e) => tracing::error!(%call_id, %context, "cannot send the answered call to the dialplan: {e}"),
            }
        });
    }

    /// A channel in our application that is no call of ours: back to the dialplan it came
    /// from, rather than left in silence.
    fn return_stranger(&self, channel_id: &str, args: &[String]) {
        tracing::warn!(channel = %channel_id, ?args, "a channel that is no call of asterai entered the ARI application; returning it to the dialplan");
        let client = self.inner.client.clone();
        let channel_id = channel_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = client.continue_after_stasis(&channel_id).await {
                tracing::debug!(channel = %channel_id, "cannot return the channel to the dialplan: {e}");
            }
        });
    }

    /// Lists the channels and finishes the calls whose channel is gone; follows the live ones.
    pub async fn resync(&self) -> Result<Resync, AriError> {
        if self.asterisk_id().is_none() {
            match self.inner.client.asterisk_info().await {
                Ok(info) => {
                    if let Some(id) = info.entity_id() {
                        self.set_asterisk_id(id);
                    }
                    if let Some(version) = info.version() {
                        tracing::info!(version, "connected to Asterisk");
                    }
                }
                Err(e) => tracing::debug!("cannot read Asterisk's info: {e}"),
            }
        }
        let channels = self.inner.client.channels().await?;
        let ids: HashSet<&str> = channels.iter().map(|c| c.id.as_str()).collect();
        let names: HashSet<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        let asterisk_id = self.asterisk_id();
        let candidates = self
            .inner
            .publisher
            .store()
            .calls_to_reconcile(asterisk_id.as_deref(), self.inner.config.reconcile_unassigned)
            .await
            .map_err(|e| AriError::Invalid(format!("cannot read the live calls from the store: {e}")))?;
        let mut report = Resync { channels: channels.len(), ..Default::default() };
        let now = crate::store::now();
        // Calls followed but no longer in the store's live list were finished elsewhere (the
        // conversation); calls followed and live in the store are checked below.
        let candidate_ids: HashSet<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        let mut followed: Vec<String> = self.state().calls.keys().cloned().collect();
        followed.retain(|id| !candidate_ids.contains(id.as_str()) && !ids.contains(id.as_str()));
        for id in followed {
            if let Ok(Some(call)) = self.inner.publisher.store().call_any(&id).await {
                if call.ended_at.is_some() {
                    self.state().calls.remove(&id);
                } else {
                    self.gone(&call, &mut report).await;
                }
            }
        }
        for call in candidates {
            if call.direction == Direction::Inbound && call.started_at >= self.inner.started {
                // Its conversation runs in this process and will finish it.
                continue;
            }
            let alive = ids.contains(call.id.as_str())
                || (call.direction == Direction::Inbound && call.channel.as_deref().is_some_and(|n| names.contains(n)));
            if alive {
                report.live += 1;
                if call.direction == Direction::Outbound {
                    let mut state = self.state();
                    state.strangers.remove(&call.id);
                    state.calls.entry(call.id.clone()).or_insert_with(|| Tracked {
                        call_id: call.id.clone(),
                        org_id: call.org_id,
                        facts: ChannelFacts {
                            answered: call.answered_at.is_some() || call.status == CallStatus::InProgress,
                            ..Default::default()
                        },
                    });
                }
                continue;
            }
            let known = self.state().calls.contains_key(&call.id);
            let age = (now - call.started_at).to_std().unwrap_or_default();
            if !known && age < self.inner.config.orphan_grace {
                continue;
            }
            self.gone(&call, &mut report).await;
        }
        Ok(report)
    }

    async fn gone(&self, call: &Call, report: &mut Resync) {
        self.state().calls.remove(&call.id);
        let status = if call.answered_at.is_some() || call.status == CallStatus::InProgress {
            CallStatus::Completed
        } else {
            CallStatus::Failed
        };
        tracing::warn!(call_id = %call.id, status = status.as_str(), "the call's channel is gone; finishing it");
        self.finish(call.org_id, &call.id, status, GONE_AFTER_RECONNECT).await;
        report.finished.push(call.id.clone());
    }
}
