//! RECORD FILE and how a recording ended.

use std::borrow::Cow;

use super::{Command, CommandLine, Wait};
use super::{digit_from_code, timed};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// How a recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordEnd {
    /// `(timeout)`: the maximum length was reached, or silence detection stopped the recording.
    /// Asterisk then reports the milliseconds left on its last wait, so a value above zero means
    /// silence ended it early.
    Timeout { leftover_ms: i64 },
    /// `(dtmf)`: the caller pressed an escape digit.
    Dtmf(char),
    /// `(hangup)`: the caller hung up while being recorded. What was heard is in the file.
    Hangup,
    /// `(writefile)`, `(waitfor)` or `(randomerror)`: Asterisk could not record.
    Error { reason: String, code: i64 },
}

/// The reply to RECORD FILE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub end: RecordEnd,
    /// The number of samples in the file (8 kHz for WAV), when Asterisk reports it.
    pub endpos: Option<i64>,
}

/// `RECORD FILE <file> <format> <escape digits> <timeout ms> [offset] [BEEP] [s=<silence s>]`.
#[derive(Debug, Clone)]
pub struct RecordFile {
    /// Path without extension; Asterisk adds `.<format>`.
    pub file: String,
    pub format: String,
    pub escape_digits: String,
    /// Maximum length in milliseconds; `-1` records until a digit or hang-up.
    pub timeout_ms: i64,
    pub beep: bool,
    /// Seconds of silence that end the recording.
    pub silence_s: Option<u32>,
}

impl RecordFile {
    /// Records WAV into `file` for at most `timeout_ms`, stopped early by `#`.
    pub fn wav(file: impl Into<String>, timeout_ms: i64) -> Self {
        RecordFile {
            file: file.into(),
            format: "wav".into(),
            escape_digits: "#".into(),
            timeout_ms,
            beep: false,
            silence_s: None,
        }
    }

    /// Stops the recording after this many seconds of silence.
    pub fn silence(mut self, seconds: u32) -> Self {
        self.silence_s = Some(seconds);
        self
    }
}

impl Command for RecordFile {
    type Output = Recording;
    fn name(&self) -> Cow<'static, str> {
        "RECORD FILE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        let mut line = CommandLine::new("RECORD FILE")
            .arg(&self.file)?
            .arg(&self.format)?
            .arg(&self.escape_digits)?
            .num(self.timeout_ms);
        // Asterisk takes the sixth word as the offset when it is a number, as BEEP when it is
        // not, and `s=` from the last word. The offset is written when `s=` follows, as in
        // `8000 0 s=2`, and left out before a lone BEEP, as in `3000 BEEP`.
        if self.silence_s.is_some() {
            line = line.num(0);
        }
        if self.beep {
            line = line.arg("BEEP")?;
        }
        if let Some(silence) = self.silence_s {
            line = line.arg(&format!("s={silence}"))?;
        }
        Ok(line)
    }
    fn wait(&self) -> Wait {
        timed(self.timeout_ms)
    }
    fn parse(&self, reply: Reply) -> Result<Recording, AgiError> {
        let code = reply.result_int().ok_or_else(|| AgiError::unexpected("RECORD FILE", &reply))?;
        let end = match reply.data.as_deref() {
            Some("timeout") => RecordEnd::Timeout { leftover_ms: code },
            Some("dtmf") => {
                RecordEnd::Dtmf(digit_from_code(code).ok_or_else(|| AgiError::unexpected("RECORD FILE", &reply))?)
            }
            Some("hangup") => RecordEnd::Hangup,
            Some(reason) => RecordEnd::Error { reason: reason.to_owned(), code },
            None => return Err(AgiError::unexpected("RECORD FILE", &reply)),
        };
        Ok(Recording { end, endpos: reply.endpos() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_file_replies() {
        let parse = |line: &str| {
            let (_, l) = crate::agi::parse::reply_line(line).unwrap();
            RecordFile::wav("x", 1).parse(Reply::from_line(&l)).unwrap()
        };
        assert_eq!(
            parse("200 result=5180 (timeout) endpos=18732"),
            Recording { end: RecordEnd::Timeout { leftover_ms: 5180 }, endpos: Some(18732) }
        );
        assert_eq!(parse("200 result=35 (dtmf) endpos=9612").end, RecordEnd::Dtmf('#'));
        assert_eq!(parse("200 result=-1 (hangup) endpos=55330").end, RecordEnd::Hangup);
        assert_eq!(
            parse("200 result=-1 (writefile)"),
            Recording { end: RecordEnd::Error { reason: "writefile".into(), code: -1 }, endpos: None }
        );
    }
}
