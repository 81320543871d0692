//! `asterai serve`: the daemon.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::agi::{AgiServer, Router, Shutdown, routes};
use crate::ari::{AriClient, StreamConfig};
use crate::config::Config;
use crate::conversation::{Conversations, Providers, Settings, Transferer};
use crate::dialer::{
    AriTransferer, DialSettings, Dialer, Runner, RunnerConfig, SystemClock, Tracker, TrackerConfig, TransferTarget,
};
use crate::feed::subscriber::SubscriberConfig;
use crate::feed::{Hub, Publisher};
use crate::http::{AppState, HttpLimits, HttpParts};
use crate::store::{Store, StoreError};
use crate::supervise::Supervisor;
use futures_util::FutureExt as _;

/// Run the daemon in the foreground until SIGTERM or SIGINT.
///
/// Opens the database (creating and migrating the embedded SQLite file on first start), then the
/// HTTP listener (http.listen, default 127.0.0.1:4574) and the FastAGI listener (agi.listen,
/// default 127.0.0.1:4573), logging one line per listener. On SIGTERM or SIGINT it stops
/// accepting, lets calls in flight finish within daemon.shutdown_grace, closes feed clients
/// (code 1001) and exits 0. A second signal exits at once.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(serve(context))
}

/// Connects to the database, waiting for PostgreSQL to come up (SQLite errors are final), and
/// migrates it if `database.migrate_on_start` is set.
pub async fn open_store(config: &Config, stop: &CancellationToken) -> anyhow::Result<Store> {
    config.prepare_data_dir()?;
    let options = config.store_options();
    let mut delay = Duration::from_secs(1);
    let store = loop {
        match Store::connect(&options).await {
            Ok(store) => break store,
            Err(StoreError::Unavailable(e)) if options.url.starts_with("postgres") => {
                tracing::warn!("database unavailable: {e}; retrying in {delay:?}");
                tokio::select! {
                    _ = stop.cancelled() => anyhow::bail!("stopped while waiting for the database"),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e).context("opening the database (database.url)"),
        }
    };
    if config.database.migrate_on_start {
        let ran = store.migrate().await.context("migrating the database")?;
        if ran > 0 {
            tracing::info!(migrations = ran, backend = store.backend(), "database migrated");
        }
    } else {
        let (applied, known) = (store.applied_migrations().await?, store.known_migrations());
        anyhow::ensure!(
            applied >= known,
            "the database has {applied} of {known} migrations and database.migrate_on_start is false; run `asterai migrate`"
        );
    }
    Ok(store)
}

async fn serve(context: Context) -> anyhow::Result<()> {
    let config = context.config;
    tracing::info!(config = %context.source, version = env!("CARGO_PKG_VERSION"), "asterai starting");
    let metrics = crate::telemetry::install();
    let stop = CancellationToken::new();
    tokio::spawn(watch_signals(stop.clone()));

    let store = open_store(&config, &stop).await?;
    tracing::info!(
        backend = store.backend(),
        database = %config.database_location(),
        data_dir = %config.data_dir().display(),
        "database ready"
    );
    let supervisor = Supervisor::new(stop.clone());
    let hub = Hub::new();
    if let Err(e) = hub.prime(&store).await {
        tracing::warn!("feed hub: cannot read where the event log ends yet: {e}; it will read it when it starts");
    }
    let hub_task = spawn_hub(&supervisor, &hub, &store, &config);

    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {} (http.listen)", config.http.listen))?;
    let http_addr = http_listener.local_addr()?;
    tracing::info!(addr = %http_addr, "HTTP listening");
    let daemon_id = crate::fleet::daemon_id(&config.data_dir());
    let publisher = Publisher::new(store.clone(), hub.clone())
        .with_daemon(&daemon_id)
        .with_redaction(config.redaction.policy().map_err(anyhow::Error::msg)?);
    let webhooks = spawn_webhooks(&supervisor, &store, &config, &daemon_id);
    let beating = join_fleet(&config, &publisher, daemon_id, &supervisor).await?;
    let mut ari = start_ari(&config, publisher.clone(), &supervisor)?;
    let ari_drained = ari.as_mut().and_then(|ari| ari.drained.take());
    let state = AppState::new(HttpParts {
        store: store.clone(),
        hub: hub.clone(),
        feed: SubscriberConfig {
            ping_interval: config.feed.ping_interval.0,
            queue: config.feed.client_queue,
            write_timeout: config.feed.write_timeout.0,
            max_message_bytes: config.feed.max_message_bytes,
        },
        metrics,
        shutdown: CancellationToken::new(),
        limits: HttpLimits::from(&config.http),
        supervisor: Some(supervisor.clone()),
        dialer: ari.as_ref().map(|ari| ari.dialer.clone()),
    });
    state.set_compliance(Arc::new(
        crate::dialer::compliance::Compliance::load(&config.dialer.compliance).map_err(anyhow::Error::msg)?,
    ));
    let http = tokio::spawn(crate::http::serve(http_listener, state.clone(), stop.clone()));
    if crate::retention::enabled(&config.retention) {
        let (store, retention) = (store.clone(), config.retention.clone());
        supervisor
            .spawn("retention purge", move |stop| crate::retention::daily(store.clone(), retention.clone(), stop));
    }

    let transferer = ari.as_ref().and_then(|ari| ari.transferer.clone());
    let conversations = conversations_with(&config, publisher, &supervisor, transferer)?;
    // The supervisors' console acts on the calls in conversation; listening taps them via ARI.
    state.set_live_calls(conversations.live());
    if let Some(ari) = &ari {
        conversations.live().enable_listen(crate::conversation::listen::ListenSetup {
            client: ari.client.clone(),
            app: config.ari.app.clone(),
        });
    }
    if let Err(e) = conversations.preload_orgs().await {
        tracing::warn!("cannot read the organizations ahead of calls: {e}");
    }
    if let Some(ari) = &ari {
        start_streaming(&config, &conversations, ari).await?;
    }
    let router = Router::new().route("health", routes::health).route("ai", conversations.handler());
    let agi = AgiServer::bind(config.agi.listen, router, config.agi.server_config())
        .await
        .with_context(|| format!("cannot listen for FastAGI on {} (agi.listen)", config.agi.listen))?;
    tracing::info!(addr = %agi.local_addr()?, "FastAGI listening");
    if !config.agi.listen.ip().is_loopback() && config.agi.allowed_peers.is_empty() {
        tracing::warn!(
            "agi.listen is not loopback and agi.allowed_peers is empty: any host that reaches the port can drive calls"
        );
    }

    crate::systemd::ready(&format!(
        "FastAGI on {}, HTTP on {http_addr}, {} database",
        agi.local_addr()?,
        store.backend()
    ));
    if let Some(interval) = crate::systemd::watchdog_interval() {
        tokio::spawn(crate::systemd::watchdog(interval, stop.child_token()));
    }
    let report = agi.run(Shutdown::new(stop.clone(), config.daemon.shutdown_grace.0)).await;
    // Every call's record is written (or spooled) before the database closes, and the ARI
    // stream stays until the outbound calls it follows have ended.
    if let Some(drained) = ari_drained {
        let _ = drained.await;
    }
    conversations.records().close().await;
    beating.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("HTTP server stopped with an error: {e}"),
        Err(e) => tracing::warn!("HTTP server task failed: {e}"),
    }
    let _ = hub_task.await;
    // The attempts in flight end (within webhooks.timeout) and are recorded.
    if let Some(webhooks) = webhooks {
        let _ = webhooks.await;
    }
    store.close().await;
    tracing::info!(
        in_flight = report.in_flight,
        told_to_wrap_up = report.told_to_wrap_up,
        aborted = report.aborted,
        "asterai stopped"
    );
    Ok(())
}

