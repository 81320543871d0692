//! [`AriClient`]: Asterisk's REST interface over reqwest.
//!
//! Every call maps a non-2xx answer to an [`AriError`] that keeps Asterisk's message, whatever
//! the body's shape. Ids are percent-encoded into paths, so an id from a dialplan or a caller
//! can never reach another resource.
//!
//! Remember what the captures show: `POST /channels` answers 200 with state `Down` before
//! anything happened on the line. It proves the channel exists, not that the call will work;
//! the events say how it went (see [`super::events`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::de::DeserializeOwned;

use super::error::AriError;
use super::media::ExternalMedia;
use super::model::{Application, AsteriskInfo, Bridge, Channel, LiveRecording, Module, Playback, StoredRecording};
use crate::types::Secret;

/// Characters escaped in a path segment: everything but unreserved characters.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'&')
    .add(b'=')
    .add(b'+')
    .add(b',');

/// How credentials are sent. ARI accepts both; the header keeps the password out of URLs (and
/// so out of any log that prints one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic …`.
    #[default]
    Header,
    /// `?api_key=user:password`.
    ApiKey,
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::Header => "Authorization header",
            Auth::ApiKey => "api_key parameter",
        })
    }
}

/// Where ARI is and how to sign in.
#[derive(Debug, Clone)]
pub struct AriSettings {
    /// `http://127.0.0.1:8088` (a trailing `/ari` is accepted).
    pub url: String,
    pub username: String,
    pub password: Secret,
    pub auth: Auth,
    /// Time allowed for one REST request.
    pub timeout: Duration,
    /// PEM file of the certificate authorities ARI's `https://`/`wss://` certificate must chain
    /// to (a private CA, or a self-signed certificate). None: the public web roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl AriSettings {
    /// The TLS client configuration for `ca_file`: only its certificates are trusted. None
    /// without `ca_file` (the public web roots apply).
    pub fn tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, AriError> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        crate::tls::trusting_only(path)
            .map(Some)
            .map_err(|why| AriError::Invalid(format!("ari.ca_file {}: {why}", path.display())))
    }

    /// The base of every REST path: `http://host:8088/ari`.
    pub fn rest_base(&self) -> String {
        let url = self.url.trim().trim_end_matches('/');
        let url = url.strip_suffix("/ari").unwrap_or(url);
        format!("{url}/ari")
    }

    /// The event WebSocket's URL for `app`: `ws://host:8088/ari/events?app=…&subscribeAll=…`,
    /// with `api_key` when that is the chosen authentication.
    pub fn events_url(&self, app: &str, subscribe_all: bool) -> String {
        let base = self.rest_base();
        let base = match base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => format!("ws://{base}"),
        };
        let mut url = format!("{base}/events?app={}&subscribeAll={subscribe_all}", query_escape(app));
        if self.auth == Auth::ApiKey {
            url.push_str(&format!("&api_key={}", query_escape(&self.api_key())));
        }
        url
    }

    /// The media WebSocket of a server-mode chan_websocket channel:
    /// `ws://host:8088/media/<connection_id>` (Asterisk's HTTP server, beside `/ari`; no
    /// credentials needed: the id is the secret).
    pub fn media_url(&self, connection_id: &str) -> Result<String, AriError> {
        let base = self.rest_base();
        let base = base.strip_suffix("/ari").unwrap_or(&base);
        let base = match base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => format!("ws://{base}"),
        };
        Ok(format!("{base}/media/{}", segment(connection_id)?))
    }

    /// `user:password`, for `api_key`.
    pub fn api_key(&self) -> String {
        format!("{}:{}", self.username, self.password.expose())
    }

    /// The `Authorization` header's value.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(self.api_key()))
    }
}

