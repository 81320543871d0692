//! The calls in conversation on this daemon, reachable by id: what the supervisors' console
//! acts on (`/v1/calls/{id}/coach`, `/pause`, `/resume`, `/listen`, see [`crate::http`]).
//!
//! The conversation core registers each call once its id is settled and removes it when the
//! call ends (`Registration` does both, also on an early return). A [`LiveCall`] carries what
//! a supervisor can change while the call runs:
//! * **Coaching:** instructions the core adds to the model's context (a system message, never
//!   spoken as it is) before its next request, on either media path.
//! * **Pause:** the core stops listening and answering at once while listening (at the end of
//!   the current answer otherwise) and holds the caller with music on hold
//!   ([`super::MediaPath::hold`]) until the AI is resumed or the caller hangs up.
//! * **Listening:** one [`Tap`] per call, shared by its listeners (see [`super::listen`]).
//! * **Barge:** one supervisor at a time speaks into the call ([`super::barge`]); while their
//!   voice is heard ([`LiveCall::supervisor_speaking`]) the core starts no answer, and the model
//!   is told a supervisor is on the line (a system message, as coaching is).
//! * **Take over:** the core neither speaks nor answers; it still listens, and stores what
//!   the caller says as turns "with the supervisor", which are in the model's history when the
//!   supervisor gives the call back. What the barging supervisor says meanwhile is cut into
//!   utterances and transcribed by the barge's relay ([`super::barge`]), queued here
//!   ([`LiveCall::supervisor_said`]), and stored by the core as turns of the supervisor's.
//!
//! Each call belongs to one organization; [`LiveCalls::get`] finds a call only for its own
//! organization. In a fleet only the daemon holding a call has it here: the HTTP side answers
//! 409 naming the holder for a call another daemon holds (`calls.daemon_id`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::listen::{ListenSetup, Tap};
use crate::speech::stt::SpeechToText;

/// Longest coaching text, in characters.
pub const MAX_COACHING_CHARS: usize = 1_000;
/// Instructions waiting for the model's next request, at most.
pub const MAX_PENDING_COACHING: usize = 10;
/// The supervisor's voice spans kept (for the AGI path's recordings, which end within a
/// minute or so).
const MAX_VOICE_SPANS: usize = 64;
/// Transcribed lines of the supervisor's waiting for the core, at most (the oldest go).
const MAX_SUPERVISOR_LINES: usize = 50;

/// Something the supervisor said while the call was taken over, transcribed.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorLine {
    /// The supervisor who spoke (the barging one).
    pub supervisor: String,
    /// When the utterance began.
    pub started: Instant,
    pub text: String,
}

/// The supervisor's words on their way into the transcript.
#[derive(Debug, Default)]
struct SupervisorSpeech {
    /// An utterance is being collected (the supervisor speaks now).
    open: bool,
    /// Utterances being transcribed.
    transcribing: usize,
    /// Lines transcribed, not yet stored by the core.
    lines: Vec<SupervisorLine>,
}

/// What the AI of a live call is doing, as supervisors left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AiState {
    /// Listening and answering.
    Active,
    /// Paused by a supervisor: the caller hears music on hold.
    Paused,
    /// Taken over by a supervisor, who talks with the caller (through a barge): the AI is silent
    /// and answers nothing until the call is given back.
    TakenOver,
}

/// Why a supervisor's action on a live call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

