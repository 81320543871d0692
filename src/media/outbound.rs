//! The agent's audio on its way out: a queue of whole frames and marks that the conversation
//! fills ([`MediaSender`]) and the transport's writer drains at the pace Asterisk plays them
//! ([`Pacer`]).
//!
//! * Frames are cut to the session's frame size as samples arrive; a mark first completes the
//!   partial frame with silence, because chan_websocket drops a message shorter than a frame.
//! * The writer keeps at most a *lead* of audio ahead of the playout clock: chan_websocket
//!   re-times what it gets and its queue holds 1,000 frames, so a 500 ms lead rides out a busy
//!   machine without ever nearing XOFF (900 frames), and a FLUSH_MEDIA still empties it at once.
//!   AudioSocket cannot take audio back, so there the lead is two frames.
//! * The local queue is bounded ([`MAX_QUEUED_FRAMES`]): a sender that runs far ahead of playback
//!   waits, so a whole answer is never held in memory before it is heard, and the first frame
//!   leaves as soon as it exists.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::MediaError;
use super::control::check_mark_id;
use super::format::MediaFormat;

/// Frames (20 ms each) a session queues locally before [`MediaSender::send_audio`] waits:
/// 60 s of audio.
pub const MAX_QUEUED_FRAMES: usize = 3000;

/// A frame is counted late when it leaves this long after the playout clock ran dry while it
/// was already waiting.
const LATE_AFTER: Duration = Duration::from_millis(5);

/// What the writer drains, in order.
#[derive(Debug)]
pub(crate) enum Item {
    Frame { bytes: Bytes, queued_at: Instant },
    Mark(String),
}

/// Counters of one session's outbound audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Frames written to the transport.
    pub frames_sent: u64,
    /// Frames that were ready but left after the caller's playback had run dry (a gap heard).
    pub late_frames: u64,
    /// Frames dropped from the local queue by a flush (never sent).
    pub frames_flushed: u64,
    pub marks_sent: u64,
    pub flushes: u64,
    /// MEDIA_XOFF received.
    pub xoffs: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Item>,
    frames_queued: usize,
    /// Samples of a frame not yet complete.
    partial: Vec<i16>,
    /// Why the session can take no more audio.
    closed: Option<String>,
    /// Until when the audio already sent plays, by the writer's clock.
    playing_until: Option<Instant>,
    stats: SenderStats,
}

/// The queue shared by the senders and the writer.
pub(crate) struct Outbound {
    format: MediaFormat,
    state: Mutex<State>,
    /// Wakes the writer: something was queued, or the session closed.
    wake: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
}

