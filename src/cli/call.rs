//! `asterai call`: one outbound call, placed from the command line.
//!
//! The command talks to Asterisk's ARI itself (the config's `[ari]` and `[dialer]`) and writes
//! the call to the database, exactly as `POST /v1/calls` does in the daemon. The running daemon
//! follows the call: the channel enters its ARI application when answered, and the daemon
//! adopts the call from the store by its id. So the daemon must be running with the same
//! `ari.app`; the command checks that before it dials.

use std::time::Duration;

use anyhow::Context as _;

use super::Context;
use crate::ari::AriClient;
use crate::dialer::{CallRequest, DialSettings, Dialer};
use crate::feed::{Hub, Publisher};

/// Place one outbound call through Asterisk (ARI).
///
/// The number must be E.164 and not on the organization's do-not-call list; nothing is dialed
/// otherwise. The call is stored first, then originated with the variables ASTERAI_CALL_ID,
/// ASTERAI_ORG, ASTERAI_CAMPAIGN and ASTERAI_CONTACT; once answered it continues in
/// dialer.context, whose ai route holds the conversation. Needs `asterai serve` running with
/// ari.url set: the daemon follows the call's status.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The number to call, in E.164 form (+15551230000).
    number: String,
    /// Organization (may be left out when there is only one).
    #[arg(long)]
    org: Option<String>,
    /// The campaign the call belongs to (an id).
    #[arg(long)]
    campaign: Option<i64>,
    /// The contact called (an id); its fields personalise the conversation.
    #[arg(long)]
    contact: Option<i64>,
    /// How the answered call talks: `agi` (the dialplan's FastAGI route) or `stream` (held in
    /// the ARI application, audio streamed, barge-in); default: conversation.media.
    #[arg(long, value_parser = ["agi", "stream"])]
    media: Option<String>,
    /// Follow the call's status until it ends.
    #[arg(long)]
    wait: bool,
    /// Print the call as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    let config = context.config;
    anyhow::ensure!(
        config.ari.enabled(),
        "ARI is not configured: set ari.url, ari.username and ari.password (see `asterai config --keys`)"
    );
    super::runtime()?.block_on(async {
        let store = super::store(&config).await?;
        let org = super::calls::pick_org(&store, args.org.as_deref()).await?;
        let client = AriClient::new(config.ari.settings()).context("ari.url")?;
        let publisher = Publisher::new(store.clone(), Hub::new());
        let dialer = Dialer::new(publisher, client, DialSettings::from_config(&config), None);
        let request = CallRequest {
            to: args.number.clone(),
            campaign: args.campaign,
            contact: args.contact,
            media: args.media.clone(),
        };
        // Refusals (number, do-not-call list) need no Asterisk: check them before it is asked.
        let number = crate::phone::parse(&request.to).map_err(|e| anyhow::anyhow!("{e}; nothing was dialed"))?;
        if store.is_dnc(org.id, &number).await? {
            anyhow::bail!("{number} is on {}'s do-not-call list; nothing was dialed", org.slug);
        }
        let version = dialer.check_ready().await?;
        tracing::debug!(version, "Asterisk ready");
        let call = dialer.place_call(&org, &request).await?;
        if args.json && !args.wait {
            println!("{}", serde_json::to_string_pretty(&call)?);
        } else if !args.json {
            println!("call {} to {} placed ({})", call.id, call.to, call.status);
        }
        if args.wait {
            let mut last = call.status;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(now) = store.call_any(&call.id).await? else { break };
                if now.status != last {
                    if !args.json {
                        println!(
                            "{}{}",
                            now.status,
                            now.status_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                    }
                    last = now.status;
                }
                if now.ended_at.is_some() {
                    if args.json {
                        println!("{}", serde_json::to_string_pretty(&now)?);
                    }
                    break;
                }
            }
        }
        store.close().await;
        Ok(())
    })
}
