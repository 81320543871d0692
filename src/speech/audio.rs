//! Audio in the one format Asterisk records and plays natively: WAV, 8 kHz, mono, 16-bit.
//!
//! Providers return WAV at other rates (OpenAI 24 kHz, espeak-ng 22.05 kHz), several channels,
//! other sample formats, or raw PCM. Everything is decoded with hound, mixed down to mono and
//! resampled with a band-limited (windowed-sinc) filter, so 24 kHz speech does not alias into the
//! telephone band. Streaming WAV writers (espeak-ng, several TTS servers) put a placeholder length
//! in the header; the header is corrected to the bytes actually received before decoding.

use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Asterisk's native rate for WAV.
pub const RATE: u32 = 8000;

/// Why audio could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("not a WAV file: {0}")]
    NotWav(String),
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// Decodes WAV bytes of any rate, channel count and PCM or float format into 8 kHz mono 16-bit.
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<i16>, AudioError> {
    let fixed = repair_lengths(bytes)?;
    let mut reader =
        hound::WavReader::new(Cursor::new(fixed.as_ref())).map_err(|e| AudioError::NotWav(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.channels > MAX_CHANNELS {
        return Err(AudioError::Unsupported(format!("{} channels; expected 1 to {MAX_CHANNELS}", spec.channels)));
    }
    check_rate(spec.sample_rate)?;
    // Mono 16-bit PCM (Asterisk's recordings, most TTS answers) is read straight from the data
    // chunk: several times faster than sample-by-sample decoding, and on the turn's critical path.
    if spec.channels == 1 && spec.bits_per_sample == 16 && spec.sample_format == hound::SampleFormat::Int {
        let (start, len) = data_chunk(&fixed).ok_or_else(|| AudioError::NotWav("no data chunk".into()))?;
        return decode_pcm_s16le(&fixed[start..start + len], spec.sample_rate);
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().map_while(Result::ok).collect(),
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader.samples::<i32>().map_while(Result::ok).map(|s| s as f32 * scale).collect()
        }
        (format, bits) => return Err(AudioError::Unsupported(format!("{bits}-bit {format:?} samples"))),
    };
    let mono = mixdown(&interleaved, spec.channels as usize);
    Ok(to_i16(&resample(&mono, spec.sample_rate, RATE)?))
}

/// The input rates accepted: Asterisk's own range, 8 kHz (the telephone) to 192 kHz (slin192).
/// A provider that answers "1 Hz" would otherwise have the resampler write 8,000 samples for
/// each one it sent.
pub const RATES: std::ops::RangeInclusive<u32> = 8000..=192_000;
/// Channels accepted in a WAV (7.1 is 8).
const MAX_CHANNELS: u16 = 8;

fn check_rate(rate: u32) -> Result<(), AudioError> {
    if RATES.contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::Unsupported(format!(
            "a sample rate of {rate} Hz; expected {} to {} Hz",
            RATES.start(),
            RATES.end()
        )))
    }
}

/// Decodes raw little-endian 16-bit mono PCM at `rate` into 8 kHz.
pub fn decode_pcm_s16le(bytes: &[u8], rate: u32) -> Result<Vec<i16>, AudioError> {
    check_rate(rate)?;
    let samples = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]));
    if rate == RATE {
        return Ok(samples.collect());
    }
    let samples: Vec<f32> = samples.map(|s| s as f32 / 32768.0).collect();
    Ok(to_i16(&resample(&samples, rate, RATE)?))
}

/// Decodes what a provider returned: WAV when it starts with `RIFF`, otherwise raw 16-bit PCM
/// at `pcm_rate`.
pub fn decode_any(bytes: &[u8], pcm_rate: u32) -> Result<Vec<i16>, AudioError> {
    if bytes.starts_with(b"RIFF") { decode_wav(bytes) } else { decode_pcm_s16le(bytes, pcm_rate) }
}

/// Encodes 8 kHz mono 16-bit samples as a WAV file.
pub fn encode_wav(samples: &[i16]) -> Vec<u8> {
    encode_wav_at(samples, RATE)
}

/// Reads a recording Asterisk wrote (`RECORD FILE … wav`).
pub fn read_recording(path: &Path) -> Result<Vec<i16>, AudioError> {
    let bytes = std::fs::read(path).map_err(|error| AudioError::Io { path: path.display().to_string(), error })?;
    decode_wav(&bytes)
}

