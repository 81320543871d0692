//! The FastAGI listener against broken and hostile peers, its limits, and graceful shutdown.
//! Every hostile case checks the logged reason and that a normal session on the same daemon
//! still succeeds afterwards.

mod support;

use std::time::Duration;

use asterai::agi::command::{GetVariable, StreamFile, Verbose};
use asterai::agi::{AgiError, AgiSession, Router, ServerConfig, routes};
use support::agi::{TestServer, env_block, health_session};
use support::fake_asterisk::FakeAsterisk;
use support::logs::Logs;
use tokio::sync::mpsc;

fn router() -> Router {
    Router::new().route("health", routes::health)
}

/// A router whose `probe` route sends one command and reports what came back.
fn probe_router<C>(command: fn() -> C) -> (Router, mpsc::UnboundedReceiver<Result<C::Output, AgiError>>)
where
    C: asterai::agi::Command + Send + 'static,
    C::Output: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let probe = move |session: AgiSession| {
        let tx = tx.clone();
        async move {
            let result = session.send(command()).await;
            let _ = tx.send(result);
            Ok(())
        }
    };
    (router().route("probe", probe), rx)
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("a value")
}

#[tokio::test]
async fn health_route_answers() {
    let server = TestServer::start(router(), ServerConfig::default()).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn unknown_route_says_so_and_ends() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(router(), ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("nowhere\"x?org=acme", "1.2").as_bytes()).await.unwrap();
    let line = fake.read_line().await.unwrap().unwrap();
    assert!(support::fake_asterisk::same_command(&line, "VERBOSE \"asterai: unknown route nowhere\\\"x\" 1"), "{line}");
    fake.write(b"200 result=1\n").await.unwrap();
    let line = fake.read_line().await.unwrap().unwrap();
    assert_eq!(line, "SET VARIABLE ASTERAI_STATUS unknown_route");
    fake.write(b"200 result=1\n").await.unwrap();
    fake.expect_close().await.unwrap();
    logs.wait_for(&["WARN", "unknown route", "agi_uniqueid=\"1.2\"", "agi_channel=\"PJSIP/trunk-00000001\""]).await;
    server.stop().await;
}

