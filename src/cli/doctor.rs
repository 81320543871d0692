//! `asterai doctor`: checks an installation in one run and says how to fix what is wrong.
//!
//! Every check prints `ok`, `warn` or `fail` with one line of detail and, unless it passed, one
//! line saying what to do. Nothing is changed: the database is not created or migrated, no call
//! is placed and no speech is synthesized by a paid provider (each is asked for its cheapest
//! authenticated read instead). The exit status is 1 when any check failed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::Context;
use crate::config::{Config, ConfigError, ConfigSource};
use crate::conversation::providers::base_urls;

/// Check the configuration, database, ports, ARI, directories, speech providers, espeak-ng and
/// the clock, and say how to fix what is wrong.
///
/// Prints one line per check (ok, warn or fail) with a one-line fix. Changes nothing. Exits 1
/// when any check failed, so it can gate a deployment.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Time allowed for each network check.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// The result of one check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, level: Level::Ok, detail: detail.into(), fix: None }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, level: Level::Warn, detail: detail.into(), fix: Some(fix.into()) }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, level: Level::Fail, detail: detail.into(), fix: Some(fix.into()) }
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    let checks =
        super::runtime()?.block_on(checks(&context.config, &context.source, Duration::from_secs(args.timeout)));
    report(&checks, args.json)
}

/// When the configuration itself does not load, that is the one result.
pub fn config_failed(args: &Args, error: &ConfigError) -> anyhow::Result<()> {
    let check = fail("config", error.to_string(), "correct the key named above; `asterai config --keys` lists them");
    report(&[check], args.json)
}

fn report(checks: &[Check], json: bool) -> anyhow::Result<()> {
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warned = checks.iter().filter(|c| c.level == Level::Warn).count();
    let mut out = std::io::stdout().lock();
    if json {
        let body = serde_json::json!({"ok": failed == 0, "failed": failed, "warnings": warned, "checks": checks});
        writeln!(out, "{body}")?;
    } else {
        for check in checks {
            let level = match check.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            writeln!(out, "{level}  {:<12} {}", check.name, check.detail)?;
            if let Some(fix) = &check.fix {
                writeln!(out, "      {:<12} fix: {fix}", "")?;
            }
        }
        writeln!(out, "{} checks: {failed} failed, {warned} warnings", checks.len())?;
    }
    out.flush()?;
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs every check.
pub async fn checks(config: &Config, source: &ConfigSource, timeout: Duration) -> Vec<Check> {
    let mut checks = vec![config_check(config, source)];
    checks.push(database(config, timeout).await);
    checks.push(port("fastagi", config.agi.listen, "agi.listen", timeout).await);
    checks.push(port("http", config.http.listen, "http.listen", timeout).await);
    checks.push(ari(config, timeout).await);
    checks.push(directory("media", &config.media_dir(), "media.dir"));
    checks.push(directory("recordings", &config.recordings_dir(), "media.recordings_dir"));
    checks.extend(providers(config, timeout).await);
    if config.tts.provider == "espeak" {
        checks.push(espeak(&config.tts.espeak_program).await);
    }
    checks.push(clock());
    checks
}

fn config_check(config: &Config, source: &ConfigSource) -> Check {
    let origin = match source {
        ConfigSource::File(path) => format!("{} and ASTERAI_* variables", path.display()),
        ConfigSource::Defaults => "built-in defaults and ASTERAI_* variables (no file)".into(),
    };
    let warnings = crate::conversation::Providers::warnings(config);
    if let Err(e) = crate::conversation::Providers::from_config(config) {
        return fail("config", format!("loaded from {origin}, but: {e}"), "fix responder.rules_file");
    }
    match warnings.first() {
        Some(first) => warn("config", format!("loaded from {origin}; {first}"), "set the key named above"),
        None => ok("config", format!("loaded from {origin}, every value valid")),
    }
}

async fn database(config: &Config, timeout: Duration) -> Check {
    let options = config.store_options();
    let url = options.url.trim();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !postgres {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if !Path::new(path).exists() {
            return warn(
                "database",
                format!("the SQLite database {path} does not exist yet"),
                "`asterai migrate` or the first `asterai serve` creates it (check that daemon.data_dir is right)",
            );
        }
    }
    let connect = tokio::time::timeout(timeout, crate::store::Store::connect(&options)).await;
    let store = match connect {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            return fail(
                "database",
                e.to_string(),
                "check database.url (ASTERAI_DATABASE_URL) and that the server runs",
            );
        }
        Err(_) => {
            return fail("database", format!("no answer within {timeout:?}"), "check database.url and the network");
        }
    };
    let result = match store.applied_migrations().await {
        Ok(applied) if applied >= store.known_migrations() => {
            ok("database", format!("{} reachable and migrated (version {applied})", store.backend()))
        }
        Ok(applied) => warn(
            "database",
            format!("{} reachable, {applied} of {} migrations applied", store.backend(), store.known_migrations()),
            "run `asterai migrate` (serve does it at start when database.migrate_on_start is true)",
        ),
        Err(e) => fail("database", e.to_string(), "check the database user's rights"),
    };
    store.close().await;
    result
}