fn query_escape(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// An id as one path segment. `.` and `..` are refused: a URL parser resolves them (and their
/// percent-encoded forms `%2e`, `%2E%2e`, …) as "this" and "the parent" segment, so escaping
/// cannot keep them in place, and `/channels/..` would name `/ari` itself.
fn segment(id: &str) -> Result<String, AriError> {
    if id.trim().is_empty() {
        return Err(AriError::Invalid("an empty id cannot name an ARI resource".into()));
    }
    if id == "." || id == ".." {
        return Err(AriError::Invalid(format!("{id:?} cannot name an ARI resource (a relative path segment)")));
    }
    Ok(utf8_percent_encode(id, SEGMENT).to_string())
}

/// Where an originated channel goes once the far end answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Dialplan mode: `context`, `extension`, `priority`. The channel never enters a Stasis
    /// application, so an app without `subscribeAll` gets no events for it.
    Dialplan { context: String, extension: String, priority: i64 },
    /// App mode: the channel enters Stasis(`app`, `args`…) when answered, and the app gets its
    /// events from the start (ringing, busy, the hang-up cause).
    App { app: String, args: Vec<String> },
}

/// `POST /channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// `PJSIP/+15551230000@trunk`, `Local/s@context`.
    pub endpoint: String,
    pub destination: Destination,
    /// Channel variables, set before the channel dials (so the dialplan sees them).
    pub variables: BTreeMap<String, String>,
    /// The channel's unique id; asterai passes the call id, so events name the call.
    pub channel_id: Option<String>,
    /// The id of the second half of a Local channel.
    pub other_channel_id: Option<String>,
    /// `Name <number>`.
    pub caller_id: Option<String>,
    /// How long the far end may ring (whole seconds; ARI's default is 30).
    pub timeout: Option<Duration>,
}

impl Originate {
    /// The query parameters, in the order Asterisk documents them.
    fn query(&self) -> Result<Vec<(&'static str, String)>, AriError> {
        if self.endpoint.trim().is_empty() {
            return Err(AriError::Invalid("originate: the endpoint is empty".into()));
        }
        let mut query = vec![("endpoint", self.endpoint.clone())];
        match &self.destination {
            Destination::Dialplan { context, extension, priority } => {
                query.push(("extension", extension.clone()));
                query.push(("context", context.clone()));
                query.push(("priority", priority.to_string()));
            }
            Destination::App { app, args } => {
                if let Some(arg) = args.iter().find(|a| a.contains(',')) {
                    return Err(AriError::Invalid(format!(
                        "originate: application argument {arg:?} contains a comma, which would split it"
                    )));
                }
                query.push(("app", app.clone()));
                if !args.is_empty() {
                    query.push(("appArgs", args.join(",")));
                }
            }
        }
        if let Some(id) = &self.channel_id {
            query.push(("channelId", id.clone()));
        }
        if let Some(id) = &self.other_channel_id {
            query.push(("otherChannelId", id.clone()));
        }
        if let Some(caller_id) = &self.caller_id {
            query.push(("callerId", caller_id.clone()));
        }
        if let Some(timeout) = self.timeout {
            query.push(("timeout", timeout.as_secs().max(1).to_string()));
        }
        Ok(query)
    }
}

/// Why a channel is hung up: `DELETE /channels/{id}?reason=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    Normal,
    Busy,
    Congestion,
    NoAnswer,
    Timeout,
    Rejected,
    Unallocated,
    AnsweredElsewhere,
    /// A Q.850 cause code (`reason_code`).
    Code(u16),
}

impl HangupReason {
    fn param(self) -> (&'static str, String) {
        let text = match self {
            HangupReason::Normal => "normal",
            HangupReason::Busy => "busy",
            HangupReason::Congestion => "congestion",
            HangupReason::NoAnswer => "no_answer",
            HangupReason::Timeout => "timeout",
            HangupReason::Rejected => "rejected",
            HangupReason::Unallocated => "unallocated",
            HangupReason::AnsweredElsewhere => "answered_elsewhere",
            HangupReason::Code(code) => return ("reason_code", code.to_string()),
        };
        ("reason", text.to_owned())
    }
}

/// `POST /channels/{id}/record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The recording's name (a file name on the Asterisk host, without extension).
    pub name: String,
    /// `wav`, `gsm`, `sln16`…
    pub format: String,
    pub max_duration_s: Option<u32>,
    pub max_silence_s: Option<u32>,
    /// `fail`, `overwrite` or `append`.
    pub if_exists: Option<String>,
    pub beep: Option<bool>,
    /// DTMF digits that stop the recording: `none`, `any`, `*`, `#`.
    pub terminate_on: Option<String>,
}

