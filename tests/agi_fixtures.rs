//! Every FastAGI capture from a real Asterisk 22.10.1 (`tests/fixtures/asterisk/agi`) is
//! replayed by a fake Asterisk against the real TCP listener. The daemon side runs the same
//! commands through the typed API and checks each typed result; the fake checks every line the
//! daemon sends, and that commands refused on a dead channel are never sent.

mod support;

use std::future::Future;
use std::pin::Pin;

use asterai::agi::command::*;
use asterai::agi::{AgiError, AgiSession, Router, ServerConfig};
use support::agi::TestServer;
use support::fake_asterisk::FakeAsterisk;
use support::transcript::{Step, Transcript};
use tokio::sync::mpsc;

type Outcome = Result<(), String>;
type Scenario = fn(AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Fails the scenario with the location when two values differ.
macro_rules! check {
    ($actual:expr, $expected:expr) => {{
        match (&$actual, &$expected) {
            (actual, expected) => {
                if actual != expected {
                    return Err(format!(
                        "line {}: {} gave {:?}, expected {:?}",
                        line!(),
                        stringify!($actual),
                        actual,
                        expected
                    ));
                }
            }
        }
    }};
}

/// Fails the scenario unless the expression is an error of the given shape.
macro_rules! check_err {
    ($actual:expr, $pattern:pat) => {{
        match $actual {
            Err($pattern) => {}
            other => {
                return Err(format!(
                    "line {}: {} gave {:?}, expected {}",
                    line!(),
                    stringify!($actual),
                    other,
                    stringify!($pattern)
                ));
            }
        }
    }};
}

fn ok<T: std::fmt::Debug>(result: Result<T, AgiError>) -> Result<T, String> {
    result.map_err(|e| format!("unexpected error: {e}"))
}

async fn replay(name: &str, scenario: Scenario) {
    let transcript = Transcript::load(name);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |session: AgiSession| {
        let tx = tx.clone();
        async move {
            let outcome = scenario(session).await;
            let _ = tx.send(outcome);
            Ok(())
        }
    };
    let router = Router::new().route("ai", handler.clone()).fallback(handler);
    let server = TestServer::start(router, ServerConfig::default()).await;
    let replayed = FakeAsterisk::replay(server.addr, &transcript).await;
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{name}: the daemon's handler did not finish"))
        .expect("handler outcome");
    let sent = replayed.unwrap_or_else(|e| panic!("{name}: fake Asterisk: {e}"));
    if let Err(e) = outcome {
        panic!("{name}: daemon side: {e}\ncommands sent: {sent:#?}");
    }
    server.stop().await;
}

fn basic(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        check!(s.env().route(), "ai");
        check!(s.env().param("org").as_deref(), Some("acme"));
        check!(s.env().param("call_id").as_deref(), Some("1795222058.0"));
        check!(s.env().uniqueid(), "1795222058.0");
        check!(s.env().channel(), "Local/s@caller-sim-00000000;1");
        check!(s.env().get("accountcode"), Some(""));
        check!(s.env().len(), 22);
        ok(s.send(Answer).await)?;
        ok(s.send(Verbose::new("hi", 1)).await)?;
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222058.0".to_owned()));
        ok(s.send(SetVariable::new("FOO", "bar")).await)?;
        check!(ok(s.send(GetVariable::new("FOO")).await)?, Some("bar".to_owned()));
        ok(s.send(SetVariable::new("GREETING", "hello world")).await)?;
        check!(ok(s.send(GetVariable::new("GREETING")).await)?, Some("hello world".to_owned()));
        check!(ok(s.send(GetVariable::new("NO_SUCH_VARIABLE")).await)?, None);
        check!(
            ok(s.send(GetFullVariable::new("${FOO}-${CHANNEL}")).await)?,
            Some("bar-Local/s@caller-sim-00000000;1".to_owned())
        );
        check!(ok(s.send(GetFullVariable::new("${CALLERID(all)}")).await)?, Some("\"\" <>".to_owned()));
        check!(ok(s.send(ChannelStatus::default()).await)?, ChannelState::Up);
        ok(s.send(Raw::new("answer")).await)?;
        check!(ok(s.send(Exec::new("Set", "X_FROM_EXEC=42")).await)?, 0);
        check!(ok(s.send(GetVariable::new("X_FROM_EXEC")).await)?, Some("42".to_owned()));
        ok(s.send(DatabasePut { family: "astref".into(), key: "key1".into(), value: "v1".into() }).await)?;
        let get = |key: &str| DatabaseGet { family: "astref".into(), key: key.into() };
        check!(ok(s.send(get("key1")).await)?, Some("v1".to_owned()));
        check!(ok(s.send(get("missing")).await)?, None);
        check!(s.is_hung_up(), false);
        Ok(())
    })
}

