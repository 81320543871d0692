//! The hub: tails the store's event log and hands each event, once, in id order, to every feed
//! client of its organization on this daemon.
//!
//! Events reach the hub only through the store. After a local commit the publisher wakes it; on
//! PostgreSQL, `LISTEN asterai_events` wakes it for events other daemons wrote; and it also polls
//! at `feed.poll_interval`, so a lost notification delays an event but never loses it. Each wake
//! reads `id > last published` in id order, which is commit order, so nothing is skipped.
//!
//! Events are handed out in batches: after a wake the hub waits until `feed.batch_window` has
//! passed since its last hand-out, then gives each client everything new in one piece. A client's
//! writer sends a batch with one flush, which keeps the cost per event low when hundreds of
//! supervisors watch (a 10 ms window adds at most 10 ms).
//!
//! Each client has a bounded queue ([`Subscription`]), counted in events. The hub never waits on
//! a client: when a queue would overflow the hub marks that client overflowed and drops it, and
//! the client's connection closes with the last id it delivered (see [`super::subscriber`]).
//!
//! A queue overflows when the *client* is slow, not when this daemon is: events wait beyond
//! `feed.client_queue` only count against a client whose socket stopped draining (its writer
//! is blocked on a full send buffer). A client whose writer simply has not run yet (a busy
//! machine, or one large hand-out after a pause) is never dropped for it, up to a hard cap of
//! [`HARD_CAP`] times the queue that bounds memory whatever happens.
//!
//! The hub tails the whole log by its internal row id; clients see each organization's own
//! sequence (see [`crate::store::Event`]). A row of a type this build does not know (a newer
//! daemon wrote it during a rolling upgrade), or one whose columns do not decode (malformed
//! JSON written by hand), is skipped with a warning and never stalls the feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::filter::Filter;
use crate::store::{EVENTS_CHANNEL, Event, SkipReason, Skipped, Store};

/// An event with its JSON, serialized once for all clients (each clone shares the bytes).
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    /// The text of the WebSocket message carrying the event.
    pub text: Utf8Bytes,
}

/// Events handed out together, in id order.
pub type Batch = Arc<[Arc<Published>]>;

/// Why a client's connection must end. One per connection, cheap to check on every event.
#[derive(Default)]
pub struct Stop {
    reason: AtomicU8,
    notify: Notify,
}

/// The reasons a [`Stop`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// The client's queue overflowed.
    SlowClient = 1,
    /// The daemon is shutting down.
    Shutdown = 2,
    /// The client left or sent something invalid.
    ClientGone = 3,
}

impl Stop {
    /// Records the first reason and wakes the connection.
    pub fn stop(&self, reason: StopReason) {
        if self.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.notify.notify_one();
        }
    }

    /// The reason, once there is one.
    pub fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(StopReason::SlowClient),
            2 => Some(StopReason::Shutdown),
            3 => Some(StopReason::ClientGone),
            _ => None,
        }
    }

    /// Resolves once there is a reason.
    pub async fn stopped(&self) -> StopReason {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

/// A client whose socket is not draining is dropped once this many times its queue waits,
/// however it got there.
pub const HARD_CAP: usize = 8;

/// A client's place in the hub.
struct Slot {
    id: u64,
    tx: mpsc::UnboundedSender<Batch>,
    filter: Arc<Mutex<Filter>>,
    stop: Arc<Stop>,
    /// Events handed to the client and not yet taken by its writer.
    pending: Arc<AtomicUsize>,
    /// Set while the client's writer waits for its socket to drain.
    blocked: Arc<AtomicBool>,
    queue: usize,
}

impl Slot {
    /// Whether `waiting` events (handed out, not taken) make this client slow.
    fn overflows(&self, waiting: usize) -> bool {
        waiting > self.queue && (self.blocked.load(Ordering::Acquire) || waiting > self.queue.saturating_mul(HARD_CAP))
    }
}

/// A client's bounded queue of live events. Dropping it unsubscribes.
pub struct Subscription {
    pub rx: mpsc::UnboundedReceiver<Batch>,
    /// Decrease by a batch's length once it is taken from `rx`.
    pub pending: Arc<AtomicUsize>,
    /// Set when the queue overflowed (the hub dropped this client) or the daemon stops.
    pub stop: Arc<Stop>,
    /// The filter the hub applies; the client updates it.
    pub filter: Arc<Mutex<Filter>>,
    /// The writer sets it while its socket does not take what it writes.
    pub blocked: Arc<AtomicBool>,
    hub: Arc<Hub>,
    org_id: i64,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.org_id, self.id);
    }
}

