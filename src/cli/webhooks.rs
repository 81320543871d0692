//! `asterai webhooks`: an organization's webhook endpoints (add, endpoints, enable, disable,
//! remove) and the outbox of deliveries (list, retry). See [`crate::webhooks`].

use super::Context;
use crate::store::webhooks::{DeliveryStatus, NewWebhookEndpoint, WEBHOOK_EVENTS};

/// Webhooks: call.started, call.ended and call.analyzed, signed, to an organization's endpoints.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add an endpoint: events of the organization's calls are POSTed to it, signed.
    Add {
        /// Where to POST (http:// or https://).
        #[arg(long)]
        url: String,
        /// The signing secret's name, env:ASTERAI_SECRET_<NAME>: a variable of the daemon's
        /// environment holding it (never the secret itself).
        #[arg(long)]
        secret: String,
        /// The event types wanted, comma-separated (default: all of call.started, call.ended, call.analyzed).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Add it turned off (`webhooks enable` turns it on).
        #[arg(long)]
        disabled: bool,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// List the organization's endpoints.
    Endpoints {
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Turn an endpoint on: its waiting deliveries go out, new events are queued for it.
    Enable {
        /// The endpoint's id (`webhooks endpoints`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// Turn an endpoint off: nothing is sent to it, and new events are not queued for it.
    Disable {
        /// The endpoint's id (`webhooks endpoints`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// Remove an endpoint; its pending deliveries become dead (still listed).
    Remove {
        /// The endpoint's id (`webhooks endpoints`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// List the deliveries, newest first.
    List {
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Only deliveries with this status: pending, delivered or dead.
        #[arg(long)]
        status: Option<DeliveryStatus>,
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print JSON (with each delivery's body) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a dead (or failing) delivery back to pending, due now; or every dead one with --dead.
    Retry {
        /// The delivery's id (`webhooks list`).
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        delivery: Option<String>,
        /// Every dead delivery of the organization.
        #[arg(long)]
        dead: bool,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        let result = command(&store, args.command).await;
        store.close().await;
        result
    })
}

async fn command(store: &crate::store::Store, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Add { url, secret, events, disabled, org } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            let events = if events.is_empty() {
                WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect()
            } else {
                events.into_iter().map(|e| e.trim().to_owned()).collect()
            };
            let new = NewWebhookEndpoint { org_id: org.id, url, secret, events, enabled: !disabled };
            crate::webhooks::check_endpoint(&new).map_err(|e| anyhow::anyhow!("webhooks add: {e}"))?;
            let endpoint = store.add_webhook_endpoint(&new).await?;
            let name = endpoint.secret.trim_start_matches("env:");
            println!(
                "webhook endpoint {} added to {}: {} ({}{}), signed with {name}",
                endpoint.id,
                org.slug,
                endpoint.url,
                endpoint.events.join(", "),
                if endpoint.enabled { "" } else { ", disabled" }
            );
            if std::env::var(name).map_or(true, |v| v.is_empty()) {
                eprintln!(
                    "note: {name} is not set here; the daemon needs it in its environment, or its deliveries fail until it is"
                );
            }
        }
        Command::Endpoints { org, json } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            let endpoints = store.webhook_endpoints(org.id).await?;
            if json {
                let text = serde_json::to_string_pretty(&serde_json::json!({ "endpoints": endpoints }))?;
                return super::write_stdout(format!("{text}\n").as_bytes());
            }
            let mut out = String::new();
            for e in &endpoints {
                out.push_str(&format!(
                    "{:>4}  {:<8}  {}  {}  secret {}\n",
                    e.id,
                    if e.enabled { "enabled" } else { "disabled" },
                    e.url,
                    e.events.join(","),
                    e.secret
                ));
            }
            if endpoints.is_empty() {
                out.push_str(&format!("{} has no webhook endpoints; add one with `asterai webhooks add`\n", org.slug));
            }
            super::write_stdout(out.as_bytes())?;
        }
        Command::Enable { id, org } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            store.set_webhook_endpoint_enabled(org.id, id, true).await?;
            println!("webhook endpoint {id} of {} enabled", org.slug);
        }
        Command::Disable { id, org } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            store.set_webhook_endpoint_enabled(org.id, id, false).await?;
            println!("webhook endpoint {id} of {} disabled", org.slug);
        }
        Command::Remove { id, org } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            let dead = store.remove_webhook_endpoint(org.id, id).await?;
            println!("webhook endpoint {id} removed from {}; its pending deliveries now dead: {dead}", org.slug);
        }
        Command::List { org, status, limit, json } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            let deliveries = store.webhook_deliveries(org.id, status, limit).await?;
            if json {
                let text = serde_json::to_string_pretty(&serde_json::json!({ "deliveries": deliveries }))?;
                return super::write_stdout(format!("{text}\n").as_bytes());
            }
            let mut out = String::new();
            for d in &deliveries {
                let detail = match d.status {
                    DeliveryStatus::Delivered => {
                        d.delivered_at.map(|t| format!("at {}", t.format("%Y-%m-%d %H:%M:%S"))).unwrap_or_default()
                    }
                    DeliveryStatus::Pending if d.attempts == 0 => String::new(),
                    DeliveryStatus::Pending => format!(
                        "next {}: {}",
                        d.next_attempt_at.format("%Y-%m-%d %H:%M:%S"),
                        d.last_error.as_deref().unwrap_or("-")
                    ),
                    DeliveryStatus::Dead => d.last_error.clone().unwrap_or_default(),
                };
                out.push_str(&format!(
                    "{}  {:<9}  {:<13}  call {}  {} attempt(s)  {}  {}\n",
                    d.id, d.status, d.kind, d.call_id, d.attempts, d.url, detail
                ));
            }
            if deliveries.is_empty() {
                out.push_str("no webhook deliveries\n");
            }
            super::write_stdout(out.as_bytes())?;
        }
        Command::Retry { delivery, dead, org } => {
            let org = super::calls::pick_org(store, org.as_deref()).await?;
            let at = crate::store::now();
            match delivery {
                Some(id) if !dead => {
                    store.retry_webhook_delivery(org.id, &id, at).await?;
                    println!("webhook delivery {id} of {} is pending again, due now", org.slug);
                }
                _ => {
                    let n = store.retry_dead_webhooks(org.id, at).await?;
                    println!("dead webhook deliveries of {} pending again, due now: {n}", org.slug);
                }
            }
        }
    }
    Ok(())
}
