//! Writing a call's record without making the caller wait, and without losing any of it.
//!
//! Each call has a writer task of its own. The conversation hands every change (call started,
//! status, turn, do-not-call entry, call finished) to a [`Recorder`], which puts it in the
//! writer's bounded queue and returns: the conversation never waits on the database, not even
//! on the pool's acquire timeout. The writer applies the changes in order through the
//! [`Publisher`]; while the database is unreachable it keeps them, retries with backoff and
//! goes on taking new ones.
//!
//! * **Isolation.** Every change is written for the call's organization, which the store checks
//!   in the same transaction. A call id that another organization holds (a dialplan passed it,
//!   or it appeared while the database was away) is never adopted: the call is recorded under a
//!   fresh id, with a warning that names both.
//! * **Every call ends.** When the conversation goes away without finishing its call (the
//!   daemon dropped it at the end of the shutdown grace, or it failed), the writer finishes it
//!   itself: status `failed`, reason `interrupted: …` saying why.
//! * **Nothing lost.** When the call is over the writer retries what is left for up to
//!   [`CLOSE_DEADLINE`], then writes it to `<data_dir>/spool/<call id>-<unique>.json`.
//!   [`replay`] applies spooled calls once the database answers again (`asterai serve` runs it
//!   every 30 s). [`Records::close`] waits for every writer, so a shutdown keeps all of it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::feed::Publisher;
use crate::store::{CallStatus, FinishCall, NewCall, NewTurn, Outcome, StoreError};

/// One change to a call's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    Start(NewCall),
    Status {
        status: CallStatus,
        reason: Option<String>,
    },
    /// The conversation took over a call that exists (the dialer's): its channel.
    Channel(String),
    /// The provider the call waits on, or `None` once it answered.
    Waiting(Option<String>),
    Turn(NewTurn),
    /// The caller asked not to be called again. Written to the call's organization's list.
    DoNotCall {
        org_id: i64,
        number: String,
        reason: String,
    },
    /// The contact asked to be called back at `at` (`schedule_callback`).
    Callback {
        contact_id: i64,
        at: chrono::DateTime<chrono::Utc>,
    },
    Finish(FinishCall),
    /// The after-call analysis, once the call ended (see [`super::after_call`]).
    Analysis(serde_json::Value),
    /// The agent version the call runs (none of this change: the built-in agent).
    Agent {
        name: String,
        version: i32,
    },
    /// The agent's first audio reached the call (for abandonment; only the first counts).
    FirstAudio(chrono::DateTime<chrono::Utc>),
    /// The whole-call recording started, or was refused (see [`super::call_recording`]).
    RecordingStarted(super::call_recording::RecordingStart),
    /// The whole-call recording's file was collected, or could not be.
    RecordingEnded(super::call_recording::RecordingResult),
}

/// Changes a call may queue before the conversation waits for its writer to take one. The
/// writer takes them as they come, database or not, so this only bounds a writer that has not
/// run yet; "waiting on a provider" notes are dropped rather than waited for.
pub const QUEUE: usize = 256;

/// How long a writer keeps trying once its call is over, before it spools what is left.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The reason an interrupted call is finished with.
pub const INTERRUPTED_BY_SHUTDOWN: &str = "interrupted: asterai shut down before the call ended";
/// The same, when the conversation stopped for another reason (it failed).
pub const INTERRUPTED: &str = "interrupted: the conversation stopped before the call ended";

/// The record-keeping every call shares: where to write, where to spool, and the writers in
/// flight. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    inner: Arc<RecordsInner>,
}

struct RecordsInner {
    publisher: Publisher,
    spool_dir: PathBuf,
    writers: TaskTracker,
    stopping: CancellationToken,
}

impl Records {
    pub fn new(publisher: Publisher, spool_dir: PathBuf) -> Records {
        Records {
            inner: Arc::new(RecordsInner {
                publisher,
                spool_dir,
                writers: TaskTracker::new(),
                stopping: CancellationToken::new(),
            }),
        }
    }

    /// Starts the writer of one call of `org_id` and returns its handle.
    pub fn recorder(&self, org_id: i64, call_id: String) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            publisher: self.inner.publisher.clone(),
            org_id,
            call_id: call_id.clone(),
            spool_dir: self.inner.spool_dir.clone(),
        };
        self.inner.writers.spawn(writer.run(rx, self.inner.stopping.clone()));
        Recorder { tx: Some(tx), call_id }
    }

    /// The daemon is shutting down: calls whose conversation is dropped from now on are
    /// finished as interrupted by the shutdown.
    pub fn shutting_down(&self) {
        self.inner.stopping.cancel();
    }

    /// Writers still working (calls in progress, or records being written after them).
    pub fn writing(&self) -> usize {
        self.inner.writers.len()
    }

    /// Waits for every writer to finish (its record written or spooled). Writers started
    /// afterwards are still waited for.
    pub async fn close(&self) {
        self.inner.writers.close();
        self.inner.writers.wait().await;
        self.inner.writers.reopen();
    }
}

