//! The streaming speech providers against mocks in their documented shapes, with delays:
//! OpenAI-compatible `/v1/audio/speech` with `response_format=pcm` read as it arrives,
//! ElevenLabs `/stream` in PCM, the utterance posted to `/v1/audio/transcriptions` at the end of
//! a turn or speculatively at the short pause, and Deepgram live over a WebSocket (interim and
//! final `Results`, `Finalize`, `KeepAlive`, `CloseStream`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use asterai::speech::stt::OpenAiStt;
use asterai::speech::stt_stream::{DeepgramLive, TurnStt, UtteranceStt};
use asterai::speech::tts::{ElevenLabsTts, OpenAiTts};
use asterai::speech::tts_stream::StreamingTts;
use asterai::speech::{HttpPolicy, SpeechError, audio, http_client};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy() -> HttpPolicy {
    HttpPolicy { timeout: Duration::from_secs(10), retries: 1, backoff: Duration::from_millis(20) }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn pcm(rate: u32, ms: u32) -> Vec<u8> {
    (0..rate * ms / 1000).flat_map(|i| ((6000.0 * (i as f32 * 0.07).sin()) as i16).to_le_bytes()).collect()
}

fn openai_tts(url: String) -> OpenAiTts {
    OpenAiTts {
        client: http_client(),
        url,
        api_key: "sk-test".into(),
        model: "tts-1".into(),
        voice: "alloy".into(),
        pcm_rate: 24000,
        policy: policy(),
    }
}

/// An HTTP server that answers one request with a chunked body: the first chunk at once, the
/// rest only when the test says. Reports what it received and whether the client went away.
struct ChunkedServer {
    url: String,
    request: Arc<Mutex<String>>,
    release: Option<oneshot::Sender<()>>,
    gone: oneshot::Receiver<()>,
}

async fn chunked_server(first: Vec<u8>, rest: Vec<u8>) -> ChunkedServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let request = Arc::new(Mutex::new(String::new()));
    let (release, released) = oneshot::channel::<()>();
    let (gone_tx, gone) = oneshot::channel();
    let seen = request.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; 65536];
        let n = stream.read(&mut buffer).await.unwrap();
        *seen.lock().unwrap() = String::from_utf8_lossy(&buffer[..n]).into_owned();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nTransfer-Encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(format!("{:x}\r\n", first.len()).as_bytes()).await.unwrap();
        stream.write_all(&first).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        stream.flush().await.unwrap();
        tokio::select! {
            _ = released => {
                let _ = stream.write_all(format!("{:x}\r\n", rest.len()).as_bytes()).await;
                let _ = stream.write_all(&rest).await;
                let _ = stream.write_all(b"\r\n0\r\n\r\n").await;
                let _ = stream.flush().await;
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            }
            // The client dropped the response: the connection ends.
            _ = async { loop { if matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) { break; } } } => {
                let _ = gone_tx.send(());
            }
        }
    });
    ChunkedServer { url, request, release: Some(release), gone }
}

