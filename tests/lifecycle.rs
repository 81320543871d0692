//! Calls are never lost at shutdown, after a crash, or while the database is down: the real
//! `asterai` binary under SIGTERM and SIGKILL (on SQLite and on a PostgreSQL fleet), the ARI
//! event stream held open at SIGTERM, records spooled at exit and replayed, and calls that start
//! and go on while PostgreSQL is cut off (through `support::proxy`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use asterai::agi::{Router, ServerConfig};
use asterai::config::Config;
use asterai::conversation::record::INTERRUPTED_BY_SHUTDOWN;
use asterai::conversation::{Conversations, Providers, Settings};
use asterai::demo::caller::{Caller, Line};
use asterai::feed::{Hub, Publisher};
use asterai::fleet::{Fleet, FleetConfig};
use asterai::store::{Call, CallFilter, CallStatus, Store, StoreOptions};
use serde_json::{Value, json};
use support::agi::{TestServer, env_block};
use support::daemon::{Daemon, command};
use support::db::{Backend, TestDb, options};
use support::fake_ari::{FakeAri, Plan, Scenario, derive, line_of};
use support::fake_asterisk::FakeAsterisk;
use support::http::TestDaemon;
use support::mocks::wav_24k;
use support::proxy::Proxy;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PATIENCE: Duration = Duration::from_secs(60);

/// `asterai serve` in `dir` (kept across restarts), on ephemeral ports.
fn serve_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = command(dir.path());
    cmd.arg("serve")
        .env("ASTERAI_AGI_LISTEN", "127.0.0.1:0")
        .env("ASTERAI_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon::spawn(cmd, dir)
}

/// Takes the data directory out of a daemon that has exited, for the next run.
fn keep_dir(daemon: &mut Daemon) -> tempfile::TempDir {
    std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap())
}

async fn sqlite_store(dir: &std::path::Path) -> Store {
    Store::connect(&options(&format!("sqlite://{}", dir.join("asterai.db").display()))).await.unwrap()
}

/// Runs an `asterai` command against the daemon's data directory.
async fn cli(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = command(dir);
    cmd.args(args).envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "asterai {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Plays Asterisk for an `ai` call until the daemon first plays or records, and holds it there:
/// the call stays in progress for as long as the connection does.
async fn held_call(addr: SocketAddr, org: &str, uniqueid: &str) -> FakeAsterisk {
    let mut fake = FakeAsterisk::connect(addr).await;
    fake.write(env_block(&format!("ai?org={org}"), uniqueid).as_bytes()).await.unwrap();
    loop {
        let line = fake.read_line().await.unwrap().expect("the daemon talks to the call");
        if line.starts_with("STREAM FILE") || line.starts_with("RECORD FILE") {
            return fake;
        }
        let reply = if line.starts_with("CHANNEL STATUS") { "200 result=6\n" } else { "200 result=1\n" };
        fake.write(reply.as_bytes()).await.unwrap();
    }
}

/// Waits until `check` holds for the calls of `org`, polling the store.
async fn calls_until(store: &Store, org: i64, what: &str, check: impl Fn(&[Call]) -> bool) -> Vec<Call> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(page) = store.list_calls(org, &CallFilter::default()).await
            && check(&page.calls)
        {
            return page.calls;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_exit(mut daemon: Daemon) -> (std::process::ExitStatus, Daemon) {
    tokio::task::spawn_blocking(move || {
        let status = daemon.wait(PATIENCE);
        (status, daemon)
    })
    .await
    .unwrap()
}

fn line(daemon: &Daemon, parts: &'static [&'static str]) -> String {
    tokio::task::block_in_place(|| daemon.wait_for_line(parts))
}

/// A call whose turn outlasts the shutdown grace is finished (failed, "interrupted: …") before
/// the daemon exits, never left in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlasts_the_shutdown_grace_is_finished_before_exit() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path()).await;
    let daemon = serve_in(dir, &[("ASTERAI_DAEMON_SHUTDOWN_GRACE", "1s")]);
    let agi = tokio::task::block_in_place(|| daemon.listener("FastAGI"));
    cli(daemon.dir.path(), &[], &["org", "create", "acme"]).await;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;
    let _held = held_call(agi, "acme", "100.1").await;
    let calls =
        calls_until(&store, acme, "the call in progress", |c| c.len() == 1 && c[0].status == CallStatus::InProgress)
            .await;

    daemon.signal("TERM");
    let (status, daemon) = wait_exit(daemon).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr.lock().unwrap().join("\n"));
    let call = store.call(acme, &calls[0].id).await.unwrap().unwrap();
    assert_eq!(
        (call.status, call.status_reason.as_deref()),
        (CallStatus::Failed, Some(INTERRUPTED_BY_SHUTDOWN)),
        "{call:#?}"
    );
    assert!(call.ended_at.is_some());
    let kinds: Vec<&str> = store.call_events(&call.id).await.unwrap().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"call_ended"), "{kinds:?}");
}