/// Joins the fleet as `daemon_id` (the daemon holds the calls it takes): writes what a previous
/// run spooled, finishes what it left unfinished, and beats until the returned token is
/// cancelled (after the last call's record, so a draining daemon is never taken for dead).
async fn join_fleet(
    config: &Config,
    publisher: &Publisher,
    daemon_id: String,
    supervisor: &Supervisor,
) -> anyhow::Result<CancellationToken> {
    let fleet_config = crate::fleet::FleetConfig {
        heartbeat: config.daemon.heartbeat_interval.0,
        dead_after: config.daemon.dead_after.0,
    };
    let fleet = crate::fleet::Fleet::join(publisher.clone(), daemon_id, fleet_config)
        .await
        .context("registering the daemon in the database")?;
    // Spooled records are more exact than "interrupted": they go in first.
    let spooled = crate::conversation::record::replay(publisher, &Settings::from_config(config).spool_dir).await;
    if spooled > 0 {
        tracing::info!(calls = spooled, "spooled call records written");
    }
    let left =
        fleet.finish_left_behind(config.ari.enabled()).await.context("finishing the calls a previous run left")?;
    if !left.is_empty() {
        tracing::warn!(calls = left.len(), "calls left unfinished by a previous run were finished as interrupted");
    }
    // The heartbeat outlives the daemon's stop token: it follows its own, cancelled once the
    // last call's record is written.
    let beating = CancellationToken::new();
    let heart = beating.clone();
    supervisor.spawn("fleet heartbeat", move |_daemon_stop| fleet.clone().run(heart.child_token()).map(Ok));
    Ok(beating)
}