/// A call's handle on its writer. Dropping it (or [`Recorder::close`]) tells the writer the
/// conversation is over.
pub struct Recorder {
    tx: Option<mpsc::Sender<Change>>,
    call_id: String,
}

impl Recorder {
    /// Queues a change for the writer. Returns at once unless [`QUEUE`] changes wait already.
    pub async fn push(&mut self, change: Change) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(change) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(change @ Change::Waiting(_))) => {
                tracing::debug!(call_id = %self.call_id, ?change, "the call's writer is behind; a waiting note is dropped");
            }
            Err(mpsc::error::TrySendError::Full(change)) => {
                if tx.send(change).await.is_err() {
                    tracing::error!(call_id = %self.call_id, "the call's writer is gone; a change is lost");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(call_id = %self.call_id, "the call's writer is gone; a change is lost");
            }
        }
    }

    /// The conversation is over: the writer finishes on its own (see [`Records::close`]).
    pub fn close(mut self) {
        self.tx.take();
    }
}

/// Applies one call's changes, in order.
struct Writer {
    publisher: Publisher,
    org_id: i64,
    /// The id the record is written under; a fresh one if another organization holds the
    /// conversation's.
    call_id: String,
    spool_dir: PathBuf,
}

fn transient(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Change>, stopping: CancellationToken) {
        let mut queue: VecDeque<Change> = VecDeque::new();
        let mut open = true;
        let mut finished = false;
        let mut retry = RETRY_MIN;
        let mut failing = false;
        // While the call goes on.
        while open || !queue.is_empty() {
            while let Ok(change) = rx.try_recv() {
                queue.push_back(change);
            }
            let Some(head) = queue.front().cloned() else {
                match rx.recv().await {
                    Some(change) => queue.push_back(change),
                    None => open = false,
                }
                continue;
            };
            // Apply the head while still taking what the conversation sends.
            let result = {
                let apply = self.apply(&head);
                tokio::pin!(apply);
                loop {
                    tokio::select! {
                        biased;
                        result = &mut apply => break result,
                        change = rx.recv(), if open => match change {
                            Some(change) => queue.push_back(change),
                            None => open = false,
                        },
                    }
                }
            };
            match result {
                Ok(()) => {
                    finished |= matches!(head, Change::Finish(_));
                    queue.pop_front();
                    retry = RETRY_MIN;
                    if failing {
                        tracing::info!(call_id = %self.call_id, "the database answers again; the call's record is being written");
                        failing = false;
                    }
                }
                Err(e) if transient(&e) => {
                    if !open {
                        break;
                    }
                    if !failing {
                        tracing::warn!(call_id = %self.call_id, pending = queue.len(), "the database is unavailable; the call goes on and its record waits: {e}");
                        failing = true;
                    }
                    let wait = tokio::time::sleep(retry);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            change = rx.recv(), if open => match change {
                                Some(change) => queue.push_back(change),
                                None => {
                                    open = false;
                                    break;
                                }
                            },
                        }
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    finished |= matches!(head, Change::Finish(_));
                    tracing::error!(call_id = %self.call_id, "a change to the call's record was refused and dropped: {e}");
                    queue.pop_front();
                }
            }
        }
        // The conversation is over. A call it did not finish is finished here.
        if !finished && !queue.iter().any(|c| matches!(c, Change::Finish(_))) {
            let reason = if stopping.is_cancelled() { INTERRUPTED_BY_SHUTDOWN } else { INTERRUPTED };
            tracing::warn!(call_id = %self.call_id, "{reason}; finishing the call's record");
            queue.push_back(Change::Finish(FinishCall {
                status: CallStatus::Failed,
                reason: Some(reason.into()),
                outcome: Some(Outcome::Failed),
                outcome_reason: Some(reason.into()),
                emotion: None,
                intent_score: None,
            }));
        }
        let deadline = Instant::now() + CLOSE_DEADLINE;
        let mut waits =
            [Duration::ZERO, Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)].into_iter();
        while !queue.is_empty() {
            let Some(wait) = waits.next() else { break };
            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            match tokio::time::timeout_at(deadline, self.flush(&mut queue)).await {
                Ok(()) => {}
                Err(_) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if queue.is_empty() {
            return;
        }
        // What was said is masked before it reaches the disk, as before the database.
        let changes = masked(&self.publisher, self.org_id, queue.into()).await;
        match write_spool(&self.spool_dir, None, &self.call_id, self.org_id, &changes).await {
            Ok(path) => tracing::warn!(call_id = %self.call_id, changes = changes.len(), spool = %path.display(),
                "the database is still unavailable; the call's record is spooled and will be written when it answers"),
            Err(e) => {
                tracing::error!(call_id = %self.call_id, "cannot spool the call's record: {e}; {} changes are lost", changes.len())
            }
        }
    }

    /// Applies queued changes in order until one fails for lack of a database.
    async fn flush(&mut self, queue: &mut VecDeque<Change>) {
        while let Some(change) = queue.front().cloned() {
            match self.apply(&change).await {
                Ok(()) => {
                    queue.pop_front();
                }
                Err(e) if transient(&e) => return,
                Err(e) => {
                    tracing::error!(call_id = %self.call_id, "a change to the call's record was refused and dropped: {e}");
                    queue.pop_front();
                }
            }
        }
    }

    async fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        let (publisher, org) = (&self.publisher, self.org_id);
        match change {
            Change::Start(new) => self.start(new).await,
            Change::Status { status, reason } => {
                publisher.call_status(org, &self.call_id, *status, reason.as_deref()).await.map(|_| ())
            }
            Change::Channel(channel) => {
                publisher.store().adopt_call(org, &self.call_id, channel, publisher.daemon()).await
            }
            Change::Waiting(provider) => {
                publisher.call_waiting(org, &self.call_id, provider.as_deref()).await.map(|_| ())
            }
            Change::Turn(turn) => {
                let turn = NewTurn { call_id: self.call_id.clone(), ..turn.clone() };
                match publisher.conversation_turn(org, &turn).await {
                    // Applied before (a replay after a partial write).
                    Err(StoreError::Conflict(_)) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
            // Always the call's own organization's list, whatever the change says.
            Change::DoNotCall { number, reason, .. } => {
                publisher.store().add_dnc(org, number, Some(reason), "caller").await.map(|_| ())
            }
            Change::Callback { contact_id, at } => {
                if !publisher.store().schedule_callback(org, *contact_id, *at).await? {
                    tracing::warn!(call_id = %self.call_id, contact = contact_id, "the callback was not booked: the contact is gone or on the do-not-call list");
                }
                Ok(())
            }
            Change::Finish(finish) => publisher.call_ended(org, &self.call_id, finish).await.map(|_| ()),
            Change::Analysis(analysis) => publisher.call_analyzed(org, &self.call_id, analysis).await.map(|_| ()),
            Change::Agent { name, version } => {
                publisher.store().set_call_agent(org, &self.call_id, name, *version).await
            }
            Change::FirstAudio(at) => publisher.store().record_first_audio(org, &self.call_id, *at).await.map(drop),
            Change::RecordingStarted(start) => {
                let new = crate::store::NewRecording {
                    org_id: org,
                    call_id: &self.call_id,
                    via: start.via,
                    name: &start.name,
                    path: &start.path,
                    format: &start.format,
                    region: start.region.as_deref(),
                    consent_required: start.consent_required,
                    consent_announced: start.consent_announced,
                    status: start.status,
                    reason: start.reason.as_deref(),
                };
                match publisher.store().start_recording(&new).await {
                    // Applied before (a replay after a partial write).
                    Err(StoreError::Conflict(_)) => Ok(()),
                    other => other.map(drop),
                }
            }
            Change::RecordingEnded(end) => {
                let result = crate::store::RecordingEnd {
                    status: end.status,
                    reason: end.reason.as_deref(),
                    size_bytes: end.size_bytes,
                    duration_ms: end.duration_ms,
                };
                publisher.store().finish_recording(org, &end.name, &result).await.map(drop)
            }
        }
    }

    /// Creates the call; or adopts it when this organization has it already (the dialer's call,
    /// or a replay after a partial write); or, when another organization holds the id, records
    /// the call under a fresh id.
    async fn start(&mut self, new: &NewCall) -> Result<(), StoreError> {
        let publisher = &self.publisher;
        let mut new = NewCall { id: Some(self.call_id.clone()), org_id: self.org_id, ..new.clone() };
        loop {
            match publisher.call_started(&new).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => {
                    if publisher.store().call(self.org_id, &self.call_id).await?.is_some() {
                        let channel = new.channel.clone().unwrap_or_default();
                        return publisher
                            .store()
                            .adopt_call(self.org_id, &self.call_id, &channel, publisher.daemon())
                            .await;
                    }
                    let fresh = crate::dialer::new_call_id();
                    tracing::warn!(call_id = %self.call_id, new_call_id = %fresh,
                        "the call id belongs to another organization; this call is recorded under a new id");
                    self.call_id = fresh;
                    new.id = Some(self.call_id.clone());
                }
                Err(StoreError::Invalid(reason)) if new.campaign_id.is_some() || new.contact_id.is_some() => {
                    tracing::warn!(call_id = %self.call_id, campaign = ?new.campaign_id, contact = ?new.contact_id,
                        "{reason}; the call is recorded without its campaign and contact");
                    new.campaign_id = None;
                    new.contact_id = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Changes with what was said masked, when the organization's calls are (see
/// [`Publisher::redactor`]).
async fn masked(publisher: &Publisher, org_id: i64, changes: Vec<Change>) -> Vec<Change> {
    let Some(redactor) = publisher.redactor(org_id).await else { return changes };
    changes
        .into_iter()
        .map(|change| match change {
            Change::Turn(turn) => Change::Turn(crate::feed::publisher::redact_turn(&redactor, turn)),
            Change::Finish(finish) => Change::Finish(crate::feed::publisher::redact_finish(&redactor, finish)),
            Change::Analysis(mut analysis) => {
                redactor.redact_json(&mut analysis);
                Change::Analysis(analysis)
            }
            other => other,
        })
        .collect()
}

/// A spool file's name: the call id made safe for a file name (shortened), and a unique part,
/// so two calls never share a file, whatever their ids (`a/b` and `a_b` included).
fn spool_name(call_id: &str) -> String {
    let safe: String = call_id
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    format!("{safe}-{}.json", uuid::Uuid::now_v7().simple())
}

/// Writes (or, with `path`, rewrites) a spooled call, atomically.
async fn write_spool(
    dir: &Path,
    path: Option<&Path>,
    call_id: &str,
    org_id: i64,
    changes: &[Change],
) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = path.map_or_else(|| dir.join(spool_name(call_id)), Path::to_owned);
    let body =
        serde_json::to_vec_pretty(&serde_json::json!({"call_id": call_id, "org_id": org_id, "changes": changes}))?;
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, body).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

/// A spooled call, as read back.
struct Spooled {
    call_id: String,
    org_id: Option<i64>,
    changes: Vec<Change>,
}

fn parse_spool(bytes: &[u8]) -> Option<Spooled> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let changes: Vec<Change> = serde_json::from_value(value["changes"].clone()).ok()?;
    // Files spooled before the organization was written down name it in their start.
    let org_id = value["org_id"].as_i64().or_else(|| {
        changes.iter().find_map(|c| match c {
            Change::Start(new) => Some(new.org_id),
            _ => None,
        })
    });
    Some(Spooled { call_id: value["call_id"].as_str()?.to_owned(), org_id, changes })
}

/// Applies every spooled call; a file is removed once all of its changes are in. Returns the
/// number of calls written.
pub async fn replay(publisher: &Publisher, dir: &Path) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return 0 };
    let mut written = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(spooled) = tokio::fs::read(&path).await.ok().and_then(|bytes| parse_spool(&bytes)) else {
            tracing::error!(spool = %path.display(), "a spooled call cannot be read; it is left in place for inspection");
            continue;
        };
        let org_id = match spooled.org_id {
            Some(org_id) => org_id,
            // An old file without its organization: the call was this daemon's, find it.
            None => match publisher.store().call_any(&spooled.call_id).await {
                Ok(Some(call)) => call.org_id,
                Ok(None) => {
                    tracing::error!(spool = %path.display(), "a spooled call names no organization and is not in the database; it is left in place for inspection");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(spool = %path.display(), "spooled calls wait for the database: {e}");
                    return written;
                }
            },
        };
        let mut writer = Writer {
            publisher: publisher.clone(),
            org_id,
            call_id: spooled.call_id.clone(),
            spool_dir: dir.to_owned(),
        };
        let mut queue: VecDeque<Change> = spooled.changes.into();
        writer.flush(&mut queue).await;
        if queue.is_empty() {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::info!(call_id = %writer.call_id, "a spooled call's record was written to the database");
            written += 1;
        } else {
            let left: Vec<Change> = queue.into();
            if let Err(e) = write_spool(dir, Some(&path), &writer.call_id, org_id, &left).await {
                tracing::error!(call_id = %writer.call_id, "cannot update the spooled call: {e}");
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_names_never_collide() {
        let names: std::collections::HashSet<String> =
            ["a/b", "a_b", "a_b", "../x", "a b"].iter().map(|id| spool_name(id)).collect();
        assert_eq!(names.len(), 5);
        assert!(names.iter().all(|n| !n.contains('/') && n.ends_with(".json")));
        assert!(spool_name(&"x".repeat(5000)).len() < 128, "long ids are shortened");
    }
}
