//! Each speech provider against an HTTP mock (wiremock) speaking the provider's documented
//! request and response shapes: success, errors, retries, timeouts and SSE streaming.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use asterai::speech::llm::{Chunk, OpenAiResponder, Responder, ResponseRequest};
use asterai::speech::stt::{DeepgramStt, OpenAiStt, SpeechToText, SttRequest};
use asterai::speech::tts::{ElevenLabsTts, OpenAiTts, SpeechCache, TextToSpeech};
use asterai::speech::{HttpPolicy, SpeechError, audio, http_client};
use futures_util::StreamExt;
use support::mocks::{self, Sequence};
use tokio::time::Instant;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy() -> HttpPolicy {
    HttpPolicy { timeout: Duration::from_secs(2), retries: 2, backoff: Duration::from_millis(20) }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn wav() -> bytes::Bytes {
    audio::encode_wav(&[1000; 4000]).into()
}

fn openai_stt(server: &MockServer) -> OpenAiStt {
    OpenAiStt {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "sk-test".into(),
        model: "whisper-1".into(),
        language: Some("en".into()),
        policy: policy(),
    }
}

#[tokio::test]
async fn openai_transcription_sends_multipart_and_reads_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(header("authorization", "Bearer sk-test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": " How much is it? "})))
        .expect(1)
        .mount(&server)
        .await;
    let stt = openai_stt(&server);
    let t = stt.transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline: soon() }).await.unwrap();
    assert_eq!(t.text, "How much is it?");
    let request = &server.received_requests().await.unwrap()[0];
    let content_type = request.headers.get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("multipart/form-data; boundary="), "{content_type}");
    let body = String::from_utf8_lossy(&request.body);
    for part in [
        "name=\"file\"; filename=\"audio.wav\"",
        "Content-Type: audio/wav",
        "name=\"model\"\r\n\r\nwhisper-1",
        "name=\"response_format\"\r\n\r\njson",
        "name=\"language\"\r\n\r\nen",
        "RIFF",
    ] {
        assert!(body.contains(part), "multipart body has {part:?}");
    }
}

#[tokio::test]
async fn a_500_is_retried_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(500).set_body_json(
                serde_json::json!({"error": {"message": "upstream overloaded", "type": "server_error"}}),
            ),
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "hello"})),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let t = openai_stt(&server)
        .transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline: soon() })
        .await
        .unwrap();
    assert_eq!(t.text, "hello");
}

#[tokio::test]
async fn a_429_honours_the_retry_budget_and_reports_the_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(serde_json::json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
        )
        .expect(3)
        .mount(&server)
        .await;
    let err = openai_stt(&server)
        .transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline: soon() })
        .await
        .unwrap_err();
    assert!(matches!(&err, SpeechError::Http { status: 429, message, .. } if message == "Rate limit reached"), "{err}");
}

#[tokio::test]
async fn a_401_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            serde_json::json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = openai_stt(&server)
        .transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline: soon() })
        .await
        .unwrap_err();
    assert!(matches!(err, SpeechError::Http { status: 401, .. }));
    assert!(!err.to_string().contains("sk-test"), "errors never carry the key");
}

#[tokio::test]
async fn a_slow_provider_times_out_within_the_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"text": "late"}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let stt = OpenAiStt {
        policy: HttpPolicy { timeout: Duration::from_millis(300), retries: 5, backoff: Duration::from_millis(10) },
        ..openai_stt(&server)
    };
    let started = Instant::now();
    let deadline = started + Duration::from_millis(800);
    let err = stt.transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline }).await.unwrap_err();
    assert!(matches!(err, SpeechError::Timeout { .. }), "{err}");
    assert!(Instant::now() < deadline + Duration::from_millis(500), "the deadline holds however many retries remain");
}

#[tokio::test]
async fn deepgram_prerecorded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/listen"))
        .and(query_param("model", "nova-3"))
        .and(query_param("smart_format", "true"))
        .and(header("authorization", "Token dg-test"))
        .and(header("content-type", "audio/wav"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "metadata": {"request_id": "x", "duration": 0.5, "channels": 1},
            "results": {"channels": [{"alternatives": [{"transcript": "call me back tomorrow", "confidence": 0.93, "words": []}]}]}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let stt = DeepgramStt {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "dg-test".into(),
        model: "nova-3".into(),
        language: None,
        policy: policy(),
    };
    let t = stt.transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline: soon() }).await.unwrap();
    assert_eq!((t.text.as_str(), t.confidence), ("call me back tomorrow", Some(0.93)));
    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(&request.body[..4], b"RIFF", "the WAV is the body");

    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"results": {}})))
        .mount(&bad)
        .await;
    let stt = DeepgramStt { url: format!("{}/v1", bad.uri()), ..stt };
    assert!(matches!(
        stt.transcribe(SttRequest { wav: wav(), path: Path::new("/tmp/x.wav"), deadline: soon() }).await,
        Err(SpeechError::Invalid { .. })
    ));
}

