//! `asterai feed`: tails the live feed in the terminal.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Context;
use crate::store::{Event, EventKind};

/// Tail the live feed: every call event of the token's organization, as it happens.
///
/// Reconnects by itself and resumes after the last event shown, so nothing is missed or shown
/// twice. Stop with Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// API token (`asterai token create`).
    #[arg(long, env = "ASTERAI_TOKEN", hide_env_values = true)]
    token: String,
    /// The daemon's address: `http://host:port`, or `https://`/`wss://` through a TLS proxy in
    /// front of it. Default: http.listen from the configuration.
    #[arg(long, env = "ASTERAI_FEED_URL")]
    url: Option<String>,
    /// PEM file of the certificate authority a `https://`/`wss://` address's certificate must
    /// chain to (a private CA); only it is trusted. Default: the public web roots.
    #[arg(long, env = "ASTERAI_FEED_CA_FILE", value_name = "PEM")]
    ca_file: Option<std::path::PathBuf>,
    /// Start after this event id (0 replays everything); default: from now.
    #[arg(long)]
    since: Option<i64>,
    /// Print one JSON event per line instead of readable text.
    #[arg(long)]
    json: bool,
    /// Only this call.
    #[arg(long)]
    call: Option<String>,
}

fn feed_url(base: &str, since: Option<i64>, call: Option<&str>) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else if let Some((scheme, _)) = base.split_once("://") {
        anyhow::bail!("--url {base}: unknown scheme {scheme}:// (expected http, https, ws or wss)")
    } else {
        format!("ws://{base}")
    };
    let mut url = format!("{base}/v1/feed");
    let mut params = Vec::new();
    if let Some(since) = since {
        params.push(format!("since={since}"));
    }
    if let Some(call) = call {
        params.push(format!(
            "call_id={}",
            percent_encoding::utf8_percent_encode(call, percent_encoding::NON_ALPHANUMERIC)
        ));
    }
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    Ok(url)
}

