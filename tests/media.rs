//! The streaming media transports against fakes built from the captures
//! (`fixtures/asterisk/media/`): chan_websocket (MEDIA_START in both control formats, caller
//! frames, DTMF, pacing, MEDIA_XOFF/MEDIA_XON, FLUSH_MEDIA, marks, HANGUP, close codes, media URL
//! errors) and AudioSocket (the UUID handshake, unknown UUIDs refused, audio both ways, DTMF,
//! hang-up).

mod support;

use std::time::Duration;

use asterai::media::audiosocket::{self, AudioSocketServer, Message as AsMessage};
use asterai::media::websocket::{self, WebSocketOptions};
use asterai::media::{CloseReason, Codec, Command, ControlFormat, MediaError, MediaEvent, MediaSession, Transport};
use support::fake_media::{Action, FakeChanWebsocket, FakeOptions, QUEUE_MAX, XOFF};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

async fn next_event(
    session: &mut MediaSession,
    what: &str,
    mut matches: impl FnMut(&MediaEvent) -> bool,
) -> MediaEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, session.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the session ended before {what}"));
        if matches(&event) {
            return event;
        }
    }
}

fn options(control: ControlFormat) -> WebSocketOptions {
    WebSocketOptions { control, ..WebSocketOptions::default() }
}

/// A 1 kHz tone at `rate`.
fn tone(rate: u32, ms: u32) -> Vec<i16> {
    (0..rate * ms / 1000)
        .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate as f32).sin()) as i16)
        .collect()
}

