//! chan_websocket's control messages, in both of its formats.
//!
//! Asterisk 22.8+ speaks JSON when the channel was created with `transport_data=f(json)`
//! (`{"command":"MARK_MEDIA","correlation_id":"s1"}` → `{"event":"MEDIA_MARK_PROCESSED",…}`);
//! otherwise, and on older 22.x, plain text (`MARK_MEDIA s1` → `MEDIA_MARK_PROCESSED s1`). Both
//! were captured on the real 22.10.1 (`fixtures/asterisk/media/ws-server-*.txt`); [`parse_event`]
//! reads either, whatever format the session asked for, so a misconfigured channel still works.
//!
//! Asterisk ignores text messages over 128 bytes without a word, so every command is checked
//! against that before it is sent ([`Command::encode`]).

use std::collections::BTreeMap;

use super::format::{Codec, MediaFormat};

/// The longest text message chan_websocket reads (`MAX_TEXT_MESSAGE_LEN`); longer ones are
/// dropped silently.
pub const MAX_TEXT_MESSAGE: usize = 128;

/// The longest mark id asterai sends: a JSON `MARK_MEDIA` with it stays under
/// [`MAX_TEXT_MESSAGE`].
pub const MAX_MARK_ID: usize = 64;

/// How control messages are written on one channel (`transport_data=f(…)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFormat {
    /// `f(json)`: Asterisk 22.8 and later.
    Json,
    /// The default: `COMMAND data`.
    PlainText,
}

/// A command to chan_websocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Hang up the WebSocket channel (the caller stays in the bridge).
    Hangup,
    /// Drop every frame queued for playback (and the marks among them).
    FlushMedia,
    /// Report `id` once the frames sent before it have been played.
    MarkMedia(String),
    /// Send `QUEUE_DRAINED` when the playback queue next runs empty.
    ReportQueueDrained,
    GetStatus,
    PauseMedia,
    ContinueMedia,
}

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hangup => "HANGUP",
            Command::FlushMedia => "FLUSH_MEDIA",
            Command::MarkMedia(_) => "MARK_MEDIA",
            Command::ReportQueueDrained => "REPORT_QUEUE_DRAINED",
            Command::GetStatus => "GET_STATUS",
            Command::PauseMedia => "PAUSE_MEDIA",
            Command::ContinueMedia => "CONTINUE_MEDIA",
        }
    }

    /// The text message, or why it cannot be sent.
    pub fn encode(&self, format: ControlFormat) -> Result<String, String> {
        if let Command::MarkMedia(id) = self {
            check_mark_id(id)?;
        }
        let text = match (format, self) {
            (ControlFormat::Json, Command::MarkMedia(id)) => {
                serde_json::json!({"command": "MARK_MEDIA", "correlation_id": id}).to_string()
            }
            (ControlFormat::Json, command) => serde_json::json!({"command": command.name()}).to_string(),
            (ControlFormat::PlainText, Command::MarkMedia(id)) => format!("MARK_MEDIA {id}"),
            (ControlFormat::PlainText, command) => command.name().to_owned(),
        };
        if text.len() > MAX_TEXT_MESSAGE {
            return Err(format!(
                "{} is {} bytes; chan_websocket ignores text messages over {MAX_TEXT_MESSAGE}",
                self.name(),
                text.len()
            ));
        }
        Ok(text)
    }
}

/// A mark id: 1 to [`MAX_MARK_ID`] of `A-Z a-z 0-9 . _ -` (a space would end it in plain text).
pub fn check_mark_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_MARK_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("mark id {id:?}: expected 1 to {MAX_MARK_ID} letters, digits, '.', '_' or '-'"))
    }
}

/// MEDIA_START: the first message of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaStart {
    pub connection_id: String,
    /// `WebSocket/INCOMING/0x…`.
    pub channel: String,
    /// The ARI id of the WebSocket channel.
    pub channel_id: String,
    /// As Asterisk named it.
    pub format_name: String,
    pub optimal_frame_size: usize,
    pub ptime: u32,
    /// JSON only: the channel's variables.
    pub channel_variables: BTreeMap<String, String>,
}

impl MediaStart {
    /// The format to stream in, when asterai knows it and the sizes agree.
    pub fn media_format(&self) -> Result<MediaFormat, String> {
        let codec = Codec::from_name(&self.format_name)
            .ok_or_else(|| format!("MEDIA_START format {:?}: expected ulaw, slin or slin16", self.format_name))?;
        let ptime = if self.ptime == 0 { 20 } else { self.ptime };
        if !(10..=200).contains(&ptime) {
            return Err(format!("MEDIA_START ptime {ptime}: expected 10 to 200 ms"));
        }
        let expected = codec.frame_bytes(ptime);
        let frame_bytes = if self.optimal_frame_size == 0 { expected } else { self.optimal_frame_size };
        if frame_bytes != expected {
            return Err(format!(
                "MEDIA_START optimal_frame_size {frame_bytes} for {codec} at {ptime} ms: expected {expected}"
            ));
        }
        Ok(MediaFormat { codec, ptime_ms: ptime, frame_bytes })
    }
}

