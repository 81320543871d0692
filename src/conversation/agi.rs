//! The FastAGI media path: the conversation core ([`super::core`]) over one AGI session.
//!
//! The caller is heard with `RECORD FILE` until `conversation.silence` of silence, the file is
//! checked for speech and transcribed whole; the agent speaks with `STREAM FILE` of synthesized
//! sentences ([`super::speak`]). Text from callers and models only ever reaches Asterisk as a
//! synthesized file path or a quoted argument.
//!
//! A supervisor barging in is whispered into the caller's channel in both directions
//! ([`super::barge`]): the recording holds their voice. While the call is taken over, the parts
//! of a recording where the supervisor's voice was heard (the barge's voice spans, and
//! [`SUPERVISOR_ECHO`] after each) are silenced before the recording is checked for speech and
//! transcribed, as the streaming path's ear takes them for silence: what the caller said to
//! the supervisor never holds the supervisor's words, which are transcribed from the barge's
//! own audio. A plain barge leaves the recording as it is (the AI hears the supervisor).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::call_recording::Collect;
use super::core::{CALLER_HUNG_UP, CallStart, Conversation, Heard, MediaPath, RouteParams, Utterance};
use super::live::{AiState, LiveCall};
use super::speak::{self, Speech};
use super::{Inner, Profile};
use crate::agi::command::{
    Answer, ChannelState, ChannelStatus, Exec, GetVariable, Hangup, RecordEnd, RecordFile, SetMusic, SetVariable,
    Verbose,
};
use crate::agi::{AgiSession, HandlerResult};
use crate::speech::audio;
use crate::speech::llm::ChunkStream;
use crate::speech::stt::SttRequest;
use crate::store::{Outcome, RecordingVia};

/// How long to wait for Asterisk's `HANGUP` line after a reply that showed the hang-up.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// How long after a voice span of the barging supervisor's their audio may still reach the
/// recording (the media channel's queue, played in real time).
const SUPERVISOR_ECHO: Duration = Duration::from_millis(250);

/// Runs the `ai` route on one AGI session.
pub(super) async fn run(inner: Arc<Inner>, session: AgiSession) -> HandlerResult {
    let env = session.env();
    let Some(slug) = env.param("org").map(|s| s.into_owned()).filter(|s| !s.is_empty()) else {
        tracing::warn!("ai route without ?org=<slug>; nobody to answer for");
        session.send(Verbose::new("asterai: the ai route needs ?org=<organization>", 1)).await?;
        session.send(SetVariable::new("ASTERAI_STATUS", "missing_org")).await?;
        return Ok(());
    };
    let org = match inner.org(&slug).await {
        Ok(Some(org)) => org,
        Ok(None) => {
            tracing::warn!(org = %slug, "ai route for an unknown organization");
            session
                .send(Verbose::new(
                    format!("asterai: unknown organization {}", slug.replace(|c: char| c.is_control(), "?")),
                    1,
                ))
                .await?;
            session.send(SetVariable::new("ASTERAI_STATUS", "unknown_org")).await?;
            return Ok(());
        }
        Err(e) => {
            // An organization never seen since start-up, and no database to tell whether it
            // exists: let the dialplan route the call elsewhere.
            tracing::error!(org = %slug, "cannot look up an organization not seen since start-up, the database is unavailable: {e}");
            session.send(SetVariable::new("ASTERAI_STATUS", "unavailable")).await?;
            return Ok(());
        }
    };
    let start = CallStart {
        params: RouteParams::from_query(env.query()),
        caller_id: env.callerid().to_owned(),
        dialed: if env.dnid() == "unknown" { env.extension().to_owned() } else { env.dnid().to_owned() },
        channel: env.channel().to_owned(),
        uniqueid: env.uniqueid().to_owned(),
    };
    let media = AgiPath {
        inner: &inner,
        profile: inner.builtin.clone(),
        session: &session,
        call_id: String::new(),
        recordings: 0,
        mixmonitor: None,
        live: None,
    };
    metrics::gauge!("asterai_conversations_active").increment(1.0);
    Conversation::start(&inner, media, start, org).await.converse().await;
    metrics::gauge!("asterai_conversations_active").decrement(1.0);
    Ok(())
}

/// One call's AGI session as the core's media path.
struct AgiPath<'a> {
    inner: &'a Inner,
    /// The agent's voice, speech-to-text and listening settings.
    profile: Arc<Profile>,
    session: &'a AgiSession,
    /// The call's id, for the recordings' file names.
    call_id: String,
    recordings: u32,
    /// The whole-call recording's MixMonitor id (`i(...)`), while it runs.
    mixmonitor: Option<String>,
    /// The call as the supervisors' console sees it.
    live: Option<Arc<LiveCall>>,
}