fn responder(server: &MockServer) -> OpenAiResponder {
    OpenAiResponder {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "sk-test".into(),
        model: "gpt-4o-mini".into(),
        temperature: 0.4,
        max_tokens: 200,
        policy: policy(),
    }
}

async fn collect(responder: &OpenAiResponder) -> Result<(String, Option<asterai::speech::llm::Analysis>), SpeechError> {
    let values = BTreeMap::new();
    let history = vec![asterai::speech::llm::Message::new(asterai::speech::llm::Role::Assistant, "Hello!")];
    let request = ResponseRequest {
        system: "You are Ava.",
        history: &history,
        caller: "How much is it?",
        pending: &[],
        values: &values,
        tools: &[],
        deadline: soon(),
    };
    let mut stream = responder.respond(request).await?;
    let (mut text, mut analysis) = (String::new(), None);
    while let Some(chunk) = stream.next().await {
        match chunk? {
            Chunk::Text(t) => text.push_str(&t),
            Chunk::Analysis(a) => analysis = Some(a),
            Chunk::ToolCalls(calls) => panic!("no tools were offered, yet {calls:?}"),
        }
    }
    Ok((text, analysis))
}

/// Tools offered in OpenAI's `tools` shape; the streamed call comes back whole, after the text.
#[tokio::test]
async fn streamed_tool_calls_are_assembled() {
    support::init();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(mocks::sse_tool_call("Let me connect you.", "transfer", r#"{"reason": "wants a person"}"#))
        .mount(&server)
        .await;
    let responder = responder(&server);
    let values = BTreeMap::new();
    let tools = [
        asterai::agent::builtin_tool("transfer", &[]).unwrap(),
        asterai::agent::builtin_tool("end_call", &[]).unwrap(),
    ];
    let request = ResponseRequest {
        system: "You are Ava.",
        history: &[],
        caller: "Can I talk to a human?",
        pending: &[],
        values: &values,
        tools: &tools,
        deadline: soon(),
    };
    let chunks: Vec<Chunk> = responder.respond(request).await.unwrap().map(|c| c.unwrap()).collect().await;
    assert_eq!(chunks.first(), Some(&Chunk::Text("Let me connect you.".into())));
    let Some(Chunk::ToolCalls(calls)) = chunks.last() else { panic!("{chunks:?}") };
    assert_eq!((calls.len(), calls[0].id.as_str(), calls[0].name.as_str()), (1, "call_Qx1", "transfer"));
    assert_eq!(calls[0].arguments_json().unwrap()["reason"], "wants a person");
    let sent: serde_json::Value = serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["function"]["name"], "transfer");
    assert_eq!(sent["tools"][1]["function"]["parameters"]["required"][0], "outcome");
}

#[tokio::test]
async fn chat_completions_stream_sse_and_the_analysis_stays_silent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(serde_json::json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "messages": [{"role": "system", "content": "You are Ava."}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How much is it?"}]
        })))
        .respond_with(mocks::sse(&[
            "It is 20 dollars a month.",
            " The first month is free.",
            "\n<analysis>{\"intent\": \"pricing\", \"emotion\": \"neutral\", \"confidence\": 0.92, \"action\": \"continue\"}</analysis>",
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let (text, analysis) = collect(&responder(&server)).await.unwrap();
    assert_eq!(text.trim(), "It is 20 dollars a month. The first month is free.");
    let analysis = analysis.unwrap();
    assert_eq!((analysis.intent.as_deref(), analysis.confidence), (Some("pricing"), Some(0.92)));
}

#[tokio::test]
async fn chat_errors_and_timeouts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"error": {"message": "model not found", "type": "invalid_request_error"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = collect(&responder(&server)).await.unwrap_err();
    assert!(matches!(&err, SpeechError::Http { status: 400, message, .. } if message == "model not found"), "{err}");

    // An error event in the middle of the stream ends it with an error.
    let broken = MockServer::start().await;
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Sure.\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n";
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&broken)
        .await;
    let err = collect(&responder(&broken)).await.unwrap_err();
    assert!(err.to_string().contains("overloaded"), "{err}");

    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(mocks::sse(&["late"]).set_delay(Duration::from_secs(5)))
        .mount(&slow)
        .await;
    let r = OpenAiResponder {
        policy: HttpPolicy { timeout: Duration::from_millis(200), retries: 0, backoff: Duration::from_millis(10) },
        ..responder(&slow)
    };
    assert!(matches!(collect(&r).await.unwrap_err(), SpeechError::Timeout { .. }));
}

#[tokio::test]
async fn openai_speech_converts_24k_wav_and_raw_pcm() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .and(body_partial_json(
            serde_json::json!({"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "wav"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(mocks::wav_24k(500), "audio/wav"))
        .expect(1)
        .mount(&server)
        .await;
    let tts = OpenAiTts {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "sk-test".into(),
        model: "tts-1".into(),
        voice: "alloy".into(),
        pcm_rate: 24000,
        policy: policy(),
    };
    let samples = tts.synthesize("Hello there.", soon()).await.unwrap().decode().unwrap();
    assert_eq!(samples.len(), 4000, "500 ms at 8 kHz");

    let pcm = MockServer::start().await;
    let raw: Vec<u8> = (0..24000).flat_map(|i| (((i as f32 * 0.05).sin() * 8000.0) as i16).to_le_bytes()).collect();
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(raw, "audio/pcm"))
        .mount(&pcm)
        .await;
    let tts = OpenAiTts { url: format!("{}/v1", pcm.uri()), ..tts };
    assert_eq!(tts.synthesize("x", soon()).await.unwrap().decode().unwrap().len(), 8000, "1 s of 24 kHz PCM");
}

#[tokio::test]
async fn elevenlabs_speech() {
    let server = MockServer::start().await;
    let raw: Vec<u8> = (0..8000).flat_map(|i| (((i as f32 * 0.05).sin() * 8000.0) as i16).to_le_bytes()).collect();
    Mock::given(method("POST"))
        .and(path("/v1/text-to-speech/voice123"))
        .and(query_param("output_format", "pcm_8000"))
        .and(header("xi-api-key", "el-test"))
        .and(body_partial_json(serde_json::json!({"text": "Hi.", "model_id": "eleven_flash_v2_5"})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(raw, "audio/pcm"))
        .expect(1)
        .mount(&server)
        .await;
    let tts = ElevenLabsTts {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "el-test".into(),
        model: "eleven_flash_v2_5".into(),
        voice: "voice123".into(),
        policy: policy(),
    };
    let audio = tts.synthesize("Hi.", soon()).await.unwrap();
    assert_eq!(audio.bytes.len(), 16000, "raw PCM at the telephone rate, passed through");
    assert_eq!(audio.decode().unwrap().len(), 8000);
}

#[tokio::test]
async fn synthesized_speech_is_cached_on_disk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(mocks::wav_24k(300), "audio/wav"))
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let tts = std::sync::Arc::new(OpenAiTts {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: String::new(),
        model: "tts-1".into(),
        voice: "alloy".into(),
        pcm_rate: 24000,
        policy: policy(),
    });
    let voice = SpeechCache::new(tts, dir.path());
    let first = voice.speak("Welcome to Acme.", soon()).await.unwrap();
    assert!(!first.cached && first.duration_ms == 300);
    assert!(first.provider_time > Duration::ZERO);
    let again = voice.speak("Welcome to Acme.", soon()).await.unwrap();
    assert!(again.cached && again.file == first.file, "the second time comes from the cache");
    assert_eq!(again.provider_time, Duration::ZERO);
    let other = voice.speak("Something else.", soon()).await.unwrap();
    assert_ne!(other.file, first.file);
    let written = std::fs::read(first.file.with_extension("wav")).unwrap();
    assert_eq!(audio::decode_wav(&written).unwrap().len(), 2400, "8 kHz mono 16-bit on disk");
    assert!(first.file.starts_with(dir.path().join("tts")));
}

#[tokio::test]
async fn espeak_ng_speaks_offline() {
    let tts = asterai::speech::tts::EspeakTts {
        program: "espeak-ng".into(),
        voice: "en-us".into(),
        speed: 170,
        timeout: Duration::from_secs(10),
    };
    let samples = tts.synthesize("-v hello; rm -rf / \"quoted\"\nsecond line", soon()).await.unwrap().decode().unwrap();
    assert!(audio::duration_ms(&samples) > 500, "text that looks like options is spoken, not obeyed");
    assert!(!audio::is_silence(&samples, -45.0));
    let missing = asterai::speech::tts::EspeakTts {
        program: "no-such-espeak".into(),
        voice: "en-us".into(),
        speed: 170,
        timeout: Duration::from_secs(5),
    };
    let err = missing.synthesize("hi", soon()).await.unwrap_err();
    assert!(err.to_string().contains("install the espeak-ng package"), "{err}");
}
