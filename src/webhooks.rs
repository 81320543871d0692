//! The webhook delivery worker: sends the outbox's deliveries (see [`crate::store::webhooks`])
//! to the organizations' endpoints, and retries them until they are accepted or too old.
//!
//! Each delivery is one signed request ([`crate::signing`]):
//!
//! ```text
//! POST <endpoint url>
//! Content-Type: application/json
//! X-Asterai-Delivery: <delivery id>
//! X-Asterai-Event: call.ended
//! X-Asterai-Timestamp: 1764583200
//! X-Asterai-Signature: v1=<hex HMAC-SHA-256(secret, "1764583200." + body)>
//!
//! {"id": "<delivery id>", "type": "call.ended", "event_id": 42, "org": "acme", …}
//! ```
//!
//! * **At least once.** A delivery stays pending until the receiver answers 2xx; a receiver
//!   that took it and failed to answer gets it again, with the same id (its deduplication key).
//! * **Retries.** After a failure (a status other than 2xx, a timeout, a refused connection) the
//!   next attempt comes after 10 s, doubling to at most an hour, each wait shortened by up to
//!   20 % at random so that many failed deliveries do not come back at the same instant. After
//!   `webhooks.retry_for` (24 h at least) the next failure makes it dead; `asterai webhooks
//!   retry` puts it back.
//! * **Order per call.** A delivery is not sent while an earlier one of the same call to the
//!   same endpoint is pending (the claim's rule), so a call's events arrive in order; different
//!   calls go in parallel, up to `webhooks.concurrency` requests at once.
//! * **Fleets.** Rows are claimed under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL): two
//!   daemons never send the same row at once, and a daemon that died leaves its rows to the
//!   others when the lease ends. A worker that starts again takes its own leased rows back.
//!
//! The worker is the only reader of the outbox; the caller's path only inserts rows, so a slow
//! or dead receiver never delays a call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dialer::Clock;
use crate::store::webhooks::{AttemptOutcome, ClaimedDelivery, NewWebhookEndpoint, WEBHOOK_EVENTS};
use crate::store::{Store, StoreError};

/// The first wait after a failure; it doubles with each failure, up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// The delivery id header (the body's `id` too).
pub const DELIVERY_HEADER: &str = "x-asterai-delivery";
/// The event type header.
pub const EVENT_HEADER: &str = "x-asterai-event";
/// How often the backlog gauge is read.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// How the worker runs (from `[webhooks]`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// How long one request may take.
    pub timeout: Duration,
    /// How long a delivery is retried before it is dead.
    pub retry_for: Duration,
    /// How often the outbox is read when there is nothing to send.
    pub poll_interval: Duration,
}

impl WorkerConfig {
    pub fn from_config(config: &crate::config::Config) -> WorkerConfig {
        let webhooks = &config.webhooks;
        WorkerConfig {
            concurrency: webhooks.concurrency,
            timeout: webhooks.timeout.0,
            retry_for: webhooks.retry_for.0,
            poll_interval: webhooks.poll_interval.0,
        }
    }

    /// A claimed row stays this worker's this long: the request's timeout and then some, so a
    /// live worker never loses a row it is still sending.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(30)
    }
}

/// The wait before the attempt after `failures` failed ones, with `jitter` in `[0, 1)`
/// shortening it by up to 20 %.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let doubled = BACKOFF_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX).mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// Checks an endpoint before it is stored: an http(s) URL with a host and without credentials,
/// a secret reference `env:ASTERAI_SECRET_…` (never a secret: one is refused without being
/// echoed), and known event types, at least one, none twice.
pub fn check_endpoint(new: &NewWebhookEndpoint) -> Result<(), String> {
    let url = reqwest::Url::parse(&new.url).map_err(|e| format!("url: {e}: {:?}", new.url))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("url: expected http:// or https:// and a host, got {:?}", new.url));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url: credentials are not allowed in the URL; the requests are signed".into());
    }
    crate::agent::check_tool_secret("secret", &new.secret)?;
    if new.events.is_empty() {
        return Err(format!("events: name at least one of {}", WEBHOOK_EVENTS.join(", ")));
    }
    for (i, event) in new.events.iter().enumerate() {
        if !WEBHOOK_EVENTS.contains(&event.as_str()) {
            return Err(format!("events: unknown event {event:?}; expected {}", WEBHOOK_EVENTS.join(", ")));
        }
        if new.events[..i].contains(event) {
            return Err(format!("events: {event} is named twice"));
        }
    }
    Ok(())
}

/// The HTTP client of deliveries: no redirects (a signed delivery goes to its endpoint only).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("asterai/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the HTTP client")
}

/// Where the worker reads secrets: the process's environment, or a map in tests.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Sends the outbox's deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    /// The lease holder's name: the daemon's id.
    name: Arc<str>,
    client: reqwest::Client,
    env: Env,
}