/// Milliseconds of audio in `samples` at 8 kHz.
pub fn duration_ms(samples: &[i16]) -> u64 {
    samples.len() as u64 * 1000 / RATE as u64
}

/// Loudness of the loudest 20 ms window, in dBFS. Speech is well above -40 dBFS; line noise and
/// silence are below -50.
pub fn peak_window_dbfs(samples: &[i16]) -> f32 {
    let window = (RATE / 50) as usize;
    let loudest = samples
        .chunks(window)
        .map(|chunk| {
            let energy: f64 = chunk.iter().map(|s| (*s as f64) * (*s as f64)).sum();
            (energy / chunk.len() as f64).sqrt()
        })
        .fold(0.0f64, f64::max);
    if loudest <= 0.0 { -120.0 } else { (20.0 * (loudest / 32768.0).log10()) as f32 }
}

/// True when a recording holds no speech: too short, or never louder than `threshold_dbfs`.
pub fn is_silence(samples: &[i16], threshold_dbfs: f32) -> bool {
    duration_ms(samples) < 150 || peak_window_dbfs(samples) < threshold_dbfs
}

/// True when `bytes` is already what providers and Asterisk expect: a WAV of 8 kHz mono 16-bit
/// PCM whose header lengths match its bytes (a recording Asterisk finished). It can be passed on
/// as it is, without decoding and encoding again.
pub fn is_native_wav(bytes: &[u8]) -> bool {
    if !matches!(repair_lengths(bytes), Ok(std::borrow::Cow::Borrowed(_))) {
        return false;
    }
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if &bytes[at..at + 4] == b"fmt " {
            let Some(fmt) = bytes.get(at + 8..at + 8 + 16) else { return false };
            let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
            let rate = u32::from_le_bytes(fmt[4..8].try_into().expect("4 bytes"));
            return u16_at(0) == 1 && u16_at(2) == 1 && rate == RATE && u16_at(14) == 16;
        }
        at = at + 8 + size + (size & 1);
    }
    false
}

/// Sets the RIFF and `data` lengths to what the bytes hold when a streaming writer left a
/// placeholder (or a truncated file claims more than it has).
fn repair_lengths(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, AudioError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(AudioError::NotWav("missing RIFF/WAVE header".into()));
    }
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let body = at + 8;
        if id == b"data" {
            let available = bytes.len() - body;
            // Whole samples only; a 16-bit stream cut mid-sample keeps its complete samples.
            let fits = size <= available;
            let riff_ok = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize == bytes.len() - 8;
            if fits && riff_ok {
                return Ok(std::borrow::Cow::Borrowed(bytes));
            }
            let mut fixed = bytes.to_vec();
            let data_len = size.min(available) & !1;
            fixed.truncate(body + data_len);
            fixed[at + 4..at + 8].copy_from_slice(&(data_len as u32).to_le_bytes());
            let riff_len = (fixed.len() - 8) as u32;
            fixed[4..8].copy_from_slice(&riff_len.to_le_bytes());
            return Ok(std::borrow::Cow::Owned(fixed));
        }
        at = body + size + (size & 1);
    }
    Err(AudioError::NotWav("no data chunk".into()))
}

/// Where the `data` chunk's bytes are: (offset, length), after [`repair_lengths`].
fn data_chunk(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        if &bytes[at..at + 4] == b"data" {
            return Some((at + 8, size.min(bytes.len() - at - 8) & !1));
        }
        at = at + 8 + size + (size & 1);
    }
    None
}

fn mixdown(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect()
}

fn to_i16(samples: &[f32]) -> Vec<i16> {
    // Rounds half away from zero; `as` saturates what lies beyond full scale.
    samples.iter().map(|s| (s * 32767.0 + 0.5f32.copysign(*s)) as i16).collect()
}

/// Zero crossings of the sinc on each side of a tap: the filter's length and sharpness.
const ZERO_CROSSINGS: f64 = 7.0;

/// A polyphase filter bank for one rate pair: `phases[p]` holds the taps for output samples that
/// fall at phase `p` between input samples. Built once per pair and cached.
struct Bank {
    /// Output samples per cycle (L) and input samples per cycle (M): to/from = L/M.
    up: usize,
    down: usize,
    /// The first input sample each phase's taps start from, relative to the output's position.
    offset: isize,
    phases: Vec<Vec<f32>>,
}

