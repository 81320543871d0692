//! The responder: what the agent says next.
//!
//! * [`OpenAiResponder`]: OpenAI-compatible `POST {url}/chat/completions` with `stream: true`
//!   (OpenAI, xAI, Groq, Ollama, vLLM, llama.cpp). The server-sent events are parsed as they
//!   arrive and handed on as text, so speech can start before the answer is complete.
//! * [`super::rules::RulesResponder`]: the built-in rules engine, no network.
//!
//! The system prompt asks the model to end its answer with
//! `<analysis>{"intent": …, "emotion": …, "confidence": …, "action": …}</analysis>`. That tag is
//! never spoken: [`AnalysisFilter`] holds it back, even split across stream chunks, and turns it
//! into a [`Chunk::Analysis`]. A model that leaves it out is analysed by the rules instead.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::sse::SseDecoder;
use super::{BoxFuture, HttpPolicy, SpeechError, send};

/// Who said a message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a function the model called.
    Tool,
}

/// One message of the conversation so far, in OpenAI's chat shape: an assistant message may
/// carry the function calls the model made, and each call's result follows it as a `tool`
/// message naming the call, so the model can speak about what its tools did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The functions the model called with this (assistant) message.
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }

    /// What the model said (perhaps nothing) with the functions it called.
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Message {
        Message { tool_calls: calls, ..Message::new(Role::Assistant, content) }
    }

    /// The result of call `id`, as JSON text.
    pub fn tool_result(id: &str, result: &serde_json::Value) -> Message {
        Message { tool_call_id: Some(id.to_owned()), ..Message::new(Role::Tool, result.to_string()) }
    }
}

impl Serialize for Message {
    /// `{"role", "content"}`; an assistant message with calls has `tool_calls` (and a null
    /// `content` when the model said nothing), a tool result `tool_call_id`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", &self.role)?;
        if self.tool_calls.is_empty() || !self.content.is_empty() {
            map.serialize_entry("content", &self.content)?;
        } else {
            map.serialize_entry("content", &None::<String>)?;
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<serde_json::Value> = self.tool_calls.iter().map(ToolCall::to_openai).collect();
            map.serialize_entry("tool_calls", &calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        map.end()
    }
}

/// What the agent decided to do after speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Continue,
    /// Say goodbye and end the call.
    End,
    /// The caller asked not to be called again.
    DoNotCall,
    /// Hand the call to a person.
    Transfer,
    /// The caller wants to be called back another time.
    Callback,
}

/// The responder's own reading of the turn. Absent fields fall back to the rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub emotion: Option<String>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub action: Option<Action>,
}

/// A piece of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Words to speak, as they arrive.
    Text(String),
    /// The responder's analysis of the turn.
    Analysis(Analysis),
    /// The functions the model called (see [`ToolCallAssembler`]), at the end of the answer.
    ToolCalls(Vec<ToolCall>),
}

/// The answer, as it arrives.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, SpeechError>> + Send>>;

/// What the responder is asked.
pub struct ResponseRequest<'a> {
    /// The system prompt, already filled in with the call's context.
    pub system: &'a str,
    /// The conversation so far, oldest first, not including `caller`.
    pub history: &'a [Message],
    /// What the caller just said.
    pub caller: &'a str,
    /// What came after it in this turn: the model's function calls and their results, for the
    /// model to answer with them (empty on a turn's first request).
    pub pending: &'a [Message],
    /// The call's values (agent name, company, contact fields) for responders that template.
    pub values: &'a std::collections::BTreeMap<String, String>,
    /// Functions the model may call (none: the model only speaks).
    pub tools: &'a [ToolSpec],
    pub deadline: Instant,
}

/// A responder.
pub trait Responder: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts answering. The stream yields text as it is produced and may end with an analysis.
    fn respond<'a>(&'a self, request: ResponseRequest<'a>) -> BoxFuture<'a, Result<ChunkStream, SpeechError>>;
}

