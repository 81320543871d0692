//! ARI for the streaming media path: external media channels, which media transports the
//! connected Asterisk has, and the route a call entered Stasis with.
//!
//! * [`ExternalMedia`]: `POST /channels/externalMedia` with every parameter, checked before it
//!   is sent. Above all `transport_data`: Asterisk 22.10.1 **segfaults** on an invalid
//!   `f(…)` control format (its "invalid format" warning dereferences the NULL requestor of an
//!   ARI-created channel), so only `f(json)` and `f(plain-text)` ever leave asterai.
//! * [`detect_media`]: chan_websocket, AudioSocket, and whether chan_websocket speaks JSON
//!   control messages (22.8+), from `GET /asterisk/info` and `GET /asterisk/modules/{name}`.
//! * [`StasisRoute`]: `Stasis(asterai,ai?org=acme&campaign=7)` gives StasisStart `args =
//!   ["ai?org=acme&campaign=7"]`; parsed into the same route and parameters as the FastAGI
//!   `agi_network_script`, so both paths route alike.

use std::borrow::Cow;
use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

use super::client::AriClient;
use super::error::AriError;

/// `POST /channels/externalMedia`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMedia {
    /// The Stasis application the channel enters (asterai's `ari.app`).
    pub app: String,
    pub channel_id: Option<String>,
    /// `host:port` (AudioSocket, RTP), a websocket_client.conf id (chan_websocket client
    /// mode), or nothing (chan_websocket server mode).
    pub external_host: Option<String>,
    /// `rtp`, `audiosocket` or `none` (websocket).
    pub encapsulation: String,
    /// `udp`, `tcp` or `websocket`.
    pub transport: String,
    /// `client` or `server` (websocket only).
    pub connection_type: Option<String>,
    /// `ulaw`, `slin`, `slin16`, …
    pub format: String,
    /// `both` (the only value Asterisk accepts here).
    pub direction: Option<String>,
    /// AudioSocket: the UUID. Otherwise the channel's Stasis arguments: asterai tags its media
    /// channels so their own StasisStart is recognized.
    pub data: Option<String>,
    /// chan_websocket dial options: `f(json)`, `n`, `c(ulaw)`, `p`, `d(both)`, `v(a=b,c=d)`.
    pub transport_data: Option<String>,
    /// Channel variables set on creation.
    pub variables: BTreeMap<String, String>,
}

/// The Stasis argument asterai gives its own external media channels, so the StasisStart of a
/// media channel is never taken for a call.
pub const MEDIA_CHANNEL_TAG: &str = "asterai-media";

impl ExternalMedia {
    /// A chan_websocket channel asterai connects to (`connection_type=server`), with control
    /// messages in JSON (`json = true`, Asterisk 22.8+) or plain text.
    pub fn websocket_server(app: &str, format: &str, json: bool) -> ExternalMedia {
        ExternalMedia {
            app: app.to_owned(),
            channel_id: None,
            external_host: None,
            encapsulation: "none".into(),
            transport: "websocket".into(),
            connection_type: Some("server".into()),
            format: format.to_owned(),
            direction: None,
            data: Some(MEDIA_CHANNEL_TAG.into()),
            transport_data: json.then(|| "f(json)".to_owned()),
            variables: BTreeMap::new(),
        }
    }

    /// An AudioSocket channel that connects to asterai's listener at `host` with `uuid`.
    pub fn audiosocket(app: &str, host: &str, uuid: &str, format: &str) -> ExternalMedia {
        ExternalMedia {
            app: app.to_owned(),
            channel_id: None,
            external_host: Some(host.to_owned()),
            encapsulation: "audiosocket".into(),
            transport: "tcp".into(),
            connection_type: None,
            format: format.to_owned(),
            direction: None,
            data: Some(uuid.to_owned()),
            transport_data: None,
            variables: BTreeMap::new(),
        }
    }

