//! The server side of WebSocket (RFC 6455) for the live feed: server frames, and a strict reader
//! of client frames (the handshake is [`crate::http::upgrade`]).
//!
//! The feed writes the same event to every supervisor. A server frame is never masked, so an
//! event's frame is identical for every client: the hub encodes it once ([`frame`]) and each
//! connection writes those shared bytes, several events with one write. A general WebSocket
//! library would frame and copy every message once per client.
//!
//! Client frames are read strictly: they must be masked, use no extension bits, keep control
//! frames unfragmented and at most 125 bytes, and keep messages within the size limit. Anything
//! else ends the connection with the close code the RFC names (1002, 1003, 1007, 1009). A
//! client's close frame must carry a code a peer may send and a UTF-8 reason.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close code: protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a data type the server does not accept.
pub const CLOSE_UNSUPPORTED: u16 = 1003;
/// Close code: text that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: a message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// A complete, unmasked server frame: FIN set, one opcode, the payload.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with a status code and a reason (cut to fit the 125-byte control limit).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OP_CLOSE, &payload)
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(usize),
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its code if it gave one.
    Close(Option<u16>),
}

/// A client that broke the protocol; the connection ends with `code`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct ProtocolError {
    pub code: u16,
    pub reason: &'static str,
}

/// The code of a client's close frame, checked as RFC 6455 says (sections 5.5.1 and 7.4): no
/// payload, or a code a peer may send (1000-1003, 1007-1014, 3000-4999: never 1004-1006, 1015,
/// nor an unassigned one) followed by a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, ProtocolError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => Ok(None),
            _ => Err(violation(CLOSE_PROTOCOL, "a close frame's payload is a two-byte code or nothing")),
        };
    };
    let code = u16::from_be_bytes(*code);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(violation(CLOSE_PROTOCOL, "a close code that a peer may not send"));
    }
    std::str::from_utf8(reason).map_err(|_| violation(CLOSE_INVALID_DATA, "the close reason is not valid UTF-8"))?;
    Ok(Some(code))
}

fn violation(code: u16, reason: &'static str) -> ProtocolError {
    ProtocolError { code, reason }
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads client frames, reassembles fragmented messages, unmasks payloads.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_message: usize,
    /// The opcode and payload of a fragmented message being assembled.
    partial: Option<(u8, BytesMut)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `leftover` holds bytes already read past the handshake.
    pub fn new(io: R, leftover: Bytes, max_message: usize) -> Self {
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&leftover);
        FrameReader { io, buf, max_message, partial: None }
    }

    /// After a close sent for a protocol error: reads and discards whatever the client still
    /// sends, until it closes the connection, stays silent for `idle`, or `limit` (time or
    /// bytes) is reached. Closing a socket with unread data makes the kernel reset the
    /// connection, and a client still sending (a message over the limit, say) would then get
    /// the reset instead of the close frame that says why.
    pub async fn linger(mut self, idle: std::time::Duration, limit: std::time::Duration, max_bytes: usize) {
        let drain = async {
            let mut scratch = vec![0u8; 8 * 1024];
            let mut drained = 0usize;
            while drained < max_bytes {
                match tokio::time::timeout(idle, self.io.read(&mut scratch)).await {
                    Ok(Ok(n)) if n > 0 => drained += n,
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }

    /// The next message; `None` when the client closed the TCP connection.
    pub async fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(Some(message));
            }
            if self.buf.capacity() - self.buf.len() < 64 {
                self.buf.reserve(512);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Takes one complete frame from the buffer, if there is one; returns the message it
    /// completes, if any.
    fn parse(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        loop {
            let Some((fin, opcode, header, len)) = self.header()? else { return Ok(None) };
            if self.buf.len() < header + len {
                return Ok(None);
            }
            let mask: [u8; 4] = self.buf[header - 4..header].try_into().expect("4-byte mask");
            self.buf.advance(header);
            let mut payload = self.buf.split_to(len);
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            match opcode {
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_CLOSE => return Ok(Some(Incoming::Close(close_code(&payload)?))),
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(violation(CLOSE_PROTOCOL, "a new message started before the previous one ended"));
                    }
                    if fin {
                        return Ok(Some(message(opcode, payload)?));
                    }
                    self.partial = Some((opcode, payload));
                }
                OP_CONTINUATION => {
                    let Some((first, mut data)) = self.partial.take() else {
                        return Err(violation(CLOSE_PROTOCOL, "a continuation frame with no message to continue"));
                    };
                    if data.len() + payload.len() > self.max_message {
                        return Err(violation(CLOSE_TOO_BIG, "message over the size limit"));
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(message(first, data)?));
                    }
                    self.partial = Some((first, data));
                }
                _ => return Err(violation(CLOSE_PROTOCOL, "unknown opcode")),
            }
        }
    }

    /// FIN, opcode, header length (mask included) and payload length of the frame at the start
    /// of the buffer, once the whole header is there.
    fn header(&self) -> Result<Option<(bool, u8, usize, usize)>, ProtocolError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0F);
        let (masked, short) = (b[1] & 0x80 != 0, (b[1] & 0x7F) as usize);
        if rsv != 0 {
            return Err(violation(CLOSE_PROTOCOL, "extension bits set with no extension agreed"));
        }
        if !masked {
            return Err(violation(CLOSE_PROTOCOL, "client frames must be masked"));
        }
        let control = opcode & 0x8 != 0;
        if control && (!fin || short > 125) {
            return Err(violation(CLOSE_PROTOCOL, "control frames must be whole and at most 125 bytes"));
        }
        let (len, header) = match short {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([b[2], b[3]]) as usize, 8)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                (usize::try_from(len).unwrap_or(usize::MAX), 14)
            }
            len => (len, 6),
        };
        if len > self.max_message {
            return Err(violation(CLOSE_TOO_BIG, "message over the size limit"));
        }
        if b.len() < header {
            return Ok(None);
        }
        Ok(Some((fin, opcode, header, len)))
    }
}

