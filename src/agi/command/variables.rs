//! Channel variables: GET VARIABLE, GET FULL VARIABLE, SET VARIABLE.

use std::borrow::Cow;

use super::optional_value;
use super::{Command, CommandLine};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// `GET VARIABLE <name>`: `None` when the variable is not set.
#[derive(Debug, Clone)]
pub struct GetVariable {
    pub name: String,
}

impl GetVariable {
    pub fn new(name: impl Into<String>) -> Self {
        GetVariable { name: name.into() }
    }
}

impl Command for GetVariable {
    type Output = Option<String>;
    fn name(&self) -> Cow<'static, str> {
        "GET VARIABLE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("GET VARIABLE").arg(&self.name)
    }
    fn dead_safe(&self) -> bool {
        true
    }
    fn parse(&self, reply: Reply) -> Result<Option<String>, AgiError> {
        optional_value("GET VARIABLE", reply)
    }
}

/// `GET FULL VARIABLE <expression> [channel]`: evaluates `${…}` expressions and functions.
#[derive(Debug, Clone)]
pub struct GetFullVariable {
    pub expression: String,
    pub channel: Option<String>,
}

impl GetFullVariable {
    pub fn new(expression: impl Into<String>) -> Self {
        GetFullVariable { expression: expression.into(), channel: None }
    }
}

impl Command for GetFullVariable {
    type Output = Option<String>;
    fn name(&self) -> Cow<'static, str> {
        "GET FULL VARIABLE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("GET FULL VARIABLE").arg(&self.expression)?.opt_arg(self.channel.as_deref())
    }
    fn dead_safe(&self) -> bool {
        true
    }
    fn parse(&self, reply: Reply) -> Result<Option<String>, AgiError> {
        optional_value("GET FULL VARIABLE", reply)
    }
}

/// `SET VARIABLE <name> <value>`.
#[derive(Debug, Clone)]
pub struct SetVariable {
    pub name: String,
    pub value: String,
}

impl SetVariable {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        SetVariable { name: name.into(), value: value.into() }
    }
}

impl Command for SetVariable {
    type Output = ();
    fn name(&self) -> Cow<'static, str> {
        "SET VARIABLE".into()
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        CommandLine::new("SET VARIABLE").arg(&self.name)?.arg(&self.value)
    }
    fn dead_safe(&self) -> bool {
        true
    }
    simple_parse!();
}