/// OpenAI-compatible chat completions, streamed.
pub struct OpenAiResponder {
    pub client: reqwest::Client,
    /// Base URL up to and including `/v1`.
    pub url: String,
    pub api_key: String,
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub policy: HttpPolicy,
}

impl Responder for OpenAiResponder {
    fn name(&self) -> &'static str {
        "openai-llm"
    }

    fn respond<'a>(&'a self, request: ResponseRequest<'a>) -> BoxFuture<'a, Result<ChunkStream, SpeechError>> {
        Box::pin(async move {
            let mut messages = Vec::with_capacity(request.history.len() + request.pending.len() + 2);
            messages.push(Message::new(Role::System, request.system));
            messages.extend(request.history.iter().cloned());
            messages.push(Message::new(Role::User, request.caller));
            messages.extend(request.pending.iter().cloned());
            let mut body = serde_json::json!({
                "model": self.model,
                "messages": messages,
                "stream": true,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            });
            if !request.tools.is_empty() {
                body["tools"] = request.tools.iter().map(ToolSpec::to_openai).collect();
            }
            let url = format!("{}/chat/completions", self.url.trim_end_matches('/'));
            let provider = self.name();
            let response = send(provider, self.policy, request.deadline, || {
                let builder = self.client.post(&url).json(&body).header(reqwest::header::ACCEPT, "text/event-stream");
                if self.api_key.is_empty() { builder } else { builder.bearer_auth(&self.api_key) }
            })
            .await?;
            let deadline = request.deadline;
            let bytes = response.bytes_stream();
            let stream = async_stream(provider, bytes, deadline);
            Ok(stream)
        })
    }
}

/// The longest line, and event, a chat completion stream may send (a delta is a few hundred bytes).
const MAX_EVENT: usize = 1 << 20;

/// Parses the server-sent events of a streamed chat completion into chunks.
fn async_stream(
    provider: &'static str,
    bytes: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    deadline: Instant,
) -> ChunkStream {
    struct State<S> {
        bytes: Pin<Box<S>>,
        events: SseDecoder,
        filter: AnalysisFilter,
        tools: ToolCallAssembler,
        pending: std::collections::VecDeque<Result<Chunk, SpeechError>>,
        done: bool,
    }
    impl<S> State<S> {
        /// The end of the answer: the text held back, the analysis, the tool calls.
        fn finish(&mut self, provider: &'static str) {
            self.pending.extend(self.filter.finish().into_iter().map(Ok));
            if !self.tools.is_empty() {
                self.pending.push_back(match self.tools.finish() {
                    Ok(calls) => Ok(Chunk::ToolCalls(calls)),
                    Err(message) => Err(SpeechError::Invalid { provider, message }),
                });
            }
        }
    }
    let started = Instant::now();
    let state = State {
        bytes: Box::pin(bytes),
        events: SseDecoder::new(MAX_EVENT),
        filter: AnalysisFilter::default(),
        tools: ToolCallAssembler::default(),
        pending: Default::default(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                return Some((item, state));
            }
            if state.done {
                return None;
            }
            let next = tokio::time::timeout_at(deadline, state.bytes.next()).await;
            match next {
                Err(_) => {
                    state.done = true;
                    state.pending.push_back(Err(SpeechError::Timeout { provider, after: started.elapsed() }));
                }
                Ok(None) => {
                    state.done = true;
                    state.finish(provider);
                }
                Ok(Some(Err(e))) => {
                    state.done = true;
                    state.pending.push_back(Err(SpeechError::Unreachable {
                        provider,
                        message: format!("the stream broke: {e}"),
                    }));
                }
                Ok(Some(Ok(data))) => {
                    let events = match state.events.push(&data) {
                        Ok(events) => events,
                        Err(e) => {
                            state.done = true;
                            state.pending.push_back(Err(SpeechError::Invalid { provider, message: e.to_string() }));
                            continue;
                        }
                    };
                    for event in events {
                        if event.data.trim() == "[DONE]" {
                            state.done = true;
                            state.finish(provider);
                            break;
                        }
                        match delta(&event.data) {
                            Ok(delta) => {
                                if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                                    state.pending.extend(state.filter.push(text).into_iter().map(Ok));
                                }
                                if let Err(message) = state.tools.push(&delta) {
                                    state.done = true;
                                    state.pending.push_back(Err(SpeechError::Invalid { provider, message }));
                                    break;
                                }
                            }
                            Err(message) => {
                                state.done = true;
                                state.pending.push_back(Err(SpeechError::Invalid { provider, message }));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }))
}

/// One streamed chunk's `choices[0].delta` (its `content` text and `tool_calls` fragments). An
/// `error` object is an error.
fn delta(json: &str) -> Result<serde_json::Value, String> {
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("bad event {json:?}: {e}"))?;
    if let Some(error) = value.get("error") {
        return Err(error["message"].as_str().unwrap_or("error in the stream").to_owned());
    }
    Ok(value["choices"][0]["delta"].take())
}

/// A function the model may call, as OpenAI's `tools` describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

impl ToolSpec {
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub fn to_openai(&self) -> serde_json::Value {
        serde_json::json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}})
    }
}

