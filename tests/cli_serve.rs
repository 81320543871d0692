//! The `asterai` binary: help, configuration errors, logging, and signals.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::agi::{env_block, health_session};
use support::daemon::{Daemon, command};
use support::fake_asterisk::FakeAsterisk;

#[test]
fn help_describes_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Asterisk"), "{help}");
    let subcommands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(subcommands.contains(&"serve".to_owned()), "{subcommands:?}");
    for sub in subcommands {
        let out = command(dir.path()).args([sub.as_str(), "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8(out.stdout).unwrap();
        let about = text.lines().next().unwrap_or_default();
        assert!(about.len() > 15, "`asterai {sub} --help` says what it does: {about:?}");
    }
}

#[test]
fn a_bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asterai.toml");
    std::fs::write(&file, "[agi]\nmax_sesions = 5\n").unwrap();
    let out = command(dir.path()).arg("--config").arg(&file).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("agi.max_sesions") && err.contains("unknown key") && err.contains("max_sessions"), "{err}");

    let out = command(dir.path()).env("ASTERAI_AGI_HANDSHAKE_TIMEOUT", "soon").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("ASTERAI_AGI_HANDSHAKE_TIMEOUT") && err.contains("expected a duration"), "{err}");

    let out = command(dir.path()).arg("--config").arg(dir.path().join("missing.toml")).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read config file"));
}

