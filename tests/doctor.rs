//! `asterai doctor` against good and broken installations: the real binary, a real database,
//! speech providers mocked at the HTTP level.

mod support;

use std::process::Command;

use serde_json::Value;
use support::daemon::command;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A working installation in a temp dir: migrated SQLite, media and recordings directories,
/// free ports, OpenAI-compatible speech-to-text at `stt_url`, rules and espeak-ng.
struct Setup {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Setup {
    fn new(stt_url: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("ASTERAI_AGI_LISTEN".into(), "127.0.0.1:0".into()),
            ("ASTERAI_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            ("ASTERAI_STT_URL".into(), stt_url.into()),
            ("ASTERAI_STT_API_KEY".into(), "sk-good".into()),
        ];
        let setup = Setup { dir, env };
        let migrated = setup.command().arg("migrate").output().unwrap();
        assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
        for sub in ["media", "recordings"] {
            std::fs::create_dir_all(setup.dir.path().join(sub)).unwrap();
        }
        setup
    }

    fn command(&self) -> Command {
        let mut cmd = command(self.dir.path());
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }
}

/// Runs `doctor --json` and returns the exit success and each check's (level, detail, fix).
fn doctor(mut cmd: Command) -> (bool, Value) {
    let out = cmd.args(["doctor", "--json", "--timeout", "10"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("doctor --json printed {stdout:?} ({e}); stderr {}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(report["ok"].as_bool().unwrap(), out.status.success(), "the exit status follows the result: {report}");
    (out.status.success(), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

async fn models(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", "Bearer sk-good"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"object": "list", "data": [{"id": "whisper-1", "object": "model"}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(status).set_body_json(serde_json::json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_good_setup_passes() {
    let openai = models(401).await;
    let setup = Setup::new(&format!("{}/v1", openai.uri()));
    let (passed, report) = doctor(setup.command());
    assert!(passed, "{report:#}");
    for name in [
        "config",
        "database",
        "fastagi",
        "http",
        "media",
        "recordings",
        "stt",
        "responder",
        "tts",
        "espeak-ng",
        "clock",
    ] {
        assert_ne!(check(&report, name)["level"], "fail", "{name}: {report:#}");
    }
    assert_eq!(check(&report, "database")["level"], "ok");
    assert_eq!(check(&report, "stt")["level"], "ok");
    let text = setup.command().arg("doctor").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("ok") && l.contains("database")), "{text}");
    assert!(text.contains("0 failed"), "{text}");
}

#[tokio::test]
async fn a_provider_refusing_the_key_fails_with_a_fix() {
    let openai = models(401).await;
    let mut setup = Setup::new(&format!("{}/v1", openai.uri()));
    setup.set("ASTERAI_STT_API_KEY", "sk-revoked");
    let (passed, report) = doctor(setup.command());
    assert!(!passed);
    let stt = check(&report, "stt");
    assert_eq!(stt["level"], "fail");
    assert!(stt["detail"].as_str().unwrap().contains("refused the credentials"), "{stt}");
    assert!(stt["fix"].as_str().unwrap().contains("ASTERAI_STT_API_KEY"), "{stt}");
    let log = format!("{report}");
    assert!(!log.contains("sk-revoked"), "the key is never printed: {log}");
}

#[tokio::test]
async fn a_missing_database_fails() {
    let openai = models(401).await;
    let mut setup = Setup::new(&format!("{}/v1", openai.uri()));
    setup.set("ASTERAI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asterai_doctor_no_such_database");
    let (passed, report) = doctor(setup.command());
    assert!(!passed);
    let database = check(&report, "database");
    assert_eq!(database["level"], "fail", "{database}");
    assert!(database["detail"].as_str().unwrap().contains("asterai_doctor_no_such_database"), "{database}");
    assert!(database["fix"].as_str().unwrap().contains("database.url"), "{database}");
}

#[tokio::test]
async fn an_unwritable_media_directory_fails() {
    let openai = models(401).await;
    let mut setup = Setup::new(&format!("{}/v1", openai.uri()));
    let media = setup.dir.path().join("media");
    let as_root = effective_uid() == 0;
    let mut cmd = if as_root {
        // Root writes anywhere: run the doctor as nobody, with everything but media open to it.
        use std::os::unix::fs::PermissionsExt;
        for path in [setup.dir.path().to_owned(), setup.dir.path().join("recordings")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        for entry in std::fs::read_dir(setup.dir.path()).unwrap().flatten() {
            if entry.path().is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
            }
        }
        std::fs::set_permissions(&media, std::fs::Permissions::from_mode(0o755)).unwrap();
        let inner = setup.command();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(inner.get_program());
        cmd.envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))));
        cmd
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&media, std::fs::Permissions::from_mode(0o555)).unwrap();
        setup.set("ASTERAI_MEDIA_DIR", media.to_str().unwrap());
        setup.command()
    };
    cmd.env("ASTERAI_MEDIA_DIR", &media);
    let (passed, report) = doctor(cmd);
    assert!(!passed, "{report:#}");
    let check = check(&report, "media");
    assert_eq!(check["level"], "fail", "{check}");
    assert!(check["detail"].as_str().unwrap().contains("not writable"), "{check}");
}