    /// The query, or why it must not be sent.
    pub(crate) fn query(&self) -> Result<Vec<(&'static str, String)>, AriError> {
        let invalid = |m: String| Err(AriError::Invalid(format!("externalMedia: {m}")));
        if self.app.trim().is_empty() {
            return invalid("the application is empty".into());
        }
        let format_ok = !self.format.is_empty()
            && self.format.len() <= 32
            && self.format.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !format_ok {
            return invalid(format!("format {:?}: expected a format name such as ulaw or slin16", self.format));
        }
        if !["rtp", "audiosocket", "none"].contains(&self.encapsulation.as_str()) {
            return invalid(format!("encapsulation {:?}: expected rtp, audiosocket or none", self.encapsulation));
        }
        if !["udp", "tcp", "websocket"].contains(&self.transport.as_str()) {
            return invalid(format!("transport {:?}: expected udp, tcp or websocket", self.transport));
        }
        let websocket = self.transport == "websocket";
        if websocket && self.encapsulation != "none" {
            return invalid("the websocket transport needs encapsulation none".into());
        }
        if self.encapsulation == "audiosocket" {
            if self.transport != "tcp" {
                return invalid("audiosocket needs the tcp transport".into());
            }
            if self.data.as_deref().is_none_or(|d| uuid::Uuid::parse_str(d).is_err()) {
                return invalid(format!("audiosocket needs a UUID as data, got {:?}", self.data));
            }
        }
        let server = match self.connection_type.as_deref() {
            None | Some("client") => false,
            Some("server") if websocket => true,
            Some("server") => return invalid("connection_type server is only for the websocket transport".into()),
            Some(other) => return invalid(format!("connection_type {other:?}: expected client or server")),
        };
        match (&self.external_host, server) {
            (None, false) => return invalid("external_host is needed unless it is a websocket server".into()),
            (Some(host), _) if host.trim().is_empty() || host.contains(['/', ' ', '\r', '\n']) => {
                return invalid(format!("external_host {host:?}: expected host:port or a connection id"));
            }
            _ => {}
        }
        if let Some(direction) = &self.direction
            && direction != "both"
        {
            return invalid(format!("direction {direction:?}: Asterisk accepts only both"));
        }
        if let Some(data) = &self.transport_data {
            if !websocket {
                return invalid("transport_data is only for the websocket transport".into());
            }
            check_transport_data(data, server).map_err(|e| AriError::Invalid(format!("externalMedia: {e}")))?;
        }
        if let Some(id) = &self.channel_id
            && (id.trim().is_empty() || id.contains(['/', ',', ' ']))
        {
            return invalid(format!("channel id {id:?}"));
        }
        let mut query = vec![("app", self.app.clone())];
        if let Some(id) = &self.channel_id {
            query.push(("channelId", id.clone()));
        }
        if let Some(host) = &self.external_host {
            query.push(("external_host", host.clone()));
        }
        query.push(("encapsulation", self.encapsulation.clone()));
        query.push(("transport", self.transport.clone()));
        if let Some(kind) = &self.connection_type {
            query.push(("connection_type", kind.clone()));
        }
        query.push(("format", self.format.clone()));
        if let Some(direction) = &self.direction {
            query.push(("direction", direction.clone()));
        }
        if let Some(data) = &self.data {
            query.push(("data", data.clone()));
        }
        if let Some(data) = &self.transport_data {
            query.push(("transport_data", data.clone()));
        }
        Ok(query)
    }
}

/// chan_websocket's dial options, as `transport_data` appends them to the dial string
/// (`WebSocket/INCOMING/<options>`). Each is a letter with an optional `(argument)`:
/// `c(codec)`, `n`, `v(params)`, `p`, `f(json|plain-text)`, `d(both|in|out)`. Anything else is
/// refused, above all an `f(…)` Asterisk does not know (it crashes 22.10.1).
pub fn check_transport_data(data: &str, server: bool) -> Result<(), String> {
    if data.is_empty() || data.len() > 256 || data.contains(['/', '\r', '\n', ' ', '&']) {
        return Err(format!("transport_data {data:?}: expected chan_websocket options such as f(json)"));
    }
    let mut rest = data;
    while let Some(letter) = rest.chars().next() {
        rest = &rest[1..];
        let arg = if let Some(inner) = rest.strip_prefix('(') {
            let Some(end) = inner.find(')') else {
                return Err(format!("transport_data {data:?}: option {letter} has no closing ')'"));
            };
            rest = &inner[end + 1..];
            Some(&inner[..end])
        } else {
            None
        };
        let ok = match (letter, arg) {
            ('f', Some(format)) => format.eq_ignore_ascii_case("json") || format.eq_ignore_ascii_case("plain-text"),
            ('d', Some(direction)) => ["both", "in", "out"].contains(&direction),
            ('c', Some(codec)) => !codec.is_empty() && codec.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            ('v', Some(params)) if !server => {
                !params.is_empty()
                    && params
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b',' | b'_' | b'-' | b'.'))
            }
            ('n' | 'p', None) => true,
            _ => false,
        };
        if !ok {
            let shown = arg.map_or(letter.to_string(), |a| format!("{letter}({a})"));
            return Err(format!(
                "transport_data {data:?}: option {shown} is not one asterai sends (f(json|plain-text), d(both|in|out), c(codec), v(k=v,…) for clients, n, p)"
            ));
        }
    }
    Ok(())
}

/// The media transports an Asterisk offers the streaming path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaSupport {
    /// `22.10.1`, when Asterisk said.
    pub version: Option<String>,
    /// chan_websocket is loaded (`WebSocket` external media).
    pub chan_websocket: bool,
    /// chan_websocket takes JSON control messages (`f(json)`, 22.8+; plain text otherwise).
    pub json_control: bool,
    /// chan_audiosocket is loaded (the fallback).
    pub audiosocket: bool,
}