/// The channel variable MixMonitor stores its id in (`i(<variable>)`), for `StopMixMonitor`.
const MIXMONITOR_ID: &str = "ASTERAI_MIXMONITOR_ID";

/// The MixMonitor argument for `path`: `<path>,i(ASTERAI_MIXMONITOR_ID)`. Refuses what
/// Asterisk's application argument parser would read as something else (`,` separates
/// arguments, `|` too in old dialplans, `$`/`{` start substitutions, `(`/`)` option values,
/// `"`/`\` quoting), so the path reaches MixMonitor as written.
pub(crate) fn mixmonitor_args(path: &Path) -> Result<String, String> {
    let text = path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, ',' | '|' | '$' | '{' | '}' | '(' | ')' | '"' | '\\' | '\'') || c.is_control())
    {
        return Err(format!(
            "media.call_recordings_dir: MixMonitor cannot write to {text:?} (it holds {c:?}); choose a directory without , | $ {{ }} ( ) quotes or backslashes"
        ));
    }
    Ok(format!("{text},i({MIXMONITOR_ID})"))
}

impl MediaPath for AgiPath<'_> {
    fn use_profile(&mut self, profile: &Arc<Profile>) {
        self.profile = profile.clone();
    }

    fn supervised_as(&mut self, call: &Arc<LiveCall>) {
        self.live = Some(call.clone());
    }

    async fn answer(&mut self) -> Result<(), String> {
        match self.session.send(ChannelStatus::default()).await {
            Ok(ChannelState::Up) => Ok(()),
            Ok(_) => self.session.send(Answer).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn call_id(&mut self, call_id: &str) {
        self.call_id = call_id.to_owned();
        let _ = self.session.send(SetVariable::new("ASTERAI_CALL_ID", call_id.to_owned())).await;
    }

    async fn say(&self, text: &str) -> Speech {
        speak::say(self.session, &self.profile.providers.voice, text, self.profile.settings.tts_timeout).await
    }

    async fn speak(&self, answer: ChunkStream) -> Speech {
        speak::speak(
            self.session,
            &self.profile.providers.voice,
            answer,
            self.profile.settings.conversation.pipelining,
            self.profile.settings.tts_timeout,
        )
        .await
    }

    async fn listen(&mut self, limit: Duration) -> Heard {
        let config = &self.profile.settings.conversation;
        self.recordings += 1;
        let base = self.inner.settings.recordings_dir.join(format!("{}-{}", file_safe(&self.call_id), self.recordings));
        let max_ms = config.max_utterance.0.min(limit).as_millis() as i64;
        let silence_s = config.silence.0.as_secs() as u32;
        let started = Instant::now();
        let supervised = self.taken_over();
        let recording =
            self.session.send(RecordFile::wav(base.to_string_lossy().into_owned(), max_ms).silence(silence_s)).await;
        let recorded_at = Instant::now();
        let endpoint_ms = match &recording {
            Ok(r) => match r.end {
                RecordEnd::Hangup => return Heard::HungUp,
                RecordEnd::Error { ref reason, code } => {
                    tracing::warn!(call_id = %self.call_id, "Asterisk could not record ({reason}, {code}); can it write to the recordings directory?");
                    return Heard::Failed(format!("recording failed: {reason}"));
                }
                RecordEnd::Timeout { leftover_ms } if leftover_ms > 0 => silence_s * 1000,
                _ => 0,
            },
            Err(e) if e.is_hangup() => return Heard::HungUp,
            Err(e) => return Heard::Gone(format!("recording failed: {e}")),
        };
        let wav_path = base.with_extension("wav");
        let heard = read_recording(
            wav_path.clone(),
            config.silence_threshold_dbfs as f32,
            recorded_at,
            self.supervisor_spans(started, recorded_at, supervised),
        )
        .await;
        let recording = Recording { base, keep: self.inner.settings.keep_recordings };
        let Some(wav) = heard else {
            return Heard::Silence;
        };
        let stt = self.profile.providers.stt.clone();
        Heard::Utterance(Utterance {
            endpoint_ms,
            ended_at: recorded_at,
            last_voice_at: None,
            transcribe: Box::new(move |deadline| {
                Box::pin(async move {
                    let request = SttRequest { wav, path: &wav_path, deadline };
                    let transcribed = stt.transcribe(request).await;
                    // Transcribed (or the caller gone): the recording has served.
                    drop(recording);
                    transcribed.map(|t| t.text)
                })
            }),
        })
    }

    async fn hung_up(&self) {
        self.session.hung_up().await
    }

    fn is_gone(&self) -> bool {
        self.session.is_hung_up() || self.session.is_closed()
    }

    fn is_wrapping_up(&self) -> bool {
        self.session.wrap_up().is_cancelled()
    }

    /// Who ended a call that ended with "caller hung up`when`": the caller, Asterisk itself
    /// (stopping, or a hang-up from its console: no hang-up cause), or the connection to Asterisk
    /// (Asterisk crashed or was killed: no `HANGUP` at all).
    ///
    /// Asterisk writes `HANGUP` on its own line a few milliseconds after the reply that showed the
    /// hang-up (`result=-1`); it is awaited here, so that nothing refused on a dead channel (the
    /// final `HANGUP` command) is sent. `HANGUPCAUSE` is readable on a dead channel.
    async fn who_hung_up(&self, when: &str) -> String {
        let session = self.session;
        if !session.is_hung_up() && !session.is_closed() {
            let _ = tokio::time::timeout(HANGUP_GRACE, session.hung_up()).await;
        }
        if !session.is_hung_up() {
            let why = session.close_reason().unwrap_or_else(|| "no HANGUP from Asterisk".into());
            return format!(
                "the connection to Asterisk ended{when} without a hang-up (Asterisk stopped or crashed: {why})"
            );
        }
        match session.send(GetVariable::new("HANGUPCAUSE")).await {
            Ok(Some(cause)) if cause.trim() == "0" => format!(
                "Asterisk hung up the channel{when} with no hang-up cause (Asterisk is stopping, or an operator hung it up)"
            ),
            _ => format!("{CALLER_HUNG_UP}{when}"),
        }
    }

    /// Tells the dialplan the outcome, hangs up if the caller is still there, and sweeps the
    /// call's recordings.
    /// `EXEC SendDTMF <digits>`: the digits go out as one quoted argument (the command line
    /// machinery refuses CR, LF and NUL), after [`super::tools::valid_dtmf`] checked them.
    async fn send_dtmf(&self, digits: &str) -> Result<(), String> {
        self.session.send(Exec::new("SendDTMF", digits)).await.map(drop).map_err(|e| e.to_string())
    }

    fn recording_via(&self) -> RecordingVia {
        RecordingVia::MixMonitor
    }

    async fn start_recording(&mut self, name: &str, dir: &Path) -> Result<Collect, String> {
        self.mixmonitor(name, dir).await
    }

    async fn recording_note(&self, state: &str, why: &str) {
        let session = self.session;
        if session.is_closed() || session.is_hung_up() {
            return;
        }
        let _ = session.send(SetVariable::new("ASTERAI_RECORDING", state)).await;
        if state != "on" {
            let line = format!("asterai: call recording {state}: {why}");
            let _ = session.send(Verbose::new(line.replace(|c: char| c.is_control(), " "), 1)).await;
        }
    }

    /// `SET MUSIC ON`: Asterisk plays music on hold while the session waits for the next
    /// command; `SET MUSIC OFF` ends it. A recording still running (a pause that came while
    /// listening) ends first: its reply is awaited before the next command.
    async fn hold(&self, on: bool) -> Result<(), String> {
        self.session.send(SetMusic { on, class: None }).await.map_err(|e| e.to_string())
    }

    async fn finish(&mut self, outcome: Outcome, hang_up: bool) {
        let session = self.session;
        if !session.is_closed() {
            let _ = session.send(SetVariable::new("ASTERAI_OUTCOME", outcome.as_str())).await;
            let _ = session.send(SetVariable::new("ASTERAI_STATUS", "ok")).await;
            // Back to the dialplan (a transfer, hangup_at_end = false): the recording covers
            // the conversation with the agent and stops here. A hang-up stops it anyway.
            if let Some(id) = self.mixmonitor.take()
                && !hang_up
                && !session.is_hung_up()
                && let Err(e) = session.send(Exec::new("StopMixMonitor", id)).await
            {
                tracing::warn!(call_id = %self.call_id, "cannot stop the call's recording: {e}");
            }
            if hang_up && !session.is_hung_up() {
                let _ = session.send(Hangup::default()).await;
            }
        }
        if !self.inner.settings.keep_recordings {
            remove_call_recordings(&self.inner.settings.recordings_dir, &file_safe(&self.call_id)).await;
        }
    }
}

impl AgiPath<'_> {
    /// Whether the call is taken over now.
    fn taken_over(&self) -> bool {
        self.live.as_ref().is_some_and(|live| live.state() == AiState::TakenOver)
    }

    /// When the barging supervisor's voice was heard (and [`SUPERVISOR_ECHO`] after) between
    /// `started` and `ended`, when the call was taken over as the recording began
    /// (`supervised`) or is now; else nothing.
    fn supervisor_spans(&self, started: Instant, ended: Instant, supervised: bool) -> Vec<(Instant, Instant)> {
        let Some(live) = self.live.as_ref().filter(|_| supervised || self.taken_over()) else {
            return Vec::new();
        };
        live.supervisor_voice_between(started, ended)
            .into_iter()
            .map(|(from, until)| (from, until + SUPERVISOR_ECHO))
            .collect()
    }

    /// `EXEC MixMonitor <dir>/<name>.wav,i(ASTERAI_MIXMONITOR_ID)`: both directions of the
    /// channel, mixed, into a file asterai reads; then the id, for `StopMixMonitor`.
    async fn mixmonitor(&mut self, name: &str, dir: &Path) -> Result<Collect, String> {
        super::call_recording::ensure_dir(dir).await?;
        let path = dir.join(format!("{name}.wav"));
        let args = mixmonitor_args(&path)?;
        match self.session.send(Exec::new("MixMonitor", args)).await {
            Ok(0) => {}
            Ok(n) => return Err(format!("MixMonitor refused to record into {} (result {n})", path.display())),
            Err(e) => return Err(format!("MixMonitor: {e}")),
        }
        let id = match self.session.send(GetVariable::new(MIXMONITOR_ID)).await {
            Ok(Some(id)) if !id.is_empty() => id,
            // Asterisk too old to set it: StopMixMonitor then stops the channel's first one.
            _ => String::new(),
        };
        self.mixmonitor = Some(id);
        Ok(Collect::LocalFile { path })
    }
}

