//! A fake Asterisk that replays a capture against the daemon's FastAGI listener.
//!
//! It connects like Asterisk, sends the captured environment, and for every command the daemon
//! sends checks it against the capture. Commands are compared as Asterisk reads them, through
//! its own argument parser ([`asterai::agi::command::split_args`]), so `"v1"` and `v1` are the
//! same argument, and command words are compared without regard to case, as Asterisk does.

use std::net::SocketAddr;
use std::time::Duration;

use asterai::agi::command::split_args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::transcript::{Step, Transcript};

/// How long the fake waits for the daemon.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Multi-word AGI command names, longest first, to know which words are the command.
const COMMANDS: &[&str] = &[
    "CONTROL STREAM FILE",
    "GET FULL VARIABLE",
    "WAIT FOR DIGIT",
    "DATABASE DELTREE",
    "DATABASE GET",
    "DATABASE PUT",
    "DATABASE DEL",
    "STREAM FILE",
    "RECORD FILE",
    "GET DATA",
    "GET OPTION",
    "GET VARIABLE",
    "SET VARIABLE",
    "SAY DIGITS",
    "SAY NUMBER",
    "CHANNEL STATUS",
    "SET MUSIC",
];

/// True when Asterisk would read `sent` and `expected` as the same command.
pub fn same_command(sent: &str, expected: &str) -> bool {
    let (a, b) = (split_args(sent), split_args(expected));
    if a.len() != b.len() {
        return false;
    }
    let upper = |v: &[String]| v.iter().map(|w| w.to_ascii_uppercase()).collect::<Vec<_>>().join(" ");
    let words = COMMANDS
        .iter()
        .find(|c| upper(&b).starts_with(&format!("{c} ")) || upper(&b) == **c)
        .map_or(1, |c| c.split(' ').count());
    a.iter().zip(&b).enumerate().all(|(i, (x, y))| if i < words { x.eq_ignore_ascii_case(y) } else { x == y })
}

/// A connection from the fake Asterisk to the daemon.
pub struct FakeAsterisk {
    reader: BufReader<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
    /// Every line the daemon sent, in order.
    pub received: Vec<String>,
}

impl FakeAsterisk {
    pub async fn connect(addr: SocketAddr) -> FakeAsterisk {
        let stream = TcpStream::connect(addr).await.expect("connect to the FastAGI listener");
        let (read, write) = stream.into_split();
        FakeAsterisk { reader: BufReader::new(read), writer: Some(write), received: Vec::new() }
    }

    /// Writes raw bytes; errors are returned (the daemon may have closed).
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(w) => w.write_all(bytes).await,
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Writes lines, each ended by `\n`, in one write.
    pub async fn send_lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        self.write(&bytes).await
    }

    /// The next line from the daemon without its `\n`; `None` at EOF.
    pub async fn read_line(&mut self) -> Result<Option<String>, String> {
        let mut line = String::new();
        match tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line)).await {
            Err(_) => Err(format!("no line from the daemon within {PATIENCE:?}")),
            Ok(Err(e)) => Err(format!("reading from the daemon: {e}")),
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(_)) => {
                let line =
                    line.strip_suffix('\n').map(str::to_owned).ok_or_else(|| format!("line without LF: {line:?}"))?;
                self.received.push(line.clone());
                Ok(Some(line))
            }
        }
    }

    /// Waits until the daemon closes its side; anything it sends first is an error.
    pub async fn expect_close(&mut self) -> Result<(), String> {
        match self.read_line().await? {
            None => Ok(()),
            Some(line) => Err(format!("expected the daemon to close the connection, it sent {line:?}")),
        }
    }

    /// Closes the fake's side.
    pub async fn close(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            let _ = writer.shutdown().await;
        }
    }

    /// Plays Asterisk's side of `transcript`. Returns the commands the daemon sent.
    pub async fn replay(addr: SocketAddr, transcript: &Transcript) -> Result<Vec<String>, String> {
        let mut fake = FakeAsterisk::connect(addr).await;
        for step in transcript.replay_steps() {
            match step {
                Step::Send(lines) => {
                    // After the daemon closes, Asterisk's last HANGUP may meet a closed socket.
                    let _ = fake.send_lines(&lines).await;
                }
                Step::Expect(expected) => {
                    let sent = fake.read_line().await?.ok_or_else(|| {
                        format!("{}: the daemon closed the connection; expected {expected:?}", transcript.name)
                    })?;
                    if !same_command(&sent, &expected) {
                        return Err(format!(
                            "{}: the daemon sent {sent:?}; the capture has {expected:?}",
                            transcript.name
                        ));
                    }
                }
                Step::Refused { .. } => {}
                Step::ExpectClose => fake.expect_close().await.map_err(|e| format!("{}: {e}", transcript.name))?,
                Step::Close => fake.close().await,
            }
        }
        fake.close().await;
        Ok(fake.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_compare_as_asterisk_reads_them() {
        assert!(same_command("ANSWER", "answer"));
        assert!(same_command("EXEC Set X_FROM_EXEC=42", "EXEC Set \"X_FROM_EXEC=42\""));
        assert!(same_command("VERBOSE hi 1", "VERBOSE \"hi\" 1"));
        assert!(!same_command("SET VARIABLE FOO BAR", "SET VARIABLE FOO bar"));
        assert!(!same_command("GET VARIABLE X", "GET VARIABLE X Y"));
    }
}
