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
    /// Asterisk's asterisk.conf: its runuser and rungroup, and (through astrundir's pid file)
    /// the running process, tell whether Asterisk can reach the media and recordings directories.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_ASTERISK_CONF)]
    asterisk_conf: PathBuf,
}

/// Where Asterisk's main configuration file is on a packaged install.
pub const DEFAULT_ASTERISK_CONF: &str = "/etc/asterisk/asterisk.conf";

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
    let timeout = Duration::from_secs(args.timeout);
    let checks = super::runtime()?.block_on(checks(&context.config, &context.source, &args.asterisk_conf, timeout));
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
pub async fn checks(config: &Config, source: &ConfigSource, asterisk_conf: &Path, timeout: Duration) -> Vec<Check> {
    let mut checks = vec![config_check(config, source)];
    checks.push(database(config, timeout).await);
    checks.push(port("fastagi", config.agi.listen, "agi.listen", timeout).await);
    checks.push(port("http", config.http.listen, "http.listen", timeout).await);
    let ari_check = ari(config, timeout).await;
    let ari_ok = ari_check.level == Level::Ok;
    checks.push(ari_check);
    if ari_ok {
        checks.push(media(config, timeout).await);
    }
    let asterisk = AsteriskRuns::find(asterisk_conf);
    checks.push(asterisk.check());
    checks.push(directory("media", &config.media_dir(), "media.dir", &asterisk));
    checks.push(directory("recordings", &config.recordings_dir(), "media.recordings_dir", &asterisk));
    checks.push(directory("call recordings", &config.call_recordings_dir(), "media.call_recordings_dir", &asterisk));
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
        Some(first) => warn("config", format!("loaded from {origin}; {first}"), key_fix(config, first)),
        None => ok("config", format!("loaded from {origin}, every value valid")),
    }
}

