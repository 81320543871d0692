//! What a sysadmin installs: `scripts/install.sh` and `scripts/uninstall.sh` (run for real under
//! a prefix), the systemd unit (`systemd-analyze verify` and `security`, with the exposure
//! threshold), the environment file example, and the sample Asterisk configuration: a syntax
//! check of `extensions.conf` that follows Asterisk's own parser, its AGI URLs sent to a real
//! daemon, and the cross-references between extensions.conf, pjsip.conf, ari.conf, http.conf and
//! the environment file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use asterai::config::{Config, Dur};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_asterai")
}

/// `asterai` without the caller's ASTERAI_* or RUST_LOG.
fn asterai() -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("ASTERAI_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs one of scripts/ directly (its shebang and executable bit included).
fn script(name: &str, args: &[&str]) -> Output {
    let path = repo().join("scripts").join(name);
    Command::new(&path).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn succeeded(out: Output, what: &str) -> String {
    let all = text(&out);
    assert!(out.status.success(), "{what} failed ({}):\n{all}", out.status);
    all
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    if a.metadata().unwrap().len() != b.metadata().unwrap().len() {
        return false;
    }
    let (mut x, mut y) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return true;
        }
        b.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
    }
}

/// Every path under a directory with what a change would alter: mode, size, inode, mtime.
type Snapshot = BTreeMap<PathBuf, (u32, u64, u64, i64, i64)>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        all.insert(path, (meta.mode(), meta.len(), meta.ino(), meta.mtime(), meta.mtime_nsec()));
    }
    all
}

// ---------------------------------------------------------------------------------------------
// install.sh and uninstall.sh
// ---------------------------------------------------------------------------------------------

#[test]
fn scripts_are_executable_and_explain_themselves() {
    for name in ["install.sh", "uninstall.sh"] {
        let path = repo().join("scripts").join(name);
        assert_eq!(mode(&path) & 0o111, 0o111, "{name} is executable");
        let source = std::fs::read_to_string(&path).unwrap();
        assert!(source.starts_with("#!/usr/bin/env bash\n"), "{name} is a bash script");
        assert!(source.contains("\nset -euo pipefail\n"), "{name} stops on the first error");
        let help = succeeded(script(name, &["--help"]), &format!("{name} --help"));
        for option in ["--prefix", "--dry-run"] {
            assert!(help.contains(option), "{name} --help mentions {option}:\n{help}");
        }
        let bad = script(name, &["--no-such-option"]);
        assert!(!bad.status.success(), "{name} refuses an unknown option");
        assert!(text(&bad).contains("unknown argument: --no-such-option"), "{}", text(&bad));
    }
    assert!(succeeded(script("install.sh", &["--help"]), "help").contains("--binary"));
    assert!(succeeded(script("uninstall.sh", &["--help"]), "help").contains("--purge"));
}

/// A tool a test needs is missing: in CI (`CI=true`, where `scripts/test-deps` installs it) the
/// test fails, so a lost install step cannot pass as green; on a developer's machine it is
/// skipped, saying so.
fn tool_missing(what: &str, install: &str) {
    let message = format!("{what} is not installed ({install}; scripts/test-deps installs it)");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
}

/// shellcheck (scripts/test-deps installs it).
#[test]
fn scripts_are_shellcheck_clean() {
    let scripts = [repo().join("scripts/install.sh"), repo().join("scripts/uninstall.sh")];
    match Command::new("shellcheck").args(&scripts).output() {
        Err(_) => tool_missing("shellcheck", "apt-get install -y shellcheck"),
        Ok(out) => assert!(out.status.success(), "shellcheck:\n{}", text(&out)),
    }
}

