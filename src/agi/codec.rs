//! Framing: bytes from Asterisk into [`Frame`]s.
//!
//! The shape is tokio-util's `LinesCodec`: a line may be at most `max_line` bytes (8192 by
//! default, Asterisk's own buffer size), the search for `\n` resumes where it stopped, and after an
//! over-long line the codec reports the error once, then discards up to the next `\n` and
//! recovers. On top of lines it knows the two phases of a session:
//!
//! 1. the environment block: `agi_<name>: <value>` lines ended by one empty line;
//! 2. replies: one line each, except `520-…` usage blocks, read through `520 End of proper usage.`
//!
//! `HANGUP` is recognised at any line boundary of the reply phase, even between the lines of a
//! usage block, because Asterisk writes it from a different code path than command replies.

use std::fmt;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::parse;
use super::reply::Reply;

/// Asterisk reads and writes AGI lines through an 8192-byte buffer.
pub const DEFAULT_MAX_LINE: usize = 8192;

/// The most usage text a `520-` block may carry. Asterisk's longest is under 2 KiB.
const MAX_USAGE_BLOCK: usize = 64 * 1024;

/// One unit of the protocol as Asterisk sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An `agi_<name>: <value>` line of the environment block.
    EnvLine(EnvLine),
    /// The empty line that ends the environment block.
    EnvEnd,
    /// A complete reply: one line, or a whole `520` usage block.
    Reply(Reply),
    /// `HANGUP`: the channel has hung up. Later commands run in dead-channel mode.
    Hangup,
}

/// An environment line, stored as the line itself plus where the value starts.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvLine {
    line: String,
    key_len: usize,
    value_at: usize,
}

impl EnvLine {
    /// The variable name, with its `agi_` prefix.
    pub fn key(&self) -> &str {
        &self.line[..self.key_len]
    }

    /// The value exactly as sent, trailing spaces included.
    pub fn value(&self) -> &str {
        &self.line[self.value_at..]
    }
}

impl fmt::Debug for EnvLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.key(), self.value())
    }
}

/// Why a byte stream could not be framed. Each variant names what was expected.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("line is not valid UTF-8: {preview}")]
    InvalidUtf8 { preview: String },
    #[error("expected an agi_ variable or the empty line that ends the environment, got {line:?}")]
    BadEnvLine { line: String },
    #[error("expected a reply such as `200 result=…` or HANGUP, got {line:?}")]
    Garbage { line: String },
    #[error("520 usage block longer than {limit} bytes")]
    UsageTooLong { limit: usize },
    #[error("connection ended in the middle of a line")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Env,
    Replies,
}

/// Decoder of the Asterisk side of a FastAGI session.
#[derive(Debug)]
pub struct AgiCodec {
    max_line: usize,
    /// Where the search for `\n` resumes in the buffer.
    next_index: usize,
    /// Set after an over-long line, until its `\n` has been skipped.
    discarding: bool,
    phase: Phase,
    /// The usage text of a `520-` block being read, and whether it has a line yet.
    usage: Option<(String, bool)>,
}

impl Default for AgiCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl AgiCodec {
    /// A codec at the start of a session, expecting the environment block.
    pub fn new(max_line: usize) -> Self {
        Self { max_line, next_index: 0, discarding: false, phase: Phase::Env, usage: None }
    }

    /// A codec past the environment block, expecting replies.
    pub fn for_replies(max_line: usize) -> Self {
        Self { phase: Phase::Replies, ..Self::new(max_line) }
    }