/// The feed hub, supervised: after a failure it resumes after the last event it handed out.
pub fn spawn_hub(
    supervisor: &Supervisor,
    hub: &Arc<Hub>,
    store: &Store,
    config: &Config,
) -> tokio::task::JoinHandle<()> {
    let (hub, store) = (hub.clone(), store.clone());
    let (poll, window) = (config.feed.poll_interval.0, config.feed.batch_window.0);
    supervisor.spawn("feed hub", move |stop| {
        let (hub, store) = (hub.clone(), store.clone());
        async move {
            hub.run(store, poll, window, stop).await;
            Ok(())
        }
    })
}

/// The webhook delivery worker, supervised, unless `webhooks.enabled` is off. It holds its
/// leases as the daemon `daemon_id`; after a failure it takes them back and goes on.
pub fn spawn_webhooks(
    supervisor: &Supervisor,
    store: &Store,
    config: &Config,
    daemon_id: &str,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.webhooks.enabled {
        tracing::info!("webhooks.enabled is off: this daemon delivers no webhooks (they are queued for the others)");
        return None;
    }
    let worker = crate::webhooks::Worker::new(
        store.clone(),
        Arc::new(SystemClock),
        crate::webhooks::WorkerConfig::from_config(config),
        daemon_id,
    );
    Some(supervisor.spawn("webhook deliveries", move |stop| worker.clone().run(stop)))
}

/// What ARI gives the daemon: the dialer (outbound calls) and, with `dialer.transfer_target`,
/// transfers to a person.
pub struct AriParts {
    pub dialer: Arc<Dialer>,
    pub transferer: Option<Arc<dyn Transferer>>,
    /// The tracker, which hands streaming calls (in Stasis) to the conversations.
    pub tracker: Tracker,
    pub client: AriClient,
    /// Ends once the event stream has closed after `stop`: when the calls the tracker follows
    /// have ended, or `daemon.shutdown_grace` (plus the 5 s wrap-up) after `stop`.
    pub drained: Option<tokio::task::JoinHandle<()>>,
}