impl Outbound {
    pub(crate) fn new(format: MediaFormat) -> Arc<Outbound> {
        Arc::new(Outbound { format, state: Mutex::new(State::default()), wake: Notify::new(), room: Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next item, if one is queued (never waits: a flush may have emptied the queue since
    /// the writer looked).
    pub(crate) fn pop(&self) -> Option<Item> {
        let mut state = self.lock();
        if state.closed.is_some() {
            return None;
        }
        let item = state.queue.pop_front()?;
        if matches!(item, Item::Frame { .. }) {
            state.frames_queued -= 1;
        }
        drop(state);
        self.room.notify_waiters();
        Some(item)
    }

    /// True when an item is queued.
    pub(crate) fn has_items(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// A future that completes when something is queued (or the session closes).
    pub(crate) async fn wait_for_items(&self) {
        loop {
            let notified = self.wake.notified();
            {
                let state = self.lock();
                if state.closed.is_some() || !state.queue.is_empty() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Empties the queue: the marks that were never sent, and the frames dropped.
    pub(crate) fn clear(&self) -> (Vec<String>, usize) {
        let mut state = self.lock();
        let frames = state.frames_queued;
        let marks = state
            .queue
            .drain(..)
            .filter_map(|item| match item {
                Item::Mark(id) => Some(id),
                Item::Frame { .. } => None,
            })
            .collect();
        state.frames_queued = 0;
        state.partial.clear();
        state.stats.frames_flushed += frames as u64;
        state.stats.flushes += 1;
        drop(state);
        self.room.notify_waiters();
        (marks, frames)
    }

    /// No more audio: senders get `reason`, the writer stops.
    pub(crate) fn close(&self, reason: &str) {
        let mut state = self.lock();
        if state.closed.is_none() {
            state.closed = Some(reason.to_owned());
        }
        drop(state);
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    pub(crate) fn record(&self, update: impl FnOnce(&mut SenderStats)) {
        update(&mut self.lock().stats);
    }

    pub(crate) fn set_playing_until(&self, until: Option<Instant>) {
        self.lock().playing_until = until;
    }

    fn push_frames(&self, samples: &[i16], pad: bool) -> Result<usize, MediaError> {
        let frame = self.format.frame_samples();
        let mut state = self.lock();
        if let Some(reason) = &state.closed {
            return Err(MediaError::Closed(reason.clone()));
        }
        state.partial.extend_from_slice(samples);
        if pad && !state.partial.is_empty() {
            let whole = state.partial.len().div_ceil(frame) * frame;
            state.partial.resize(whole, 0);
        }
        let now = Instant::now();
        let complete = state.partial.len() / frame * frame;
        let mut pushed = 0;
        if complete > 0 {
            let samples: Vec<i16> = state.partial.drain(..complete).collect();
            for chunk in samples.chunks_exact(frame) {
                let bytes = Bytes::from(self.format.codec.encode(chunk));
                state.queue.push_back(Item::Frame { bytes, queued_at: now });
                pushed += 1;
            }
            state.frames_queued += pushed;
        }
        drop(state);
        if pushed > 0 {
            self.wake.notify_one();
        }
        Ok(pushed)
    }

    async fn wait_for_room(&self) -> Result<(), MediaError> {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if let Some(reason) = &state.closed {
                    return Err(MediaError::Closed(reason.clone()));
                }
                if state.frames_queued < MAX_QUEUED_FRAMES {
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

/// Commands only the writer can carry out, in order with the frames it sends.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop what is playing (FLUSH_MEDIA); answered once written.
    Flush(oneshot::Sender<()>),
    /// End the media channel (HANGUP, or AudioSocket's hang-up message); answered once written.
    Hangup(oneshot::Sender<()>),
    /// Any other chan_websocket command (ignored by AudioSocket).
    Command(super::control::Command),
}

/// What a flush took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Marks that were still queued locally (never sent, so never reported). Marks already
    /// sent and not yet reached are discarded by Asterisk: they are simply never reported.
    pub unsent_marks: Vec<String>,
    /// Frames dropped before they were sent.
    pub frames_dropped: usize,
}

/// The agent's side of a session: audio, marks, flush and hang-up. Cheap to clone; every clone
/// feeds the same queue.
#[derive(Clone)]
pub struct MediaSender {
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) control: mpsc::Sender<Control>,
}

impl MediaSender {
    /// The session's format: `send_audio` takes samples at its rate.
    pub fn format(&self) -> MediaFormat {
        self.outbound.format
    }

    /// Queues samples at the session's rate. Whole frames go out as soon as pacing allows;
    /// waits only when a minute of audio is already queued.
    pub async fn send_audio(&self, samples: &[i16]) -> Result<(), MediaError> {
        self.outbound.wait_for_room().await?;
        self.outbound.push_frames(samples, false).map(drop)
    }

    /// Completes the partial frame with silence, so everything queued so far goes out.
    pub async fn finish(&self) -> Result<(), MediaError> {
        self.outbound.push_frames(&[], true).map(drop)
    }

    /// Queues a mark after the audio queued so far (the partial frame is completed first). It
    /// comes back as [`super::MediaEvent::MarkProcessed`] when the caller has heard that audio.
    pub async fn mark(&self, id: &str) -> Result<(), MediaError> {
        check_mark_id(id).map_err(MediaError::Invalid)?;
        self.outbound.push_frames(&[], true)?;
        let mut state = self.outbound.lock();
        if let Some(reason) = &state.closed {
            return Err(MediaError::Closed(reason.clone()));
        }
        state.queue.push_back(Item::Mark(id.to_owned()));
        drop(state);
        self.outbound.wake.notify_one();
        Ok(())
    }

    /// Stops the agent's audio at once: the local queue is emptied and Asterisk's playback
    /// queue flushed (chan_websocket) or sending simply stops (AudioSocket). Returns once the
    /// flush has been written.
    pub async fn flush(&self) -> Result<Flushed, MediaError> {
        let (unsent_marks, frames_dropped) = self.outbound.clear();
        let (done, written) = oneshot::channel();
        self.control.send(Control::Flush(done)).await.map_err(|_| MediaError::Closed("session ended".into()))?;
        written.await.map_err(|_| MediaError::Closed("session ended before the flush was sent".into()))?;
        Ok(Flushed { unsent_marks, frames_dropped })
    }

    /// Hangs up the media channel (the caller's channel stays; ARI ends it). Returns once the
    /// hang-up was written, or at once if the session had already ended.
    pub async fn hangup(&self) {
        let (done, written) = oneshot::channel();
        if self.control.send(Control::Hangup(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Sends a chan_websocket command as it is (GET_STATUS, PAUSE_MEDIA, …).
    pub async fn command(&self, command: super::control::Command) -> Result<(), MediaError> {
        self.control.send(Control::Command(command)).await.map_err(|_| MediaError::Closed("session ended".into()))
    }

    /// True while agent audio is queued here or still playing to the caller: speech now is a
    /// barge-in.
    pub fn is_playing(&self) -> bool {
        let state = self.outbound.lock();
        !state.queue.is_empty() || !state.partial.is_empty() || state.playing_until.is_some_and(|t| t > Instant::now())
    }

    /// Agent audio the caller has not heard yet: queued here, plus what was sent ahead of the
    /// playout clock.
    pub fn unplayed(&self) -> Duration {
        let state = self.outbound.lock();
        let frames = self.outbound.format.frame_duration() * state.frames_queued as u32;
        let ahead = state.playing_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(Instant::now()));
        frames + ahead
    }

    /// Audio queued here and not yet sent.
    pub fn queued(&self) -> Duration {
        let frames = self.outbound.lock().frames_queued as u32;
        self.outbound.format.frame_duration() * frames
    }

    pub fn stats(&self) -> SenderStats {
        self.outbound.lock().stats
    }

    /// True once the session can take no more audio.
    pub fn is_closed(&self) -> bool {
        self.outbound.is_closed()
    }
}

/// The playout clock of the far end: frames play back to back, one per `frame`, starting when
/// the first arrives after a pause. The writer sends a frame when it would not put more than
/// `lead` of audio ahead of that clock.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    frame: Duration,
    lead: Duration,
    playing_until: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(frame: Duration, lead: Duration) -> Pacer {
        Pacer { frame, lead: lead.max(frame), playing_until: None }
    }

    /// When the next frame may leave.
    pub(crate) fn ready_at(&self, now: Instant) -> Instant {
        match self.playing_until {
            Some(until) if until > now + self.lead - self.frame => until + self.frame - self.lead,
            _ => now,
        }
    }

    /// A frame left at `now`, queued at `queued_at`. Returns true when it was late: the far
    /// end had run dry while the frame was waiting here.
    pub(crate) fn sent(&mut self, now: Instant, queued_at: Instant) -> bool {
        let late = matches!(self.playing_until, Some(until) if until + LATE_AFTER < now && queued_at <= until);
        let start = self.playing_until.filter(|until| *until > now).unwrap_or(now);
        self.playing_until = Some(start + self.frame);
        late
    }

    /// Nothing is playing any more (a flush).
    pub(crate) fn reset(&mut self) {
        self.playing_until = None;
    }

    pub(crate) fn playing_until(&self) -> Option<Instant> {
        self.playing_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::format::Codec;

    #[test]
    fn pacer_keeps_the_lead() {
        let frame = Duration::from_millis(20);
        let mut pacer = Pacer::new(frame, Duration::from_millis(100));
        let t0 = Instant::now();
        // Five frames go at once (100 ms of lead), the sixth waits for the clock.
        for _ in 0..5 {
            assert_eq!(pacer.ready_at(t0), t0);
            assert!(!pacer.sent(t0, t0));
        }
        assert_eq!(pacer.ready_at(t0), t0 + frame);
        // After a pause longer than the queued audio, the clock restarts: not late, since the
        // frame was queued after the far end ran dry.
        let later = t0 + Duration::from_secs(1);
        assert!(!pacer.sent(later, later));
        // A frame that waited here while the far end ran dry is late.
        let t1 = later + Duration::from_millis(100);
        assert!(pacer.sent(t1, later));
        pacer.reset();
        assert_eq!(pacer.ready_at(t1), t1);
    }

    #[tokio::test]
    async fn frames_are_whole_and_marks_pad_with_silence() {
        let outbound = Outbound::new(MediaFormat::new(Codec::Ulaw));
        let (tx, _rx) = mpsc::channel(4);
        let sender = MediaSender { outbound: outbound.clone(), control: tx };
        sender.send_audio(&[1000; 250]).await.unwrap();
        assert_eq!(sender.queued(), Duration::from_millis(20), "one whole frame, 90 samples pending");
        assert!(sender.is_playing());
        sender.mark("s1").await.unwrap();
        assert!(sender.mark("bad id").await.is_err());
        let mut items = Vec::new();
        while outbound.has_items() {
            items.push(outbound.pop().unwrap());
        }
        assert_eq!(items.len(), 3);
        let Item::Frame { bytes, .. } = &items[1] else { panic!("{items:?}") };
        assert_eq!(bytes.len(), 160);
        assert_eq!(&bytes[90..], &[0xff; 70][..], "padded with µ-law silence");
        assert!(matches!(&items[2], Item::Mark(id) if id == "s1"));
        outbound.close("caller hung up");
        let err = sender.send_audio(&[0; 10]).await.unwrap_err();
        assert!(err.to_string().contains("caller hung up"), "{err}");
    }

    #[tokio::test]
    async fn clear_returns_the_unsent_marks() {
        let outbound = Outbound::new(MediaFormat::new(Codec::Slin16));
        let (tx, _rx) = mpsc::channel(4);
        let sender = MediaSender { outbound: outbound.clone(), control: tx };
        sender.send_audio(&[0; 640]).await.unwrap();
        sender.mark("a").await.unwrap();
        sender.send_audio(&[0; 320]).await.unwrap();
        sender.mark("b").await.unwrap();
        let (marks, frames) = outbound.clear();
        assert_eq!((marks, frames), (vec!["a".to_owned(), "b".to_owned()], 3));
        assert!(!outbound.has_items());
        assert_eq!(sender.stats().frames_flushed, 3);
    }
}