/// See the module docs.
pub struct Hub {
    clients: Mutex<HashMap<i64, Vec<Slot>>>,
    next_id: AtomicU64,
    wake: Notify,
    /// The log row last handed out (internal).
    last: AtomicI64,
    /// Each organization's last event id handed out (its own sequence).
    org_last: Mutex<HashMap<i64, i64>>,
    /// Set by the first [`Hub::run`].
    started: AtomicBool,
}

const BATCH: i64 = 500;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            wake: Notify::new(),
            last: AtomicI64::new(0),
            org_last: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
        })
    }

    /// Asks the hub to read new events now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Subscribes a client of `org_id` with a queue of `queue` events; it receives every event
    /// published from now on that its filter matches.
    pub fn subscribe(self: &Arc<Self>, org_id: i64, filter: Filter, queue: usize) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let filter = Arc::new(Mutex::new(filter));
        let stop = Arc::new(Stop::default());
        let pending = Arc::new(AtomicUsize::new(0));
        let blocked = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            tx,
            filter: filter.clone(),
            stop: stop.clone(),
            pending: pending.clone(),
            blocked: blocked.clone(),
            queue: queue.max(1),
        };
        lock(&self.clients).entry(org_id).or_default().push(slot);
        Subscription { rx, pending, stop, filter, blocked, hub: self.clone(), org_id, id }
    }

    fn remove(&self, org_id: i64, id: u64) {
        let mut clients = lock(&self.clients);
        if let Some(slots) = clients.get_mut(&org_id) {
            slots.retain(|slot| slot.id != id);
            if slots.is_empty() {
                clients.remove(&org_id);
            }
        }
    }

    /// Tells every client the daemon is stopping; each closes with code 1001.
    pub fn shutdown(&self) {
        for slot in lock(&self.clients).values().flatten() {
            slot.stop.stop(StopReason::Shutdown);
        }
    }

    /// How many clients are subscribed.
    pub fn subscribers(&self) -> usize {
        lock(&self.clients).values().map(Vec::len).sum()
    }

    /// The log row last handed out (the log's internal order, not an organization's id).
    pub fn last_published(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }

    /// The last event id of one organization this hub handed out, if any since it started.
    pub fn last_event_id(&self, org_id: i64) -> Option<i64> {
        lock(&self.org_last).get(&org_id).copied()
    }

    /// Hands one organization's batch to its clients; drops the slow ones (see the module docs).
    fn fan_out(&self, org_id: i64, batch: &Batch) {
        if let Some(last) = batch.last() {
            lock(&self.org_last).insert(org_id, last.event.id);
        }
        let mut clients = lock(&self.clients);
        let Some(slots) = clients.get_mut(&org_id) else { return };
        slots.retain(|slot| {
            let filter = lock(&slot.filter);
            let mine: Batch = if *filter == Filter::default() {
                batch.clone()
            } else {
                batch.iter().filter(|p| filter.matches(&p.event)).cloned().collect()
            };
            drop(filter);
            if mine.is_empty() {
                return true;
            }
            if slot.overflows(slot.pending.fetch_add(mine.len(), Ordering::AcqRel) + mine.len()) {
                metrics::counter!("asterai_feed_slow_client_closes_total").increment(1);
                slot.stop.stop(StopReason::SlowClient);
                return false;
            }
            slot.tx.send(mine).is_ok()
        });
    }

    /// Reads where the event log ends now, so that [`Hub::run`] hands out every event stored
    /// after this call, even one published before its task first runs. Without it, `run` reads
    /// the position itself when it starts, and an event published in between reaches only the
    /// clients that replay it.
    pub async fn prime(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let last = store.last_log_id().await?;
        self.last.store(last, Ordering::Release);
        self.started.store(true, Ordering::Release);
        Ok(())
    }

    /// Tails the log until `stop` is cancelled, handing out batches at most every `window`.
    /// Starts after the events already stored (or where [`Hub::prime`] read the log's end).
    ///
    /// Run again after a failure (see [`crate::supervise`]), it resumes after the last event it
    /// handed out, so nothing stored in between is skipped.
    pub async fn run(self: Arc<Self>, store: Store, poll: Duration, window: Duration, stop: CancellationToken) {
        let resumed = self.started.swap(true, Ordering::AcqRel);
        let mut last = if resumed {
            self.last.load(Ordering::Acquire)
        } else {
            loop {
                match store.last_log_id().await {
                    Ok(id) => break id,
                    Err(e) => {
                        tracing::warn!("feed hub: cannot read the event log yet: {e}; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        };
        self.last.store(last, Ordering::Release);
        if let Store::Postgres(pool) = &store {
            tokio::spawn(listen(pool.clone(), self.clone(), stop.clone()));
        }
        let mut failing = false;
        let mut handed_out = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            tokio::time::sleep_until(handed_out + window).await;
            handed_out = tokio::time::Instant::now();
            loop {
                match store.log_after(last, BATCH).await {
                    Ok(page) => {
                        if failing {
                            tracing::info!("feed hub: the event log is readable again");
                            failing = false;
                        }
                        for skipped in &page.skipped {
                            let Skipped { log_id: row, id, kind, reason } = skipped;
                            match reason {
                                SkipReason::UnknownType => tracing::warn!(
                                    row,
                                    event_id = id,
                                    kind = %kind,
                                    "feed hub: an event of a type this asterai does not know (written by a newer version?) is skipped"
                                ),
                                SkipReason::Malformed(cause) => tracing::warn!(
                                    row,
                                    event_id = id,
                                    kind = %kind,
                                    "feed hub: event {id} ({kind}) cannot be read and is skipped: {cause}"
                                ),
                            }
                        }
                        let mut by_org: HashMap<i64, Vec<Arc<Published>>> = HashMap::new();
                        for event in page.events {
                            match serde_json::to_string(&event) {
                                Ok(json) => {
                                    metrics::counter!("asterai_feed_events_broadcast_total").increment(1);
                                    let text = Utf8Bytes::from(json);
                                    by_org.entry(event.org_id).or_default().push(Arc::new(Published { event, text }));
                                }
                                Err(e) => tracing::error!(event_id = event.id, "feed hub: cannot serialize event: {e}"),
                            }
                        }
                        for (org_id, events) in by_org {
                            self.fan_out(org_id, &Batch::from(events));
                        }
                        last = page.next;
                        self.last.store(last, Ordering::Release);
                        if !page.full {
                            break;
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(
                                "feed hub: reading the event log failed: {e}; live delivery waits until it is readable"
                            );
                            failing = true;
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Wakes the hub on every notification from another daemon (or this one), reconnecting after
/// errors and catching up after each reconnect.
async fn listen(pool: sqlx::PgPool, hub: Arc<Hub>, stop: CancellationToken) {
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(EVENTS_CHANNEL).await?;
            hub.wake();
            loop {
                listener.recv().await?;
                hub.wake();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = connected => {
                if let Err(e) = result {
                    tracing::warn!("feed hub: LISTEN {EVENTS_CHANNEL} failed: {e}; polling until it reconnects");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Event, EventKind};

    fn batch(org_id: i64, ids: std::ops::RangeInclusive<i64>) -> Batch {
        ids.map(|id| {
            let event = Event {
                id,
                kind: EventKind::CallStarted,
                org: "acme".into(),
                call_id: None,
                campaign: None,
                at: chrono::Utc::now(),
                data: serde_json::Value::Null,
                org_id,
                log_id: id,
            };
            Arc::new(Published { event, text: Utf8Bytes::default() })
        })
        .collect()
    }

    /// A queue overflows because the client does not read, never because its writer has not run
    /// yet: a hand-out larger than the queue reaches a client whose socket drains.
    #[test]
    fn only_a_client_whose_socket_does_not_drain_is_slow() {
        let hub = Hub::new();
        let healthy = hub.subscribe(1, Filter::default(), 4);
        let stuck = hub.subscribe(1, Filter::default(), 4);
        stuck.blocked.store(true, Ordering::Release);
        hub.fan_out(1, &batch(1, 1..=10));
        assert_eq!(healthy.stop.reason(), None, "ten events at once, nothing taken yet: not slow");
        assert_eq!(stuck.stop.reason(), Some(StopReason::SlowClient), "over the queue while its socket is full");
        assert_eq!(hub.subscribers(), 1);
        // Memory stays bounded whatever happens: past 8 times the queue even a client whose
        // socket drains is dropped.
        hub.fan_out(1, &batch(1, 11..=40));
        assert_eq!(healthy.stop.reason(), Some(StopReason::SlowClient));
        assert_eq!(hub.last_event_id(1), Some(40));
    }
}
