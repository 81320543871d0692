//! A real Asterisk 22.10.1 for end-to-end tests.
//!
//! [`Asterisk::shared`] starts one isolated instance per test binary; [`Asterisk::start`] starts a
//! private one for a test that stops, kills or restarts it, or runs it as another user. Each
//! instance gets:
//!
//! * a temporary configuration tree: Asterisk's own samples from `$ASTERISK_PREFIX/etc/asterisk`
//!   (default prefix `/opt/asterisk-22.10.1`, built by `../shared/asterisk/build.sh`), overlaid
//!   with the project's `asterisk-config/` (`extensions.conf`, `http.conf`, `ari.conf`,
//!   `pjsip.conf`) changed only where a test needs it: the `ASTERAI` global and the HTTP port;
//! * free ports and every listener on 127.0.0.1 (the modules that listen on every address by
//!   default are not loaded, and [`Asterisk::start`] checks the sockets it holds);
//! * the test-only dialplan of `tests/support/asterisk-test.conf`, included from the copy;
//! * music on hold that a test can hear: the `default` class plays one WAV of a steady
//!   [`MUSIC_ON_HOLD_HZ`] tone (no music packs are installed);
//! * a log with every AGI line (`agi set debug on`, verbose 5) that [`Asterisk::agi_exchange`]
//!   reads back, a CLI ([`Asterisk::cli`]) and AstDB access ([`Asterisk::db_get`]);
//! * people who speak: [`Script`]s of dialplan steps stored in AstDB and run by the
//!   `[asterai-test-person]` context on one leg of a Local channel, with espeak-ng utterances
//!   ([`Asterisk::utterance`]) and real silent audio between them.
//!
//! Asterisk never outlives the test binary: a private instance is killed when dropped, every
//! instance is started with `PR_SET_PDEATHSIG` from a thread that lives as long as the process
//! and is killed by an `atexit` hook, and each start first kills the instances that a test
//! binary which died left behind (their pid files are in `$TMPDIR/asterai-test-asterisk/`).

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Where Asterisk is installed, unless `ASTERISK_PREFIX` says otherwise.
pub const DEFAULT_PREFIX: &str = "/opt/asterisk-22.10.1";

/// Generous deadline for anything Asterisk does in real time.
pub const WAIT: Duration = Duration::from_secs(60);

/// The tone of the harness's music on hold: apart from the agent's 300 Hz and a barging
/// supervisor's 1 kHz.
pub const MUSIC_ON_HOLD_HZ: f64 = 600.0;

/// The prefix of the Asterisk under test: `$ASTERISK_PREFIX`, else [`DEFAULT_PREFIX`].
pub fn prefix() -> PathBuf {
    std::env::var_os("ASTERISK_PREFIX")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PREFIX), PathBuf::from)
}

fn project_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("asterisk-config").join(name)
}

/// The ARI user and password of the shipped `ari.conf`, which the harness loads unchanged.
pub fn ari_credentials() -> (String, String) {
    let text = std::fs::read_to_string(project_file("ari.conf")).expect("asterisk-config/ari.conf");
    let mut user = None;
    let mut password = None;
    for line in text.lines().map(|l| l.split(';').next().unwrap_or("").trim()) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            user = (section != "general").then(|| section.to_owned());
        } else if let Some((key, value)) = line.split_once('=')
            && key.trim() == "password"
            && user.is_some()
        {
            password = Some(value.trim().to_owned());
            break;
        }
    }
    (user.expect("an ARI user in ari.conf"), password.expect("a password in ari.conf"))
}

/// How to run an instance.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `runuser` in asterisk.conf: Asterisk drops root and runs as this user.
    pub run_user: Option<String>,
    /// `rungroup` in asterisk.conf (what `-G` does): Asterisk runs with this group only and
    /// drops every supplementary group.
    pub run_group: Option<String>,
    /// The `ASTERAI` global of the dialplan. Default: a closed port, so a call must name its
    /// daemon (a channel variable `ASTERAI`).
    pub asterai: Option<String>,
    /// `transmit_silence = yes`: Asterisk writes silence to a channel while it records (what a
    /// supervisor's whisper on an AGI call is mixed into).
    pub transmit_silence: bool,
}

