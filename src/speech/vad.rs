//! Voice activity detection on the caller's audio, frame by frame.
//!
//! The detector is WebRTC's (libfvad, through the `webrtc-vad` crate): a Gaussian mixture model
//! over six sub-band energies, per 20 ms frame, not an energy threshold. Its raw per-frame
//! decisions flicker, so [`VoiceActivity`] wraps them in the state machine of pipecat's
//! `vad_analyzer.py`:
//!
//! ```text
//!  Quiet ──voiced──▶ Starting ──voiced for `start`──▶ Speaking ──unvoiced──▶ Stopping
//!    ▲                 │ too long unvoiced                ▲  voiced (SpeechResumed)   │
//!    └─────────────────┘                                  └───────────────────────────┤
//!    ◀─────────────────────── unvoiced for `stop` (SpeechEnded) ──────────────────────┘
//! ```
//!
//! * `start` (`stream.barge_in_min_speech`, 250 ms): voiced audio needed before the caller
//!   counts as speaking. A click, a cough or a breath is shorter and never starts a turn or
//!   interrupts the agent.
//! * `short_pause` (`stream.speculative_pause`, 200 ms): silence after which the utterance so far
//!   may be transcribed speculatively ([`VadEvent::ShortPause`]); more speech before the endpoint
//!   ([`VadEvent::SpeechResumed`]) voids it.
//! * `stop` (`stream.endpoint_silence`, 500 ms): silence that ends the turn
//!   ([`VadEvent::SpeechEnded`], with where the last voiced frame ended: `voice_to_voice` starts
//!   there).
//! * A frame is a speech candidate when the model says voiced *and* it is louder than
//!   `min_volume_dbfs` and `above_floor_db` over the line's noise floor (a minimum tracker that
//!   rises 5 dB/s): steady line noise does not talk, and the endpoint still comes on a noisy line.
//! * Speech *starts* only when, in the last `start` (+ `start_gap`) of audio, the candidates
//!   within `relative_db` of the loudest one add up to `start` and their loudness varies by
//!   `min_modulation_db`: a cough's decaying tail and a beep's steady tone do not start a turn.
//!   Resuming after a pause needs one candidate frame.
//!
//! chan_websocket sends frames only while the caller's side makes sound (a bridge between two
//! channels passes frames through), so silence may arrive as *no frames at all*: the owner feeds
//! the time that passed without audio with [`VoiceActivity::push_gap`].
//!
//! Times are positions on the detector's own clock: the audio pushed plus the gaps, from 0.

use std::fmt;
use std::time::Duration;

/// The frame the detector decides on.
pub const FRAME: Duration = Duration::from_millis(20);

/// How the state machine is tuned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadParams {
    /// Voiced audio before speech counts as started.
    pub start: Duration,
    /// Silence after speech that ends the turn.
    pub stop: Duration,
    /// Silence after speech worth a speculative transcription.
    pub short_pause: Duration,
    /// Unvoiced audio tolerated inside `start` before it counts from zero again.
    pub start_gap: Duration,
    /// WebRTC's aggressiveness, 0 (most speech) to 3 (least noise).
    pub mode: u8,
    /// Frames below this loudness are unvoiced.
    pub min_volume_dbfs: f32,
    /// Frames this far above the line's noise floor, at least, can be voiced.
    pub above_floor_db: f32,
    /// Within the `start` window, frames this far below its loudest frame do not count: the
    /// decaying tail of a cough or a knock is not speech.
    pub relative_db: f32,
    /// Loudness must vary by this much across the `start` window: speech rises and falls with
    /// its syllables, a tone or a steady noise does not.
    pub min_modulation_db: f32,
}

impl Default for VadParams {
    fn default() -> Self {
        VadParams {
            start: Duration::from_millis(250),
            stop: Duration::from_millis(500),
            short_pause: Duration::from_millis(200),
            start_gap: Duration::from_millis(60),
            mode: 3,
            min_volume_dbfs: -50.0,
            above_floor_db: 9.0,
            relative_db: 25.0,
            min_modulation_db: 6.0,
        }
    }
}

/// Where the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadState {
    Quiet,
    /// Voiced, not yet for `start`.
    Starting,
    Speaking,
    /// Silent after speech, not yet for `stop`.
    Stopping,
}

