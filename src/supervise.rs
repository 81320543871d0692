//! Supervision of the daemon's long-lived tasks: the feed hub, the ARI event stream with its
//! tracker, the campaign runner and the replay of spooled call records.
//!
//! Each task runs on a tokio task of its own under a [`Supervisor`]. When one ends before the
//! daemon stops (an error, a panic, or simply returning), the failure is logged with its reason,
//! the task is started again after a backoff (1 s doubling to 60 s, back to 1 s once a run has
//! lasted a minute), and its health records the failure. `GET /readyz` answers 503 while any
//! task has failed within the last [`UNSTABLE_FOR`]: a task that keeps failing keeps the daemon
//! out of a load balancer, one that recovered does not.
//!
//! The systemd watchdog is not tied to these tasks on purpose. It proves the runtime is not
//! wedged; a supervised task that fails is restarted here without dropping the calls in flight,
//! which a watchdog restart of the whole process would do (and a task that fails on every start
//! would fail again after it). A failing task shows instead in readiness, in the log and in
//! `systemctl status` (a `STATUS=` line).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long after its last failure a task still counts as failing.
pub const UNSTABLE_FOR: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a supervised task reports when it stops on its own.
pub type TaskResult = Result<(), String>;

/// One task's health, for `/readyz` and the log.
#[derive(Debug, Clone, Serialize)]
pub struct TaskHealth {
    /// `running`, `restarting` (waiting out the backoff after a failure) or `stopped`.
    pub state: &'static str,
    /// Failures since the daemon started.
    pub failures: u64,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Seconds since that failure.
    pub failed_secs_ago: Option<u64>,
    #[serde(skip)]
    failed_at: Option<Instant>,
}

impl TaskHealth {
    /// Whether the task failed recently enough to count as not running.
    pub fn failing(&self) -> bool {
        self.state == "restarting" || self.failed_at.is_some_and(|at| at.elapsed() < UNSTABLE_FOR)
    }
}

/// Runs and restarts the daemon's long-lived tasks. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    stop: CancellationToken,
    tasks: Arc<Mutex<BTreeMap<&'static str, TaskHealth>>>,
    backoff_min: Duration,
}

impl Supervisor {
    /// Tasks stop (and are not restarted) once `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Supervisor {
        Supervisor { stop, tasks: Arc::default(), backoff_min: BACKOFF_MIN }
    }

    /// The same with a shorter first backoff, for tests.
    pub fn with_backoff(stop: CancellationToken, backoff_min: Duration) -> Supervisor {
        Supervisor { backoff_min, ..Supervisor::new(stop) }
    }

    /// The daemon's stop token.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    fn set(&self, name: &'static str, update: impl FnOnce(&mut TaskHealth)) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let health = tasks.entry(name).or_insert(TaskHealth {
            state: "running",
            failures: 0,
            last_error: None,
            failed_secs_ago: None,
            failed_at: None,
        });
        update(health);
    }

    /// Runs `task` (given a child of the stop token) under the name `name`, and again after
    /// each failure until the daemon stops. The returned handle ends when the daemon stops.
    pub fn spawn<F, Fut>(&self, name: &'static str, mut task: F) -> JoinHandle<()>
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        self.set(name, |h| h.state = "running");
        let supervisor = self.clone();
        tokio::spawn(async move {
            let mut backoff = supervisor.backoff_min;
            loop {
                let started = Instant::now();
                let token = supervisor.stop.child_token();
                let run = tokio::spawn(task(token.clone()));
                let ended = run.await;
                // Whatever the failed run started with its token (a listener, a sub-task) ends too.
                token.cancel();
                let reason = match ended {
                    Ok(_) if supervisor.stop.is_cancelled() => break,
                    Ok(Ok(())) => "ended on its own".to_owned(),
                    Ok(Err(e)) => e,
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&*e.into_panic())),
                    Err(e) => format!("was cancelled: {e}"),
                };
                if supervisor.stop.is_cancelled() {
                    break;
                }
                if started.elapsed() >= BACKOFF_MAX {
                    backoff = supervisor.backoff_min;
                }
                supervisor.set(name, |h| {
                    h.state = "restarting";
                    h.failures += 1;
                    h.last_error = Some(reason.clone());
                    h.failed_at = Some(Instant::now());
                });
                metrics::counter!("asterai_task_failures_total", "task" => name).increment(1);
                tracing::error!(task = name, "{name} failed: {reason}; restarting in {backoff:?}");
                crate::systemd::status(&format!("degraded: {name} failed ({reason}); restarting"));
                tokio::select! {
                    _ = supervisor.stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                supervisor.set(name, |h| h.state = "running");
                tracing::info!(task = name, "{name} restarted");
            }
            supervisor.set(name, |h| h.state = "stopped");
        })
    }

    /// Every task's health, by name.
    pub fn health(&self) -> BTreeMap<&'static str, TaskHealth> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .map(|(name, health)| {
                let mut health = health.clone();
                health.failed_secs_ago = health.failed_at.map(|at| at.elapsed().as_secs());
                (*name, health)
            })
            .collect()
    }

    /// The tasks that cannot run now (failed within [`UNSTABLE_FOR`]), with their last error.
    pub fn failing(&self) -> Vec<String> {
        self.health()
            .into_iter()
            .filter(|(_, h)| h.failing())
            .map(|(name, h)| format!("{name}: {}", h.last_error.unwrap_or_default()))
            .collect()
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failing_task_is_restarted_and_reported() {
        let stop = CancellationToken::new();
        let supervisor = Supervisor::with_backoff(stop.clone(), Duration::from_millis(10));
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervisor.spawn("flaky", move |stop| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => panic!("boom on the first run"),
                    1 => Err("an error on the second".to_owned()),
                    _ => {
                        stop.cancelled().await;
                        Ok(())
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the task was not restarted twice");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let health = supervisor.health()["flaky"].clone();
        assert_eq!(health.failures, 2);
        assert_eq!(health.last_error.as_deref(), Some("an error on the second"));
        let failing = supervisor.failing();
        assert!(failing.len() == 1 && failing[0].starts_with("flaky: "), "{failing:?}");
        stop.cancel();
    }
}