#[test]
fn install_twice_under_a_prefix_keeps_what_it_must_then_uninstall_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let prefix = root.to_str().unwrap();
    let at = |rel: &str| root.join(rel);

    // First run.
    let first = succeeded(script("install.sh", &["--prefix", prefix, "--binary", binary()]), "first install");
    assert!(first.contains("sqlite: applied ") && !first.contains("applied 0 "), "the first run migrates:\n{first}");
    assert!(first.contains("Next steps"), "{first}");
    assert!(first.contains("doctor"), "the next steps name asterai doctor:\n{first}");

    let bin = at("usr/local/bin/asterai");
    let unit = at("etc/systemd/system/asterai.service");
    let env_file = at("etc/asterai/asterai.env");
    let config = at("etc/asterai/asterai.toml");
    let state = at("var/lib/asterai");
    for (path, expected) in [
        (&bin, 0o755),
        (&unit, 0o644),
        (&env_file, 0o640),
        (&config, 0o640),
        (&at("etc/asterai"), 0o750),
        (&state, 0o750),
        (&state.join("media"), 0o2770),
        (&state.join("recordings"), 0o2770),
    ] {
        assert_eq!(mode(path), expected, "mode of {} is {expected:o}", path.display());
    }
    assert!(same_bytes(&bin, Path::new(binary())), "the binary installed is the one given");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), read("systemd/asterai.env.example"));
    assert!(state.join("asterai.db").is_file(), "the migrated SQLite database is in the prefix's data directory");

    // The unit's paths point into the prefix; nothing else differs.
    let installed_unit = std::fs::read_to_string(&unit).unwrap();
    let state_str = state.to_str().unwrap();
    for line in [
        format!("ExecStart={prefix}/usr/local/bin/asterai serve"),
        format!("EnvironmentFile=-{prefix}/etc/asterai/asterai.env"),
        format!("Environment=ASTERAI_CONFIG={prefix}/etc/asterai/asterai.toml"),
        format!("ReadWritePaths={state_str}"),
    ] {
        assert!(installed_unit.lines().any(|l| l == line), "the unit has {line:?}:\n{installed_unit}");
    }
    let back = installed_unit
        .lines()
        .filter(|l| *l != format!("ReadWritePaths={state_str}"))
        .map(|l| l.replace(prefix, ""))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(back + "\n", read("systemd/asterai.service"), "only the unit's paths change under a prefix");

    // The config is the sample with data_dir inside the prefix, and valid.
    let installed_config = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        installed_config.replace(&format!("data_dir = \"{state_str}\""), "data_dir = \"\""),
        read("asterisk-config/asterai.toml"),
        "the config is the sample but for data_dir"
    );
    let parsed = Config::from_toml(&installed_config).expect("the installed config is valid");
    assert_eq!(parsed.data_dir(), state);

    // The administrator edits the environment file and the config between the runs.
    let edited_db = state.join("edited.db");
    let edited_env = format!(
        "{}\n# edited by the administrator\nASTERAI_DATABASE_URL={}\n",
        read("systemd/asterai.env.example"),
        edited_db.display()
    );
    std::fs::write(&env_file, &edited_env).unwrap();
    let edited_config = format!("{installed_config}\n# edited by the administrator\n");
    std::fs::write(&config, &edited_config).unwrap();
    // The data directory is the migration's to change; everything else must stay as it was.
    let kept = |snap: &Snapshot| -> Snapshot {
        snap.iter().filter(|(p, _)| !p.starts_with(&state)).map(|(p, v)| (p.clone(), *v)).collect()
    };
    let before = snapshot(&root);

    // Second run: nothing outside the data directory is touched, the edits survive, and the
    // migration runs with the edited environment (as the service would).
    let second = succeeded(script("install.sh", &["--prefix", prefix, "--binary", binary()]), "second install");
    let after = snapshot(&root);
    assert_eq!(kept(&before), kept(&after), "the second run changed nothing it should keep:\n{second}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), edited_env, "the environment file is not overwritten");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited_config, "the config is not overwritten");
    for line in [
        format!("unchanged: {}", bin.display()),
        format!("unchanged: {}", unit.display()),
        format!("kept: {}", env_file.display()),
        format!("kept: {}", config.display()),
    ] {
        assert!(second.contains(&line), "the second run says {line:?}:\n{second}");
    }
    assert!(edited_db.is_file(), "migrate read the environment file (ASTERAI_DATABASE_URL):\n{second}");
    for dir in ["media", "recordings"] {
        assert_eq!(mode(&state.join(dir)), 0o2770);
    }

    // --dry-run changes nothing: neither a fresh prefix nor the installed one.
    let fresh = tmp.path().join("fresh");
    let dry = succeeded(
        script("install.sh", &["--dry-run", "--prefix", fresh.to_str().unwrap(), "--binary", binary()]),
        "dry run",
    );
    assert!(!fresh.exists(), "a dry run creates nothing:\n{dry}");
    assert!(dry.contains("would install") && dry.contains("would run"), "a dry run prints its actions:\n{dry}");
    let before = snapshot(&root);
    let dry = succeeded(script("install.sh", &["--dry-run", "--prefix", prefix, "--binary", binary()]), "dry run");
    assert_eq!(before, snapshot(&root), "a dry run over an installation changes nothing:\n{dry}");
    let dry = succeeded(script("uninstall.sh", &["--dry-run", "--purge", "--prefix", prefix]), "dry uninstall");
    assert_eq!(before, snapshot(&root), "a dry uninstall changes nothing:\n{dry}");
    assert!(dry.contains("would run: rm -rf"), "{dry}");

    // uninstall keeps the configuration and the data; --purge removes them; again is fine.
    let out = succeeded(script("uninstall.sh", &["--prefix", prefix]), "uninstall");
    assert!(!bin.exists() && !unit.exists(), "the binary and the unit are gone:\n{out}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), edited_env, "the environment file is kept");
    assert!(config.is_file() && state.join("asterai.db").is_file(), "the config and the database are kept");
    let out = succeeded(script("uninstall.sh", &["--prefix", prefix, "--purge"]), "uninstall --purge");
    assert!(!at("etc/asterai").exists() && !state.exists(), "--purge removes config and data:\n{out}");
    succeeded(script("uninstall.sh", &["--prefix", prefix, "--purge"]), "uninstall twice");
}

// ---------------------------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------------------------

/// `key=value` lines of a unit file, comments and sections left out, values in order.
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
        settings.entry(key.to_owned()).or_default().push(value.to_owned());
    }
    settings
}

