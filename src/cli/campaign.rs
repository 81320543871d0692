//! `asterai campaign`: create campaigns, import their contacts, start, pause and stop them.
//!
//! The commands work on the database; the running daemons (`asterai serve` with `ari.url`
//! and `dialer.campaigns`) dial the contacts of running campaigns.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use crate::dialer::CampaignSettings;
use crate::dialer::import::{self, ImportReport};
use crate::store::campaigns::Campaign;
use crate::store::{CampaignStats, Store};

/// Outbound campaigns: contacts called by the running daemons, within limits and windows.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a campaign (draft). Settings not given take their defaults: one call at a time,
    /// 08:00-21:00 every day in each contact's timezone (UTC when unknown).
    Create(Box<CreateArgs>),
    /// Import contacts from a CSV file (columns phone, first_name, last_name, email, company,
    /// timezone, and any others as contact fields). Bad rows are reported by line; the good
    /// ones land; numbers already in the campaign are skipped.
    Import {
        /// The campaign's id (see `asterai campaign list`).
        id: i64,
        /// The CSV file: a header row naming the columns, then one contact per row.
        file: PathBuf,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Print the report as JSON.
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start (or resume) dialing: the running daemons with ARI (`ari.url`) and
    /// `dialer.campaigns` call its pending contacts.
    Start {
        /// The campaign's id (see `asterai campaign list`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// Pause a running campaign: no new calls; calls in flight go on; `start` resumes it.
    Pause {
        /// The campaign's id (see `asterai campaign list`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// Stop for good: no new calls; calls in flight go on. A stopped campaign cannot be
    /// started again (create a new one).
    Stop {
        /// The campaign's id (see `asterai campaign list`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// A campaign's state, settings, contacts and calls by status, and its figures: progress,
    /// outcomes, answer rate, average handling time, calls in the last hour and ETA (the same
    /// figures as `GET /v1/campaigns/{id}/stats`).
    Status {
        /// The campaign's id (see `asterai campaign list`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The campaign's compliance report: attempts per contact with UTC and local times, the
    /// checks passed, calls refused and why, the abandon rate (the same report as
    /// `GET /v1/campaigns/{id}/compliance`). Nothing in it is legal advice.
    Compliance {
        /// The campaign's id (see `asterai campaign list`).
        id: i64,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Print the report as CSV (as `?format=csv` gives it).
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the organization's campaigns.
    List {
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `asterai campaign create`.
#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// The campaign's name, unique in the organization.
    name: String,
    /// Organization (may be left out when there is only one).
    #[arg(long)]
    org: Option<String>,
    /// The whole settings object as JSON (see the README); the options below override it.
    #[arg(long, value_name = "JSON")]
    settings: Option<String>,
    /// Calls at once, across every daemon.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Least time between two call starts, e.g. 2s.
    #[arg(long)]
    pacing: Option<String>,
    /// How long the far end may ring, e.g. 30s.
    #[arg(long)]
    ring_timeout: Option<String>,
    /// Timezone of contacts without one (IANA, e.g. America/New_York).
    #[arg(long)]
    timezone: Option<String>,
    /// Local calling hours, e.g. 09:00-20:00.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    window: Option<String>,
    /// Days calls may start, e.g. mon,tue,wed,thu,fri.
    #[arg(long, value_delimiter = ',')]
    days: Option<Vec<String>>,
    /// Retries after a busy line: ATTEMPTSxDELAY, e.g. 2x10m.
    #[arg(long, value_name = "NxDELAY")]
    retry_busy: Option<String>,
    /// Retries after no answer, e.g. 2x1h.
    #[arg(long, value_name = "NxDELAY")]
    retry_no_answer: Option<String>,
    /// Retries after a failed call, e.g. 1x30m.
    #[arg(long, value_name = "NxDELAY")]
    retry_failed: Option<String>,
    /// The agent that holds the campaign's calls (default: the organization's default agent).
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `2x10m` → `{"attempts": 2, "delay": "10m"}`.
fn retry(text: &str, option: &str) -> anyhow::Result<Value> {
    let (attempts, delay) = text
        .split_once(['x', 'X'])
        .with_context(|| format!("{option}: expected ATTEMPTSxDELAY such as 2x10m, got {text:?}"))?;
    let attempts: u32 = attempts
        .trim()
        .parse()
        .with_context(|| format!("{option}: expected a number of attempts, got {attempts:?}"))?;
    Ok(json!({"attempts": attempts, "delay": delay.trim()}))
}

/// The settings object from `--settings` and the options.
fn settings_from(args: &CreateArgs) -> anyhow::Result<CampaignSettings> {
    let CreateArgs { settings, max_concurrent, pacing, ring_timeout, timezone, window, days, .. } = args;
    let retries = [("busy", &args.retry_busy), ("no_answer", &args.retry_no_answer), ("failed", &args.retry_failed)];
    let mut value: Value = match settings {
        Some(text) => serde_json::from_str(text).context("--settings: expected a JSON object")?,
        None => json!({}),
    };
    anyhow::ensure!(value.is_object(), "--settings: expected a JSON object");
    if let Some(n) = *max_concurrent {
        value["max_concurrent"] = json!(n);
    }
    if let Some(p) = pacing {
        value["pacing"] = json!(p);
    }
    if let Some(r) = ring_timeout {
        value["ring_timeout"] = json!(r);
    }
    if let Some(tz) = timezone {
        value["timezone"] = json!(tz);
    }
    if let Some(agent) = &args.agent {
        value["agent"] = json!(agent);
    }
    if value.get("window").is_none() && (window.is_some() || days.is_some()) {
        value["window"] = json!({});
    }
    if let Some(window) = window {
        let (start, end) = window
            .split_once('-')
            .with_context(|| format!("--window: expected HH:MM-HH:MM such as 08:00-21:00, got {window:?}"))?;
        value["window"]["start"] = json!(start.trim());
        value["window"]["end"] = json!(end.trim());
    }
    if let Some(days) = days {
        value["window"]["days"] = json!(days);
    }
    for (key, text) in retries {
        if let Some(text) = text {
            if value.get("retries").is_none() {
                value["retries"] = json!({});
            }
            value["retries"][key] = retry(text, &format!("--retry-{}", key.replace('_', "-")))?;
        }
    }
    CampaignSettings::from_json(&value).map_err(anyhow::Error::msg)
}

async fn campaign(store: &Store, org: Option<&str>, id: i64) -> anyhow::Result<(crate::store::Org, Campaign)> {
    let org = super::calls::pick_org(store, org).await?;
    let campaign = store.campaign(org.id, id).await?.with_context(|| format!("no campaign {id} in {}", org.slug))?;
    Ok((org, campaign))
}

/// `1 row`, `2 rows`.
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// The report of an import, for people.
fn print_report(report: &ImportReport) {
    println!(
        "{}: {} imported, {} already in the campaign, {} rejected",
        count(report.rows, "row"),
        report.imported,
        report.duplicates.len(),
        report.rejected.len()
    );
    for row in &report.rejected {
        println!("  line {}: {}", row.line, row.reason);
    }
    for row in &report.duplicates {
        println!("  line {}: skipped, {}", row.line, row.reason);
    }
}

/// Status counts and settings of a campaign, as the CLI and the API show them, and under
/// `stats` the figures of `GET /v1/campaigns/{id}/stats` (the same [`CampaignStats`]).
async fn status_json(store: &Store, campaign: &Campaign, stats: &CampaignStats) -> anyhow::Result<Value> {
    let mut body = serde_json::to_value(campaign)?;
    body["contacts"] = serde_json::to_value(store.campaign_contact_counts(campaign.id).await?)?;
    body["calls"] = serde_json::to_value(store.campaign_call_counts(campaign.id).await?)?;
    body["stats"] = serde_json::to_value(stats)?;
    Ok(body)
}

/// The campaign figures, for people: the lines `asterai campaign status` prints after the state.
pub(crate) fn stats_lines(stats: &CampaignStats) -> Vec<String> {
    let p = &stats.progress;
    let percent = |rate: Option<f64>| rate.map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0));
    let outcomes = if stats.calls.outcomes.is_empty() {
        "none".to_owned()
    } else {
        stats.calls.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    vec![
        format!(
            "progress  {} pending, {} dialing, {} done, {} failed, {} do-not-call (of {})",
            p.pending, p.dialing, p.done, p.failed, p.do_not_call, p.total
        ),
        format!("outcomes  {outcomes}"),
        format!(
            "answered  {} of {} calls (answer rate {})",
            stats.calls.answered,
            stats.calls.calls,
            percent(stats.calls.answer_rate)
        ),
        format!("aht       {}", stats.calls.average_handling_s.map_or_else(|| "—".to_owned(), |s| format!("{s:.1} s"))),
        format!("rate      {} calls in the last hour", stats.calls_per_hour),
        format!(
            "eta       {}",
            stats.eta.map_or_else(
                || "— (only while running with calls in the last hour)".to_owned(),
                |eta| eta.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        ),
    ]
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        match args.command {
            Command::Create(args) => {
                let org = super::calls::pick_org(&store, args.org.as_deref()).await?;
                let settings = settings_from(&args)?;
                if let Some(agent) = &settings.agent {
                    anyhow::ensure!(
                        store.agent(org.id, agent).await?.is_some(),
                        "campaign settings: agent: {} has no agent {agent:?} (see `asterai agent list`)",
                        org.slug
                    );
                }
                let campaign = store.create_campaign(org.id, &args.name, &settings.to_json()).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&campaign)?);
                } else {
                    println!("campaign {} {:?} created in {} (draft)", campaign.id, campaign.name, org.slug);
                    println!("{}", campaign.id);
                }
            }
            Command::Import { id, file, org, json } => {
                let (org, campaign) = campaign(&store, org.as_deref(), id).await?;
                let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let terminal = std::io::stderr().is_terminal();
                let mut progress = |done: usize, total: usize| {
                    if terminal && total > 0 {
                        let width = 30;
                        let filled = done * width / total;
                        eprint!("\r[{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(width - filled));
                        let _ = std::io::stderr().flush();
                    }
                };
                let report = import::import(&store, org.id, campaign.id, &bytes, &mut progress)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if terminal {
                    eprintln!();
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print_report(&report);
                }
                // The good rows landed, but the file was not imported whole: say so in the exit
                // status too, so a script does not go on as if it had been.
                anyhow::ensure!(
                    report.rejected.is_empty(),
                    "{} rejected (the others were imported); fix {} and import the file again: \
                     rows already in the campaign are skipped",
                    count(report.rejected.len(), "row"),
                    if report.rejected.len() == 1 { "that line" } else { "those lines" }
                );
            }
            Command::Start { id, org } => {
                set_state(&store, org.as_deref(), id, "running").await?;
                let config = &context.config;
                if config.ari.url.trim().is_empty() || !config.dialer.campaigns {
                    let why = if config.ari.url.trim().is_empty() { "no ari.url" } else { "dialer.campaigns = false" };
                    eprintln!(
                        "note: this configuration has {why}, so a daemon started with it dials nothing; \
                         the campaign is dialed by daemons with ari.url set and dialer.campaigns = true"
                    );
                }
            }
            Command::Pause { id, org } => set_state(&store, org.as_deref(), id, "paused").await?,
            Command::Stop { id, org } => set_state(&store, org.as_deref(), id, "stopped").await?,
            Command::Status { id, org, json } => {
                let (org, campaign) = campaign(&store, org.as_deref(), id).await?;
                let stats = store
                    .campaign_stats(org.id, campaign.id, chrono::Utc::now())
                    .await?
                    .with_context(|| format!("no campaign {id} in {}", org.slug))?;
                let body = status_json(&store, &campaign, &stats).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    println!("campaign  {} {:?} ({})", campaign.id, campaign.name, campaign.status);
                    if let Some(reason) = &campaign.status_reason {
                        println!("reason    {reason}");
                    }
                    println!("settings  {}", campaign.settings);
                    println!("contacts  {}", counts(&body["contacts"]));
                    println!("calls     {}", counts(&body["calls"]));
                    for line in stats_lines(&stats) {
                        println!("{line}");
                    }
                }
            }
            Command::Compliance { id, org, csv, json } => {
                let (org, campaign) = campaign(&store, org.as_deref(), id).await?;
                let compliance = crate::dialer::compliance::Compliance::load(&context.config.dialer.compliance)
                    .map_err(anyhow::Error::msg)?;
                let report = crate::dialer::report::Report::for_campaign(
                    &store,
                    &compliance,
                    &org.slug,
                    &campaign,
                    crate::store::now(),
                )
                .await?;
                if csv {
                    let text = report.to_csv().map_err(anyhow::Error::msg)?;
                    super::write_stdout(text.as_bytes())?;
                } else if json {
                    super::write_stdout(format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes())?;
                } else {
                    super::write_stdout(report_text(&report).as_bytes())?;
                }
            }
            Command::List { org, json } => {
                let org = super::calls::pick_org(&store, org.as_deref()).await?;
                let campaigns = store.list_campaigns(org.id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&campaigns)?);
                } else {
                    println!("{:>6}  {:<24} {:<10} contacts", "id", "name", "status");
                    for c in campaigns {
                        let contacts = store.campaign_contact_counts(c.id).await?;
                        let total: i64 = contacts.values().sum();
                        println!("{:>6}  {:<24} {:<10} {total}", c.id, c.name, c.status);
                    }
                }
            }
        }
        store.close().await;
        Ok(())
    })
}

