//! The routes every asterai daemon serves without configuration.

use super::command::{GetVariable, SetVariable, Verbose};
use super::handler::HandlerResult;
use super::session::AgiSession;

/// `agi://host:4573/health`: proves the daemon answers. It writes `asterai ok` to the Asterisk
/// console, reads `CHANNEL` and sets `ASTERAI_HEALTH=ok` for the dialplan to check.
pub async fn health(session: AgiSession) -> HandlerResult {
    session.send(Verbose::new("asterai ok", 1)).await?;
    let channel = session.send(GetVariable::new("CHANNEL")).await?;
    session.send(SetVariable::new("ASTERAI_HEALTH", "ok")).await?;
    tracing::debug!(channel = channel.as_deref().unwrap_or(""), "health check answered");
    Ok(())
}

/// Any path nobody serves: says so on the Asterisk console and in `ASTERAI_STATUS`.
pub async fn unknown(session: AgiSession) -> HandlerResult {
    let route = printable(session.env().route());
    tracing::warn!(route = %route, script = session.env().network_script(), "AGI request for an unknown route");
    session.send(Verbose::new(format!("asterai: unknown route {route}"), 1)).await?;
    session.send(SetVariable::new("ASTERAI_STATUS", "unknown_route")).await?;
    Ok(())
}

/// The route as a caller typed it, with control characters replaced so it can go into a command.
fn printable(route: &str) -> String {
    route.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