/// A call the model made, assembled from its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The model's id for the call (`call_…`), which its result must name.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON, unless the model got it wrong.
    pub arguments: String,
}

impl ToolCall {
    /// `{"id", "type": "function", "function": {"name", "arguments"}}`, as the model sent it.
    /// Arguments that are not a JSON object go back as `{}`: the result says what was wrong,
    /// and a provider may refuse a conversation with broken JSON in it.
    pub fn to_openai(&self) -> serde_json::Value {
        let arguments = if self.arguments_json().is_ok() { self.arguments.as_str() } else { "{}" };
        serde_json::json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}})
    }

    /// The arguments as a JSON object; the error says what is wrong, for the model to read.
    pub fn arguments_json(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let text = if self.arguments.trim().is_empty() { "{}" } else { self.arguments.as_str() };
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!("the arguments must be a JSON object, got {other}")),
            Err(e) => Err(format!("the arguments are not valid JSON: {e}")),
        }
    }
}

/// Most tool calls one answer may make.
pub const MAX_TOOL_CALLS: usize = 16;
/// Longest arguments of one tool call, in bytes.
pub const MAX_TOOL_ARGUMENTS: usize = 64 * 1024;

/// Puts streamed tool calls back together. OpenAI-compatible servers send each call in
/// fragments across chunks: the first names it (`index`, `id`, `function.name`), the next ones
/// add pieces of `function.arguments` under the same `index`; several calls interleave by index.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: std::collections::BTreeMap<u64, ToolCall>,
}