/// A change worth acting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// The caller has been speaking for `start`: a turn begins (a barge-in while the agent
    /// talks). `onset` is where the first voiced frame of it began; `at` where it was decided.
    SpeechStarted { onset: Duration, at: Duration },
    /// `short_pause` of silence after speech: transcribe what was said so far.
    ShortPause { last_voiced: Duration, at: Duration },
    /// Speech again after a [`VadEvent::ShortPause`], before the endpoint.
    SpeechResumed { at: Duration },
    /// `stop` of silence after speech: the turn is over. `last_voiced` is where the last voiced
    /// frame ended.
    SpeechEnded { last_voiced: Duration, at: Duration },
}

/// Why a detector cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("voice activity detection: {0}")]
pub struct VadError(String);

/// libfvad's instance. It keeps its whole state in the heap block it owns and has no global or
/// thread-local state, so moving it to another thread is sound; it is never shared (not `Sync`).
struct Detector(webrtc_vad::Vad);

// SAFETY: see `Detector`: the pointer is owned and only used through `&mut self`.
unsafe impl Send for Detector {}

/// The detector and its state machine for one caller.
pub struct VoiceActivity {
    detector: Detector,
    params: VadParams,
    frame_len: usize,
    rate: u32,
    pending: Vec<i16>,
    clock: Duration,
    state: VadState,
    /// Starting: the unvoiced run since the last candidate frame.
    gap: Duration,
    /// Stopping: silence so far, and whether the short pause was reported.
    silence: Duration,
    paused: bool,
    last_voiced: Duration,
    /// The line's noise floor, in dBFS.
    floor: f32,
    /// The last frames' (candidate, loudness), newest last: the `start` window.
    window: std::collections::VecDeque<(bool, f32)>,
    window_len: usize,
}

/// How fast the noise floor may rise, per frame (5 dB/s).
const FLOOR_RISE_DB: f32 = 0.1;
/// The noise floor never goes below this (digital silence would make everything "loud").
const FLOOR_MIN_DBFS: f32 = -75.0;

impl fmt::Debug for VoiceActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoiceActivity").field("rate", &self.rate).field("state", &self.state).finish()
    }
}

impl VoiceActivity {
    /// A detector for audio at `rate` (8000 or 16000 Hz; 32000 and 48000 work too).
    pub fn new(rate: u32, params: VadParams) -> Result<VoiceActivity, VadError> {
        use webrtc_vad::{SampleRate, Vad, VadMode};
        let sample_rate = match rate {
            8000 => SampleRate::Rate8kHz,
            16000 => SampleRate::Rate16kHz,
            32000 => SampleRate::Rate32kHz,
            48000 => SampleRate::Rate48kHz,
            other => return Err(VadError(format!("a rate of {other} Hz; expected 8000, 16000, 32000 or 48000"))),
        };
        let mode = match params.mode {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            3 => VadMode::VeryAggressive,
            other => return Err(VadError(format!("mode {other}; expected 0 to 3"))),
        };
        if params.stop < params.short_pause || params.start.is_zero() || params.stop.is_zero() {
            return Err(VadError(format!(
                "start {:?}, short pause {:?}, stop {:?}: expected start and stop above zero and the short pause no longer than stop",
                params.start, params.short_pause, params.stop
            )));
        }
        Ok(VoiceActivity {
            detector: Detector(Vad::new_with_rate_and_mode(sample_rate, mode)),
            params,
            frame_len: rate as usize / 50,
            rate,
            pending: Vec::new(),
            clock: Duration::ZERO,
            state: VadState::Quiet,
            gap: Duration::ZERO,
            silence: Duration::ZERO,
            paused: false,
            last_voiced: Duration::ZERO,
            floor: FLOOR_MIN_DBFS,
            window: std::collections::VecDeque::new(),
            window_len: ((params.start + params.start_gap).as_millis() / FRAME.as_millis()).max(1) as usize,
        })
    }

    pub fn state(&self) -> VadState {
        self.state
    }

    /// True from [`VadEvent::SpeechStarted`] to [`VadEvent::SpeechEnded`].
    pub fn speaking(&self) -> bool {
        matches!(self.state, VadState::Speaking | VadState::Stopping)
    }

    /// The detector's clock: audio and gaps pushed so far.
    pub fn clock(&self) -> Duration {
        self.clock
    }

    pub fn params(&self) -> VadParams {
        self.params
    }