#[test]
fn the_unit_runs_the_daemon_as_the_readme_and_install_script_expect() {
    let unit = read("systemd/asterai.service");
    let settings = unit_settings(&unit);
    let one = |key: &str| -> &str {
        let values = settings.get(key).unwrap_or_else(|| panic!("the unit sets {key}="));
        assert_eq!(values.len(), 1, "{key}= is set once");
        &values[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecStart"), "/usr/local/bin/asterai serve", "install.sh rewrites exactly this line");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("User"), "asterai");
    assert_eq!(one("Group"), "asterai");
    assert_eq!(one("EnvironmentFile"), "-/etc/asterai/asterai.env");
    assert_eq!(one("Environment"), "ASTERAI_CONFIG=/etc/asterai/asterai.toml");
    for key in ["StateDirectory", "CacheDirectory", "LogsDirectory"] {
        assert_eq!(one(key), "asterai");
    }
    assert_eq!(one("UMask"), "0007", "media and recordings are shared with the group");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("ProtectSystem"), "strict");
    let families: BTreeSet<&str> = one("RestrictAddressFamilies").split_whitespace().collect();
    assert_eq!(families, BTreeSet::from(["AF_INET", "AF_INET6", "AF_UNIX"]), "network and sd-notify work");
    for key in ["IPAddressDeny", "PrivateNetwork", "NoExecPaths", "InaccessiblePaths", "ExecPaths"] {
        assert!(!settings.contains_key(key), "{key}= would cut off providers or espeak-ng");
    }

    // The watchdog is on, and the stop timeout covers the drain: shutdown_grace plus 5 s.
    let watchdog: Dur = one("WatchdogSec").parse().expect("WatchdogSec in seconds");
    assert!(watchdog.0 >= Duration::from_secs(10), "a watchdog of {watchdog}");
    let stop: Dur = one("TimeoutStopSec").parse().expect("TimeoutStopSec in seconds");
    let drain = Config::default().daemon.shutdown_grace.0 + Duration::from_secs(5);
    assert!(stop.0 > drain, "TimeoutStopSec={stop} must exceed shutdown_grace + 5 s = {drain:?}");
    assert!(unit.contains("#ReadWritePaths="), "the unit shows where to open media directories elsewhere");
}

fn systemd_analyze() -> Option<()> {
    let out = Command::new("systemd-analyze").arg("--version").output().ok()?;
    out.status.success().then_some(())
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if systemd_analyze().is_none() {
        return tool_missing("systemd-analyze (for verify)", "apt-get install -y systemd");
    }
    // The binary need not exist on this machine: verify a copy that runs /bin/true instead.
    let unit = read("systemd/asterai.service");
    let exec = "ExecStart=/usr/local/bin/asterai serve";
    assert!(unit.lines().any(|l| l == exec));
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("asterai.service");
    std::fs::write(&copy, unit.replace(exec, "ExecStart=/bin/true serve")).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{all}");
    let complaints: Vec<&str> =
        all.lines().filter(|l| l.contains("asterai.service") || l.contains(tmp.path().to_str().unwrap())).collect();
    assert!(complaints.is_empty(), "systemd-analyze verify complains about the unit:\n{all}");

    // The unit as shipped: at most the missing binary.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(repo().join("systemd/asterai.service"))
        .output()
        .unwrap();
    let all = text(&out);
    for line in all.lines().filter(|l| l.contains("asterai")) {
        assert!(line.contains("/usr/local/bin/asterai is not executable"), "systemd-analyze verify: {line}\n{all}");
    }
}

#[test]
fn systemd_analyze_security_exposure_is_at_most_2() {
    if systemd_analyze().is_none() {
        return tool_missing("systemd-analyze (for security)", "apt-get install -y systemd");
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo().join("systemd/asterai.service"))
        .output()
        .unwrap();
    let all = text(&out);
    let line = all
        .lines()
        .find(|l| l.contains("Overall exposure level for asterai.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{all}"));
    let exposure: f64 = line
        .split_once("asterai.service:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    eprintln!("systemd-analyze security --offline=true systemd/asterai.service: {}", line.trim());
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{all}");
}

// ---------------------------------------------------------------------------------------------
// The environment file
// ---------------------------------------------------------------------------------------------

/// Variables of the [ari] and [dialer] sections (issue 5), which the environment file may show
/// before they land. Once a build has any key of a section, its variables must all be real.
const PENDING_VARIABLES: &[&str] = &[
    "ASTERAI_ARI_URL",
    "ASTERAI_ARI_USERNAME",
    "ASTERAI_ARI_PASSWORD",
    "ASTERAI_ARI_APP",
    "ASTERAI_DIALER_TRANSFER_TARGET",
    "ASTERAI_DIALER_CALLER_ID",
];

/// Whether `name` is a pending variable whose section this build does not have yet.
fn pending(name: &str, known: &BTreeSet<&str>) -> bool {
    let section = name.split('_').take(2).collect::<Vec<_>>().join("_") + "_";
    PENDING_VARIABLES.contains(&name) && !known.iter().any(|k| k.starts_with(&section))
}

/// `(variable, env)` of every config key, from `asterai config --keys`.
fn config_keys() -> Vec<(String, String)> {
    let out = asterai().args(["config", "--keys"]).output().unwrap();
    let all = succeeded(out, "asterai config --keys");
    all.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .filter(|(_, env)| env.starts_with("ASTERAI_"))
        .collect()
}

/// The `#VARIABLE=value` examples of the environment file.
fn env_examples() -> Vec<(String, String)> {
    let example = read("systemd/asterai.env.example");
    let mut found = Vec::new();
    for line in example.lines() {
        let is_assignment = |l: &str| {
            l.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
        };
        assert!(!is_assignment(line), "every example is commented out, so the file changes nothing: {line:?}");
        if let Some(rest) = line.strip_prefix('#')
            && is_assignment(rest)
        {
            // systemd (and sh) strip the quotes around a value.
            let (k, v) = rest.split_once('=').unwrap();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            found.push((k.to_owned(), v.to_owned()));
        }
    }
    found
}

#[test]
fn env_example_lists_every_secret_and_only_real_variables() {
    let keys = config_keys();
    let known: BTreeSet<&str> = keys.iter().map(|(_, env)| env.as_str()).collect();
    let examples = env_examples();
    let named: BTreeSet<&str> = examples.iter().map(|(k, _)| k.as_str()).collect();
    for name in &named {
        assert!(
            known.contains(name) || pending(name, &known) || *name == "RUST_LOG",
            "{name} is not a config key's variable (asterai config --keys)"
        );
    }
    for required in [
        "ASTERAI_DATABASE_URL",
        "ASTERAI_STT_API_KEY",
        "ASTERAI_RESPONDER_API_KEY",
        "ASTERAI_TTS_API_KEY",
        "ASTERAI_ARI_PASSWORD",
        "ASTERAI_LOG_LEVEL",
        "ASTERAI_LOG_FORMAT",
        "ASTERAI_AGI_LISTEN",
        "ASTERAI_HTTP_LISTEN",
        "RUST_LOG",
    ] {
        assert!(named.contains(required), "the environment file shows {required}");
    }
    for (path, env) in &keys {
        if path.ends_with("api_key") || path.ends_with("password") || path == "database.url" {
            assert!(named.contains(env.as_str()), "the environment file shows the secret {env} ({path})");
        }
    }

    // Every example value is valid: uncommented all at once, the configuration loads.
    let mut cmd = asterai();
    cmd.arg("config").env("ASTERAI_DAEMON_DATA_DIR", tempfile::tempdir().unwrap().path());
    for (name, value) in &examples {
        if known.contains(name.as_str()) || name == "RUST_LOG" {
            cmd.env(name, value);
        }
    }
    let shown = succeeded(cmd.output().unwrap(), "asterai config with every example value");
    assert!(!shown.contains("sk-..."), "secrets are redacted:\n{shown}");

    // The README's hand-run commands read the file with sh: every example line uncommented
    // must still be valid shell.
    let tmp = tempfile::tempdir().unwrap();
    let uncommented: String = read("systemd/asterai.env.example")
        .lines()
        .map(|l| if l.starts_with("#ASTERAI_") || l.starts_with("#RUST_LOG=") { &l[1..] } else { l })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tmp.path().join("asterai.env"), uncommented).unwrap();
    let out = Command::new("sh").arg("-c").arg("set -ea; . ./asterai.env").current_dir(tmp.path()).output().unwrap();
    succeeded(out, "sh reading the environment file with every example uncommented");
}

// ---------------------------------------------------------------------------------------------
// Asterisk configuration files, as Asterisk's config parser (main/config.c) reads them
// ---------------------------------------------------------------------------------------------

/// One `key = value` or `key => value` line.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    key: String,
    value: String,
}

#[derive(Debug, Clone)]
struct Section {
    name: String,
    entries: Vec<Entry>,
}

impl Section {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.value.as_str())
    }
}

