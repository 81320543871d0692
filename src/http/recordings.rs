//! `GET /v1/calls/{id}/recording`: a call's whole-call recording, streamed from disk, with
//! Range requests (one range: `bytes=0-99`, `bytes=100-`, `bytes=-100`).
//!
//! The token comes from the `Authorization` header only: a recording is personal data, and a
//! URL with a token in it ends up in proxy logs and browser history. `?token=` alone is a 401
//! (as on every REST route); beside a header it is a 400. The monitor page fetches the file
//! with its header and plays it from a `blob:` URL.

use std::collections::HashMap;
use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::extract::{Authorized, Monitor};
use super::{ApiError, AppState};
use crate::store::{Recording, RecordingStatus};

/// A byte range asked for, resolved against the file's size: `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// Reads a `Range` header for a file of `size` bytes: `Ok(None)` without one, `Err` (416) for a
/// range that is malformed, not in bytes, several at once, or outside the file.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, String> {
    let Some(text) = header else { return Ok(None) };
    let spec = text
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| format!("Range: expected bytes=<first>-<last>, got {text:?}"))?;
    if spec.contains(',') {
        return Err(format!("Range: one range at a time, got {text:?}"));
    }
    let (first, last) =
        spec.split_once('-').ok_or_else(|| format!("Range: expected bytes=<first>-<last>, got {text:?}"))?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| format!("Range: expected numbers, got {text:?}"));
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last n bytes.
        (true, false) => {
            let n = number(last)?;
            if n == 0 || size == 0 {
                return Err(format!("Range: {text:?} selects nothing of a {size}-byte file"));
            }
            ByteRange { start: size.saturating_sub(n), end: size - 1 }
        }
        (false, true) => ByteRange { start: number(first)?, end: size.saturating_sub(1) },
        (false, false) => {
            let (start, end) = (number(first)?, number(last)?);
            if end < start {
                return Err(format!("Range: the last byte comes before the first in {text:?}"));
            }
            ByteRange { start, end: end.min(size.saturating_sub(1)) }
        }
        (true, true) => return Err(format!("Range: expected bytes=<first>-<last>, got {text:?}")),
    };
    if range.start >= size {
        return Err(format!("Range: {text:?} starts beyond the end of the {size}-byte file"));
    }
    Ok(Some(range))
}

/// The recording a call's download serves: its last available one.
fn servable(recordings: &[Recording]) -> Result<&Recording, String> {
    if let Some(available) = recordings.iter().rev().find(|r| r.status == RecordingStatus::Available) {
        return Ok(available);
    }
    let Some(last) = recordings.last() else { return Err("the call has no recording".into()) };
    Err(match last.status {
        RecordingStatus::Recording => "the call's recording is not finished yet".into(),
        RecordingStatus::Purged => "the call's recording was deleted by retention".into(),
        // (Available is found above.)
        RecordingStatus::Refused | RecordingStatus::Failed | RecordingStatus::Available => format!(
            "the call's recording is {}: {}",
            last.status,
            last.status_reason.as_deref().unwrap_or("no reason given")
        ),
    })
}

/// `GET /v1/calls/{id}/recording`.
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    principal: Authorized<Monitor>,
) -> Result<Response, ApiError> {
    if query.contains_key("token") {
        return Err(ApiError::bad_request(
            "this route never takes ?token=: send the token in the Authorization header only",
        ));
    }
    if let Some(unknown) = query.keys().next() {
        return Err(ApiError::bad_request(format!("unknown parameter {unknown:?}; this route takes none")));
    }
    let store = state.store();
    // Another organization's call is not found, like a call that does not exist.
    if store.call(principal.org_id, &id).await?.is_none() {
        return Err(ApiError::not_found(format!("no call {id:?}")));
    }
    let recordings = store.call_recordings(principal.org_id, &id).await?;
    let recording = servable(&recordings).map_err(ApiError::not_found)?;
    let mut file = match tokio::fs::File::open(&recording.path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(call_id = %id, path = %recording.path, "a recording listed as available is missing on disk");
            return Err(ApiError::not_found("the call's recording file is missing on this daemon's disk"));
        }
        Err(e) => return Err(ApiError::internal(format!("cannot open {}: {e}", recording.path))),
    };
    let size = file.metadata().await.map_err(ApiError::internal)?.len();
    let range_header = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or("\u{0}"));
    let range = match parse_range(range_header, size) {
        Ok(range) => range,
        Err(message) => {
            let mut response =
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", message).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let (status, start, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        None => (StatusCode::OK, 0, size),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if let Ok(value) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, value);
    }
    if let Some(r) = range
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end))
    {
        h.insert(header::CONTENT_RANGE, value);
    }
    // The name is asterai's own (safe characters only).
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{}.wav\"", recording.name)) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some(ByteRange { start: 0, end: 9 })));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Ok(Some(ByteRange { start: 0, end: 99 })));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Ok(Some(ByteRange { start: 50, end: 99 })));
    }

    #[test]
    fn bad_ranges_are_refused_with_the_reason() {
        for bad in [
            "bytes=100-",
            "bytes=200-300",
            "bytes=9-3",
            "bytes=-0",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=-",
        ] {
            assert!(parse_range(Some(bad), 100).is_err(), "{bad}");
        }
        assert!(parse_range(Some("bytes=0-"), 0).is_err());
    }
}