#[tokio::test]
async fn openai_pcm_is_played_as_it_arrives() {
    support::init();
    // 24 kHz PCM: 100 ms now, 900 ms later. The first chunk must come out before the rest
    // exists; the chunk boundary falls inside a sample (odd byte count).
    let all = pcm(24000, 1000);
    let (first, rest) = all.split_at(4801);
    let mut server = chunked_server(first.to_vec(), rest.to_vec()).await;
    let tts = openai_tts(server.url.clone());
    let stream = tts.stream("Hello there.", 16000, soon()).await.unwrap();
    let mut stream = stream.to_rate(16000).unwrap();
    let chunk = stream.next().await.unwrap().unwrap();
    // 2400 whole samples at 24 kHz make about 1,600 at 16 kHz (less the filter's look-ahead).
    assert!((1500..=1600).contains(&chunk.len()), "{}", chunk.len());
    let request = server.request.lock().unwrap().clone();
    assert!(request.starts_with("POST /v1/audio/speech"), "{request}");
    assert!(request.contains(r#""response_format":"pcm""#) && request.contains("Bearer sk-test"), "{request}");
    server.release.take().unwrap().send(()).unwrap();
    let mut total = chunk.len();
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, 16000, "1 s at 16 kHz, the same as resampling the whole answer");
}

#[tokio::test]
async fn dropping_a_stream_stops_the_request() {
    support::init();
    let all = pcm(24000, 1000);
    let mut server = chunked_server(all[..4800].to_vec(), all[4800..].to_vec()).await;
    let tts = openai_tts(server.url.clone());
    let mut stream = tts.stream("A long answer the caller interrupts.", 8000, soon()).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    tokio::time::timeout(Duration::from_secs(30), &mut server.gone)
        .await
        .expect("the connection closes when the stream is dropped")
        .unwrap();
}

#[tokio::test]
async fn elevenlabs_streams_pcm_at_the_calls_rate() {
    support::init();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/text-to-speech/voice-1/stream"))
        .and(query_param("output_format", "pcm_16000"))
        .and(header("xi-api-key", "xi-test"))
        .and(body_partial_json(serde_json::json!({"text": "Hello", "model_id": "eleven_flash_v2_5"})))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(pcm(16000, 500)).set_delay(Duration::from_millis(120)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/text-to-speech/voice-1/stream"))
        .and(query_param("output_format", "pcm_8000"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(pcm(8000, 500)))
        .mount(&server)
        .await;
    let tts = ElevenLabsTts {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "xi-test".into(),
        model: "eleven_flash_v2_5".into(),
        voice: "voice-1".into(),
        policy: policy(),
    };
    let wide = tts.stream("Hello", 16000, soon()).await.unwrap();
    assert_eq!(wide.rate(), 16000, "no resampling: ElevenLabs made 16 kHz");
    assert_eq!(wide.collect().await.unwrap().len(), 8000);
    let narrow = tts.stream("Hello", 8000, soon()).await.unwrap();
    assert_eq!(narrow.rate(), 8000);
    assert_eq!(narrow.collect().await.unwrap().len(), 4000);
}

#[tokio::test]
async fn tts_errors_are_the_providers_words() {
    support::init();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/speech"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"error": {"message": "Incorrect API key provided"}})),
        )
        .mount(&server)
        .await;
    let err = openai_tts(format!("{}/v1", server.uri())).stream("x", 8000, soon()).await.unwrap_err();
    assert!(matches!(err, SpeechError::Http { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("Incorrect API key"), "{err}");
}

fn openai_stt(server: &MockServer) -> Arc<OpenAiStt> {
    Arc::new(OpenAiStt {
        client: http_client(),
        url: format!("{}/v1", server.uri()),
        api_key: "sk-test".into(),
        model: "whisper-1".into(),
        language: Some("en".into()),
        policy: policy(),
    })
}

async fn transcriptions(server: &MockServer) -> Vec<Vec<u8>> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/v1/audio/transcriptions")
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn speculative_transcription_is_kept_when_the_caller_stops() {
    support::init();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"text": "how much is it"}))
                .set_delay(Duration::from_millis(150)),
        )
        .mount(&server)
        .await;
    let mut turn = UtteranceStt::new(openai_stt(&server), 16000);
    turn.audio(&[1000; 16000]);
    turn.short_pause();
    // The endpoint silence goes by (its frames are part of the turn), and the turn ends.
    turn.audio(&[0; 4800]);
    let transcript = turn.finish(soon()).await.unwrap();
    assert_eq!(transcript.text, "how much is it");
    assert!(transcript.speculative);
    let bodies = transcriptions(&server).await;
    assert_eq!(bodies.len(), 1, "one request: the speculative one was used");
    // A 16 kHz mono WAV of the second of speech before the pause.
    let wav = bodies[0].windows(4).position(|w| w == b"RIFF").expect("a WAV in the form");
    let rate = u32::from_le_bytes(bodies[0][wav + 24..wav + 28].try_into().unwrap());
    assert_eq!(rate, 16000);
    // The next turn starts empty.
    let empty = turn.finish(soon()).await.unwrap();
    assert_eq!((empty.text.as_str(), empty.speculative), ("", false));
    assert_eq!(transcriptions(&server).await.len(), 1, "nothing to transcribe: no request");
}

#[tokio::test]
async fn speculative_transcription_is_dropped_when_the_caller_goes_on() {
    support::init();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": "I would like to cancel"})))
        .mount(&server)
        .await;
    let mut turn = UtteranceStt::new(openai_stt(&server), 8000);
    turn.audio(&[1000; 8000]);
    turn.short_pause();
    turn.audio(&[0; 1600]);
    turn.resumed();
    turn.audio(&[1000; 8000]);
    let transcript = turn.finish(soon()).await.unwrap();
    assert!(!transcript.speculative, "the whole utterance was transcribed again");
    let bodies = transcriptions(&server).await;
    let last = bodies.last().unwrap();
    // The final request holds all 17,600 samples (35,200 bytes of audio).
    let wav = last.windows(4).position(|w| w == b"RIFF").unwrap();
    let data = last[wav..].windows(4).position(|w| w == b"data").unwrap() + wav;
    let len = u32::from_le_bytes(last[data + 4..data + 8].try_into().unwrap());
    assert_eq!(len, 35_200);
    // A failing provider is an error naming it.
    let broken = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500).set_body_string("boom")).mount(&broken).await;
    let mut turn = UtteranceStt::new(openai_stt(&broken), 8000);
    turn.audio(&[1000; 800]);
    let err = turn.finish(soon()).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    // A cancelled turn sends nothing.
    let mut turn = UtteranceStt::new(openai_stt(&broken), 8000);
    turn.audio(&[1000; 800]);
    turn.cancel();
    assert_eq!(turn.finish(soon()).await.unwrap().text, "");
}

