//! The FastAGI captures in `tests/fixtures/asterisk/agi`, parsed.
//!
//! A capture lists what Asterisk sent (`<< `), what the capturing server sent (`>> `) and notes
//! (`## `). [`Transcript::replay_steps`] turns it into the order a correct client experiences:
//! every reply right after the command it answers (replies pair with commands first in, first
//! out), `HANGUP` lines where they fell relative to the commands.

use std::path::PathBuf;

/// The shared captures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asterisk")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line Asterisk sent, without its `\n`.
    Asterisk(String),
    /// A line the capturing server sent, without its `\n`.
    Server(String),
    Note(String),
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub name: String,
    pub lines: Vec<Line>,
}

/// One step of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Asterisk sends these lines (one write).
    Send(Vec<String>),
    /// The daemon must send this command.
    Expect(String),
    /// The daemon must not send this command: the captured server sent it, but a client that
    /// follows the rules refuses it (dead channel, CR in an argument, an empty line).
    Refused { command: String, why: &'static str },
    /// The server half-closed; the daemon must close the connection now.
    ExpectClose,
    /// Asterisk closes the connection.
    Close,
}

impl Transcript {
    pub fn load(name: &str) -> Transcript {
        let path = fixtures_dir().join("agi").join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let lines = text
            .lines()
            .map(|line| {
                let unescape = |s: &str| s.replace("\\x0d", "\r");
                if let Some(rest) = line.strip_prefix("<< ").or(if line == "<<" { Some("") } else { None }) {
                    Line::Asterisk(unescape(rest))
                } else if let Some(rest) = line.strip_prefix(">> ").or(if line == ">>" { Some("") } else { None }) {
                    Line::Server(unescape(rest))
                } else if let Some(rest) = line.strip_prefix("## ") {
                    Line::Note(rest.to_owned())
                } else {
                    panic!("{name}: unrecognised transcript line {line:?}")
                }
            })
            .collect();
        Transcript { name: name.to_owned(), lines }
    }

    /// Every capture in the fixtures folder.
    pub fn all_names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(fixtures_dir().join("agi"))
            .expect("fixtures/asterisk/agi exists beside the repository")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".txt").map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// The environment block Asterisk sent, with the blank line that ends it.
    pub fn env_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for line in &self.lines {
            match line {
                Line::Asterisk(l) => {
                    out.push(l.clone());
                    if l.is_empty() {
                        break;
                    }
                }
                Line::Note(_) => {}
                Line::Server(_) => break,
            }
        }
        out
    }

    /// The value of `agi_<name>` in the environment block.
    pub fn env(&self, name: &str) -> String {
        let prefix = format!("agi_{name}: ");
        self.env_lines().iter().find_map(|l| l.strip_prefix(&prefix).map(str::to_owned)).unwrap_or_default()
    }

    /// The replay, as a correct client experiences it.
    pub fn replay_steps(&self) -> Vec<Step> {
        // Segments: one per command, holding the command and the Asterisk lines placed after it.
        enum Item {
            Command(String),
            Asterisk(String),
            Close,
            ExpectClose,
        }
        let env_len = self.env_lines().len();
        let mut items: Vec<Item> = Vec::new();
        let mut command_at: Vec<usize> = Vec::new(); // index in `items` of each command
        let mut unanswered: std::collections::VecDeque<usize> = Default::default();
        let mut in_usage: Option<usize> = None;
        let mut seen_env = 0;
        for line in &self.lines {
            match line {
                Line::Asterisk(l) if seen_env < env_len => {
                    seen_env += 1;
                    items.push(Item::Asterisk(l.clone()));
                }
                Line::Server(command) => {
                    command_at.push(items.len());
                    unanswered.push_back(command_at.len() - 1);
                    items.push(Item::Command(command.clone()));
                }
                Line::Asterisk(l) if l == "HANGUP" => items.push(Item::Asterisk(l.clone())),
                Line::Asterisk(l) => {
                    let owner = match in_usage {
                        Some(owner) => owner,
                        None => unanswered
                            .pop_front()
                            .unwrap_or_else(|| panic!("{}: reply {l:?} with no command", self.name)),
                    };
                    in_usage = if l.starts_with("520-") {
                        Some(owner)
                    } else if l.starts_with("520 ") || in_usage.is_none() {
                        None
                    } else {
                        in_usage
                    };
                    // Place the reply at the end of its command's segment.
                    let segment_end = command_at.get(owner + 1).copied().unwrap_or(items.len());
                    items.insert(segment_end, Item::Asterisk(l.clone()));
                    for at in command_at.iter_mut().skip(owner + 1) {
                        *at += 1;
                    }
                }
                Line::Note(note) if note.starts_with("server: shutdown") => items.push(Item::ExpectClose),
                Line::Note(note) if note.starts_with("asterisk: EOF") => items.push(Item::Close),
                Line::Note(_) => {}
            }
        }

        // Which reply lines answer which command, to apply the refusal rules.
        let mut steps = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        let mut hangup_sent = false;
        let mut skipping = false;
        let mut i = 0;
        while i < items.len() {
            match &items[i] {
                Item::Asterisk(l) => {
                    if l == "HANGUP" {
                        hangup_sent = true;
                        pending.push(l.clone());
                    } else if !skipping {
                        pending.push(l.clone());
                    }
                }
                Item::Command(command) => {
                    if !pending.is_empty() {
                        steps.push(Step::Send(std::mem::take(&mut pending)));
                    }
                    let first_reply = items[i + 1..].iter().find_map(|item| match item {
                        Item::Asterisk(l) if l != "HANGUP" => Some(l.as_str()),
                        Item::Command(_) => Some(""),
                        _ => None,
                    });
                    let refused = if command.contains('\r') {
                        Some("a CR in an argument is refused")
                    } else if command.is_empty() {
                        Some("an empty command is refused")
                    } else if hangup_sent && first_reply.is_some_and(|r| r.starts_with("511")) {
                        Some("dead channel")
                    } else {
                        None
                    };
                    skipping = refused.is_some();
                    steps.push(match refused {
                        Some(why) => Step::Refused { command: command.clone(), why },
                        None => Step::Expect(command.clone()),
                    });
                }
                Item::ExpectClose => {
                    if !pending.is_empty() {
                        steps.push(Step::Send(std::mem::take(&mut pending)));
                    }
                    skipping = false;
                    steps.push(Step::ExpectClose);
                }
                Item::Close => {
                    if !pending.is_empty() {
                        steps.push(Step::Send(std::mem::take(&mut pending)));
                    }
                    steps.push(Step::Close);
                }
            }
            i += 1;
        }
        if !pending.is_empty() {
            steps.push(Step::Send(pending));
        }
        steps
    }
}
