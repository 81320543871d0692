//! The FastAGI server, in-process on an ephemeral port.

use std::net::SocketAddr;
use std::time::Duration;

use asterai::agi::{AgiServer, DrainReport, Router, ServerConfig, Shutdown};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<DrainReport>,
}

impl TestServer {
    pub async fn start(router: Router, config: ServerConfig) -> TestServer {
        Self::start_with_grace(router, config, Duration::from_secs(10)).await
    }

    pub async fn start_with_grace(router: Router, config: ServerConfig, grace: Duration) -> TestServer {
        Self::start_with_shutdown(router, config, grace, Duration::from_secs(5)).await
    }

    pub async fn start_with_shutdown(
        router: Router,
        config: ServerConfig,
        grace: Duration,
        wrap_up: Duration,
    ) -> TestServer {
        let server = AgiServer::bind("127.0.0.1:0".parse().unwrap(), router, config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = Shutdown::new(stop.clone(), grace).wrap_up_deadline(wrap_up);
        let handle = tokio::spawn(server.run(shutdown));
        TestServer { addr, stop, handle }
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn stop(self) -> DrainReport {
        self.stop.cancel();
        self.handle.await.expect("server task")
    }

    /// Stops accepting without waiting; returns the drain's handle.
    pub fn begin_stop(self) -> JoinHandle<DrainReport> {
        self.stop.cancel();
        self.handle
    }
}

/// The environment block of a typical session on `script` (the part after `host:port/`).
pub fn env_block(script: &str, uniqueid: &str) -> String {
    format!(
        "agi_network: yes\nagi_network_script: {script}\nagi_request: agi://127.0.0.1:4573/{script}\n\
         agi_channel: PJSIP/trunk-00000001\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: {uniqueid}\n\
         agi_version: 22.10.1\nagi_callerid: +15551230000\nagi_calleridname: Test Caller\nagi_callingpres: 0\n\
         agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 5550100\nagi_rdnis: unknown\n\
         agi_context: from-trunk\nagi_extension: 5550100\nagi_priority: 2\nagi_enhanced: 0.0\n\
         agi_accountcode: \nagi_threadid: 140512191747776\n\n"
    )
}

/// Plays Asterisk for one `health` session and checks the three commands and the close.
pub async fn health_session(addr: SocketAddr) -> Result<(), String> {
    use super::fake_asterisk::FakeAsterisk;
    let mut fake = FakeAsterisk::connect(addr).await;
    fake.write(env_block("health", "1.1").as_bytes()).await.map_err(|e| e.to_string())?;
    for (expected, reply) in [
        ("VERBOSE \"asterai ok\" 1", "200 result=1"),
        ("GET VARIABLE CHANNEL", "200 result=1 (PJSIP/trunk-00000001)"),
        ("SET VARIABLE ASTERAI_HEALTH ok", "200 result=1"),
    ] {
        let line = fake.read_line().await?.ok_or_else(|| format!("closed before {expected:?}"))?;
        if !super::fake_asterisk::same_command(&line, expected) {
            return Err(format!("health: got {line:?}, expected {expected:?}"));
        }
        fake.write(format!("{reply}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    }
    fake.expect_close().await
}