/// A Deepgram live fake: checks the query and key, answers audio with interim results and
/// `Finalize` with a final result marked `from_finalize`, after a delay.
#[allow(clippy::result_large_err)]
async fn fake_deepgram() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let seen_request = seen.clone();
        let callback =
            move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                  response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                let auth = request.headers().get("Authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
                seen_request.lock().unwrap().push(format!("GET {} auth={auth}", request.uri()));
                if auth != "Token dg-test" {
                    let mut refused = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(Some(
                        r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#.into(),
                    ));
                    *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
                    return Err(refused);
                }
                Ok(response)
            };
        let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
        let mut seconds = 0.0f64;
        let mut turn_start = 0.0f64;
        let words = ["how much", "is it"];
        let mut turn = 0usize;
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(bytes) => {
                    seconds += bytes.len() as f64 / 2.0 / 16000.0;
                    let interim = serde_json::json!({"type":"Results","channel_index":[0,1],"duration":seconds - turn_start,"start":turn_start,"is_final":false,"speech_final":false,"channel":{"alternatives":[{"transcript":words[turn.min(1)],"confidence":0.5}]}});
                    let _ = socket.send(Message::Text(interim.to_string().into())).await;
                }
                Message::Text(text) => {
                    seen.lock().unwrap().push(text.to_string());
                    let kind =
                        serde_json::from_str::<serde_json::Value>(&text).unwrap()["type"].as_str().unwrap().to_owned();
                    match kind.as_str() {
                        "Finalize" => {
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            let result = serde_json::json!({"type":"Results","duration":seconds - turn_start,"start":turn_start,"is_final":true,"speech_final":true,"from_finalize":true,"channel":{"alternatives":[{"transcript":format!("{}?", words[turn.min(1)]),"confidence":0.9}]}});
                            let _ = socket.send(Message::Text(result.to_string().into())).await;
                            turn_start = seconds;
                            turn += 1;
                        }
                        "CloseStream" => {
                            let _ = socket
                                .send(Message::Text(
                                    r#"{"type":"Metadata","request_id":"r","duration":1.0,"channels":1}"#.into(),
                                ))
                                .await;
                            let _ = socket.close(None).await;
                            return;
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    });
    (url, log)
}

fn deepgram(url: String, key: &str) -> DeepgramLive {
    DeepgramLive {
        url,
        api_key: key.into(),
        model: "nova-3".into(),
        language: Some("en".into()),
        endpointing: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(10),
        finalize_wait: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn deepgram_live_turns() {
    support::init();
    let (url, log) = fake_deepgram().await;
    let mut live = deepgram(url, "dg-test").connect(16000).await.unwrap();
    for _ in 0..50 {
        live.audio(&[500; 320]);
    }
    // Interim results arrive while the caller speaks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let transcript = live.interim();
        if transcript.is_some() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live.interim().as_deref(), Some("how much"), "the interim guess");
    let first = live.finish(soon()).await.unwrap();
    assert_eq!(first.text, "how much?");
    assert_eq!(first.confidence, Some(0.9));
    // The second turn hears only its own results.
    for _ in 0..25 {
        live.audio(&[500; 320]);
    }
    let second = live.finish(soon()).await.unwrap();
    assert_eq!(second.text, "is it?");
    drop(live);
    let log = log.lock().unwrap().clone();
    let request = &log[0];
    for part in [
        "/v1/listen?",
        "model=nova-3",
        "encoding=linear16",
        "sample_rate=16000",
        "interim_results=true",
        "endpointing=300",
        "auth=Token dg-test",
    ] {
        assert!(request.contains(part), "{part} in {request}");
    }
    assert_eq!(log.iter().filter(|l| l.contains("Finalize")).count(), 2);
}

#[tokio::test]
async fn deepgram_live_refuses_a_bad_key_with_its_message() {
    support::init();
    let (url, _) = fake_deepgram().await;
    let err = deepgram(url, "wrong").connect(8000).await.unwrap_err();
    assert!(matches!(err, SpeechError::Http { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("Invalid credentials"), "{err}");
}

#[test]
fn utterance_wav_is_at_the_calls_rate() {
    let wav = audio::encode_wav_at(&[0; 320], 16000);
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16000);
}
