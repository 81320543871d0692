//! Whole-call recording, with consent.
//!
//! A call is recorded when its agent's `[recording] enabled = true`, or its campaign's
//! `recording.enabled` (the campaign's keys override the agent's). Off by default.
//!
//! * **Consent.** The announcement (`consent_announcement`, a template like the greeting) is
//!   played first; the recording starts after it, so the file begins after the caller was told.
//!   When the contact's region (its `state`, else its number's area code, as the calling rules
//!   resolve it) is one of the organization's `all_party_consent_regions` (see
//!   [`crate::dialer::compliance`]), the announcement is mandatory: without one (or when it
//!   could not be played) the call is not recorded, the log says why, the channel gets
//!   `ASTERAI_RECORDING=refused` and a row `refused` with the reason is stored. Whether the
//!   announcement was played is stored on the recording's row.
//! * **FastAGI path.** `EXEC MixMonitor <media.call_recordings_dir>/<name>.wav` on the caller's
//!   channel (both directions mixed): Asterisk writes the file where asterai reads it. It stops
//!   when the channel hangs up, or with `StopMixMonitor` when the call goes back to the
//!   dialplan; asterai then waits for Asterisk to finish the WAV header ([`collect`]).
//! * **Streaming path.** `POST /bridges/{id}/record` on the call's mixing bridge (the caller and
//!   the agent's audio). At the end: `POST /recordings/live/{name}/stop`, then
//!   `GET /recordings/stored/{name}/file` into `media.call_recordings_dir` and
//!   `DELETE /recordings/stored/{name}`: the file moves to asterai's disk over ARI, so it works
//!   with Asterisk on another host and leaves nothing in Asterisk's spool.
//!
//! File names are asterai's own (`<call id made safe>-<uuid>`), never caller text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::RecordingSpec;
use crate::store::{RecordingStatus, RecordingVia};

/// How long asterai waits for Asterisk to finish a MixMonitor file after the call.
pub const FINISH_WAIT: Duration = Duration::from_secs(60);

/// What the call decided about recording, before it answered.
#[derive(Debug, Clone, Default)]
pub struct RecordingPlan {
    /// The campaign's `recording` over the agent's.
    pub spec: RecordingSpec,
    /// The contact's region (`US-FL`), when known.
    pub region: Option<String>,
    /// The region needs every party's consent.
    pub consent_required: bool,
}

/// A recording's start (or refusal), as the call's writer stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingStart {
    pub via: RecordingVia,
    pub name: String,
    pub path: String,
    pub format: String,
    pub region: Option<String>,
    pub consent_required: bool,
    pub consent_announced: bool,
    /// `Recording`, or `Refused`.
    pub status: RecordingStatus,
    pub reason: Option<String>,
}

/// A recording's end, as the call's writer stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingResult {
    pub name: String,
    /// `Available` or `Failed`.
    pub status: RecordingStatus,
    pub reason: Option<String>,
    pub size_bytes: Option<i64>,
    pub duration_ms: Option<i64>,
}

/// How to collect the file once the call ended.
pub enum Collect {
    /// MixMonitor writes `path`; wait until Asterisk finished it.
    LocalFile { path: PathBuf },
    /// The bridge's recording `name` on Asterisk: stop it, fetch it into `path`, delete it there.
    Ari { client: crate::ari::AriClient, name: String, path: PathBuf },
}

/// A recording in progress.
pub struct Active {
    pub name: String,
    pub collect: Collect,
}

/// Creates the whole-call recordings directory if needed, with its parent's permissions (the
/// default, `<recordings_dir>/calls`, is shared with Asterisk like its parent: a group and a
/// setgid bit that a plain `mkdir` with asterai's umask would not give Asterisk).
pub async fn ensure_dir(dir: &Path) -> Result<(), String> {
    if tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("cannot create {} (media.call_recordings_dir): {e}", dir.display()))?;
    if let Some(parent) = dir.parent()
        && let Ok(meta) = tokio::fs::metadata(parent).await
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        let _ = tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).await;
    }
    Ok(())
}

/// A new recording's name for a call: its id made safe, and a unique part.
pub fn recording_name(call_id: &str) -> String {
    let safe: String = call_id
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    format!("{safe}-{}", uuid::Uuid::now_v7().simple())
}

/// What a WAV file's header says, read without loading the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// The file's size.
    pub size: u64,
    /// Bytes of audio the `data` chunk holds (what the header says, capped at the file).
    pub data_bytes: u64,
    /// The header's lengths match the file: the writer closed it.
    pub complete: bool,
    pub rate: u32,
    pub channels: u16,
    pub bits: u16,
}

impl WavInfo {
    /// Duration of the audio, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        let per_second = self.rate as u64 * self.channels as u64 * (self.bits as u64 / 8);
        (self.data_bytes * 1000).checked_div(per_second).unwrap_or(0)
    }
}

/// Reads a WAV file's header (the first 4 KiB at most). The error says what is wrong.
pub fn wav_info(path: &Path) -> Result<WavInfo, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    let mut head = Vec::with_capacity(4096);
    file.by_ref().take(4096).read_to_end(&mut head).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_header(&head, size)
}

