//! Telling systemd how the daemon is doing (`Type=notify`), through the sd-notify protocol.
//!
//! * `READY=1` once the database is migrated and reachable and both listeners are open, so
//!   `systemctl start` returns when asterai can take calls, and units ordered after it start then.
//! * `WATCHDOG=1` at half the unit's `WatchdogSec` while the daemon's runtime runs its tasks. A
//!   daemon that wedges is restarted. An unreachable database does not stop the watchdog: calls
//!   go on without it (their records are spooled) and restarting would only drop them.
//! * `STOPPING=1` when a shutdown begins, with a status line while calls drain.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call here does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// The daemon can take calls.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A status line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval for as long as the runtime schedules this task: a
/// wedged runtime (a blocked worker, a deadlock) stops the pings and systemd restarts asterai.
pub async fn watchdog(interval: Duration, stop: CancellationToken) {
    let every = interval / 2;
    tracing::debug!(?interval, "systemd watchdog enabled");
    send(&[NotifyState::Watchdog]);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => send(&[NotifyState::Watchdog]),
        }
    }
}
