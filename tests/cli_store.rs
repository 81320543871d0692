//! The store and feed commands through the real binary: migrate, org, token, calls, feed.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use asterai::store::{CallStatus, Latency, NewTurn, Store};
use support::daemon::command;
use support::http::TestDaemon;

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = command(dir).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

async fn open(dir: &std::path::Path) -> Store {
    let url = format!("sqlite://{}", dir.join("asterai.db").display());
    Store::connect(&support::db::options(&url)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_org_token_and_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(dir.path(), &["migrate"]);
    assert!(ok, "{err}");
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count();
    assert!(out.contains(&format!("sqlite: applied {migrations} migration(s)")), "{out}");
    let (ok, out, _) = run(dir.path(), &["migrate"]);
    assert!(ok && out.contains("applied 0 migration(s)"), "{out}");

    assert!(run(dir.path(), &["org", "create", "acme", "--name", "Acme Inc."]).0);
    let (ok, _, err) = run(dir.path(), &["org", "create", "acme"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, _) = run(dir.path(), &["org", "list"]);
    assert!(ok && out.contains("acme") && out.contains("Acme Inc."), "{out}");

    let (ok, out, err) = run(dir.path(), &["token", "create", "--org", "acme", "--name", "wallboard"]);
    assert!(ok, "{err}");
    let token = out.lines().last().unwrap().to_owned();
    assert!(token.starts_with("ast_") && !token.contains(' '), "the last line is the token alone: {out}");
    let id = token.split('_').nth(1).unwrap().to_owned();
    assert!(out.contains("scopes monitor;"), "a token is monitor-only by default: {out}");
    let (ok, out, err) = run(
        dir.path(),
        &["token", "create", "--org", "acme", "--name", "dialer", "--scope", "dial", "--scope", "admin"],
    );
    assert!(ok && out.contains("scopes dial,admin;"), "{out}{err}");
    let (ok, out, err) = run(dir.path(), &["token", "create", "--org", "acme", "--scope", "monitor,dial"]);
    assert!(ok && out.contains("scopes monitor,dial;"), "{out}{err}");
    let (ok, _, err) = run(dir.path(), &["token", "create", "--org", "acme", "--scope", "root"]);
    assert!(!ok && err.contains("--scope") && err.contains("\"root\""), "{err}");
    let (ok, out, _) = run(dir.path(), &["token", "list", "--org", "acme"]);
    assert!(ok && out.contains(&id) && out.contains("wallboard") && out.contains("active"), "{out}");
    assert!(out.contains("scopes") && out.contains("dial,admin"), "token list shows the scopes: {out}");
    assert!(!out.contains(&token), "token list never shows the secret");
    let (ok, out, _) = run(dir.path(), &["token", "list", "--org", "acme", "--json"]);
    assert!(ok && !out.contains("secret_hash") && !out.contains("hmac"), "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(listed.as_array().unwrap().iter().any(|t| t["scopes"] == serde_json::json!(["dial", "admin"])), "{out}");
    let (ok, err) = {
        let (ok, _, err) = run(dir.path(), &["token", "create", "--org", "nope"]);
        (ok, err)
    };
    assert!(!ok && err.contains("no organization \"nope\""), "{err}");

    // A call with turns, written as the daemon would.
    let store = open(dir.path()).await;
    let daemon = TestDaemon::start(store.clone()).await;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let (call, _) = daemon.publish(acme.id, "+15551230000").await;
    daemon.publisher.call_status(acme.id, &call, CallStatus::InProgress, None).await.unwrap();
    daemon
        .publisher
        .conversation_turn(
            acme.id,
            &NewTurn {
                call_id: call.clone(),
                turn: 1,
                caller: "who is this?".into(),
                agent: "This is Ava, an AI assistant calling for Acme.".into(),
                emotion: Some("neutral".into()),
                intent: Some("question".into()),
                confidence: Some(0.7),
                latency: Latency { total: 1234, ..Latency::default() },
                interrupted: false,
                tools: Vec::new(),
            },
        )
        .await
        .unwrap();
    let (ok, out, err) = run(dir.path(), &["calls", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains(&call) && out.contains("in_progress"), "{out}");
    let (ok, out, _) = run(dir.path(), &["calls", "list", "--status", "completed"]);
    assert!(ok && !out.contains(&call), "{out}");
    // A second organization: `calls list` asks which, `--all` lists both, each call with its own.
    let globex = store.create_org("globex", "Globex").await.unwrap();
    let (other, _) = daemon.publish(globex.id, "+15551239999").await;
    let (ok, _, err) = run(dir.path(), &["calls", "list"]);
    assert!(!ok && err.contains("(acme, globex)") && err.contains("--all"), "{err}");
    let (ok, out, err) = run(dir.path(), &["calls", "list", "--all"]);
    assert!(ok, "{err}");
    let row = |id: &str| out.lines().find(|l| l.contains(id)).unwrap_or_default().to_owned();
    assert!(row(&call).starts_with("acme ") && row(&other).starts_with("globex "), "{out}");
    let (ok, out, _) = run(dir.path(), &["calls", "list", "--all", "--json", "--limit", "1"]);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && listed.as_array().unwrap().len() == 1, "{out}");
    assert!(!run(dir.path(), &["calls", "list", "--all", "--org", "acme"]).0, "--all or --org, not both");
    let (ok, out, _) = run(dir.path(), &["calls", "show", &call]);
    assert!(
        ok && out.contains("caller: who is this?") && out.contains("agent:  This is Ava") && out.contains("1234 ms"),
        "{out}"
    );
    let (ok, out, _) = run(dir.path(), &["calls", "show", &call, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && json["turns"][0]["caller"] == "who is this?");

    assert!(run(dir.path(), &["token", "revoke", &id]).1.contains("revoked"));
    let response = reqwest::Client::new().get(daemon.url("/v1/calls")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 401, "a revoked token stops working at once");
    daemon.stop().await;
}

/// `asterai feed` prints every event once, in order, across a restart of the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_command_reconnects_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.migrate().await.unwrap();
    let daemon = TestDaemon::start(store.clone()).await;
    let addr = daemon.addr;
    let token = daemon.token("acme").await;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;

    let mut child = Command::new(support::daemon::binary())
        .args(["feed", "--json", "--since", "0", "--url", &format!("http://{addr}")])
        .env("ASTERAI_TOKEN", &token)
        .env("ASTERAI_DAEMON_DATA_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut published = Vec::new();
    for _ in 0..3 {
        published.push(daemon.publish(acme, "+15551230000").await.1);
    }
    let mut seen = Vec::new();
    let mut take = |n: usize| {
        for _ in 0..n {
            let line = rx.recv_timeout(Duration::from_secs(15)).expect("a feed line");
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            seen.push(event["id"].as_i64().unwrap());
        }
    };
    take(3);
    daemon.stop().await;
    // While the daemon is down, more events are written; then it comes back on the same port.
    let offline = TestDaemon::start(store.clone()).await;
    for _ in 0..2 {
        published.push(offline.publish(acme, "+15551230001").await.1);
    }
    offline.stop().await;
    let back = TestDaemon::start_with(store.clone(), support::http::feed_config(), addr).await;
    for _ in 0..2 {
        published.push(back.publish(acme, "+15551230002").await.1);
    }
    take(4);
    assert_eq!(seen, published);
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    assert!(stderr.contains("resuming after"), "{stderr}");
    assert!(stderr.contains(&format!("feed: connected to http://{addr}, from event #0 on")), "{stderr}");

    // A wrong token is a clear error and exit, not an endless retry.
    let out = Command::new(support::daemon::binary())
        .args([
            "feed",
            "--token",
            "ast_0123456789abcdef_nopenopenopenopenopenopenopenopenopenope",
            "--url",
            &format!("http://{addr}"),
        ])
        .env("ASTERAI_DAEMON_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token (401)"));
    // So is a token without the monitor scope.
    let dial_only = back.token_with("acme", asterai::auth::Scopes::parse("dial").unwrap()).await;
    let out = Command::new(support::daemon::binary())
        .args(["feed", "--token", &dial_only, "--url", &format!("http://{addr}")])
        .env("ASTERAI_DAEMON_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused the token (403)") && stderr.contains("`monitor` scope"), "{stderr}");
    back.stop().await;
}

/// `asterai feed --url wss://…` through a TLS proxy whose certificate a private CA signed: with
/// `--ca-file` it follows the feed; without it, or with another CA, it stops at once and says
/// which flag fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_command_over_tls_with_a_private_ca() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.migrate().await.unwrap();
    let daemon = TestDaemon::start(store.clone()).await;
    let token = daemon.token("acme").await;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;
    let certs = tempfile::tempdir().unwrap();
    support::tls::certificates(certs.path());
    let proxy = support::tls::terminating_proxy(certs.path(), daemon.addr).await;
    let url = format!("wss://{proxy}");
    let ca = certs.path().join("ca.pem");

    let mut child = Command::new(support::daemon::binary())
        .args(["feed", "--json", "--since", "0", "--url", &url, "--ca-file", ca.to_str().unwrap()])
        .env("ASTERAI_TOKEN", &token)
        .env("ASTERAI_DAEMON_DATA_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (call, event) = daemon.publish(acme, "+15551230000").await;
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("a feed line over TLS");
    let seen: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!((seen["id"].as_i64(), seen["call_id"].as_str()), (Some(event), Some(call.as_str())), "{line}");
    let _ = child.kill();
    let _ = child.wait();

    // Without the CA the public roots refuse the certificate: one clear error, exit 1.
    let refused = |extra: &[&str]| {
        let out = Command::new(support::daemon::binary())
            .args([&["feed", "--token", &token, "--url", &url][..], extra].concat())
            .env("ASTERAI_DAEMON_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&[]);
    assert!(stderr.contains("not trusted by the public web roots") && stderr.contains("--ca-file"), "{stderr}");
    // Another CA does not vouch for it either.
    let other = tempfile::tempdir().unwrap();
    support::tls::certificates(other.path());
    let other_ca = other.path().join("ca.pem");
    let stderr = refused(&["--ca-file", other_ca.to_str().unwrap()]);
    assert!(stderr.contains("not signed by --ca-file"), "{stderr}");
    // A file that holds no certificate is named.
    let stderr = refused(&["--ca-file", certs.path().join("server.ext").to_str().unwrap()]);
    assert!(stderr.contains("server.ext: no PEM certificate in it"), "{stderr}");
    daemon.stop().await;
}
