//! The voice activity detector on real audio: espeak-ng speech, Asterisk's own prompts,
//! silence, line hiss, and sounds that must not interrupt the agent (clicks, coughs, knocks,
//! breaths), each placed between stretches of silence, at 8 kHz (ulaw/slin) and 16 kHz
//! (slin16).
//!
//! It prints a table (run with `--nocapture` to see it) of false starts, missed onsets, onset
//! latency (from the first loud frame of an utterance to `SpeechStarted`) and endpoint latency
//! (from the last loud frame to `SpeechEnded`), and asserts the counts, never the times.
//!
//! `cargo test --test vad_eval -- --nocapture`

use std::path::Path;
use std::time::Duration;

use asterai::media::Codec;
use asterai::speech::audio;
use asterai::speech::vad::{VadEvent, VadParams, VoiceActivity, loudness_dbfs};

const PROMPTS: &str = "/opt/asterisk-22.10.1/var/lib/asterisk/sounds/en";

/// What a segment is, and what the detector should do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An utterance: must start speech once.
    Speech,
    /// A short vocal backchannel ("mhm"): reported, not asserted (see the README).
    Backchannel,
    /// Noise that must never start speech.
    Noise,
}

struct Segment {
    name: String,
    kind: Kind,
    /// At the evaluation's rate.
    samples: Vec<i16>,
}

/// espeak-ng's speech at `rate`.
fn espeak(text: &str, voice: &str, speed: u32, rate: u32) -> Vec<i16> {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "--stdout", text])
        .output()
        .expect("espeak-ng runs (scripts/test-deps installs it)");
    assert!(out.status.success(), "espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
    resample_wav(&out.stdout, rate)
}

