//! The channel itself and the console: ANSWER, HANGUP, CHANNEL STATUS, SET MUSIC, VERBOSE, NOOP.

use std::borrow::Cow;

use super::failed;
use super::{Command, CommandLine, Wait};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// `ANSWER`: answers the channel if it is not up yet.
#[derive(Debug, Clone, Default)]
pub struct Answer;

impl Command for Answer {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "ANSWER".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        Ok(CommandLine::new("ANSWER"))
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<(), AgiError> {
        match reply.result_int() {
            Some(0) => Ok(()),
            _ => Err(failed("ANSWER", &reply)),
        }
    }
}

/// `HANGUP [channel]`: hangs up this channel, or the named one.
#[derive(Debug, Clone, Default)]
pub struct Hangup {
    pub channel: Option<String>,
}

impl Command for Hangup {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "HANGUP".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("HANGUP").opt_arg(self.channel.as_deref())
    }
    fn parse(&self, reply: Reply) -> Result<(), AgiError> {
        match reply.result_int() {
            Some(1) => Ok(()),
            _ => Err(failed("HANGUP", &reply)),
        }
    }
}

/// A channel's state as CHANNEL STATUS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// 0: down and available.
    Down,
    /// 1: down, but reserved.
    Reserved,
    /// 2: off hook.
    OffHook,
    /// 3: digits have been dialed.
    Dialing,
    /// 4: the line is ringing.
    Ring,
    /// 5: the remote end is ringing.
    Ringing,
    /// 6: the line is up.
    Up,
    /// 7: the line is busy.
    Busy,
}

/// `CHANNEL STATUS [channel]`.
#[derive(Debug, Clone, Default)]
pub struct ChannelStatus {
    pub channel: Option<String>,
}

impl Command for ChannelStatus {
    type Output = ChannelState;
    fn name(&self) -> Cow<'static, str> {
        "CHANNEL STATUS".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("CHANNEL STATUS").opt_arg(self.channel.as_deref())
    }
    fn parse(&self, reply: Reply) -> Result<ChannelState, AgiError> {
        use ChannelState::*;
        Ok(match reply.result_int() {
            Some(0) => Down,
            Some(1) => Reserved,
            Some(2) => OffHook,
            Some(3) => Dialing,
            Some(4) => Ring,
            Some(5) => Ringing,
            Some(6) => Up,
            Some(7) => Busy,
            Some(-1) => return Err(failed("CHANNEL STATUS", &reply)),
            _ => return Err(AgiError::unexpected("CHANNEL STATUS", &reply)),
        })
    }
}

/// `SET MUSIC <on|off> [class]`: music on hold.
#[derive(Debug, Clone)]
pub struct SetMusic {
    pub on: bool,
    pub class: Option<String>,
}

impl Command for SetMusic {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "SET MUSIC".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("SET MUSIC").arg(if self.on { "on" } else { "off" })?.opt_arg(self.class.as_deref())
    }
    simple_parse!();
}

/// `VERBOSE <message> <level>`: writes to the Asterisk console.
#[derive(Debug, Clone)]
pub struct Verbose {
    pub message: String,
    pub level: u8,
}

impl Verbose {
    pub fn new(message: impl Into<String>, level: u8) -> Self {
        Verbose { message: message.into(), level }
    }
}

impl Command for Verbose {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "VERBOSE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        Ok(CommandLine::new("VERBOSE").arg(&self.message)?.num(i64::from(self.level)))
    }
    fn dead_safe(&self) -> bool {
        true
    }
    simple_parse!();
}

/// `NOOP [text]`: does nothing; answers at once.
#[derive(Debug, Clone, Default)]
pub struct Noop {
    pub text: Option<String>,
}

impl Command for Noop {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "NOOP".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("NOOP").opt_arg(self.text.as_deref())
    }
    fn dead_safe(&self) -> bool {
        true
    }
    simple_parse!();
}