    /// Feeds samples of any length; decisions are made per whole 20 ms frame.
    pub fn push(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / self.frame_len * self.frame_len;
        if whole == 0 {
            return events;
        }
        let frames: Vec<i16> = self.pending.drain(..whole).collect();
        for frame in frames.chunks_exact(self.frame_len) {
            let (voiced, loud) = self.classify(frame);
            self.step(voiced, loud, &mut events);
        }
        events
    }

    /// Time that passed with no audio at all (no frames from Asterisk): unvoiced, in whole
    /// frames. A partial frame waiting in the buffer is completed with silence first.
    pub fn push_gap(&mut self, gap: Duration) -> Vec<VadEvent> {
        let mut events = Vec::new();
        if !self.pending.is_empty() {
            let missing = self.frame_len - self.pending.len();
            events.extend(self.push(&vec![0; missing]));
        }
        let frames = (gap.as_millis() / FRAME.as_millis()) as u32;
        for _ in 0..frames {
            self.step(false, -120.0, &mut events);
        }
        events
    }

    /// Back to quiet, e.g. after a barge-in was handled. The clock keeps running.
    pub fn reset(&mut self) {
        self.state = VadState::Quiet;
        self.window.clear();
        self.gap = Duration::ZERO;
        self.silence = Duration::ZERO;
        self.paused = false;
    }

    /// Whether a frame is a speech candidate, and its loudness.
    fn classify(&mut self, frame: &[i16]) -> (bool, f32) {
        let loud = loudness_dbfs(frame);
        // libfvad sees every frame: its own noise model adapts to the line.
        let model = self.detector.0.is_voice_segment(frame).unwrap_or(false);
        let candidate = model && loud >= self.params.min_volume_dbfs && loud >= self.floor + self.params.above_floor_db;
        self.floor = if loud < self.floor { loud.max(FLOOR_MIN_DBFS) } else { self.floor + FLOOR_RISE_DB };
        (candidate, loud)
    }

    /// Whether the `start` window holds speech, and where it began.
    fn window_started(&self) -> Option<Duration> {
        let peak = self.window.iter().filter(|(c, _)| *c).map(|(_, l)| *l).fold(f32::MIN, f32::max);
        let counted: Vec<(usize, f32)> = self
            .window
            .iter()
            .enumerate()
            .filter(|(_, (c, l))| *c && *l >= peak - self.params.relative_db)
            .map(|(i, (_, l))| (i, *l))
            .collect();
        if (counted.len() as u32) * (FRAME.as_millis() as u32) < self.params.start.as_millis() as u32 {
            return None;
        }
        let quietest = counted.iter().map(|(_, l)| *l).fold(f32::MAX, f32::min);
        if peak - quietest < self.params.min_modulation_db {
            return None;
        }
        let first = counted.first()?.0;
        let back = (self.window.len() - first) as u32;
        Some(self.clock.saturating_sub(FRAME * back))
    }

    fn step(&mut self, voiced: bool, loud: f32, events: &mut Vec<VadEvent>) {
        self.clock += FRAME;
        let now = self.clock;
        if self.window.len() == self.window_len {
            self.window.pop_front();
        }
        self.window.push_back((voiced, loud));
        if voiced {
            self.last_voiced = now;
        }
        match (self.state, voiced) {
            (VadState::Quiet | VadState::Starting, true) => {
                self.state = VadState::Starting;
                self.gap = Duration::ZERO;
                if let Some(onset) = self.window_started() {
                    self.state = VadState::Speaking;
                    events.push(VadEvent::SpeechStarted { onset, at: now });
                }
            }
            (VadState::Quiet, false) => {}
            (VadState::Starting, false) => {
                self.gap += FRAME;
                if self.gap > self.params.start_gap {
                    self.state = VadState::Quiet;
                }
            }
            (VadState::Speaking, true) => {}
            (VadState::Speaking, false) => {
                self.state = VadState::Stopping;
                self.silence = FRAME;
                self.paused = false;
                self.check_stopped(events);
            }
            (VadState::Stopping, true) => {
                self.state = VadState::Speaking;
                if self.paused {
                    events.push(VadEvent::SpeechResumed { at: now });
                }
                self.paused = false;
            }
            (VadState::Stopping, false) => {
                self.silence += FRAME;
                self.check_stopped(events);
            }
        }
    }

