//! Server-sent events (the `text/event-stream` of the HTML standard), decoded as bytes arrive.
//!
//! * Lines end at LF, CRLF or a lone CR, also when a CRLF is split between two reads.
//! * A line longer than the decoder's bound is an error, and so is an event whose data grows
//!   past it: a broken or hostile server cannot grow the buffer without end.
//! * Each byte is looked at once: the decoder remembers how far it searched the unfinished line
//!   (as tokio-util's `LinesCodec` does), so a long line arriving in small pieces costs no rescans.
//! * `data:` lines are joined with LF and handed on at the blank line that ends the event, with
//!   the `event:` name if there was one; `:` comments, `id:` and `retry:` are read and dropped
//!   (the clients here never reconnect), as is an event the stream ends in the middle of.

/// One event: its `event:` name (none for the default, `message`) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Why a stream cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("a server-sent event line is longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("a server-sent event's data is larger than {max} bytes")]
    EventTooLarge { max: usize },
}

/// Decodes a byte stream into [`SseEvent`]s; feed it with [`SseDecoder::push`].
#[derive(Debug)]
pub struct SseDecoder {
    /// The line not finished yet.
    line: Vec<u8>,
    /// The last byte taken ended a line with CR: an LF right after it belongs to it.
    after_cr: bool,
    /// The stream's first line is still to come (a UTF-8 byte-order mark is dropped from it).
    first: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    max: usize,
    /// Bytes looked at, for the test that nothing is scanned twice.
    #[cfg(test)]
    examined: usize,
}

impl SseDecoder {
    /// A decoder that refuses lines, and events' data, longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            first: true,
            data: String::new(),
            has_data: false,
            event: None,
            max,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Takes the next bytes of the stream; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if std::mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                rest = &rest[1..];
                continue;
            }
            #[cfg(test)]
            {
                self.examined += rest.iter().position(|b| matches!(b, b'\n' | b'\r')).map_or(rest.len(), |at| at + 1);
            }
            let Some(at) = rest.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
                self.extend(rest)?;
                break;
            };
            self.extend(&rest[..at])?;
            self.after_cr = rest[at] == b'\r';
            rest = &rest[at + 1..];
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_ended(&line)? {
                events.push(event);
            }
            self.line = line;
            self.line.clear();
        }
        Ok(events)
    }

    fn extend(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max {
            return Err(SseError::LineTooLong { max: self.max });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_ended(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        let line =
            if std::mem::take(&mut self.first) { line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line) } else { line };
        if line.is_empty() {
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return Ok(None);
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the LF after the last data line
            return Ok(Some(SseEvent { event, data }));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(at) => (&line[..at], line[at + 1..].strip_prefix(b" ").unwrap_or(&line[at + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(SseError::EventTooLarge { max: self.max });
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    /// Feeds `bytes` in every split into two pieces, and one byte at a time: the events are the same.
    fn decode(bytes: &[u8]) -> Vec<SseEvent> {
        let mut whole = SseDecoder::new(1024);
        let events = whole.push(bytes).unwrap();
        for cut in 0..=bytes.len() {
            let mut split = SseDecoder::new(1024);
            let mut got = split.push(&bytes[..cut]).unwrap();
            got.extend(split.push(&bytes[cut..]).unwrap());
            assert_eq!(got, events, "split at {cut}");
        }
        let mut bytewise = SseDecoder::new(1024);
        let got: Vec<SseEvent> = bytes.iter().flat_map(|b| bytewise.push(&[*b]).unwrap()).collect();
        assert_eq!(got, events, "one byte at a time");
        events
    }

    #[test]
    fn lf_crlf_and_cr_end_lines_even_split_between_reads() {
        for end in ["\n", "\r\n", "\r"] {
            let stream = ["data: {\"a\":1}", "", ": keep-alive", "", "data: [DONE]", "", ""].join(end);
            assert_eq!(data(&decode(stream.as_bytes())), ["{\"a\":1}", "[DONE]"], "{end:?}");
        }
        // A CRLF split between reads is one line end, not a line end and a blank line.
        let mut decoder = SseDecoder::new(1024);
        assert_eq!(decoder.push(b"data: a\r").unwrap(), []);
        assert_eq!(decoder.push(b"\ndata: b\r").unwrap(), []);
        assert_eq!(data(&decoder.push(b"\n\r\n").unwrap()), ["a\nb"]);
        // Mixed in one stream.
        assert_eq!(data(&decode(b"data: x\r\rdata: y\n\ndata: z\r\n\r\n")), ["x", "y", "z"]);
    }

    #[test]
    fn fields_as_the_standard_reads_them() {
        let stream = b"\xEF\xBB\xBFdata:no space\n\n\
            event: delta\ndata:  two spaces\ndata\n\n\
            id: 7\nretry: 10\n\n\
            data\n\n\
            : comment\nevent: ping\n\n\
            data: after a nameless-event reset\n\n\
            data: cut off";
        let events = decode(stream);
        let expect = [
            SseEvent { event: None, data: "no space".into() },
            SseEvent { event: Some("delta".into()), data: " two spaces\n".into() },
            SseEvent { event: None, data: String::new() },
            SseEvent { event: None, data: "after a nameless-event reset".into() },
        ];
        assert_eq!(events, expect);
    }

    #[test]
    fn long_lines_and_events_are_refused() {
        let mut decoder = SseDecoder::new(16);
        assert_eq!(decoder.push(b"data: 0123456789").unwrap(), []);
        assert_eq!(decoder.push(b"x"), Err(SseError::LineTooLong { max: 16 }));
        let mut decoder = SseDecoder::new(16);
        assert_eq!(decoder.push(b"data: 0123456789\n").unwrap(), []);
        assert_eq!(decoder.push(b"data: 0123456\n"), Err(SseError::EventTooLarge { max: 16 }));
        // A line ending exactly at the bound is fine; so are many short lines.
        let mut decoder = SseDecoder::new(16);
        let many = "data: 0123456789\n\n".repeat(1000);
        assert_eq!(decoder.push(many.as_bytes()).unwrap().len(), 1000);
    }

    #[test]
    fn each_byte_is_looked_at_once() {
        let line = format!("data: {}\n\n", "x".repeat(100_000));
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        for piece in line.as_bytes().chunks(7) {
            events.extend(decoder.push(piece).unwrap());
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 100_000);
        assert_eq!(decoder.examined, line.len());
    }
}
