//! AGI commands: one type per command, each with its own reply type, and the quoting that makes
//! any text safe to put on a command line.
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

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use super::error::AgiError;
use super::reply::Reply;

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

/// The outcome of a command that plays audio: STREAM FILE, CONTROL STREAM FILE, GET OPTION and
/// the SAY family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Played {
    /// Playback ran to its end (or, for GET OPTION, the timeout passed with no digit).
    Finished { endpos: Option<i64> },
    /// The caller pressed one of the escape digits.
    Interrupted { digit: char, endpos: Option<i64> },
    /// `result=-1`: the file could not be played or the channel went away. Which one it was
    /// shows in [`super::AgiSession::is_hung_up`].
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

macro_rules! simple_parse {
    () => {
        fn parse(&self, _reply: Reply) -> Result<(), AgiError> {
            Ok(())
        }
    };
}

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

fn optional_value(command: &str, reply: Reply) -> Result<Option<String>, AgiError> {
    match reply.result_int() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(reply.data.unwrap_or_default())),
        _ => Err(AgiError::unexpected(command, &reply)),
    }
}

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

    fn line<C: Command>(command: C) -> String {
        command.line().unwrap().as_str().to_owned()
    }

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

    #[test]
    fn raw_commands_take_dead_safety_from_the_table() {
        assert!(Raw::new("database deltree").dead_safe());
        assert!(Raw::new("GET FULL VARIABLE").dead_safe());
        assert!(!Raw::new("SAY ALPHA").dead_safe());
        assert!(!Raw::new("GET DATA").dead_safe());
        // Unknown commands are sent: Asterisk answers them 510 whether or not the channel is dead.
        assert!(Raw::new("FOOBAR").dead_safe());
    }

    #[test]
    fn record_file_replies() {
        let parse = |line: &str| {
            let (_, l) = super::super::parse::reply_line(line).unwrap();
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