fn args(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        check!(s.env().route(), "ai");
        check!(s.env().param("x").as_deref(), Some("1"));
        check!(s.env().args(), vec!["arg1", "arg2"]);
        Ok(())
    })
}

fn stream_file(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check!(ok(s.send(StreamFile::new("hello-world")).await)?, Played::Finished { endpos: Some(11234) });
        check!(ok(s.send(StreamFile::new("nonexistent-file")).await)?, Played::Failed { endpos: Some(0) });
        match s.send(Raw::new("STREAM FILE").arg("beep")).await {
            Err(AgiError::Usage { usage, .. }) => check!(usage.starts_with("Send the given file"), true),
            other => return Err(format!("expected 520 usage, got {other:?}")),
        }
        let with_offset = StreamFile { offset: Some(4000), ..StreamFile::new("hello-world").escape("#") };
        check!(ok(s.send(with_offset).await)?, Played::Finished { endpos: Some(11234) });
        check!(ok(s.send(ControlStreamFile::new("beep")).await)?, Played::Finished { endpos: Some(-1) });
        check!(ok(s.send(Exec::new("Playback", "beep")).await)?, 0);
        check!(ok(s.send(Exec::new("Playback", "nonexistent-file")).await)?, 0);
        check!(ok(s.send(GetVariable::new("PLAYBACKSTATUS")).await)?, Some("FAILED".to_owned()));
        let digits = SayDigits { digits: "123".into(), escape_digits: String::new() };
        check!(ok(s.send(digits).await)?, Played::Finished { endpos: None });
        let number = SayNumber { number: 42, escape_digits: String::new(), gender: None };
        check!(ok(s.send(number).await)?, Played::Finished { endpos: None });
        Ok(())
    })
}

fn errors(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check_err!(s.send(Raw::new("FOOBAR")).await, AgiError::UnknownCommand { .. });
        check_err!(s.send(Raw::new("STREAM FILE")).await, AgiError::Usage { .. });
        match s.send(Raw::new("RECORD FILE").arg("/var/spool/asterai/x")).await {
            Err(AgiError::Usage { usage, .. }) => check!(usage.starts_with("Record to a file until"), true),
            other => return Err(format!("expected 520 usage, got {other:?}")),
        }
        match s.send(Raw::new("GET DATA")).await {
            Err(AgiError::Usage { usage, .. }) => check!(
                usage,
                "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\nReturns the digits received from the channel at the other end."
            ),
            other => return Err(format!("expected 520 usage, got {other:?}")),
        }
        check_err!(s.send(Raw::new("WAIT FOR DIGIT")).await, AgiError::Usage { .. });
        match s.send(Raw::new("SET VARIABLE").arg("ONLYNAME")).await {
            Err(AgiError::Usage { usage, .. }) => check!(usage, "Sets a variable to the current channel."),
            other => return Err(format!("expected 520 usage, got {other:?}")),
        }
        check_err!(s.send(Raw::new("STREAM")).await, AgiError::UnknownCommand { .. });
        check_err!(s.send(Raw::new("VERBOSE")).await, AgiError::Usage { .. });
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222105.14".to_owned()));
        Ok(())
    })
}

