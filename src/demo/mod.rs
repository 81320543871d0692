//! `asterai demo`: a whole AI call without Asterisk or API keys. The daemon's conversation runs
//! in-process (embedded SQLite, the rules responder, espeak-ng), and a simulated Asterisk
//! ([`caller::Caller`]) places one call on the real FastAGI port. The caller's lines come from a
//! script; their audio is synthesized and their words attached to each recording for the
//! `scripted` speech-to-text, which exists only for this demo and the tests.

pub mod caller;

/// The script the demo plays when none is given.
pub const DEFAULT_SCRIPT: &str = include_str!("default_script.txt");
