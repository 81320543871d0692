//! AGI commands: one type per command, each with its own reply type, grouped by family, and the
//! quoting that makes any text safe to put on a command line.
//!
//! | file | commands |
//! |---|---|
//! | [`args`] | no command: [`CommandLine`], [`quote`] and [`split_args`], the quoting rules |
//! | `channel.rs` | [`Answer`], [`Hangup`], [`ChannelStatus`], [`SetMusic`], [`Verbose`], [`Noop`] |
//! | `playback.rs` | [`StreamFile`], [`ControlStreamFile`], [`GetOption`], [`SayDigits`], [`SayNumber`] |
//! | `digits.rs` | [`GetData`], [`WaitForDigit`] |
//! | `record.rs` | [`RecordFile`] |
//! | `variables.rs` | [`GetVariable`], [`GetFullVariable`], [`SetVariable`] |
//! | `database.rs` | [`DatabaseGet`], [`DatabasePut`], [`DatabaseDel`], [`DatabaseDelTree`] |
//! | `dialplan.rs` | [`Exec`], [`Gosub`] |
//! | `raw.rs` | [`Raw`]: any other command, with Asterisk's dead-channel table |
//!
//! Every command implements [`Command`]: its line (built with [`CommandLine`], so every argument
//! is quoted and checked), whether it may run on a dead channel, how long Asterisk may take, and
//! how a reply becomes its typed output.

use std::borrow::Cow;
use std::time::Duration;

use super::error::AgiError;
use super::reply::Reply;

// Defined before the modules below so that they can use it.
macro_rules! simple_parse {
    () => {
        fn parse(&self, _reply: Reply) -> Result<(), AgiError> {
            Ok(())
        }
    };
}

pub mod args;
mod channel;
mod database;
mod dialplan;
mod digits;
mod playback;
mod raw;
mod record;
mod variables;

pub use args::{CommandLine, MAX_ARGS, MAX_COMMAND_LINE, quote, split_args};
pub use channel::{Answer, ChannelState, ChannelStatus, Hangup, Noop, SetMusic, Verbose};
pub use database::{DatabaseDel, DatabaseDelTree, DatabaseGet, DatabasePut};
pub use dialplan::{Exec, Gosub};
pub use digits::{DataInput, DigitWait, GetData, WaitForDigit};
pub use playback::{ControlStreamFile, GetOption, Played, SayDigits, SayNumber, StreamFile};
pub use raw::Raw;
pub use record::{RecordEnd, RecordFile, Recording};
pub use variables::{GetFullVariable, GetVariable, SetVariable};

/// How long Asterisk may take to answer a command, as far as the command itself says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Asterisk answers at once (variables, database, verbose…).
    Immediate,
    /// Asterisk answers within this time (a command with its own timeout).
    Within(Duration),
    /// Playback, `EXEC` or an infinite timeout: the reply may take any time.
    Unbounded,
}

/// An AGI command with a typed reply.
pub trait Command {
    /// What a `200` reply means for this command.
    type Output;

    /// The command's name for logs and errors, e.g. `"STREAM FILE"`.
    fn name(&self) -> Cow<'static, str>;

    /// The command line, quoted and checked.
    fn line(&self) -> Result<CommandLine, AgiError>;

    /// Whether Asterisk runs this command after the channel has hung up. Asterisk answers the
    /// others with 511, so the session refuses them without sending.
    fn dead_safe(&self) -> bool {
        false
    }

    /// How long Asterisk may take to answer.
    fn wait(&self) -> Wait {
        Wait::Immediate
    }

    /// Turns a `100`/`200` reply into the output. `510`, `511` and `520` never reach here.
    fn parse(&self, reply: Reply) -> Result<Self::Output, AgiError>;
}

fn failed(command: &str, reply: &Reply) -> AgiError {
    AgiError::CommandFailed { command: command.to_owned(), reply: reply.to_string() }
}

fn digit_from_code(code: i64) -> Option<char> {
    u32::try_from(code).ok().and_then(char::from_u32)
}

fn timed(ms: i64) -> Wait {
    match u64::try_from(ms) {
        Ok(ms) => Wait::Within(Duration::from_millis(ms)),
        Err(_) => Wait::Unbounded,
    }
}

fn optional_value(command: &str, reply: Reply) -> Result<Option<String>, AgiError> {
    match reply.result_int() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(reply.data.unwrap_or_default())),
        _ => Err(AgiError::unexpected(command, &reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<C: Command>(command: C) -> String {
        command.line().unwrap().as_str().to_owned()
    }

    #[test]
    fn command_lines() {
        assert_eq!(line(StreamFile::new("hello-world")), "STREAM FILE hello-world \"\"");
        assert_eq!(line(RecordFile::wav("/tmp/r", 8000).silence(2)), "RECORD FILE /tmp/r wav # 8000 0 s=2");
        assert_eq!(
            line(RecordFile { beep: true, ..RecordFile::wav("/tmp/r", 3000) }),
            "RECORD FILE /tmp/r wav # 3000 BEEP"
        );
        assert_eq!(line(GetData::new("beep", 2000, 4)), "GET DATA beep 2000 4");
        assert_eq!(line(Exec::new("Set", "X_FROM_EXEC=42")), "EXEC Set X_FROM_EXEC=42");
        assert_eq!(line(Verbose::new("hi", 1)), "VERBOSE hi 1");
        assert_eq!(line(Raw::new("set autohangup").arg("30")), "set autohangup 30");
    }
}
