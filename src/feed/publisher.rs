//! The one path by which components record what happens to a call: each method writes the change
//! and its event in one transaction, then wakes the hub. Nothing is published that is not stored.
//!
//! Every change names the organization whose call it is; the store refuses (as "not found") a
//! change to another organization's call, so an id that leaks or collides never crosses over.
//!
//! With redaction on for the call's organization (`[redaction]`, see [`Redaction`]), what was
//! said (turns' text and tool calls, the outcome's reason, the after-call analysis) is masked
//! here, before it is written: the raw text reaches neither the database nor the feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::hub::Hub;
use crate::store::{Call, CallStatus, Event, FinishCall, NewCall, NewTurn, Result, Store};
use crate::types::redact::{Redaction, Redactor};

/// Records call events. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    hub: Arc<Hub>,
    /// This daemon's id, stamped on the calls it starts (see [`crate::fleet`]).
    daemon: Option<Arc<str>>,
    /// Which organizations' calls are masked (none: no organization's).
    redaction: Option<Arc<Redaction>>,
    /// Whether each organization's calls are masked, once read.
    masked_orgs: Arc<Mutex<HashMap<i64, bool>>>,
}

impl Publisher {
    pub fn new(store: Store, hub: Arc<Hub>) -> Self {
        Publisher { store, hub, daemon: None, redaction: None, masked_orgs: Arc::default() }
    }

    /// Masks what is said in the calls of the organizations `redaction` names.
    pub fn with_redaction(mut self, redaction: Option<Redaction>) -> Self {
        self.redaction = redaction.map(Arc::new);
        self
    }

    /// The redactor of one organization's calls, when they are masked. An organization that
    /// cannot be read (the database is away) is masked: better a number masked than stored.
    pub async fn redactor(&self, org_id: i64) -> Option<Arc<Redactor>> {
        let redaction = self.redaction.as_ref()?;
        let known = self.masked_orgs.lock().unwrap_or_else(|e| e.into_inner()).get(&org_id).copied();
        if let Some(masked) = known {
            return masked.then(|| redaction.unknown_org());
        }
        match self.store.org_by_id(org_id).await {
            Ok(Some(org)) => {
                let redactor = redaction.for_org(&org.slug);
                self.masked_orgs.lock().unwrap_or_else(|e| e.into_inner()).insert(org_id, redactor.is_some());
                redactor
            }
            Ok(None) | Err(_) => Some(redaction.unknown_org()),
        }
    }

    /// Calls started through this publisher are held by the daemon `id`.
    pub fn with_daemon(mut self, id: &str) -> Self {
        self.daemon = Some(id.into());
        self
    }

    /// The daemon whose calls this publisher starts, if any.
    pub fn daemon(&self) -> Option<&str> {
        self.daemon.as_deref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn published(&self, events: &[Event]) {
        for event in events {
            metrics::counter!("asterai_events_published_total", "type" => event.kind.as_str()).increment(1);
        }
        if !events.is_empty() {
            self.hub.wake();
        }
    }

    /// Creates a call, held by this daemon: `call_started`.
    pub async fn call_started(&self, new: &NewCall) -> Result<Call> {
        let (call, event) = self.store.create_owned_call(new, self.daemon()).await?;
        self.published(std::slice::from_ref(&event));
        Ok(call)
    }

    /// Moves one organization's call to a new status: `call_status_update`, unless the move is
    /// not allowed.
    pub async fn call_status(
        &self,
        org_id: i64,
        call_id: &str,
        status: CallStatus,
        reason: Option<&str>,
    ) -> Result<Option<Event>> {
        let event = self.store.set_call_status(org_id, call_id, status, reason).await?;
        self.published(event.as_slice());
        Ok(event)
    }

    /// Marks a live call as waiting on a provider, or no longer: `call_status_update` with
    /// `waiting` (see [`Store::set_call_waiting`]).
    pub async fn call_waiting(&self, org_id: i64, call_id: &str, waiting: Option<&str>) -> Result<Option<Event>> {
        let event = self.store.set_call_waiting(org_id, call_id, waiting).await?;
        self.published(event.as_slice());
        Ok(event)
    }

    /// Records a turn of one organization's call: `conversation_turn`.
    pub async fn conversation_turn(&self, org_id: i64, turn: &NewTurn) -> Result<Event> {
        let masked;
        let turn = match self.redactor(org_id).await {
            Some(redactor) => {
                masked = redact_turn(&redactor, turn.clone());
                &masked
            }
            None => turn,
        };
        let event = self.store.add_turn(org_id, turn).await?;
        self.published(std::slice::from_ref(&event));
        Ok(event)
    }

    /// Finishes one organization's call: `call_status_update` if the status changes, then
    /// `call_ended`.
    pub async fn call_ended(&self, org_id: i64, call_id: &str, finish: &FinishCall) -> Result<Vec<Event>> {
        let masked;
        let finish = match self.redactor(org_id).await {
            Some(redactor) => {
                masked = redact_finish(&redactor, finish.clone());
                &masked
            }
            None => finish,
        };
        let events = self.store.finish_call(org_id, call_id, finish).await?;
        self.published(&events);
        Ok(events)
    }

    /// Stores a call's after-call analysis and publishes `call_analyzed`.
    pub async fn call_analyzed(&self, org_id: i64, call_id: &str, analysis: &serde_json::Value) -> Result<Event> {
        let mut analysis = analysis.clone();
        if let Some(redactor) = self.redactor(org_id).await {
            redactor.redact_json(&mut analysis);
        }
        let event = self.store.set_call_analysis(org_id, call_id, &analysis).await?;
        self.published(std::slice::from_ref(&event));
        Ok(event)
    }

    /// Finishes a call whose daemon stopped beating, unless it beat again meanwhile (see
    /// [`Store::finish_orphaned_call`]).
    pub async fn orphan_ended(
        &self,
        call: &Call,
        finish: &FinishCall,
        orphan: &crate::store::Orphan<'_>,
    ) -> Result<Vec<Event>> {
        let masked;
        let finish = match self.redactor(call.org_id).await {
            Some(redactor) => {
                masked = redact_finish(&redactor, finish.clone());
                &masked
            }
            None => finish,
        };
        let events = self.store.finish_orphaned_call(call.org_id, &call.id, finish, orphan).await?;
        self.published(&events);
        Ok(events)
    }
}

/// A turn with what was said masked: both sides' text and the tools' arguments and results.
pub fn redact_turn(redactor: &Redactor, mut turn: NewTurn) -> NewTurn {
    redactor.redact_string(&mut turn.caller);
    redactor.redact_string(&mut turn.agent);
    for tool in &mut turn.tools {
        redactor.redact_json(&mut tool.arguments);
        redactor.redact_json(&mut tool.result);
    }
    turn
}

/// A call's end with its reasons masked (an `end_call` tool's reason is the model's words).
pub fn redact_finish(redactor: &Redactor, mut finish: FinishCall) -> FinishCall {
    for text in [&mut finish.reason, &mut finish.outcome_reason].into_iter().flatten() {
        redactor.redact_string(text);
    }
    finish
}