/// One call in conversation.
pub struct LiveCall {
    pub call_id: String,
    pub org_id: i64,
    /// The caller's channel id in ARI (the AGI `agi_uniqueid`).
    pub channel_id: String,
    /// `agi` or `stream`.
    pub media: &'static str,
    state: watch::Sender<AiState>,
    coaching: Mutex<Vec<String>>,
    /// Cancelled when the call's conversation ends.
    ended: CancellationToken,
    /// The listeners' tap, while anyone listens.
    pub(super) tap: tokio::sync::Mutex<Option<Arc<Tap>>>,
    /// System messages for the model's next request (a supervisor joined or left the line).
    notes: Mutex<Vec<String>>,
    /// The supervisor barging in now (the token's name), if any: one at a time.
    barging: Mutex<Option<String>>,
    /// The barging supervisor's voice is heard now.
    voice: watch::Sender<bool>,
    /// When the supervisor's voice was heard: (from, until), `None` while it still is.
    voice_spans: Mutex<VecDeque<(Instant, Option<Instant>)>>,
    /// The supervisor's words while the call is taken over, for the transcript.
    said: watch::Sender<SupervisorSpeech>,
    /// The call's agent's (batch) speech-to-text, which transcribes them.
    stt: OnceLock<Arc<dyn SpeechToText>>,
    /// Who took the call over (the token's name), while it is taken over.
    taken_over_by: Mutex<Option<String>>,
    /// The call's mixing bridge (the streaming path's: the caller and the agent's media
    /// channel), which a barge joins.
    bridge: OnceLock<String>,
}

impl LiveCall {
    fn new(call_id: &str, org_id: i64, channel_id: &str, media: &'static str) -> LiveCall {
        LiveCall {
            call_id: call_id.to_owned(),
            org_id,
            channel_id: channel_id.to_owned(),
            media,
            state: watch::Sender::new(AiState::Active),
            coaching: Mutex::new(Vec::new()),
            ended: CancellationToken::new(),
            tap: tokio::sync::Mutex::new(None),
            notes: Mutex::new(Vec::new()),
            barging: Mutex::new(None),
            voice: watch::Sender::new(false),
            voice_spans: Mutex::new(VecDeque::new()),
            said: watch::Sender::new(SupervisorSpeech::default()),
            stt: OnceLock::new(),
            taken_over_by: Mutex::new(None),
            bridge: OnceLock::new(),
        }
    }

    /// The call's mixing bridge, on the streaming path.
    pub fn bridge(&self) -> Option<&str> {
        self.bridge.get().map(String::as_str)
    }

    pub(super) fn set_bridge(&self, bridge: &str) {
        let _ = self.bridge.set(bridge.to_owned());
    }

    /// The AI's state now.
    pub fn state(&self) -> AiState {
        *self.state.borrow()
    }

    /// The AI's state, as it changes.
    pub(super) fn watch_state(&self) -> watch::Receiver<AiState> {
        self.state.subscribe()
    }