/// A listener address is fine when it is free, or when asterai answers on it.
async fn port(name: &'static str, addr: SocketAddr, key: &str, timeout: Duration) -> Check {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => return ok(name, format!("{addr} is free")),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            return fail(name, format!("cannot listen on {addr}: {e}"), format!("choose another address in {key}"));
        }
        Err(_) => {}
    }
    let ours = match name {
        "http" => http_is_asterai(addr, timeout).await,
        _ => agi_is_asterai(addr, timeout).await,
    };
    if ours {
        ok(name, format!("{addr} is in use by a running asterai"))
    } else {
        fail(
            name,
            format!("{addr} is in use by another program"),
            format!("stop it (`ss -ltnp 'sport = :{}'` shows which) or change {key}", addr.port()),
        )
    }
}

async fn http_is_asterai(addr: SocketAddr, timeout: Duration) -> bool {
    let client = reqwest::Client::builder().timeout(timeout).build();
    let Ok(client) = client else { return false };
    match client.get(format!("http://{addr}/healthz")).send().await {
        Ok(response) => response
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|body| body["status"] == "ok" && body.get("version").is_some()),
        Err(_) => false,
    }
}

/// Runs the `health` route as Asterisk would and looks for asterai's answer.
async fn agi_is_asterai(addr: SocketAddr, timeout: Duration) -> bool {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let env = format!(
            "agi_network: yes\nagi_network_script: health\nagi_request: agi://{addr}/health\nagi_channel: asterai-doctor\nagi_uniqueid: doctor\n\n"
        );
        stream.write_all(env.as_bytes()).await.ok()?;
        let mut lines = BufReader::new(stream).lines();
        let first = lines.next_line().await.ok()??;
        Some(first.contains("asterai ok"))
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten().unwrap_or(false)
}

/// ARI: reachable, the credentials accepted, Asterisk's version, and an application can be
/// registered. The check registers `<ari.app>-doctor-<pid>`, never `ari.app` itself: taking over
/// the running daemon's application would cut its event stream (`ApplicationReplaced`).
async fn ari(config: &Config, timeout: Duration) -> Check {
    let ari = &config.ari;
    if !ari.enabled() {
        return warn(
            "ari",
            "ARI is not configured: asterai answers calls but does not place or transfer them",
            "set ari.url, ari.username and ari.password (ASTERAI_ARI_PASSWORD) to match Asterisk's ari.conf",
        );
    }
    let base = ari.url.trim().trim_end_matches('/');
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(e) => return fail("ari", format!("cannot build an HTTP client: {e}"), "report this bug"),
    };
    let info = client
        .get(format!("{base}/ari/asterisk/info"))
        .basic_auth(&ari.username, Some(ari.password.expose()))
        .send()
        .await;
    let info = match info {
        Ok(response) if response.status().is_success() => {
            response.json::<serde_json::Value>().await.unwrap_or_default()
        }
        Ok(response) if response.status().as_u16() == 401 => {
            return fail(
                "ari",
                format!("{base} refused the credentials of {:?} (401)", ari.username),
                "set ari.username and ari.password (ASTERAI_ARI_PASSWORD) to a user of Asterisk's ari.conf",
            );
        }
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return fail(
                "ari",
                format!("{base}/ari/asterisk/info answered {status}: {}", body.trim()),
                "check ari.url: Asterisk's http.conf address, with res_ari loaded",
            );
        }
        Err(e) => {
            return fail(
                "ari",
                format!("{base} is unreachable: {}", error_chain(&e)),
                "check ari.url and that Asterisk's HTTP server is enabled (http.conf)",
            );
        }
    };
    let version = info["system"]["version"].as_str().unwrap_or("unknown").to_owned();
    let probe_app = format!("{}-doctor-{}", ari.app, std::process::id());
    let ws = format!("{}/ari/events?app={probe_app}", base.replacen("http://", "ws://", 1));
    let registered = async {
        use base64::Engine as _;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = ws.into_client_request().map_err(|e| e.to_string())?;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ari.username, ari.password.expose()));
        let value = format!("Basic {credentials}").parse().map_err(|_| "bad credentials".to_owned())?;
        request.headers_mut().insert("Authorization", value);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| error_chain(&e))?;
        let _ = socket.close(None).await;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, registered).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return fail(
                "ari",
                format!("Asterisk {version} at {base}: an application cannot be registered: {e}"),
                "check the ARI user's rights in ari.conf (read_only = no)",
            );
        }
        Err(_) => {
            return fail(
                "ari",
                format!("Asterisk {version} at {base}: the event WebSocket did not open"),
                "check http.conf",
            );
        }
    }
    let live = client
        .get(format!("{base}/ari/applications/{}", ari.app))
        .basic_auth(&ari.username, Some(ari.password.expose()))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let app = if live {
        format!("application {:?} is registered (a daemon is connected)", ari.app)
    } else {
        format!("application {:?} can be registered", ari.app)
    };
    ok("ari", format!("Asterisk {version} at {base}: credentials accepted, {app}"))
}

