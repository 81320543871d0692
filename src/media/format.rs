//! The audio formats of a streaming call and their framing: `ulaw` (G.711 µ-law, 8 kHz, one byte
//! a sample), `slin` (8 kHz 16-bit little-endian linear) and `slin16` (16 kHz). Everything past
//! the transport works on 16-bit samples at the format's rate; [`Codec::encode`] and
//! [`Codec::decode`] turn them into the bytes on the wire and back.

use std::fmt;

/// An Asterisk format name asterai streams in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, 8 kHz: 160 bytes per 20 ms.
    Ulaw,
    /// Signed linear 16-bit, 8 kHz: 320 bytes per 20 ms.
    Slin,
    /// Signed linear 16-bit, 16 kHz: 640 bytes per 20 ms (wideband: better transcripts).
    Slin16,
}

impl Codec {
    /// Every codec, in the order asterai prefers them.
    pub const ALL: [Codec; 3] = [Codec::Slin16, Codec::Slin, Codec::Ulaw];

    /// The name Asterisk uses (`format=` of externalMedia, MEDIA_START's `format`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Ulaw => "ulaw",
            Codec::Slin => "slin",
            Codec::Slin16 => "slin16",
        }
    }

    /// Parses an Asterisk format name.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ulaw" | "mulaw" | "pcmu" => Some(Codec::Ulaw),
            "slin" | "slin8" => Some(Codec::Slin),
            "slin16" => Some(Codec::Slin16),
            _ => None,
        }
    }

    /// Samples per second.
    pub fn rate(self) -> u32 {
        match self {
            Codec::Ulaw | Codec::Slin => 8000,
            Codec::Slin16 => 16000,
        }
    }

    /// Bytes per sample on the wire.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Codec::Ulaw => 1,
            Codec::Slin | Codec::Slin16 => 2,
        }
    }

    /// Samples in `ptime_ms` milliseconds.
    pub fn samples_per(self, ptime_ms: u32) -> usize {
        (self.rate() as usize * ptime_ms as usize) / 1000
    }

    /// Bytes of one frame of `ptime_ms` milliseconds (Asterisk's `optimal_frame_size` for 20 ms).
    pub fn frame_bytes(self, ptime_ms: u32) -> usize {
        self.samples_per(ptime_ms) * self.bytes_per_sample()
    }

    /// The AudioSocket message kind that carries this format, when AudioSocket can (µ-law
    /// cannot: chan_audiosocket sends only signed linear).
    pub fn audiosocket_kind(self) -> Option<u8> {
        match self {
            Codec::Slin => Some(0x10),
            Codec::Slin16 => Some(0x12),
            Codec::Ulaw => None,
        }
    }

    /// The format of an AudioSocket audio kind asterai accepts.
    pub fn from_audiosocket_kind(kind: u8) -> Option<Codec> {
        match kind {
            0x10 => Some(Codec::Slin),
            0x12 => Some(Codec::Slin16),
            _ => None,
        }
    }

    /// Wire bytes into samples. An odd trailing byte of a linear format is ignored.
    pub fn decode(self, bytes: &[u8]) -> Vec<i16> {
        match self {
            Codec::Ulaw => bytes.iter().map(|b| ulaw_decode(*b)).collect(),
            Codec::Slin | Codec::Slin16 => bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(),
        }
    }

    /// Samples into wire bytes.
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        let mut out = Vec::with_capacity(samples.len() * self.bytes_per_sample());
        self.encode_into(samples, &mut out);
        out
    }

    /// Samples appended to `out` as wire bytes.
    pub fn encode_into(self, samples: &[i16], out: &mut Vec<u8>) {
        match self {
            Codec::Ulaw => out.extend(samples.iter().map(|s| ulaw_encode(*s))),
            Codec::Slin | Codec::Slin16 => samples.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes())),
        }
    }

    /// The byte that is silence (µ-law's zero is 0xff).
    pub fn silence_byte(self) -> u8 {
        match self {
            Codec::Ulaw => 0xff,
            Codec::Slin | Codec::Slin16 => 0,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a session streams: the codec and the frame length Asterisk works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFormat {
    pub codec: Codec,
    /// Milliseconds per frame (Asterisk's `ptime`, 20).
    pub ptime_ms: u32,
    /// Bytes per frame on the wire (`optimal_frame_size`).
    pub frame_bytes: usize,
}

impl MediaFormat {
    /// `codec` in 20 ms frames.
    pub fn new(codec: Codec) -> MediaFormat {
        MediaFormat { codec, ptime_ms: 20, frame_bytes: codec.frame_bytes(20) }
    }

    /// Samples per frame.
    pub fn frame_samples(&self) -> usize {
        self.frame_bytes / self.codec.bytes_per_sample()
    }

    /// Samples per second.
    pub fn rate(&self) -> u32 {
        self.codec.rate()
    }

    /// One frame's duration.
    pub fn frame_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ptime_ms as u64)
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// G.711 µ-law encoding of one sample (the reference algorithm, as Asterisk's own tables).
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(ULAW_CLIP) + ULAW_BIAS;
    // The segment is the position of the highest set bit above bit 7.
    let exponent = (31 - (pcm as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 µ-law decoding of one byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let byte = !byte;
    let sign = byte & 0x80;
    let exponent = ((byte >> 4) & 0x07) as i32;
    let mantissa = (byte & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_match_asterisk() {
        // optimal_frame_size in the captures: ulaw 160, slin16 640; slin from the formula.
        assert_eq!(Codec::Ulaw.frame_bytes(20), 160);
        assert_eq!(Codec::Slin16.frame_bytes(20), 640);
        assert_eq!(Codec::Slin.frame_bytes(20), 320);
        assert_eq!(MediaFormat::new(Codec::Slin16).frame_samples(), 320);
        assert_eq!(Codec::from_name("SLIN16"), Some(Codec::Slin16));
        assert_eq!(Codec::from_name("opus"), None);
        assert_eq!(Codec::Ulaw.audiosocket_kind(), None);
        assert_eq!(Codec::from_audiosocket_kind(0x12), Some(Codec::Slin16));
    }

    #[test]
    fn ulaw_round_trips_within_its_quantization() {
        // Silence is 0xff, as in the captures' first frames.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x7f), 0);
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let back = ulaw_decode(ulaw_encode(s)) as i32;
            // µ-law's step grows with the magnitude: the error stays within 1/16 of it (and 16
            // near zero).
            let tolerance = ((s as i32).abs() / 16).max(16);
            assert!((back - s as i32).abs() <= tolerance, "{s} -> {back}");
        }
        // Every code decodes and re-encodes to itself (except the two zeros).
        for b in 0u8..=255 {
            let s = ulaw_decode(b);
            if s != 0 {
                assert_eq!(ulaw_encode(s), b, "{b:#x}");
            }
        }
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
    }

    #[test]
    fn linear_codecs_are_little_endian() {
        let bytes = Codec::Slin16.encode(&[1, -2, 0x1234]);
        assert_eq!(bytes, [1, 0, 0xfe, 0xff, 0x34, 0x12]);
        assert_eq!(Codec::Slin.decode(&bytes), vec![1, -2, 0x1234]);
        assert_eq!(Codec::Slin.decode(&[1, 0, 9]), vec![1], "an odd byte is dropped");
    }
}