impl MediaSupport {
    /// The transport asterai uses: chan_websocket when loaded, else AudioSocket, else none.
    pub fn preferred(&self) -> Option<&'static str> {
        if self.chan_websocket {
            Some("websocket")
        } else if self.audiosocket {
            Some("audiosocket")
        } else {
            None
        }
    }

    /// One line for `asterai doctor`.
    pub fn describe(&self) -> String {
        let version = self.version.as_deref().unwrap_or("unknown version");
        match (self.chan_websocket, self.audiosocket) {
            (true, audiosocket) => format!(
                "Asterisk {version}: chan_websocket ({} control messages){}; streaming calls use WebSocket media",
                if self.json_control { "JSON" } else { "plain-text" },
                if audiosocket { ", AudioSocket also loaded" } else { "" }
            ),
            (false, true) => format!(
                "Asterisk {version}: no chan_websocket, AudioSocket only; streaming calls use the AudioSocket fallback (stream.audiosocket_listen)"
            ),
            (false, false) => format!(
                "Asterisk {version}: neither chan_websocket nor chan_audiosocket is loaded; streaming calls are not possible (load chan_websocket.so, or chan_audiosocket.so)"
            ),
        }
    }
}

/// `major.minor` of a version string such as `22.10.1` or `certified-20.7-cert5`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let start = version.find(|c: char| c.is_ascii_digit())?;
    let mut parts = version[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Whether chan_websocket of `version` reads JSON control messages (22.8 and later). Unknown
/// versions and other branches get plain text, which every chan_websocket reads.
pub fn json_control_supported(version: &str) -> bool {
    matches!(major_minor(version), Some((major, minor)) if major > 22 || (major == 22 && minor >= 8))
}

/// Asks the connected Asterisk which media transports it has.
pub async fn detect_media(client: &AriClient) -> Result<MediaSupport, AriError> {
    let info = client.asterisk_info().await?;
    let version = info.version().map(str::to_owned);
    let loaded = |name: &'static str| async move {
        match client.module(name).await {
            Ok(module) => Ok(module.running()),
            Err(AriError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let chan_websocket = loaded("chan_websocket.so").await?;
    let audiosocket = loaded("chan_audiosocket.so").await?;
    let json_control = chan_websocket && version.as_deref().is_some_and(json_control_supported);
    Ok(MediaSupport { version, chan_websocket, json_control, audiosocket })
}

/// The route and parameters a call entered Stasis with: the first StasisStart argument,
/// `ai?org=acme&campaign=7`, read exactly like the FastAGI `agi_network_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StasisRoute {
    script: String,
}

impl StasisRoute {
    /// The route of a StasisStart's `args`; `None` without arguments or for asterai's own
    /// media channels.
    pub fn from_args(args: &[String]) -> Option<StasisRoute> {
        let first = args.first()?.trim();
        if first.is_empty() || first == MEDIA_CHANNEL_TAG {
            return None;
        }
        Some(StasisRoute { script: first.to_owned() })
    }

    /// The route: the path before `?`, without a leading `/` (`ai`).
    pub fn route(&self) -> &str {
        let path = self.script.split_once('?').map_or(self.script.as_str(), |(path, _)| path);
        path.trim_start_matches('/')
    }

    /// The query after `?`.
    pub fn query(&self) -> &str {
        self.script.split_once('?').map_or("", |(_, query)| query)
    }

    /// Query parameters, percent-decoded (`+` stays `+`, as on the FastAGI route).
    pub fn params(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.query().split('&').filter(|pair| !pair.is_empty()).map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode_str(key).decode_utf8_lossy(), percent_decode_str(value).decode_utf8_lossy())
        })
    }

    /// The first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.params().find(|(key, _)| key == name).map(|(_, value)| value)
    }
}