/// What to do about a provider without its key, exactly: the variable to set, or the local
/// server to point at instead.
fn key_fix(config: &Config, warning: &str) -> String {
    let section = warning.split('.').next().unwrap_or_default();
    let env = format!("ASTERAI_{}_API_KEY", section.to_ascii_uppercase());
    match (section, config.stt.provider.as_str()) {
        ("stt", "deepgram") => format!("set {env} to a Deepgram API key (in the environment file or [stt] api_key)"),
        ("stt", _) => format!(
            "set {env} to an OpenAI API key (in the environment file or [stt] api_key), or run a local \
             Whisper-compatible server and set stt.url to it, e.g. stt.url = \"http://127.0.0.1:8000/v1\" \
             (no key needed)"
        ),
        ("responder", _) => format!(
            "set {env} to the provider's API key, or set responder.url to a local OpenAI-compatible server \
             (e.g. Ollama: responder.url = \"http://127.0.0.1:11434/v1\"), or use responder.provider = \"rules\""
        ),
        _ => format!("set {env} to the {} API key, or use tts.provider = \"espeak\" (local)", config.tts.provider),
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
///
/// The probe plays Asterisk to the end: it answers each command of the route the way Asterisk
/// does and waits for the daemon to close the session, so that a running daemon sees a normal
/// session and logs no warning for it.
async fn agi_is_asterai(addr: SocketAddr, timeout: Duration) -> bool {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (read, mut write) = stream.into_split();
        let env = format!(
            "agi_network: yes\nagi_network_script: health\nagi_request: agi://{addr}/health\nagi_channel: {PROBE_CHANNEL}\nagi_uniqueid: doctor\n\n"
        );
        write.write_all(env.as_bytes()).await.ok()?;
        let mut lines = BufReader::new(read).lines();
        let first = lines.next_line().await.ok()??;
        if !first.contains("asterai ok") {
            return Some(false);
        }
        // The health route sends three commands; a few more are answered all the same.
        let mut command = Some(first);
        for _ in 0..8 {
            let Some(line) = command.take() else { break };
            let reply = if line.starts_with("GET VARIABLE") || line.starts_with("GET FULL VARIABLE") {
                format!("200 result=1 ({PROBE_CHANNEL})\n")
            } else {
                "200 result=1\n".to_owned()
            };
            write.write_all(reply.as_bytes()).await.ok()?;
            command = lines.next_line().await.ok().flatten();
        }
        Some(true)
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten().unwrap_or(false)
}

/// The channel name the doctor's probe gives itself.
const PROBE_CHANNEL: &str = "asterai-doctor";

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

/// The external media transport the connected Asterisk offers the streaming path
/// (chan_websocket, or the AudioSocket fallback), against `stream.transport`. Only a fail
/// when calls are to stream (`conversation.media = "stream"`) and cannot.
async fn media(config: &Config, timeout: Duration) -> Check {
    let client = match crate::ari::AriClient::new(config.ari.settings()) {
        Ok(client) => client,
        Err(e) => return warn("streaming", format!("cannot build an ARI client: {e}"), "check ari.url"),
    };
    let support = match tokio::time::timeout(timeout, crate::ari::detect_media(&client)).await {
        Ok(Ok(support)) => support,
        Ok(Err(e)) => {
            return warn(
                "streaming",
                format!("cannot ask Asterisk which media transports it has: {e}"),
                "give the ARI user read access to /asterisk/modules",
            );
        }
        Err(_) => {
            return warn("streaming", "Asterisk did not say which media transports it has in time", "check ari.url");
        }
    };
    let line = support.describe();
    let usable = match config.stream.transport.as_str() {
        "websocket" => support.chan_websocket,
        "audiosocket" => support.audiosocket,
        _ => support.preferred().is_some(),
    };
    let fix = format!(
        "load chan_websocket.so (Asterisk 22.6+) or chan_audiosocket.so in modules.conf, or set stream.transport to what Asterisk has (now {:?})",
        config.stream.transport
    );
    match (usable, config.conversation.media.as_str()) {
        (true, _) => ok("streaming", line),
        (false, "stream") => fail("streaming", format!("{line}; conversation.media is \"stream\""), fix),
        (false, _) => warn("streaming", format!("{line}; streaming calls are not possible"), fix),
    }
}

/// Exists, writable by us, and shared with Asterisk: Asterisk, as it runs, can reach it and
/// read and write it (as its owner, through one of its groups, or as root).
fn directory(name: &'static str, dir: &Path, key: &str, asterisk: &AsteriskRuns) -> Check {
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
    let Some(who) = &asterisk.identity else {
        return ok(name, format!("{} writable (no Asterisk on this host to check sharing)", dir.display()));
    };
    if who.uid == 0 {
        return ok(name, format!("{} writable; Asterisk runs as root", dir.display()));
    }
    // Every directory on the way must let Asterisk through, and the last one in.
    let full = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let blocked = full.ancestors().skip(1).find(|parent| !who.may(parent, 0o1));
    let usable = who.may(dir, 0o7);
    if blocked.is_none() && usable {
        return ok(
            name,
            format!("{} writable and shared with Asterisk ({}; group {group})", dir.display(), who.describe()),
        );
    }
    let place = match blocked {
        Some(parent) => format!("cannot reach {} through {}", dir.display(), parent.display()),
        None => format!("cannot read and write {} (group {group}, mode {:o})", dir.display(), mode & 0o7777),
    };
    // The shared-group set-up broken by rungroup: the user is in the group, the process is not.
    let member_only_on_paper =
        who.user.as_deref().and_then(user_groups).is_some_and(|u| u.groups.contains(&meta.gid()))
            && !who.gids.contains(&meta.gid());
    if let (true, Some(rungroup)) = (member_only_on_paper, &asterisk.rungroup) {
        return fail(
            name,
            format!(
                "Asterisk ({}) {place}: {} sets rungroup = {rungroup} (the same as `asterisk -G`), so Asterisk drops its supplementary groups at start, {group} among them",
                who.describe(),
                asterisk.conf.display()
            ),
            format!(
                "remove rungroup from {} (and any -G from Asterisk's command line) so that Asterisk keeps the groups of its runuser, then restart Asterisk; or share the directories through Asterisk's own group: `chgrp {rungroup} {dir} && chmod 2770 {dir}` and `usermod -aG {rungroup} asterai` (see the README, \"Media and recordings: the shared group\")",
                asterisk.conf.display(),
                dir = dir.display()
            ),
        );
    }
    let user = who.user.clone().unwrap_or_else(|| who.uid.to_string());
    let fix = format!(
        "`usermod -aG {group} {user}`, `chmod 2770 {}` and a path {user} may pass (0750 with that group, as the README shows), then restart Asterisk",
        dir.display()
    );
    let detail = format!("Asterisk ({}) {place}", who.describe());
    if asterisk.running.is_some() { fail(name, detail, fix) } else { warn(name, detail, fix) }
}

/// How Asterisk runs, from its `asterisk.conf` and, when its pid file names a live process, from
/// that process itself (`/proc/<pid>/status`).
struct AsteriskRuns {
    conf: PathBuf,
    /// `asterisk.conf` was read.
    conf_found: bool,
    /// `rungroup` in `[options]`, or `-G` on the running Asterisk's command line: Asterisk keeps
    /// that group only.
    rungroup: Option<String>,
    /// The running Asterisk's pid.
    running: Option<u32>,
    /// Who it is (or will be) to the file system; `None` without any Asterisk to look at.
    identity: Option<Identity>,
}

/// A user and the groups a process of it holds.
struct Identity {
    user: Option<String>,
    uid: u32,
    gid: u32,
    /// The effective group and the supplementary groups.
    gids: Vec<u32>,
    /// Where this came from: "pid 1234" or "asterisk.conf".
    source: String,
}

impl Identity {
    fn describe(&self) -> String {
        let user = self.user.clone().unwrap_or_else(|| self.uid.to_string());
        let mut groups: Vec<String> =
            self.gids.iter().map(|g| group_name(*g).unwrap_or_else(|| g.to_string())).collect();
        groups.dedup();
        format!("{}, user {user}, groups {}", self.source, groups.join(","))
    }

    /// Whether this identity has the `bits` (4 read, 2 write, 1 search) of `path`'s mode for it.
    fn may(&self, path: &Path, bits: u32) -> bool {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::metadata(path) else { return false };
        let mode = meta.permissions().mode();
        let class = if self.uid == meta.uid() {
            mode >> 6
        } else if self.gid == meta.gid() || self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    }
}

impl AsteriskRuns {
    fn find(conf: &Path) -> AsteriskRuns {
        let text = std::fs::read_to_string(conf).ok();
        let option = |section: &str, key: &str| text.as_deref().and_then(|t| conf_value(t, section, key));
        let runuser = option("options", "runuser");
        let rungroup = option("options", "rungroup");
        let rundir = option("directories", "astrundir").unwrap_or_else(|| "/var/run/asterisk".into());
        let mut runs = AsteriskRuns {
            conf: conf.to_owned(),
            conf_found: text.is_some(),
            rungroup: rungroup.clone(),
            running: None,
            identity: None,
        };
        if let Some((pid, identity, dash_g)) = running_asterisk(&Path::new(&rundir).join("asterisk.pid")) {
            runs.running = Some(pid);
            runs.identity = Some(identity);
            runs.rungroup = runs.rungroup.or(dash_g);
            return runs;
        }
        // Not running (or not visible): what asterisk.conf, or the asterisk user, would give it.
        let user = match (&runuser, runs.conf_found) {
            (Some(user), _) => Some(user.clone()),
            (None, _) if user_groups("asterisk").is_some() => Some("asterisk".to_owned()),
            (None, true) => None,
            (None, false) => return runs,
        };
        let Some(user) = user else {
            // asterisk.conf without runuser: Asterisk runs as whoever starts it, root by default.
            runs.identity = Some(Identity {
                user: Some("root".into()),
                uid: 0,
                gid: 0,
                gids: vec![0],
                source: "asterisk.conf".into(),
            });
            return runs;
        };
        let Some(account) = user_groups(&user) else { return runs };
        let gids = match rungroup.as_deref().and_then(group_id) {
            Some(gid) => vec![gid],
            None => account.groups.clone(),
        };
        let source = if runs.conf_found { "asterisk.conf, not running" } else { "the asterisk user" };
        runs.identity =
            Some(Identity { user: Some(user), uid: account.uid, gid: gids[0], gids, source: source.into() });
        runs
    }

    /// The `asterisk` check: where the answer comes from, and a word on rungroup.
    fn check(&self) -> Check {
        let Some(who) = &self.identity else {
            let detail = if self.conf_found {
                format!("{}: Asterisk is not running and its user is unknown", self.conf.display())
            } else {
                format!("no {} and no asterisk user: Asterisk is not on this host", self.conf.display())
            };
            return ok("asterisk", detail);
        };
        match (&self.rungroup, who.uid) {
            (Some(group), uid) if uid != 0 => warn(
                "asterisk",
                format!("{}; rungroup = {group}: Asterisk holds no supplementary groups", who.describe()),
                format!(
                    "share media.dir and media.recordings_dir through group {group}, or remove rungroup (see the README)"
                ),
            ),
            _ => ok("asterisk", who.describe()),
        }
    }
}

/// A value of `key` in `[section]` of an Asterisk configuration file (`key = value` or
/// `key => value`; `;` starts a comment).
fn conf_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix('[') {
            current = name.split(']').next().unwrap_or("").trim().to_owned();
            continue;
        }
        if current != section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() == key {
            let value = v.trim_start_matches('>').trim();
            return (!value.is_empty()).then(|| value.to_owned());
        }
    }
    None
}

