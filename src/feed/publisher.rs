//! The one path by which components record what happens to a call: each method writes the change
//! and its event in one transaction, then wakes the hub. Nothing is published that is not stored.
//!
//! Every change names the organization whose call it is; the store refuses (as "not found") a
//! change to another organization's call, so an id that leaks or collides never crosses over.

use std::sync::Arc;

use super::hub::Hub;
use crate::store::{Call, CallStatus, Event, FinishCall, NewCall, NewTurn, Result, Store};

/// Records call events. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    hub: Arc<Hub>,
    /// This daemon's id, stamped on the calls it starts (see [`crate::fleet`]).
    daemon: Option<Arc<str>>,
}

impl Publisher {
    pub fn new(store: Store, hub: Arc<Hub>) -> Self {
        Publisher { store, hub, daemon: None }
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
        let event = self.store.add_turn(org_id, turn).await?;
        self.published(std::slice::from_ref(&event));
        Ok(event)
    }

    /// Finishes one organization's call: `call_status_update` if the status changes, then
    /// `call_ended`.
    pub async fn call_ended(&self, org_id: i64, call_id: &str, finish: &FinishCall) -> Result<Vec<Event>> {
        let events = self.store.finish_call(org_id, call_id, finish).await?;
        self.published(&events);
        Ok(events)
    }

    /// Stores a call's after-call analysis and publishes `call_analyzed`.
    pub async fn call_analyzed(&self, org_id: i64, call_id: &str, analysis: &serde_json::Value) -> Result<Event> {
        let event = self.store.set_call_analysis(org_id, call_id, analysis).await?;
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
        let events = self.store.finish_orphaned_call(call.org_id, &call.id, finish, orphan).await?;
        self.published(&events);
        Ok(events)
    }
}