fn quoting_pipelining(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        ok(s.send(SetVariable::new("Q", "a \"quoted\" value")).await)?;
        check!(ok(s.send(GetVariable::new("Q")).await)?, Some("a \"quoted\" value".to_owned()));
        ok(s.send(SetVariable::new("E", "")).await)?;
        check!(ok(s.send(GetVariable::new("E")).await)?, Some(String::new()));
        ok(s.send(SetVariable::new("U", "héllo wörld")).await)?;
        check!(ok(s.send(GetVariable::new("U")).await)?, Some("héllo wörld".to_owned()));
        // The capture sent `back\slash` unquoted, which Asterisk reads as `backslash`.
        ok(s.send(SetVariable::new("B", "backslash")).await)?;
        check!(ok(s.send(GetVariable::new("B")).await)?, Some("backslash".to_owned()));
        check!(ok(s.send(GetFullVariable::new("${Q}|${U}")).await)?, Some("a \"quoted\" value|héllo wörld".to_owned()));
        ok(s.send(Verbose::new("verbose with spaces", 3)).await)?;
        // A CR would reach Asterisk inside the argument; an empty line is no command. Neither is sent.
        check_err!(s.send(GetVariable::new("UNIQUEID\r")).await, AgiError::InvalidArgument { .. });
        check_err!(s.send(Raw::new("")).await, AgiError::InvalidArgument { .. });
        // The capture wrote four commands in one go and Asterisk answered only the first. Two
        // callers sharing the session are served one after the other instead.
        let (a, b) = tokio::join!(s.send(SetVariable::new("P1", "one")), s.send(SetVariable::new("P2", "two")));
        ok(a)?;
        ok(b)?;
        let (a, b) = tokio::join!(s.send(GetVariable::new("P1")), s.send(GetVariable::new("P2")));
        check!(ok(a)?, Some("one".to_owned()));
        check!(ok(b)?, Some("two".to_owned()));
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222105.16".to_owned()));
        Ok(())
    })
}

fn hangup_mid_command(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        ok(s.send(Verbose::new("waiting for caller to hang up", 1)).await)?;
        check!(ok(s.send(WaitForDigit { timeout_ms: -1 }).await)?, DigitWait::Failed);
        check!(s.is_hung_up(), true);
        check_err!(s.send(Answer).await, AgiError::ChannelDead { .. });
        check_err!(s.send(StreamFile::new("hello-world")).await, AgiError::ChannelDead { .. });
        check_err!(s.send(WaitForDigit { timeout_ms: 100 }).await, AgiError::ChannelDead { .. });
        ok(s.send(Verbose::new("after hangup", 1)).await)?;
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222120.18".to_owned()));
        ok(s.send(SetVariable::new("AFTER", "hangup")).await)?;
        check!(ok(s.send(GetVariable::new("AFTER")).await)?, Some("hangup".to_owned()));
        check_err!(s.send(ChannelStatus::default()).await, AgiError::ChannelDead { .. });
        // Asterisk answers a command it does not know with 510 even on a dead channel.
        check_err!(s.send(Raw::new("FOOBAR")).await, AgiError::UnknownCommand { .. });
        Ok(())
    })
}

fn hangup_during_stream(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check!(ok(s.send(StreamFile::new("tt-monkeys")).await)?, Played::Failed { endpos: Some(119520) });
        // HANGUP arrived after this one was sent: Asterisk answers 511.
        check_err!(s.send(StreamFile::new("tt-monkeys")).await, AgiError::NotPermitted { .. });
        check!(s.is_hung_up(), true);
        check_err!(s.send(StreamFile::new("hello-world")).await, AgiError::ChannelDead { .. });
        Ok(())
    })
}

fn hangup_during_record(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check!(
            ok(s.send(RecordFile::wav("/var/spool/asterai/rec-hangup", -1)).await)?,
            Recording { end: RecordEnd::Hangup, endpos: Some(55330) }
        );
        check_err!(s.send(RecordFile::wav("/var/spool/asterai/rec-hangup2", 3000)).await, AgiError::ChannelDead { .. });
        Ok(())
    })
}

fn hangup_while_idle(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        s.hung_up().await;
        check!(s.is_hung_up(), true);
        check!(s.is_closed(), false);
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222203.30".to_owned()));
        check_err!(s.send(StreamFile::new("hello-world")).await, AgiError::ChannelDead { .. });
        Ok(())
    })
}

fn server_hangup_command(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        ok(s.send(Hangup::default()).await)?;
        check!(s.is_hung_up(), true);
        check_err!(s.send(Answer).await, AgiError::ChannelDead { .. });
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222180.24".to_owned()));
        check_err!(s.send(Hangup::default()).await, AgiError::ChannelDead { .. });
        Ok(())
    })
}

