//! A simulated Asterisk with one caller on the line, for `asterai demo` and the tests.
//!
//! It connects to the FastAGI port like Asterisk, sends an environment block, and answers the
//! daemon's commands the way Asterisk 22 does:
//! * `RECORD FILE` writes a real WAV file where Asterisk would, holding the caller's next line
//!   (speech from espeak-ng, or a tone in tests), and puts the line's words beside it in
//!   `<file>.txt` for the `scripted` speech-to-text. It answers `200 result=<ms> (timeout)
//!   endpos=<samples>`, as when silence ends a recording.
//! * `STREAM FILE` takes as long as the file plays (scaled by `playback_speed`), then answers
//!   `200 result=0 endpos=<samples>`.
//! * Hang-ups follow Asterisk: a `-1` result, then `HANGUP` (in the same write, or
//!   [`Caller::hangup_line_after`] later in its own), and dead-channel commands get 511.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::agi::command::split_args;
use crate::speech::audio;

/// What the caller says in one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Say(String),
    Silence,
}

/// Parses a script: one line per turn; `(silence)` or an empty line is a silent turn; `#`
/// starts a comment.
pub fn parse_script(text: &str) -> Vec<Line> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .map(
            |l| {
                if l.is_empty() || l.eq_ignore_ascii_case("(silence)") {
                    Line::Silence
                } else {
                    Line::Say(l.to_owned())
                }
            },
        )
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .skip_while(|l| *l == Line::Silence)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// How the caller's voice is made.
#[derive(Debug, Clone)]
pub enum CallerVoice {
    /// espeak-ng with this voice.
    Espeak { program: String, voice: String },
    /// A 440 Hz tone as long as the words would take (tests: fast, and loud enough to be speech).
    Tone,
}

/// When the caller hangs up, if before the end of the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupAt {
    /// During the Nth recording (1-based).
    Recording(usize),
    /// During the Nth playback (1-based, counting every STREAM FILE).
    Playback(usize),
    /// Right after the Nth recording returns, while the daemon is busy with it.
    AfterRecording(usize),
}

/// A simulated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub script: Vec<Line>,
    pub voice: CallerVoice,
    /// The AGI path and query, e.g. `ai?org=demo`.
    pub script_path: String,
    pub callerid: String,
    pub dnid: String,
    pub uniqueid: String,
    /// 1.0 plays in real time; 4.0 four times faster.
    pub playback_speed: f64,
    /// Longest a single playback takes, however long the file.
    pub max_playback: Duration,
    /// `RECORD FILE` takes as long as the caller's line plus this silence window, as on a real
    /// call. `None` answers at once.
    pub speak_in_real_time: Option<Duration>,
    pub hangup: Option<HangupAt>,
    /// How long after a hang-up's `-1` reply the `HANGUP` line comes. Zero (the default) writes
    /// both at once; a real Asterisk sends `HANGUP` a few milliseconds later, in a write of its
    /// own, so the daemon may read the reply alone. Commands that arrive in between are answered
    /// as on a dead channel and count as after the hang-up.
    pub hangup_line_after: Duration,
}

/// What the caller saw during the call.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    /// Every command the daemon sent, in order.
    pub commands: Vec<String>,
    /// Files the daemon asked to play.
    pub played: Vec<PathBuf>,
    /// When each STREAM FILE arrived, relative to the end of the recording before it (ms).
    pub first_play_after_record_ms: Vec<u64>,
    /// Commands that arrived after the caller hung up.
    pub after_hangup: Vec<String>,
    /// The daemon closed the connection.
    pub closed_by_daemon: bool,
    /// Variables the daemon set.
    pub variables: Vec<(String, String)>,
}

impl Caller {
    pub fn new(script: Vec<Line>, org: &str) -> Caller {
        Caller {
            script,
            voice: CallerVoice::Tone,
            script_path: format!("ai?org={org}"),
            callerid: "+15551230000".into(),
            dnid: "5550100".into(),
            // Unique across processes: several demos (or tests) may call one daemon at once.
            uniqueid: format!("{}.{}", chrono::Utc::now().timestamp(), rand::random::<u32>()),
            playback_speed: 8.0,
            max_playback: Duration::from_millis(500),
            speak_in_real_time: None,
            hangup: None,
            hangup_line_after: Duration::ZERO,
        }
    }