impl ToolCallAssembler {
    /// Feeds one chunk's `choices[0].delta`.
    pub fn push(&mut self, delta: &serde_json::Value) -> Result<(), String> {
        let Some(fragments) = delta.get("tool_calls").and_then(|t| t.as_array()) else { return Ok(()) };
        for fragment in fragments {
            // Some servers leave out `index` when there is one call.
            let index = fragment.get("index").and_then(|i| i.as_u64()).unwrap_or(0);
            if !self.calls.contains_key(&index) && self.calls.len() >= MAX_TOOL_CALLS {
                return Err(format!("the model made more than {MAX_TOOL_CALLS} tool calls in one answer"));
            }
            let call = self.calls.entry(index).or_insert_with(|| ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
            if let Some(id) = fragment.get("id").and_then(|i| i.as_str()).filter(|i| !i.is_empty()) {
                call.id = id.to_owned();
            }
            let function = &fragment["function"];
            if let Some(name) = function.get("name").and_then(|n| n.as_str()) {
                call.name.push_str(name);
            }
            if let Some(piece) = function.get("arguments").and_then(|a| a.as_str()) {
                if call.arguments.len() + piece.len() > MAX_TOOL_ARGUMENTS {
                    return Err(format!("tool call arguments longer than {MAX_TOOL_ARGUMENTS} bytes"));
                }
                call.arguments.push_str(piece);
            }
        }
        Ok(())
    }

    /// Whether any call has begun.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in index order. A call without a name is an error; one without an id gets
    /// a fresh `call_<uuid>` (some local servers send none): the id names the call's result,
    /// and the idempotency key of an HTTP tool, so it must not repeat within a call.
    pub fn finish(&mut self) -> Result<Vec<ToolCall>, String> {
        let calls = std::mem::take(&mut self.calls);
        calls
            .into_iter()
            .map(|(index, mut call)| {
                if call.name.is_empty() {
                    return Err(format!("tool call {index} has no function name"));
                }
                if call.id.is_empty() {
                    call.id = format!("call_{}", uuid::Uuid::new_v4().simple());
                }
                Ok(call)
            })
            .collect()
    }
}

const OPEN: &str = "<analysis>";
const CLOSE: &str = "</analysis>";

/// Keeps `<analysis>…</analysis>` out of the spoken text and parses it.
#[derive(Default)]
pub struct AnalysisFilter {
    /// Text not handed on yet because it may be the start of the tag.
    held: String,
    /// Inside the tag: what it holds so far.
    inside: Option<String>,
}

impl AnalysisFilter {
    /// Feeds streamed text; returns what can be spoken now.
    pub fn push(&mut self, text: &str) -> Vec<Chunk> {
        let mut out = Vec::new();
        if let Some(inside) = &mut self.inside {
            inside.push_str(text);
            return out;
        }
        self.held.push_str(text);
        if let Some(at) = self.held.find(OPEN) {
            let before = self.held[..at].to_owned();
            let after = self.held[at + OPEN.len()..].to_owned();
            self.held.clear();
            if !before.is_empty() {
                out.push(Chunk::Text(before));
            }
            self.inside = Some(after);
            return out;
        }
        // Hand on everything but a tail that could still become "<analysis>".
        let keep = (1..OPEN.len()).rev().find(|n| self.held.ends_with(&OPEN[..*n])).unwrap_or(0);
        let cut = self.held.len() - keep;
        if cut > 0 {
            let speak: String = self.held.drain(..cut).collect();
            out.push(Chunk::Text(speak));
        }
        out
    }

