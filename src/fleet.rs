//! Which daemon holds which call, and what becomes of the calls of a daemon that died.
//!
//! Each daemon has an id, made once and kept in `<data_dir>/daemon-id`, so a restarted daemon
//! is the same daemon. Every call it starts or adopts (an inbound call, its dialer's outbound
//! call, a call its conversation takes over) is stamped with that id (`calls.daemon_id`), and
//! the daemon records a heartbeat in the `daemons` table every `daemon.heartbeat_interval`.
//!
//! * **At start-up** ([`Fleet::finish_left_behind`]) a daemon finishes the unfinished calls it
//!   held before a crash or SIGKILL: nothing else would. On the embedded SQLite database, which
//!   no other daemon shares, that is every unfinished call. Outbound calls that Asterisk may
//!   still carry are left to the ARI resync when ARI is configured (it checks Asterisk's
//!   channel list and follows the live ones).
//! * **In a fleet** (PostgreSQL) every daemon, at each heartbeat, finishes the unfinished calls
//!   of daemons whose heartbeat is older than `daemon.dead_after` ([`Fleet::sweep`]). The
//!   dead daemon's row is locked and its heartbeat checked again in the transaction that
//!   finishes each call, so a daemon that beats is never swept. Heartbeats use the database's
//!   clock, so hosts need not agree on the time.
//!
//! A finished call gets status `failed`, outcome `failed` and a reason that starts with
//! `interrupted:` and says which daemon stopped.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::feed::Publisher;
use crate::store::{Call, CallStatus, Direction, FinishCall, Orphan, Outcome, StoreError};

/// The file, in the data directory, that keeps the daemon's id across restarts.
pub const ID_FILE: &str = "daemon-id";

/// The daemon's id: read from `<data_dir>/daemon-id`, or made (a UUID v7) and written there. A
/// data directory that cannot be written gives a fresh id for this run only, with a warning:
/// the calls of a previous run are then finished by the fleet rather than at start-up.
pub fn daemon_id(data_dir: &Path) -> String {
    let path = data_dir.join(ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return id.to_owned();
        }
        tracing::warn!(file = %path.display(), "the daemon id file holds no usable id; making a new one");
    }
    let id = uuid::Uuid::now_v7().to_string();
    let written = std::fs::create_dir_all(data_dir).and_then(|()| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{id}\n"))?;
        std::fs::rename(&tmp, &path)
    });
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), "cannot keep the daemon id ({e}); this run's id is {id}");
    }
    id
}

/// How the fleet keeps track of its daemons.
#[derive(Debug, Clone, Copy)]
pub struct FleetConfig {
    /// `daemon.heartbeat_interval`.
    pub heartbeat: Duration,
    /// `daemon.dead_after`.
    pub dead_after: Duration,
}

/// One daemon's membership of the fleet.
#[derive(Clone)]
pub struct Fleet {
    publisher: Publisher,
    id: String,
    config: FleetConfig,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

fn interrupted(reason: String) -> FinishCall {
    FinishCall {
        status: CallStatus::Failed,
        reason: Some(reason.clone()),
        outcome: Some(Outcome::Failed),
        outcome_reason: Some(reason),
        emotion: None,
        intent_score: None,
    }
}

fn counted(call: &Call) {
    metrics::counter!("asterai_calls_finished_total", "status" => CallStatus::Failed.as_str(), "outcome" => Outcome::Failed.as_str())
        .increment(1);
    metrics::counter!("asterai_interrupted_calls_finished_total", "direction" => call.direction.as_str()).increment(1);
}

impl Fleet {
    /// Registers the daemon `id` and records its first heartbeat. `publisher` should stamp
    /// calls with the same id ([`Publisher::with_daemon`]).
    pub async fn join(publisher: Publisher, id: String, config: FleetConfig) -> Result<Fleet, StoreError> {
        publisher.store().register_daemon(&id, &hostname(), std::process::id()).await?;
        publisher.store().heartbeat(&id).await?;
        tracing::info!(daemon = %id, "daemon registered");
        Ok(Fleet { publisher, id, config })
    }