fn resample_wav(bytes: &[u8], rate: u32) -> Vec<i16> {
    // decode_wav gives 8 kHz; for 16 kHz decode at the source rate and resample.
    let reader = hound::WavReader::new(std::io::Cursor::new(fix_header(bytes))).expect("a WAV");
    let spec = reader.spec();
    let samples: Vec<f32> = reader.into_samples::<i16>().map_while(Result::ok).map(|s| s as f32 / 32768.0).collect();
    let out = audio::resample(&samples, spec.sample_rate, rate).unwrap();
    out.iter().map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// espeak-ng's --stdout header has placeholder lengths; set them to what is there.
fn fix_header(bytes: &[u8]) -> Vec<u8> {
    let mut fixed = bytes.to_vec();
    let len = fixed.len() as u32;
    fixed[4..8].copy_from_slice(&(len - 8).to_le_bytes());
    fixed[40..44].copy_from_slice(&(len - 44).to_le_bytes());
    fixed
}

fn prompt(name: &str, rate: u32) -> Option<Vec<i16>> {
    let bytes = std::fs::read(Path::new(PROMPTS).join(format!("{name}.wav"))).ok()?;
    Some(resample_wav(&bytes, rate))
}

struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

fn ms(rate: u32, ms: u32) -> usize {
    (rate * ms / 1000) as usize
}

/// White noise at `dbfs` RMS.
fn hiss(rate: u32, len_ms: u32, dbfs: f32, rng: &mut Rng) -> Vec<i16> {
    let amplitude = 32768.0 * 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
    (0..ms(rate, len_ms)).map(|_| (rng.unit() * amplitude) as i16).collect()
}

/// A noise burst with a fast attack and exponential decay: a cough, a knock, a click.
fn burst(rate: u32, len_ms: u32, peak_dbfs: f32, decay_ms: f32, lowpass: f32, rng: &mut Rng) -> Vec<i16> {
    let amplitude = 32768.0 * 10f32.powf(peak_dbfs / 20.0);
    let mut y = 0.0f32;
    (0..ms(rate, len_ms))
        .map(|i| {
            let t = i as f32 * 1000.0 / rate as f32;
            let envelope = (t / 5.0).min(1.0) * (-t / decay_ms).exp();
            // One-pole low-pass: a cough has most of its energy below 2 kHz.
            y += lowpass * (rng.unit() - y);
            (y * envelope * amplitude / lowpass.sqrt().max(0.3)).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

fn segments(rate: u32) -> (Vec<Segment>, Vec<String>) {
    let mut rng = Rng(12345);
    let mut notes = Vec::new();
    let mut out = Vec::new();
    let speech = |name: &str, samples: Vec<i16>| Segment { name: name.into(), kind: Kind::Speech, samples };
    for (i, (text, voice, speed)) in [
        ("Hello, I would like to know more about your offer.", "en-us", 165),
        ("Yes.", "en-us", 165),
        ("No thank you, please do not call me again.", "en-gb", 150),
        ("Can you tell me how much it costs per month?", "en-us", 190),
        ("Okay", "en-us", 175),
        ("I am not sure, maybe next week would be better for me.", "en-gb", 175),
        ("Stop", "en-us", 165),
        ("What time do you open tomorrow morning?", "en-us", 140),
    ]
    .into_iter()
    .enumerate()
    {
        out.push(speech(&format!("espeak {i} {text:?}"), espeak(text, voice, speed, rate)));
    }
    // On a noisy line: -45 dBFS hiss from a second before to two seconds after the words; the
    // endpoint must still come.
    let words = espeak("I have a question about my bill.", "en-us", 165, rate);
    let mut noisy = hiss(rate, 1000, -45.0, &mut rng);
    let under = hiss(rate, (words.len() * 1000 / rate as usize) as u32, -45.0, &mut rng);
    noisy.extend(words.iter().zip(under.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a.saturating_add(*b)));
    noisy.extend(hiss(rate, 2000, -45.0, &mut rng));
    out.push(speech("espeak over -45 dBFS hiss", noisy));
    let prompts = ["hello-world", "demo-thanks", "vm-goodbye", "agent-pass", "auth-thankyou", "vm-intro", "beep"];
    for name in prompts {
        match prompt(name, rate) {
            // `beep` is a tone, not a voice: it is noise here.
            Some(samples) if name == "beep" => {
                out.push(Segment { name: format!("prompt {name}"), kind: Kind::Noise, samples })
            }
            Some(samples) => out.push(speech(&format!("prompt {name}"), samples)),
            None => notes.push(format!("prompt {name} not found under {PROMPTS}: skipped")),
        }
    }
    for (text, name) in [("mhm", "mhm"), ("uh huh", "uh huh"), ("hmm", "hmm")] {
        out.push(Segment {
            name: format!("backchannel {name:?}"),
            kind: Kind::Backchannel,
            samples: espeak(text, "en-us", 220, rate),
        });
    }
    let noise = |name: &str, samples: Vec<i16>| Segment { name: name.into(), kind: Kind::Noise, samples };
    out.push(noise("click 5 ms", burst(rate, 5, -6.0, 2.0, 1.0, &mut rng)));
    out.push(noise("cough 180 ms", burst(rate, 180, -10.0, 60.0, 0.35, &mut rng)));
    out.push(noise("cough 250 ms", burst(rate, 250, -8.0, 80.0, 0.25, &mut rng)));
    let knocks: Vec<i16> = (0..3)
        .flat_map(|_| {
            let mut k = burst(rate, 40, -8.0, 8.0, 0.6, &mut rng);
            k.extend(vec![0; ms(rate, 120)]);
            k
        })
        .collect();
    out.push(noise("three knocks", knocks));
    out.push(noise("breath 400 ms", burst(rate, 400, -38.0, 400.0, 0.15, &mut rng)));
    out.push(noise("hiss -60 dBFS 3 s", hiss(rate, 3000, -60.0, &mut rng)));
    out.push(noise("hiss -45 dBFS 3 s", hiss(rate, 3000, -45.0, &mut rng)));
    out.push(noise("silence 3 s", vec![0; ms(rate, 3000)]));
    (out, notes)
}

/// Where the loud part of a segment starts and ends (first and last 20 ms frame above -40
/// dBFS), relative to the segment.
fn loud_span(samples: &[i16], rate: u32) -> Option<(Duration, Duration)> {
    let frame = ms(rate, 20);
    let loud: Vec<usize> =
        samples.chunks(frame).enumerate().filter(|(_, f)| loudness_dbfs(f) > -40.0).map(|(i, _)| i).collect();
    let first = *loud.first()?;
    let last = *loud.last()?;
    Some((Duration::from_millis(first as u64 * 20), Duration::from_millis((last as u64 + 1) * 20)))
}

#[derive(Default, Debug)]
struct Figures {
    utterances: usize,
    missed: usize,
    /// SpeechStarted outside any utterance (noise, silence, a second start inside one).
    false_starts: usize,
    backchannels: usize,
    backchannel_starts: usize,
    noises: usize,
    onset_ms: Vec<u64>,
    endpoint_ms: Vec<u64>,
    short_pauses_then_resumed: usize,
}

fn evaluate(rate: u32, params: VadParams) -> (Figures, Vec<String>) {
    evaluate_coded(rate, params, false)
}

/// `ulaw`: every segment goes through G.711 µ-law and back first, as on a ulaw call.
fn evaluate_coded(rate: u32, params: VadParams, ulaw: bool) -> (Figures, Vec<String>) {
    let (mut segments, mut notes) = segments(rate);
    if ulaw {
        for segment in &mut segments {
            segment.samples = Codec::Ulaw.decode(&Codec::Ulaw.encode(&segment.samples));
        }
    }
    let mut vad = VoiceActivity::new(rate, params).unwrap();
    let mut f = Figures::default();
    let gap = vec![0i16; ms(rate, 1500)];
    // Leading silence.
    let leading = vad.push(&gap);
    assert!(leading.is_empty(), "events in leading silence: {leading:?}");
    for segment in &segments {
        let start = vad.clock();
        let span = loud_span(&segment.samples, rate);
        let mut events = Vec::new();
        // Pushed in odd-sized chunks, as frames of other sizes might come.
        for chunk in segment.samples.chunks(ms(rate, 20) + 7) {
            events.extend(vad.push(chunk));
        }
        // Silence after it, partly as a gap without frames (as chan_websocket does).
        events.extend(vad.push(&gap[..gap.len() / 2]));
        events.extend(vad.push_gap(Duration::from_millis(750)));
        let starts: Vec<_> = events
            .iter()
            .filter_map(|e| if let VadEvent::SpeechStarted { at, .. } = e { Some(*at) } else { None })
            .collect();
        let ends: Vec<_> = events
            .iter()
            .filter_map(|e| if let VadEvent::SpeechEnded { at, .. } = e { Some(*at) } else { None })
            .collect();
        let resumed = events.iter().filter(|e| matches!(e, VadEvent::SpeechResumed { .. })).count();
        f.short_pauses_then_resumed += resumed;
        match segment.kind {
            Kind::Speech => {
                f.utterances += 1;
                let Some((loud_start, loud_end)) = span else {
                    notes.push(format!("{}: no loud frame at all", segment.name));
                    continue;
                };
                match starts.first() {
                    None => {
                        f.missed += 1;
                        notes.push(format!("MISSED {}", segment.name));
                    }
                    Some(at) => {
                        f.onset_ms.push(at.saturating_sub(start + loud_start).as_millis() as u64);
                        // Pauses between words may end and restart a turn: extra starts count
                        // as false only if the utterance ended in between for longer than a
                        // pause (they would each be a separate turn).
                        f.false_starts += starts.len() - 1;
                        if starts.len() > 1 {
                            notes.push(format!("{}: split into {} turns", segment.name, starts.len()));
                        }
                    }
                }
                if let Some(end) = ends.last() {
                    f.endpoint_ms.push(end.saturating_sub(start + loud_end).as_millis() as u64);
                }
            }
            Kind::Backchannel => {
                f.backchannels += 1;
                f.backchannel_starts += starts.len();
                if !starts.is_empty() {
                    notes.push(format!("{}: started speech", segment.name));
                }
            }
            Kind::Noise => {
                f.noises += 1;
                f.false_starts += starts.len();
                if !starts.is_empty() {
                    notes.push(format!("FALSE START on {}", segment.name));
                }
            }
        }
    }
    (f, notes)
}

fn summary(label: &str, f: &Figures) -> String {
    let stats = |v: &[u64]| {
        if v.is_empty() {
            return "-".to_owned();
        }
        let mut s = v.to_vec();
        s.sort();
        format!("median {} ms, max {} ms", s[s.len() / 2], s[s.len() - 1])
    };
    format!(
        "{label}: utterances {} (missed {}), noises {} + backchannels {} (false starts {}, backchannel starts {}), onset→SpeechStarted {}, last loud frame→SpeechEnded {}, resumed after a short pause {}",
        f.utterances,
        f.missed,
        f.noises,
        f.backchannels,
        f.false_starts,
        f.backchannel_starts,
        stats(&f.onset_ms),
        stats(&f.endpoint_ms),
        f.short_pauses_then_resumed
    )
}

#[test]
fn detection_figures_on_real_audio() {
    let mut report = Vec::new();
    for (rate, ulaw) in [(8000, true), (8000, false), (16000, false)] {
        let (figures, notes) = evaluate_coded(rate, VadParams::default(), ulaw);
        let codec = if ulaw {
            "ulaw"
        } else if rate == 8000 {
            "slin"
        } else {
            "slin16"
        };
        report.push(summary(&format!("{codec}, defaults"), &figures));
        report.extend(notes.iter().map(|n| format!("    {n}")));
        assert_eq!(figures.missed, 0, "{rate} Hz: every utterance is detected\n{}", report.join("\n"));
        assert_eq!(figures.false_starts, 0, "{rate} Hz: no noise starts speech\n{}", report.join("\n"));
        assert!(figures.utterances >= 8, "{rate} Hz: the espeak-ng utterances at least");
        assert_eq!(figures.endpoint_ms.len(), figures.utterances, "every utterance ends");
    }
    // Other settings, for comparison (reported, not asserted).
    for (label, params) in [
        ("barge_in_min_speech 400ms", VadParams { start: Duration::from_millis(400), ..VadParams::default() }),
        ("barge_in_min_speech 500ms", VadParams { start: Duration::from_millis(500), ..VadParams::default() }),
        (
            "WebRTC mode 1, no loudness rules",
            VadParams {
                mode: 1,
                above_floor_db: -100.0,
                relative_db: 200.0,
                min_modulation_db: 0.0,
                ..VadParams::default()
            },
        ),
    ] {
        for rate in [8000, 16000] {
            let (figures, _) = evaluate(rate, params);
            report.push(summary(&format!("{}, {label}", if rate == 8000 { "slin" } else { "slin16" }), &figures));
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn a_pause_inside_an_utterance_is_a_short_pause_not_an_endpoint() {
    let rate = 16000;
    // espeak-ng pads its output with silence: trimmed, so the pause is the 300 ms put here.
    let trim = |samples: Vec<i16>| {
        let (from, to) = loud_span(&samples, rate).expect("speech");
        let at = |d: Duration| (d.as_millis() as usize * rate as usize / 1000).min(samples.len());
        samples[at(from)..at(to)].to_vec()
    };
    let mut samples = trim(espeak("I would like", "en-us", 165, rate));
    samples.extend(vec![0; ms(rate, 300)]);
    samples.extend(trim(espeak("to cancel my order", "en-us", 165, rate)));
    let mut vad = VoiceActivity::new(rate, VadParams::default()).unwrap();
    let mut events = vad.push(&vec![0; ms(rate, 500)]);
    events.extend(vad.push(&samples));
    events.extend(vad.push_gap(Duration::from_secs(1)));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            VadEvent::SpeechStarted { .. } => "started",
            VadEvent::ShortPause { .. } => "pause",
            VadEvent::SpeechResumed { .. } => "resumed",
            VadEvent::SpeechEnded { .. } => "ended",
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"ended"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "started").count(), 1, "one turn: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "ended").count(), 1, "one turn: {kinds:?}");
    assert!(kinds.contains(&"pause") && kinds.contains(&"resumed"), "the 300 ms pause: {kinds:?}");
}