/// Parses the header of a WAV file of `size` bytes whose first bytes are `head`.
pub fn parse_header(head: &[u8], size: u64) -> Result<WavInfo, String> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(format!("not a WAV file ({} bytes, no RIFF/WAVE header)", size));
    }
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let riff = u32_at(4) as u64;
    let (mut rate, mut channels, mut bits) = (0u32, 0u16, 0u16);
    let mut at = 12usize;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let chunk = u32_at(at + 4) as u64;
        let body = at + 8;
        if id == b"fmt " {
            let fmt = head.get(body..body + 16).ok_or("the fmt chunk is cut short")?;
            channels = u16::from_le_bytes([fmt[2], fmt[3]]);
            rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
            bits = u16::from_le_bytes([fmt[14], fmt[15]]);
        } else if id == b"data" {
            if rate == 0 || channels == 0 || bits == 0 {
                return Err("the data chunk comes before a valid fmt chunk".into());
            }
            let available = size.saturating_sub(body as u64);
            let complete = chunk == available && riff == size - 8;
            return Ok(WavInfo { size, data_bytes: chunk.min(available), complete, rate, channels, bits });
        }
        at = body + chunk as usize + (chunk as usize & 1);
    }
    Err("no data chunk in the first 4 KiB".into())
}

/// Collects the file of a recording once its call ended: its size and duration, or why it
/// failed. Never panics; waits at most about [`FINISH_WAIT`] for Asterisk.
pub async fn collect(name: String, collect: Collect) -> RecordingResult {
    let outcome = match collect {
        Collect::LocalFile { path } => wait_for_file(&path, FINISH_WAIT).await,
        Collect::Ari { client, name, path } => fetch(&client, &name, &path).await,
    };
    match outcome {
        Ok(info) => RecordingResult {
            name,
            status: RecordingStatus::Available,
            reason: None,
            size_bytes: Some(info.size as i64),
            duration_ms: Some(info.duration_ms() as i64),
        },
        Err(reason) => RecordingResult {
            name,
            status: RecordingStatus::Failed,
            reason: Some(reason),
            size_bytes: None,
            duration_ms: None,
        },
    }
}

/// Waits until Asterisk finished writing `path` (MixMonitor writes the header's lengths when it
/// closes the file).
async fn wait_for_file(path: &Path, wait: Duration) -> Result<WavInfo, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let read = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || wav_info(&path)).await.map_err(|e| e.to_string())?
        };
        let last = match read {
            Ok(info) if info.complete => return Ok(info),
            Ok(info) => format!("Asterisk had not finished the file after {wait:?} ({} bytes)", info.size),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the bridge's recording, fetches it into `path` and deletes Asterisk's copy.
async fn fetch(client: &crate::ari::AriClient, name: &str, path: &Path) -> Result<WavInfo, String> {
    // Already stopped when the bridge went away: a 404 here is fine.
    let _ = client.stop_recording(name).await;
    // The stored recording appears once Asterisk closed the file.
    let deadline = tokio::time::Instant::now() + FINISH_WAIT;
    let bytes = loop {
        match client.stored_recording_file(name).await {
            Ok(bytes) => break bytes,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("cannot fetch the bridge's recording {name} from Asterisk: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let info = parse_header(&bytes[..bytes.len().min(4096)], bytes.len() as u64)
        .map_err(|e| format!("the bridge's recording {name} from Asterisk: {e}"))?;
    let tmp = path.with_extension("part");
    let write = async {
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, path).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    if let Err(e) = client.delete_stored_recording(name).await {
        tracing::warn!(recording = %name, "cannot delete the bridge's recording from Asterisk's spool: {e}");
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(data: usize, finished: bool) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(if finished { 36 + data as u32 } else { 0 }).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&8000u32.to_le_bytes());
        out.extend_from_slice(&16000u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(if finished { data as u32 } else { 0 }).to_le_bytes());
        out.extend(std::iter::repeat_n(0u8, data));
        out
    }

    #[test]
    fn a_finished_header_gives_the_duration() {
        let bytes = wav(16000 * 3, true);
        let info = parse_header(&bytes, bytes.len() as u64).unwrap();
        assert!(info.complete);
        assert_eq!(info.duration_ms(), 3000);
        assert_eq!(info.size, bytes.len() as u64);
    }

    #[test]
    fn an_unfinished_header_is_not_complete() {
        let bytes = wav(16000, false);
        let info = parse_header(&bytes, bytes.len() as u64).unwrap();
        assert!(!info.complete);
        assert_eq!(info.data_bytes, 0);
    }

    #[test]
    fn not_a_wav_is_an_error_that_says_so() {
        assert!(parse_header(b"hello", 5).unwrap_err().contains("not a WAV"));
        let mut bytes = wav(10, true);
        bytes.truncate(30);
        assert!(parse_header(&bytes, 30).is_err());
    }

    #[test]
    fn names_are_safe_and_unique() {
        let a = recording_name("a/b c;rm -rf");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'), "{a}");
        assert_ne!(recording_name("x"), recording_name("x"));
    }
}