    /// This daemon's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Finishes the calls a previous run of this daemon left unfinished (see the module docs);
    /// call it before taking calls. `ari` says whether ARI will resync outbound calls. Returns
    /// the ids finished.
    pub async fn finish_left_behind(&self, ari: bool) -> Result<Vec<String>, StoreError> {
        let store = self.publisher.store();
        let alone = store.backend() == "sqlite";
        let mut finished = Vec::new();
        for call in store.calls_left_behind(&self.id, alone).await? {
            if ari && call.direction == Direction::Outbound && call.asterisk_id.is_some() {
                // Asterisk may still carry it: the ARI resync decides.
                continue;
            }
            let reason = match &call.daemon_id {
                Some(daemon) if *daemon == self.id => {
                    "interrupted: asterai stopped (crash or kill) before the call ended; finished at its next start"
                        .to_owned()
                }
                Some(daemon) => format!(
                    "interrupted: daemon {daemon} stopped before the call ended; finished by daemon {} at its start (embedded database)",
                    self.id
                ),
                None => "interrupted: asterai stopped before the call ended; finished at the next start".to_owned(),
            };
            if !self.publisher.call_ended(call.org_id, &call.id, &interrupted(reason)).await?.is_empty() {
                counted(&call);
                self.fail_recordings(&call).await?;
                tracing::warn!(call_id = %call.id, org = %call.org, "a call left unfinished by a previous run is finished as interrupted");
                finished.push(call.id);
            }
        }
        Ok(finished)
    }

    /// The whole-call recordings of an interrupted call that were still running: nobody will
    /// finish their files, so they are failed with the reason instead of staying "recording".
    async fn fail_recordings(&self, call: &Call) -> Result<(), StoreError> {
        let reason = "the daemon recording the call stopped before the call ended; the file may be incomplete";
        let failed = self.publisher.store().fail_unfinished_recordings(call.org_id, &call.id, reason).await?;
        if failed > 0 {
            tracing::warn!(call_id = %call.id, recordings = failed, "an interrupted call's recordings are marked failed");
        }
        Ok(())
    }

    /// Finishes the unfinished calls of daemons that stopped beating. Returns the ids finished.
    pub async fn sweep(&self) -> Result<Vec<String>, StoreError> {
        let mut finished = Vec::new();
        for call in self.publisher.store().orphaned_calls(&self.id, self.config.dead_after).await? {
            let Some(dead) = call.daemon_id.clone() else { continue };
            let reason = format!(
                "interrupted: daemon {dead} stopped beating before the call ended; finished by daemon {}",
                self.id
            );
            let orphan = Orphan { daemon_id: &dead, dead_after: self.config.dead_after };
            if !self.publisher.orphan_ended(&call, &interrupted(reason), &orphan).await?.is_empty() {
                counted(&call);
                self.fail_recordings(&call).await?;
                tracing::warn!(call_id = %call.id, org = %call.org, daemon = %dead, "a call of a daemon that stopped beating is finished as interrupted");
                finished.push(call.id);
            }
        }
        Ok(finished)
    }

    /// One heartbeat (registering again if the daemon's row is gone), then a sweep. Returns the
    /// calls the sweep finished.
    pub async fn beat(&self) -> Result<Vec<String>, StoreError> {
        if !self.publisher.store().heartbeat(&self.id).await? {
            self.publisher.store().register_daemon(&self.id, &hostname(), std::process::id()).await?;
            self.publisher.store().heartbeat(&self.id).await?;
        }
        self.sweep().await
    }

    /// Beats and sweeps every `daemon.heartbeat_interval` until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.heartbeat) => {}
            }
            match self.beat().await {
                Ok(_) if failing => {
                    tracing::info!("the daemon's heartbeat reaches the database again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            dead_after = ?self.config.dead_after,
                            "cannot record the daemon's heartbeat: {e}; past daemon.dead_after the fleet takes this daemon for dead"
                        );
                    }
                    failing = true;
                }
            }
        }
    }
}