/// One event as readable text.
pub fn human(event: &Event) -> String {
    let time = event.at.format("%H:%M:%S%.3f");
    let call = event.call_id.as_deref().unwrap_or("-");
    let d = &event.data;
    let s = |key: &str| d[key].as_str().unwrap_or("").to_owned();
    let head = format!("#{:<6} {time}  {}  {call}", event.id, event.org);
    match event.kind {
        EventKind::CallStarted => format!("{head}  call started: {} {} → {}", s("direction"), s("from"), s("to")),
        EventKind::CallStatusUpdate => {
            let reason = d["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
            format!("{head}  status: {} → {}{reason}", s("previous"), s("status"))
        }
        EventKind::ConversationTurn if d["turn"].as_i64() == Some(0) => {
            format!("{head}  greeting\n    agent:  {}", s("agent"))
        }
        EventKind::ConversationTurn => {
            let analysis = [
                d["emotion"].as_str().map(str::to_owned),
                d["intent"].as_str().map(str::to_owned),
                d["confidence"].as_f64().map(|c| format!("{c:.2}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
            format!(
                "{head}  turn {}  [{analysis}]  {} ms\n    caller: {}\n    agent:  {}",
                d["turn"],
                d["latency_ms"]["total"],
                s("caller"),
                s("agent")
            )
        }
        EventKind::CallEnded => format!(
            "{head}  call ended: {} / {} after {:.1} s, {} turns",
            s("status"),
            d["outcome"].as_str().unwrap_or("-"),
            d["duration_s"].as_f64().unwrap_or(0.0),
            d["turns"]
        ),
        EventKind::CallAnalyzed => {
            let success = match d["success"].as_bool() {
                Some(true) => "success",
                Some(false) => "no success",
                None => "-",
            };
            let error = d["error"].as_str().map(|e| format!(" (error: {e})")).unwrap_or_default();
            format!("{head}  call analyzed: {success}: {}{error}", d["summary"].as_str().unwrap_or("-"))
        }
        EventKind::SupervisorJoined => format!("{head}  supervisor {} listens", s("supervisor")),
        EventKind::SupervisorLeft => format!("{head}  supervisor {} stopped listening", s("supervisor")),
        EventKind::Coached => format!("{head}  supervisor {} coached the AI: {}", s("supervisor"), s("text")),
        EventKind::AiPaused => format!("{head}  supervisor {} paused the AI (caller on hold)", s("supervisor")),
        EventKind::AiResumed => format!("{head}  supervisor {} resumed the AI", s("supervisor")),
        EventKind::BargeStarted => format!("{head}  supervisor {} barged in (speaks to the caller)", s("supervisor")),
        EventKind::BargeEnded => format!("{head}  supervisor {} stopped barging in", s("supervisor")),
        EventKind::TakeoverStarted => format!("{head}  supervisor {} took the call over", s("supervisor")),
        EventKind::TakeoverEnded => format!("{head}  supervisor {} gave the call back to the AI", s("supervisor")),
        EventKind::CampaignStatusUpdate => {
            let reason = d["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
            format!(
                "{head}  campaign {} {:?}: {} → {}{reason}",
                event.campaign.map_or("-".to_owned(), |c| c.to_string()),
                s("name"),
                s("previous"),
                s("status")
            )
        }
    }
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    let base = args.url.clone().unwrap_or_else(|| format!("http://{}", context.config.http.listen));
    super::runtime()?.block_on(tail(args, base))
}

async fn tail(args: Args, base: String) -> anyhow::Result<()> {
    let tls = match &args.ca_file {
        Some(path) => Some(
            crate::tls::trusting_only(path).map_err(|why| anyhow::anyhow!("--ca-file {}: {why}", path.display()))?,
        ),
        None => None,
    };
    let mut since = args.since;
    let mut delay = Duration::from_millis(500);
    loop {
        let url = feed_url(&base, since, args.call.as_deref())?;
        let mut request = url.as_str().into_client_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {}", args.token).parse()?);
        // A small read buffer: tungstenite zero-fills it on every read (128 KiB by default).
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
        let connector = tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, connector);
        let (mut socket, _) = match connecting.await {
            Ok(connected) => connected,
            // A certificate refused stays refused: say which setting fixes it, do not retry.
            Err(WsError::Io(e)) if crate::tls::is_certificate_error(&e) => match &args.ca_file {
                Some(path) => {
                    anyhow::bail!("{base}: the certificate is not signed by --ca-file {}: {e}", path.display())
                }
                None => anyhow::bail!(
                    "{base}: the certificate is not trusted by the public web roots ({e}); pass --ca-file with the \
                     certificate authority that signed it"
                ),
            },
            Err(WsError::Http(response))
                if matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
            {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                anyhow::bail!("the daemon refused the token ({}): {body}", response.status().as_u16());
            }
            Err(e) => {
                eprintln!("feed: cannot connect to {base}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(500);
        // Said at once, so a quiet feed does not look like a hung command.
        match since {
            Some(after) => {
                eprintln!("feed: connected to {base}, from event #{after} on; waiting for events (Ctrl-C to stop)")
            }
            None => eprintln!("feed: connected to {base}; waiting for events (Ctrl-C to stop)"),
        }
        let mut resume_now = false;
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                    if value["type"].as_str().is_some_and(|t| t.starts_with("feed.")) {
                        continue;
                    }
                    let Ok(event) = serde_json::from_value::<Event>(value) else { continue };
                    since = Some(event.id);
                    if args.json {
                        println!("{text}");
                    } else {
                        println!("{}", human(&event));
                    }
                }
                Ok(Message::Ping(payload)) => {
                    let _ = socket.send(Message::Pong(payload)).await;
                }
                Ok(Message::Close(frame)) => {
                    if let Some(frame) = frame {
                        resume_now = u16::from(frame.code) == crate::feed::subscriber::CLOSE_SLOW;
                        eprintln!(
                            "feed: closed by the daemon ({} {}); resuming after #{}",
                            u16::from(frame.code),
                            frame.reason,
                            since.unwrap_or(0)
                        );
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("feed: connection lost: {e}; resuming after #{}", since.unwrap_or(0));
                    break;
                }
            }
        }
        if !resume_now {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(feed_url("http://127.0.0.1:4574", Some(5), None).unwrap(), "ws://127.0.0.1:4574/v1/feed?since=5");
        assert_eq!(
            feed_url("127.0.0.1:4574/", None, Some("a b")).unwrap(),
            "ws://127.0.0.1:4574/v1/feed?call_id=a%20b"
        );
        assert_eq!(
            feed_url("https://monitor.example:8443/", None, None).unwrap(),
            "wss://monitor.example:8443/v1/feed"
        );
        assert_eq!(feed_url("wss://x", Some(0), None).unwrap(), "wss://x/v1/feed?since=0");
        assert!(feed_url("ftp://x", None, None).unwrap_err().to_string().contains("unknown scheme ftp://"));
    }
}
