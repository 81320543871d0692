//! The one path by which components record what happens to a call: each method writes the change
//! and its event in one transaction, then wakes the hub. Nothing is published that is not stored.

use std::sync::Arc;

use super::hub::Hub;
use crate::store::{Call, CallStatus, Event, FinishCall, NewCall, NewTurn, Result, Store};

/// Records call events. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    hub: Arc<Hub>,
}

impl Publisher {
    pub fn new(store: Store, hub: Arc<Hub>) -> Self {
        Publisher { store, hub }
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

    /// Creates a call: `call_started`.
    pub async fn call_started(&self, new: &NewCall) -> Result<Call> {
        let (call, event) = self.store.create_call(new).await?;
        self.published(std::slice::from_ref(&event));
        Ok(call)
    }

    /// Moves a call to a new status: `call_status_update`, unless the move is not allowed.
    pub async fn call_status(&self, call_id: &str, status: CallStatus, reason: Option<&str>) -> Result<Option<Event>> {
        let event = self.store.set_call_status(call_id, status, reason).await?;
        self.published(event.as_slice());
        Ok(event)
    }

    /// Marks a live call as waiting on a provider, or no longer: `call_status_update` with
    /// `waiting` (see [`Store::set_call_waiting`]).
    pub async fn call_waiting(&self, call_id: &str, waiting: Option<&str>) -> Result<Option<Event>> {
        let event = self.store.set_call_waiting(call_id, waiting).await?;
        self.published(event.as_slice());
        Ok(event)
    }

    /// Records a turn: `conversation_turn`.
    pub async fn conversation_turn(&self, turn: &NewTurn) -> Result<Event> {
        let event = self.store.add_turn(turn).await?;
        self.published(std::slice::from_ref(&event));
        Ok(event)
    }

    /// Finishes a call: `call_status_update` if the status changes, then `call_ended`.
    pub async fn call_ended(&self, call_id: &str, finish: &FinishCall) -> Result<Vec<Event>> {
        let events = self.store.finish_call(call_id, finish).await?;
        self.published(&events);
        Ok(events)
    }
}
