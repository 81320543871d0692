//! Command lines and argument quoting: the one place text becomes an AGI command line.
//!
//! # Quoting
//!
//! Asterisk splits a command line with `parse_args()` in `res/res_agi.c`: words are separated by
//! spaces or tabs, `"` toggles quoting, and `\` makes the next character literal. [`quote`]
//! writes a word that this parser reads back unchanged; [`split_args`] is the parser itself, ported
//! line for line so tests and fakes can check what Asterisk would see.
//!
//! Three things can never be made safe and are refused before anything is sent:
//! * CR or LF: Asterisk reads a command up to `\n`, so an LF would end the command early and the
//!   rest of the text would run as a second command. A CR is not stripped and corrupts the
//!   argument.
//! * NUL: Asterisk handles the line as a C string and would silently cut it there.
//! * A line of more than 8191 bytes with its `\n`: Asterisk reads commands through an
//!   8192-byte buffer and runs the remainder of a longer line as another command.

use std::fmt::Write as _;

use crate::agi::error::AgiError;

/// Asterisk keeps at most 127 arguments (MAX_ARGS - 1) and drops the rest.
pub const MAX_ARGS: usize = 127;

/// The longest command line, `\n` included, that Asterisk reads as one command.
pub const MAX_COMMAND_LINE: usize = 8191;

/// A command line that has passed every check and is ready to be written, `\n` included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    line: String,
    args: usize,
}

impl CommandLine {
    /// Starts a line with the command's fixed words, e.g. `STREAM FILE`.
    pub fn new(words: &str) -> Self {
        CommandLine { line: words.to_owned(), args: words.split(' ').count() }
    }

    /// Appends one argument, quoted as needed. Refuses CR, LF and NUL.
    pub fn arg(mut self, value: &str) -> Result<Self, AgiError> {
        self.line.push(' ');
        quote_into(value, &mut self.line)?;
        self.args += 1;
        Ok(self)
    }

    /// Appends a number.
    pub fn num(mut self, value: i64) -> Self {
        let _ = write!(self.line, " {value}");
        self.args += 1;
        self
    }

    /// Appends an argument when there is one.
    pub fn opt_arg(self, value: Option<&str>) -> Result<Self, AgiError> {
        match value {
            Some(value) => self.arg(value),
            None => Ok(self),
        }
    }

    /// Checks the whole line and ends it with `\n`.
    pub(crate) fn finish(mut self) -> Result<String, AgiError> {
        if self.args > MAX_ARGS {
            return Err(AgiError::InvalidArgument {
                reason: format!("{} words; Asterisk keeps at most {MAX_ARGS}", self.args),
            });
        }
        self.line.push('\n');
        if self.line.len() > MAX_COMMAND_LINE {
            return Err(AgiError::CommandTooLong { len: self.line.len(), limit: MAX_COMMAND_LINE });
        }
        Ok(self.line)
    }

    /// The line as it will be sent, without the `\n`.
    pub fn as_str(&self) -> &str {
        &self.line
    }
}

/// Quotes `value` so that Asterisk's parser reads it back as exactly one argument equal to
/// `value`. Plain words go out as they are; anything else is wrapped in `"…"` with `"` and `\`
/// escaped.
pub fn quote(value: &str) -> Result<String, AgiError> {
    let mut out = String::with_capacity(value.len() + 2);
    quote_into(value, &mut out)?;
    Ok(out)
}

fn quote_into(value: &str, out: &mut String) -> Result<(), AgiError> {
    if let Some(bad) = value.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        let name = match bad {
            '\r' => "CR",
            '\n' => "LF",
            _ => "NUL",
        };
        return Err(AgiError::InvalidArgument {
            reason: format!("argument contains {name}, which would end or cut the command line"),
        });
    }
    let plain = !value.is_empty() && !value.contains([' ', '\t', '"', '\\']);
    if plain {
        out.push_str(value);
        return Ok(());
    }
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(())
}

/// Splits a command line exactly as Asterisk 22's `parse_args()` does, including its limit of
/// 127 arguments (later words are dropped, as Asterisk drops them).
pub fn split_args(line: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let (mut quoted, mut escaped, mut whitespace) = (false, false, true);
    for c in line.chars() {
        match c {
            '"' if !escaped => {
                quoted = !quoted;
                if quoted && whitespace {
                    args.push(String::new());
                    whitespace = false;
                }
                escaped = false;
                continue;
            }
            ' ' | '\t' if !quoted && !escaped => {
                whitespace = true;
                continue;
            }
            '\\' if !escaped => {
                escaped = true;
                continue;
            }
            _ => {}
        }
        if whitespace {
            if args.len() >= MAX_ARGS {
                continue;
            }
            args.push(String::new());
            whitespace = false;
        }
        if let Some(current) = args.last_mut() {
            current.push(c);
        }
        escaped = false;
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agi::command::{Command, SetVariable, Verbose};

    #[test]
    fn quoting_matches_the_captures() {
        assert_eq!(quote("bar").unwrap(), "bar");
        assert_eq!(quote("hello world").unwrap(), "\"hello world\"");
        assert_eq!(quote("a \"quoted\" value").unwrap(), r#""a \"quoted\" value""#);
        assert_eq!(quote("").unwrap(), "\"\"");
        assert_eq!(quote("back\\slash").unwrap(), r#""back\\slash""#);
        assert_eq!(
            split_args(r#"SET VARIABLE Q "a \"quoted\" value""#),
            ["SET", "VARIABLE", "Q", "a \"quoted\" value"]
        );
        assert_eq!(split_args("SET VARIABLE B back\\slash"), ["SET", "VARIABLE", "B", "backslash"]);
        assert_eq!(split_args("SET VARIABLE E \"\""), ["SET", "VARIABLE", "E", ""]);
    }

    #[test]
    fn cr_lf_and_nul_are_refused() {
        for bad in ["a\rb", "a\nb", "\"; HANGUP\n", "nul\0"] {
            assert!(matches!(quote(bad), Err(AgiError::InvalidArgument { .. })), "{bad:?}");
            assert!(SetVariable::new("X", bad).line().is_err());
        }
    }

    #[test]
    fn a_line_asterisk_would_split_is_refused() {
        let long = "x".repeat(MAX_COMMAND_LINE);
        let err = Verbose::new(long, 1).line().unwrap().finish().unwrap_err();
        assert!(matches!(err, AgiError::CommandTooLong { .. }));
        let fits = "x".repeat(MAX_COMMAND_LINE - "VERBOSE  1\n".len());
        assert!(Verbose::new(fits, 1).line().unwrap().finish().is_ok());
    }
}