fn message(opcode: u8, payload: BytesMut) -> Result<Incoming, ProtocolError> {
    if opcode == OP_BINARY {
        return Ok(Incoming::Binary(payload.len()));
    }
    String::from_utf8(payload.to_vec())
        .map(Incoming::Text)
        .map_err(|_| violation(CLOSE_INVALID_DATA, "text is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![first];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let mut reader = FrameReader::new(&bytes[..], Bytes::new(), max);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn server_frames() {
        assert_eq!(&frame(OP_TEXT, b"hi")[..], &[0x81, 2, b'h', b'i']);
        let long = frame(OP_TEXT, &[b'x'; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        let close = close_frame(4001, "slow_client last_id=7");
        assert_eq!(&close[..4], &[0x88, 23, 0x0F, 0xA1]);
        assert!(close_frame(1000, &"é".repeat(100)).len() <= 127);
    }

    #[tokio::test]
    async fn client_frames() {
        let mut bytes = client_frame(0x81, b"{\"filter\": null}");
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x01, b"hel"));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"lo"));
        bytes.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        let got = read_all(bytes, 1024).await;
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text("{\"filter\": null}".into())),
                Ok(Incoming::Pong),
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Text("hello".into())),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[tokio::test]
    async fn violations_name_their_close_code() {
        let unmasked = vec![0x81, 2, b'h', b'i'];
        assert!(matches!(read_all(unmasked, 1024).await.last(), Some(Err(e)) if e.contains("masked")));
        let big = client_frame(0x81, &[b'x'; 300]);
        assert!(matches!(read_all(big, 100).await.last(), Some(Err(e)) if e.contains("size limit")));
        let rsv = client_frame(0xC1, b"x");
        assert!(matches!(read_all(rsv, 100).await.last(), Some(Err(e)) if e.contains("extension")));
        let bad_utf8 = client_frame(0x81, &[0xff, 0xfe]);
        assert!(matches!(read_all(bad_utf8, 100).await.last(), Some(Err(e)) if e.contains("UTF-8")));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let close = client_frame(0x88, &code.to_be_bytes());
            let got = read_all(close, 100).await;
            assert!(matches!(got.last(), Some(Err(e)) if e.contains("close code")), "{code}: {got:?}");
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let close = client_frame(0x88, &code.to_be_bytes());
            assert_eq!(read_all(close, 100).await.last(), Some(&Ok(Incoming::Close(Some(code)))), "{code}");
        }
        let one_byte = client_frame(0x88, &[3]);
        assert!(matches!(read_all(one_byte, 100).await.last(), Some(Err(e)) if e.contains("two-byte code")));
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend([0xce, 0xba, 0xe1, 0xbd]);
        let bad_reason = client_frame(0x88, &bad_reason);
        assert!(matches!(read_all(bad_reason, 100).await.last(), Some(Err(e)) if e.contains("close reason")));
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.extend("κόσμε".as_bytes());
        assert_eq!(read_all(client_frame(0x88, &reason), 100).await.last(), Some(&Ok(Incoming::Close(Some(1000)))));
        assert_eq!(read_all(client_frame(0x88, b""), 100).await.last(), Some(&Ok(Incoming::Close(None))));
        let orphan = client_frame(0x80, b"x");
        assert!(matches!(read_all(orphan, 100).await.last(), Some(Err(e)) if e.contains("continuation")));
    }
}
