//! Asterisk's own key-value store (AstDB): DATABASE GET, PUT, DEL, DELTREE.

use std::borrow::Cow;

use super::{Command, CommandLine};
use super::{failed, optional_value};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// `DATABASE GET <family> <key>`: `None` when the key does not exist.
#[derive(Debug, Clone)]
pub struct DatabaseGet {
    pub family: String,
    pub key: String,
}

impl Command for DatabaseGet {
    type Output = Option<String>;
    fn name(&self) -> Cow<'static, str> {
        "DATABASE GET".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("DATABASE GET").arg(&self.family)?.arg(&self.key)
    }
    fn dead_safe(&self) -> bool {
        true
    }
    fn parse(&self, reply: Reply) -> Result<Option<String>, AgiError> {
        optional_value("DATABASE GET", reply)
    }
}

fn database_ok(command: &str, reply: &Reply) -> Result<(), AgiError> {
    match reply.result_int() {
        Some(1) => Ok(()),
        _ => Err(failed(command, reply)),
    }
}

/// `DATABASE PUT <family> <key> <value>`.
#[derive(Debug, Clone)]
pub struct DatabasePut {
    pub family: String,
    pub key: String,
    pub value: String,
}

impl Command for DatabasePut {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "DATABASE PUT".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("DATABASE PUT").arg(&self.family)?.arg(&self.key)?.arg(&self.value)
    }
    fn dead_safe(&self) -> bool {
        true
    }
    fn parse(&self, reply: Reply) -> Result<(), AgiError> {
        database_ok("DATABASE PUT", &reply)
    }
}

/// `DATABASE DEL <family> <key>`.
#[derive(Debug, Clone)]
pub struct DatabaseDel {
    pub family: String,
    pub key: String,
}

impl Command for DatabaseDel {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "DATABASE DEL".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("DATABASE DEL").arg(&self.family)?.arg(&self.key)
    }
    fn dead_safe(&self) -> bool {
        true
    }
    fn parse(&self, reply: Reply) -> Result<(), AgiError> {
        database_ok("DATABASE DEL", &reply)
    }
}

/// `DATABASE DELTREE <family> [keytree]`.
#[derive(Debug, Clone)]
pub struct DatabaseDelTree {
    pub family: String,
    pub keytree: Option<String>,
}

impl Command for DatabaseDelTree {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "DATABASE DELTREE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("DATABASE DELTREE").arg(&self.family)?.opt_arg(self.keytree.as_deref())
    }
    fn dead_safe(&self) -> bool {
        true
    }
    /// Asterisk reports DELTREE's outcome inverted (`result=0` when keys were deleted), and the
    /// count is not meaningful to callers; any `200` means the command ran.
    fn parse(&self, _reply: Reply) -> Result<(), AgiError> {
        Ok(())
    }
}
