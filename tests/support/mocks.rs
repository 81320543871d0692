//! Provider mocks: wiremock responders in the providers' real response shapes.

use std::collections::VecDeque;
use std::sync::Mutex;

use wiremock::{Request, Respond, ResponseTemplate};

/// Answers with each template in turn, then repeats the last.
pub struct Sequence(Mutex<VecDeque<ResponseTemplate>>);

impl Sequence {
    pub fn new(templates: Vec<ResponseTemplate>) -> Sequence {
        Sequence(Mutex::new(templates.into()))
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut templates = self.0.lock().unwrap();
        if templates.len() > 1 {
            templates.pop_front().unwrap()
        } else {
            templates.front().cloned().expect("at least one template")
        }
    }
}

/// A streamed chat completion in OpenAI's server-sent-event shape.
pub fn sse_body(pieces: &[&str]) -> String {
    let mut body = String::new();
    let head = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_795_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
    body.push_str(&format!("data: {head}\n\n"));
    for piece in pieces {
        let chunk = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_795_000_000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let end = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_795_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
    body
}

/// A streamed chat completion in OpenAI's shapes that speaks `text` (may be empty), then calls
/// `name` with its JSON `arguments` cut into pieces of `piece` bytes across chunks, as OpenAI
/// sends them: the first tool-call fragment carries the index, the id and the name, the next
/// ones pieces of the arguments, and the last chunk `finish_reason: tool_calls`.
pub fn sse_tool_call_body(text: &str, name: &str, arguments: &str, piece: usize) -> String {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let chunk = serde_json::json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_795_000_000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    };
    let mut body = chunk(
        serde_json::json!({"role": "assistant", "content": if text.is_empty() { serde_json::Value::Null } else { "".into() }}),
        None,
    );
    if !text.is_empty() {
        body.push_str(&chunk(serde_json::json!({"content": text}), None));
    }
    body.push_str(&chunk(
        serde_json::json!({"tool_calls": [{"index": 0, "id": "call_Qx1", "type": "function", "function": {"name": name, "arguments": ""}}]}),
        None,
    ));
    let bytes = arguments.as_bytes();
    for part in bytes.chunks(piece.max(1)) {
        let part = String::from_utf8_lossy(part);
        body.push_str(&chunk(serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}), None));
    }
    body.push_str(&chunk(serde_json::json!({}), Some("tool_calls")));
    body.push_str("data: [DONE]\n\n");
    body
}

pub fn sse_tool_call(text: &str, name: &str, arguments: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(sse_tool_call_body(text, name, arguments, 7), "text/event-stream")
}

/// [`sse_tool_call`] with the model's id for the call.
pub fn sse_tool_call_id(id: &str, text: &str, name: &str, arguments: &str) -> ResponseTemplate {
    let body = sse_tool_call_body(text, name, arguments, 7).replace("\"call_Qx1\"", &format!("{id:?}"));
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

pub fn sse(pieces: &[&str]) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(sse_body(pieces), "text/event-stream")
}

/// A 24 kHz mono 16-bit WAV tone of `ms` milliseconds, as OpenAI's speech endpoint returns.
pub fn wav_24k(ms: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 24000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..(24 * ms) {
        writer.write_sample(((i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 24000.0).sin() * 9000.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
    out.into_inner()
}