impl Record {
    pub fn wav(name: impl Into<String>) -> Record {
        Record {
            name: name.into(),
            format: "wav".into(),
            max_duration_s: None,
            max_silence_s: None,
            if_exists: None,
            beep: None,
            terminate_on: None,
        }
    }
}

/// `POST /channels/{id}/snoop`: a new channel in `app` that hears (and may whisper to) a
/// channel, for a supervisor or a recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snoop {
    pub app: String,
    /// `none`, `both`, `out` or `in`.
    pub spy: String,
    pub whisper: String,
    pub app_args: Vec<String>,
    pub snoop_id: Option<String>,
}

/// The REST client. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct AriClient {
    http: reqwest::Client,
    settings: AriSettings,
    base: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for AriClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AriClient").field("base", &self.base).field("username", &self.settings.username).finish()
    }
}

impl AriClient {
    pub fn new(settings: AriSettings) -> Result<AriClient, AriError> {
        let tls = settings.tls()?;
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("asterai/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &tls {
            http = http.tls_backend_preconfigured((**tls).clone());
        }
        let http = http.build().map_err(|e| AriError::Invalid(format!("cannot build the ARI HTTP client: {e}")))?;
        let base = settings.rest_base();
        Ok(AriClient { http, settings, base, tls })
    }

    /// The TLS configuration of `ari.ca_file`, for the WebSockets to the same Asterisk.
    pub fn tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    pub fn settings(&self) -> &AriSettings {
        &self.settings
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<bytes::Bytes, AriError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).query(query);
        request = match self.settings.auth {
            Auth::Header => request.header(reqwest::header::AUTHORIZATION, self.settings.basic_header()),
            Auth::ApiKey => request.query(&[("api_key", self.settings.api_key())]),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| AriError::Transport {
            url: format!("{}{path}", self.base),
            // reqwest's message may hold the URL with an api_key; keep only the kind of failure.
            message: transport_message(&e),
        })?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await.map_err(|e| AriError::Transport {
            url: format!("{}{path}", self.base),
            message: format!("the answer was cut short: {}", transport_message(&e)),
        })?;
        if (200..300).contains(&status) {
            tracing::debug!(%method, path, status, "ARI request");
            Ok(body)
        } else {
            let error = AriError::from_response(status, content_type.as_deref(), &body);
            tracing::debug!(%method, path, status, "ARI request failed: {error}");
            Err(error)
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<T, AriError> {
        let bytes = self.send(method.clone(), path, query, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| AriError::Decode { what: format!("{method} {path}"), message: e.to_string() })
    }

    /// `GET /asterisk/info`: the version and entity id.
    pub async fn asterisk_info(&self) -> Result<AsteriskInfo, AriError> {
        self.json(reqwest::Method::GET, "/asterisk/info", &[], None).await
    }

    /// `GET /channels`: every channel on this Asterisk (not only the app's).
    pub async fn channels(&self) -> Result<Vec<Channel>, AriError> {
        self.json(reqwest::Method::GET, "/channels", &[], None).await
    }

    /// `GET /channels/{id}`.
    pub async fn channel(&self, id: &str) -> Result<Channel, AriError> {
        self.json(reqwest::Method::GET, &format!("/channels/{}", segment(id)?), &[], None).await
    }

    /// `GET /applications`: the Stasis applications with a WebSocket connected.
    pub async fn applications(&self) -> Result<Vec<Application>, AriError> {
        self.json(reqwest::Method::GET, "/applications", &[], None).await
    }

    /// `POST /channels`: creates the channel and starts dialing. The answer proves nothing about
    /// the call (see the module docs).
    pub async fn originate(&self, originate: &Originate) -> Result<Channel, AriError> {
        let query = originate.query()?;
        let body = (!originate.variables.is_empty()).then(|| serde_json::json!({ "variables": originate.variables }));
        self.json(reqwest::Method::POST, "/channels", &query, body).await
    }

    /// `DELETE /channels/{id}`. A channel already gone is [`AriError::NotFound`].
    pub async fn hangup(&self, id: &str, reason: Option<HangupReason>) -> Result<(), AriError> {
        let query: Vec<(&str, String)> = reason.map(HangupReason::param).into_iter().collect();
        self.send(reqwest::Method::DELETE, &format!("/channels/{}", segment(id)?), &query, None).await.map(drop)
    }

    /// `POST /channels/{id}/answer` (the channel must be in Stasis).
    pub async fn answer(&self, id: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::POST, &format!("/channels/{}/answer", segment(id)?), &[], None).await.map(drop)
    }