/// A channel Asterisk created for [`Asterisk::originate`].
#[derive(Debug, Clone)]
pub struct Originated {
    pub id: String,
    pub name: String,
}

impl Originated {
    /// The other half of a Local channel (`…;1` ↔ `…;2`).
    pub fn other_leg(&self) -> String {
        match self.name.strip_suffix(";1") {
            Some(base) => format!("{base};2"),
            None => self.name.trim_end_matches(";2").to_owned() + ";1",
        }
    }
}

/// One line of an AGI exchange, as Asterisk logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgiLine {
    /// Asterisk wrote it (environment, replies, `HANGUP`).
    Tx(String),
    /// Asterisk read it (a command from asterai).
    Rx(String),
}

impl AgiLine {
    pub fn text(&self) -> &str {
        match self {
            AgiLine::Tx(t) | AgiLine::Rx(t) => t,
        }
    }
}

/// A channel's AGI exchange, read from Asterisk's log.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub lines: Vec<AgiLine>,
}

impl Exchange {
    /// Each command asterai sent, with the reply Asterisk gave (`None` if none came).
    pub fn commands(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for line in &self.lines {
            match line {
                AgiLine::Rx(command) => out.push((command.clone(), None)),
                AgiLine::Tx(reply) if reply.starts_with(|c: char| c.is_ascii_digit()) => {
                    if let Some(last) = out.last_mut()
                        && last.1.is_none()
                    {
                        last.1 = Some(reply.clone());
                    }
                }
                AgiLine::Tx(_) => {}
            }
        }
        out
    }

    /// The commands whose name starts with `prefix`, with their replies.
    pub fn named(&self, prefix: &str) -> Vec<(String, Option<String>)> {
        self.commands().into_iter().filter(|(c, _)| c.starts_with(prefix)).collect()
    }