/// The Asterisk whose pid file is `pid_file`, if it runs: its pid, its identity, and the group
/// of a `-G` on its command line.
fn running_asterisk(pid_file: &Path) -> Option<(u32, Identity, Option<String>)> {
    let pid: u32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if !comm.trim().starts_with("asterisk") {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    };
    // Uid: real, effective, saved, file system. The effective ids decide access.
    let uid: u32 = field("Uid:")?.get(1)?.parse().ok()?;
    let gid: u32 = field("Gid:")?.get(1)?.parse().ok()?;
    let mut gids = vec![gid];
    gids.extend(field("Groups:").unwrap_or_default().iter().filter_map(|g| g.parse::<u32>().ok()));
    let user = user_name(uid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let dash_g = args.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix("-G") {
        Some("") => args.get(i + 1).cloned(),
        Some(group) => Some(group.to_owned()),
        None => None,
    });
    Some((pid, Identity { user, uid, gid, gids, source: format!("pid {pid}") }, dash_g))
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

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&uid.to_string().as_str()))
        .map(|f| f[0].to_owned())
}

fn group_id(name: &str) -> Option<u32> {
    let group = std::fs::read_to_string("/etc/group").ok()?;
    group.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[0] == name).and_then(|f| f.get(2)?.parse().ok())
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_key_says_which_variable_or_url() {
        let config = crate::config::Config::default();
        let warning =
            crate::conversation::Providers::warnings(&config).into_iter().next().expect("stt has no key by default");
        let fix = super::key_fix(&config, &warning);
        assert!(fix.contains("ASTERAI_STT_API_KEY") && fix.contains("stt.url = \"http://127.0.0.1:8000/v1\""), "{fix}");
        let deepgram = crate::config::Config::from_toml("[stt]\nprovider = \"deepgram\"\n").unwrap();
        assert!(super::key_fix(&deepgram, &warning).contains("Deepgram API key"));
        let fix = super::key_fix(&config, "responder.api_key is empty");
        assert!(fix.contains("ASTERAI_RESPONDER_API_KEY"), "{fix}");
    }
}
