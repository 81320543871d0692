//! Writing a call's record without losing any of it.
//!
//! Each change (call started, status, turn, do-not-call entry, call finished) is queued and
//! applied in order through the [`Publisher`]. While the database is unreachable the queue waits
//! and is retried at the next change; if the call ends with changes still queued, they are retried
//! a few more times and then written to `<data_dir>/spool/<call id>.json`. [`replay`] applies
//! spooled calls once the database answers again (`asterai serve` runs it every 30 s). A caller
//! on the line is never kept waiting for the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::feed::Publisher;
use crate::store::{CallStatus, FinishCall, NewCall, NewTurn, StoreError};

/// One change to a call's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    Start(NewCall),
    Status {
        status: CallStatus,
        reason: Option<String>,
    },
    Channel(String),
    /// The provider the call waits on, or `None` once it answered.
    Waiting(Option<String>),
    Turn(NewTurn),
    DoNotCall {
        org_id: i64,
        number: String,
        reason: String,
    },
    Finish(FinishCall),
}

/// Applies a call's changes in order, keeping what the database could not take.
pub struct Recorder {
    publisher: Publisher,
    call_id: String,
    queue: Vec<Change>,
    spool_dir: PathBuf,
}

fn transient(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

impl Recorder {
    pub fn new(publisher: Publisher, call_id: String, spool_dir: PathBuf) -> Recorder {
        Recorder { publisher, call_id, queue: Vec::new(), spool_dir }
    }

    /// Queues a change and applies everything queued that the database takes now.
    pub async fn push(&mut self, change: Change) {
        self.queue.push(change);
        self.flush().await;
    }

    /// Changes not applied yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Applies queued changes in order until one fails for lack of a database.
    pub async fn flush(&mut self) {
        while let Some(change) = self.queue.first() {
            match apply(&self.publisher, &self.call_id, change).await {
                Ok(()) => {
                    self.queue.remove(0);
                }
                Err(e) if transient(&e) => {
                    tracing::warn!(call_id = %self.call_id, pending = self.queue.len(), "the database is unavailable; the call's record waits: {e}");
                    return;
                }
                Err(e) => {
                    tracing::error!(call_id = %self.call_id, "a change to the call's record was refused and dropped: {e}");
                    self.queue.remove(0);
                }
            }
        }
    }

    /// At the end of the call: retries what is queued, then spools what is still left.
    pub async fn close(mut self) {
        for wait in [Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)] {
            if self.queue.is_empty() {
                return;
            }
            tokio::time::sleep(wait).await;
            self.flush().await;
        }
        if self.queue.is_empty() {
            return;
        }
        match write_spool(&self.spool_dir, &self.call_id, &self.queue) {
            Ok(path) => tracing::warn!(call_id = %self.call_id, changes = self.queue.len(), spool = %path.display(),
                "the database is still unavailable; the call's record is spooled and will be written when it answers"),
            Err(e) => {
                tracing::error!(call_id = %self.call_id, "cannot spool the call's record: {e}; {} changes are lost", self.queue.len())
            }
        }
    }
}

async fn apply(publisher: &Publisher, call_id: &str, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::Start(new) => match publisher.call_started(new).await {
            // Applied before (a replay after a partial write): nothing to do.
            Err(StoreError::Conflict(_)) => Ok(()),
            other => other.map(|_| ()),
        },
        Change::Status { status, reason } => {
            publisher.call_status(call_id, *status, reason.as_deref()).await.map(|_| ())
        }
        Change::Channel(channel) => publisher.store().set_call_channel(call_id, channel).await,
        Change::Waiting(provider) => publisher.call_waiting(call_id, provider.as_deref()).await.map(|_| ()),
        Change::Turn(turn) => match publisher.conversation_turn(turn).await {
            Err(StoreError::Conflict(_)) => Ok(()),
            other => other.map(|_| ()),
        },
        Change::DoNotCall { org_id, number, reason } => {
            publisher.store().add_dnc(*org_id, number, Some(reason), "caller").await.map(|_| ())
        }
        Change::Finish(finish) => publisher.call_ended(call_id, finish).await.map(|_| ()),
    }
}

fn write_spool(dir: &Path, call_id: &str, changes: &[Change]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name: String =
        call_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    let path = dir.join(format!("{name}.json"));
    let body = serde_json::to_vec_pretty(&serde_json::json!({"call_id": call_id, "changes": changes}))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Applies every spooled call; a file is removed once all of its changes are in. Returns the
/// number of calls written.
pub async fn replay(publisher: &Publisher, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut written = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let parsed: Option<(String, Vec<Change>)> = std::fs::read(&path).ok().and_then(|bytes| {
            let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            Some((value["call_id"].as_str()?.to_owned(), serde_json::from_value(value["changes"].clone()).ok()?))
        });
        let Some((call_id, changes)) = parsed else {
            tracing::error!(spool = %path.display(), "a spooled call cannot be read; it is left in place for inspection");
            continue;
        };
        let mut recorder = Recorder::new(publisher.clone(), call_id.clone(), dir.to_owned());
        recorder.queue = changes;
        recorder.flush().await;
        if recorder.pending() == 0 {
            let _ = std::fs::remove_file(&path);
            tracing::info!(%call_id, "a spooled call's record was written to the database");
            written += 1;
        } else if let Err(e) = write_spool(dir, &call_id, &recorder.queue) {
            tracing::error!(%call_id, "cannot update the spooled call: {e}");
        }
    }
    written
}