impl Bank {
    /// Its size, in taps.
    fn taps(&self) -> usize {
        self.phases.iter().map(Vec::len).sum()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Bank {
    fn new(from: u32, to: u32) -> Bank {
        let g = gcd(from as usize, to as usize);
        let (up, down) = (to as usize / g, from as usize / g);
        let ratio = up as f64 / down as f64;
        // Below 1 when decimating: the filter narrows to the output's Nyquist frequency.
        let cutoff = ratio.min(1.0) * 0.95;
        let half_width = ZERO_CROSSINGS / cutoff;
        let span = half_width.ceil() as isize;
        let phases = (0..up)
            .map(|phase| {
                // The output sample sits `frac` input samples after input `floor`.
                let frac = (phase * down % up) as f64 / up as f64;
                let mut taps: Vec<f32> = (-span + 1..=span)
                    .map(|k| {
                        let x = frac - k as f64;
                        if x.abs() >= half_width {
                            return 0.0;
                        }
                        let sinc = if x == 0.0 {
                            1.0
                        } else {
                            (std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * cutoff * x)
                        };
                        let w = x / half_width;
                        let window = 0.42
                            + 0.5 * (std::f64::consts::PI * w).cos()
                            + 0.08 * (2.0 * std::f64::consts::PI * w).cos();
                        (sinc * window) as f32
                    })
                    .collect();
                let sum: f32 = taps.iter().sum();
                if sum.abs() > 1e-6 {
                    taps.iter_mut().for_each(|t| *t /= sum);
                }
                taps
            })
            .collect();
        Bank { up, down, offset: -span + 1, phases }
    }
}

/// A dot product in eight independent lanes, which the compiler turns into SIMD (a plain
/// floating-point sum is a serial chain it may not reorder).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Filter banks kept at most (real providers use two or three rates).
const BANKS_KEPT: usize = 8;
/// Taps kept in all cached banks together, at most (4 bytes each: 16 MiB). A bank for an odd
/// rate pair (8000 phases for 44,101 Hz) is built, used and dropped rather than cached.
const TAPS_KEPT: usize = 4 << 20;

/// The filter banks built so far, by (from, to) rate, in the order they were last used.
#[derive(Default)]
struct Banks {
    recent: Vec<((u32, u32), Arc<Bank>)>,
}

impl Banks {
    fn get(&mut self, from: u32, to: u32) -> Arc<Bank> {
        if let Some(at) = self.recent.iter().position(|(key, _)| *key == (from, to)) {
            let entry = self.recent.remove(at);
            let bank = entry.1.clone();
            self.recent.push(entry);
            return bank;
        }
        let bank = Arc::new(Bank::new(from, to));
        if bank.taps() <= TAPS_KEPT {
            self.recent.push(((from, to), bank.clone()));
            while self.recent.len() > BANKS_KEPT || self.recent.iter().map(|(_, b)| b.taps()).sum::<usize>() > TAPS_KEPT
            {
                self.recent.remove(0);
            }
        }
        bank
    }
}

static BANKS: OnceLock<Mutex<Banks>> = OnceLock::new();

/// Banks cached, and their taps.
#[cfg(test)]
fn cached_banks() -> (usize, usize) {
    let banks = BANKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    (banks.recent.len(), banks.recent.iter().map(|(_, b)| b.taps()).sum())
}

/// Band-limited resampling: a Blackman-windowed sinc, cut off at the lower Nyquist frequency,
/// applied through a cached polyphase filter bank (no trigonometry per sample). Both rates
/// must be within [`RATES`].
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    check_rate(from)?;
    check_rate(to)?;
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let bank = BANKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner()).get(from, to);
    let out_len = input.len() * bank.up / bank.down;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let position = n * bank.down;
        let (floor, phase) = (position / bank.up, (n * bank.down) % bank.up);
        let taps = &bank.phases[phase];
        let start = floor as isize + bank.offset;
        let acc: f32 = if start >= 0 && start as usize + taps.len() <= input.len() {
            dot(&input[start as usize..start as usize + taps.len()], taps)
        } else {
            // At the edges, taps outside the input see silence.
            taps.iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let at = start + i as isize;
                    (at >= 0 && (at as usize) < input.len()).then(|| input[at as usize] * t)
                })
                .sum()
        };
        out.push(acc);
    }
    Ok(out)
}

