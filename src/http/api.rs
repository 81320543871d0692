//! The REST API. Every route is scoped to the token's organization: another organization's call
//! is "not found", never "forbidden".

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::extract::{Authorized, Monitor};
use super::{ApiError, AppState};
use crate::store::{CallFilter, CallStatus, Outcome};

fn time_param(query: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    query
        .get(name)
        .map(|text| {
            DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::bad_request(format!(
                    "{name}: expected an RFC 3339 time such as 2026-11-21T10:00:00Z, got {text:?}"
                ))
            })
        })
        .transpose()
}

fn parsed<T: std::str::FromStr>(
    query: &HashMap<String, String>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    query
        .get(name)
        .map(|text| {
            text.parse().map_err(|_| ApiError::bad_request(format!("{name}: expected {expected}, got {text:?}")))
        })
        .transpose()
}

/// `GET /v1/calls?status=&active=&outcome=&campaign=&agent=&q=&since=&until=&limit=&cursor=`
///
/// `q` searches the call id, the contact's name and both numbers (see [`CallFilter::search`]);
/// `agent` is an agent's name.
///
/// The answer carries `last_event_id`, the organization's newest event at the time of the
/// snapshot (its own sequence): a client that opens the feed with `since=<last_event_id>`
/// misses nothing that changed after it.
pub async fn list_calls(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    principal: Authorized<Monitor>,
) -> Result<Json<Value>, ApiError> {
    let known = ["status", "active", "outcome", "campaign", "agent", "q", "since", "until", "limit", "cursor"];
    if let Some(unknown) = query.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {unknown:?}; expected one of {}",
            known.join(", ")
        )));
    }
    let status = query
        .get("status")
        .map(|s| s.parse::<CallStatus>().map_err(|e| ApiError::bad_request(format!("status: {e}"))))
        .transpose()?;
    let outcome = query
        .get("outcome")
        .map(|s| s.parse::<Outcome>().map_err(|e| ApiError::bad_request(format!("outcome: {e}"))))
        .transpose()?;
    let active = match query.get("active").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("active: expected true or false, got {other:?}"))),
    };
    let filter = CallFilter {
        status,
        active,
        outcome,
        campaign_id: parsed(&query, "campaign", "a campaign id")?,
        agent: query.get("agent").filter(|a| !a.is_empty()).cloned(),
        search: query.get("q").filter(|q| !q.trim().is_empty()).cloned(),
        since: time_param(&query, "since")?,
        until: time_param(&query, "until")?,
        limit: parsed(&query, "limit", "a number from 1 to 500")?,
        cursor: query.get("cursor").cloned(),
    };
    // Read before the snapshot: events between the two are replayed, and applying them twice is
    // harmless, while reading it after could skip one.
    let last_event_id = state.store().last_event_id(principal.org_id).await?;
    let page = state.store().list_calls(principal.org_id, &filter).await?;
    let mut body = serde_json::to_value(page).unwrap_or_default();
    body["last_event_id"] = json!(last_event_id);
    Ok(Json(body))
}

/// `GET /v1/calls/{id}`: the call, its turns and its transcript.
pub async fn get_call(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Authorized<Monitor>,
) -> Result<Json<Value>, ApiError> {
    let call = state
        .store()
        .call(principal.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no call {id:?}")))?;
    let turns = state.store().turns(principal.org_id, &call.id).await?;
    let transcript = call.transcript.clone().unwrap_or_else(|| crate::store::calls::transcript(&turns));
    let mut body = serde_json::to_value(&call).unwrap_or_default();
    body["turns"] = serde_json::to_value(&turns).unwrap_or_default();
    body["transcript"] = json!(transcript);
    let recordings = state.store().call_recordings(principal.org_id, &call.id).await?;
    body["recording_url"] = json!(recording_url(&call.id, &recordings));
    body["recordings"] = serde_json::to_value(&recordings).unwrap_or_default();
    Ok(Json(body))
}

/// Where a call's recording downloads (`/v1/calls/<id>/recording`, the id percent-encoded),
/// when one is available.
pub fn recording_url(call_id: &str, recordings: &[crate::store::Recording]) -> Option<String> {
    recordings.iter().any(|r| r.status == crate::store::RecordingStatus::Available).then(|| {
        let id: String = call_id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("/v1/calls/{id}/recording")
    })
}

/// `GET /v1/stats?since=&until=`: the organization's figures for the calls started in the window
/// (default: from midnight UTC today until now), with latency per turn stage. The page sends its
/// own local midnight as `since`. See [`crate::store::stats`] for the definitions.
pub async fn stats(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    principal: Authorized<Monitor>,
) -> Result<Json<crate::store::DayStats>, ApiError> {
    let known = ["since", "until"];
    if let Some(unknown) = query.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown parameter {unknown:?}; expected since or until")));
    }
    let now = Utc::now();
    let since = time_param(&query, "since")?.unwrap_or_else(|| start_of_day(now));
    let until = time_param(&query, "until")?.unwrap_or(now);
    Ok(Json(state.store().day_stats(principal.org_id, since, until).await?))
}

/// Midnight UTC of `at`'s day.
fn start_of_day(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_hms_opt(0, 0, 0).map_or(at, |midnight| midnight.and_utc())
}