    /// Takes the next complete line out of `buf`, without its `\n`.
    fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        loop {
            let searched = self.next_index.min(buf.len());
            let newline = buf[searched..].iter().position(|b| *b == b'\n').map(|i| searched + i);
            match (self.discarding, newline) {
                (true, Some(at)) => {
                    buf.advance(at + 1);
                    self.discarding = false;
                    self.next_index = 0;
                }
                (true, None) => {
                    buf.clear();
                    self.next_index = 0;
                    return Ok(None);
                }
                (false, Some(at)) if at > self.max_line => {
                    buf.advance(at + 1);
                    self.next_index = 0;
                    return Err(CodecError::LineTooLong { limit: self.max_line });
                }
                (false, Some(at)) => {
                    let mut line = buf.split_to(at + 1);
                    line.truncate(at);
                    self.next_index = 0;
                    return Ok(Some(line));
                }
                (false, None) if buf.len() > self.max_line => {
                    buf.clear();
                    self.discarding = true;
                    self.next_index = 0;
                    return Err(CodecError::LineTooLong { limit: self.max_line });
                }
                (false, None) => {
                    self.next_index = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn env_frame(&mut self, line: String) -> Result<Frame, CodecError> {
        if line.is_empty() {
            self.phase = Phase::Replies;
            return Ok(Frame::EnvEnd);
        }
        let Ok((_, (key, value))) = parse::env_line(&line) else {
            return Err(CodecError::BadEnvLine { line: preview(&line) });
        };
        let key_len = key.len();
        let value_at = line.len() - value.len();
        Ok(Frame::EnvLine(EnvLine { line, key_len, value_at }))
    }

    /// One line of the reply phase; `None` while a usage block is still open.
    fn reply_frame(&mut self, line: &str) -> Result<Option<Frame>, CodecError> {
        if line == "HANGUP" {
            return Ok(Some(Frame::Hangup));
        }
        if let Some((usage, started)) = &mut self.usage {
            if line.starts_with("520 ") {
                let text = self.usage.take().map(|(text, _)| text).unwrap_or_default();
                return Ok(Some(Frame::Reply(Reply::usage(text))));
            }
            if usage.len() + line.len() + 1 > MAX_USAGE_BLOCK {
                self.usage = None;
                return Err(CodecError::UsageTooLong { limit: MAX_USAGE_BLOCK });
            }
            if *started {
                usage.push('\n');
            }
            *started = true;
            usage.push_str(line);
            return Ok(None);
        }
        let garbage = || CodecError::Garbage { line: preview(line) };
        let (_, parsed) = parse::reply_line(line).map_err(|_| garbage())?;
        match (parsed.code, parsed.continued, parsed.result.is_some()) {
            (520, true, _) => {
                self.usage = Some((String::new(), false));
                Ok(None)
            }
            (100 | 200, false, true) | (510 | 511 | 520, false, false) => {
                Ok(Some(Frame::Reply(Reply::from_line(&parsed))))
            }
            _ => Err(garbage()),
        }
    }
}

impl Decoder for AgiCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        while let Some(line) = self.next_line(buf)? {
            let line = String::from_utf8(line.to_vec())
                .map_err(|e| CodecError::InvalidUtf8 { preview: preview(&String::from_utf8_lossy(e.as_bytes())) })?;
            let frame = match self.phase {
                Phase::Env => Some(self.env_frame(line)?),
                Phase::Replies => self.reply_frame(&line)?,
            };
            if frame.is_some() {
                return Ok(frame);
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && self.usage.is_none() && !self.discarding => Ok(None),
            None => {
                buf.clear();
                self.usage = None;
                Err(CodecError::Truncated)
            }
        }
    }
}

/// The start of a line, safe to log: at most 80 characters, control characters escaped by `{:?}`.
fn preview(line: &str) -> String {
    match line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut AgiCodec, bytes: &[u8]) -> Vec<Result<Frame, String>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
        out
    }

    #[test]
    fn environment_then_replies() {
        let mut codec = AgiCodec::default();
        let frames = decode_all(&mut codec, b"agi_network: yes\nagi_accountcode: \n\n200 result=0\nHANGUP\n");
        assert_eq!(frames.len(), 5);
        let Ok(Frame::EnvLine(line)) = &frames[1] else { panic!("{frames:?}") };
        assert_eq!((line.key(), line.value()), ("agi_accountcode", ""));
        assert_eq!(frames[2], Ok(Frame::EnvEnd));
        assert!(matches!(&frames[3], Ok(Frame::Reply(r)) if r.code == 200));
        assert_eq!(frames[4], Ok(Frame::Hangup));
    }

    #[test]
    fn usage_block_is_one_reply_even_with_hangup_inside() {
        let mut codec = AgiCodec::for_replies(DEFAULT_MAX_LINE);
        let frames = decode_all(
            &mut codec,
            b"520-Invalid command syntax.  Proper usage follows:\nSets a variable.\nHANGUP\nline two\n520 End of proper usage.\n",
        );
        assert_eq!(frames[0], Ok(Frame::Hangup));
        let Ok(Frame::Reply(reply)) = &frames[1] else { panic!("{frames:?}") };
        assert_eq!(reply.code, 520);
        assert_eq!(reply.text, "Sets a variable.\nline two");
    }

    #[test]
    fn partial_lines_wait_for_more_bytes() {
        let mut codec = AgiCodec::for_replies(DEFAULT_MAX_LINE);
        let mut buf = BytesMut::from(&b"200 resu"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"lt=1 (x)\n");
        let Some(Frame::Reply(reply)) = codec.decode(&mut buf).unwrap() else { panic!() };
        assert_eq!(reply.data.as_deref(), Some("x"));
    }

    #[test]
    fn over_long_line_is_reported_once_then_skipped() {
        let mut codec = AgiCodec::for_replies(16);
        let mut buf = BytesMut::from(&b"200 result=0 aaaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::LineTooLong { limit: 16 })));
        buf.extend_from_slice(b"aaaa\nHANGUP\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Hangup));
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let mut codec = AgiCodec::for_replies(16);
        let mut buf = BytesMut::from(&b"200 result=01234\n"[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::Reply(_)))));
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let mut codec = AgiCodec::default();
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&b"agi_x: \xff\xfe\n"[..])),
            Err(CodecError::InvalidUtf8 { .. })
        ));
        let mut codec = AgiCodec::default();
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&b"200 result=0\n"[..])),
            Err(CodecError::BadEnvLine { .. })
        ));
        let mut codec = AgiCodec::for_replies(DEFAULT_MAX_LINE);
        assert!(matches!(codec.decode(&mut BytesMut::from(&b"hello there\n"[..])), Err(CodecError::Garbage { .. })));
        let mut codec = AgiCodec::for_replies(DEFAULT_MAX_LINE);
        let mut buf = BytesMut::from(&b"200 result=0"[..]);
        assert!(matches!(codec.decode_eof(&mut buf), Err(CodecError::Truncated)));
    }
}