/// A recording of the caller. Dropping it deletes the file (and a demo transcript beside it)
/// unless `media.keep_recordings`, in the background: it is not on the caller's critical path,
/// and what a shutdown interrupts the end-of-call sweep removes.
struct Recording {
    base: PathBuf,
    keep: bool,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let base = std::mem::take(&mut self.base);
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(base.with_extension("wav"));
            let _ = std::fs::remove_file(base.with_extension("txt"));
        });
    }
}

/// A safe file name part from a call id (which may come from a dialplan).
fn file_safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Reads a recording that ended at `ended` and decides whether it holds speech, on the blocking
/// pool (file I/O and decoding are on the turn's critical path), with `mute` (the supervisor's
/// voice) silenced first. The recording is placed in time from its end and its length: the
/// command may have waited for an earlier one's reply before Asterisk began recording, and
/// Asterisk keeps the trailing silence of a recording that `s=1` ended. Returns the WAV to transcribe (8 kHz mono 16-bit; re-encoded only
/// when its header is unfinished or a part was silenced, so it cannot upset a provider), or
/// `None` for silence and unreadable files.
async fn read_recording(
    path: PathBuf,
    threshold_dbfs: f32,
    ended: Instant,
    mute: Vec<(Instant, Instant)>,
) -> Option<bytes::Bytes> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).ok()?;
        let mut samples = audio::decode_wav(&bytes).ok()?;
        let length = Duration::from_micros(samples.len() as u64 * 1000 / 8);
        let began = ended.checked_sub(length).unwrap_or(ended);
        let offsets: Vec<(Duration, Duration)> = mute
            .iter()
            .map(|(from, until)| (from.saturating_duration_since(began), until.saturating_duration_since(began)))
            .collect();
        let muted = silence_spans(&mut samples, &offsets);
        if audio::is_silence(&samples, threshold_dbfs) {
            return None;
        }
        // A recording Asterisk finished goes out as it is; anything else is re-encoded.
        Some(if audio::is_native_wav(&bytes) && !muted { bytes.into() } else { audio::encode_wav(&samples).into() })
    })
    .await
    .ok()
    .flatten()
}