/// SIGKILL in the middle of a call, then a restart: the daemon finishes the call it held,
/// without ARI and for an inbound call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_call_then_restart_finishes_the_call() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path()).await;
    let daemon = serve_in(dir, &[]);
    let agi = tokio::task::block_in_place(|| daemon.listener("FastAGI"));
    cli(daemon.dir.path(), &[], &["org", "create", "acme"]).await;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;
    let held = held_call(agi, "acme", "101.1").await;
    let calls =
        calls_until(&store, acme, "the call in progress", |c| c.len() == 1 && c[0].status == CallStatus::InProgress)
            .await;
    assert_eq!(calls[0].direction.as_str(), "inbound");
    // A whole-call recording under way when the daemon dies: nobody will finish its file.
    use asterai::store::{NewRecording, RecordingStatus, RecordingVia};
    let recording = NewRecording {
        org_id: acme,
        call_id: &calls[0].id,
        via: RecordingVia::MixMonitor,
        name: "killed-call",
        path: "/nonexistent/killed-call.wav",
        format: "wav",
        region: None,
        consent_required: false,
        consent_announced: false,
        status: RecordingStatus::Recording,
        reason: None,
    };
    store.start_recording(&recording).await.unwrap();

    daemon.signal("KILL");
    let (_, mut daemon) = wait_exit(daemon).await;
    drop(held);
    assert!(store.call(acme, &calls[0].id).await.unwrap().unwrap().ended_at.is_none(), "killed: nobody finished it");

    let again = serve_in(keep_dir(&mut daemon), &[]);
    line(&again, &["left unfinished by a previous run"]);
    let call = store.call(acme, &calls[0].id).await.unwrap().unwrap();
    assert_eq!(call.status, CallStatus::Failed, "{call:#?}");
    assert!(
        call.status_reason.as_deref().unwrap().starts_with("interrupted: asterai stopped (crash or kill)"),
        "{call:#?}"
    );
    let recordings = store.call_recordings(acme, &call.id).await.unwrap();
    assert_eq!(recordings.len(), 1);
    assert_eq!(recordings[0].status, RecordingStatus::Failed, "{recordings:#?}");
    assert!(recordings[0].status_reason.as_deref().unwrap_or("").contains("stopped before the call ended"));
    // The restarted daemon takes calls as usual.
    let _next = held_call(tokio::task::block_in_place(|| again.listener("FastAGI")), "acme", "101.2").await;
    calls_until(&store, acme, "a new call", |c| c.iter().any(|c| c.ended_at.is_none())).await;
}