fn exit_on_hangup(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check!(ok(s.send(WaitForDigit { timeout_ms: -1 }).await)?, DigitWait::Failed);
        // AGIEXITONHANGUP=yes: Asterisk sends HANGUP twice and closes the socket itself.
        s.closed().await;
        check!(s.is_hung_up(), true);
        check_err!(s.send(GetVariable::new("UNIQUEID")).await, AgiError::Closed { .. });
        Ok(())
    })
}

fn record_file(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        let r = ok(s.send(RecordFile::wav("/var/spool/asterai/rec-1", 8000).silence(2)).await)?;
        check!(r, Recording { end: RecordEnd::Timeout { leftover_ms: 0 }, endpos: Some(36012) });
        let r = ok(s.send(RecordFile::wav("/var/spool/asterai/rec-3", 3000)).await)?;
        check!(r, Recording { end: RecordEnd::Timeout { leftover_ms: 0 }, endpos: Some(19318) });
        Ok(())
    })
}

fn record_file_beep(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        let beep = |file: &str, ms| RecordFile { beep: true, ..RecordFile::wav(file, ms) };
        let r = ok(s.send(beep("/var/spool/asterai/rec-2", 8000).silence(2)).await)?;
        check!(r, Recording { end: RecordEnd::Timeout { leftover_ms: 0 }, endpos: Some(43372) });
        let r = ok(s.send(beep("/var/spool/asterai/rec-4", 3000)).await)?;
        check!(r, Recording { end: RecordEnd::Timeout { leftover_ms: 0 }, endpos: Some(8438) });
        Ok(())
    })
}

fn record_silence(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        let r = ok(s.send(RecordFile::wav("/var/spool/asterai/rec-silence", 10000).silence(2)).await)?;
        // Silence stopped it: result is the milliseconds left on Asterisk's wait, not 0.
        check!(r, Recording { end: RecordEnd::Timeout { leftover_ms: 5180 }, endpos: Some(18732) });
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some("1795222198.28".to_owned()));
        Ok(())
    })
}

fn get_data(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check!(ok(s.send(GetData::new("beep", 2000, 4)).await)?, DataInput::Timeout(String::new()));
        check!(ok(s.send(WaitForDigit { timeout_ms: 100 }).await)?, DigitWait::Timeout);
        check!(ok(s.send(GetData::new("nonexistent-file", 500, 2)).await)?, DataInput::Failed);
        let option = GetOption { file: "beep".into(), escape_digits: "12#".into(), timeout_ms: Some(1000) };
        check!(ok(s.send(option).await)?, Played::Finished { endpos: Some(3404) });
        check!(ok(s.send(WaitForDigit { timeout_ms: 100 }).await)?, DigitWait::Timeout);
        Ok(())
    })
}

fn dtmf(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        ok(s.send(Answer).await)?;
        check!(ok(s.send(GetData::new("beep", 4000, 4)).await)?, DataInput::Entered("12".to_owned()));
        check!(ok(s.send(WaitForDigit { timeout_ms: 3000 }).await)?, DigitWait::Digit('5'));
        check!(
            ok(s.send(RecordFile::wav("/var/spool/asterai/rec-dtmf", 6000)).await)?,
            Recording { end: RecordEnd::Dtmf('#'), endpos: Some(9612) }
        );
        check!(ok(s.send(WaitForDigit { timeout_ms: 5000 }).await)?, DigitWait::Failed);
        Ok(())
    })
}

fn ari_session(s: AgiSession) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    Box::pin(async move {
        let uniqueid = s.env().uniqueid().to_owned();
        ok(s.send(Answer).await)?;
        ok(s.send(Verbose::new("ari-default session", 1)).await)?;
        check!(ok(s.send(StreamFile::new("hello-world")).await)?, Played::Finished { endpos: Some(11234) });
        check!(ok(s.send(WaitForDigit { timeout_ms: 30000 }).await)?, DigitWait::Failed);
        check!(s.is_hung_up(), true);
        check!(ok(s.send(GetVariable::new("UNIQUEID")).await)?, Some(uniqueid));
        check_err!(s.send(Answer).await, AgiError::ChannelDead { .. });
        Ok(())
    })
}