#[test]
fn config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        command(dir.path()).env("ASTERAI_AGI_MAX_SESSIONS", "77").arg("config").stderr(Stdio::null()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_sessions = 77"), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:4573\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_session_in_flight_then_exits_0() {
    let mut daemon = Daemon::start(&[], &[]);
    let addr = daemon.listener("FastAGI");
    health_session(addr).await.unwrap();

    // A session in flight: the daemon waits for the reply to VERBOSE.
    let mut fake = FakeAsterisk::connect(addr).await;
    fake.write(env_block("health", "20.1").as_bytes()).await.unwrap();
    fake.read_line().await.unwrap().unwrap();

    daemon.signal("TERM");
    daemon.wait_for_line(&["shutting down", "SIGTERM"]);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are refused after SIGTERM");

    for reply in ["200 result=1\n", "200 result=1 (PJSIP/x)\n", "200 result=1\n"] {
        fake.write(reply.as_bytes()).await.unwrap();
        if reply.contains("PJSIP") {
            continue;
        }
        let _ = fake.read_line().await;
    }
    let status = tokio::task::spawn_blocking(move || daemon.wait(Duration::from_secs(20))).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_session_identity() {
    let daemon = Daemon::start(&["--log-format", "json", "--log-level", "debug"], &[]);
    let addr = daemon.listener("FastAGI");
    let mut fake = FakeAsterisk::connect(addr).await;
    fake.write(env_block("health", "21.5").as_bytes()).await.unwrap();
    fake.read_line().await.unwrap();
    fake.write(b"200 result=1\n").await.unwrap();
    fake.read_line().await.unwrap();
    fake.write(b"200 result=1 (PJSIP/trunk-00000001)\n").await.unwrap();
    fake.read_line().await.unwrap();
    fake.write(b"200 result=1\n").await.unwrap();
    fake.expect_close().await.unwrap();
    let line = daemon.wait_for_line(&["AGI session ended"]);
    let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(json["span"]["agi_uniqueid"], "21.5", "{line}");
    assert_eq!(json["span"]["agi_channel"], "PJSIP/trunk-00000001", "{line}");
    for line in daemon.stderr.lock().unwrap().iter() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

/// Under systemd (`Type=notify`): READY=1 only once the listeners answer, WATCHDOG=1 while the
/// daemon runs, STOPPING=1 when a shutdown begins.
#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let socket_env = socket_path.display().to_string();
    // systemd names the process the watchdog is for; `exec` keeps the shell's pid.
    let data = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" serve", support::daemon::binary()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ASTERAI_DAEMON_DATA_DIR", data.path())
        .env("ASTERAI_AGI_LISTEN", "127.0.0.1:0")
        .env("ASTERAI_HTTP_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &socket_env)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null());
    let mut daemon = Daemon::spawn(cmd, data);
    let mut messages = Vec::new();
    let receive = |messages: &mut Vec<String>, want: &str| {
        let mut buf = [0u8; 4096];
        while !messages.iter().any(|m: &String| m.lines().any(|l| l == want)) {
            let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no {want} from asterai ({e}); got {messages:?}"));
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    receive(&mut messages, "READY=1");
    // READY comes after both listeners logged, and they answer.
    let agi = daemon.listener("FastAGI");
    let http = daemon.listener("HTTP");
    assert!(std::net::TcpStream::connect(agi).is_ok() && std::net::TcpStream::connect(http).is_ok());
    let ready = messages.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains(&format!("STATUS=FastAGI on {agi}, HTTP on {http}")), "{ready}");
    receive(&mut messages, "WATCHDOG=1");
    daemon.signal("TERM");
    receive(&mut messages, "STOPPING=1");
    assert!(daemon.wait(Duration::from_secs(20)).success());
}

/// Secrets from the configuration and API tokens never appear in the log, even at debug level,
/// whether a token was good, wrong, in a header or in a query string.
#[tokio::test]
async fn no_secret_or_token_reaches_the_log() {
    support::init();
    let keys = [
        ("ASTERAI_STT_API_KEY", "sk-stt-secret-0001"),
        ("ASTERAI_RESPONDER_API_KEY", "sk-llm-secret-0002"),
        ("ASTERAI_TTS_API_KEY", "sk-tts-secret-0003"),
    ];
    let mut daemon = Daemon::start(&["--log-format", "json", "--log-level", "debug"], &keys);
    let http = daemon.listener("HTTP");
    let data_dir = daemon.dir.path().to_owned();
    let cli = |args: &[&str]| {
        let out = command(&data_dir).envs(keys).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    cli(&["org", "create", "acme"]);
    let (out, token_log) = cli(&["--log-level", "debug", "token", "create", "--org", "acme"]);
    let token = out.lines().last().unwrap().trim().to_owned();
    let secret_part = token.rsplit('_').next().unwrap().to_owned();
    let wrong = "ast_00000000000000ff_ThisIsNotTheSecret123";

    let client = reqwest::Client::new();
    let base = format!("http://{http}");
    let good = client.get(format!("{base}/v1/calls")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(good.status(), 200);
    // A token in a REST URL is refused (it would end up in proxy logs), and not logged either.
    let query = client.get(format!("{base}/v1/calls?token={token}")).send().await.unwrap();
    assert_eq!(query.status(), 401);
    assert!(query.text().await.unwrap().contains("accepted only by the WebSocket upgrades"));
    for bad in [
        client.get(format!("{base}/v1/calls")).bearer_auth(wrong),
        client.get(format!("{base}/v1/calls?token={wrong}")),
        client.get(format!("{base}/v1/feed?token={wrong}")),
        client.get(format!("{base}/v1/calls/nope?token={token}")),
    ] {
        assert!(!bad.send().await.unwrap().status().is_success());
    }
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(20)).success());

    let log = daemon.stderr.lock().unwrap().join("\n") + "\n" + &token_log;
    assert!(log.contains("HTTP request"), "debug logging was on:\n{log}");
    for (what, secret) in keys
        .iter()
        .map(|(k, v)| (*k, *v))
        .chain([("token", secret_part.as_str()), ("wrong token", "ThisIsNotTheSecret123")])
    {
        assert!(!log.contains(secret), "the {what} appears in the log:\n{log}");
    }
}

/// A PostgreSQL error that waiting cannot fix (no such database, no such role) stops start-up
/// with a message saying so; a server that refuses connections (not up yet) is waited for.
#[test]
fn a_database_error_that_cannot_heal_stops_start_up() {
    for (url, says) in [
        ("postgres://postgres@127.0.0.1:5432/asterai_no_such_database", "does not exist"),
        ("postgres://asterai_no_such_role@127.0.0.1:5432/test", "asterai_no_such_role"),
    ] {
        let mut daemon = Daemon::start(&[], &[("ASTERAI_DATABASE_URL", url)]);
        let status = daemon.wait(Duration::from_secs(60));
        let stderr = daemon.stderr.lock().unwrap().join("\n");
        assert!(!status.success(), "{url}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("waiting will not fix this") && stderr.contains("database.url"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("retrying"), "{url} is not retried: {stderr}");
    }
    // Nothing listens on port 1: that heals once PostgreSQL is up, so the daemon waits.
    let mut daemon = Daemon::start(&[], &[("ASTERAI_DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")]);
    daemon.wait_for_line(&["database unavailable", "retrying"]);
    daemon.signal("TERM");
    assert!(!daemon.wait(Duration::from_secs(20)).success(), "stopped while waiting for the database");
}

/// A SQLite path in a directory that does not exist is refused (no directory, no new database);
/// the data directory itself is created, parents and all.
#[test]
fn a_mistyped_sqlite_path_is_refused_and_the_data_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("var/lib/astreai/asterai.db");
    let out = command(dir.path())
        .args(["migrate"])
        .env("ASTERAI_DATABASE_URL", format!("sqlite://{}", typo.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("does not exist") && stderr.contains("database.url"), "{stderr}");
    assert!(!dir.path().join("var").exists(), "no directory was created");

    let data = dir.path().join("state/deep/asterai");
    let out = command(&data).args(["migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data.join("asterai.db").is_file(), "the data directory and its database were created");
}

/// `asterai config --keys | head -1` and `asterai completions bash | head`: a reader that went
/// away ends the command quietly, without a panic.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["config", "--keys"][..], &["config"], &["completions", "bash"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = command(dir.path()).args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?} says nothing: {stderr}");
    }
}