/// Two daemons on one PostgreSQL, each holding a call; one is killed. The fleet finishes the
/// dead daemon's call once its heartbeat is older than `daemon.dead_after`, and never the call
/// of a daemon that still beats, however often it sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_finishes_the_calls_of_a_daemon_that_stopped_beating_never_a_live_ones() {
    support::init();
    let db = TestDb::new(Backend::Postgres).await;
    let acme = db.store.create_org("acme", "Acme Inc.").await.unwrap().id;
    let env = [
        ("ASTERAI_DATABASE_URL", db.url.as_str()),
        ("ASTERAI_DAEMON_HEARTBEAT_INTERVAL", "1s"),
        ("ASTERAI_DAEMON_DEAD_AFTER", "6s"),
    ];
    let dying = Daemon::start(&[], &env);
    let living = Daemon::start(&[], &env);
    let _on_dying = held_call(tokio::task::block_in_place(|| dying.listener("FastAGI")), "acme", "102.1").await;
    let on_living = held_call(tokio::task::block_in_place(|| living.listener("FastAGI")), "acme", "102.2").await;
    let calls = calls_until(&db.store, acme, "two calls in progress", |c| {
        c.len() == 2 && c.iter().all(|c| c.status == CallStatus::InProgress)
    })
    .await;
    let owners: std::collections::BTreeSet<_> =
        calls.iter().map(|c| c.daemon_id.clone().expect("held by a daemon")).collect();
    assert_eq!(owners.len(), 2, "each daemon holds its own call");
    let dying_id = std::fs::read_to_string(dying.dir.path().join(asterai::fleet::ID_FILE)).unwrap().trim().to_owned();
    let (dead_call, live_call) = if calls[0].daemon_id.as_deref() == Some(dying_id.as_str()) {
        (calls[0].id.clone(), calls[1].id.clone())
    } else {
        (calls[1].id.clone(), calls[0].id.clone())
    };

    dying.signal("KILL");
    let _ = wait_exit(dying).await;
    // The living daemon sweeps at each heartbeat; a third member of the fleet sweeps too.
    let config = FleetConfig { heartbeat: Duration::from_secs(1), dead_after: Duration::from_secs(6) };
    let third = Fleet::join(Publisher::new(db.store.clone(), Hub::new()).with_daemon("third"), "third".into(), config)
        .await
        .unwrap();
    let finished = calls_until(&db.store, acme, "the dead daemon's call finished", |c| {
        c.iter().any(|c| c.id == dead_call && c.ended_at.is_some())
    })
    .await;
    let dead = finished.iter().find(|c| c.id == dead_call).unwrap();
    assert_eq!(dead.status, CallStatus::Failed);
    let reason = dead.status_reason.clone().unwrap();
    assert!(reason.starts_with(&format!("interrupted: daemon {dying_id} stopped beating")), "{reason}");

    // Well past dead_after, sweeping again and again: the living daemon's call stays live.
    for _ in 0..8 {
        third.beat().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let live = db.store.call(acme, &live_call).await.unwrap().unwrap();
    assert_eq!((live.status, live.ended_at), (CallStatus::InProgress, None), "a live daemon's call is never swept");
    drop(on_living);
    drop(living);
}

/// At SIGTERM the ARI event stream stays open while an outbound call rings, so its end is still
/// heard; then the daemon exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ari_stream_stays_open_at_sigterm_until_the_calls_it_follows_end() {
    support::init();
    let fake = FakeAri::start().await;
    let s = Scenario::load("originate-stasis");
    let id = "1795222386.55";
    let ringing = derive(&line_of(&s, "ChannelStateChange", id), &[("/channel/state", json!("Ringing"))]);
    let dial = line_of(&s, "Dial", id);
    let busy = derive(&dial, &[("/dialstatus", json!("BUSY")), ("/peer/state", json!("Ringing"))]);
    let gone = derive(
        &line_of(&s, "ChannelDestroyed", id),
        &[("/cause", json!(17)), ("/cause_txt", json!("User busy")), ("/channel/state", json!("Ringing"))],
    );
    // Ringing now; busy only when the test releases it.
    fake.default_plan(Plan::replay("originate-stasis", 1).instead(vec![ringing, busy, gone]).events(1));
    let url = fake.url();
    let env = [
        ("ASTERAI_ARI_URL", url.as_str()),
        ("ASTERAI_ARI_USERNAME", support::fake_ari::USER),
        ("ASTERAI_ARI_PASSWORD", support::fake_ari::PASSWORD),
    ];
    let daemon = Daemon::start(&[], &env);
    fake.wait_connections(1).await;
    line(&daemon, &["ARI resync done"]);
    let store = sqlite_store(daemon.dir.path()).await;
    cli(daemon.dir.path(), &env, &["org", "create", "acme"]).await;
    let token = cli(daemon.dir.path(), &env, &["token", "create", "--org", "acme", "--scope", "dial"])
        .await
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let http = tokio::task::block_in_place(|| daemon.listener("HTTP"));
    let response = reqwest::Client::new()
        .post(format!("http://{http}/v1/calls"))
        .bearer_auth(&token)
        .json(&json!({"to": "+15551230000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    let call_id = placed["id"].as_str().unwrap().to_owned();
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;
    calls_until(&store, acme, "the call ringing", |c| c.iter().any(|c| c.status == CallStatus::Ringing)).await;

    daemon.signal("TERM");
    line(&daemon, &["keeping the ARI event stream open"]);
    fake.release(&call_id);
    let (status, daemon) = wait_exit(daemon).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr.lock().unwrap().join("\n"));
    let call = store.call(acme, &call_id).await.unwrap().unwrap();
    assert_eq!((call.status, call.status_reason.as_deref()), (CallStatus::Busy, Some("BUSY")), "{call:#?}");
    assert_eq!(fake.connections(), 1, "one stream, open until the call ended");
}

/// The database goes away during a shutdown: the interrupted call's record is spooled before
/// the daemon exits, and the next start writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_spooled_before_exit_and_written_at_the_next_start() {
    support::init();
    let db = TestDb::new(Backend::Postgres).await;
    let acme = db.store.create_org("acme", "Acme Inc.").await.unwrap().id;
    let mut proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let env = [
        ("ASTERAI_DATABASE_URL", url.as_str()),
        ("ASTERAI_DATABASE_CONNECT_TIMEOUT", "1s"),
        ("ASTERAI_DAEMON_SHUTDOWN_GRACE", "1s"),
    ];
    let daemon = serve_in(tempfile::tempdir().unwrap(), &env);
    let _held = held_call(tokio::task::block_in_place(|| daemon.listener("FastAGI")), "acme", "103.1").await;
    let calls =
        calls_until(&db.store, acme, "the call in progress", |c| c.len() == 1 && c[0].status == CallStatus::InProgress)
            .await;

    proxy.stop();
    daemon.signal("TERM");
    let (status, mut daemon) = wait_exit(daemon).await;
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr.lock().unwrap().join("\n"));
    let spool = daemon.dir.path().join("spool");
    let files: Vec<_> = std::fs::read_dir(&spool).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert_eq!(files.len(), 1, "the call's record is spooled: {files:?}\n{}", daemon.stderr.lock().unwrap().join("\n"));
    let spooled: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(spooled["call_id"], calls[0].id.as_str());
    assert!(spooled.to_string().contains(INTERRUPTED_BY_SHUTDOWN), "{spooled:#}");
    assert!(db.store.call(acme, &calls[0].id).await.unwrap().unwrap().ended_at.is_none());

    proxy.restart().await;
    let again = serve_in(keep_dir(&mut daemon), &env);
    line(&again, &["spooled call records written"]);
    let call = db.store.call(acme, &calls[0].id).await.unwrap().unwrap();
    assert_eq!((call.status, call.status_reason.as_deref()), (CallStatus::Failed, Some(INTERRUPTED_BY_SHUTDOWN)));
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "the spool is emptied");
}