/// chan_websocket's STATUS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub queue_length: u32,
    pub xon_level: u32,
    pub xoff_level: u32,
    pub queue_full: bool,
    pub bulk_media: bool,
    pub media_paused: bool,
}

/// An event from chan_websocket.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    MediaStart(MediaStart),
    /// The playback queue reached 900 frames: stop sending.
    MediaXoff,
    /// The queue fell back to 800: sending may resume.
    MediaXon,
    MarkProcessed(String),
    QueueDrained,
    BufferingCompleted(String),
    DtmfEnd(char),
    Status(Status),
    /// `error_text`, trimmed of its trailing newline.
    Error(String),
    /// Anything else, kept for the log.
    Unknown(String),
}

/// Parses one text message, JSON or plain text.
pub fn parse_event(text: &str) -> Event {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(json) => parse_json(&json).unwrap_or_else(|| Event::Unknown(clip(trimmed))),
            Err(_) => Event::Unknown(clip(trimmed)),
        }
    } else {
        parse_plain(trimmed)
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

fn parse_json(json: &serde_json::Value) -> Option<Event> {
    let s = |key: &str| json.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let n = |key: &str| json.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let b = |key: &str| json.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    Some(match json.get("event")?.as_str()? {
        "MEDIA_START" => Event::MediaStart(MediaStart {
            connection_id: s("connection_id"),
            channel: s("channel"),
            channel_id: s("channel_id"),
            format_name: s("format"),
            optimal_frame_size: n("optimal_frame_size") as usize,
            ptime: n("ptime") as u32,
            channel_variables: json
                .get("channel_variables")
                .and_then(|v| v.as_object())
                .map(|vars| {
                    vars.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                        .collect()
                })
                .unwrap_or_default(),
        }),
        "MEDIA_XOFF" => Event::MediaXoff,
        "MEDIA_XON" => Event::MediaXon,
        "MEDIA_MARK_PROCESSED" => Event::MarkProcessed(s("correlation_id")),
        "MEDIA_BUFFERING_COMPLETED" => Event::BufferingCompleted(s("correlation_id")),
        "QUEUE_DRAINED" => Event::QueueDrained,
        "DTMF_END" => Event::DtmfEnd(s("digit").chars().next()?),
        "STATUS" => Event::Status(Status {
            queue_length: n("queue_length") as u32,
            xon_level: n("xon_level") as u32,
            xoff_level: n("xoff_level") as u32,
            queue_full: b("queue_full"),
            bulk_media: b("bulk_media"),
            media_paused: b("media_paused"),
        }),
        "ERROR" => Event::Error(s("error_text").trim().to_owned()),
        _ => return None,
    })
}

/// `NAME key:value key:value…` or `NAME id`.
fn parse_plain(text: &str) -> Event {
    let (name, rest) = text.split_once(' ').unwrap_or((text, ""));
    let fields = || -> BTreeMap<&str, &str> { rest.split(' ').filter_map(|kv| kv.split_once(':')).collect() };
    match name {
        "MEDIA_START" => {
            let f = fields();
            let get = |k: &str| f.get(k).copied().unwrap_or_default().to_owned();
            Event::MediaStart(MediaStart {
                connection_id: get("connection_id"),
                channel: get("channel"),
                channel_id: get("channel_id"),
                format_name: get("format"),
                optimal_frame_size: get("optimal_frame_size").parse().unwrap_or(0),
                ptime: get("ptime").parse().unwrap_or(0),
                channel_variables: BTreeMap::new(),
            })
        }
        "MEDIA_XOFF" => Event::MediaXoff,
        "MEDIA_XON" => Event::MediaXon,
        "MEDIA_MARK_PROCESSED" => Event::MarkProcessed(rest.trim().to_owned()),
        "MEDIA_BUFFERING_COMPLETED" => Event::BufferingCompleted(rest.trim().to_owned()),
        "QUEUE_DRAINED" => Event::QueueDrained,
        "DTMF_END" => match fields().get("digit").and_then(|d| d.chars().next()) {
            Some(digit) => Event::DtmfEnd(digit),
            None => Event::Unknown(clip(text)),
        },
        "STATUS" => {
            let f = fields();
            let num = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            let flag = |k: &str| f.get(k) == Some(&"true");
            Event::Status(Status {
                queue_length: num("queue_length"),
                xon_level: num("xon_level"),
                xoff_level: num("xoff_level"),
                queue_full: flag("queue_full"),
                bulk_media: flag("bulk_media"),
                media_paused: flag("media_paused"),
            })
        }
        // `ERROR channel_id:<id> error_text:<text with spaces>`
        "ERROR" => {
            let error = rest.split_once("error_text:").map_or(rest, |(_, t)| t);
            Event::Error(error.trim().to_owned())
        }
        _ => Event::Unknown(clip(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_events_from_the_capture() {
        let start = parse_event(
            "MEDIA_START connection_id:51b08835-9537-41da-8a8b-ce07ed3cf25a channel:WebSocket/INCOMING/0x7f0c780032b0 channel_id:ws-server-slin16-text-ws format:slin16 optimal_frame_size:640 ptime:20",
        );
        let Event::MediaStart(start) = start else { panic!("{start:?}") };
        assert_eq!(start.channel_id, "ws-server-slin16-text-ws");
        assert_eq!(start.media_format().unwrap(), MediaFormat::new(Codec::Slin16));
        assert_eq!(parse_event("MEDIA_XOFF"), Event::MediaXoff);
        assert_eq!(parse_event("MEDIA_MARK_PROCESSED mark-a"), Event::MarkProcessed("mark-a".into()));
        assert_eq!(parse_event("DTMF_END digit:5 channel_id:ws-server-slin16-text-ws"), Event::DtmfEnd('5'));
        let Event::Status(status) = parse_event(
            "STATUS channel_id:ws queue_length:1000 xon_level:800 xoff_level:900 queue_full:true bulk_media:false media_paused:false",
        ) else {
            panic!()
        };
        assert_eq!((status.queue_length, status.queue_full, status.xoff_level), (1000, true, 900));
        assert_eq!(
            parse_event("ERROR channel_id:ws error_text:SET_MEDIA_DIRECTION only supports JSON format.\n"),
            Event::Error("SET_MEDIA_DIRECTION only supports JSON format.".into())
        );
        assert!(matches!(parse_event("SOMETHING_NEW a:b"), Event::Unknown(_)));
    }

    #[test]
    fn json_events_from_the_capture() {
        let Event::MediaStart(start) = parse_event(
            r#"{"event":"MEDIA_START","connection_id":"53a98129","channel":"WebSocket/INCOMING/0x7f0c700047b0","channel_id":"ws-server-ulaw-json-ws","format":"ulaw","optimal_frame_size":160,"ptime":20,"channel_variables":{"MEDIA_WEBSOCKET_CONNECTION_ID":"53a98129","MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE":"160"}}"#,
        ) else {
            panic!()
        };
        assert_eq!(start.media_format().unwrap(), MediaFormat::new(Codec::Ulaw));
        assert_eq!(start.channel_variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"], "160");
        assert_eq!(
            parse_event(r#"{"event":"MEDIA_MARK_PROCESSED","channel_id":"x","correlation_id":"mark-a"}"#),
            Event::MarkProcessed("mark-a".into())
        );
        assert_eq!(parse_event(r#"{"event":"DTMF_END","channel_id":"x","digit":"5"}"#), Event::DtmfEnd('5'));
        assert_eq!(parse_event(r#"{"event":"MEDIA_XON","channel_id":"x"}"#), Event::MediaXon);
        assert_eq!(
            parse_event(
                r#"{"event":"ERROR","channel_id":"x","error_text":"'sideways' is not a valid direction for SET_MEDIA_DIRECTION.\n"}"#
            ),
            Event::Error("'sideways' is not a valid direction for SET_MEDIA_DIRECTION.".into())
        );
        assert!(matches!(parse_event("{not json"), Event::Unknown(_)));
        assert!(matches!(parse_event(r#"{"event":"DTMF_END","digit":""}"#), Event::Unknown(_)));
    }

    #[test]
    fn media_start_sizes_are_checked() {
        let mut start = MediaStart {
            connection_id: "c".into(),
            channel: String::new(),
            channel_id: "x".into(),
            format_name: "slin16".into(),
            optimal_frame_size: 320,
            ptime: 20,
            channel_variables: BTreeMap::new(),
        };
        assert!(start.media_format().unwrap_err().contains("expected 640"));
        start.format_name = "opus".into();
        assert!(start.media_format().unwrap_err().contains("opus"));
    }

    #[test]
    fn commands_in_both_formats() {
        let mark = Command::MarkMedia("s3.turn2".into());
        assert_eq!(mark.encode(ControlFormat::PlainText).unwrap(), "MARK_MEDIA s3.turn2");
        assert_eq!(
            mark.encode(ControlFormat::Json).unwrap(),
            r#"{"command":"MARK_MEDIA","correlation_id":"s3.turn2"}"#
        );
        assert_eq!(Command::FlushMedia.encode(ControlFormat::Json).unwrap(), r#"{"command":"FLUSH_MEDIA"}"#);
        assert_eq!(Command::Hangup.encode(ControlFormat::PlainText).unwrap(), "HANGUP");
        for bad in ["", "a b", "x\ny", &"m".repeat(MAX_MARK_ID + 1)] {
            assert!(Command::MarkMedia(bad.into()).encode(ControlFormat::Json).is_err(), "{bad:?}");
        }
        let longest = Command::MarkMedia("m".repeat(MAX_MARK_ID)).encode(ControlFormat::Json).unwrap();
        assert!(longest.len() <= MAX_TEXT_MESSAGE);
    }
}
