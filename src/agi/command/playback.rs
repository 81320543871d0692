//! Commands that play audio: STREAM FILE, CONTROL STREAM FILE, GET OPTION and the SAY family,
//! all answered with [`Played`].

use std::borrow::Cow;

use super::digit_from_code;
use super::{Command, CommandLine, Wait};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// The outcome of a command that plays audio: STREAM FILE, CONTROL STREAM FILE, GET OPTION and
/// the SAY family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Played {
    /// Playback ran to its end (or, for GET OPTION, the timeout passed with no digit).
    Finished { endpos: Option<i64> },
    /// The caller pressed one of the escape digits.
    Interrupted { digit: char, endpos: Option<i64> },
    /// `result=-1`: the file could not be played or the channel went away. Which one it was
    /// shows in [`crate::agi::AgiSession::is_hung_up`].
    Failed { endpos: Option<i64> },
}

impl Played {
    fn from_reply(reply: &Reply) -> Result<Self, AgiError> {
        let endpos = reply.endpos();
        match reply.result_int() {
            Some(0) => Ok(Played::Finished { endpos }),
            Some(n) if n < 0 => Ok(Played::Failed { endpos }),
            Some(n) => match digit_from_code(n) {
                Some(digit) => Ok(Played::Interrupted { digit, endpos }),
                None => Err(AgiError::unexpected("playback", reply)),
            },
            None => Err(AgiError::unexpected("playback", reply)),
        }
    }
}

/// `STREAM FILE <file> <escape digits> [offset]`: plays a sound file (name without extension).
#[derive(Debug, Clone)]
pub struct StreamFile {
    pub file: String,
    pub escape_digits: String,
    pub offset: Option<i64>,
}

impl StreamFile {
    /// Plays `file` with no escape digits.
    pub fn new(file: impl Into<String>) -> Self {
        StreamFile { file: file.into(), escape_digits: String::new(), offset: None }
    }

    /// Lets the caller interrupt playback with any of `digits`.
    pub fn escape(mut self, digits: impl Into<String>) -> Self {
        self.escape_digits = digits.into();
        self
    }
}

impl Command for StreamFile {
    type Output = Played;
    fn name(&self) -> Cow<'static, str> {
        "STREAM FILE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        let line = CommandLine::new("STREAM FILE").arg(&self.file)?.arg(&self.escape_digits)?;
        Ok(match self.offset {
            Some(offset) => line.num(offset),
            None => line,
        })
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<Played, AgiError> {
        Played::from_reply(&reply)
    }
}

/// `CONTROL STREAM FILE <file> <escape digits> [skipms [ffchar [rewchar [pausechar]]]]`.
#[derive(Debug, Clone)]
pub struct ControlStreamFile {
    pub file: String,
    pub escape_digits: String,
    pub skip_ms: Option<i64>,
    pub forward: Option<String>,
    pub rewind: Option<String>,
    pub pause: Option<String>,
}

impl ControlStreamFile {
    pub fn new(file: impl Into<String>) -> Self {
        ControlStreamFile {
            file: file.into(),
            escape_digits: String::new(),
            skip_ms: None,
            forward: None,
            rewind: None,
            pause: None,
        }
    }
}

impl Command for ControlStreamFile {
    type Output = Played;
    fn name(&self) -> Cow<'static, str> {
        "CONTROL STREAM FILE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        let mut line = CommandLine::new("CONTROL STREAM FILE").arg(&self.file)?.arg(&self.escape_digits)?;
        let controls = [self.forward.as_deref(), self.rewind.as_deref(), self.pause.as_deref()];
        let used = controls.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        if self.skip_ms.is_some() || used > 0 {
            line = line.num(self.skip_ms.unwrap_or(3000));
            for control in &controls[..used] {
                line = line.arg(control.unwrap_or(""))?;
            }
        }
        Ok(line)
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<Played, AgiError> {
        Played::from_reply(&reply)
    }
}

/// `GET OPTION <file> <escape digits> [timeout ms]`: STREAM FILE that waits for a digit after.
#[derive(Debug, Clone)]
pub struct GetOption {
    pub file: String,
    pub escape_digits: String,
    pub timeout_ms: Option<i64>,
}

impl Command for GetOption {
    type Output = Played;
    fn name(&self) -> Cow<'static, str> {
        "GET OPTION".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        let line = CommandLine::new("GET OPTION").arg(&self.file)?.arg(&self.escape_digits)?;
        Ok(match self.timeout_ms {
            Some(ms) => line.num(ms),
            None => line,
        })
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<Played, AgiError> {
        Played::from_reply(&reply)
    }
}

/// `SAY DIGITS <digits> <escape digits>`.
#[derive(Debug, Clone)]
pub struct SayDigits {
    pub digits: String,
    pub escape_digits: String,
}

impl Command for SayDigits {
    type Output = Played;
    fn name(&self) -> Cow<'static, str> {
        "SAY DIGITS".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("SAY DIGITS").arg(&self.digits)?.arg(&self.escape_digits)
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<Played, AgiError> {
        Played::from_reply(&reply)
    }
}

/// `SAY NUMBER <number> <escape digits> [gender]`.
#[derive(Debug, Clone)]
pub struct SayNumber {
    pub number: i64,
    pub escape_digits: String,
    pub gender: Option<String>,
}

impl Command for SayNumber {
    type Output = Played;
    fn name(&self) -> Cow<'static, str> {
        "SAY NUMBER".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("SAY NUMBER").num(self.number).arg(&self.escape_digits)?.opt_arg(self.gender.as_deref())
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<Played, AgiError> {
        Played::from_reply(&reply)
    }
}