/// When `ari.url` is set: the event stream (reconnecting, with a resync after each connect),
/// the tracker that turns its events into call statuses, the dialer and the transferer.
pub fn start_ari(config: &Config, publisher: Publisher, supervisor: &Supervisor) -> anyhow::Result<Option<AriParts>> {
    if !config.ari.enabled() {
        tracing::info!("ARI is not configured (ari.url): asterai answers calls but does not place or transfer them");
        return Ok(None);
    }
    let settings = config.ari.settings();
    let client = AriClient::new(settings.clone()).context("ari.url")?;
    let tracker = Tracker::new(
        publisher.clone(),
        client.clone(),
        TrackerConfig {
            context: config.dialer.context.clone(),
            extension: config.dialer.extension.clone(),
            orphan_grace: Duration::from_secs(60),
            // Alone on an embedded database, every unfinished call is this daemon's.
            reconcile_unassigned: publisher.store().backend() == "sqlite",
            conversation_grace: crate::dialer::tracker::CONVERSATION_GRACE,
        },
    );
    // The stream and its tracker run (and restart) together: a new stream resyncs the tracker.
    // At SIGTERM the stream stays open while outbound calls ring or talk, so their ends are
    // still heard: it follows its own token, which `hold_stream` cancels (the grace bounds it).
    let stream_config = StreamConfig::new(settings, config.ari.app.clone(), config.ari.reconnect_max.0);
    let stream_stop = CancellationToken::new();
    let (following, stream_token) = (tracker.clone(), stream_stop.clone());
    supervisor.spawn("ARI event stream", move |_daemon_stop| {
        let (stream_config, tracker, stop) = (stream_config.clone(), following.clone(), stream_token.child_token());
        async move {
            let (items, received) = tokio::sync::mpsc::channel(4096);
            tokio::join!(crate::ari::stream::run(stream_config, items, stop), tracker.run(received));
            Ok(())
        }
    });
    let grace = config.daemon.shutdown_grace.0 + Duration::from_secs(5);
    let drained = tokio::spawn(hold_stream(supervisor.stop_token().clone(), stream_stop, tracker.clone(), grace));
    tracing::info!(url = %config.ari.url, app = %config.ari.app, "ARI client started");
    let dialer =
        Arc::new(Dialer::new(publisher, client.clone(), DialSettings::from_config(config), Some(tracker.clone())));
    if config.dialer.campaigns {
        let runner = Runner::new(
            dialer.clone(),
            Arc::new(SystemClock),
            RunnerConfig {
                claimer: RunnerConfig::claimer_name(),
                lease: config.dialer.claim_lease.0,
                poll_interval: config.dialer.poll_interval.0,
                compliance: Arc::new(
                    crate::dialer::compliance::Compliance::load(&config.dialer.compliance)
                        .map_err(anyhow::Error::msg)?,
                ),
            },
        );
        tracing::info!(claimer = %runner.config().claimer, "campaign runner started");
        let ticking = runner.clone();
        supervisor.spawn("campaign runner", move |stop| ticking.clone().run(stop).map(Ok));
        supervisor.spawn("campaign settler", move |stop| runner.clone().settle_as_calls_end(stop).map(Ok));
    }
    // Without dialer.transfer_target, agents' named targets still transfer.
    let transferer = Some(match TransferTarget::parse(&config.dialer.transfer_target) {
        Some(target) => Arc::new(AriTransferer::new(client.clone(), target)) as Arc<dyn Transferer>,
        None => Arc::new(AriTransferer::named_only(client.clone())) as Arc<dyn Transferer>,
    });
    Ok(Some(AriParts { dialer, transferer, tracker, client, drained: Some(drained) }))
}

/// The streaming path: calls that enter the ARI application with the `ai` route (or that the
/// dialer placed with `media = "stream"`) are held there by the conversations, their audio over
/// chan_websocket, or AudioSocket on `stream.audiosocket_listen` when `stream.transport` is
/// `audiosocket` (the only case that binds the port).
pub async fn start_streaming(config: &Config, conversations: &Conversations, ari: &AriParts) -> anyhow::Result<()> {
    let audiosocket = if config.stream.transport == "audiosocket" {
        let server = crate::media::audiosocket::AudioSocketServer::bind(config.stream.audiosocket_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for AudioSocket on {} (stream.audiosocket_listen)",
                    config.stream.audiosocket_listen
                )
            })?;
        tracing::info!(addr = %server.local_addr(), "AudioSocket listening");
        Some(Arc::new(server))
    } else {
        None
    };
    let options = crate::conversation::StreamOptions {
        app: config.ari.app.clone(),
        stream: config.stream.clone(),
        support: None,
        audiosocket,
    };
    let calls = crate::conversation::StreamCalls::new(conversations.clone(), ari.client.clone(), options);
    ari.tracker.set_stasis_calls(Arc::new(calls));
    Ok(())
}