/// Whoever holds calls in the Stasis application (the streaming conversations). The one reader
/// of the application's events (the dialer's tracker) hands it the channels that enter the
/// application with a route, and every event about a channel.
pub trait StasisCalls: Send + Sync {
    /// `channel` entered the application with `args` (the dialer's own first argument,
    /// `outbound`, left out): true when it is taken (a call starts on it, or it is one of the
    /// holder's media channels), false to leave it to the reader. `call_id` is the call the
    /// dialer placed on the channel, if it did.
    fn start(&self, channel: &super::Channel, args: &[String], call_id: Option<&str>) -> bool;
    /// An event about a channel, for the calls held.
    fn event(&self, event: &super::AriEvent);
    /// asterai is shutting down: each call held ends at its next turn (as FastAGI calls do).
    fn wrap_up(&self);
    /// The calls held right now.
    fn active(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_queries_as_captured() {
        let mut media = ExternalMedia::websocket_server("mediacap", "ulaw", true);
        media.channel_id = Some("ws-server-ulaw-json-ws".into());
        media.data = None;
        let query = media.query().unwrap();
        // The capture's request: app, channelId, transport, encapsulation, connection_type,
        // format, transport_data (order aside).
        let map: BTreeMap<_, _> = query.into_iter().collect();
        assert_eq!(map["transport"], "websocket");
        assert_eq!(map["encapsulation"], "none");
        assert_eq!(map["connection_type"], "server");
        assert_eq!(map["format"], "ulaw");
        assert_eq!(map["transport_data"], "f(json)");
        assert!(!map.contains_key("external_host"));
        let audiosocket =
            ExternalMedia::audiosocket("a", "127.0.0.1:18766", "76ae9540-34e5-45dd-bb50-bfedc2c75fc4", "slin16");
        let map: BTreeMap<_, _> = audiosocket.query().unwrap().into_iter().collect();
        assert_eq!((map["encapsulation"].as_str(), map["transport"].as_str()), ("audiosocket", "tcp"));
        assert_eq!(map["data"], "76ae9540-34e5-45dd-bb50-bfedc2c75fc4");
    }

    #[test]
    fn what_asterisk_refuses_or_crashes_on_is_never_sent() {
        let ok = ExternalMedia::websocket_server("a", "slin16", true);
        for transport_data in ["f(xml)", "f()", "f", "f(json", "x", "v(a=b)", "f(json)/x", "d(sideways)", "f(json) n"] {
            let media = ExternalMedia { transport_data: Some(transport_data.into()), ..ok.clone() };
            let err = media.query().unwrap_err();
            assert!(matches!(err, AriError::Invalid(_)), "{transport_data}: {err}");
        }
        for transport_data in ["f(json)", "f(JSON)", "f(plain-text)", "f(json)n", "d(both)c(slin16)f(json)p"] {
            let media = ExternalMedia { transport_data: Some(transport_data.into()), ..ok.clone() };
            assert!(media.query().is_ok(), "{transport_data}");
        }
        assert!(check_transport_data("v(call_ref=abc123,lang=en)f(json)", false).is_ok(), "client mode");
        for broken in [
            ExternalMedia { encapsulation: "rtp".into(), ..ok.clone() },
            ExternalMedia { format: "".into(), ..ok.clone() },
            ExternalMedia { format: "slin16&app=x".into(), ..ok.clone() },
            ExternalMedia { connection_type: Some("peer".into()), ..ok.clone() },
            ExternalMedia { direction: Some("in".into()), ..ok.clone() },
            ExternalMedia { app: " ".into(), ..ok.clone() },
            ExternalMedia { connection_type: Some("client".into()), ..ok.clone() },
            ExternalMedia::audiosocket("a", "127.0.0.1:1", "not-a-uuid", "slin"),
            ExternalMedia {
                connection_type: Some("server".into()),
                ..ExternalMedia::audiosocket("a", "h:1", "76ae9540-34e5-45dd-bb50-bfedc2c75fc4", "slin")
            },
        ] {
            assert!(broken.query().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn versions_and_descriptions() {
        assert!(json_control_supported("22.10.1"));
        assert!(json_control_supported("22.8.0"));
        assert!(!json_control_supported("22.7.0"));
        assert!(json_control_supported("23.0.0-rc1"));
        assert!(!json_control_supported("21.12.0"));
        assert!(!json_control_supported("GIT-master"));
        let support = MediaSupport { version: Some("20.9.0".into()), audiosocket: true, ..Default::default() };
        assert_eq!(support.preferred(), Some("audiosocket"));
        assert!(support.describe().contains("AudioSocket only"), "{}", support.describe());
        assert_eq!(MediaSupport::default().preferred(), None);
    }

    #[test]
    fn stasis_args_route_like_fastagi() {
        let route = StasisRoute::from_args(&["ai?org=acme&campaign=7&name=J%C3%BCrgen%20K&x=a+b".into()]).unwrap();
        assert_eq!(route.route(), "ai");
        assert_eq!(route.param("org").as_deref(), Some("acme"));
        assert_eq!(route.param("campaign").as_deref(), Some("7"));
        assert_eq!(route.param("name").as_deref(), Some("Jürgen K"));
        assert_eq!(route.param("x").as_deref(), Some("a+b"));
        assert_eq!(route.param("contact"), None);
        assert_eq!(StasisRoute::from_args(&["/ai".into()]).unwrap().route(), "ai");
        assert_eq!(StasisRoute::from_args(&[]), None);
        assert_eq!(StasisRoute::from_args(&[MEDIA_CHANNEL_TAG.into()]), None, "asterai's own media channel");
    }
}