    /// `POST /channels/{id}/ring`: ringing indication to the caller (in Stasis).
    pub async fn ring(&self, id: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::POST, &format!("/channels/{}/ring", segment(id)?), &[], None).await.map(drop)
    }

    /// `POST /channels/{id}/continue`: leaves Stasis for the dialplan at `context`,
    /// `extension`, `priority`. Asterisk answers 204 even for a context that does not exist;
    /// the channel is then hung up.
    pub async fn continue_in_dialplan(
        &self,
        id: &str,
        context: &str,
        extension: &str,
        priority: i64,
    ) -> Result<(), AriError> {
        let query =
            [("context", context.to_owned()), ("extension", extension.to_owned()), ("priority", priority.to_string())];
        self.send(reqwest::Method::POST, &format!("/channels/{}/continue", segment(id)?), &query, None).await.map(drop)
    }

    /// `POST /channels/{id}/continue` without a location: the channel leaves Stasis and goes on
    /// after the `Stasis()` that brought it.
    pub async fn continue_after_stasis(&self, id: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::POST, &format!("/channels/{}/continue", segment(id)?), &[], None).await.map(drop)
    }

    /// `POST /channels/{id}/dtmf`: sends DTMF `digits` (`0-9*#A-D`, `w` half a second's
    /// pause) on the channel.
    pub async fn send_dtmf(&self, id: &str, digits: &str) -> Result<(), AriError> {
        let query = [("dtmf", digits.to_owned())];
        self.send(reqwest::Method::POST, &format!("/channels/{}/dtmf", segment(id)?), &query, None).await.map(drop)
    }

    /// `POST /channels/{id}/redirect`: a technology-level transfer of a channel in Stasis to
    /// `endpoint` (same technology, e.g. `PJSIP/100`).
    pub async fn redirect(&self, id: &str, endpoint: &str) -> Result<(), AriError> {
        let query = [("endpoint", endpoint.to_owned())];
        self.send(reqwest::Method::POST, &format!("/channels/{}/redirect", segment(id)?), &query, None).await.map(drop)
    }

    /// `POST /channels/{id}/play`: media URIs (`sound:hello-world`, `recording:x`) played in
    /// order. 201 with the playback; it may still fail (see the `PlaybackFinished` event).
    pub async fn play(&self, id: &str, media: &[&str], playback_id: Option<&str>) -> Result<Playback, AriError> {
        if media.is_empty() {
            return Err(AriError::Invalid("play: no media given".into()));
        }
        let mut query = vec![("media", media.join(","))];
        if let Some(playback) = playback_id {
            query.push(("playbackId", playback.to_owned()));
        }
        self.json(reqwest::Method::POST, &format!("/channels/{}/play", segment(id)?), &query, None).await
    }

    /// `POST /channels/{id}/record`.
    pub async fn record(&self, id: &str, record: &Record) -> Result<LiveRecording, AriError> {
        let query = record_query(record);
        self.json(reqwest::Method::POST, &format!("/channels/{}/record", segment(id)?), &query, None).await
    }

    /// `POST /bridges/{id}/record`: records the bridge's mixed audio (a whole call).
    pub async fn record_bridge(&self, id: &str, record: &Record) -> Result<LiveRecording, AriError> {
        let query = record_query(record);
        self.json(reqwest::Method::POST, &format!("/bridges/{}/record", segment(id)?), &query, None).await
    }

    /// `POST /channels/{id}/moh`: music on hold to the channel (`class`: the default when
    /// `None`), until [`AriClient::stop_moh`].
    pub async fn start_moh(&self, id: &str, class: Option<&str>) -> Result<(), AriError> {
        let query: Vec<(&str, String)> = class.map(|c| ("mohClass", c.to_owned())).into_iter().collect();
        self.send(reqwest::Method::POST, &format!("/channels/{}/moh", segment(id)?), &query, None).await.map(drop)
    }

    /// `DELETE /channels/{id}/moh`.
    pub async fn stop_moh(&self, id: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::DELETE, &format!("/channels/{}/moh", segment(id)?), &[], None).await.map(drop)
    }

    /// `POST /channels/{id}/snoop`: returns the snooping channel.
    pub async fn snoop(&self, id: &str, snoop: &Snoop) -> Result<Channel, AriError> {
        let mut query =
            vec![("app", snoop.app.clone()), ("spy", snoop.spy.clone()), ("whisper", snoop.whisper.clone())];
        if !snoop.app_args.is_empty() {
            query.push(("appArgs", snoop.app_args.join(",")));
        }
        if let Some(snoop_id) = &snoop.snoop_id {
            query.push(("snoopId", snoop_id.clone()));
        }
        self.json(reqwest::Method::POST, &format!("/channels/{}/snoop", segment(id)?), &query, None).await
    }

    /// `GET /channels/{id}/variable`: a channel variable or function (`CALLERID(all)`).
    pub async fn variable(&self, id: &str, name: &str) -> Result<String, AriError> {
        #[derive(serde::Deserialize)]
        struct Value {
            #[serde(default)]
            value: String,
        }
        let query = [("variable", name.to_owned())];
        let value: Value =
            self.json(reqwest::Method::GET, &format!("/channels/{}/variable", segment(id)?), &query, None).await?;
        Ok(value.value)
    }

    /// `POST /channels/{id}/variable`: sets a channel variable (or a writable function).
    pub async fn set_variable(&self, id: &str, name: &str, value: &str) -> Result<(), AriError> {
        if name.trim().is_empty() {
            return Err(AriError::Invalid("set variable: the name is empty".into()));
        }
        let query = [("variable", name.to_owned()), ("value", value.to_owned())];
        self.send(reqwest::Method::POST, &format!("/channels/{}/variable", segment(id)?), &query, None).await.map(drop)
    }

    /// `POST /channels/externalMedia`: a channel whose audio goes to or comes from asterai (see
    /// [`ExternalMedia`], which refuses what would crash Asterisk before it is sent).
    pub async fn external_media(&self, media: &ExternalMedia) -> Result<Channel, AriError> {
        let query = media.query()?;
        let body = (!media.variables.is_empty()).then(|| serde_json::json!({ "variables": media.variables }));
        self.json(reqwest::Method::POST, "/channels/externalMedia", &query, body).await
    }

    /// `POST /bridges`: a bridge of `kind` (`mixing` for a call and its media channel), with
    /// `id` when given.
    pub async fn create_bridge(&self, kind: &str, id: Option<&str>, name: Option<&str>) -> Result<Bridge, AriError> {
        let mut query = vec![("type", kind.to_owned())];
        if let Some(id) = id {
            segment(id)?;
            query.push(("bridgeId", id.to_owned()));
        }
        if let Some(name) = name {
            query.push(("name", name.to_owned()));
        }
        self.json(reqwest::Method::POST, "/bridges", &query, None).await
    }

    /// `GET /bridges/{id}`.
    pub async fn bridge(&self, id: &str) -> Result<Bridge, AriError> {
        self.json(reqwest::Method::GET, &format!("/bridges/{}", segment(id)?), &[], None).await
    }

    /// `POST /bridges/{id}/addChannel`: channels join the bridge (they must be in Stasis).
    pub async fn add_to_bridge(&self, bridge: &str, channels: &[&str]) -> Result<(), AriError> {
        let query = [("channel", channel_list(channels)?)];
        self.send(reqwest::Method::POST, &format!("/bridges/{}/addChannel", segment(bridge)?), &query, None)
            .await
            .map(drop)
    }

    /// `POST /bridges/{id}/removeChannel`.
    pub async fn remove_from_bridge(&self, bridge: &str, channels: &[&str]) -> Result<(), AriError> {
        let query = [("channel", channel_list(channels)?)];
        self.send(reqwest::Method::POST, &format!("/bridges/{}/removeChannel", segment(bridge)?), &query, None)
            .await
            .map(drop)
    }

    /// `DELETE /bridges/{id}`: the channels in it stay (and stay in Stasis).
    pub async fn destroy_bridge(&self, id: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::DELETE, &format!("/bridges/{}", segment(id)?), &[], None).await.map(drop)
    }

    /// `GET /asterisk/modules`: every module Asterisk knows, loaded or not.
    pub async fn modules(&self) -> Result<Vec<Module>, AriError> {
        self.json(reqwest::Method::GET, "/asterisk/modules", &[], None).await
    }

    /// `GET /asterisk/modules/{name}`: one module (`chan_websocket.so`); 404 when Asterisk
    /// does not have it.
    pub async fn module(&self, name: &str) -> Result<Module, AriError> {
        self.json(reqwest::Method::GET, &format!("/asterisk/modules/{}", segment(name)?), &[], None).await
    }

    /// `GET /playbacks/{id}`.
    pub async fn playback(&self, id: &str) -> Result<Playback, AriError> {
        self.json(reqwest::Method::GET, &format!("/playbacks/{}", segment(id)?), &[], None).await
    }

    /// `POST /playbacks/{id}/control`: `pause`, `unpause`, `restart`, `reverse`, `forward`.
    pub async fn control_playback(&self, id: &str, operation: &str) -> Result<(), AriError> {
        let query = [("operation", operation.to_owned())];
        self.send(reqwest::Method::POST, &format!("/playbacks/{}/control", segment(id)?), &query, None).await.map(drop)
    }

    /// `DELETE /playbacks/{id}`: stops a playback (barge-in).
    pub async fn stop_playback(&self, id: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::DELETE, &format!("/playbacks/{}", segment(id)?), &[], None).await.map(drop)
    }

    /// `GET /recordings/live/{name}`.
    pub async fn live_recording(&self, name: &str) -> Result<LiveRecording, AriError> {
        self.json(reqwest::Method::GET, &format!("/recordings/live/{}", segment(name)?), &[], None).await
    }

    /// `POST /recordings/live/{name}/stop`: stops and stores a recording.
    pub async fn stop_recording(&self, name: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::POST, &format!("/recordings/live/{}/stop", segment(name)?), &[], None)
            .await
            .map(drop)
    }

    /// `GET /recordings/stored`.
    pub async fn stored_recordings(&self) -> Result<Vec<StoredRecording>, AriError> {
        self.json(reqwest::Method::GET, "/recordings/stored", &[], None).await
    }

    /// `GET /recordings/stored/{name}`.
    pub async fn stored_recording(&self, name: &str) -> Result<StoredRecording, AriError> {
        self.json(reqwest::Method::GET, &format!("/recordings/stored/{}", segment(name)?), &[], None).await
    }

    /// `GET /recordings/stored/{name}/file`: the recording's bytes.
    pub async fn stored_recording_file(&self, name: &str) -> Result<bytes::Bytes, AriError> {
        self.send(reqwest::Method::GET, &format!("/recordings/stored/{}/file", segment(name)?), &[], None).await
    }

    /// `DELETE /recordings/stored/{name}`.
    pub async fn delete_stored_recording(&self, name: &str) -> Result<(), AriError> {
        self.send(reqwest::Method::DELETE, &format!("/recordings/stored/{}", segment(name)?), &[], None).await.map(drop)
    }
}