    /// The channel name Asterisk would give this call (`agi_channel`).
    pub fn channel(&self) -> String {
        format!("PJSIP/demo-{}", self.uniqueid.replace('.', ""))
    }

    fn env(&self) -> String {
        format!(
            "agi_network: yes\nagi_network_script: {script}\nagi_request: agi://127.0.0.1/{script}\nagi_channel: {channel}\n\
             agi_language: en\nagi_type: PJSIP\nagi_uniqueid: {uid}\nagi_version: 22.10.1\nagi_callerid: {cid}\nagi_calleridname: Demo Caller\n\
             agi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: {dnid}\nagi_rdnis: unknown\n\
             agi_context: from-trunk\nagi_extension: {dnid}\nagi_priority: 2\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1\n\n",
            script = self.script_path,
            channel = self.channel(),
            uid = self.uniqueid,
            cid = self.callerid,
            dnid = self.dnid,
        )
    }

    async fn write_line(&self, path: &str, line: &Line) -> std::io::Result<u64> {
        let wav = PathBuf::from(format!("{path}.wav"));
        if let Some(dir) = wav.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let samples: Vec<i16> = match line {
            Line::Silence => vec![0; 8000],
            Line::Say(text) => match &self.voice {
                CallerVoice::Tone => {
                    let ms = 300 + 60 * text.split_whitespace().count() as u64;
                    (0..(ms * 8) as usize)
                        .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin()) as i16)
                        .collect()
                }
                CallerVoice::Espeak { program, voice } => {
                    let mut child = tokio::process::Command::new(program)
                        .args(["--stdin", "--stdout", "-v", voice, "-s", "150"])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::null())
                        .spawn()?;
                    let mut stdin = child.stdin.take().expect("piped");
                    stdin.write_all(format!("{text}\n").as_bytes()).await?;
                    drop(stdin);
                    let out = child.wait_with_output().await?;
                    audio::decode_wav(&out.stdout).map_err(std::io::Error::other)?
                }
            },
        };
        tokio::fs::write(&wav, audio::encode_wav(&samples)).await?;
        if let Line::Say(text) = line {
            tokio::fs::write(format!("{path}.txt"), text).await?;
        }
        Ok(samples.len() as u64)
    }

    /// Writes a hang-up's `-1` reply with `HANGUP` after it, or alone when
    /// [`Caller::hangup_line_after`] is set: then evaluates to when `HANGUP` is due.
    async fn hang_up(&self, write: &mut OwnedWriteHalf, reply: &str) -> std::io::Result<Option<tokio::time::Instant>> {
        if self.hangup_line_after.is_zero() {
            write.write_all(format!("{reply}\nHANGUP\n").as_bytes()).await?;
            return Ok(None);
        }
        write.write_all(format!("{reply}\n").as_bytes()).await?;
        Ok(Some(tokio::time::Instant::now() + self.hangup_line_after))
    }

    /// Places the call on `addr` and plays the script to the end (or the hang-up).
    pub async fn call(&self, addr: SocketAddr) -> std::io::Result<CallLog> {
        let stream = TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(self.env().as_bytes()).await?;
        let mut log = CallLog::default();
        let mut lines = self.script.iter();
        let (mut recordings, mut playbacks) = (0usize, 0usize);
        let mut hung_up = false;
        let mut last_record_end: Option<tokio::time::Instant> = None;
        // When the `HANGUP` line of a hang-up already answered is due (see `hangup_line_after`).
        let mut hangup_line: Option<tokio::time::Instant> = None;
        loop {
            // `read_until` keeps what it read when the timer wins, so no command is cut.
            let mut line = Vec::new();
            let length = loop {
                let Some(due) = hangup_line else { break read.read_until(b'\n', &mut line).await? };
                tokio::select! {
                    length = read.read_until(b'\n', &mut line) => break length?,
                    _ = tokio::time::sleep_until(due) => {
                        write.write_all(b"HANGUP\n").await?;
                        hangup_line = None;
                    }
                }
            };
            if length == 0 {
                log.closed_by_daemon = true;
                let _ = write.write_all(b"HANGUP\n").await;
                return Ok(log);
            }
            let command = String::from_utf8_lossy(&line).trim_end_matches('\n').to_owned();
            log.commands.push(command.clone());
            if hung_up {
                log.after_hangup.push(command.clone());
            }
            let args = split_args(&command);
            let words: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
            let dead_safe = matches!(words.first().map(String::as_str), Some("VERBOSE" | "NOOP" | "EXEC" | "DATABASE"))
                || (words.len() >= 2
                    && matches!(words[1].as_str(), "VARIABLE")
                    && matches!(words[0].as_str(), "GET" | "SET"))
                || words.starts_with(&["GET".into(), "FULL".into()]);
            if hung_up && !dead_safe {
                write.write_all(b"511 Command Not Permitted on a dead channel or intercept routine\n").await?;
                continue;
            }
            let reply: String = match words.first().map(String::as_str) {
                Some("ANSWER") => "200 result=0".into(),
                Some("CHANNEL") => "200 result=6".into(),
                Some("VERBOSE") | Some("NOOP") => "200 result=1".into(),
                // What the application returned: SendDTMF gives 0.
                Some("EXEC") => "200 result=0".into(),
                Some("SET") if words.get(1).map(String::as_str) == Some("VARIABLE") => {
                    if let (Some(name), Some(value)) = (args.get(2), args.get(3)) {
                        log.variables.push((name.clone(), value.clone()));
                    }
                    "200 result=1".into()
                }
                Some("GET") => "200 result=0".into(),
                Some("HANGUP") => {
                    write.write_all(b"200 result=1\nHANGUP\n").await?;
                    hung_up = true;
                    continue;
                }
                Some("STREAM") => {
                    playbacks += 1;
                    let file = args.get(2).cloned().unwrap_or_default();
                    if let Some(end) = last_record_end.take() {
                        log.first_play_after_record_ms.push(end.elapsed().as_millis() as u64);
                    }
                    log.played.push(PathBuf::from(&file));
                    let samples = tokio::fs::metadata(format!("{file}.wav"))
                        .await
                        .map(|m| m.len().saturating_sub(44) / 2)
                        .unwrap_or(0);
                    if samples == 0 {
                        write.write_all(b"200 result=-1 endpos=0\n").await?;
                        continue;
                    }
                    let plays = Duration::from_millis(samples * 1000 / 8000)
                        .div_f64(self.playback_speed.max(0.01))
                        .min(self.max_playback);
                    if self.hangup == Some(HangupAt::Playback(playbacks)) {
                        tokio::time::sleep(plays / 2).await;
                        hung_up = true;
                        hangup_line =
                            self.hang_up(&mut write, &format!("200 result=-1 endpos={}", samples / 2)).await?;
                        continue;
                    }
                    tokio::time::sleep(plays).await;
                    format!("200 result=0 endpos={samples}")
                }
                Some("RECORD") => {
                    recordings += 1;
                    let path = args.get(2).cloned().unwrap_or_default();
                    if self.hangup == Some(HangupAt::Recording(recordings)) {
                        let samples = self.write_line(&path, &Line::Say("and then I hung up".into())).await?;
                        hung_up = true;
                        hangup_line =
                            self.hang_up(&mut write, &format!("200 result=-1 (hangup) endpos={samples}")).await?;
                        continue;
                    }
                    let Some(line) = lines.next() else {
                        // The script is over: the caller hangs up while being recorded.
                        hung_up = true;
                        hangup_line = self.hang_up(&mut write, "200 result=-1 (hangup) endpos=0").await?;
                        continue;
                    };
                    let samples = self.write_line(&path, line).await?;
                    if let Some(silence) = self.speak_in_real_time {
                        tokio::time::sleep(Duration::from_millis(samples * 1000 / 8000) + silence).await;
                    }
                    last_record_end = Some(tokio::time::Instant::now());
                    if self.hangup == Some(HangupAt::AfterRecording(recordings)) {
                        write.write_all(format!("200 result=1200 (timeout) endpos={samples}\n").as_bytes()).await?;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        write.write_all(b"HANGUP\n").await?;
                        hung_up = true;
                        continue;
                    }
                    format!("200 result=1200 (timeout) endpos={samples}")
                }
                _ => "510 Invalid or unknown command".into(),
            };
            write.write_all(format!("{reply}\n").as_bytes()).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts() {
        let script = parse_script("# a comment\nHello?\n\n(silence)\nBye.\n\n");
        assert_eq!(script, vec![Line::Say("Hello?".into()), Line::Silence, Line::Silence, Line::Say("Bye.".into())]);
    }
}