#[tokio::test]
async fn over_long_environment_line() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(router(), ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    let long = format!("agi_network: yes\nagi_callerid: {}\n", "9".repeat(9000));
    fake.write(long.as_bytes()).await.unwrap();
    fake.expect_close().await.unwrap();
    logs.wait_for(&["AGI handshake failed", "line longer than 8192 bytes"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn over_long_reply_line() {
    let (logs, _guard) = Logs::capture();
    let (router, mut results) = probe_router(|| GetVariable::new("X"));
    let server = TestServer::start(router, ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("probe", "2.1").as_bytes()).await.unwrap();
    fake.read_line().await.unwrap().unwrap();
    // Sent in pieces with no newline: the daemon must not buffer it without bound.
    for _ in 0..10 {
        if fake.write(format!("200 result=1 ({})", "x".repeat(1000)).as_bytes()).await.is_err() {
            break;
        }
    }
    let result = recv(&mut results).await;
    assert!(
        matches!(&result, Err(AgiError::Closed { reason }) if reason.contains("line longer than 8192 bytes")),
        "{result:?}"
    );
    fake.expect_close().await.unwrap();
    logs.wait_for(&["WARN", "AGI session ended after a fault", "line longer than 8192", "agi_uniqueid=\"2.1\""]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn non_utf8_bytes() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(router(), ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(b"agi_network: yes\nagi_calleridname: \xff\xfe\xfd\n\n").await.unwrap();
    fake.expect_close().await.unwrap();
    logs.wait_for(&["AGI handshake failed", "not valid UTF-8"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn missing_blank_line_then_a_reply() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(router(), ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(b"agi_network: yes\nagi_uniqueid: 3.1\n200 result=0\n").await.unwrap();
    fake.expect_close().await.unwrap();
    logs.wait_for(&["AGI handshake failed", "empty line that ends the environment", "200 result=0"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn missing_blank_line_then_close() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(router(), ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(b"agi_network: yes\nagi_uniqueid: 3.2\n").await.unwrap();
    fake.close().await;
    logs.wait_for(&["AGI handshake failed", "closed after 2 environment variables"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn peer_stalls_mid_handshake() {
    let (logs, _guard) = Logs::capture();
    let config = ServerConfig { handshake_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let server = TestServer::start(router(), config).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(b"agi_network: yes\nagi_network_scr").await.unwrap();
    fake.expect_close().await.unwrap();
    logs.wait_for(&["AGI handshake not complete within agi.handshake_timeout"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn peer_vanishes_mid_command() {
    let (logs, _guard) = Logs::capture();
    let (router, mut results) = probe_router(|| StreamFile::new("hello-world"));
    let server = TestServer::start(router, ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("probe", "4.1").as_bytes()).await.unwrap();
    assert_eq!(fake.read_line().await.unwrap().unwrap(), "STREAM FILE hello-world \"\"");
    drop(fake);
    let result = recv(&mut results).await;
    assert!(
        matches!(&result, Err(AgiError::Closed { reason }) if reason.contains("Asterisk closed the connection") && reason.contains("STREAM FILE")),
        "{result:?}"
    );
    logs.wait_for(&["AGI session", "agi_uniqueid=\"4.1\""]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn garbage_instead_of_a_reply() {
    let (logs, _guard) = Logs::capture();
    let (router, mut results) = probe_router(|| GetVariable::new("X"));
    let server = TestServer::start(router, ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("probe", "5.1").as_bytes()).await.unwrap();
    fake.read_line().await.unwrap().unwrap();
    fake.write(b"<html>hello</html>\n").await.unwrap();
    let result = recv(&mut results).await;
    assert!(matches!(&result, Err(AgiError::Closed { reason }) if reason.contains("expected a reply")), "{result:?}");
    fake.expect_close().await.unwrap();
    logs.wait_for(&["WARN", "protocol error", "<html>hello</html>", "agi_uniqueid=\"5.1\""]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn no_reply_in_time_closes_the_session() {
    let (logs, _guard) = Logs::capture();
    let (router, mut results) = probe_router(|| Verbose::new("x", 1));
    let config = ServerConfig { reply_grace: Duration::from_millis(200), ..ServerConfig::default() };
    let server = TestServer::start(router, config).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("probe", "6.1").as_bytes()).await.unwrap();
    fake.read_line().await.unwrap().unwrap();
    let result = recv(&mut results).await;
    assert!(matches!(result, Err(AgiError::Timeout { .. })), "{result:?}");
    fake.expect_close().await.unwrap();
    logs.wait_for(&["WARN", "no reply to VERBOSE within"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_closes_only_its_session() {
    let (logs, _guard) = Logs::capture();
    let router = router().route("boom", |_session: AgiSession| async move {
        if true {
            panic!("handler bug");
        }
        Ok(())
    });
    let server = TestServer::start(router, ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("boom", "7.1").as_bytes()).await.unwrap();
    fake.expect_close().await.unwrap();
    logs.wait_for(&["ERROR", "panicked"]).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn session_limit_closes_new_connections_at_once() {
    let (logs, _guard) = Logs::capture();
    let (router, mut results) = probe_router(|| GetVariable::new("HOLD"));
    let config = ServerConfig { max_sessions: 1, ..ServerConfig::default() };
    let server = TestServer::start(router, config).await;
    let mut holder = FakeAsterisk::connect(server.addr).await;
    holder.write(env_block("probe", "8.1").as_bytes()).await.unwrap();
    holder.read_line().await.unwrap().unwrap();

    let mut refused = FakeAsterisk::connect(server.addr).await;
    refused.expect_close().await.unwrap();
    logs.wait_for(&["WARN", "AGI session limit reached", "max_sessions=1"]).await;

    holder.write(b"200 result=1 (held)\n").await.unwrap();
    assert_eq!(recv(&mut results).await.unwrap(), Some("held".to_owned()));
    holder.expect_close().await.unwrap();
    // The slot is free again.
    let mut again = None;
    for _ in 0..100 {
        if health_session(server.addr).await.is_ok() {
            again = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a session after the limit was released");
    server.stop().await;
}

#[tokio::test]
async fn peers_outside_the_allow_list_are_closed() {
    let (logs, _guard) = Logs::capture();
    let config = ServerConfig { allowed_peers: vec!["10.0.0.0/8".parse().unwrap()], ..ServerConfig::default() };
    let server = TestServer::start(router(), config).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.expect_close().await.unwrap();
    logs.wait_for(&["not in agi.allowed_peers", "127.0.0.1"]).await;
    server.stop().await;

    let config = ServerConfig { allowed_peers: vec!["127.0.0.0/8".parse().unwrap()], ..ServerConfig::default() };
    let server = TestServer::start(router(), config).await;
    health_session(server.addr).await.unwrap();
    server.stop().await;
}

/// However many callers share a session, Asterisk sees one command at a time.
#[tokio::test]
async fn one_command_in_flight() {
    let (tx, mut done) = mpsc::unbounded_channel();
    let router = router().route("many", move |session: AgiSession| {
        let tx = tx.clone();
        async move {
            let sends = (0..5).map(|i| {
                let session = session.clone();
                async move { session.send(GetVariable::new(format!("V{i}"))).await }
            });
            let results = futures_util::future::join_all(sends).await;
            let _ = tx.send(results.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>());
            Ok(())
        }
    });
    let server = TestServer::start(router, ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut read = tokio::io::BufReader::new(read);
    write.write_all(env_block("many", "9.1").as_bytes()).await.unwrap();
    for _ in 0..5 {
        let mut line = String::new();
        read.read_line(&mut line).await.unwrap();
        let name = line.trim_end().strip_prefix("GET VARIABLE ").unwrap().to_owned();
        // Nothing else may arrive before this command is answered.
        let mut more = String::new();
        let early = tokio::time::timeout(Duration::from_millis(100), read.read_line(&mut more)).await;
        assert!(early.is_err(), "a second command arrived before the reply: {more:?}");
        write.write_all(format!("200 result=1 (value of {name})\n").as_bytes()).await.unwrap();
    }
    let values = recv(&mut done).await;
    for (i, value) in values.iter().enumerate() {
        assert_eq!(value.as_deref(), Some(format!("value of V{i}").as_str()));
    }
    server.stop().await;
}

/// A caller that stops waiting does not put replies out of step: the next command waits for the
/// abandoned reply, which is discarded.
#[tokio::test]
async fn an_abandoned_reply_is_not_taken_for_the_next() {
    let (tx, mut done) = mpsc::unbounded_channel();
    let router = router().route("abandon", move |session: AgiSession| {
        let tx = tx.clone();
        async move {
            let gave_up =
                tokio::time::timeout(Duration::from_millis(50), session.send(StreamFile::new("long-prompt"))).await;
            assert!(gave_up.is_err());
            let value = session.send(GetVariable::new("AFTER")).await;
            let _ = tx.send(value);
            Ok(())
        }
    });
    let server = TestServer::start(router, ServerConfig::default()).await;
    let mut fake = FakeAsterisk::connect(server.addr).await;
    fake.write(env_block("abandon", "10.1").as_bytes()).await.unwrap();
    assert_eq!(fake.read_line().await.unwrap().unwrap(), "STREAM FILE long-prompt \"\"");
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.write(b"200 result=0 endpos=8000\n").await.unwrap();
    assert_eq!(fake.read_line().await.unwrap().unwrap(), "GET VARIABLE AFTER");
    fake.write(b"200 result=1 (yes)\n").await.unwrap();
    assert_eq!(recv(&mut done).await.unwrap(), Some("yes".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_sessions_finish_and_refuses_new_ones() {
    let (router, mut results) = probe_router(|| GetVariable::new("SLOW"));
    let server = TestServer::start(router, ServerConfig::default()).await;
    let addr = server.addr;
    let mut fake = FakeAsterisk::connect(addr).await;
    fake.write(env_block("probe", "11.1").as_bytes()).await.unwrap();
    fake.read_line().await.unwrap().unwrap();

    let drained = server.begin_stop();
    // The listener closes: new connections are refused.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections are refused during shutdown");

    // The session in flight completes normally.
    fake.write(b"200 result=1 (done)\n").await.unwrap();
    assert_eq!(recv(&mut results).await.unwrap(), Some("done".to_owned()));
    fake.expect_close().await.unwrap();
    let report = drained.await.unwrap();
    assert_eq!((report.in_flight, report.told_to_wrap_up, report.aborted), (1, 0, 0));
}

#[tokio::test]
async fn after_the_grace_period_sessions_are_told_to_wrap_up() {
    let (tx, mut done) = mpsc::unbounded_channel();
    let router = router()
        .route("polite", move |session: AgiSession| {
            let tx = tx.clone();
            async move {
                session.wrap_up().cancelled().await;
                let _ = tx.send("wrapped up");
                Ok(())
            }
        })
        .route("stubborn", |_session: AgiSession| async move {
            std::future::pending::<()>().await;
            Ok(())
        });
    let server = TestServer::start_with_shutdown(
        router,
        ServerConfig::default(),
        Duration::from_millis(100),
        Duration::from_millis(300),
    )
    .await;
    let mut polite = FakeAsterisk::connect(server.addr).await;
    polite.write(env_block("polite", "12.1").as_bytes()).await.unwrap();
    let mut stubborn = FakeAsterisk::connect(server.addr).await;
    stubborn.write(env_block("stubborn", "12.2").as_bytes()).await.unwrap();
    // Both sessions are running once the handshake is done; give the listener a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = server.stop().await;
    assert_eq!(recv(&mut done).await, "wrapped up");
    assert_eq!((report.in_flight, report.told_to_wrap_up, report.aborted), (2, 2, 1));
    polite.expect_close().await.unwrap();
    stubborn.expect_close().await.unwrap();
}