async fn set_state(store: &Store, org: Option<&str>, id: i64, status: &str) -> anyhow::Result<()> {
    let (org, campaign) = campaign(store, org, id).await?;
    if status == "running" {
        // Refuse to run on settings the runner would skip.
        CampaignSettings::from_json(&campaign.settings).map_err(anyhow::Error::msg)?;
    }
    let campaign = store.set_campaign_status(org.id, campaign.id, status).await?;
    println!("campaign {} {:?} is {}", campaign.id, campaign.name, campaign.status);
    Ok(())
}

fn counts(value: &Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        _ => "none".into(),
    }
}

/// The compliance report in short, for a terminal (`--csv` and `--json` give all of it).
fn report_text(report: &crate::dialer::report::Report) -> String {
    let mut out = format!("campaign  {} {:?} ({})\n", report.campaign, report.name, report.status);
    out.push_str(&format!("contacts  {}\n", report.contacts.len()));
    out.push_str(&format!("attempts  {}\n", report.attempts));
    let refused: Vec<String> = report.refused.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
    out.push_str(&format!("refused   {}\n", if refused.is_empty() { "none".to_owned() } else { refused.join(", ") }));
    let a = &report.abandon;
    out.push_str(&format!(
        "abandon   {:.2} % ({} of {} answered since {}; threshold {} %)\n",
        a.rate,
        a.abandoned,
        a.answered,
        a.since.format("%Y-%m-%d"),
        a.threshold
    ));
    out.push_str(&format!("{}\n", report.note));
    out
}