#[test]
fn a_bad_config_is_the_one_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).env("ASTERAI_AGI_LISTEN", "nonsense").args(["doctor", "--json"]).output().unwrap();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["name"], "config");
    assert!(report["checks"][0]["detail"].as_str().unwrap().contains("agi.listen"), "{report}");
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef asterai"), ("fish", "complete -c asterai")] {
        let out = Command::new(support::daemon::binary()).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker) && script.contains("doctor"), "{shell}: {}", &script[..script.len().min(300)]);
    }
}

fn effective_uid() -> u32 {
    // `id -u` instead of libc: no unsafe code and no extra dependency for one number.
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// A minimal ARI for the doctor, answering as the captured Asterisk 22.10.1 did
/// (`ari/rest/asterisk-info.json`): the info document for good credentials (ari:ari), the
/// captured 401 for others, and the event WebSocket for good ones.
async fn fake_ari() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let capture: Value = serde_json::from_str(
        &std::fs::read_to_string(support::transcript::fixtures_dir().join("ari/rest/asterisk-info.json")).unwrap(),
    )
    .unwrap();
    let body = |status: u64| {
        capture["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["request"]["path"] == "/ari/asterisk/info" && e["response"]["status"] == status)
            .map(|e| e["response"]["body_text"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (info, refused) = (body(200), body(401));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (info, refused) = (info.clone(), refused.clone());
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let n = stream.peek(&mut head).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let authorized = head.lines().any(|l| l.eq_ignore_ascii_case("authorization: Basic YXJpOmFyaQ=="));
                if path.starts_with("/ari/events") && authorized {
                    if let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await {
                        let _ = socket.close(None).await;
                    }
                    return;
                }
                let mut discard = vec![0u8; n];
                let _ = tokio::io::AsyncReadExt::read_exact(&mut stream, &mut discard).await;
                let (status, body) = match (authorized, path.as_str()) {
                    (false, _) => ("401 Unauthorized", refused),
                    (true, "/ari/asterisk/info") => ("200 OK", info),
                    (true, _) => ("404 Not Found", r#"{"message":"Application not found"}"#.to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nServer: Asterisk/22.10.1\r\nContent-type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

// Multi-threaded: the doctor runs as a blocking child process while the fake answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_with_good_credentials_passes_and_bad_ones_fail() {
    let openai = models(401).await;
    let ari = fake_ari().await;
    let mut setup = Setup::new(&format!("{}/v1", openai.uri()));
    setup.set("ASTERAI_ARI_URL", &format!("http://{ari}"));
    setup.set("ASTERAI_ARI_USERNAME", "ari");
    setup.set("ASTERAI_ARI_PASSWORD", "ari");
    let (passed, report) = doctor(setup.command());
    assert!(passed, "{report:#}");
    let check_ari = check(&report, "ari");
    assert_eq!(check_ari["level"], "ok", "{check_ari}");
    assert!(check_ari["detail"].as_str().unwrap().contains("Asterisk 22.10.1"), "{check_ari}");
    // This Asterisk has no media modules (404): streaming calls are not possible, a warning.
    let check_media = check(&report, "streaming");
    assert_eq!(check_media["level"], "warn", "{check_media}");
    assert!(
        check_media["detail"].as_str().unwrap().contains("neither chan_websocket nor chan_audiosocket"),
        "{check_media}"
    );

    setup.set("ASTERAI_ARI_PASSWORD", "wrong-password");
    let (passed, report) = doctor(setup.command());
    assert!(!passed);
    let check_ari = check(&report, "ari");
    assert_eq!(check_ari["level"], "fail", "{check_ari}");
    assert!(check_ari["detail"].as_str().unwrap().contains("refused the credentials"), "{check_ari}");
    assert!(check_ari["fix"].as_str().unwrap().contains("ari.conf"), "{check_ari}");
    assert!(!report.to_string().contains("wrong-password"));
}
