//! [`Raw`]: any command this module has no type for, with Asterisk's table of which commands run
//! on a dead channel.

use std::borrow::Cow;

use super::{Command, CommandLine, Wait};
use crate::agi::error::AgiError;
use crate::agi::reply::Reply;

/// Asterisk 22's AGI command table (res_agi.c, plus GOSUB from app_stack.c): each command's
/// words and whether it runs on a dead channel (`dead = 1`).
const ASTERISK_COMMANDS: &[(&[&str], bool)] = &[
    (&["answer"], false),
    (&["asyncagi", "break"], true),
    (&["channel", "status"], false),
    (&["database", "del"], true),
    (&["database", "deltree"], true),
    (&["database", "get"], true),
    (&["database", "put"], true),
    (&["exec"], true),
    (&["get", "data"], false),
    (&["get", "full", "variable"], true),
    (&["get", "option"], false),
    (&["get", "variable"], true),
    (&["gosub"], false),
    (&["hangup"], false),
    (&["noop"], true),
    (&["receive", "char"], false),
    (&["receive", "text"], false),
    (&["record", "file"], false),
    (&["say", "alpha"], false),
    (&["say", "digits"], false),
    (&["say", "number"], false),
    (&["say", "phonetic"], false),
    (&["say", "date"], false),
    (&["say", "time"], false),
    (&["say", "datetime"], false),
    (&["send", "image"], false),
    (&["send", "text"], false),
    (&["set", "autohangup"], false),
    (&["set", "callerid"], false),
    (&["set", "context"], false),
    (&["set", "extension"], false),
    (&["set", "music"], false),
    (&["set", "priority"], false),
    (&["set", "variable"], true),
    (&["stream", "file"], false),
    (&["control", "stream", "file"], false),
    (&["tdd", "mode"], false),
    (&["verbose"], true),
    (&["wait", "for", "digit"], false),
    (&["speech", "create"], false),
    (&["speech", "set"], false),
    (&["speech", "destroy"], true),
    (&["speech", "load", "grammar"], false),
    (&["speech", "unload", "grammar"], true),
    (&["speech", "activate", "grammar"], false),
    (&["speech", "deactivate", "grammar"], false),
    (&["speech", "recognize"], false),
];

/// Any other command: fixed words plus quoted arguments, answered with the raw [`Reply`].
///
/// Arguments are quoted like every other command's; the words are checked for CR, LF and NUL.
/// Whether the command is allowed on a dead channel comes from Asterisk's own table.
#[derive(Debug, Clone)]
pub struct Raw {
    words: String,
    args: Vec<String>,
}

impl Raw {
    /// A command such as `Raw::new("SET AUTOHANGUP").arg("30")`.
    pub fn new(words: impl Into<String>) -> Self {
        Raw { words: words.into(), args: Vec::new() }
    }

    pub fn arg(mut self, value: impl Into<String>) -> Self {
        self.args.push(value.into());
        self
    }
}

impl Command for Raw {
    type Output = Reply;
    fn name(&self) -> Cow<'static, str> {
        Cow::Owned(self.words.to_ascii_uppercase())
    }
    fn line(&self) -> Result<CommandLine, AgiError> {
        let words: Vec<&str> = self.words.split_whitespace().collect();
        if words.is_empty() {
            return Err(AgiError::InvalidArgument { reason: "empty command".into() });
        }
        for word in &words {
            if word.contains(['"', '\\', '\r', '\n', '\0']) {
                return Err(AgiError::InvalidArgument {
                    reason: format!("command word {word:?} must be plain; pass text as an argument"),
                });
            }
        }
        let mut line = CommandLine::new(&words.join(" "));
        for arg in &self.args {
            line = line.arg(arg)?;
        }
        Ok(line)
    }
    /// Asterisk answers a command it does not know with 510 even on a dead channel, so only
    /// known commands without the dead flag are refused.
    fn dead_safe(&self) -> bool {
        let words: Vec<String> = self.words.split_whitespace().map(str::to_ascii_lowercase).collect();
        ASTERISK_COMMANDS
            .iter()
            .find(|(entry, _)| words.len() >= entry.len() && entry.iter().zip(&words).all(|(a, b)| a == b))
            .is_none_or(|(_, dead)| *dead)
    }
    fn wait(&self) -> Wait {
        Wait::Unbounded
    }
    fn parse(&self, reply: Reply) -> Result<Reply, AgiError> {
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_commands_take_dead_safety_from_the_table() {
        assert!(Raw::new("database deltree").dead_safe());
        assert!(Raw::new("GET FULL VARIABLE").dead_safe());
        assert!(!Raw::new("SAY ALPHA").dead_safe());
        assert!(!Raw::new("GET DATA").dead_safe());
        // Unknown commands are sent: Asterisk answers them 510 whether or not the channel is dead.
        assert!(Raw::new("FOOBAR").dead_safe());
    }
}
