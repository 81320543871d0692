//! The chan_websocket media path against the real Asterisk 22.10.1 (`/opt/asterisk-22.10.1`, or
//! `$ASTERISK_PREFIX`): a Local channel enters Stasis, is answered and bridged with an external
//! media channel that asterai creates (`POST /channels/externalMedia`, JSON control) and
//! connects to; asterai receives the frames of a prompt the caller's side plays, sends a tone
//! back with marks, and FLUSH_MEDIA stops it. The caller's side records what it hears with
//! MixMonitor; the recording proves the tone was heard and then cut.
//!
//! The Asterisk instance is private to this file (a temporary configuration tree, a free HTTP
//! port, loopback only); it moves to the shared harness (`tests/support/asterisk.rs`) once that
//! is merged.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use asterai::ari::stream::{StreamConfig, StreamItem};
use asterai::ari::{AriClient, AriEvent, AriSettings, Auth, Destination, ExternalMedia, Originate, StasisRoute};
use asterai::config::Secret;
use asterai::media::websocket::{self, WebSocketOptions};
use asterai::media::{Codec, Command as MediaCommand, ControlFormat, MediaEvent, MediaSession};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const APP: &str = "asterai-media-test";

fn prefix() -> PathBuf {
    std::env::var_os("ASTERISK_PREFIX")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/opt/asterisk-22.10.1"), PathBuf::from)
}

/// A private Asterisk: killed when dropped.
struct Asterisk {
    dir: tempfile::TempDir,
    conf: PathBuf,
    port: u16,
    /// The HTTPS port (http.conf `tlsenable`), when started with TLS.
    tls_port: Option<u16>,
    child: Child,
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const DIALPLAN: &str = "\
[general]
static=yes
writeprotect=yes

[globals]
MIXDIR=@MIXDIR@

[talker]
; The caller's side: records what it hears (r() = what this leg receives), waits, plays a
; prompt, then listens until it is hung up.
exten => s,1,Answer()
 same => n,MixMonitor(${MIXDIR}/both.wav,r(${MIXDIR}/heard.wav))
 same => n,Wait(1)
 same => n,Playback(hello-world)
 same => n,Wait(120)
 same => n,Hangup()

[caller]
; A caller of the streaming conversation: records what it hears (r) and what it says (t),
; waits for the greeting, asks, and talks over the agent's long answer.
exten => s,1,Answer()
 same => n,MixMonitor(${MIXDIR}/call.wav,r(${MIXDIR}/heard.wav)t(${MIXDIR}/said.wav))
 same => n,Wait(3)
 same => n,Playback(${MIXDIR}/ask)
 same => n,Wait(5)
 same => n,Playback(${MIXDIR}/interrupt)
 same => n,Wait(15)
 same => n,Hangup()

[transferee]
; A caller of the streaming conversation who asks for a person, then waits on the line.
exten => s,1,Answer()
 same => n,Wait(3)
 same => n,Playback(${MIXDIR}/ask)
 same => n,Wait(30)
 same => n,Hangup()

[presser]
; A caller who asks the agent to press keys, reads them (3 s at most), then says goodbye.
exten => s,1,Answer()
 same => n,Wait(3)
 same => n,Playback(${MIXDIR}/ask)
 same => n,Read(KEYS,,2,,,8)
 same => n,Verbose(1,presser read: ${KEYS})
 same => n,Wait(1)
 same => n,Playback(${MIXDIR}/done)
 same => n,Wait(20)
 same => n,Hangup()

[hanger]
; A caller who asks, and hangs up (the test hangs this side up through ARI) while the long
; answer plays; records what it hears (r).
exten => s,1,Answer()
 same => n,MixMonitor(${MIXDIR}/hanger.wav,r(${MIXDIR}/hanger-heard.wav))
 same => n,Wait(3)
 same => n,Playback(${MIXDIR}/ask)
 same => n,Wait(120)
 same => n,Hangup()

[agents]
; The transfer target of a streaming call (a queue of people in real life): it notes who came.
exten => s,1,Verbose(1,asterai transfer reached agents: ${CHANNEL(name)} outcome ${ASTERAI_OUTCOME})
 same => n,Wait(2)
 same => n,Hangup()

[callee]
; The far end of an outbound streaming call: answers, hears the greeting, asks, listens, hangs up.
exten => s,1,Answer()
 same => n,Wait(3)
 same => n,Playback(${MIXDIR}/ask)
 same => n,Wait(6)
 same => n,Hangup()
";

impl Asterisk {
    async fn start() -> Asterisk {
        Asterisk::start_with(false).await
    }

