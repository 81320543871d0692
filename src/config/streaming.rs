//! `[stream]`: the streaming media path (calls in Stasis, audio over chan_websocket or
//! AudioSocket). Named `StreamingConfig` so it is not taken for `ari::StreamConfig`, the ARI
//! event WebSocket's settings.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::types::Dur;

/// The streaming media path: calls in Stasis with audio over chan_websocket or AudioSocket,
/// voice activity detection, barge-in and speculative transcription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Silence after the caller's speech that ends the turn.
    pub endpoint_silence: Dur,
    /// Caller speech needed to start a turn, and to interrupt the agent.
    pub barge_in_min_speech: Dur,
    /// Let the caller interrupt the agent (false: the agent always finishes its answer).
    pub barge_in: bool,
    /// Silence after which the utterance so far is transcribed speculatively; `0s` turns it off.
    pub speculative_pause: Dur,
    /// How long the agent waits for the caller to start speaking before it reprompts.
    pub no_input: Dur,
    /// `auto` (chan_websocket when Asterisk has it, else AudioSocket), `websocket` or
    /// `audiosocket`.
    pub transport: String,
    /// Where asterai listens for AudioSocket connections (only with the AudioSocket transport).
    pub audiosocket_listen: SocketAddr,
    /// The audio format asked for: `slin16` (16 kHz, better transcripts), `slin` or `ulaw`
    /// (8 kHz). AudioSocket carries `slin16` or `slin`.
    pub format: String,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            endpoint_silence: Dur::millis(500),
            barge_in_min_speech: Dur::millis(250),
            barge_in: true,
            speculative_pause: Dur::millis(200),
            no_input: Dur::secs(6),
            transport: "auto".into(),
            audiosocket_listen: SocketAddr::from(([127, 0, 0, 1], 4575)),
            format: "slin16".into(),
        }
    }
}

impl StreamingConfig {
    /// The voice activity detector's timing.
    pub fn vad_params(&self) -> crate::speech::vad::VadParams {
        let short_pause =
            if self.speculative_pause.0.is_zero() { self.endpoint_silence.0 } else { self.speculative_pause.0 };
        crate::speech::vad::VadParams {
            start: self.barge_in_min_speech.0,
            stop: self.endpoint_silence.0,
            short_pause,
            ..crate::speech::vad::VadParams::default()
        }
    }

    /// Whether speculative transcription is on.
    pub fn speculative(&self) -> bool {
        !self.speculative_pause.0.is_zero()
    }
}
