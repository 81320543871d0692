//! Collecting DTMF digits: GET DATA (after a prompt) and WAIT FOR DIGIT.

use std::borrow::Cow;

use super::{Command, CommandLine, Wait};
use super::{digit_from_code, timed};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// The reply to GET DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataInput {
    /// The caller entered `max_digits` digits or pressed `#`.
    Entered(String),
    /// The timeout passed; the digits entered before it, possibly none.
    Timeout(String),
    /// `result=-1`: the prompt could not be played or the channel went away.
    Failed,
}

/// `GET DATA <file> [timeout ms [max digits]]`: plays a prompt and collects DTMF digits.
#[derive(Debug, Clone)]
pub struct GetData {
    pub file: String,
    pub timeout_ms: Option<i64>,
    pub max_digits: Option<u32>,
}

impl GetData {
    pub fn new(file: impl Into<String>, timeout_ms: i64, max_digits: u32) -> Self {
        GetData { file: file.into(), timeout_ms: Some(timeout_ms), max_digits: Some(max_digits) }
    }
}

impl Command for GetData {
    type Output = DataInput;
    fn name(&self) -> Cow<'static, str> {
        "GET DATA".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        let mut line = CommandLine::new("GET DATA").arg(&self.file)?;
        if self.timeout_ms.is_some() || self.max_digits.is_some() {
            line = line.num(self.timeout_ms.unwrap_or(0));
        }
        if let Some(max) = self.max_digits {
            line = line.num(i64::from(max));
        }
        Ok(line)
    }
    fn wait(&self) -> Wait {
        // The prompt plays first, for as long as it lasts.
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<DataInput, AgiError> {
        let digits = reply.result.clone().unwrap_or_default();
        if digits == "-1" {
            return Ok(DataInput::Failed);
        }
        Ok(match reply.data.as_deref() {
            Some("timeout") => DataInput::Timeout(digits),
            _ => DataInput::Entered(digits),
        })
    }
}

/// The reply to WAIT FOR DIGIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitWait {
    Digit(char),
    Timeout,
    /// `result=-1`: the channel failed or hung up.
    Failed,
}

/// `WAIT FOR DIGIT <timeout ms>`; `-1` waits for ever.
#[derive(Debug, Clone)]
pub struct WaitForDigit {
    pub timeout_ms: i64,
}

impl Command for WaitForDigit {
    type Output = DigitWait;
    fn name(&self) -> Cow<'static, str> {
        "WAIT FOR DIGIT".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        Ok(CommandLine::new("WAIT FOR DIGIT").num(self.timeout_ms))
    }
    fn wait(&self) -> Wait {
        timed(self.timeout_ms)
    }
    fn parse(&self, reply: Reply) -> Result<DigitWait, AgiError> {
        match reply.result_int() {
            Some(0) => Ok(DigitWait::Timeout),
            Some(n) if n < 0 => Ok(DigitWait::Failed),
            Some(n) => {
                digit_from_code(n).map(DigitWait::Digit).ok_or_else(|| AgiError::unexpected("WAIT FOR DIGIT", &reply))
            }
            None => Err(AgiError::unexpected("WAIT FOR DIGIT", &reply)),
        }
    }
}