/// Splits an Asterisk config file into sections. A `;` starts a comment unless escaped (`\;`);
/// `;--` would open a block comment up to `--;`, which these samples never use (it silently
/// swallows lines), so it is an error here. Returns the sections and the comment texts.
fn parse_conf(text: &str) -> Result<(Vec<Section>, Vec<String>), String> {
    let mut sections: Vec<Section> = Vec::new();
    let mut comments = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let mut content = String::new();
        let mut chars = raw.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' if chars.peek().is_some_and(|(_, next)| *next == ';') => {
                    content.push(';');
                    chars.next();
                }
                ';' => {
                    if raw[at..].starts_with(";--") || raw[..at].ends_with("--") {
                        return Err(format!("line {n}: `;--` or `--;` (block comments) in {raw:?}"));
                    }
                    comments.push(raw[at + 1..].to_owned());
                    break;
                }
                c => content.push(c),
            }
        }
        let line = content.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("line {n}: directive {line:?} (#include, #exec) not expected here"));
        }
        if let Some(rest) = line.strip_prefix('[') {
            let (name, after) = rest.split_once(']').ok_or(format!("line {n}: no `]` in {line:?}"))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("line {n}: section name {name:?}"));
            }
            if !after.trim().is_empty() {
                return Err(format!("line {n}: unexpected {after:?} after the section name"));
            }
            sections.push(Section { name: name.to_owned(), entries: Vec::new() });
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or(format!("line {n}: neither a section nor key = value: {line:?}"))?;
        let value = value.strip_prefix('>').unwrap_or(value);
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {n}: key {key:?}"));
        }
        let section = sections.last_mut().ok_or(format!("line {n}: {key} before any [section]"))?;
        section.entries.push(Entry { line: n, key: key.to_owned(), value: value.trim().to_owned() });
    }
    Ok((sections, comments))
}

fn conf(path: &str) -> Vec<Section> {
    parse_conf(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}")).0
}

/// Checks every key of every section against the options that Asterisk 22 knows.
fn only_known_options(path: &str, sections: &[Section], allowed: impl Fn(&Section) -> &'static [&'static str]) {
    for section in sections {
        let known = allowed(section);
        for entry in &section.entries {
            assert!(
                known.contains(&entry.key.as_str()),
                "{path}:{}: [{}] {} is not an option Asterisk 22 knows here",
                entry.line,
                section.name,
                entry.key
            );
        }
    }
}

#[test]
fn http_and_ari_listen_on_loopback_for_a_dedicated_user() {
    let http = conf("asterisk-config/http.conf");
    only_known_options("http.conf", &http, |_| {
        &[
            "enabled",
            "bindaddr",
            "bindport",
            "prefix",
            "servername",
            "sessionlimit",
            "session_inactivity",
            "session_keep_alive",
            "enablestatic",
            "redirect",
        ]
    });
    let general = http.iter().find(|s| s.name == "general").expect("http.conf [general]");
    assert_eq!(general.get("enabled"), Some("yes"));
    let bind: std::net::IpAddr = general.get("bindaddr").expect("bindaddr").parse().unwrap();
    assert!(bind.is_loopback(), "Asterisk's HTTP server (ARI) binds to loopback, not {bind}");
    assert_eq!(general.get("bindport"), Some("8088"));

    let ari = conf("asterisk-config/ari.conf");
    only_known_options("ari.conf", &ari, |s| {
        if s.name == "general" {
            &["enabled", "pretty", "allowed_origins", "auth_realm", "websocket_write_timeout", "channelvars"]
        } else {
            &["type", "read_only", "password", "password_format"]
        }
    });
    let general = ari.iter().find(|s| s.name == "general").expect("ari.conf [general]");
    assert_eq!(general.get("enabled"), Some("yes"));
    assert_eq!(general.get("pretty"), Some("no"), "one event per line");
    let users: Vec<&Section> = ari.iter().filter(|s| s.get("type") == Some("user")).collect();
    assert_eq!(users.len(), 1, "one ARI user");
    let user = users[0];
    assert_eq!(user.name, "asterai", "a dedicated ARI user");
    assert_eq!(user.get("read_only"), Some("no"), "the dialer originates");
    assert!(matches!(user.get("password_format"), Some("plain" | "crypt")));
    assert!(!user.get("password").unwrap_or("").is_empty(), "Asterisk refuses a user without a password");
    assert!(read("asterisk-config/ari.conf").contains("crypt"), "ari.conf explains password_format = crypt");

    // The environment file's ARI examples point at this server and this user.
    let examples: BTreeMap<String, String> = env_examples().into_iter().collect();
    assert_eq!(examples["ASTERAI_ARI_URL"], format!("http://{bind}:8088"));
    assert_eq!(examples["ASTERAI_ARI_USERNAME"], user.name);
    if user.get("password_format") == Some("plain") {
        assert_eq!(examples.get("ASTERAI_ARI_PASSWORD").map(String::as_str), user.get("password"));
    }
}

/// The options of each pjsip.conf section type that the sample uses, as Asterisk 22 documents
/// them (`config show help res_pjsip <type>`).
fn pjsip_options(section: &Section) -> &'static [&'static str] {
    match section.get("type") {
        Some("transport") => {
            &["type", "protocol", "bind", "local_net", "external_media_address", "external_signaling_address"]
        }
        Some("auth") => &["type", "auth_type", "username", "password", "realm"],
        Some("registration") => &[
            "type",
            "transport",
            "outbound_auth",
            "server_uri",
            "client_uri",
            "contact_user",
            "retry_interval",
            "forbidden_retry_interval",
            "expiration",
            "line",
            "endpoint",
        ],
        Some("aor") => &["type", "contact", "qualify_frequency", "max_contacts"],
        Some("endpoint") => &[
            "type",
            "transport",
            "context",
            "disallow",
            "allow",
            "outbound_auth",
            "aors",
            "from_user",
            "from_domain",
            "direct_media",
            "rtp_symmetric",
            "force_rport",
            "rewrite_contact",
            "dtmf_mode",
            "callerid",
        ],
        Some("identify") => &["type", "endpoint", "match"],
        Some("global") => &["type", "user_agent"],
        other => panic!("pjsip.conf [{}]: unexpected type {other:?}", section.name),
    }
}

#[test]
fn pjsip_trunk_is_the_dialers_endpoint_and_lands_in_the_dialplan() {
    let pjsip = conf("asterisk-config/pjsip.conf");
    only_known_options("pjsip.conf", &pjsip, pjsip_options);
    let find = |name: &str, kind: &str| {
        pjsip
            .iter()
            .find(|s| s.name == name && s.get("type") == Some(kind))
            .unwrap_or_else(|| panic!("pjsip.conf has a {kind} named {name}"))
    };
    // The dialer's endpoint template: from the configuration when it has one, else its default.
    let shown = succeeded(asterai().arg("config").output().unwrap(), "asterai config");
    let template = shown
        .lines()
        .filter_map(|l| l.split_once("= \"PJSIP/{number}@").map(|(_, rest)| rest.trim_end_matches('"').to_owned()))
        .next()
        .unwrap_or_else(|| "trunk".to_owned());
    let endpoint = find(&template, "endpoint");
    find(endpoint.get("aors").expect("aors"), "aor");
    find(endpoint.get("outbound_auth").expect("outbound_auth"), "auth");
    find(endpoint.get("transport").expect("transport"), "transport");
    for section in &pjsip {
        match section.get("type") {
            Some("registration") => {
                find(section.get("outbound_auth").unwrap(), "auth");
                find(section.get("transport").unwrap(), "transport");
                assert_eq!(section.get("endpoint"), Some(endpoint.name.as_str()));
            }
            Some("identify") => assert_eq!(section.get("endpoint"), Some(endpoint.name.as_str())),
            Some("auth") => assert!(matches!(section.get("auth_type"), Some("userpass" | "digest"))),
            _ => {}
        }
    }
    let context = endpoint.get("context").expect("the trunk's context");
    let dialplan = check_dialplan(&read("asterisk-config/extensions.conf")).unwrap();
    assert!(dialplan.contexts.contains_key(context), "extensions.conf has the trunk's context [{context}]");
}