    /// The end of the stream: the rest of the text, and the analysis if there was one.
    pub fn finish(&mut self) -> Vec<Chunk> {
        let mut out = Vec::new();
        match self.inside.take() {
            Some(inside) => {
                let json = inside.split(CLOSE).next().unwrap_or_default().trim();
                if let Ok(analysis) = serde_json::from_str::<Analysis>(json) {
                    out.push(Chunk::Analysis(analysis));
                }
            }
            None if !self.held.is_empty() => out.push(Chunk::Text(std::mem::take(&mut self.held))),
            None => {}
        }
        out
    }
}

/// Words that end in a period without ending a sentence.
const ABBREVIATIONS: &[&str] =
    &["mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "no", "approx", "inc", "ltd"];

/// Cuts streamed text into sentences, so the first can be spoken while the rest is written.
#[derive(Default)]
pub struct SentenceSplitter {
    buf: String,
}

impl SentenceSplitter {
    /// Adds text; returns the sentences it completes.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let sentence: String = self.buf.drain(..end).collect();
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_owned());
            }
        }
        out
    }

    /// The text left when the stream ends.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// The byte index just after the first sentence end followed by whitespace.
    fn boundary(&self) -> Option<usize> {
        let chars: Vec<(usize, char)> = self.buf.char_indices().collect();
        for (i, &(at, c)) in chars.iter().enumerate() {
            let next = chars.get(i + 1).map(|&(_, n)| n);
            let is_end = matches!(c, '.' | '!' | '?' | '…') || c == '\n';
            if !is_end || next.is_none() {
                continue;
            }
            if c != '\n' && !next.is_some_and(char::is_whitespace) {
                continue;
            }
            if c == '.' {
                let word: String =
                    self.buf[..at].rsplit(|ch: char| ch.is_whitespace()).next().unwrap_or("").to_ascii_lowercase();
                if ABBREVIATIONS.contains(&word.trim_end_matches('.'))
                    || (word.len() == 1 && word.chars().all(|w| w.is_alphabetic()))
                {
                    continue;
                }
            }
            return Some(at + c.len_utf8());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analysis_tag_is_never_spoken_even_when_split() {
        let mut filter = AnalysisFilter::default();
        let mut spoken = String::new();
        let mut analysis = None;
        for piece in [
            "Sure, it is 20 dollars.",
            " <anal",
            "ysis>{\"intent\": \"question\",",
            " \"confidence\": 0.9, \"action\": \"continue\"}</analysis>",
        ] {
            for chunk in filter.push(piece) {
                match chunk {
                    Chunk::Text(t) => spoken.push_str(&t),
                    Chunk::Analysis(a) => analysis = Some(a),
                    Chunk::ToolCalls(_) => panic!("no tools were offered"),
                }
            }
        }
        for chunk in filter.finish() {
            match chunk {
                Chunk::Text(t) => spoken.push_str(&t),
                Chunk::Analysis(a) => analysis = Some(a),
                Chunk::ToolCalls(_) => panic!("no tools were offered"),
            }
        }
        assert_eq!(spoken.trim(), "Sure, it is 20 dollars.");
        let analysis = analysis.unwrap();
        assert_eq!(
            (analysis.intent.as_deref(), analysis.confidence, analysis.action),
            (Some("question"), Some(0.9), Some(Action::Continue))
        );
    }

    #[test]
    fn a_lone_angle_bracket_is_spoken() {
        let mut filter = AnalysisFilter::default();
        let mut spoken: Vec<Chunk> = filter.push("a < b and c <");
        spoken.extend(filter.push(" d"));
        spoken.extend(filter.finish());
        let text: String = spoken.into_iter().map(|c| if let Chunk::Text(t) = c { t } else { String::new() }).collect();
        assert_eq!(text, "a < b and c < d");
    }

    /// OpenAI's real chunk shapes: the first fragment names the call, the rest carry pieces of
    /// its arguments, two calls interleave by index, and the last chunk has an empty delta.
    #[test]
    fn tool_calls_are_assembled_from_fragments() {
        let chunks = [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"transfer","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"tar"}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"end_call","arguments":"{\"outcome\":"}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"get\": \"sales\"}"}},{"index":1,"function":{"arguments":" \"interested\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
        ];
        let mut assembler = ToolCallAssembler::default();
        for chunk in chunks {
            let value: serde_json::Value = serde_json::from_str(chunk).unwrap();
            assembler.push(&value["choices"][0]["delta"]).unwrap();
        }
        let calls = assembler.finish().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("call_a", "transfer"));
        assert_eq!(calls[0].arguments_json().unwrap()["target"], "sales");
        assert_eq!((calls[1].id.as_str(), calls[1].name.as_str()), ("call_b", "end_call"));
        assert_eq!(calls[1].arguments_json().unwrap()["outcome"], "interested");

        let broken = ToolCall { id: "c".into(), name: "end_call".into(), arguments: "{\"outcome\": ".into() };
        assert!(broken.arguments_json().unwrap_err().contains("not valid JSON"));
        let nameless = serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]});
        let mut assembler = ToolCallAssembler::default();
        assembler.push(&nameless).unwrap();
        assert!(assembler.finish().is_err());
        let many: Vec<_> =
            (0..=MAX_TOOL_CALLS).map(|i| serde_json::json!({"index": i, "function": {"name": "x"}})).collect();
        assert!(ToolCallAssembler::default().push(&serde_json::json!({"tool_calls": many})).is_err());
    }

    #[test]
    fn sentences() {
        let mut s = SentenceSplitter::default();
        let mut out = s.push("Hi there! Our plan costs 20.5 dollars a ");
        out.extend(s.push("month. Dr. Smith says so. Call at 5 p.m. tomorrow. Ok"));
        out.extend(s.finish());
        assert_eq!(
            out,
            [
                "Hi there!",
                "Our plan costs 20.5 dollars a month.",
                "Dr. Smith says so.",
                "Call at 5 p.m. tomorrow.",
                "Ok"
            ]
        );
    }
}