/// Exists, writable by us, and shared with Asterisk: group-writable, with Asterisk in the group.
fn directory(name: &'static str, dir: &Path, key: &str) -> Check {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => return fail(name, format!("{} is not a directory", dir.display()), format!("fix {key}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // serve creates it: fine if the nearest existing parent lets us.
            let parent = dir.ancestors().skip(1).find(|p| p.exists());
            let creatable = parent.is_some_and(|p| {
                let probe = p.join(format!(".asterai-doctor-{}", std::process::id()));
                let writable = std::fs::create_dir(&probe).is_ok();
                let _ = std::fs::remove_dir(&probe);
                writable
            });
            if !creatable {
                return fail(
                    name,
                    format!("{} does not exist and cannot be created by this user", dir.display()),
                    format!("create it for the asterai user (see the README), or change {key}"),
                );
            }
            return warn(
                name,
                format!("{} does not exist yet", dir.display()),
                "`asterai serve` creates it; create it yourself to share it with Asterisk (see the README)",
            );
        }
        Err(e) => return fail(name, format!("{}: {e}", dir.display()), format!("fix {key}")),
    };
    let probe = dir.join(format!(".asterai-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"") {
        return fail(
            name,
            format!("{} is not writable by this user: {e}", dir.display()),
            format!("chown/chmod it for the asterai user, or change {key}"),
        );
    }
    let _ = std::fs::remove_file(&probe);
    let mode = meta.permissions().mode();
    let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    let Some(asterisk) = user_groups("asterisk") else {
        return ok(name, format!("{} writable (no asterisk user on this host to check sharing)", dir.display()));
    };
    let shared = asterisk.uid == meta.uid() || asterisk.groups.contains(&meta.gid());
    if !shared {
        return warn(
            name,
            format!("{} (group {group}) is not shared with the asterisk user", dir.display()),
            format!("`usermod -aG {group} asterisk` and restart Asterisk"),
        );
    }
    if asterisk.uid != meta.uid() && mode & 0o070 != 0o070 {
        return warn(
            name,
            format!("{} is mode {:o}: the group cannot read and write it", dir.display(), mode & 0o7777),
            format!("`chmod 2770 {}`", dir.display()),
        );
    }
    ok(name, format!("{} writable and shared with asterisk (group {group})", dir.display()))
}

struct UserGroups {
    uid: u32,
    groups: Vec<u32>,
}

/// The uid and groups of a user, from /etc/passwd and /etc/group.
fn user_groups(user: &str) -> Option<UserGroups> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[0] == user)?;
    let uid = fields.get(2)?.parse().ok()?;
    let primary: u32 = fields.get(3)?.parse().ok()?;
    let mut groups = vec![primary];
    if let Ok(group) = std::fs::read_to_string("/etc/group") {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() == 4 && f[3].split(',').any(|m| m == user) {
                groups.extend(f[2].parse::<u32>().ok());
            }
        }
    }
    Some(UserGroups { uid, groups })
}