/// With PostgreSQL cut off (and a pool that would wait 30 s for a connection), a new call of a
/// known organization starts and runs its whole conversation; an organization never seen since
/// start-up is refused at once; the call's record is written once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_start_and_go_on_while_the_database_is_down() {
    support::init();
    let db = TestDb::new(Backend::Postgres).await;
    let acme = db.store.create_org("acme", "Acme Inc.").await.unwrap().id;
    let mut proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let store = Store::connect(&StoreOptions { url, max_connections: 4, connect_timeout: Duration::from_secs(30) })
        .await
        .unwrap();
    let daemon = TestDaemon::start(store.clone()).await;
    let tts = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(wav_24k(200), "audio/wav"))
        .mount(&tts)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "scripted".into();
    config.responder.provider = "rules".into();
    config.tts.provider = "openai".into();
    config.tts.url = format!("{}/v1", tts.uri());
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let conversations = Conversations::new(
        daemon.publisher.clone(),
        Providers::from_config(&config).unwrap(),
        Settings::from_config(&config),
        None,
    );
    assert_eq!(conversations.preload_orgs().await.unwrap(), 1);
    let agi = TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default()).await;
    db.store.create_org("globex", "Globex").await.unwrap();

    proxy.stop();
    let caller = Caller::new(vec![Line::Say("hello".into()), Line::Say("goodbye".into())], "acme");
    let log = tokio::time::timeout(Duration::from_secs(25), caller.call(agi.addr))
        .await
        .expect("the call never waits on the database")
        .unwrap();
    assert_eq!(log.commands.iter().filter(|c| c.starts_with("RECORD FILE")).count(), 2, "{:#?}", log.commands);
    assert!(log.variables.contains(&("ASTERAI_STATUS".into(), "ok".into())), "{:?}", log.variables);
    let call_id = log.variables.iter().find(|(n, _)| n == "ASTERAI_CALL_ID").unwrap().1.clone();
    let stranger = Caller::new(vec![Line::Say("hello".into())], "globex");
    let refused = tokio::time::timeout(Duration::from_secs(25), stranger.call(agi.addr)).await.unwrap().unwrap();
    assert!(refused.variables.contains(&("ASTERAI_STATUS".into(), "unavailable".into())), "{:?}", refused.variables);

    proxy.restart().await;
    conversations.records().close().await;
    let call =
        calls_until(&db.store, acme, "the call's record", |c| c.iter().any(|c| c.ended_at.is_some())).await.remove(0);
    assert_eq!((call.id.as_str(), call.status, call.turns), (call_id.as_str(), CallStatus::Completed, 2));
    daemon.stop().await;
}