const SCENARIOS: &[(&str, Scenario)] = &[
    ("args", args),
    ("ari-originate-dialplan", ari_session),
    ("ari-originate-stasis-continue", ari_session),
    ("basic", basic),
    ("dtmf", dtmf),
    ("errors", errors),
    ("exit-on-hangup", exit_on_hangup),
    ("get-data", get_data),
    ("hangup-during-record", hangup_during_record),
    ("hangup-during-stream", hangup_during_stream),
    ("hangup-mid-command", hangup_mid_command),
    ("hangup-while-idle", hangup_while_idle),
    ("quoting-pipelining", quoting_pipelining),
    ("record-file", record_file),
    ("record-file-beep", record_file_beep),
    ("record-silence", record_silence),
    ("server-hangup-command", server_hangup_command),
    ("stream-file", stream_file),
];

#[tokio::test]
async fn every_capture_has_a_scenario() {
    let names: Vec<&str> = SCENARIOS.iter().map(|(name, _)| *name).collect();
    assert_eq!(Transcript::all_names(), names, "each capture in fixtures/asterisk/agi needs a scenario here");
}

macro_rules! replay_tests {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            let scenario = SCENARIOS.iter().find(|(n, _)| *n == $name).expect("scenario").1;
            replay($name, scenario).await;
        }
    )*};
}

replay_tests! {
    replay_args => "args",
    replay_ari_originate_dialplan => "ari-originate-dialplan",
    replay_ari_originate_stasis_continue => "ari-originate-stasis-continue",
    replay_basic => "basic",
    replay_dtmf => "dtmf",
    replay_errors => "errors",
    replay_exit_on_hangup => "exit-on-hangup",
    replay_get_data => "get-data",
    replay_hangup_during_record => "hangup-during-record",
    replay_hangup_during_stream => "hangup-during-stream",
    replay_hangup_mid_command => "hangup-mid-command",
    replay_hangup_while_idle => "hangup-while-idle",
    replay_quoting_pipelining => "quoting-pipelining",
    replay_record_file => "record-file",
    replay_record_file_beep => "record-file-beep",
    replay_record_silence => "record-silence",
    replay_server_hangup_command => "server-hangup-command",
    replay_stream_file => "stream-file",
}

/// The dead-channel rule as the captures show it: after HANGUP, every command the capture shows
/// answered 511 is refused locally, and every other command is sent.
#[test]
fn dead_channel_refusals_match_the_captures() {
    for name in [
        "hangup-mid-command",
        "hangup-during-record",
        "hangup-while-idle",
        "server-hangup-command",
        "ari-originate-dialplan",
    ] {
        let steps = Transcript::load(name).replay_steps();
        let refused: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Refused { command, why: "dead channel" } => Some(command.as_str()),
                _ => None,
            })
            .collect();
        assert!(!refused.is_empty(), "{name}: the capture has commands refused on a dead channel");
    }
}

/// The replay reconstructs Asterisk's bytes exactly: the capture's chunk files, concatenated,
/// equal the transcript's Asterisk lines.
#[test]
fn transcripts_match_the_raw_chunks() {
    for name in Transcript::all_names() {
        let transcript = Transcript::load(&name);
        let mut from_lines = Vec::new();
        for line in &transcript.lines {
            if let support::transcript::Line::Asterisk(l) = line {
                from_lines.extend_from_slice(l.as_bytes());
                from_lines.push(b'\n');
            }
        }
        let chunks =
            std::fs::read_to_string(support::transcript::fixtures_dir().join(format!("agi/{name}.chunks.jsonl")))
                .unwrap();
        let mut from_chunks = Vec::new();
        for line in chunks.lines() {
            let chunk: serde_json::Value = serde_json::from_str(line).unwrap();
            if chunk["dir"] == "<<" {
                let data = chunk["data"].as_str().unwrap();
                // latin-1 code points are the bytes
                let bytes: Vec<u8> = data.chars().map(|c| c as u32 as u8).collect();
                from_chunks.extend_from_slice(&bytes);
            }
        }
        assert_eq!(String::from_utf8_lossy(&from_lines), String::from_utf8_lossy(&from_chunks), "{name}");
    }
}