fn group_name(gid: u32) -> Option<String> {
    let group = std::fs::read_to_string("/etc/group").ok()?;
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&gid.to_string().as_str()))
        .map(|f| f[0].to_owned())
}

/// Each configured HTTP provider: reachable and the key accepted, through a read that costs
/// nothing (the model or voice list, or the account).
async fn providers(config: &Config, timeout: Duration) -> Vec<Check> {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(e) => return vec![fail("providers", format!("cannot build an HTTP client: {e}"), "report this bug")],
    };
    let mut checks = Vec::new();
    for (kind, provider, url) in base_urls(config) {
        let name = match kind {
            "stt" => "stt",
            "responder" => "responder",
            _ => "tts",
        };
        let Some(url) = url else {
            let detail = match provider {
                "scripted" => {
                    checks.push(warn(
                        name,
                        "the scripted speech-to-text is for `asterai demo` and tests only",
                        "set stt.provider to openai or deepgram",
                    ));
                    continue;
                }
                "rules" => "the built-in rules responder (no network)",
                _ => "espeak-ng (local, checked below)",
            };
            checks.push(ok(name, detail));
            continue;
        };
        let key = match kind {
            "stt" => config.stt.api_key.expose(),
            "responder" => config.responder.api_key.expose(),
            _ => config.tts.api_key.expose(),
        };
        let url = url.trim_end_matches('/');
        let request = match provider {
            "deepgram" => client.get(format!("{url}/projects")).header("Authorization", format!("Token {key}")),
            "elevenlabs" => client.get(format!("{url}/user")).header("xi-api-key", key),
            _ => client.get(format!("{url}/models")).bearer_auth(key),
        };
        let env = format!("ASTERAI_{}_API_KEY", kind.to_uppercase());
        checks.push(match request.send().await {
            Ok(response) if response.status().is_success() => {
                ok(name, format!("{provider} at {url}: reachable, credentials accepted"))
            }
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => fail(
                name,
                format!("{provider} at {url} refused the credentials ({})", response.status()),
                format!("set a valid {kind}.api_key ({env})"),
            ),
            Ok(response) => warn(
                name,
                format!("{provider} at {url} answered {} to a credentials check", response.status()),
                format!("check {kind}.url; a self-hosted server may not offer this check"),
            ),
            Err(e) => fail(
                name,
                format!("{provider} at {url} is unreachable: {}", error_chain(&e)),
                format!("check {kind}.url, DNS and the firewall"),
            ),
        });
    }
    checks
}

/// The innermost cause of an error: reqwest's own message ("error sending request") rarely says
/// what went wrong, its deepest source does ("Connection refused", a DNS failure).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut deepest = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        deepest = cause.to_string();
        source = cause.source();
    }
    deepest
}

async fn espeak(program: &str) -> Check {
    let run = tokio::process::Command::new(program).arg("--version").output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            ok("espeak-ng", version.lines().next().unwrap_or("").trim().to_owned())
        }
        Ok(Ok(out)) => fail(
            "espeak-ng",
            format!("{program} --version failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            "reinstall espeak-ng",
        ),
        Ok(Err(e)) => fail("espeak-ng", format!("cannot run {program}: {e}"), "`apt-get install espeak-ng`"),
        Err(_) => fail("espeak-ng", format!("{program} did not answer"), "check tts.espeak_program"),
    }
}

/// Calling windows and timestamps need a sane clock and the IANA timezone database.
fn clock() -> Check {
    let now = chrono::Utc::now();
    if now.timestamp() < 1_735_689_600 {
        return fail("clock", format!("the system clock says {now}"), "enable NTP (`timedatectl set-ntp true`)");
    }
    let zoneinfo = std::env::var_os("TZDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/share/zoneinfo"));
    if !zoneinfo.join("America/New_York").exists() {
        return warn(
            "clock",
            format!("{now}; no timezone database in {}", zoneinfo.display()),
            "`apt-get install tzdata` (calling windows use each contact's timezone)",
        );
    }
    let synced = std::fs::read_to_string("/run/systemd/timesync/synchronized").is_ok()
        || Path::new("/run/systemd/timesync/synchronized").exists();
    let detail = format!("{} UTC, timezone database present", now.format("%Y-%m-%d %H:%M:%S"));
    if synced { ok("clock", format!("{detail}, NTP synchronized")) } else { ok("clock", detail) }
}