#[tokio::test]
async fn json_session_reads_caller_audio_and_dtmf() {
    // The caller's first frames, as in ws-server-ulaw-json: µ-law silence, then speech.
    let inbound = vec![vec![0xff; 160], [0x10, 0x90, 0x20, 0xa0].repeat(40), vec![0xff; 12]];
    let fake = FakeChanWebsocket::start(FakeOptions { inbound, ..FakeOptions::default() }).await;
    let mut session = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap();
    assert_eq!(session.transport(), Transport::WebSocket);
    assert_eq!(session.format().codec, Codec::Ulaw);
    assert_eq!(session.format().frame_bytes, 160);
    assert_eq!(session.channel_id(), Some(fake.channel_id.as_str()));
    assert_eq!(session.media_start().unwrap().connection_id, fake.connection_id);
    assert_eq!(fake.seen().protocol.as_deref(), Some("media"), "asterai offers the media subprotocol");
    let MediaEvent::Audio(first) = next_event(&mut session, "audio", |e| matches!(e, MediaEvent::Audio(_))).await
    else {
        unreachable!()
    };
    assert_eq!(first, vec![0i16; 160], "µ-law silence decodes to zeros");
    let MediaEvent::Audio(second) = next_event(&mut session, "audio", |e| matches!(e, MediaEvent::Audio(_))).await
    else {
        unreachable!()
    };
    assert_eq!(second.len(), 160);
    assert!(second.iter().any(|s| s.unsigned_abs() > 1000));
    // The short last frame of a prompt comes through as it is.
    let MediaEvent::Audio(last) = next_event(&mut session, "audio", |e| matches!(e, MediaEvent::Audio(_))).await else {
        unreachable!()
    };
    assert_eq!(last.len(), 12);
    fake.act(Action::Dtmf('5'));
    assert_eq!(next_event(&mut session, "DTMF", |e| matches!(e, MediaEvent::Dtmf(_))).await, MediaEvent::Dtmf('5'));
    // An error event from Asterisk is passed on; the session goes on.
    fake.act(Action::Text(r#"{"event":"ERROR","channel_id":"x","error_text":"Unable to parse JSON command"}"#.into()));
    let error = next_event(&mut session, "error", |e| matches!(e, MediaEvent::Error(_))).await;
    assert_eq!(error, MediaEvent::Error("Unable to parse JSON command".into()));
    session.sender().command(Command::GetStatus).await.unwrap();
    let MediaEvent::Status(status) = next_event(&mut session, "status", |e| matches!(e, MediaEvent::Status(_))).await
    else {
        unreachable!()
    };
    assert_eq!((status.xoff_level, status.xon_level), (900, 800));
}

#[tokio::test]
async fn plain_text_session_paces_marks_and_drains() {
    let fake = FakeChanWebsocket::start(FakeOptions { json: false, format: "slin16", ..FakeOptions::default() }).await;
    let mut session = websocket::connect(&fake.url(), options(ControlFormat::PlainText)).await.unwrap();
    assert_eq!(session.format().codec, Codec::Slin16);
    let sender = session.sender();
    // Two sentences, 1 s each, sent at once: asterai paces them, marks follow their audio.
    sender.send_audio(&tone(16000, 1000)).await.unwrap();
    sender.mark("s1").await.unwrap();
    assert!(sender.is_playing());
    sender.send_audio(&tone(16000, 990)).await.unwrap();
    sender.mark("s2").await.unwrap();
    let first = next_event(&mut session, "mark s1", |e| matches!(e, MediaEvent::MarkProcessed(_))).await;
    assert_eq!(first, MediaEvent::MarkProcessed("s1".into()));
    // Asked while the second sentence plays: reported when the queue runs empty.
    sender.command(Command::ReportQueueDrained).await.unwrap();
    let seen = fake.seen();
    assert!(seen.played.len() >= 50, "s1 is reported once its 50 frames played: {}", seen.played.len());
    let second = next_event(&mut session, "mark s2", |e| matches!(e, MediaEvent::MarkProcessed(_))).await;
    assert_eq!(second, MediaEvent::MarkProcessed("s2".into()));
    next_event(&mut session, "QUEUE_DRAINED", |e| matches!(e, MediaEvent::QueueDrained)).await;
    let seen = fake.seen();
    // 1 s + 0.99 s: the partial last frame was completed with silence, never sent short.
    assert_eq!(seen.played.len(), 100);
    assert_eq!(seen.remainder_dropped, 0);
    assert!(seen.played.iter().all(|f| f.len() == 640));
    // Paced: never more than the lead (25 frames) and a frame or two in flight were queued.
    assert!(seen.max_queue <= 30, "queue reached {}", seen.max_queue);
    assert_eq!(seen.xoffs, 0);
    assert!(seen.commands.contains(&"MARK_MEDIA s1".to_owned()), "{:?}", seen.commands);
    let stats = sender.stats();
    assert_eq!((stats.frames_sent, stats.marks_sent), (100, 2));
    assert!(!sender.is_playing());
}

#[tokio::test]
async fn xoff_stops_sending_until_xon() {
    // A peer that plays fast, and a sender with a lead far beyond the queue: only XOFF can hold
    // it back. Nothing may be dropped.
    let fake = FakeChanWebsocket::start(FakeOptions { tick: Duration::from_millis(5), ..FakeOptions::default() }).await;
    let lead = Duration::from_secs(60);
    let mut session =
        websocket::connect(&fake.url(), WebSocketOptions { lead, ..options(ControlFormat::Json) }).await.unwrap();
    let sender = session.sender();
    let frames = 1500;
    sender.send_audio(&vec![1000i16; 160 * frames]).await.unwrap();
    sender.mark("end").await.unwrap();
    next_event(&mut session, "the end mark", |e| e == &MediaEvent::MarkProcessed("end".into())).await;
    let seen = fake.seen();
    assert!(seen.xoffs >= 1, "the sender ran into XOFF: {seen:?}");
    assert!(seen.xons >= 1);
    assert_eq!(seen.dropped, 0, "no frame was sent past a full queue");
    assert!(seen.max_queue < QUEUE_MAX, "queue reached {}", seen.max_queue);
    assert!(seen.max_queue >= XOFF);
    assert_eq!(seen.played.len(), frames);
    assert!(sender.stats().xoffs >= 1);
}

/// Asterisk says MEDIA_XOFF on its own (its queue is the judge, not asterai's pacing): no frame
/// leaves while it is off (beyond one already on the wire), and after MEDIA_XON every frame
/// follows, none lost, none out of order.
#[tokio::test]
async fn a_peer_xoff_holds_every_frame_until_xon_then_all_follow_in_order() {
    let fake = FakeChanWebsocket::start(FakeOptions { format: "slin16", ..FakeOptions::default() }).await;
    let mut session = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap();
    let sender = session.sender();
    // 200 frames (4 s), each frame's samples its number.
    let frames = 200usize;
    let audio: Vec<i16> = (0..frames).flat_map(|n| std::iter::repeat_n(n as i16, 320)).collect();
    sender.send_audio(&audio).await.unwrap();
    sender.mark("end").await.unwrap();
    // Some frames go out, then the peer says XOFF.
    let before = fake.wait_for("the first frames", |s| s.received >= 10).await.received;
    fake.act(Action::Text(r#"{"event":"MEDIA_XOFF","channel_id":"fake-ws-channel"}"#.into()));
    // Paced at 20 ms with a 500 ms lead, a second is worth some 50 more frames: none may come.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = fake.seen().received;
    assert!(held <= before + 27, "frames kept coming during XOFF: {before} then {held}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.seen().received, held, "a frame left while Asterisk said XOFF");
    assert!(sender.stats().xoffs >= 1, "{:?}", sender.stats());
    fake.act(Action::Text(r#"{"event":"MEDIA_XON","channel_id":"fake-ws-channel"}"#.into()));
    next_event(&mut session, "the end mark", |e| e == &MediaEvent::MarkProcessed("end".into())).await;
    let seen = fake.seen();
    assert_eq!(seen.received, frames, "{seen:?}");
    let numbers: Vec<i16> = seen.played.iter().map(|f| i16::from_le_bytes([f[0], f[1]])).collect();
    assert_eq!(numbers, (0..frames as i16).collect::<Vec<_>>(), "every frame, in order");
    assert_eq!(sender.stats().frames_sent, frames as u64);
}

#[tokio::test]
async fn flush_stops_the_audio_and_discards_what_was_not_heard() {
    let fake = FakeChanWebsocket::start(FakeOptions::default()).await;
    let mut session = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap();
    let sender = session.sender();
    // Five sentences of 1 s; the caller talks over the first one.
    for i in 1..=5 {
        sender.send_audio(&tone(8000, 1000)).await.unwrap();
        sender.mark(&format!("s{i}")).await.unwrap();
    }
    next_event(&mut session, "mark s1", |e| e == &MediaEvent::MarkProcessed("s1".into())).await;
    let flushed = sender.flush().await.unwrap();
    // Sentences 3 to 5 never left asterai (half a second of lead): their marks come back.
    assert!(flushed.unsent_marks.ends_with(&["s4".to_owned(), "s5".to_owned()]), "{flushed:?}");
    assert!(flushed.frames_dropped >= 150, "{flushed:?}");
    let seen = fake.wait_for("FLUSH_MEDIA", |s| s.flushes == 1).await;
    assert!(seen.commands.iter().any(|c| c == r#"{"command":"FLUSH_MEDIA"}"#));
    assert!(!sender.is_playing());
    // Nothing more plays, and s2 (sent, not reached) is never reported.
    sender.command(Command::GetStatus).await.unwrap();
    let MediaEvent::Status(status) = next_event(&mut session, "status", |e| matches!(e, MediaEvent::Status(_))).await
    else {
        unreachable!()
    };
    assert_eq!(status.queue_length, 0);
    let played = fake.seen().played.len();
    assert!(played < 100, "playback stopped in the second sentence: {played}");
    // The session goes on: the next answer plays.
    sender.send_audio(&tone(8000, 100)).await.unwrap();
    sender.mark("next").await.unwrap();
    let after = next_event(&mut session, "the next mark", |e| matches!(e, MediaEvent::MarkProcessed(_))).await;
    assert_eq!(after, MediaEvent::MarkProcessed("next".into()), "s2 was discarded by the flush");
}

#[tokio::test]
async fn hangup_and_close_codes() {
    // asterai hangs up: HANGUP, then Asterisk's close 1000.
    let fake = FakeChanWebsocket::start(FakeOptions::default()).await;
    let mut session = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap();
    let sender = session.sender();
    sender.hangup().await;
    let closed = next_event(&mut session, "close", |e| matches!(e, MediaEvent::Closed(_))).await;
    assert!(fake.seen().commands.contains(&r#"{"command":"HANGUP"}"#.to_owned()));
    assert!(matches!(closed, MediaEvent::Closed(_)), "{closed:?}");
    assert!(matches!(sender.send_audio(&[0; 160]).await, Err(MediaError::Closed(_))));
    // Asterisk closes (an ARI DELETE: 1000; an oversized message: 1009).
    for code in [1000u16, 1009] {
        let fake = FakeChanWebsocket::start(FakeOptions::default()).await;
        let mut session = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap();
        fake.act(Action::Close(code));
        let closed = next_event(&mut session, "close", |e| matches!(e, MediaEvent::Closed(_))).await;
        assert_eq!(closed, MediaEvent::Closed(CloseReason::Closed { code: Some(code), reason: String::new() }));
        let err = session.sender().send_audio(&[0; 160]).await.unwrap_err();
        assert!(err.to_string().contains(&format!("code {code}")), "{err}");
        assert_eq!(session.recv().await, None, "nothing after Closed");
    }
}

#[tokio::test]
async fn media_url_errors_keep_asterisks_words() {
    let fake = FakeChanWebsocket::start(FakeOptions::default()).await;
    let wrong = format!("ws://{}/media/no-such-id", fake.addr);
    let err = websocket::connect(&wrong, options(ControlFormat::Json)).await.unwrap_err();
    assert!(matches!(err, MediaError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("404") && err.to_string().contains("WebSocket instance not found"), "{err}");
    let _first = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap();
    let err = websocket::connect(&fake.url(), options(ControlFormat::Json)).await.unwrap_err();
    assert!(err.to_string().contains("409") && err.to_string().contains("Another websocket connection"), "{err}");
    // Nobody listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = websocket::connect(&format!("ws://{closed}/media/x"), options(ControlFormat::Json)).await.unwrap_err();
    assert!(matches!(err, MediaError::Connect { .. }), "{err}");
}

#[tokio::test]
#[allow(clippy::result_large_err)]
async fn a_peer_that_does_not_start_with_media_start_is_refused() {
    // A WebSocket server that sends audio first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let (stream, _) = listener.accept().await.unwrap();
        let media = |_: &Request, mut response: Response| {
            response.headers_mut().insert("Sec-WebSocket-Protocol", "media".parse().unwrap());
            Ok(response)
        };
        let mut socket = tokio_tungstenite::accept_hdr_async(stream, media).await.unwrap();
        let _ = socket.send(tokio_tungstenite::tungstenite::Message::Binary(vec![0; 160].into())).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let err = websocket::connect(&format!("ws://{addr}/media/x"), options(ControlFormat::Json)).await.unwrap_err();
    assert!(matches!(err, MediaError::Handshake(_)) && err.to_string().contains("MEDIA_START"), "{err}");
}

/// What Asterisk's AudioSocket side does: connect, send the UUID, then talk.
async fn asterisk_side(addr: std::net::SocketAddr, uuid: uuid::Uuid) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&AsMessage { kind: audiosocket::KIND_UUID, payload: uuid.as_bytes().to_vec() }.encode().unwrap())
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn audiosocket_accepts_only_announced_calls() {
    let server = AudioSocketServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert!(server.expect(Codec::Ulaw).is_err(), "AudioSocket carries no µ-law");
    let expected = server.expect(Codec::Slin16).unwrap();
    let uuid = expected.uuid();
    // A stranger: refused with a hang-up message and closed.
    let mut stranger = asterisk_side(addr, uuid::Uuid::new_v4()).await;
    let mut answer = Vec::new();
    stranger.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, vec![0, 0, 0]);
    // Garbage first: the same.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0x10, 0x00, 0x02, 1, 2]).await.unwrap();
    let mut answer = Vec::new();
    garbage.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, vec![0, 0, 0]);
    // The announced call.
    let mut asterisk = asterisk_side(addr, uuid).await;
    let mut session = expected.connected(WAIT).await.unwrap();
    assert_eq!(session.transport(), Transport::AudioSocket);
    assert_eq!(session.uuid(), Some(uuid));
    assert_eq!(session.format().frame_bytes, 640);
    // Its audio and DTMF, as captured (`12 02 80` + 640 bytes; `03 00 01 31`).
    let frame: Vec<u8> = (0..320i16).flat_map(|i| (i * 10).to_le_bytes()).collect();
    asterisk.write_all(&AsMessage { kind: 0x12, payload: frame }.encode().unwrap()).await.unwrap();
    asterisk.write_all(&[0x03, 0x00, 0x01, b'1']).await.unwrap();
    // slin audio on a slin16 session is ignored, not misread.
    asterisk.write_all(&AsMessage { kind: 0x10, payload: vec![0; 320] }.encode().unwrap()).await.unwrap();
    asterisk.write_all(&[0x03, 0x00, 0x01, b'#']).await.unwrap();
    let MediaEvent::Audio(samples) = next_event(&mut session, "audio", |e| matches!(e, MediaEvent::Audio(_))).await
    else {
        unreachable!()
    };
    assert_eq!(samples.len(), 320);
    assert_eq!(samples[5], 50);
    assert_eq!(next_event(&mut session, "DTMF", |e| matches!(e, MediaEvent::Dtmf(_))).await, MediaEvent::Dtmf('1'));
    let next = next_event(&mut session, "DTMF", |e| !matches!(e, MediaEvent::Audio(_))).await;
    assert_eq!(next, MediaEvent::Dtmf('#'), "the slin frame was dropped");
    // asterai's audio: whole slin16 frames, and the mark once it has played.
    let sender = session.sender();
    sender.send_audio(&tone(16000, 200)).await.unwrap();
    sender.mark("m").await.unwrap();
    next_event(&mut session, "the mark", |e| e == &MediaEvent::MarkProcessed("m".into())).await;
    let mut received = vec![0u8; 10 * 643];
    asterisk.read_exact(&mut received).await.unwrap();
    for frame in received.chunks(643) {
        assert_eq!(&frame[..3], &[0x12, 0x02, 0x80]);
    }
    // Hang-up: asterai sends 00 00 00.
    sender.hangup().await;
    let mut rest = Vec::new();
    asterisk.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, vec![0, 0, 0]);
    // Asterisk closing the connection ends the session (a caller's hang-up + ARI DELETE).
    let expected = server.expect(Codec::Slin).unwrap();
    let asterisk = asterisk_side(addr, expected.uuid()).await;
    let mut session = expected.connected(WAIT).await.unwrap();
    drop(asterisk);
    let closed = next_event(&mut session, "close", |e| matches!(e, MediaEvent::Closed(_))).await;
    assert_eq!(closed, MediaEvent::Closed(CloseReason::Eof));
}

#[tokio::test]
async fn audiosocket_flush_stops_sending() {
    let server = AudioSocketServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let expected = server.expect(Codec::Slin).unwrap();
    let mut asterisk = asterisk_side(server.local_addr(), expected.uuid()).await;
    let mut session = expected.connected(WAIT).await.unwrap();
    let sender = session.sender();
    sender.send_audio(&tone(8000, 5000)).await.unwrap();
    sender.mark("end").await.unwrap();
    // Ten frames arrive in real time, then the caller barges in.
    let mut frame = vec![0u8; 323];
    for _ in 0..10 {
        asterisk.read_exact(&mut frame).await.unwrap();
    }
    let flushed = sender.flush().await.unwrap();
    assert_eq!(flushed.unsent_marks, vec!["end".to_owned()]);
    assert!(flushed.frames_dropped > 200, "{flushed:?}");
    assert!(!sender.is_playing());
    // What follows is at most the lead (two frames in flight), then silence: the hang-up.
    sender.hangup().await;
    let mut rest = Vec::new();
    asterisk.read_to_end(&mut rest).await.unwrap();
    assert!(rest.ends_with(&[0, 0, 0]));
    assert!(rest.len() <= 3 * 323 + 3, "{} bytes after the flush", rest.len());
    // Asterisk closes the connection after a hang-up: the session ends.
    drop(asterisk);
    let closed = next_event(&mut session, "close", |e| matches!(e, MediaEvent::Closed(_))).await;
    assert_eq!(closed, MediaEvent::Closed(CloseReason::Eof));
}

fn ari_client(server: &wiremock::MockServer) -> asterai::ari::AriClient {
    asterai::ari::AriClient::new(asterai::ari::AriSettings {
        url: server.uri(),
        username: "asterai".into(),
        password: asterai::config::Secret::new("pw"),
        auth: asterai::ari::Auth::Header,
        timeout: Duration::from_secs(10),
        ca_file: None,
    })
    .unwrap()
}

#[tokio::test]
async fn detect_media_on_an_asterisk_without_chan_websocket() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    support::init();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ari/asterisk/info"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"system": {"version": "21.4.0", "entity_id": "02:fc"}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ari/asterisk/modules/chan_websocket.so"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(serde_json::json!({"message": "Module could not be found in running modules"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ari/asterisk/modules/chan_audiosocket.so"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"name": "chan_audiosocket.so", "description": "AudioSocket Channel", "use_count": 0, "status": "Running", "support_level": "extended"})))
        .mount(&server)
        .await;
    let support = asterai::ari::detect_media(&ari_client(&server)).await.unwrap();
    assert!(!support.chan_websocket && support.audiosocket && !support.json_control, "{support:?}");
    assert_eq!(support.preferred(), Some("audiosocket"));
    assert!(support.describe().contains("Asterisk 21.4.0") && support.describe().contains("AudioSocket only"));
}

#[tokio::test]
async fn external_media_requests_and_refusals() {
    use wiremock::matchers::{body_json, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    support::init();
    let server = MockServer::start().await;
    // The capture's answer: the channel, Down, with the connection id in channelvars.
    Mock::given(method("POST"))
        .and(path("/ari/channels/externalMedia"))
        .and(query_param("transport", "websocket"))
        .and(query_param("format", "ulaw"))
        .and(query_param("connection_type", "server"))
        .and(query_param("transport_data", "f(json)"))
        .and(query_param("data", "asterai-media"))
        .and(body_json(serde_json::json!({"variables": {"ASTERAI_CALL_ID": "call-1"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "media-1", "name": "WebSocket/INCOMING/0x7f0c700047b0", "state": "Down",
            "channelvars": {"MEDIA_WEBSOCKET_CONNECTION_ID": "53a98129-bb5a-4a01-bfba-80390fed31af", "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "160"}
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ari/channels/externalMedia"))
        .and(query_param("format", "bogus"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            serde_json::json!({"message": "An internal error prevented this request from being handled"}),
        ))
        .mount(&server)
        .await;
    let client = ari_client(&server);
    let mut media = asterai::ari::ExternalMedia::websocket_server("asterai", "ulaw", true);
    media.variables.insert("ASTERAI_CALL_ID".into(), "call-1".into());
    let channel = client.external_media(&media).await.unwrap();
    let id = channel.channelvars.unwrap()["MEDIA_WEBSOCKET_CONNECTION_ID"].as_str().unwrap().to_owned();
    assert_eq!(
        client.settings().media_url(&id).unwrap(),
        format!("ws://{}/media/53a98129-bb5a-4a01-bfba-80390fed31af", server.address())
    );
    let bogus = asterai::ari::ExternalMedia { format: "bogus".into(), ..media.clone() };
    let err = client.external_media(&bogus).await.unwrap_err();
    assert_eq!(err.reason(), "500 An internal error prevented this request from being handled");
    // What would crash Asterisk 22.10.1 never leaves asterai.
    let before = server.received_requests().await.unwrap().len();
    let crash = asterai::ari::ExternalMedia { transport_data: Some("f(xml)".into()), ..media };
    let err = client.external_media(&crash).await.unwrap_err();
    assert!(matches!(err, asterai::ari::AriError::Invalid(_)) && err.to_string().contains("f(xml)"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), before, "nothing was sent");
}
