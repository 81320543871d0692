//! The real `asterai` binary as a child process, for tests of the command line and signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_asterai")
}

/// `asterai` with a clean environment: no ASTERAI_* from the caller, a private data directory.
pub fn command(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("ASTERAI_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("ASTERAI_DAEMON_DATA_DIR", data_dir);
    cmd
}

/// A running `asterai serve`.
pub struct Daemon {
    pub child: Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `asterai serve` on ephemeral ports with extra arguments and environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = command(dir.path());
        cmd.args(args)
            .arg("serve")
            .env("ASTERAI_AGI_LISTEN", "127.0.0.1:0")
            .env("ASTERAI_HTTP_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::spawn(cmd, dir)
    }

    /// Starts a prepared command (stderr is captured) that owns `dir`.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Daemon {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start asterai");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Daemon { child, stderr, dir }
    }

    /// Waits for a stderr line containing every part.
    pub fn wait_for_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(line) = self.stderr.lock().unwrap().iter().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no line with {parts:?} in stderr:\n{}", self.stderr.lock().unwrap().join("\n"));
    }

    /// The address a listener logged, from its `… listening addr=…` line.
    pub fn listener(&self, what: &str) -> SocketAddr {
        let line = self.wait_for_line(&[what, "listening"]);
        let at = match (line.find("addr="), line.find("\"addr\":\"")) {
            (Some(at), _) => at + 5,
            (None, Some(at)) => at + 8,
            _ => panic!("no address in the listener line {line:?}"),
        };
        let addr: String = line[at..].chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',').collect();
        addr.trim_matches('"').parse().unwrap_or_else(|_| panic!("address in {line:?}"))
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("asterai did not exit within {limit:?}; stderr:\n{}", self.stderr.lock().unwrap().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