/// Where the dialer sends answered calls and transfers exists in the sample dialplan: the
/// configuration's defaults (when this build has the dialer) and the environment file's example.
#[test]
fn dialer_destinations_exist_in_the_sample_dialplan() {
    let plan = sample_dialplan();
    let shown = succeeded(asterai().arg("config").output().unwrap(), "asterai config");
    let table: toml::Table = shown.parse().expect("asterai config prints TOML");
    let dialer = table.get("dialer").and_then(|d| d.as_table());
    let setting = |key: &str, default: &str| -> String {
        dialer.and_then(|d| d.get(key)).and_then(|v| v.as_str()).unwrap_or(default).to_owned()
    };
    let (context, exten) = (setting("context", "asterai-outbound"), setting("extension", "s"));
    let steps = plan.extension(&context, &exten).unwrap_or_else(|| panic!("the dialer's {exten}@{context} exists"));
    assert!(steps.iter().any(|s| s.app == "AGI"), "{exten}@{context} runs the ai route");

    let examples: BTreeMap<String, String> = env_examples().into_iter().collect();
    let target = &examples["ASTERAI_DIALER_TRANSFER_TARGET"];
    let (exten, context) =
        target.strip_prefix("Local/").and_then(|t| t.split_once('@')).expect("Local/<exten>@<context>");
    assert!(plan.extension(context, exten).is_some(), "the transfer target {target} exists in extensions.conf");
}

// ---------------------------------------------------------------------------------------------
// extensions.conf: a syntax check after pbx/pbx_config.c, and what the dialplan must do
// ---------------------------------------------------------------------------------------------

/// Applications the sample may use (all in Asterisk 22; app_amd needs amd.conf).
const APPS: &[&str] = &[
    "AGI",
    "AMD",
    "Answer",
    "Dial",
    "ExecIf",
    "Goto",
    "GotoIf",
    "Hangup",
    "NoOp",
    "Playback",
    "Queue",
    "Set",
    "Verbose",
    "Wait",
    "WaitForSilence",
];

/// Dialplan functions the sample may use.
const FUNCTIONS: &[&str] = &["CALLERID", "IF", "IFMODULE", "CHANNEL"];

/// Channel variables that Asterisk sets (AGI, AMD, Queue, Dial), that asterai sets after AGI()
/// returns, and that the dialer sets on the channels it originates.
const VARIABLES: &[&str] = &[
    "AGISTATUS",
    "AMDSTATUS",
    "AMDCAUSE",
    "QUEUESTATUS",
    "DIALSTATUS",
    "WAITSTATUS",
    "EXTEN",
    "UNIQUEID",
    "ASTERAI_STATUS",
    "ASTERAI_OUTCOME",
    "ASTERAI_CALL_ID",
    "ASTERAI_HEALTH",
    "ASTERAI_ORG",
    "ASTERAI_CAMPAIGN",
    "ASTERAI_CONTACT",
];

/// One priority of one extension.
#[derive(Debug, Clone)]
struct Step {
    line: usize,
    priority: u32,
    label: Option<String>,
    app: String,
    data: String,
}

#[derive(Debug, Default)]
struct Dialplan {
    globals: BTreeMap<String, String>,
    /// context -> extension -> steps in priority order.
    contexts: BTreeMap<String, BTreeMap<String, Vec<Step>>>,
    includes: BTreeMap<String, Vec<String>>,
    comments: Vec<String>,
}

/// Where the characters of an argument nest: `(`, `[`, `${`, `$[`, and `"` quotes.
fn nesting(data: &str) -> Result<Vec<usize>, String> {
    let mut depths = Vec::with_capacity(data.len());
    let mut stack: Vec<char> = Vec::new();
    let mut quoted = false;
    let chars: Vec<char> = data.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        depths.push(stack.len() + usize::from(quoted));
        match c {
            '\\' => {
                i += 1;
                depths.push(stack.len() + usize::from(quoted));
            }
            '"' => quoted = !quoted,
            '$' if matches!(chars.get(i + 1), Some('{' | '[')) => {
                stack.push(if chars[i + 1] == '{' { '}' } else { ']' });
                i += 1;
                depths.push(stack.len() + usize::from(quoted));
            }
            '(' => stack.push(')'),
            '[' => stack.push(']'),
            '{' => return Err(format!("a `{{` without `$` in {data:?}")),
            ')' | ']' | '}' if stack.pop() != Some(c) => return Err(format!("unbalanced `{c}` in {data:?}")),
            _ => {}
        }
        i += 1;
    }
    if let Some(open) = stack.last() {
        return Err(format!("unclosed expression (missing `{open}`) in {data:?}"));
    }
    if quoted {
        return Err(format!("unbalanced `\"` in {data:?}"));
    }
    Ok(depths)
}

