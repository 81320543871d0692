//! Running dialplan from AGI: EXEC (one application) and GOSUB (a subroutine).

use std::borrow::Cow;

use super::failed;
use super::{Command, CommandLine, Wait};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// `EXEC <application> <options>`: runs a dialplan application. The output is what the
/// application returned (`-2` means it does not exist and becomes an error).
#[derive(Debug, Clone)]
pub struct Exec {
    pub application: String,
    pub options: String,
}

impl Exec {
    pub fn new(application: impl Into<String>, options: impl Into<String>) -> Self {
        Exec { application: application.into(), options: options.into() }
    }
}

impl Command for Exec {
    type Output = i64;
    fn name(&self) -> Cow<'static, str> {
        "EXEC".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("EXEC").arg(&self.application)?.arg(&self.options)
    }
    fn dead_safe(&self) -> bool {
        true
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<i64, AgiError> {
        match reply.result_int() {
            Some(-2) => Err(AgiError::CommandFailed {
                command: format!("EXEC {}", self.application),
                reply: format!("{reply} (no such application)"),
            }),
            Some(n) => Ok(n),
            None => Err(AgiError::unexpected("EXEC", &reply)),
        }
    }
}

/// `GOSUB <context> <extension> <priority> [arguments]`: runs a dialplan subroutine. Asterisk
/// answers `100 result=0 Trying...` first, then the `200` reply when the subroutine returns.
#[derive(Debug, Clone)]
pub struct Gosub {
    pub context: String,
    pub extension: String,
    pub priority: String,
    pub arguments: Option<String>,
}

impl Command for Gosub {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "GOSUB".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("GOSUB")
            .arg(&self.context)?
            .arg(&self.extension)?
            .arg(&self.priority)?
            .opt_arg(self.arguments.as_deref())
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<(), AgiError> {
        match reply.result_int() {
            Some(0) => Ok(()),
            _ => Err(failed("GOSUB", &reply)),
        }
    }
}