    /// With `tls`, Asterisk's HTTP server also listens with TLS (a certificate of a CA made for
    /// the test).
    async fn start_with(tls: bool) -> Asterisk {
        let prefix = prefix();
        let binary = prefix.join("sbin/asterisk");
        assert!(
            binary.exists(),
            "no Asterisk at {} (build it with ../shared/asterisk/build.sh; ASTERISK_PREFIX picks another)",
            binary.display()
        );
        let dir = tempfile::Builder::new().prefix("asterai-media-asterisk-").tempdir().unwrap();
        let etc = dir.path().join("etc");
        for sub in ["run", "log", "db", "spool", "cache", "mix"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        copy_dir(&prefix.join("etc/asterisk"), &etc);
        let port = free_port();
        let sample = std::fs::read_to_string(etc.join("asterisk.conf")).unwrap();
        let conf = support::asterisk::asterisk_conf(&sample, dir.path(), "");
        let conf_path = etc.join("asterisk.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut http = format!("[general]\nenabled = yes\nbindaddr = 127.0.0.1\nbindport = {port}\n");
        let tls_port = tls.then(|| {
            let tls_port = free_port();
            support::tls::certificates(dir.path());
            let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
            http.push_str(&format!(
                "tlsenable = yes\ntlsbindaddr = 127.0.0.1:{tls_port}\ntlscertfile = {}\ntlsprivatekey = {}\n",
                cert.display(),
                key.display()
            ));
            tls_port
        });
        std::fs::write(etc.join("http.conf"), http).unwrap();
        std::fs::write(
            etc.join("ari.conf"),
            "[general]\nenabled = yes\npretty = no\n\n[asterai]\ntype = user\nread_only = no\npassword = media-test\npassword_format = plain\n",
        )
        .unwrap();
        let mix = dir.path().join("mix").display().to_string();
        std::fs::write(etc.join("extensions.conf"), DIALPLAN.replace("@MIXDIR@", &mix)).unwrap();
        for unused in ["extensions.ael", "extensions.lua"] {
            let _ = std::fs::remove_file(etc.join(unused));
        }
        let mut modules = std::fs::read_to_string(etc.join("modules.conf")).unwrap();
        // Modules that would listen on every address.
        for module in ["chan_iax2.so", "chan_unistim.so", "pbx_dundi.so", "res_pjsip.so", "chan_sip.so"] {
            modules.push_str(&format!("noload = {module}\n"));
        }
        std::fs::write(etc.join("modules.conf"), modules).unwrap();
        std::fs::write(etc.join("logger.conf"), "[general]\n[logfiles]\nfull => notice,warning,error,verbose\n")
            .unwrap();
        let console = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&binary)
                .arg("-C")
                .arg(&conf_path)
                .args(["-f", "-n", "-vvv"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(console.try_clone().unwrap())
                .stderr(console)
                .process_group(0)
                .spawn()
                .expect("start Asterisk")
        };
        let mut asterisk = Asterisk { dir, conf: conf_path, port, tls_port, child };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = asterisk.child.try_wait() {
                panic!("Asterisk exited while starting ({status}):\n{}", asterisk.console());
            }
            let out = Command::new(&binary)
                .arg("-C")
                .arg(&asterisk.conf)
                .args(["-rx", "core waitfullybooted"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("fully booted") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "Asterisk did not boot:\n{}", asterisk.console());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ARI answers once the HTTP server is up.
        let client = asterisk.client();
        loop {
            match client.asterisk_info().await {
                Ok(_) => break,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "ARI did not answer: {e}\n{}", asterisk.console());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        asterisk
    }

    /// The end of Asterisk's log (`log/full`: with `-f` and no console, stdout stays empty),
    /// then whatever the process printed.
    fn console(&self) -> String {
        let mut out = String::new();
        for (file, keep) in [("log/full", 80), ("console.log", 20)] {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&lines[lines.len().saturating_sub(keep)..].join("\n"));
            out.push('\n');
        }
        out
    }

    fn settings(&self) -> AriSettings {
        AriSettings {
            url: format!("http://127.0.0.1:{}", self.port),
            username: "asterai".into(),
            password: Secret::new("media-test"),
            auth: Auth::Header,
            timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }

    /// ARI over TLS: `https://127.0.0.1:<tls port>`, trusting the test's CA.
    fn tls_settings(&self) -> AriSettings {
        AriSettings {
            url: format!("https://127.0.0.1:{}", self.tls_port.expect("started with TLS")),
            ca_file: Some(self.dir.path().join("ca.pem")),
            ..self.settings()
        }
    }

    fn client(&self) -> AriClient {
        AriClient::new(self.settings()).unwrap()
    }

    fn mix_dir(&self) -> PathBuf {
        self.dir.path().join("mix")
    }
}

/// Waits for an ARI event.
async fn event(events: &mut mpsc::Receiver<StreamItem>, what: &str, matches: impl Fn(&AriEvent) -> bool) -> AriEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let item = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .expect("the event stream ended");
        if let StreamItem::Event(envelope) = item
            && matches(&envelope.event)
        {
            return envelope.event;
        }
    }
}

async fn media_event(session: &mut MediaSession, what: &str, matches: impl Fn(&MediaEvent) -> bool) -> MediaEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, session.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the media session ended before {what}"));
        if matches(&event) {
            return event;
        }
    }
}

fn stasis_start_of(id: &'static str) -> impl Fn(&AriEvent) -> bool {
    move |e| matches!(e, AriEvent::StasisStart { channel, .. } if channel.id == id)
}

/// Seconds of 1 kHz tone in an 8 kHz or 16 kHz WAV (20 ms frames whose energy is mostly at
/// 1 kHz and louder than -40 dBFS).
fn tone_seconds(path: &Path) -> f64 {
    let mut reader = hound::WavReader::open(path).unwrap();
    let rate = reader.spec().sample_rate as f64;
    let samples: Vec<f64> = reader.samples::<i16>().map_while(Result::ok).map(|s| s as f64 / 32768.0).collect();
    let frame = (rate / 50.0) as usize;
    let mut frames = 0;
    for chunk in samples.chunks_exact(frame) {
        let energy: f64 = chunk.iter().map(|s| s * s).sum();
        if energy / (frame as f64) < 1e-4 {
            continue;
        }
        // Goertzel at 1 kHz.
        let w = 2.0 * std::f64::consts::PI * 1000.0 / rate;
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in chunk {
            let s0 = x + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        if power / (frame as f64 / 2.0) > 0.5 * energy {
            frames += 1;
        }
    }
    frames as f64 * 0.02
}

#[tokio::test]
async fn websocket_media_against_the_real_asterisk() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let asterisk = Asterisk::start().await;
    let client = asterisk.client();

    // Which transports this Asterisk has.
    let support = asterai::ari::detect_media(&client).await.unwrap();
    assert!(support.chan_websocket && support.json_control && support.audiosocket, "{support:?}");
    assert_eq!(support.version.as_deref(), Some("22.10.1"));
    assert_eq!(support.preferred(), Some("websocket"));

    let stop = CancellationToken::new();
    let mut events =
        asterai::ari::stream::spawn(StreamConfig::new(asterisk.settings(), APP, Duration::from_secs(5)), stop.clone());
    let connected = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(matches!(connected, StreamItem::Connected { .. }), "{connected:?}");

    // The caller: a Local channel whose ;1 enters Stasis; ;2 runs [talker].
    let mix = asterisk.mix_dir();
    let originate = Originate {
        endpoint: "Local/s@talker".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme&campaign=7".into()] },
        variables: [("MIXDIR".to_owned(), mix.display().to_string())].into(),
        channel_id: Some("caller".into()),
        other_channel_id: Some("talker".into()),
        caller_id: None,
        timeout: None,
    };
    client.originate(&originate).await.unwrap();
    let AriEvent::StasisStart { args, .. } =
        event(&mut events, "the caller's StasisStart", stasis_start_of("caller")).await
    else {
        unreachable!()
    };
    let route = StasisRoute::from_args(&args).expect("a route");
    assert_eq!((route.route(), route.param("org").as_deref()), ("ai", Some("acme")));
    client.answer("caller").await.unwrap();
    client.set_variable("caller", "ASTERAI_CALL_ID", "call-1").await.unwrap();
    assert_eq!(client.variable("caller", "ASTERAI_CALL_ID").await.unwrap(), "call-1");
    let bridge = client.create_bridge("mixing", Some("bridge-1"), Some("asterai")).await.unwrap();
    assert_eq!(bridge.id, "bridge-1");

    // The external media channel, and asterai's connection to it.
    let mut media = ExternalMedia::websocket_server(APP, "slin16", support.json_control);
    media.channel_id = Some("media".into());
    let channel = client.external_media(&media).await.unwrap();
    assert_eq!(channel.state, "Down", "Down until asterai connects");
    let vars = channel.channelvars.clone().unwrap_or_default();
    let connection_id = vars["MEDIA_WEBSOCKET_CONNECTION_ID"].as_str().expect("the connection id").to_owned();
    let url = asterisk.settings().media_url(&connection_id).unwrap();
    // A lead of 10 s: the whole answer sits in Asterisk's queue, so only FLUSH_MEDIA can stop it.
    let options =
        WebSocketOptions { control: ControlFormat::Json, lead: Duration::from_secs(10), ..WebSocketOptions::default() };
    let mut session = websocket::connect(&url, options).await.unwrap();
    assert_eq!(session.format().codec, Codec::Slin16);
    assert_eq!(session.format().frame_bytes, 640);
    assert_eq!(session.channel_id(), Some("media"));
    let AriEvent::StasisStart { args, .. } =
        event(&mut events, "the media channel's StasisStart", stasis_start_of("media")).await
    else {
        unreachable!()
    };
    assert_eq!(StasisRoute::from_args(&args), None, "asterai's own media channel is not a call: {args:?}");
    client.add_to_bridge("bridge-1", &["caller", "media"]).await.unwrap();
    assert_eq!(client.bridge("bridge-1").await.unwrap().channels.len(), 2);

    // The prompt the caller's side plays arrives as 20 ms frames of 16 kHz audio.
    let mut frames = 0;
    let mut loud = 0;
    while loud < 25 {
        if let MediaEvent::Audio(samples) =
            media_event(&mut session, "prompt audio", |e| matches!(e, MediaEvent::Audio(_))).await
        {
            frames += 1;
            assert!(samples.len() <= 320, "{}", samples.len());
            if samples.iter().any(|s| s.unsigned_abs() > 2000) {
                loud += 1;
            }
        }
    }
    assert!(frames >= 25);

    // The agent speaks: 5 s of tone, a mark after the first second and at the end. At the
    // first mark the caller "barges in": FLUSH_MEDIA.
    let sender = session.sender();
    let tone: Vec<i16> = (0..16000 * 5)
        .map(|i| (9000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()) as i16)
        .collect();
    sender.send_audio(&tone[..16000]).await.unwrap();
    sender.mark("m1").await.unwrap();
    sender.send_audio(&tone[16000..]).await.unwrap();
    sender.mark("m2").await.unwrap();
    media_event(&mut session, "mark m1", |e| e == &MediaEvent::MarkProcessed("m1".into())).await;
    let flushed = sender.flush().await.unwrap();
    assert_eq!(flushed.unsent_marks, Vec::<String>::new(), "all of the answer was in Asterisk's queue");
    sender.command(MediaCommand::GetStatus).await.unwrap();
    let MediaEvent::Status(status) = media_event(&mut session, "STATUS", |e| matches!(e, MediaEvent::Status(_))).await
    else {
        unreachable!()
    };
    assert_eq!(status.queue_length, 0, "Asterisk's queue is empty after FLUSH_MEDIA");
    let stats = sender.stats();
    assert_eq!(stats.late_frames, 0, "{stats:?}");
    assert_eq!(stats.frames_sent, 250, "{stats:?}");
    // m2, queued in Asterisk behind the flushed audio, is never reported.
    sender.command(MediaCommand::GetStatus).await.unwrap();
    let next =
        media_event(&mut session, "STATUS", |e| matches!(e, MediaEvent::Status(_) | MediaEvent::MarkProcessed(_)))
            .await;
    assert!(matches!(next, MediaEvent::Status(_)), "{next:?}");

    // The caller hangs up (its half of the Local channel); nothing arrives on the media socket
    // for that, so asterai deletes the media channel: Asterisk closes the socket with 1000.
    client.hangup("talker", None).await.unwrap();
    event(
        &mut events,
        "the talker's ChannelDestroyed",
        |e| matches!(e, AriEvent::ChannelDestroyed { channel, .. } if channel.id == "talker"),
    )
    .await;
    client.hangup("media", None).await.unwrap();
    let closed = media_event(&mut session, "the close", |e| matches!(e, MediaEvent::Closed(_))).await;
    assert_eq!(
        closed,
        MediaEvent::Closed(asterai::media::CloseReason::Closed { code: Some(1000), reason: String::new() })
    );
    let _ = client.hangup("caller", None).await;
    let _ = client.destroy_bridge("bridge-1").await;
    stop.cancel();

    // What the caller heard: the tone from the first second on, cut by the flush well before
    // its five seconds.
    let heard = mix.join("heard.wav");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last_len = 0;
    loop {
        let len = std::fs::metadata(&heard).map(|m| m.len()).unwrap_or(0);
        if len > 44 && len == last_len {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "MixMonitor wrote no {}:\n{}",
            heard.display(),
            asterisk.console()
        );
        last_len = len;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tone_s = tone_seconds(&heard);
    assert!(tone_s >= 0.9, "the first second of tone (up to m1) was heard: {tone_s} s");
    assert!(tone_s < 4.0, "FLUSH_MEDIA cut the 5 s tone: {tone_s} s heard");
    println!("the caller heard {tone_s:.2} s of the 5 s tone; {} frames sent", stats.frames_sent);
}

/// Voiced 20 ms frames of an 8 kHz WAV (louder than -40 dBFS), as booleans.
fn voiced_frames(path: &Path) -> Vec<bool> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let rate = reader.spec().sample_rate as usize;
    let samples: Vec<f64> = reader.samples::<i16>().map_while(Result::ok).map(|s| s as f64 / 32768.0).collect();
    samples
        .chunks_exact(rate / 50)
        .map(|chunk| chunk.iter().map(|s| s * s).sum::<f64>() / chunk.len() as f64 > 1e-4)
        .collect()
}

/// Where the speech segments of a recording begin and end (frame indexes), pauses shorter than
/// `gap` frames joined.
fn segments(voiced: &[bool], gap: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, v) in voiced.iter().enumerate() {
        if !v {
            continue;
        }
        match out.last_mut() {
            Some((_, end)) if i - *end <= gap => *end = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// Speech of espeak-ng, as an 8 kHz WAV Asterisk plays (`name.wav`).
fn espeak(dir: &Path, name: &str, text: &str) {
    let out = Command::new("espeak-ng").args(["-v", "en-us", "--stdout", text]).output().expect("espeak-ng runs");
    assert!(out.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&out.stderr));
    let samples = asterai::speech::audio::decode_wav(&out.stdout).unwrap();
    std::fs::write(dir.join(format!("{name}.wav")), asterai::speech::audio::encode_wav(&samples)).unwrap();
}

/// A whole streaming conversation against the real Asterisk: a Local-channel caller enters
/// `Stasis(app,ai?org=acme)`; the dialer's tracker hands it to the streaming conversations,
/// which answer, bridge it with a chan_websocket media channel and greet it. The caller asks
/// (espeak-ng speech, real silence around it), hears the start of a long answer and talks over
/// it: the answer stops, the stored turn keeps only what was heard, and the caller's goodbye
/// ends the call. The caller's own recording shows the agent's audio stop.
#[tokio::test]
async fn a_streaming_conversation_with_barge_in_against_the_real_asterisk() {
    use asterai::store::CallStatus;
    use support::mocks::sse;

    support::init();
    // asterai's own log, shown with the test's output when it fails.
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=debug").with_test_writer().try_init();
    let asterisk = Asterisk::start().await;
    let client = asterisk.client();
    let long = [
        "It costs twenty dollars a month. ",
        "That includes unlimited calls to every number in the country. ",
        "You also get voicemail, call forwarding and a second line at no extra charge. ",
        "And if you sign up this week, the first three months are free of charge. ",
        "Shall I tell you more about the installation?",
    ];
    let answers = vec![sse(&long), sse(&["Thank you for calling. Goodbye!"])];
    let rig = stream_rig(&asterisk, &["How much does it cost?", "Okay, goodbye."], answers).await;
    let (db, stop) = (&rig.db, rig.stop.clone());

    // The caller.
    let mix = asterisk.mix_dir();
    espeak(&mix, "ask", "How much does it cost?");
    espeak(&mix, "interrupt", "Wait, wait. Okay, goodbye.");
    let originate = Originate {
        endpoint: "Local/s@caller".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme".into()] },
        variables: [("MIXDIR".to_owned(), mix.display().to_string())].into(),
        channel_id: Some("stream-caller".into()),
        other_channel_id: Some("stream-talker".into()),
        caller_id: Some("Caller <5551230000>".into()),
        timeout: None,
    };
    client.originate(&originate).await.unwrap();

    // The call ends, finished by its conversation.
    let acme = db.store.org_by_slug("acme").await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let call = loop {
        let page = db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if let Some(call) = page.calls.first().filter(|c| c.ended_at.is_some()) {
            break call.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the streaming call never ended:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(call.status, CallStatus::Completed, "{call:?}");
    assert_eq!(call.channel.as_deref().map(|c| c.starts_with("Local/s@caller")), Some(true), "{call:?}");
    let turns = db.store.turns(acme.id, &call.id).await.unwrap();
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    assert!(turns.len() >= 3, "{said:?}");
    for turn in &turns {
        eprintln!("turn {}: {:?} → {:?} {:?}", turn.turn, turn.caller, turn.agent, turn.latency_ms);
    }
    assert_eq!((turns[0].caller.as_str(), turns[0].agent.as_str()), ("", "Hello."));
    assert_eq!(turns[1].caller, "How much does it cost?");
    // Talked over: the turn keeps what the caller heard, the beginning of the answer only.
    let full = long.concat();
    assert!(full.trim().starts_with(turns[1].agent.trim()), "{said:?}");
    if turns[1].agent.len() >= full.trim().len() / 2 {
        let said_segments = segments(&voiced_frames(&mix.join("said.wav")), 25);
        let heard_segments = segments(&voiced_frames(&mix.join("heard.wav")), 25);
        panic!("the answer was not cut: {said:?}\nsaid {said_segments:?}\nheard {heard_segments:?}");
    }
    assert!(turns[1].latency_ms.voice_to_voice.is_some(), "{:?}", turns[1].latency_ms);
    assert!(turns[1].interrupted && !turns[2].interrupted, "{said:?}");
    assert_eq!(turns[2].caller, "Okay, goodbye.");
    stop.cancel();

    // What the caller heard: the agent's answer stopped soon after the caller began to talk.
    let heard = mix.join("heard.wav");
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::metadata(mix.join("said.wav")).map(|m| m.len()).unwrap_or(0) <= 44
        || std::fs::metadata(&heard).map(|m| m.len()).unwrap_or(0) <= 44
    {
        assert!(tokio::time::Instant::now() < deadline, "MixMonitor wrote nothing:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spoken = segments(&voiced_frames(&mix.join("said.wav")), 25);
    assert!(spoken.len() >= 2, "the caller spoke twice: {spoken:?}");
    let onset = spoken[1].0;
    let agent = voiced_frames(&heard);
    // The agent talked until about then (its answer was playing)…
    let before = agent[onset.saturating_sub(50)..onset.min(agent.len())].iter().filter(|v| **v).count();
    assert!(before > 10, "the agent was speaking when the caller talked over it ({before} voiced frames)");
    // …and fell silent: the last voiced frame of that stretch, counting pauses up to 200 ms.
    let mut stopped = onset;
    let mut quiet = 0;
    for (i, v) in agent.iter().enumerate().skip(onset) {
        if *v {
            stopped = i + 1;
            quiet = 0;
        } else {
            quiet += 1;
            if quiet > 10 {
                break;
            }
        }
    }
    let cut_ms = (stopped - onset) * 20;
    eprintln!("barge-in: the agent's audio stopped {cut_ms} ms after the caller began to talk over it");
    assert!(cut_ms <= 300, "the agent's audio went on for {cut_ms} ms after the caller began to talk");
}

/// A daemon's streaming side beside the real Asterisk: the store with `acme`, the conversations
/// with mocked speech-to-text and responder (answers in turn) and espeak-ng, and the tracker
/// that reads the application's events and hands calls over.
struct StreamRig {
    db: support::db::TestDb,
    daemon: support::http::TestDaemon,
    tracker: asterai::dialer::Tracker,
    stop: CancellationToken,
    _mocks: (wiremock::MockServer, wiremock::MockServer),
    _dir: tempfile::TempDir,
}

async fn stream_rig(asterisk: &Asterisk, transcripts: &[&str], answers: Vec<wiremock::ResponseTemplate>) -> StreamRig {
    stream_rig_with(asterisk, transcripts, answers, RigOptions::default()).await
}

#[derive(Default)]
struct RigOptions<'a> {
    /// `dialer.transfer_target`, e.g. `Local/s@agents`.
    transfer_target: Option<&'a str>,
    /// `stream.transport = "audiosocket"`, asterai listening on a free loopback port.
    audiosocket: bool,
}

/// [`stream_rig`] with a transfer target or the AudioSocket transport.
async fn stream_rig_with(
    asterisk: &Asterisk,
    transcripts: &[&str],
    answers: Vec<wiremock::ResponseTemplate>,
    rig: RigOptions<'_>,
) -> StreamRig {
    use asterai::config::{Config, Dur};
    use asterai::conversation::{Conversations, Providers, Settings, StreamCalls, StreamOptions};
    use asterai::dialer::{Tracker, TrackerConfig};
    use support::mocks::Sequence;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let client = asterisk.client();
    let db = support::db::TestDb::new(support::db::Backend::Sqlite).await;
    db.store.create_org("acme", "Acme Inc.").await.unwrap();
    let daemon = support::http::TestDaemon::start(db.store.clone()).await;

    // Providers: speech-to-text and the responder mocked in OpenAI's shapes; espeak-ng speaks.
    let (stt, llm) = (MockServer::start().await, MockServer::start().await);
    let transcripts =
        transcripts.iter().map(|t| ResponseTemplate::new(200).set_body_json(serde_json::json!({"text": t}))).collect();
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(Sequence::new(transcripts))
        .mount(&stt)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Sequence::new(answers))
        .mount(&llm)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "openai".into();
    config.stt.url = format!("{}/v1", stt.uri());
    config.stt.api_key = asterai::config::Secret::new("sk-stt");
    config.responder.provider = "openai".into();
    config.responder.url = format!("{}/v1", llm.uri());
    config.responder.api_key = asterai::config::Secret::new("sk-llm");
    config.tts.provider = "espeak".into();
    config.conversation.greeting_inbound = "Hello.".into();
    config.conversation.greeting_outbound = "Hello, this is Acme.".into();
    config.conversation.ai_disclosure = false;
    config.conversation.turn_budget = Dur::secs(8);
    // One transcription per utterance, so the mock's answers come in order.
    config.stream.speculative_pause = Dur::secs(0);
    config.stream.barge_in_min_speech = Dur::millis(120);
    config.stream.no_input = Dur::secs(12);
    std::fs::create_dir_all(config.media_dir()).unwrap();
    let providers = Providers::from_config(&config).unwrap();
    let transferer = rig.transfer_target.and_then(asterai::dialer::TransferTarget::parse).map(|target| {
        std::sync::Arc::new(asterai::dialer::AriTransferer::new(client.clone(), target))
            as std::sync::Arc<dyn asterai::conversation::Transferer>
    });
    let conversations =
        Conversations::new(daemon.publisher.clone(), providers, Settings::from_config(&config), transferer);

    // The tracker reads the application's events and hands the call over.
    let tracker = Tracker::new(
        daemon.publisher.clone(),
        client.clone(),
        TrackerConfig {
            context: "talker".into(),
            extension: "s".into(),
            orphan_grace: Duration::from_secs(60),
            reconcile_unassigned: false,
            conversation_grace: Duration::from_secs(10),
        },
    );
    let audiosocket = if rig.audiosocket {
        config.stream.transport = "audiosocket".into();
        let server =
            asterai::media::audiosocket::AudioSocketServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Some(std::sync::Arc::new(server))
    } else {
        None
    };
    let options = StreamOptions { app: APP.into(), stream: config.stream.clone(), support: None, audiosocket };
    tracker.set_stasis_calls(std::sync::Arc::new(StreamCalls::new(conversations, client.clone(), options)));
    let stop = CancellationToken::new();
    let items =
        asterai::ari::stream::spawn(StreamConfig::new(asterisk.settings(), APP, Duration::from_secs(5)), stop.clone());
    tokio::spawn(tracker.clone().run(items));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !tracker.connected() {
        assert!(tokio::time::Instant::now() < deadline, "the tracker never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    StreamRig { db, daemon, tracker, stop, _mocks: (stt, llm), _dir: dir }
}

/// Waits until asterai has taken its media channels and bridges down: no `asterai-media-…`
/// channel and no bridge of the application left in Asterisk.
async fn assert_nothing_left(client: &AriClient) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let channels = client.channels().await.unwrap();
        let media: Vec<_> = channels.iter().filter(|c| c.id.starts_with("asterai-media-")).collect();
        let apps = client.applications().await.unwrap();
        let bridges: Vec<&String> = apps.iter().filter(|a| a.name == APP).flat_map(|a| &a.bridge_ids).collect();
        if media.is_empty() && bridges.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "left in Asterisk: {media:?} {bridges:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Voiced 20 ms frames so far of an 8 kHz WAV Asterisk is still writing (its header's lengths
/// may not be set yet: every byte after the `data` chunk's header is a sample).
fn voiced_so_far(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap_or_default();
    let Some(at) = bytes.windows(4).position(|w| w == b"data") else { return 0 };
    let samples: Vec<f64> = bytes
        .get(at + 8..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64 / 32768.0)
        .collect();
    samples.chunks_exact(160).filter(|chunk| chunk.iter().map(|s| s * s).sum::<f64>() / 160.0 > 1e-4).count()
}

/// An outbound streaming call: the dialer places it with `media = "stream"`, the callee
/// answers, and the answered channel stays in the application (it never reaches the dialplan's
/// `ai` route) where the streaming conversation adopts the dialer's call and talks.
#[tokio::test]
async fn an_outbound_streaming_call_against_the_real_asterisk() {
    use asterai::dialer::{CallMedia, CallRequest, DialSettings, Dialer};
    use asterai::store::{CallStatus, Direction};
    use support::mocks::sse;

    support::init();
    // asterai's own log, shown with the test's output when it fails.
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=debug").with_test_writer().try_init();
    let asterisk = Asterisk::start().await;
    let rig = stream_rig(&asterisk, &["How much does it cost?"], vec![sse(&["It is twenty dollars a month."])]).await;
    espeak(&asterisk.mix_dir(), "ask", "How much does it cost?");
    let settings = DialSettings {
        endpoint: "Local/s@callee/n".into(),
        app: APP.into(),
        caller_id: "Acme <+15550000000>".into(),
        ring_timeout: Duration::from_secs(30),
        media: CallMedia::Agi,
    };
    let dialer = Dialer::new(rig.daemon.publisher.clone(), asterisk.client(), settings, Some(rig.tracker.clone()));
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let request = CallRequest { to: "+15551230000".into(), media: Some("stream".into()), ..Default::default() };
    let placed = dialer.place_call(&acme, &request).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let call = loop {
        let call = rig.db.store.call(acme.id, &placed.id).await.unwrap().unwrap();
        if call.ended_at.is_some() {
            break call;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outbound call never ended:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    rig.stop.cancel();
    assert_eq!((call.direction, call.status), (Direction::Outbound, CallStatus::Completed), "{call:?}");
    let turns = rig.db.store.turns(acme.id, &call.id).await.unwrap();
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    assert_eq!(said.first(), Some(&("", "Hello, this is Acme.")), "{said:?}\n{}", asterisk.console());
    assert!(said.contains(&("How much does it cost?", "It is twenty dollars a month.")), "{said:?}");
    // Held by the streaming conversation: the dialer's one call, never sent to the dialplan.
    assert_eq!(rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap().calls.len(), 1);
    assert!(!asterisk.console().contains("s@talker:1"), "the call went to the dialplan");
}

/// A recorded outbound streaming call: the agent's consent announcement, then the bridge's
/// recording (`POST /bridges/{id}/record`); after the call asterai fetches the file over ARI
/// into its own directory, a WAV that plays, and deletes Asterisk's copy.
#[tokio::test]
async fn a_recorded_streaming_call_against_the_real_asterisk() {
    use asterai::dialer::{CallMedia, CallRequest, DialSettings, Dialer};
    use asterai::store::{RecordingStatus, RecordingVia};
    use support::mocks::sse;

    support::init();
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=debug").with_test_writer().try_init();
    let asterisk = Asterisk::start().await;
    let rig = stream_rig(&asterisk, &["How much does it cost?"], vec![sse(&["It is twenty dollars a month."])]).await;
    espeak(&asterisk.mix_dir(), "ask", "How much does it cost?");
    // Where Asterisk stores ARI recordings (`<astspooldir>/recording`, which Asterisk's own
    // install creates; this private tree has only the spool).
    std::fs::create_dir_all(asterisk.mix_dir().with_file_name("spool").join("recording")).unwrap();
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let spec = "name = \"recorder\"\n[recording]\nenabled = true\nconsent_announcement = \"This call is recorded.\"\n";
    asterai::agent::create(&rig.db.store, acme.id, &asterai::agent::AgentSpec::parse(spec).unwrap(), true)
        .await
        .unwrap();
    let settings = DialSettings {
        endpoint: "Local/s@callee/n".into(),
        app: APP.into(),
        caller_id: "Acme <+15550000000>".into(),
        ring_timeout: Duration::from_secs(30),
        media: CallMedia::Agi,
    };
    let dialer = Dialer::new(rig.daemon.publisher.clone(), asterisk.client(), settings, Some(rig.tracker.clone()));
    let request = CallRequest { to: "+15551230000".into(), media: Some("stream".into()), ..Default::default() };
    let placed = dialer.place_call(&acme, &request).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let recording = loop {
        let recordings = rig.db.store.call_recordings(acme.id, &placed.id).await.unwrap();
        if let Some(r) = recordings.first().filter(|r| r.status != RecordingStatus::Recording) {
            break r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no settled recording: {recordings:#?}\n{}",
            asterisk.console()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    rig.stop.cancel();
    assert_eq!(recording.status, RecordingStatus::Available, "{recording:#?}\n{}", asterisk.console());
    assert_eq!(recording.via, RecordingVia::Bridge);
    assert!(recording.consent_announced && !recording.consent_required, "{recording:#?}");
    let bytes = std::fs::read(&recording.path).expect("the recording, fetched into asterai's directory");
    assert_eq!(recording.size_bytes, Some(bytes.len() as i64));
    let reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).expect("a WAV hound reads");
    assert_eq!(reader.spec().channels, 1);
    let samples: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(!samples.is_empty() && recording.duration_ms.unwrap() > 0, "{recording:#?}");
    // The agent's greeting and answer are in it.
    assert!(!asterai::speech::audio::is_silence(&samples, -45.0), "the recording holds the conversation");
    // Asterisk's copy is gone.
    let stored = asterisk.client().stored_recordings().await.unwrap();
    assert!(!stored.iter().any(|s| s.name == recording.name), "{stored:?}");
}

/// ARI over TLS (`ari.url = "https://…"`, `ari.ca_file`): REST, the event WebSocket (`wss://`)
/// and a chan_websocket media connection (`wss://…/media/<id>`) against the real Asterisk's
/// TLS listener; without the CA the certificate is refused.
#[tokio::test]
async fn ari_and_media_over_tls_against_the_real_asterisk() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let asterisk = Asterisk::start_with(true).await;
    let settings = asterisk.tls_settings();
    let client = AriClient::new(settings.clone()).unwrap();
    let info = client.asterisk_info().await.unwrap();
    assert_eq!(info.version(), Some("22.10.1"));

    // Without the test's CA (the public web roots) the certificate is refused, and said so.
    let untrusted = AriClient::new(AriSettings { ca_file: None, ..settings.clone() }).unwrap();
    let err = untrusted.asterisk_info().await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // A CA file that is not one is an error naming it.
    let bogus = asterisk.mix_dir().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let err = AriClient::new(AriSettings { ca_file: Some(bogus), ..settings.clone() }).unwrap_err().to_string();
    assert!(err.contains("ari.ca_file") && err.contains("bogus.pem"), "{err}");

    // The event stream over wss://.
    let stop = CancellationToken::new();
    let mut events =
        asterai::ari::stream::spawn(StreamConfig::new(settings.clone(), APP, Duration::from_secs(5)), stop.clone());
    let connected = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(matches!(connected, StreamItem::Connected { .. }), "{connected:?}");
    let originate = Originate {
        endpoint: "Local/s@talker".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme".into()] },
        variables: [("MIXDIR".to_owned(), asterisk.mix_dir().display().to_string())].into(),
        channel_id: Some("tls-caller".into()),
        other_channel_id: Some("tls-talker".into()),
        caller_id: None,
        timeout: None,
    };
    client.originate(&originate).await.unwrap();
    event(&mut events, "the caller's StasisStart over wss", stasis_start_of("tls-caller")).await;
    client.answer("tls-caller").await.unwrap();

    // A media channel, and asterai's connection to it over wss://.
    let mut media = ExternalMedia::websocket_server(APP, "slin16", true);
    media.channel_id = Some("tls-media".into());
    let channel = client.external_media(&media).await.unwrap();
    let vars = channel.channelvars.clone().unwrap_or_default();
    let connection_id = vars["MEDIA_WEBSOCKET_CONNECTION_ID"].as_str().expect("the connection id").to_owned();
    let url = settings.media_url(&connection_id).unwrap();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let options = WebSocketOptions { tls: client.tls(), ..WebSocketOptions::default() };
    let session = websocket::connect(&url, options).await.unwrap();
    assert_eq!(session.format().codec, Codec::Slin16);
    assert_eq!(session.channel_id(), Some("tls-media"));
    event(&mut events, "the media channel's StasisStart", stasis_start_of("tls-media")).await;
    let _ = client.hangup("tls-caller", None).await;
    stop.cancel();
}

/// Transfer inside Stasis: the caller of a streaming call asks for a person; the channel leaves
/// the application for the transfer target (`Local/s@agents`, a dialplan context here) through
/// ARI, and the call is stored as transferred. asterai's media channel and bridge are gone.
#[tokio::test]
async fn a_streaming_call_transferred_to_a_person_against_the_real_asterisk() {
    use asterai::store::{CallStatus, Outcome};
    use support::mocks::sse;

    support::init();
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=debug").with_test_writer().try_init();
    let asterisk = Asterisk::start().await;
    let rig = stream_rig_with(
        &asterisk,
        &["Can I speak to a person, please?"],
        vec![sse(&["Of course, one moment."])],
        RigOptions { transfer_target: Some("Local/s@agents"), ..RigOptions::default() },
    )
    .await;
    let mix = asterisk.mix_dir();
    espeak(&mix, "ask", "Can I speak to a person, please?");
    let client = asterisk.client();
    let originate = Originate {
        endpoint: "Local/s@transferee".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme".into()] },
        variables: [("MIXDIR".to_owned(), mix.display().to_string())].into(),
        channel_id: Some("transfer-caller".into()),
        other_channel_id: Some("transfer-talker".into()),
        caller_id: Some("Caller <5551230000>".into()),
        timeout: None,
    };
    client.originate(&originate).await.unwrap();

    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let call = loop {
        let page = rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if let Some(call) = page.calls.first().filter(|c| c.ended_at.is_some()) {
            break call.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the streaming call never ended:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(call.outcome, Some(Outcome::Transferred), "{call:?}\n{}", asterisk.console());
    assert_eq!(call.status, CallStatus::Completed, "{call:?}");
    let turns = rig.db.store.turns(acme.id, &call.id).await.unwrap();
    assert!(turns.iter().any(|t| t.caller == "Can I speak to a person, please?"), "{turns:?}");

    // The channel reached the transfer target's context, out of the application.
    let log = || std::fs::read_to_string(asterisk.dir.path().join("log/full")).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !log().contains("asterai transfer reached agents: Local/s@transferee") {
        assert!(tokio::time::Instant::now() < deadline, "the caller never reached [agents]:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // asterai's media channel and bridge are gone; only the caller's Local pair may remain.
    assert_nothing_left(&client).await;
    rig.stop.cancel();
}

/// The AudioSocket fallback end to end: `stream.transport = "audiosocket"`, Asterisk's
/// chan_audiosocket connects to asterai's listener with the UUID asterai announced; the caller
/// is greeted, asks, is answered, and hangs up; no media channel is left.
#[tokio::test]
async fn an_audiosocket_streaming_call_against_the_real_asterisk() {
    use asterai::store::CallStatus;
    use support::mocks::sse;

    support::init();
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=debug").with_test_writer().try_init();
    let asterisk = Asterisk::start().await;
    let rig = stream_rig_with(
        &asterisk,
        &["How much does it cost?"],
        vec![sse(&["It is twenty dollars a month."])],
        RigOptions { audiosocket: true, ..RigOptions::default() },
    )
    .await;
    let mix = asterisk.mix_dir();
    espeak(&mix, "ask", "How much does it cost?");
    let client = asterisk.client();
    let originate = Originate {
        endpoint: "Local/s@callee".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme".into()] },
        variables: [("MIXDIR".to_owned(), mix.display().to_string())].into(),
        channel_id: Some("as-caller".into()),
        other_channel_id: Some("as-talker".into()),
        caller_id: Some("Caller <5551230000>".into()),
        timeout: None,
    };
    client.originate(&originate).await.unwrap();
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    // The media channels Asterisk has while the call runs, by technology.
    let mut drivers = std::collections::BTreeSet::new();
    let call = loop {
        for channel in client.channels().await.unwrap_or_default() {
            if channel.id.starts_with("asterai-media-") {
                drivers.insert(channel.name.split('/').next().unwrap_or_default().to_owned());
            }
        }
        let page = rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if let Some(call) = page.calls.first().filter(|c| c.ended_at.is_some()) {
            break call.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the streaming call never ended:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(drivers.into_iter().collect::<Vec<_>>(), ["AudioSocket"], "the media channel's technology");
    assert_eq!(call.status, CallStatus::Completed, "{call:?}\n{}", asterisk.console());
    let turns = rig.db.store.turns(acme.id, &call.id).await.unwrap();
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    assert_eq!(said.first(), Some(&("", "Hello.")), "{said:?}\n{}", asterisk.console());
    assert!(said.contains(&("How much does it cost?", "It is twenty dollars a month.")), "{said:?}");
    assert_nothing_left(&client).await;
    rig.stop.cancel();
}

/// Tools on the streaming path against the real Asterisk: the model's tool calls arrive in
/// streamed fragments (OpenAI's chunk shapes). `send_dtmf` presses keys on the caller's channel
/// through ARI (the caller's side reads them with `Read()`), the model is asked again with the
/// result, then `end_call` ends the call: asterai hangs up, and the turns keep the tools used.
#[tokio::test]
async fn tool_calls_on_a_streaming_call_against_the_real_asterisk() {
    use asterai::store::{CallStatus, Outcome};
    use support::mocks::{sse, sse_tool_call, sse_tool_call_id};

    support::init();
    let _ = tracing_subscriber::fmt().with_env_filter("asterai=debug").with_test_writer().try_init();
    let asterisk = Asterisk::start().await;
    let answers = vec![
        sse_tool_call("", "send_dtmf", r#"{"digits":"42"}"#),
        sse(&["I pressed four two for you."]),
        sse_tool_call_id("call_end", "Thank you, goodbye!", "end_call", r#"{"outcome":"completed","reason":"done"}"#),
    ];
    let rig = stream_rig(&asterisk, &["Please press four two.", "That is all, thanks."], answers).await;
    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    rig.db
        .store
        .create_agent(
            acme.id,
            "menu",
            &serde_json::json!({"tools": ["send_dtmf", "end_call"], "greeting_inbound": "Hello."}),
        )
        .await
        .unwrap();
    let mix = asterisk.mix_dir();
    espeak(&mix, "ask", "Please press four two.");
    espeak(&mix, "done", "That is all, thanks.");
    let client = asterisk.client();
    let originate = Originate {
        endpoint: "Local/s@presser".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme&agent=menu".into()] },
        variables: [("MIXDIR".to_owned(), mix.display().to_string())].into(),
        channel_id: Some("tool-caller".into()),
        other_channel_id: Some("tool-talker".into()),
        caller_id: Some("Caller <5551230000>".into()),
        timeout: None,
    };
    client.originate(&originate).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let call = loop {
        let page = rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if let Some(call) = page.calls.first().filter(|c| c.ended_at.is_some()) {
            break call.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the streaming call never ended:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    rig.stop.cancel();
    assert_eq!(call.status, CallStatus::Completed, "{call:?}\n{}", asterisk.console());
    assert_eq!(call.outcome, Some(Outcome::Completed), "{call:?}");
    let turns = rig.db.store.turns(acme.id, &call.id).await.unwrap();
    let tools: Vec<(&str, &serde_json::Value)> =
        turns.iter().flat_map(|t| t.tools.iter().map(|u| (u.name.as_str(), &u.result))).collect();
    assert!(tools.iter().any(|(name, _)| *name == "send_dtmf"), "{tools:?}");
    assert!(tools.iter().any(|(name, _)| *name == "end_call"), "{tools:?}");
    let said: Vec<(&str, &str)> = turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str())).collect();
    // The caller's script may talk over the end of that answer (a barge-in): the turn keeps what
    // was heard of it.
    assert!(
        said.iter().any(|(caller, agent)| *caller == "Please press four two."
            && agent.starts_with("I pressed four two")
            && "I pressed four two for you.".starts_with(agent)),
        "{said:?}"
    );
    // The caller's side heard the keys: Read() stored them.
    let log = || std::fs::read_to_string(asterisk.dir.path().join("log/full")).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !log().contains("presser read: 42") {
        assert!(tokio::time::Instant::now() < deadline, "the keys never reached the caller:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The caller hangs up in the middle of the agent's answer: the call is stored ended as the
/// caller's hang-up while the agent spoke, the turn keeps only the part of the answer the
/// caller heard, asterai takes its media channel and bridge down, and its log has no warning
/// or error.
#[tokio::test]
async fn a_hang_up_in_the_middle_of_a_sentence_against_the_real_asterisk() {
    use asterai::store::CallStatus;
    use support::mocks::sse;

    support::init();
    let (logs, _guard) = support::logs::Logs::capture();
    let asterisk = Asterisk::start().await;
    let long = [
        "It costs twenty dollars a month. ",
        "That includes unlimited calls to every number in the country. ",
        "You also get voicemail, call forwarding and a second line at no extra charge. ",
        "And if you sign up this week, the first three months are free of charge. ",
        "Shall I tell you more about the installation?",
    ];
    let rig = stream_rig(&asterisk, &["How much does it cost?"], vec![sse(&long)]).await;
    let mix = asterisk.mix_dir();
    espeak(&mix, "ask", "How much does it cost?");
    let client = asterisk.client();
    let originate = Originate {
        endpoint: "Local/s@hanger".into(),
        destination: Destination::App { app: APP.into(), args: vec!["ai?org=acme".into()] },
        variables: [("MIXDIR".to_owned(), mix.display().to_string())].into(),
        channel_id: Some("hang-caller".into()),
        other_channel_id: Some("hang-talker".into()),
        caller_id: Some("Caller <5551230000>".into()),
        timeout: None,
    };
    client.originate(&originate).await.unwrap();

    // The caller hears the greeting ("Hello.", well under a second of speech) and then the
    // answer: a second and a half of the agent's speech in all, and the answer is playing.
    let heard = mix.join("hanger-heard.wav");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while voiced_so_far(&heard) < 75 {
        assert!(tokio::time::Instant::now() < deadline, "the answer never played:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The caller's phone hangs up.
    client.hangup("hang-talker", None).await.unwrap();

    let acme = rig.db.store.org_by_slug("acme").await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let call = loop {
        let page = rig.db.store.list_calls(acme.id, &Default::default()).await.unwrap();
        if let Some(call) = page.calls.first().filter(|c| c.ended_at.is_some()) {
            break call.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the streaming call never ended:\n{}", asterisk.console());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(call.status, CallStatus::Completed, "{call:?}");
    let reason = call.status_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("caller hung up while the agent spoke"), "{call:?}");
    let turns = rig.db.store.turns(acme.id, &call.id).await.unwrap();
    let said: Vec<(&str, &str, bool)> =
        turns.iter().map(|t| (t.caller.as_str(), t.agent.as_str(), t.interrupted)).collect();
    eprintln!("{reason}: {said:?}");
    let answered = turns.iter().find(|t| t.caller == "How much does it cost?").unwrap_or_else(|| panic!("{said:?}"));
    let full = long.concat();
    assert!(!answered.agent.trim().is_empty(), "the caller heard the start of the answer: {said:?}");
    assert!(full.starts_with(answered.agent.trim()), "{said:?}");
    assert!(answered.agent.trim().len() < full.trim().len() / 2, "only what was heard is kept: {said:?}");
    assert_nothing_left(&client).await;
    rig.stop.cancel();

    let text = logs.text();
    assert!(text.contains("streaming media connected"), "the capture holds asterai's log:\n{text}");
    let unexpected: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(unexpected.is_empty(), "warnings or errors in asterai's log:\n{}", unexpected.join("\n"));
    assert!(!text.contains("panicked"), "{text}");
}