/// The query of `POST /channels/{id}/record` and `POST /bridges/{id}/record` (same parameters).
fn record_query(record: &Record) -> Vec<(&'static str, String)> {
    let mut query = vec![("name", record.name.clone()), ("format", record.format.clone())];
    if let Some(s) = record.max_duration_s {
        query.push(("maxDurationSeconds", s.to_string()));
    }
    if let Some(s) = record.max_silence_s {
        query.push(("maxSilenceSeconds", s.to_string()));
    }
    if let Some(mode) = &record.if_exists {
        query.push(("ifExists", mode.clone()));
    }
    if let Some(beep) = record.beep {
        query.push(("beep", beep.to_string()));
    }
    if let Some(digits) = &record.terminate_on {
        query.push(("terminateOn", digits.clone()));
    }
    query
}

/// Channel ids for `?channel=a,b`: none empty, none with a comma (which would split it).
fn channel_list(channels: &[&str]) -> Result<String, AriError> {
    if channels.is_empty() {
        return Err(AriError::Invalid("no channel given".into()));
    }
    for id in channels {
        if id.trim().is_empty() || id.contains(',') {
            return Err(AriError::Invalid(format!("channel id {id:?} cannot be listed (empty or with a comma)")));
        }
        segment(id)?;
    }
    Ok(channels.join(","))
}

