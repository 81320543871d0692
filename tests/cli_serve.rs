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
