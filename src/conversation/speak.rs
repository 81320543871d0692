//! Turning the responder's answer into sound on the call.
//!
//! Pipelined (the default): the answer streams in, is cut into sentences, each sentence is sent to
//! text-to-speech as soon as it is complete, and the first sentence plays as soon as its audio
//! exists, while the next ones are still being written and synthesized. At most [`LOOKAHEAD`]
//! synthesized sentences wait for their turn. Only the player sends AGI commands, one at a time:
//! Asterisk drops the reply of a command written during playback.
//!
//! Without pipelining the whole answer is awaited, synthesized in one piece, then played.
//!
//! A hang-up stops everything at once: nothing more is played, no new sentence is sent to
//! text-to-speech, and the syntheses already running are cancelled (their tasks are aborted, so
//! an HTTP request is dropped and an espeak-ng child killed). Asterisk reports a hang-up during
//! playback as `200 result=-1 endpos=N` with `N > 0` and sends `HANGUP` on its own line a few
//! milliseconds later; the reply alone is enough (a file Asterisk cannot read gives `endpos=0`).

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::agi::AgiSession;
use crate::agi::command::{Played, StreamFile};
use crate::speech::SpeechError;
use crate::speech::llm::{Analysis, Chunk, ChunkStream, SentenceSplitter};
use crate::speech::tts::{Spoken, Voice};

/// Synthesized sentences allowed to wait while one plays.
pub const LOOKAHEAD: usize = 2;

/// What happened while speaking.
#[derive(Debug, Default)]
pub struct Speech {
    /// Everything the responder wrote (analysis excluded).
    pub text: String,
    pub analysis: Option<Analysis>,
    /// The responder failed (before or during the answer).
    pub error: Option<SpeechError>,
    /// Sentences played to the end (or interrupted by a digit).
    pub played: usize,
    /// The sentences the caller heard, whole or (when they hung up during it) in part: after a
    /// hang-up, what goes into the transcript.
    pub heard: Vec<String>,
    /// Sentences whose synthesis failed and were skipped.
    pub tts_failures: usize,
    /// The first synthesis error, if any.
    pub tts_error: Option<SpeechError>,
    /// When the first complete sentence was available.
    pub first_sentence_at: Option<Instant>,
    /// When the first sentence's audio was ready.
    pub first_audio_at: Option<Instant>,
    /// When the first STREAM FILE was sent.
    pub first_play_at: Option<Instant>,
    /// How long the provider took to synthesize the first sentence played (zero from the cache).
    pub first_tts_provider: Option<std::time::Duration>,
    /// The channel hung up (or the connection ended) while speaking.
    pub hung_up: bool,
    /// The functions the model called with its answer.
    pub tool_calls: Vec<crate::speech::llm::ToolCall>,
    /// The caller talked over the answer (barge-in, streaming only): the rest was not said, and
    /// `heard` holds what the caller heard of it.
    pub interrupted: bool,
}

impl Speech {
    /// Adds what a later answer of the same turn did (after the model's tools reported back):
    /// its words after these, its analysis and error in place of these, the first moments
    /// kept from whichever answer had them first.
    pub fn absorb(&mut self, later: Speech) {
        if !later.text.trim().is_empty() {
            self.text = format!("{} {}", self.text.trim(), later.text.trim()).trim().to_owned();
        }
        self.analysis = later.analysis.or(self.analysis.take());
        self.error = later.error;
        self.played += later.played;
        self.heard.extend(later.heard);
        self.tts_failures += later.tts_failures;
        self.tts_error = self.tts_error.take().or(later.tts_error);
        self.first_sentence_at = self.first_sentence_at.or(later.first_sentence_at);
        self.first_audio_at = self.first_audio_at.or(later.first_audio_at);
        self.first_play_at = self.first_play_at.or(later.first_play_at);
        self.first_tts_provider = self.first_tts_provider.or(later.first_tts_provider);
        self.hung_up |= later.hung_up;
        self.tool_calls.extend(later.tool_calls);
        self.interrupted |= later.interrupted;
    }
}

/// A sentence being synthesized. Dropping it (a hang-up, or the player gone) cancels the work.
struct Pending {
    sentence: String,
    audio: AbortOnDropHandle<(Result<Spoken, SpeechError>, Instant)>,
}

/// Plays the answer in `chunks` on `session`.
pub async fn speak(
    session: &AgiSession,
    voice: &Voice,
    chunks: ChunkStream,
    pipelined: bool,
    tts_deadline: std::time::Duration,
) -> Speech {
    if pipelined {
        speak_pipelined(session, voice, chunks, tts_deadline).await
    } else {
        speak_whole(session, voice, chunks, tts_deadline).await
    }
}

/// Plays a fixed phrase (greeting, reprompt, goodbye…), sentence by sentence.
pub async fn say(session: &AgiSession, voice: &Voice, text: &str, tts_deadline: std::time::Duration) -> Speech {
    let chunks: ChunkStream = Box::pin(futures_util::stream::iter(vec![Ok(Chunk::Text(text.to_owned()))]));
    speak_pipelined(session, voice, chunks, tts_deadline).await
}

fn synthesize(voice: &Voice, sentence: String, limit: std::time::Duration) -> Pending {
    let voice = voice.clone();
    let text = sentence.clone();
    let audio = AbortOnDropHandle::new(tokio::spawn(async move {
        let result = voice.speak(&text, Instant::now() + limit).await;
        (result, Instant::now())
    }));
    Pending { sentence, audio }
}