impl Worker {
    /// A worker named `name` (unique per daemon), reading secrets from the environment.
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: WorkerConfig, name: &str) -> Worker {
        Worker {
            store,
            clock,
            config,
            name: name.into(),
            client: client(),
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }

    /// The same, reading secrets from `env` instead.
    pub fn with_env(mut self, env: Env) -> Worker {
        self.env = env;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends deliveries until `stop`: claims what is due up to the free slots, sends each on a
    /// task of its own, records the attempts as they end. At `stop` the requests in flight
    /// finish (within the timeout) and are recorded. A database error ends the run (the
    /// supervisor starts it again).
    pub async fn run(self, stop: CancellationToken) -> Result<(), String> {
        let released = self.store.release_webhook_leases(&self.name).await.map_err(|e| self.failed(e))?;
        if released > 0 {
            tracing::info!(
                deliveries = released,
                "webhooks: took back the deliveries this daemon held when it stopped"
            );
        }
        let mut flying: JoinSet<(String, AttemptOutcome)> = JoinSet::new();
        let mut backlog_at = Instant::now() - BACKLOG_EVERY;
        loop {
            if backlog_at.elapsed() >= BACKLOG_EVERY {
                backlog_at = Instant::now();
                if let Ok(n) = self.store.webhook_backlog().await {
                    metrics::gauge!("asterai_webhook_backlog").set(n as f64);
                }
            }
            // Claim when a quarter of the slots are free (or nothing is in flight): fewer,
            // larger claims.
            let free = self.config.concurrency.saturating_sub(flying.len());
            let mut drained = false;
            if free > 0 && (flying.is_empty() || free * 4 >= self.config.concurrency) {
                let claimed = self.claim(free).await?;
                drained = claimed.len() < free;
                for delivery in claimed {
                    let worker = self.clone();
                    flying.spawn(async move {
                        let outcome = worker.attempt(&delivery).await;
                        (delivery.id, outcome)
                    });
                }
            }
            let mut done = Vec::new();
            tokio::select! {
                _ = stop.cancelled() => {
                    while let Some(ended) = flying.join_next().await {
                        done.extend(ended.ok());
                    }
                    self.record(&done).await?;
                    return Ok(());
                }
                Some(ended) = flying.join_next(), if !flying.is_empty() => {
                    done.extend(ended.ok());
                    while let Some(ended) = flying.try_join_next() {
                        done.extend(ended.ok());
                    }
                }
                _ = tokio::time::sleep(self.config.poll_interval), if drained || flying.len() >= self.config.concurrency => {}
            }
            self.record(&done).await?;
        }
    }

    /// One round, for tests and tools: claims what is due (up to `webhooks.concurrency`),
    /// sends it all, records the attempts. Returns how many attempts were made.
    pub async fn run_once(&self) -> Result<usize, String> {
        let claimed = self.claim(self.config.concurrency).await?;
        let attempts = futures_util::future::join_all(claimed.iter().map(|delivery| async {
            let outcome = self.attempt(delivery).await;
            (delivery.id.clone(), outcome)
        }))
        .await;
        self.record(&attempts).await?;
        Ok(attempts.len())
    }

    fn failed(&self, e: StoreError) -> String {
        format!("webhook deliveries: {e}")
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, String> {
        self.store
            .claim_webhook_deliveries(&self.name, self.clock.now(), self.config.lease(), limit as i64)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn record(&self, attempts: &[(String, AttemptOutcome)]) -> Result<(), String> {
        if attempts.is_empty() {
            return Ok(());
        }
        let recorded = self
            .store
            .finish_webhook_attempts(&self.name, self.clock.now(), attempts)
            .await
            .map_err(|e| self.failed(e))?;
        if recorded < attempts.len() {
            tracing::warn!(
                lost = attempts.len() - recorded,
                "webhooks: leases ran out before their attempts were recorded; those deliveries are sent again"
            );
        }
        Ok(())
    }

    /// Sends one delivery and says what became of it. Never fails: a failure is an outcome.
    async fn attempt(&self, delivery: &ClaimedDelivery) -> AttemptOutcome {
        let started = Instant::now();
        let (status, error) = match self.send(delivery).await {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("the receiver answered {status}"))),
            Err(error) => (None, Some(error)),
        };
        metrics::histogram!("asterai_webhook_request_seconds").record(started.elapsed().as_secs_f64());
        let now = self.clock.now();
        let Some(error) = error else {
            metrics::counter!("asterai_webhook_delivered_total").increment(1);
            let age = (now - delivery.created_at).to_std().unwrap_or_default();
            metrics::histogram!("asterai_webhook_delivery_seconds").record(age.as_secs_f64());
            return AttemptOutcome::Delivered { status: status.unwrap_or(200) };
        };
        metrics::counter!("asterai_webhook_failed_attempts_total").increment(1);
        let failures = delivery.attempts.max(0) as u32 + 1;
        // The window starts at the first attempt (see `finish_webhook_attempts`).
        if delivery.attempts > 0 && past(delivery.retry_from, self.config.retry_for, now) {
            metrics::counter!("asterai_webhook_dead_total").increment(1);
            tracing::warn!(
                delivery = %delivery.id,
                org_id = delivery.org_id,
                endpoint = delivery.endpoint_id,
                attempts = failures,
                "webhook delivery is dead after {:?} of retries: {error}",
                self.config.retry_for
            );
            return AttemptOutcome::Dead { status, error };
        }
        let wait = backoff(failures, rand::random::<f64>());
        let next_at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
        tracing::debug!(delivery = %delivery.id, attempts = failures, "webhook delivery failed, again in {wait:?}: {error}");
        AttemptOutcome::Retry { status, error, next_at }
    }

    /// The request; its status, or why there is none.
    async fn send(&self, delivery: &ClaimedDelivery) -> Result<i32, String> {
        let secret = crate::agent::resolve_tool_secret(
            &format!("webhook endpoint {} secret", delivery.endpoint_id),
            &delivery.secret,
            &|name| (self.env)(name),
        )?;
        let body = delivery.body.as_bytes();
        let [(timestamp_header, timestamp), (signature_header, signature)] =
            crate::signing::signed_headers(secret.expose().as_bytes(), self.clock.now().timestamp(), body);
        let request = self
            .client
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &delivery.id)
            .header(EVENT_HEADER, &delivery.kind)
            .header(timestamp_header, timestamp)
            .header(signature_header, signature)
            .body(delivery.body.clone());
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16() as i32;
            // The answer is not read beyond its status; dropping it frees the connection.
            drop(response);
            Ok::<_, reqwest::Error>(status)
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Err(_) => Err(format!("no answer within {:?}", self.config.timeout)),
            Ok(Err(e)) => Err(describe(&e)),
            Ok(Ok(status)) => Ok(status),
        }
    }
}