    /// Replies that are errors: 510, 511 or 520.
    pub fn errors(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                AgiLine::Tx(t) if t.starts_with("510") || t.starts_with("511") || t.starts_with("520") => {
                    Some(t.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The commands asterai sent after Asterisk said `HANGUP`.
    pub fn after_hangup(&self) -> Vec<String> {
        let Some(at) = self.lines.iter().position(|l| *l == AgiLine::Tx("HANGUP".into())) else { return Vec::new() };
        self.lines[at..]
            .iter()
            .filter_map(|l| match l {
                AgiLine::Rx(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// The `endpos` of a reply.
    pub fn endpos(reply: &str) -> Option<i64> {
        reply.split_whitespace().find_map(|w| w.strip_prefix("endpos=")).and_then(|v| v.parse().ok())
    }
}

/// A real Asterisk with its own configuration tree.
pub struct Asterisk {
    prefix: PathBuf,
    dir: tempfile::TempDir,
    conf: PathBuf,
    http_port: u16,
    options: Options,
    process: Mutex<Option<Child>>,
}

static SHARED: tokio::sync::OnceCell<Asterisk> = tokio::sync::OnceCell::const_new();
static KEYS: AtomicU32 = AtomicU32::new(1000);

/// A number unique in this test binary, for AstDB keys and extensions.
pub fn unique() -> u32 {
    KEYS.fetch_add(1, Ordering::Relaxed)
}

impl Asterisk {
    /// The instance every test of this binary shares, started on first use. Tests sharing it use
    /// their own daemons, keys and numbers; none may stop it.
    pub async fn shared() -> &'static Asterisk {
        SHARED.get_or_init(|| Asterisk::start(Options::default())).await
    }

    /// Starts a private instance; it is killed when dropped.
    pub async fn start(options: Options) -> Asterisk {
        super::init();
        reap_leftovers();
        let prefix = prefix();
        let binary = prefix.join("sbin/asterisk");
        assert!(
            binary.exists(),
            "no Asterisk at {} (scripts/test builds it with ../shared/asterisk/build.sh; ASTERISK_PREFIX picks another)",
            binary.display()
        );
        let mut last_error = String::new();
        // The HTTP port is found free and handed to Asterisk, which binds it a moment later:
        // another process could take it in between, so a failed start is retried on a new port.
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("asterai-asterisk-").tempdir().unwrap();
            let http_port = free_port();
            let conf = write_tree(&prefix, dir.path(), http_port, &options);
            let asterisk = Asterisk {
                prefix: prefix.clone(),
                dir,
                conf,
                http_port,
                options: options.clone(),
                process: Mutex::new(None),
            };
            asterisk.launch().await;
            match asterisk.check_http().await {
                Ok(()) => {
                    asterisk.check_loopback_only();
                    return asterisk;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("Asterisk's HTTP server did not start: {last_error}");
    }

    /// The root of the configuration tree.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `asterisk.conf` of this instance (for `asterisk -C` and `asterai doctor --asterisk-conf`).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Where [`Asterisk::utterance`] writes the people's sound files.
    pub fn sounds_dir(&self) -> PathBuf {
        self.dir.path().join("sounds")
    }

    /// `http://127.0.0.1:<port>`: ARI, for `ari.url`.
    pub fn ari_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The process id of the running Asterisk.
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap().as_ref().map(Child::id)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.prefix.join("sbin/asterisk"));
        cmd.arg("-C").arg(&self.conf);
        cmd
    }

    /// Starts the process and waits until Asterisk has fully booted.
    async fn launch(&self) {
        let console =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("console.log")).unwrap();
        let mut cmd = self.command();
        cmd.args(["-f", "-n", "-vvvvv"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Its own process group (killed as one), and killed with the keeper thread, that
                // is with this process. (Asterisk clears the death signal when it drops to
                // runuser; the atexit hook and the pid files cover that case.)
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = spawn_kept(cmd).expect("start Asterisk");
        register(child.id(), &self.conf);
        *self.process.lock().unwrap() = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.process.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("Asterisk exited while starting ({status}):\n{}", self.console_tail());
            }
            let out = self.command().args(["-rx", "core waitfullybooted"]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("fully booted") {
                break;
            }
            assert!(Instant::now() < deadline, "Asterisk did not boot within {WAIT:?}:\n{}", self.console_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.cli("agi set debug on").await;
        self.cli("core set verbose 5").await;
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn check_http(&self) -> Result<(), String> {
        let (user, password) = ari_credentials();
        let response = reqwest::Client::new()
            .get(format!("{}/ari/asterisk/info", self.ari_url()))
            .basic_auth(user, Some(password))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() { Ok(()) } else { Err(format!("ARI answered {}", response.status())) }
    }

    /// Every socket Asterisk holds is bound to loopback.
    fn check_loopback_only(&self) {
        let Some(pid) = self.pid() else { return };
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter_map(|l| {
                        l.to_string_lossy()
                            .strip_prefix("socket:[")
                            .and_then(|s| s.strip_suffix(']'))
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for row in text.lines().skip(1) {
                let fields: Vec<&str> = row.split_whitespace().collect();
                let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                    continue;
                };
                if !inodes.iter().any(|i| i == inode) {
                    continue;
                }
                let listening = table.starts_with("udp") || *state == "0A";
                let address = local.split(':').next().unwrap_or("");
                let loopback = address == "0100007F" || address == "00000000000000000000000001000000";
                assert!(
                    !listening || loopback,
                    "Asterisk listens on {local} ({table}), not on loopback; noload the module in the harness"
                );
            }
        }
    }

    /// Runs one CLI command (`asterisk -rx`) and returns what it printed.
    pub async fn cli(&self, command: &str) -> String {
        let mut cmd = tokio::process::Command::from(self.command());
        let out = cmd.arg("-rx").arg(command).output().await.expect("run asterisk -rx");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stores a value in AstDB.
    pub async fn db_put(&self, family: &str, key: &str, value: &str) {
        assert!(!value.contains(['"', '\n', ' ']), "AstDB values here are single words: {value:?}");
        let out = self.cli(&format!("database put {family} {key} \"{value}\"")).await;
        assert!(out.contains("Updated database successfully"), "database put {family} {key}: {out}");
    }

    /// A value the dialplan (or a test) stored in AstDB.
    pub async fn db_get(&self, family: &str, key: &str) -> Option<String> {
        let out = self.cli(&format!("database get {family} {key}")).await;
        out.lines().find_map(|l| l.strip_prefix("Value: ")).map(|v| v.trim().to_owned())
    }

    /// Waits until the dialplan stored `family/key`.
    pub async fn wait_for_db(&self, family: &str, key: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = self.db_get(family, key).await {
                return value;
            }
            assert!(Instant::now() < deadline, "AstDB {family}/{key} never set");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stores a person's script under `key` (see [`Script`]); `attempt` makes it the script of
    /// that call only (the first call to the key is attempt 1).
    pub async fn put_script(&self, key: &str, attempt: Option<u32>, script: &Script) {
        let name = match attempt {
            Some(n) => format!("{key}x{n}"),
            None => key.to_owned(),
        };
        for (n, step) in script.steps.iter().enumerate() {
            self.db_put("asterai-test", &format!("{name}-{}", n + 1), step).await;
        }
    }

    /// How many calls reached the person `key` (what `[asterai-test-person]` counted).
    pub async fn person_calls(&self, key: &str) -> u32 {
        self.db_get("asterai-test", &format!("{key}-calls")).await.and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Originates a call through ARI in dialplan mode: `endpoint` (such as
    /// `Local/s@asterai-inbound`) is dialed, and once it answers the originated channel runs
    /// `person` in `[asterai-test-person]`. `variables` are set on the channel first (a Local
    /// channel passes them to its other half).
    pub async fn originate(
        &self,
        endpoint: &str,
        person: &str,
        caller_id: &str,
        variables: &[(&str, &str)],
    ) -> Originated {
        let (user, password) = ari_credentials();
        let vars: BTreeMap<&str, &str> = variables.iter().copied().collect();
        let response = reqwest::Client::new()
            .post(format!("{}/ari/channels", self.ari_url()))
            .basic_auth(user, Some(password))
            .query(&[
                ("endpoint", endpoint),
                ("context", "asterai-test-person"),
                ("extension", person),
                ("priority", "1"),
                ("callerId", caller_id),
                ("timeout", "30"),
            ])
            .json(&serde_json::json!({ "variables": vars }))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("ARI originate");
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "originate {endpoint}: {status} {body}");
        Originated { id: body["id"].as_str().unwrap().to_owned(), name: body["name"].as_str().unwrap().to_owned() }
    }

    /// Writes espeak-ng's rendering of `text` as an 8 kHz mono WAV into [`Asterisk::sounds_dir`]
    /// and returns its name for `Playback()` (the path without `.wav`).
    pub fn utterance(&self, text: &str) -> String {
        let out = Command::new("espeak-ng")
            .args(["--stdout", "-v", "en-us", "-s", "170", text])
            .output()
            .expect("espeak-ng (scripts/test-deps installs it)");
        assert!(out.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&out.stderr));
        let samples = asterai::speech::audio::decode_wav(&out.stdout).expect("espeak-ng's WAV");
        let name = self.sounds_dir().join(format!("u{}", unique()));
        std::fs::write(name.with_extension("wav"), asterai::speech::audio::encode_wav(&samples)).unwrap();
        self.share(&name.with_extension("wav"));
        name.display().to_string()
    }

    /// Writes `seconds` of a steady tone at `hz` as an 8 kHz mono WAV into
    /// [`Asterisk::sounds_dir`] and returns its name for `Playback()`: a sound a test can find
    /// again in what it receives (see `tests/supervise.rs`'s `tone_windows`).
    pub fn tone(&self, hz: f64, seconds: f64) -> String {
        let name = self.sounds_dir().join(format!("t{}", unique()));
        std::fs::write(name.with_extension("wav"), asterai::speech::audio::encode_wav(&tone(hz, seconds))).unwrap();
        self.share(&name.with_extension("wav"));
        name.display().to_string()
    }

    /// Gives a file to the run user, if any.
    fn share(&self, path: &Path) {
        if let Some(user) = &self.options.run_user {
            let (uid, gid) = user_ids(user);
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }

    /// Where the log file is now; [`Asterisk::log_since`] reads from there.
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log/full")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    /// The log from a mark on.
    pub fn log_since(&self, mark: u64) -> String {
        let Ok(mut file) = std::fs::File::open(self.log_path()) else { return String::new() };
        let _ = file.seek(std::io::SeekFrom::Start(mark));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits for a log line (after `mark`) that contains every part.
    pub async fn wait_for_log(&self, mark: u64, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log_since(mark).lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no Asterisk log line with {parts:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every AGI line Asterisk logged for `channel` (after `mark`), in order.
    pub fn agi_exchange(&self, mark: u64, channel: &str) -> Exchange {
        let tag = format!("<{channel}>AGI ");
        let lines = self
            .log_since(mark)
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find(&tag)? + tag.len()..];
                if let Some(text) = rest.strip_prefix("Tx >> ") {
                    Some(AgiLine::Tx(text.to_owned()))
                } else {
                    rest.strip_prefix("Rx << ").map(|text| AgiLine::Rx(text.to_owned()))
                }
            })
            .collect();
        Exchange { lines }
    }

    /// Waits until Asterisk logged the end of `channel`'s AGI script, then returns its exchange.
    pub async fn finished_agi(&self, mark: u64, channel: &str) -> Exchange {
        self.wait_for_log(mark, &[&format!("<{channel}>AGI Script"), "completed"]).await;
        self.agi_exchange(mark, channel)
    }

    /// Stops Asterisk the way `core stop now` does: calls are hung up, modules unloaded.
    pub async fn stop(&self) {
        self.cli("core stop now").await;
        self.wait_exit().await;
    }

    /// Kills Asterisk with SIGKILL, as a crash would.
    pub async fn kill(&self) {
        self.kill_now();
        self.wait_exit().await;
    }

    fn kill_now(&self) {
        if let Some(child) = self.process.lock().unwrap().as_ref() {
            // The whole process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        }
    }

    async fn wait_exit(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut process = self.process.lock().unwrap();
                match process.as_mut().map(|c| c.try_wait()) {
                    None => return,
                    Some(Ok(Some(_))) | Some(Err(_)) => {
                        let mut child = process.take().unwrap();
                        // Reaped already; this only returns its status again.
                        let _ = child.wait();
                        unregister(child.id());
                        return;
                    }
                    Some(Ok(None)) => {}
                }
            }
            if Instant::now() > deadline {
                self.kill_now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts Asterisk again after [`Asterisk::stop`] or [`Asterisk::kill`], with the same
    /// configuration, ports, AstDB and log file.
    pub async fn start_again(&self) {
        assert!(self.pid().is_none(), "Asterisk is still running");
        self.launch().await;
        let deadline = Instant::now() + WAIT;
        while let Err(e) = self.check_http().await {
            assert!(Instant::now() < deadline, "Asterisk's HTTP server did not come back: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        let Some(mut child) = self.process.lock().unwrap().take() else { return };
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        unregister(child.id());
    }
}

/// A port nobody listens on right now.
/// `seconds` of a steady tone at `hz`, 8 kHz samples at a quarter of full scale.
fn tone(hz: f64, seconds: f64) -> Vec<i16> {
    (0..(8000.0 * seconds) as usize)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An address nothing listens on (the default `ASTERAI` global).
fn closed_address() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

fn user_ids(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .unwrap_or_else(|| panic!("no user {user}"));
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// Builds the configuration tree in `dir` and returns its `asterisk.conf`.
fn write_tree(prefix: &Path, dir: &Path, http_port: u16, options: &Options) -> PathBuf {
    let etc = dir.join("etc");
    for sub in ["etc", "run", "log/cdr-csv", "log/cdr-custom", "db", "spool", "cache", "sounds", "moh"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    copy_dir(&prefix.join("etc/asterisk"), &etc);

    // The project's files, changed only where the harness must.
    let shipped = std::fs::read_to_string(project_file("extensions.conf")).unwrap();
    let asterai = options.asterai.clone().unwrap_or_else(|| format!("agi://{}", closed_address()));
    let mut replaced = 0;
    let mut extensions: String = shipped
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("ASTERAI =") {
                replaced += 1;
                format!("ASTERAI = {asterai}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(replaced, 1, "extensions.conf: expected one `ASTERAI = …` line in [globals]");
    extensions.push_str("\n\n; Added by the test harness.\n#include asterai-test.conf\n");
    std::fs::write(etc.join("extensions.conf"), extensions).unwrap();
    std::fs::write(etc.join("asterai-test.conf"), include_str!("asterisk-test.conf")).unwrap();

    let http = std::fs::read_to_string(project_file("http.conf")).unwrap();
    assert!(http.lines().any(|l| l.trim() == "bindaddr = 127.0.0.1"), "http.conf binds to loopback");
    let http = http.replace("bindport = 8088", &format!("bindport = {http_port}"));
    assert!(http.contains(&format!("bindport = {http_port}")), "http.conf: expected `bindport = 8088`");
    std::fs::write(etc.join("http.conf"), http).unwrap();
    for name in ["ari.conf", "pjsip.conf"] {
        std::fs::copy(project_file(name), etc.join(name)).unwrap();
    }

    // asterisk.conf: the tree's own directories, the rest of the prefix shared read-only.
    let sample = std::fs::read_to_string(prefix.join("etc/asterisk/asterisk.conf")).unwrap();
    let mut options_extra = String::new();
    if let Some(user) = &options.run_user {
        options_extra.push_str(&format!("runuser = {user}\n"));
    }
    if let Some(group) = &options.run_group {
        options_extra.push_str(&format!("rungroup = {group}\n"));
    }
    if options.transmit_silence {
        options_extra.push_str("transmit_silence = yes\n");
    }
    let conf = asterisk_conf(&sample, dir, &options_extra);
    let conf_path = etc.join("asterisk.conf");
    std::fs::write(&conf_path, conf).unwrap();

    // Modules that listen on every address by default.
    let mut modules = std::fs::read_to_string(etc.join("modules.conf")).unwrap();
    modules.push_str("\n; Added by the test harness: these listen on every address.\n");
    for module in ["chan_iax2.so", "chan_unistim.so", "pbx_dundi.so"] {
        modules.push_str(&format!("noload = {module}\n"));
    }
    std::fs::write(etc.join("modules.conf"), modules).unwrap();

    std::fs::write(
        etc.join("logger.conf"),
        "; Written by the test harness.\n[general]\ndateformat = %F %T.%3q\n[logfiles]\nfull => notice,warning,error,verbose,dtmf\n",
    )
    .unwrap();

    // Music on hold: 5 s of the tone (a whole number of periods, so the loop has no seam), the
    // only file of the only class.
    std::fs::write(
        etc.join("musiconhold.conf"),
        format!(
            "; Written by the test harness.\n[general]\n[default]\nmode = files\ndirectory = {}\n",
            dir.join("moh").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("moh/tone.wav"), asterai::speech::audio::encode_wav(&tone(MUSIC_ON_HOLD_HZ, 5.0))).unwrap();

    // Real silence for the people's scripts: 1.2 s ends a recording (s=1) right after speech.
    let silence = vec![0i16; 9600];
    std::fs::write(dir.join("sounds/trail.wav"), asterai::speech::audio::encode_wav(&silence)).unwrap();

    if let Some(user) = &options.run_user {
        use std::os::unix::fs::PermissionsExt;
        let (uid, gid) = user_ids(user);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(dir, uid, gid);
    }
    conf_path
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

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// Where each running instance leaves `<asterisk pid>`: the test binary's pid and the
/// `asterisk.conf` it runs.
fn registry() -> PathBuf {
    std::env::temp_dir().join("asterai-test-asterisk")
}

fn register(pid: u32, conf: &Path) {
    let dir = registry();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(pid.to_string()), format!("{}\n{}\n", std::process::id(), conf.display()));
    // The tree is etc/asterisk.conf's grandparent: removed with the instance at exit.
    if let Some(tree) = conf.parent().and_then(Path::parent) {
        trees().lock().unwrap().push(tree.to_owned());
    }
    live_pids().lock().unwrap().push(pid);
}

fn unregister(pid: u32) {
    let _ = std::fs::remove_file(registry().join(pid.to_string()));
    live_pids().lock().unwrap().retain(|p| *p != pid);
}

/// Configuration trees to remove at exit (the shared instance's is never dropped).
fn trees() -> &'static Mutex<Vec<PathBuf>> {
    static TREES: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    TREES.get_or_init(|| Mutex::new(Vec::new()))
}

fn live_pids() -> &'static Mutex<Vec<u32>> {
    static PIDS: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    PIDS.get_or_init(|| {
        extern "C" fn kill_all() {
            if let Some(pids) = PIDS.get()
                && let Ok(pids) = pids.lock()
            {
                for pid in pids.iter() {
                    unsafe { libc::kill(-(*pid as i32), libc::SIGKILL) };
                    let _ = std::fs::remove_file(registry().join(pid.to_string()));
                }
            }
            if let Ok(trees) = trees().lock() {
                for tree in trees.iter() {
                    let _ = std::fs::remove_dir_all(tree);
                }
            }
        }
        // The shared instance lives in a static, which is never dropped.
        unsafe { libc::atexit(kill_all) };
        Mutex::new(Vec::new())
    })
}

/// Kills the instances whose test binary is gone (it was killed, or crashed).
fn reap_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(registry()) else { return };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut lines = text.lines();
            let owner: u32 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
            let conf = lines.next().unwrap_or("");
            if owner != 0 && Path::new(&format!("/proc/{owner}")).exists() {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !conf.is_empty() && String::from_utf8_lossy(&cmdline).contains(conf) {
                eprintln!("killing Asterisk {pid} left behind by test process {owner}");
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            if let Some(tree) = Path::new(conf).parent().and_then(Path::parent)
                && tree.starts_with(std::env::temp_dir())
            {
                let _ = std::fs::remove_dir_all(tree);
            }
            let _ = std::fs::remove_file(entry.path());
        }
    });
}

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns on a thread that lives as long as the process: the parent-death signal fires when the
/// thread that forked the child ends, and a test's threads end with the test.
fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("asterisk-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    keeper.lock().unwrap().send((cmd, tx)).unwrap();
    rx.recv().unwrap()
}

/// What a person does on the call: dialplan application calls, run in order by
/// `[asterai-test-person]` (stored in AstDB with [`Asterisk::put_script`]).
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<String>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Any dialplan application call, such as `Wait(1)`.
    pub fn step(mut self, app: impl Into<String>) -> Script {
        self.steps.push(app.into());
        self
    }

    /// Picks up (for the far end of a dialer call).
    pub fn answer(self) -> Script {
        self.step("Answer()")
    }

    /// Waits until the agent has spoken and then been quiet for 0.7 s (no audio, or silence).
    /// Sends nothing meanwhile, so a recording the agent runs hears nothing. If the agent's
    /// words came and went before this step, it moves on after 10 s.
    pub fn wait_for_agent(self) -> Script {
        self.step("WaitForNoise(100,1,10)").step("WaitForSilence(700,1,60)")
    }

    /// Waits until the agent starts speaking.
    pub fn wait_for_agent_to_speak(self) -> Script {
        self.step("WaitForNoise(100,1,30)")
    }

    /// Says an utterance (from [`Asterisk::utterance`]), then 1.2 s of real silence: the agent's
    /// `RECORD FILE … s=1` ends on it.
    pub fn say(self, utterance: &str) -> Script {
        let trail = Path::new(utterance).with_file_name("trail");
        self.step(format!("Playback({utterance}&{})", trail.display()))
    }

    /// Says an utterance with no silence after it.
    pub fn say_only(self, utterance: &str) -> Script {
        self.step(format!("Playback({utterance})"))
    }

    /// Real silent audio (Asterisk's `silence/N` prompts): frames keep coming.
    pub fn silence(self, seconds: u32) -> Script {
        self.step(format!("Playback(silence/{seconds})"))
    }

    /// Waits (sending nothing) until `family/key` is in AstDB, for at most `seconds`: until the
    /// test, which stores it with [`Asterisk::db_put`], says so.
    pub fn wait_for_db(self, family: &str, key: &str, seconds: u32) -> Script {
        // `#` stands for `$`, so the condition is evaluated by WaitForCondition, not by `Exec`.
        self.step(format!("WaitForCondition(#,#[#{{DB_EXISTS({family}/{key})}}],{seconds})"))
    }

    /// Waits without sending any audio.
    pub fn quiet(self, seconds: u32) -> Script {
        self.step(format!("Wait({seconds})"))
    }

    pub fn hang_up(self) -> Script {
        self.step("Hangup()")
    }

    /// The far end is busy.
    pub fn busy(self) -> Script {
        self.step("Busy(30)")
    }

    /// The far end's network is congested.
    pub fn congestion(self) -> Script {
        self.step("Congestion(30)")
    }

    /// Rings and never answers.
    pub fn ring_forever(self) -> Script {
        self.step("Ringing()").step("Wait(120)")
    }
}

/// Asterisk's sample `asterisk.conf` rewritten for a private tree under `dir`: its own etc, run,
/// log, db, spool and cache directories (the rest of the prefix shared read-only), no
/// connection log lines for `asterisk -rx`, and `options_extra` added to `[options]`.
pub fn asterisk_conf(sample: &str, dir: &Path, options_extra: &str) -> String {
    let mut conf = String::new();
    for line in sample.lines() {
        let key = line.split("=>").next().unwrap_or("").trim();
        let own = match key {
            "astetcdir" => Some("etc"),
            "astrundir" => Some("run"),
            "astlogdir" => Some("log"),
            "astdbdir" => Some("db"),
            "astspooldir" => Some("spool"),
            "astcachedir" => Some("cache"),
            _ => None,
        };
        match own {
            Some(sub) => conf.push_str(&format!("{key} => {}\n", dir.join(sub).display())),
            None if line.trim() == "[directories](!)" => conf.push_str("[directories]\n"),
            None if line.trim() == "[options]" => {
                conf.push_str("[options]\n");
                // `asterisk -rx` connections are not worth a log line each.
                conf.push_str("hideconnect = yes\n");
                conf.push_str(options_extra);
            }
            None => {
                conf.push_str(line);
                conf.push('\n');
            }
        }
    }
    conf
}