async fn speak_pipelined(
    session: &AgiSession,
    voice: &Voice,
    mut chunks: ChunkStream,
    limit: std::time::Duration,
) -> Speech {
    let (tx, mut rx) = mpsc::channel::<Pending>(LOOKAHEAD);
    let producer = async {
        let mut out = Speech::default();
        let mut splitter = SentenceSplitter::default();
        'reading: loop {
            let next = tokio::select! {
                next = chunks.next() => next,
                _ = session.hung_up() => {
                    out.hung_up = true;
                    break;
                }
            };
            match next {
                None => break,
                Some(Ok(Chunk::Text(text))) => {
                    out.text.push_str(&text);
                    for sentence in splitter.push(&text) {
                        out.first_sentence_at.get_or_insert_with(Instant::now);
                        if tx.send(synthesize(voice, sentence, limit)).await.is_err() {
                            break 'reading;
                        }
                    }
                }
                Some(Ok(Chunk::Analysis(analysis))) => out.analysis = Some(analysis),
                Some(Ok(Chunk::ToolCalls(calls))) => out.tool_calls = calls,
                Some(Err(error)) => {
                    out.error = Some(error);
                    break;
                }
            }
        }
        if !out.hung_up
            && let Some(rest) = splitter.finish()
        {
            out.first_sentence_at.get_or_insert_with(Instant::now);
            let _ = tx.send(synthesize(voice, rest, limit)).await;
        }
        drop(tx);
        out
    };
    // The player owns the receiver: when it stops (the call is gone), the sentences still queued
    // are dropped, which cancels their synthesis, and the producer's next send fails.
    let player = async move {
        let mut out = Speech::default();
        while let Some(Pending { sentence, mut audio }) = rx.recv().await {
            let done = tokio::select! {
                done = &mut audio => done,
                // No need to wait for audio nobody will hear.
                _ = session.hung_up() => {
                    out.hung_up = true;
                    break;
                }
            };
            let (result, ready_at) = match done {
                Ok(done) => done,
                Err(e) => (
                    Err(SpeechError::Failed {
                        provider: voice.provider().name(),
                        message: format!("synthesis task failed: {e}"),
                    }),
                    Instant::now(),
                ),
            };
            match result {
                Ok(spoken) => {
                    out.first_audio_at.get_or_insert(ready_at);
                    out.first_tts_provider.get_or_insert(spoken.provider_time);
                    if !play(session, &spoken, &sentence, &mut out).await {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!("text-to-speech failed; the sentence is skipped: {error}");
                    out.tts_failures += 1;
                    out.tts_error.get_or_insert(error);
                }
            }
        }
        out
    };
    let (mut produced, played) = tokio::join!(producer, player);
    produced.played = played.played;
    produced.heard = played.heard;
    produced.tts_failures = played.tts_failures;
    produced.tts_error = played.tts_error;
    produced.first_audio_at = played.first_audio_at;
    produced.first_play_at = played.first_play_at;
    produced.first_tts_provider = played.first_tts_provider;
    produced.hung_up |= played.hung_up;
    produced
}

async fn speak_whole(
    session: &AgiSession,
    voice: &Voice,
    mut chunks: ChunkStream,
    limit: std::time::Duration,
) -> Speech {
    let mut out = Speech::default();
    loop {
        let next = tokio::select! {
            next = chunks.next() => next,
            _ = session.hung_up() => {
                out.hung_up = true;
                return out;
            }
        };
        match next {
            None => break,
            Some(Ok(Chunk::Text(text))) => out.text.push_str(&text),
            Some(Ok(Chunk::Analysis(analysis))) => out.analysis = Some(analysis),
            Some(Ok(Chunk::ToolCalls(calls))) => out.tool_calls = calls,
            Some(Err(error)) => {
                out.error = Some(error);
                break;
            }
        }
    }
    let text = out.text.trim().to_owned();
    if text.is_empty() {
        return out;
    }
    out.first_sentence_at = Some(Instant::now());
    match voice.speak(&text, Instant::now() + limit).await {
        Ok(spoken) => {
            out.first_audio_at = Some(Instant::now());
            out.first_tts_provider = Some(spoken.provider_time);
            play(session, &spoken, &text, &mut out).await;
        }
        Err(error) => {
            tracing::warn!("text-to-speech failed: {error}");
            out.tts_failures = 1;
            out.tts_error = Some(error);
        }
    }
    out
}

/// Plays one file (`sentence`, synthesized); false when the call is gone and nothing more should
/// be played.
async fn play(session: &AgiSession, spoken: &Spoken, sentence: &str, out: &mut Speech) -> bool {
    out.first_play_at.get_or_insert_with(Instant::now);
    let file = spoken.file.to_string_lossy().into_owned();
    match session.send(StreamFile::new(file)).await {
        Ok(Played::Finished { .. } | Played::Interrupted { .. }) => {
            out.played += 1;
            out.heard.push(sentence.trim().to_owned());
            true
        }
        // `endpos > 0`: the channel went away part-way through; HANGUP follows on its own line.
        Ok(Played::Failed { endpos })
            if session.is_hung_up() || session.is_closed() || endpos.is_some_and(|n| n > 0) =>
        {
            if endpos.is_some_and(|n| n > 0) {
                out.heard.push(sentence.trim().to_owned());
            }
            out.hung_up = true;
            false
        }
        Ok(Played::Failed { .. }) => {
            tracing::warn!(file = %spoken.file.display(), "Asterisk could not play the synthesized file; can it read the media directory?");
            true
        }
        Err(e) => {
            if !e.is_hangup() {
                tracing::warn!("playing a sentence failed: {e}");
            }
            out.hung_up = true;
            false
        }
    }
}