/// What went wrong on the wire, without the URL (which may carry an `api_key`).
fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = None;
    while let Some(inner) = source {
        detail = Some(inner.to_string());
        source = inner.source();
    }
    match detail {
        Some(detail) => format!("{kind} ({detail})"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, auth: Auth) -> AriSettings {
        AriSettings {
            url: url.into(),
            username: "ari".into(),
            password: Secret::new("s3cret&x"),
            auth,
            timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }

    #[test]
    fn urls() {
        let s = settings("http://127.0.0.1:8088/", Auth::Header);
        assert_eq!(s.rest_base(), "http://127.0.0.1:8088/ari");
        assert_eq!(settings("http://pbx:8088/ari", Auth::Header).rest_base(), "http://pbx:8088/ari");
        assert_eq!(s.events_url("asterai", false), "ws://127.0.0.1:8088/ari/events?app=asterai&subscribeAll=false");
        let key = settings("http://127.0.0.1:8088", Auth::ApiKey).events_url("a b", true);
        assert_eq!(key, "ws://127.0.0.1:8088/ari/events?app=a%20b&subscribeAll=true&api_key=ari%3As3cret%26x");
        assert_eq!(s.media_url("53a98129-bb5a").unwrap(), "ws://127.0.0.1:8088/media/53a98129-bb5a");
        assert_eq!(
            settings("http://pbx:8088/ari/", Auth::Header).media_url("x/y").unwrap(),
            "ws://pbx:8088/media/x%2Fy"
        );
        assert!(s.media_url("..").is_err());
        assert!(channel_list(&["a", "b,c"]).is_err());
        assert_eq!(channel_list(&["a", "b"]).unwrap(), "a,b");
        assert_eq!(
            s.basic_header(),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ari:s3cret&x"))
        );
    }

    #[test]
    fn ids_cannot_escape_their_segment() {
        assert_eq!(segment("1795222386.55").unwrap(), "1795222386.55");
        assert_eq!(segment("../asterisk/info").unwrap(), "..%2Fasterisk%2Finfo");
        assert_eq!(segment("a?b#c").unwrap(), "a%3Fb%23c");
        assert!(segment(" ").is_err());
        // Dot segments would climb out of /channels/{id}: refused, not sent.
        for dots in [".", ".."] {
            assert!(matches!(segment(dots), Err(AriError::Invalid(_))), "{dots}");
        }
        for id in ["...", "a..b", "..a", "%2e%2e"] {
            let url = reqwest::Url::parse(&format!("http://pbx/ari/channels/{}/answer", segment(id).unwrap())).unwrap();
            assert!(url.path().starts_with("/ari/channels/") && url.path().ends_with("/answer"), "{id}: {url}");
            assert_eq!(url.path().matches('/').count(), 4, "{id} stays one segment: {url}");
        }
    }

    #[test]
    fn originate_queries() {
        let app = Originate {
            endpoint: "PJSIP/+15551230000@trunk".into(),
            destination: Destination::App { app: "asterai".into(), args: vec!["dialed".into()] },
            variables: BTreeMap::new(),
            channel_id: Some("call-1".into()),
            other_channel_id: None,
            caller_id: Some("Acme <+15550000000>".into()),
            timeout: Some(Duration::from_millis(30_500)),
        };
        let query = app.query().unwrap();
        assert_eq!(
            query,
            vec![
                ("endpoint", "PJSIP/+15551230000@trunk".to_owned()),
                ("app", "asterai".to_owned()),
                ("appArgs", "dialed".to_owned()),
                ("channelId", "call-1".to_owned()),
                ("callerId", "Acme <+15550000000>".to_owned()),
                ("timeout", "30".to_owned()),
            ]
        );
        let dialplan = Originate {
            destination: Destination::Dialplan { context: "out".into(), extension: "s".into(), priority: 1 },
            channel_id: None,
            caller_id: None,
            timeout: None,
            ..app.clone()
        };
        assert_eq!(
            dialplan.query().unwrap()[1..],
            [("extension", "s".to_owned()), ("context", "out".to_owned()), ("priority", "1".to_owned())]
        );
        let comma = Originate { destination: Destination::App { app: "a".into(), args: vec!["x,y".into()] }, ..app };
        assert!(comma.query().is_err());
    }
}