/// Splits at every `sep` outside parentheses, brackets, expressions and quotes, as Asterisk
/// separates application arguments.
fn split_top(data: &str, sep: char, max: usize) -> Result<Vec<String>, String> {
    let depths = nesting(data)?;
    let mut parts = vec![String::new()];
    for (c, depth) in data.chars().zip(depths) {
        if c == sep && depth == 0 && parts.len() < max {
            parts.push(String::new());
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    Ok(parts)
}

/// `${NAME}` and `${FUNC(...)}` references in an argument: (variables, functions).
fn references(data: &str) -> (Vec<String>, Vec<String>) {
    let (mut variables, mut functions) = (Vec::new(), Vec::new());
    let mut rest = data;
    while let Some(at) = rest.find("${") {
        rest = &rest[at + 2..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if rest[name.len()..].starts_with('(') {
            functions.push(name);
        } else {
            variables.push(name);
        }
    }
    (variables, functions)
}

/// Whether extension pattern `pattern` (`_X.`, `_+X.`, `s`) matches the extension `exten`.
fn matches_extension(pattern: &str, exten: &str) -> bool {
    let Some(pattern) = pattern.strip_prefix('_') else { return pattern == exten };
    fn go(p: &[char], e: &[char]) -> bool {
        match p.first() {
            None => e.is_empty(),
            Some('.') => !e.is_empty() && (1..=e.len()).any(|n| go(&p[1..], &e[n..])),
            Some('!') => (0..=e.len()).any(|n| go(&p[1..], &e[n..])),
            Some(c) => {
                let Some(x) = e.first() else { return false };
                let ok = match c {
                    'X' => x.is_ascii_digit(),
                    'Z' => ('1'..='9').contains(x),
                    'N' => ('2'..='9').contains(x),
                    c => c == x,
                };
                ok && go(&p[1..], &e[1..])
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let e: Vec<char> = exten.chars().collect();
    go(&p, &e)
}

impl Dialplan {
    /// The extension `exten` of `context`, directly or through `include =>`.
    fn extension(&self, context: &str, exten: &str) -> Option<&Vec<Step>> {
        let extensions = self.contexts.get(context)?;
        extensions
            .get(exten)
            .or_else(|| extensions.iter().find(|(p, _)| matches_extension(p, exten)).map(|(_, s)| s))
            .or_else(|| self.includes.get(context)?.iter().find_map(|inc| self.extension(inc, exten)))
    }

    /// Every step of every extension: (context, extension, step).
    fn steps(&self) -> impl Iterator<Item = (&str, &str, &Step)> {
        self.contexts.iter().flat_map(|(c, exts)| {
            exts.iter().flat_map(move |(e, steps)| steps.iter().map(move |s| (c.as_str(), e.as_str(), s)))
        })
    }

    /// Replaces `${NAME}` of the [globals] (and of `extra`) in `data`.
    fn substitute(&self, data: &str, extra: &[(&str, &str)]) -> String {
        let mut out = data.to_owned();
        for (name, value) in self.globals.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain(extra.iter().copied()) {
            out = out.replace(&format!("${{{name}}}"), value);
        }
        out
    }
}

/// Parses extensions.conf as pbx_config.c does, and checks what Asterisk would only find out
/// when a call runs into it: applications, expressions, priorities, labels and destinations.
fn check_dialplan(text: &str) -> Result<Dialplan, String> {
    let (sections, comments) = parse_conf(text)?;
    let mut plan = Dialplan { comments, ..Dialplan::default() };
    let mut seen = BTreeSet::new();
    for section in &sections {
        if !seen.insert(section.name.clone()) {
            return Err(format!("[{}] appears twice", section.name));
        }
        match section.name.as_str() {
            "general" => {
                for e in &section.entries {
                    let known =
                        ["static", "writeprotect", "clearglobalvars", "autofallthrough", "extenpatternmatchnew"];
                    if !known.contains(&e.key.as_str()) {
                        return Err(format!("line {}: unknown [general] option {}", e.line, e.key));
                    }
                }
            }
            "globals" => {
                for e in &section.entries {
                    plan.globals.insert(e.key.clone(), e.value.clone());
                }
            }
            context => {
                let extensions = plan.contexts.entry(context.to_owned()).or_default();
                let mut current: Option<String> = None;
                for e in &section.entries {
                    let at = |m: String| format!("line {}: [{context}] {m}", e.line);
                    let (exten, rest) = match e.key.as_str() {
                        "exten" => {
                            let (exten, rest) =
                                e.value.split_once(',').ok_or_else(|| at("exten without a priority".into()))?;
                            let exten = exten.trim();
                            let valid = !exten.is_empty()
                                && exten.chars().all(|c| c.is_ascii_alphanumeric() || "_+.!-[]*#".contains(c));
                            if !valid {
                                return Err(at(format!("extension {exten:?}")));
                            }
                            (exten.to_owned(), rest)
                        }
                        "same" => {
                            let exten = current.clone().ok_or_else(|| at("`same =>` before any `exten =>`".into()))?;
                            (exten, e.value.as_str())
                        }
                        "include" => {
                            plan.includes.entry(context.to_owned()).or_default().push(e.value.clone());
                            continue;
                        }
                        other => return Err(at(format!("unknown key {other} (exten, same or include)"))),
                    };
                    let (priority, app) = rest.split_once(',').ok_or_else(|| at("no application".into()))?;
                    let (priority, label) = match priority.trim().split_once('(') {
                        Some((p, l)) => {
                            let label = l.strip_suffix(')').ok_or_else(|| at(format!("label {l:?}")))?;
                            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                                return Err(at(format!("label {label:?}")));
                            }
                            (p.to_owned(), Some(label.to_owned()))
                        }
                        None => (priority.trim().to_owned(), None),
                    };
                    let steps = extensions.entry(exten.clone()).or_default();
                    let number = match priority.as_str() {
                        "hint" => return Err(at("hints are not used in this sample".into())),
                        "n" => {
                            if current.as_deref() != Some(exten.as_str()) || steps.is_empty() {
                                return Err(at(format!("`n` continues the previous line's extension, not {exten}")));
                            }
                            steps.last().unwrap().priority + 1
                        }
                        p => p.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| at(format!("priority {p:?}")))?,
                    };
                    if steps.iter().any(|s| s.priority == number) {
                        return Err(at(format!("{exten} has priority {number} twice")));
                    }
                    if steps.is_empty() && number != 1 {
                        return Err(at(format!("{exten} starts at priority {number}, not 1")));
                    }
                    if label.is_some() && steps.iter().any(|s| s.label == label) {
                        return Err(at(format!("label {label:?} twice in {exten}")));
                    }
                    let app = app.trim();
                    let (name, data) = app
                        .split_once('(')
                        .and_then(|(n, d)| Some((n.trim(), d.strip_suffix(')')?)))
                        .ok_or_else(|| at(format!("application {app:?} is not App(arguments)")))?;
                    check_application(name, data).map_err(at)?;
                    steps.push(Step {
                        line: e.line,
                        priority: number,
                        label,
                        app: name.to_owned(),
                        data: data.to_owned(),
                    });
                    current = Some(exten);
                }
            }
        }
    }
    // Destinations: includes and gotos lead somewhere that exists.
    for (context, included) in &plan.includes {
        for target in included {
            if !plan.contexts.contains_key(target) {
                return Err(format!("[{context}] includes [{target}], which does not exist"));
            }
        }
    }
    for (context, exten, step) in plan.steps() {
        let at = |m: String| format!("line {}: [{context}] {m}", step.line);
        for target in destinations(&step.app, &step.data).map_err(at)? {
            let (c, e, p) = match target.as_slice() {
                [p] => (context, exten, p.as_str()),
                [e, p] => (context, e.as_str(), p.as_str()),
                [c, e, p] => (c.as_str(), e.as_str(), p.as_str()),
                _ => return Err(at(format!("destination {target:?}"))),
            };
            if !plan.contexts.contains_key(c) {
                return Err(at(format!("goes to context {c}, which does not exist")));
            }
            let steps = plan.extension(c, e).ok_or_else(|| at(format!("goes to {e}@{c}, which does not exist")))?;
            let found = match p.parse::<u32>() {
                Ok(n) => steps.iter().any(|s| s.priority == n),
                Err(_) => steps.iter().any(|s| s.label.as_deref() == Some(p)),
            };
            if !found {
                return Err(at(format!("goes to {c},{e},{p}, which does not exist")));
            }
        }
    }
    Ok(plan)
}

/// An application and its arguments: known, balanced, only known functions and variables.
fn check_application(name: &str, data: &str) -> Result<(), String> {
    if !APPS.contains(&name) {
        return Err(format!("unknown application {name} (known: {APPS:?})"));
    }
    nesting(data)?;
    let (variables, functions) = references(data);
    for function in functions {
        if !FUNCTIONS.contains(&function.as_str()) {
            return Err(format!("unknown function {function}"));
        }
    }
    for variable in variables {
        let global = ["ASTERAI", "ASTERAI_QUEUE", "ASTERAI_OPERATOR"].contains(&variable.as_str());
        if !global && !VARIABLES.contains(&variable.as_str()) {
            return Err(format!("unknown variable ${{{variable}}}"));
        }
    }
    if name == "ExecIf" {
        let parts = split_top(data, '?', 2)?;
        let [_, apps] = parts.as_slice() else { return Err(format!("ExecIf({data}) has no `?`")) };
        for app in split_top(apps, ':', 2)? {
            let (inner, args) = app
                .split_once('(')
                .and_then(|(n, d)| Some((n.trim(), d.strip_suffix(')')?)))
                .ok_or_else(|| format!("ExecIf branch {app:?} is not App(arguments)"))?;
            check_application(inner, args)?;
        }
    }
    Ok(())
}

/// The destinations of Goto and GotoIf, each as 1 to 3 parts ([[context,]extension,]priority).
fn destinations(app: &str, data: &str) -> Result<Vec<Vec<String>>, String> {
    let targets = match app {
        "Goto" => vec![data.to_owned()],
        "GotoIf" => {
            let parts = split_top(data, '?', 2)?;
            let [_, branches] = parts.as_slice() else { return Err(format!("GotoIf({data}) has no `?`")) };
            split_top(branches, ':', 2)?.into_iter().filter(|b| !b.trim().is_empty()).collect()
        }
        _ => return Ok(Vec::new()),
    };
    targets
        .iter()
        .map(|t| -> Result<Vec<String>, String> {
            Ok(split_top(t, ',', 3)?.into_iter().map(|p| p.trim().to_owned()).collect())
        })
        .collect()
}

fn sample_dialplan() -> Dialplan {
    check_dialplan(&read("asterisk-config/extensions.conf")).unwrap_or_else(|e| panic!("extensions.conf: {e}"))
}

/// The URL of every AGI() step, with the [globals] substituted: (context, extension, URL).
fn agi_urls(plan: &Dialplan) -> Vec<(String, String, String)> {
    plan.steps()
        .filter(|(_, _, s)| s.app == "AGI")
        .map(|(c, e, s)| {
            let url = split_top(&s.data, ',', usize::MAX).unwrap().remove(0);
            (c.to_owned(), e.to_owned(), plan.substitute(&url, &[]))
        })
        .collect()
}

#[test]
fn sample_dialplan_parses() {
    let plan = sample_dialplan();
    for context in ["asterai-inbound", "asterai-outbound", "asterai-transfer", "asterai-health"] {
        assert!(plan.contexts.contains_key(context), "extensions.conf has [{context}]");
    }
    for context in ["asterai-inbound", "asterai-outbound"] {
        assert!(plan.extension(context, "h").is_some(), "[{context}] logs the outcome in an h extension");
    }
    assert!(plan.extension("asterai-health", "health").is_some(), "a `health` extension");
    let transfer: Vec<&str> =
        plan.extension("asterai-transfer", "support").unwrap().iter().map(|s| s.app.as_str()).collect();
    let queue = transfer.iter().position(|a| *a == "Queue").expect("the transfer target tries a queue");
    assert!(transfer[queue..].contains(&"Dial"), "then falls back to a Dial");
    // The dialplan reads what asterai sets.
    let data: String = plan.steps().map(|(_, _, s)| s.data.as_str()).collect::<Vec<_>>().join("\n");
    for variable in ["${ASTERAI_STATUS}", "${ASTERAI_OUTCOME}", "${ASTERAI_HEALTH}", "${AGISTATUS}"] {
        assert!(data.contains(variable), "the dialplan uses {variable}");
    }
}

#[test]
fn sample_dialplan_agi_urls_use_the_default_port_and_real_routes() {
    let plan = sample_dialplan();
    let base = format!("agi://{}/", Config::default().agi.listen);
    assert_eq!(plan.globals.get("ASTERAI").map(|v| format!("{v}/")), Some(base.clone()), "[globals] ASTERAI");
    let urls = agi_urls(&plan);
    let mut routes = BTreeSet::new();
    for (context, _, url) in &urls {
        let script = url.strip_prefix(&base).unwrap_or_else(|| panic!("[{context}] AGI({url}) is not on {base}"));
        let (route, query) = script.split_once('?').unwrap_or((script, ""));
        routes.insert(route.to_owned());
        match route {
            "health" => assert!(query.is_empty(), "{url}"),
            "ai" => {
                let params: BTreeMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
                assert!(params.contains_key("org"), "{url} names the organization");
                for key in params.keys() {
                    assert!(["org", "call_id", "campaign", "contact", "amd"].contains(key), "{url}: parameter {key}");
                }
            }
            other => panic!("[{context}] AGI({url}): asterai has no route {other:?}"),
        }
    }
    assert_eq!(routes, BTreeSet::from(["ai".to_owned(), "health".to_owned()]), "both routes are used");

    let inbound: Vec<&String> = urls.iter().filter(|(c, _, _)| c == "asterai-inbound").map(|(_, _, u)| u).collect();
    assert_eq!(inbound, [&format!("{base}ai?org=acme")], "the inbound context");

    // The campaign context passes the dialer's variables and AMDSTATUS, after running AMD.
    let outbound = plan.extension("asterai-outbound", "s").unwrap();
    let agi = outbound.iter().position(|s| s.app == "AGI").expect("AGI in asterai-outbound");
    let amd =
        outbound.iter().position(|s| s.app == "AMD" || s.data.contains("AMD()")).expect("AMD in asterai-outbound");
    assert!(amd < agi, "AMD runs before the AI");
    let url = plan.substitute(&outbound[agi].data, &[]);
    for param in [
        "org=${ASTERAI_ORG}",
        "call_id=${ASTERAI_CALL_ID}",
        "campaign=${ASTERAI_CAMPAIGN}",
        "contact=${ASTERAI_CONTACT}",
        "amd=${AMDSTATUS}",
    ] {
        assert!(url.contains(param), "the outbound AGI URL has {param}: {url}");
    }
    let machine_skips_ai =
        outbound.iter().any(|s| s.app == "GotoIf" && s.data.contains("MACHINE") && s.data.contains("Hangup"));
    assert!(!machine_skips_ai, "a machine still goes to the ai route");

    // The commented hagi:// example for several daemons: a name without a port (SRV lookup).
    let hagi = plan
        .comments
        .iter()
        .filter_map(|c| c.trim().strip_prefix("ASTERAI = hagi://"))
        .next()
        .expect("a commented `ASTERAI = hagi://…` example in [globals]");
    assert!(!hagi.is_empty() && !hagi.contains(':') && !hagi.contains('/'), "hagi://{hagi}: no port, no path");
    assert!(plan.comments.iter().any(|c| c.contains("_agi._tcp")), "the SRV records are explained");
}

/// Each AGI URL of the sample, as Asterisk would send it, reaches the daemon's route: `health`
/// answers `asterai ok`, `ai` looks up the organization (none exists in a fresh database).
#[test]
fn sample_dialplan_agi_urls_reach_the_daemons_routes() {
    let plan = sample_dialplan();
    let dialer = [
        ("ASTERAI_ORG", "acme"),
        ("ASTERAI_CALL_ID", "0192d3c4-0000-7000-8000-000000000001"),
        ("ASTERAI_CAMPAIGN", "7"),
        ("ASTERAI_CONTACT", "42"),
        ("AMDSTATUS", "MACHINE"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut child = asterai()
        .arg("serve")
        .env("ASTERAI_DAEMON_DATA_DIR", dir.path())
        .env("ASTERAI_AGI_LISTEN", "127.0.0.1:0")
        .env("ASTERAI_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    let addr = loop {
        assert!(Instant::now() < deadline, "no FastAGI listener line:\n{log}");
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("asterai serve exited:\n{log}");
        }
        log.push_str(&line);
        if line.contains("FastAGI") && line.contains("listening") {
            let at = line.find("addr=").unwrap_or_else(|| panic!("{line}")) + 5;
            break line[at..].split_whitespace().next().unwrap().parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let _drain = std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    let base = format!("agi://{}/", Config::default().agi.listen);
    for (context, exten, url) in agi_urls(&plan) {
        let url = plan.substitute(&url, &dialer);
        assert!(!url.contains("${"), "every variable is known: {url}");
        let script = url.strip_prefix(&base).unwrap();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "agi_network: yes\nagi_network_script: {script}\nagi_request: agi://{addr}/{script}\n\
             agi_channel: PJSIP/trunk-00000001\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1795222058.1\n\
             agi_version: 22.10.1\nagi_callerid: +15551230000\nagi_calleridname: Test\nagi_callingpres: 0\n\
             agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 5550100\nagi_rdnis: unknown\n\
             agi_context: {context}\nagi_extension: {exten}\nagi_priority: 2\nagi_enhanced: 0.0\n\
             agi_accountcode: \nagi_threadid: 140512191747776\n\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut commands = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            commands.push(line.trim_end().to_owned());
            let reply = if line.starts_with("GET VARIABLE") { "200 result=1 (x)\n" } else { "200 result=1\n" };
            if stream.write_all(reply.as_bytes()).is_err() {
                break;
            }
        }
        let first = commands.first().cloned().unwrap_or_default();
        let expected = if script.starts_with("health") { "asterai ok" } else { "asterai: unknown organization acme" };
        assert!(
            first.starts_with("VERBOSE ") && first.contains(expected),
            "[{context}] AGI({url}) reached its route (expected VERBOSE {expected:?}); the daemon sent {commands:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The checker itself finds what Asterisk would trip over.
#[test]
fn dialplan_checker_rejects_what_asterisk_would_not_run() {
    let ok = "[general]\nstatic = yes\n[a]\nexten => s,1,NoOp(${AGISTATUS})\n same => n(x),Goto(b,s,1)\n[b]\nexten => s,1,Hangup()\n";
    check_dialplan(ok).unwrap();
    for (broken, why) in [
        ("[a]\nexten => s,1,NoOp(x\n", "unclosed parenthesis"),
        ("[a]\nexten => s,1,NoOp($[1 = 1)\n", "unclosed expression"),
        ("[a]\nexten => s,1,NoOp(${AGISTATUS)\n", "unclosed variable"),
        ("[a]\nexten => s,1,NoOp(x) ;-- a block comment\n", "block comment"),
        ("[a]\nexten => s,n,NoOp(x)\n", "`n` on the first line"),
        ("[a]\nexten => s,2,NoOp(x)\n", "not starting at 1"),
        ("[a]\nexten => s,1,NoOp(x)\nexten => t,n,NoOp(y)\n", "`n` on another extension"),
        ("[a]\n same => n,NoOp(x)\n", "same before exten"),
        ("exten => s,1,NoOp(x)\n", "outside a context"),
        ("[a]\nexten => s,1,Hangpu()\n", "a misspelt application"),
        ("[a]\nexten => s,1,NoOp\n", "an application without parentheses"),
        ("[a]\nexten => s,1,NoOp(${ASTERAI_OUTCOM})\n", "a misspelt variable"),
        ("[a]\nexten => s,1,NoOp(${CALERID(num)})\n", "a misspelt function"),
        ("[a]\nexten => s,1,Goto(nowhere,s,1)\n", "a missing context"),
        ("[a]\nexten => s,1,Goto(t,1)\n", "a missing extension"),
        ("[a]\nexten => s,1,GotoIf($[1]?nolabel)\n", "a missing label"),
        ("[a]\ninclude => nowhere\n", "a missing include"),
        ("[a]\nexten => s,1,NoOp(x)\n[a]\n", "a context twice"),
        ("[a]\nexten => s,1,ExecIf($[1]?Nope())\n", "a misspelt application in ExecIf"),
    ] {
        assert!(check_dialplan(broken).is_err(), "the checker catches {why}: {broken:?}");
    }
    assert!(matches_extension("_X.", "5550100") && matches_extension("_+X.", "+15551230000"));
    assert!(!matches_extension("_X.", "s") && !matches_extension("_X.", "5"));
}