    fn check_stopped(&mut self, events: &mut Vec<VadEvent>) {
        if !self.paused && self.silence >= self.params.short_pause {
            self.paused = true;
            events.push(VadEvent::ShortPause { last_voiced: self.last_voiced, at: self.clock });
        }
        if self.silence >= self.params.stop {
            self.state = VadState::Quiet;
            self.paused = false;
            events.push(VadEvent::SpeechEnded { last_voiced: self.last_voiced, at: self.clock });
        }
    }
}

/// Root-mean-square loudness of `samples`, in dBFS (-120 for digital silence).
pub fn loudness_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return -120.0;
    }
    let energy: f64 = samples.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>() / samples.len() as f64;
    if energy <= 0.0 { -120.0 } else { (10.0 * (energy / (32768.0 * 32768.0)).log10()) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic white noise at `dbfs`.
    fn noise(n: usize, dbfs: f32, seed: &mut u64) -> Vec<i16> {
        let amplitude = 32768.0 * 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let unit = ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
                (unit * amplitude) as i16
            })
            .collect()
    }

    #[test]
    fn parameters_and_rates_are_checked() {
        assert!(VoiceActivity::new(11025, VadParams::default()).is_err());
        assert!(VoiceActivity::new(8000, VadParams { mode: 4, ..VadParams::default() }).is_err());
        let bad = VadParams { short_pause: Duration::from_secs(1), ..VadParams::default() };
        assert!(VoiceActivity::new(8000, bad).is_err());
        assert!(VoiceActivity::new(16000, VadParams::default()).is_ok());
    }

    #[test]
    fn silence_and_hiss_never_start_speech() {
        let mut vad = VoiceActivity::new(8000, VadParams::default()).unwrap();
        assert!(vad.push(&[0; 8000]).is_empty());
        let mut seed = 7;
        assert!(vad.push(&noise(16000, -60.0, &mut seed)).is_empty());
        assert_eq!(vad.clock(), Duration::from_secs(3));
        assert_eq!(vad.state(), VadState::Quiet);
        // Any chunking: an odd-sized push keeps its remainder for the next frame.
        assert!(vad.push(&[0; 37]).is_empty());
        assert_eq!(vad.clock(), Duration::from_secs(3));
        vad.push_gap(Duration::from_millis(100));
        assert_eq!(vad.clock(), Duration::from_millis(3120));
    }

    #[test]
    fn the_state_machine_on_decisions() {
        // Drive the state machine directly with voiced/unvoiced decisions.
        let mut vad = VoiceActivity::new(8000, VadParams::default()).unwrap();
        let mut events = Vec::new();
        // Voiced frames alternate in loudness, as syllables do.
        let mut feed = |vad: &mut VoiceActivity, voiced: bool, frames: u32| {
            for i in 0..frames {
                vad.step(voiced, if i % 2 == 0 { -20.0 } else { -30.0 }, &mut events);
            }
        };
        feed(&mut vad, false, 5); // 100 ms quiet
        feed(&mut vad, true, 4); // 80 ms: too short
        feed(&mut vad, false, 4); // gap > 60 ms: back to quiet
        feed(&mut vad, true, 12); // 240 ms
        feed(&mut vad, false, 2); // a 40 ms gap is tolerated…
        feed(&mut vad, true, 1); // …and 260 ms voiced in all: started
        assert_eq!(vad.state(), VadState::Speaking);
        feed(&mut vad, false, 10); // 200 ms: short pause
        feed(&mut vad, true, 5); // resumed
        feed(&mut vad, false, 25); // 500 ms: ended
        let ms = Duration::from_millis;
        assert_eq!(
            events,
            vec![
                VadEvent::SpeechStarted { onset: ms(260), at: ms(560) },
                VadEvent::ShortPause { last_voiced: ms(560), at: ms(760) },
                VadEvent::SpeechResumed { at: ms(780) },
                VadEvent::ShortPause { last_voiced: ms(860), at: ms(1060) },
                VadEvent::SpeechEnded { last_voiced: ms(860), at: ms(1360) },
            ]
        );
        assert_eq!(vad.state(), VadState::Quiet);
    }

    #[test]
    fn loudness() {
        assert_eq!(loudness_dbfs(&[]), -120.0);
        assert_eq!(loudness_dbfs(&[0; 10]), -120.0);
        let full = loudness_dbfs(&[i16::MAX, i16::MIN]);
        assert!(full.abs() < 0.01, "{full}");
    }
}