/// Silences `spans` (offsets) of 8 kHz `samples`; true when any sample was in one.
fn silence_spans(samples: &mut [i16], spans: &[(Duration, Duration)]) -> bool {
    let len = samples.len();
    let at = |offset: Duration| ((offset.as_micros() * 8 / 1000) as usize).min(len);
    let mut muted = false;
    for (from, until) in spans {
        let (from, until) = (at(*from), at(*until));
        if from < until {
            samples[from..until].fill(0);
            muted = true;
        }
    }
    muted
}

/// Sweeps a call's recordings left behind (an error between recording and transcription).
async fn remove_call_recordings(dir: &Path, prefix: &str) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return };
    let prefix = format!("{prefix}-");
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisors_voice_is_silenced_where_it_was_heard() {
        let mut samples = vec![1000i16; 8000];
        let spans = [
            (Duration::from_millis(100), Duration::from_millis(200)),
            (Duration::from_millis(900), Duration::from_secs(5)),
        ];
        assert!(silence_spans(&mut samples, &spans));
        assert!(samples[..800].iter().all(|s| *s == 1000));
        assert!(samples[800..1600].iter().all(|s| *s == 0));
        assert!(samples[1600..7200].iter().all(|s| *s == 1000));
        assert!(samples[7200..].iter().all(|s| *s == 0));
        assert!(!silence_spans(&mut samples, &[]));
    }
}