/// Whether `now` is at or after `from + span`.
fn past(from: DateTime<Utc>, span: Duration, now: DateTime<Utc>) -> bool {
    chrono::Duration::from_std(span).ok().and_then(|span| from.checked_add_signed(span)).is_none_or(|end| now >= end)
}

/// An HTTP error with its causes (reqwest's own text stops at "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_connect() { "cannot connect".to_owned() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str, secret: &str, events: &[&str]) -> NewWebhookEndpoint {
        NewWebhookEndpoint {
            org_id: 1,
            url: url.into(),
            secret: secret.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            enabled: true,
        }
    }

    #[test]
    fn endpoints_are_checked() {
        let good = endpoint("https://hooks.example.com/asterai", "env:ASTERAI_SECRET_HOOK", &["call.ended"]);
        assert_eq!(check_endpoint(&good), Ok(()));
        for (bad, says) in [
            (endpoint("ftp://x/", "env:ASTERAI_SECRET_HOOK", &["call.ended"]), "url"),
            (endpoint("https://u:p@x/", "env:ASTERAI_SECRET_HOOK", &["call.ended"]), "credentials"),
            (endpoint("https://x/", "hunter2", &["call.ended"]), "never stored"),
            (endpoint("https://x/", "env:HOME", &["call.ended"]), "ASTERAI_SECRET_"),
            (endpoint("https://x/", "env:ASTERAI_SECRET_HOOK", &[]), "at least one"),
            (endpoint("https://x/", "env:ASTERAI_SECRET_HOOK", &["call_ended"]), "unknown event"),
            (endpoint("https://x/", "env:ASTERAI_SECRET_HOOK", &["call.ended", "call.ended"]), "twice"),
        ] {
            let error = check_endpoint(&bad).unwrap_err();
            assert!(error.contains(says), "{error}");
            assert!(!error.contains("hunter2"), "the secret is echoed: {error}");
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_an_hour_with_jitter() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(5, 0.0), Duration::from_secs(160));
        assert_eq!(backoff(9, 0.0), Duration::from_secs(2560));
        assert_eq!(backoff(10, 0.0), Duration::from_secs(3600));
        assert_eq!(backoff(1000, 0.0), Duration::from_secs(3600));
        assert_eq!(backoff(1, 0.5), Duration::from_secs(9));
        assert!(backoff(10, 0.999) > Duration::from_secs(2880));
        // 24 hours of waits: 32 of them (10 s, 20 s, … 2560 s, then hourly).
        let (mut spent, mut attempts) = (Duration::ZERO, 0);
        while spent < Duration::from_secs(24 * 3600) {
            attempts += 1;
            spent += backoff(attempts, 0.0);
        }
        assert_eq!(attempts, 32);
    }

    #[test]
    fn the_window_ends_after_retry_for() {
        let from = DateTime::from_timestamp(1_764_583_200, 0).unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!past(from, day, from + chrono::Duration::seconds(86_399)));
        assert!(past(from, day, from + chrono::Duration::seconds(86_400)));
    }
}