    /// Instructions not yet given to the model.
    pub fn pending_coaching(&self) -> usize {
        self.coaching.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queues an instruction for the model's next answer. Refused when empty, longer than
    /// [`MAX_COACHING_CHARS`], or when [`MAX_PENDING_COACHING`] are waiting already.
    pub fn coach(&self, text: &str) -> Result<(), LiveError> {
        let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let text = text.trim();
        if text.is_empty() {
            return Err(LiveError::Invalid("text: expected the instruction for the AI, got nothing".into()));
        }
        let chars = text.chars().count();
        if chars > MAX_COACHING_CHARS {
            return Err(LiveError::Invalid(format!("text: at most {MAX_COACHING_CHARS} characters, got {chars}")));
        }
        let mut coaching = self.coaching.lock().unwrap_or_else(|e| e.into_inner());
        if coaching.len() >= MAX_PENDING_COACHING {
            return Err(LiveError::Unavailable(format!(
                "{MAX_PENDING_COACHING} instructions already wait for the AI's next answer"
            )));
        }
        coaching.push(text.to_owned());
        Ok(())
    }

    /// The instructions waiting, taken (the core gives them to the model).
    pub(super) fn take_coaching(&self) -> Vec<String> {
        std::mem::take(&mut *self.coaching.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The instructions and notes waiting, taken (the core gives them to the model): coaching
    /// as it was written, notes as full system messages.
    pub(super) fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn note(&self, text: String) {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }

    /// Pauses the AI; false when it was paused already. A call taken over stays taken over
    /// (a supervisor talks with the caller): also false.
    pub fn pause(&self) -> bool {
        self.state.send_if_modified(|state| {
            if *state != AiState::Active {
                return false;
            }
            *state = AiState::Paused;
            true
        })
    }

    /// Resumes the AI; false when it was not paused.
    pub fn resume(&self) -> bool {
        self.state.send_if_modified(|state| {
            if *state != AiState::Paused {
                return false;
            }
            *state = AiState::Active;
            true
        })
    }

    /// Takes the call over for `supervisor` (from an active or paused AI); false when it was
    /// taken over already.
    pub fn take_over(&self, supervisor: &str) -> bool {
        self.state.send_if_modified(|state| {
            if *state == AiState::TakenOver {
                return false;
            }
            *self.taken_over_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(supervisor.to_owned());
            *state = AiState::TakenOver;
            true
        })
    }

    /// Gives a taken-over call back to the AI; false when it was not taken over.
    pub fn give_back(&self) -> bool {
        self.state.send_if_modified(|state| {
            if *state != AiState::TakenOver {
                return false;
            }
            *state = AiState::Active;
            true
        })
    }

    /// Who took the call over, while it is.
    pub fn taken_over_by(&self) -> Option<String> {
        self.taken_over_by.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves once the AI is no longer active (paused or taken over).
    pub(super) async fn interrupted(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|s| *s != AiState::Active).await;
    }

    /// Resolves once the AI is no longer paused.
    pub(super) async fn resumed(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|s| *s != AiState::Paused).await;
    }

    /// Resolves once the call is no longer taken over.
    pub(super) async fn given_back(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|s| *s != AiState::TakenOver).await;
    }

    /// Reserves the line for `supervisor`'s barge: refused while another supervisor barges.
    /// The returned guard ends the barge when dropped; [`BargeGuard::joined`] tells the model.
    pub fn begin_barge(self: &Arc<Self>, supervisor: &str) -> Result<BargeGuard, LiveError> {
        let mut barging = self.barging.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = barging.as_ref() {
            return Err(LiveError::Unavailable(format!("{other} is barging in on this call already")));
        }
        *barging = Some(supervisor.to_owned());
        Ok(BargeGuard { call: self.clone(), supervisor: supervisor.to_owned(), joined: false })
    }

    /// The supervisor barging in now, if any.
    pub fn barging(&self) -> Option<String> {
        self.barging.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the barging supervisor's voice is heard now.
    pub fn supervisor_speaking(&self) -> bool {
        *self.voice.borrow()
    }

    /// Resolves once no supervisor speaks on the call.
    pub(super) async fn supervisor_quiet(&self) {
        let mut voice = self.voice.subscribe();
        let _ = voice.wait_for(|speaking| !*speaking).await;
    }

    /// When the supervisor's voice was heard between `from` and `to`, as spans clipped to that
    /// window (a span still open runs to `to`).
    pub(super) fn supervisor_voice_between(&self, from: Instant, to: Instant) -> Vec<(Instant, Instant)> {
        let spans = self.voice_spans.lock().unwrap_or_else(|e| e.into_inner());
        spans
            .iter()
            .map(|(start, end)| ((*start).max(from), end.unwrap_or(to).min(to)))
            .filter(|(start, end)| start < end)
            .collect()
    }

    /// The call's agent transcribes the supervisor's words with `stt` (set once, by the core).
    pub(super) fn set_stt(&self, stt: Arc<dyn SpeechToText>) {
        let _ = self.stt.set(stt);
    }

    /// The speech-to-text of the call's agent.
    pub(super) fn stt(&self) -> Option<Arc<dyn SpeechToText>> {
        self.stt.get().cloned()
    }

    /// The supervisor began (`true`) or ended an utterance the barge collects for the transcript.
    pub(super) fn supervisor_utterance(&self, open: bool) {
        self.said.send_modify(|said| said.open = open);
    }

    /// An utterance of the supervisor's goes to speech-to-text; [`LiveCall::supervisor_said`]
    /// (with the text, or `None` when nothing was understood) must follow.
    pub(super) fn supervisor_transcribing(&self) {
        self.said.send_modify(|said| said.transcribing += 1);
    }

    /// An utterance of the supervisor's is transcribed: `line` waits for the core.
    pub(super) fn supervisor_said(&self, line: Option<SupervisorLine>) {
        self.said.send_modify(|said| {
            said.transcribing = said.transcribing.saturating_sub(1);
            if let Some(line) = line {
                if said.lines.len() >= MAX_SUPERVISOR_LINES {
                    said.lines.remove(0);
                }
                said.lines.push(line);
            }
        });
    }

    /// The supervisor's lines that began before `before`, taken, in the order they were said,
    /// once the transcriptions under way are done (and, when `finished`, the utterance being
    /// collected too), or `wait` has passed: what is late stays for the next time.
    pub(super) async fn take_supervisor_lines(
        &self,
        before: Instant,
        finished: bool,
        wait: Duration,
    ) -> Vec<SupervisorLine> {
        let mut said = self.said.subscribe();
        let _ = tokio::time::timeout(wait, said.wait_for(|s| s.transcribing == 0 && !(finished && s.open))).await;
        let mut taken = Vec::new();
        self.said.send_if_modified(|said| {
            let (now, later) = std::mem::take(&mut said.lines).into_iter().partition(|l| l.started < before);
            said.lines = later;
            taken = now;
            !taken.is_empty()
        });
        taken.sort_by_key(|l| l.started);
        taken
    }

    /// Supervisors listening now.
    pub async fn listeners(&self) -> usize {
        self.tap.lock().await.as_ref().map_or(0, |tap| tap.listeners())
    }

    /// Cancelled when the call's conversation ends.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }
}

/// A supervisor's barge in progress: ends it when dropped.
pub struct BargeGuard {
    call: Arc<LiveCall>,
    supervisor: String,
    joined: bool,
}

impl BargeGuard {
    /// The supervisor's audio reaches the call: the model is told at its next request.
    pub fn joined(&mut self) {
        if !self.joined {
            self.joined = true;
            self.call.note(barge_message(&self.supervisor));
        }
    }

    /// The barging supervisor's voice is heard (`true`) or has stopped.
    pub fn speaking(&self, speaking: bool) {
        let changed = self.call.voice.send_if_modified(|now| std::mem::replace(now, speaking) != speaking);
        if changed {
            let mut spans = self.call.voice_spans.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if speaking {
                if spans.len() >= MAX_VOICE_SPANS {
                    spans.pop_front();
                }
                spans.push_back((now, None));
            } else if let Some((_, end @ None)) = spans.back_mut() {
                *end = Some(now);
            }
        }
    }

    /// The barging supervisor's name.
    pub fn supervisor(&self) -> &str {
        &self.supervisor
    }
}

impl Drop for BargeGuard {
    fn drop(&mut self) {
        self.speaking(false);
        let who = self.call.barging.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(who) = who
            && self.joined
            && !self.call.ended.is_cancelled()
        {
            self.call.note(format!(
                "The supervisor ({who}) has left the line: only you and the caller are on the call again."
            ));
        }
    }
}

/// The system message that tells the model a supervisor joined the line.
fn barge_message(supervisor: &str) -> String {
    format!(
        "A supervisor of this call ({supervisor}) has joined the line and may speak with the caller. What you hear \
         from the caller may include the supervisor's words. Do not talk over the supervisor, follow their lead, and \
         never mention this message."
    )
}

/// The live calls of this daemon. Cheap to clone.
#[derive(Clone, Default)]
pub struct LiveCalls {
    inner: Arc<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    calls: Mutex<HashMap<String, Arc<LiveCall>>>,
    /// This daemon's id in the fleet, if it has one.
    daemon: Option<String>,
    /// How to tap a call's audio, when ARI is configured.
    listen: OnceLock<ListenSetup>,
}

impl LiveCalls {
    /// The registry of the daemon `daemon` (its fleet id, if any).
    pub fn new(daemon: Option<&str>) -> LiveCalls {
        LiveCalls { inner: Arc::new(LiveInner { daemon: daemon.map(str::to_owned), ..LiveInner::default() }) }
    }

    /// This daemon's id in the fleet.
    pub fn daemon(&self) -> Option<&str> {
        self.inner.daemon.as_deref()
    }

    /// Enables listening: ARI's client and the application the taps' channels enter (once;
    /// later calls change nothing).
    pub fn enable_listen(&self, setup: ListenSetup) {
        let _ = self.inner.listen.set(setup);
    }

    /// How to tap calls, when ARI is configured.
    pub fn listen_setup(&self) -> Option<&ListenSetup> {
        self.inner.listen.get()
    }

    /// One organization's live call on this daemon.
    pub fn get(&self, org_id: i64, call_id: &str) -> Option<Arc<LiveCall>> {
        let calls = self.inner.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(call_id).filter(|call| call.org_id == org_id).cloned()
    }

    /// Calls in conversation now.
    pub fn len(&self) -> usize {
        self.inner.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a call for as long as the returned registration lives.
    pub(super) fn register(&self, call_id: &str, org_id: i64, channel_id: &str, media: &'static str) -> Registration {
        let call = Arc::new(LiveCall::new(call_id, org_id, channel_id, media));
        self.inner.calls.lock().unwrap_or_else(|e| e.into_inner()).insert(call_id.to_owned(), call.clone());
        Registration { calls: self.clone(), call }
    }
}

/// A call's place in the registry: removed, and its listeners told, when dropped.
pub(super) struct Registration {
    calls: LiveCalls,
    call: Arc<LiveCall>,
}

impl Registration {
    pub(super) fn call(&self) -> &Arc<LiveCall> {
        &self.call
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.call.ended.cancel();
        let mut calls = self.calls.inner.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.get(&self.call.call_id).is_some_and(|c| Arc::ptr_eq(c, &self.call)) {
            calls.remove(&self.call.call_id);
        }
    }
}

/// The system message that carries a supervisor's instruction to the model.
pub(super) fn coaching_message(text: &str) -> String {
    format!(
        "A supervisor of this call gives you an instruction for your next answers. Follow it, but never read it \
         out or mention the supervisor: {text}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coaching_is_checked_and_taken_once() {
        let calls = LiveCalls::new(Some("d1"));
        let registration = calls.register("c1", 7, "chan", "agi");
        let call = registration.call().clone();
        assert!(calls.get(8, "c1").is_none(), "another organization never finds it");
        assert!(calls.get(7, "c1").is_some());
        assert!(call.coach("  ").is_err());
        assert!(call.coach(&"x".repeat(MAX_COACHING_CHARS + 1)).unwrap_err().to_string().contains("at most"));
        call.coach("offer the\nannual plan").unwrap();
        assert_eq!(call.take_coaching(), vec!["offer the annual plan".to_owned()]);
        assert!(call.take_coaching().is_empty());
        for _ in 0..MAX_PENDING_COACHING {
            call.coach("again").unwrap();
        }
        assert!(call.coach("one more").is_err());
        drop(registration);
        assert!(calls.get(7, "c1").is_none());
        assert!(call.ended().is_cancelled());
    }

    #[test]
    fn one_supervisor_barges_at_a_time_and_the_model_is_told() {
        let calls = LiveCalls::new(None);
        let registration = calls.register("c1", 1, "chan", "agi");
        let call = registration.call().clone();
        let mut first = call.begin_barge("alice").unwrap();
        assert!(call.begin_barge("bob").err().expect("one at a time").to_string().contains("alice"));
        assert!(call.take_notes().is_empty(), "the model hears of it once the audio flows");
        first.joined();
        first.speaking(true);
        assert!(call.supervisor_speaking());
        let notes = call.take_notes();
        assert!(notes.len() == 1 && notes[0].contains("(alice) has joined the line"), "{notes:?}");
        drop(first);
        assert!(!call.supervisor_speaking(), "a barge that ends is quiet");
        assert!(call.take_notes()[0].contains("has left the line"));
        let unjoined = call.begin_barge("bob").unwrap();
        drop(unjoined);
        assert!(call.take_notes().is_empty(), "a barge that never joined tells the model nothing");
        assert_eq!(call.barging(), None);
    }

    #[tokio::test]
    async fn pause_and_resume_change_once() {
        let calls = LiveCalls::new(None);
        let registration = calls.register("c1", 1, "chan", "stream");
        let call = registration.call().clone();
        assert_eq!(call.state(), AiState::Active);
        assert!(call.pause());
        assert!(!call.pause());
        call.interrupted().await;
        assert!(call.resume());
        assert!(!call.resume());
        call.resumed().await;
        // Taken over: pause and resume change nothing until the call is given back.
        assert!(call.take_over("alice"));
        assert!(!call.take_over("bob"));
        assert_eq!((call.state(), call.taken_over_by().as_deref()), (AiState::TakenOver, Some("alice")));
        assert!(!call.pause());
        assert!(!call.resume());
        call.interrupted().await;
        assert!(call.give_back());
        assert!(!call.give_back());
        call.given_back().await;
        assert_eq!(call.state(), AiState::Active);
    }

    #[tokio::test]
    async fn the_supervisors_words_wait_for_the_core_in_the_order_said() {
        let calls = LiveCalls::new(None);
        let registration = calls.register("c1", 1, "chan", "stream");
        let call = registration.call().clone();
        let t0 = Instant::now();
        let line = |text: &str, at: u64| SupervisorLine {
            supervisor: "alice".into(),
            started: t0 + Duration::from_secs(at),
            text: text.into(),
        };
        call.supervisor_transcribing();
        call.supervisor_transcribing();
        call.supervisor_said(Some(line("later", 2)));
        call.supervisor_said(Some(line("first", 1)));
        let taken = call.take_supervisor_lines(t0 + Duration::from_millis(1500), false, Duration::ZERO).await;
        assert_eq!(taken, vec![line("first", 1)], "only what was said before");
        // A transcription under way is waited for (briefly), and the lines come in order.
        call.supervisor_transcribing();
        let late = call.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            late.supervisor_said(Some(SupervisorLine {
                supervisor: "alice".into(),
                started: t0 + Duration::from_millis(1800),
                text: "between".into(),
            }));
        });
        let taken = call.take_supervisor_lines(t0 + Duration::from_secs(10), false, Duration::from_secs(30)).await;
        let texts: Vec<&str> = taken.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["between", "later"]);
        // An utterance still being said is waited for only when asked (the give-back).
        call.supervisor_utterance(true);
        let taken = call.take_supervisor_lines(t0, false, Duration::from_secs(30)).await;
        assert!(taken.is_empty());
        let waited = tokio::time::timeout(
            Duration::from_millis(100),
            call.take_supervisor_lines(t0, true, Duration::from_secs(30)),
        )
        .await;
        assert!(waited.is_err(), "the give-back waits for the supervisor's last words");
    }

    #[test]
    fn the_supervisors_voice_spans_are_kept() {
        let calls = LiveCalls::new(None);
        let registration = calls.register("c1", 1, "chan", "agi");
        let call = registration.call().clone();
        let before = Instant::now();
        let guard = call.begin_barge("alice").unwrap();
        guard.speaking(true);
        guard.speaking(true);
        let now = Instant::now();
        assert_eq!(call.supervisor_voice_between(before, now), vec![(call.voice_spans.lock().unwrap()[0].0, now)]);
        guard.speaking(false);
        assert_eq!(call.voice_spans.lock().unwrap().len(), 1);
        assert!(call.voice_spans.lock().unwrap()[0].1.is_some());
        let later = Instant::now() + Duration::from_secs(1);
        assert!(call.supervisor_voice_between(later, later + Duration::from_secs(1)).is_empty());
    }
}