/// After `stop`, tells the streaming calls to end at their next turn and closes the ARI event
/// stream once the tracker follows no call and no streaming call is held, or after `grace`.
async fn hold_stream(stop: CancellationToken, stream_stop: CancellationToken, tracker: Tracker, grace: Duration) {
    stop.cancelled().await;
    tracker.wrap_up_stasis_calls();
    let (followed, streaming) = (tracker.followed(), tracker.stasis_calls_active());
    if followed + streaming > 0 {
        tracing::info!(
            outbound = followed,
            streaming,
            "keeping the ARI event stream open until the calls in flight end"
        );
    }
    let idle = async {
        while tracker.followed() + tracker.stasis_calls_active() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(grace, idle).await.is_err() {
        tracing::warn!(
            outbound = tracker.followed(),
            streaming = tracker.stasis_calls_active(),
            "calls still in flight after the grace period; the ARI resync of the next start reconciles them"
        );
    }
    stream_stop.cancel();
}

/// The conversation service for the `ai` route: providers, directories, cache warm-up, and the
/// replay of call records spooled while the database was down.
pub fn conversations(config: &Config, publisher: Publisher, supervisor: &Supervisor) -> anyhow::Result<Conversations> {
    conversations_with(config, publisher, supervisor, None)
}

/// [`conversations`] with a way to transfer calls to a person.
pub fn conversations_with(
    config: &Config,
    publisher: Publisher,
    supervisor: &Supervisor,
    transferer: Option<Arc<dyn Transferer>>,
) -> anyhow::Result<Conversations> {
    // media.call_recordings_dir is created when a call first records (see
    // conversation::call_recording::ensure_dir), with its parent's permissions.
    for (key, dir) in [("media.dir", config.media_dir()), ("media.recordings_dir", config.recordings_dir())] {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {} ({key})", dir.display()))?;
    }
    for warning in Providers::warnings(config) {
        tracing::warn!("{warning}");
    }
    let providers = Providers::from_config(config).map_err(anyhow::Error::msg)?;
    tracing::info!(
        stt = providers.stt.name(),
        responder = providers.responder.name(),
        tts = providers.voice.provider().name(),
        "speech providers ready"
    );
    let settings = Settings::from_config(config);
    let spool = settings.spool_dir.clone();
    let conversations = Conversations::new(publisher.clone(), providers, settings, transferer);
    let warming = conversations.clone();
    tokio::spawn(async move {
        let failed = warming.warm_up().await;
        if !failed.is_empty() {
            tracing::warn!(
                phrases = failed.len(),
                "stock phrases could not be synthesized ahead of time: {}",
                failed.join("; ")
            );
        }
    });
    let records = conversations.records().clone();
    let daemon_stop = supervisor.stop_token().clone();
    tokio::spawn(async move {
        daemon_stop.cancelled().await;
        // Calls dropped at the end of the grace say why.
        records.shutting_down();
    });
    supervisor.spawn("spool replay", move |stop| {
        let (publisher, spool) = (publisher.clone(), spool.clone());
        async move {
            loop {
                let written = crate::conversation::record::replay(&publisher, &spool).await;
                if written > 0 {
                    tracing::info!(calls = written, "spooled call records written");
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    });
    Ok(conversations)
}

/// Cancels `stop` on the first SIGTERM or SIGINT; exits the process on the second.
async fn watch_signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop asterai with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let at = Instant::now();
    tracing::info!(signal = name, "shutting down: no new calls; waiting for calls in flight");
    crate::systemd::stopping("shutting down: no new calls; waiting for calls in flight");
    stop.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!(after = ?at.elapsed(), "second signal: exiting now without waiting for calls in flight");
    std::process::exit(1);
}
