//! `asterai demo`: the real binary, espeak-ng voices, the scripted speech-to-text and the rules
//! responder, with nothing but the embedded database. What a newcomer runs first.

mod support;

use serde_json::Value;
use support::daemon::command;

fn run(dir: &std::path::Path, args: &[&str]) -> String {
    let out = command(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the demo and returns its output and the stored call (`calls show --json`).
fn demo(dir: &std::path::Path, extra: &[&str]) -> (String, Value) {
    let mut args = vec!["demo", "--speed", "20"];
    args.extend_from_slice(extra);
    let shown = run(dir, &args);
    let id = shown
        .lines()
        .find_map(|l| l.strip_prefix("the call is stored: asterai calls show "))
        .unwrap_or_else(|| panic!("the demo names the stored call:\n{shown}"))
        .trim()
        .to_owned();
    let call: Value = serde_json::from_str(&run(dir, &["calls", "show", &id, "--json"])).unwrap();
    (shown, call)
}

#[test]
fn the_demo_holds_a_whole_conversation_and_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let (shown, call) = demo(dir.path(), &[]);
    for line in ["greeting", "turn 1", "caller: Hi, who is this?", "agent:", "call ended: completed / interested"] {
        assert!(shown.contains(line), "the terminal shows {line:?}:\n{shown}");
    }
    assert!(shown.contains("I'm an AI assistant"), "the disclosure is spoken:\n{shown}");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["outcome"], "interested");
    assert_eq!(call["org"], "demo");
    let turns = call["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 6, "the greeting, four caller turns and the reprompt of a silence: {call:#}");
    assert_eq!(turns[1]["caller"], "Hi, who is this?");
    // An inbound caller is not told they are being called.
    assert!(!turns[1]["agent"].as_str().unwrap().contains("calling on behalf"), "{call:#}");
    // The silence is in the transcript, with what the caller heard.
    assert_eq!(
        (turns[4]["caller"].as_str(), turns[4]["agent"].as_str()),
        (Some(""), Some("Sorry, I didn't hear anything. Are you still there?"))
    );
    assert!(call["transcript"].as_str().unwrap().contains("How much does it cost?"));
}

#[test]
fn a_scripted_do_not_call_request_lands_on_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("caller.txt");
    std::fs::write(&script, "# a caller who wants no more calls\nWho is this?\nPlease don't call me again.\n").unwrap();
    let (shown, call) = demo(dir.path(), &["--script", script.to_str().unwrap()]);
    assert_eq!(call["outcome"], "do_not_call", "{shown}");
    assert!(shown.contains("do_not_call, "), "the turn's intent is shown:\n{shown}");
    assert!(shown.contains("do-not-call list"), "the confirmation is part of the turn:\n{shown}");
    assert!(shown.contains("asked not to be called again"), "and the reason the call ended:\n{shown}");
}

#[test]
fn an_empty_script_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("empty.txt");
    std::fs::write(&script, "# nothing to say\n").unwrap();
    let out = command(dir.path()).args(["demo", "--script", script.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lines"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Without espeak-ng the demo says to install it, before any call starts.
#[test]
fn without_espeak_the_demo_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["demo"])
        .env("ASTERAI_TTS_ESPEAK_PROGRAM", dir.path().join("no-espeak-ng-here"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("install espeak-ng (sudo apt-get install -y espeak-ng)"), "{stderr}");
    assert!(!stderr.contains("No such file or directory"), "{stderr}");
    assert!(!dir.path().join("asterai.db").exists(), "nothing started");
}

/// Four demos at once on one data directory: each shows only its own call's events and names
/// its own call at the end.
#[test]
fn four_demos_at_once_each_follow_their_own_call() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("short.txt");
    std::fs::write(&script, "Hi, who is this?\nNo thanks, goodbye.\n").unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (dir, script) = (dir.path().to_owned(), script.clone());
            std::thread::spawn(move || run(&dir, &["demo", "--speed", "20", "--script", script.to_str().unwrap()]))
        })
        .collect();
    let outputs: Vec<String> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let mut ids = std::collections::BTreeSet::new();
    for shown in &outputs {
        let id = shown
            .lines()
            .find_map(|l| l.strip_prefix("the call is stored: asterai calls show "))
            .unwrap_or_else(|| panic!("the demo names its call:\n{shown}"))
            .trim()
            .to_owned();
        // Event lines read `#<id> <time>  <org>  <call id>  …`: every one is this demo's call.
        let events: Vec<&str> = shown.lines().filter(|l| l.starts_with('#')).collect();
        assert!(events.len() >= 3, "{shown}");
        for line in events {
            assert!(line.contains(&id), "another demo's event in this demo's output:\n{line}\n\n{shown}");
        }
        assert_eq!(shown.matches("call ended").count(), 1, "{shown}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 4, "each demo names its own call: {ids:?}");
}