/// Encodes mono 16-bit samples at `rate` as a WAV file (the streaming path's utterances and a
/// barging supervisor's are 8 or 16 kHz).
pub fn encode_wav_at(samples: &[i16], rate: u32) -> Vec<u8> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut out = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    {
        let mut writer = hound::WavWriter::new(&mut out, spec).expect("writing a WAV header to memory");
        let mut fast = writer.get_i16_writer(samples.len() as u32);
        for sample in samples {
            fast.write_sample(*sample);
        }
        fast.flush().expect("writing samples to memory");
        writer.finalize().expect("finishing a WAV in memory");
    }
    out.into_inner()
}

/// [`resample`] over a stream: audio arrives in chunks of any size (a provider's network reads)
/// and leaves as soon as the filter has the input it needs. The filter state (the last input
/// samples) is kept across chunks, so the output equals resampling the whole buffer at once,
/// sample for sample: the same taps, summed in the same order.
pub struct StreamResampler {
    bank: Option<Arc<Bank>>,
    /// Input kept: from absolute index `base`, the samples the next outputs still need.
    kept: Vec<f32>,
    base: usize,
    /// Input samples seen in all.
    seen: usize,
    /// The next output's index.
    next: usize,
}

impl StreamResampler {
    /// From `from` Hz to `to` Hz, both within [`RATES`].
    pub fn new(from: u32, to: u32) -> Result<StreamResampler, AudioError> {
        check_rate(from)?;
        check_rate(to)?;
        let bank = (from != to)
            .then(|| BANKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner()).get(from, to));
        Ok(StreamResampler { bank, kept: Vec::new(), base: 0, seen: 0, next: 0 })
    }

    /// Feeds a chunk; returns every output sample it completes.
    pub fn push(&mut self, chunk: &[f32]) -> Vec<f32> {
        let Some(bank) = self.bank.clone() else { return chunk.to_vec() };
        self.kept.extend_from_slice(chunk);
        self.seen += chunk.len();
        let mut out = Vec::with_capacity(chunk.len() * bank.up / bank.down + 1);
        loop {
            let (start, taps) = self.window(&bank);
            if start + taps.len() as isize > self.seen as isize {
                break;
            }
            out.push(self.output(start, taps));
            self.next += 1;
        }
        self.trim(&bank);
        out
    }

    /// The end of the stream: the outputs that need input past its end (which is silence), up
    /// to the length whole-buffer resampling gives.
    pub fn finish(&mut self) -> Vec<f32> {
        let Some(bank) = self.bank.clone() else { return Vec::new() };
        let total = self.seen * bank.up / bank.down;
        let mut out = Vec::with_capacity(total.saturating_sub(self.next));
        while self.next < total {
            let (start, taps) = self.window(&bank);
            out.push(self.output(start, taps));
            self.next += 1;
        }
        out
    }

    /// [`StreamResampler::push`] for 16-bit samples (scaled as [`decode_pcm_s16le`] does).
    pub fn push_i16(&mut self, chunk: &[i16]) -> Vec<i16> {
        if self.bank.is_none() {
            return chunk.to_vec();
        }
        let input: Vec<f32> = chunk.iter().map(|s| *s as f32 / 32768.0).collect();
        to_i16(&self.push(&input))
    }

    /// [`StreamResampler::finish`] for 16-bit samples.
    pub fn finish_i16(&mut self) -> Vec<i16> {
        to_i16(&self.finish())
    }

    /// The first input index and the taps of the next output.
    fn window<'b>(&self, bank: &'b Bank) -> (isize, &'b [f32]) {
        let position = self.next * bank.down;
        let (floor, phase) = (position / bank.up, position % bank.up);
        (floor as isize + bank.offset, &bank.phases[phase])
    }

    fn output(&self, start: isize, taps: &[f32]) -> f32 {
        let end = start + taps.len() as isize;
        if start >= 0 && end as usize <= self.seen {
            let from = start as usize - self.base;
            dot(&self.kept[from..from + taps.len()], taps)
        } else {
            // At the edges, taps outside the input see silence, exactly as in `resample`.
            taps.iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let at = start + i as isize;
                    (at >= 0 && (at as usize) < self.seen).then(|| self.kept[at as usize - self.base] * t)
                })
                .sum()
        }
    }

    /// Drops the input no later output will read.
    fn trim(&mut self, bank: &Bank) {
        let (start, _) = self.window(bank);
        let needed = start.max(0) as usize;
        if needed > self.base {
            let drop = (needed - self.base).min(self.kept.len());
            self.kept.drain(..drop);
            self.base += drop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, ms: u32, amplitude: f32) -> Vec<f32> {
        let n = rate * ms / 1000;
        (0..n).map(|i| amplitude * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()).collect()
    }

    fn wav(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        for s in samples {
            for _ in 0..channels {
                writer.write_sample((s * 32767.0) as i16).unwrap();
            }
        }
        writer.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_the_recording_asterisk_wrote() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/asterisk/audio/recorded-by-asterisk.wav");
        let samples = read_recording(&path).unwrap();
        // endpos=9612 in the capture that wrote it.
        assert_eq!(samples.len(), 9612);
        assert_eq!(duration_ms(&samples), 1201);
    }

    #[test]
    fn resamples_24k_stereo_to_8k_mono() {
        let samples = tone(24000, 440.0, 1000, 0.5);
        let decoded = decode_wav(&wav(24000, 2, &samples)).unwrap();
        assert_eq!(decoded.len(), 8000);
        // The tone survives at about the same level.
        let peak = decoded[100..7900].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((15000..17500).contains(&peak), "{peak}");
        // 22.05 kHz (espeak-ng) and 16 kHz come down too.
        assert_eq!(decode_wav(&wav(22050, 1, &tone(22050, 440.0, 1000, 0.5))).unwrap().len(), 8000);
        assert_eq!(decode_wav(&wav(16000, 1, &tone(16000, 440.0, 1000, 0.5))).unwrap().len(), 8000);
        let up = resample(&tone(8000, 440.0, 100, 0.5), 8000, 16000).unwrap();
        assert_eq!(up.len(), 1600);
    }

    #[test]
    fn frequencies_above_4k_are_filtered_out() {
        let decoded = decode_wav(&wav(24000, 1, &tone(24000, 6000.0, 500, 0.8))).unwrap();
        let peak = decoded[200..3800].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak < 100, "6 kHz must not alias into the 8 kHz stream (below -48 dB): peak {peak}");
        // Speech up to 3.4 kHz, the telephone band, passes within 3 dB.
        let band = decode_wav(&wav(24000, 1, &tone(24000, 3400.0, 500, 0.5))).unwrap();
        let peak = band[200..3800].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((11600..17500).contains(&peak), "3.4 kHz passes: peak {peak}");
    }

    #[test]
    fn streaming_headers_with_placeholder_lengths_are_repaired() {
        let mut bytes = wav(22050, 1, &tone(22050, 300.0, 200, 0.5));
        bytes[4..8].copy_from_slice(&0x7fff_f024u32.to_le_bytes());
        bytes[40..44].copy_from_slice(&0x7fff_f000u32.to_le_bytes());
        let decoded = decode_wav(&bytes).unwrap();
        assert!((1590..=1600).contains(&decoded.len()), "{}", decoded.len());
    }

    #[test]
    fn raw_pcm_and_encoding() {
        let pcm: Vec<u8> =
            tone(16000, 300.0, 100, 0.3).iter().flat_map(|s| ((s * 32767.0) as i16).to_le_bytes()).collect();
        let decoded = decode_any(&pcm, 16000).unwrap();
        assert!(decode_any(&pcm, 1).unwrap_err().to_string().contains("1 Hz"), "raw PCM at an absurd rate");
        assert_eq!(decoded.len(), 800);
        let encoded = encode_wav(&decoded);
        assert_eq!(&encoded[..4], b"RIFF");
        assert_eq!(encoded.len(), 44 + 1600);
        assert_eq!(decode_wav(&encoded).unwrap(), decoded);
        assert!(decode_wav(b"not a wav at all").is_err());
    }

    #[test]
    fn the_fast_path_matches_the_general_one() {
        // 16-bit mono takes the direct path; the same audio as 24-bit takes hound's. Both land
        // on the same samples, give or take rounding.
        let samples = tone(24000, 440.0, 300, 0.5);
        let fast = decode_wav(&wav(24000, 1, &samples)).unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 24000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        for s in &samples {
            writer.write_sample(((s * 32767.0) as i32) << 8).unwrap();
        }
        writer.finalize().unwrap();
        let general = decode_wav(&out.into_inner()).unwrap();
        assert_eq!(fast.len(), general.len());
        assert!(fast.iter().zip(&general).all(|(a, b)| (a - b).abs() <= 1));
        // Full scale stays full scale, without wrapping.
        assert_eq!(to_i16(&[1.5, -1.5, 1.0, -1.0, 0.0]), vec![32767, -32768, 32767, -32767, 0]);
        let dotted = dot(&[1.0; 19], &[2.0; 19]);
        assert_eq!(dotted, 38.0);
    }

    #[test]
    fn native_recordings_are_recognized() {
        let asterisk = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/asterisk/audio/recorded-by-asterisk.wav"),
        )
        .unwrap();
        assert!(is_native_wav(&asterisk), "Asterisk's own recording passes as it is");
        assert!(is_native_wav(&encode_wav(&[0i16; 800])));
        assert!(!is_native_wav(&wav(24000, 1, &tone(24000, 440.0, 100, 0.5))), "another rate");
        let mut unfinished = encode_wav(&[0i16; 800]);
        unfinished[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!is_native_wav(&unfinished), "a placeholder length");
        assert!(!is_native_wav(b"RIFF"));
    }

    #[test]
    fn absurd_rates_are_refused_and_the_filter_cache_stays_bounded() {
        // A provider answering "1 Hz" (or 4 GHz) is refused, never upsampled 8000-fold.
        for rate in [1, 7999, 192_001, 1_000_000_000] {
            let err = decode_wav(&wav(rate, 1, &[0.0; 16])).unwrap_err().to_string();
            assert!(err.contains(&format!("{rate} Hz")) && err.contains("8000 to 192000"), "{rate}: {err}");
            assert!(resample(&[0.0; 16], rate, RATE).is_err());
        }
        assert!(decode_wav(&wav(16000, 1, &[0.0; 16])).is_ok());
        // Many odd rates in a row: every one is converted, the cache keeps a bounded few.
        for rate in 44_090..44_110 {
            let out = resample(&tone(rate, 300.0, 20, 0.5), rate, RATE).unwrap().len();
            assert!((159..=160).contains(&out), "{rate}: {out}");
        }
        let banks = cached_banks();
        assert!(banks.0 <= BANKS_KEPT && banks.1 <= TAPS_KEPT, "{banks:?}");
    }

    #[test]
    fn streaming_resampling_equals_whole_buffer_resampling() {
        let mut seed = 1u64;
        let mut noise = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for (from, to) in [(24000, 16000), (24000, 8000), (22050, 16000), (22050, 8000), (16000, 8000), (8000, 16000)] {
            let input: Vec<f32> =
                (0..from as usize / 3).map(|i| 0.3 * noise() + 0.3 * (i as f32 * 0.05).sin()).collect();
            let whole = resample(&input, from, to).unwrap();
            for chunk in [1usize, 7, 160, 441, 4096] {
                let mut stream = StreamResampler::new(from, to).unwrap();
                let mut out = Vec::new();
                for piece in input.chunks(chunk) {
                    out.extend(stream.push(piece));
                }
                out.extend(stream.finish());
                assert_eq!(out.len(), whole.len(), "{from}->{to} in chunks of {chunk}");
                let worst = out.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(worst <= 1e-6, "{from}->{to} in chunks of {chunk}: off by {worst}");
            }
        }
        // The filter keeps only what it needs, not the whole stream.
        let mut stream = StreamResampler::new(24000, 8000).unwrap();
        for _ in 0..100 {
            stream.push(&[0.1; 2400]);
        }
        assert!(stream.kept.len() < 200, "{}", stream.kept.len());
        // 16-bit in and out, and the same rate on both sides.
        let mut same = StreamResampler::new(8000, 8000).unwrap();
        assert_eq!(same.push_i16(&[1, 2, 3]), vec![1, 2, 3]);
        assert!(same.finish_i16().is_empty());
        assert!(StreamResampler::new(1, 8000).is_err());
        let wav = encode_wav_at(&[5; 1600], 16000);
        assert_eq!(decode_wav(&wav).unwrap().len(), 800, "16 kHz WAV, read back at 8 kHz");
    }

    #[test]
    fn silence_detection() {
        assert!(is_silence(&[0; 8000], -45.0));
        assert!(is_silence(&[20; 8000], -45.0), "line hiss");
        let speech = to_i16(&tone(8000, 200.0, 500, 0.3));
        assert!(!is_silence(&speech, -45.0));
        assert!(is_silence(&speech[..800], -45.0), "100 ms is too short to be an utterance");
    }
}
