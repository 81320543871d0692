//! `asterai calls`: the call records.

use chrono::{DateTime, Utc};

use super::Context;
use crate::store::{CallFilter, CallStatus, Org, Store};

/// Inspect calls: list them, or show one with its transcript turn by turn.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List recent calls, newest first.
    List {
        /// Organization (may be left out when there is only one).
        #[arg(long, conflicts_with = "all")]
        org: Option<String>,
        /// Every organization's calls, newest first, each with its organization.
        #[arg(long)]
        all: bool,
        /// Only calls with this status (initiated, ringing, in_progress, completed, busy, no_answer, failed, canceled).
        #[arg(long)]
        status: Option<CallStatus>,
        /// Only calls of this campaign id.
        #[arg(long)]
        campaign: Option<i64>,
        /// How many calls (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one call and its transcript, turn by turn.
    Show {
        /// The call id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The organization named, or the only one there is.
pub(crate) async fn pick_org(store: &Store, slug: Option<&str>) -> anyhow::Result<Org> {
    match slug {
        Some(slug) => Ok(store.require_org(slug).await?),
        None => {
            let mut orgs = store.list_orgs().await?;
            match orgs.len() {
                1 => Ok(orgs.remove(0)),
                0 => anyhow::bail!("no organization yet; create one with `asterai org create <slug>`"),
                _ => {
                    let slugs: Vec<&str> = orgs.iter().map(|o| o.slug.as_str()).collect();
                    anyhow::bail!("several organizations exist ({}); choose one with --org", slugs.join(", "))
                }
            }
        }
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        match args.command {
            Command::List { org, all, status, campaign, limit, json } => {
                let filter = CallFilter { status, campaign_id: campaign, limit: Some(limit), ..Default::default() };
                let calls = if all {
                    let mut calls = Vec::new();
                    for org in store.list_orgs().await? {
                        calls.extend(store.list_calls(org.id, &filter).await?.calls);
                    }
                    calls.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
                    calls.truncate(usize::try_from(limit).unwrap_or(0));
                    calls
                } else {
                    let org = pick_org(&store, org.as_deref()).await.map_err(|e| {
                        if e.to_string().starts_with("several organizations") {
                            anyhow::anyhow!("{e}, or --all for every organization's calls")
                        } else {
                            e
                        }
                    })?;
                    store.list_calls(org.id, &filter).await?.calls
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&calls)?);
                } else {
                    let org_column = |org: &str| if all { format!("{org:<12} ") } else { String::new() };
                    println!(
                        "{}{:<36}  {:<8} {:<16} {:<16} {:<11} {:<18} {:>5} {:>7}  started",
                        org_column("org"),
                        "id",
                        "dir",
                        "from",
                        "to",
                        "status",
                        "outcome",
                        "turns",
                        "secs"
                    );
                    for c in calls {
                        println!(
                            "{}{:<36}  {:<8} {:<16} {:<16} {:<11} {:<18} {:>5} {:>7}  {}",
                            org_column(&c.org),
                            c.id,
                            c.direction.as_str(),
                            c.from,
                            c.to,
                            c.status.as_str(),
                            c.outcome.map_or("-", |o| o.as_str()),
                            c.turns,
                            c.duration_s.map_or("-".to_owned(), |d| format!("{d:.1}")),
                            when(Some(c.started_at))
                        );
                    }
                }
            }
            Command::Show { id, json } => {
                let call = store.call_any(&id).await?.ok_or_else(|| anyhow::anyhow!("no call {id:?}"))?;
                let turns = store.turns(call.org_id, &call.id).await?;
                let recordings = store.call_recordings(call.org_id, &call.id).await?;
                if json {
                    let mut body = serde_json::to_value(&call)?;
                    body["turns"] = serde_json::to_value(&turns)?;
                    body["recording_url"] = serde_json::json!(crate::http::recording_url(&call.id, &recordings));
                    // The CLI runs beside the files: their paths too.
                    let mut listed = serde_json::to_value(&recordings)?;
                    if let Some(items) = listed.as_array_mut() {
                        for (item, recording) in items.iter_mut().zip(&recordings) {
                            item["path"] = serde_json::json!(recording.path);
                        }
                    }
                    body["recordings"] = listed;
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    println!("call      {} ({} {} → {})", call.id, call.direction, call.from, call.to);
                    println!("org       {}", call.org);
                    match (&call.agent, call.agent_version) {
                        (Some(agent), Some(version)) => println!("agent     {agent} version {version}"),
                        _ => println!("agent     built-in"),
                    }
                    println!(
                        "status    {}{}",
                        call.status,
                        call.status_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                    );
                    println!(
                        "outcome   {}{}",
                        call.outcome.map_or("-", |o| o.as_str()),
                        call.outcome_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                    );
                    println!(
                        "started   {}   answered {}   ended {}",
                        when(Some(call.started_at)),
                        when(call.answered_at),
                        when(call.ended_at)
                    );
                    if let Some(d) = call.duration_s {
                        println!("duration  {d:.1} s");
                    }
                    if let Some(at) = call.purged_at {
                        println!("purged    {} (retention: the words and recordings are deleted)", when(Some(at)));
                    }
                    for r in &recordings {
                        let consent = match (r.consent_required, r.consent_announced) {
                            (_, true) => "consent announced",
                            (true, false) => "consent required, not announced",
                            (false, false) => "no consent announcement",
                        };
                        let size = match (r.size_bytes, r.duration_ms) {
                            (Some(bytes), Some(ms)) => format!(", {bytes} bytes, {:.1} s", ms as f64 / 1000.0),
                            _ => String::new(),
                        };
                        let reason = r.status_reason.as_deref().map(|why| format!(" ({why})")).unwrap_or_default();
                        println!("recording {} {}{reason}{size}, {consent}: {}", r.via, r.status, r.path);
                    }
                    println!();
                    for t in &turns {
                        let analysis = [t.emotion.clone(), t.intent.clone(), t.confidence.map(|c| format!("{c:.2}"))]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(", ");
                        println!("{}", turn_heading(t, &analysis));
                        // The greeting and a turn where nothing was heard have no caller line.
                        if !t.caller.is_empty() {
                            println!("  caller: {}", t.caller);
                        }
                        // A turn the caller talked over holds what they heard of the answer.
                        let cut = if t.interrupted { "  (interrupted by the caller)" } else { "" };
                        println!("  agent:  {}{cut}", t.agent);
                    }
                    if turns.is_empty() {
                        println!("(no turns)");
                    }
                    if let Some(analysis) = &call.analysis {
                        println!();
                        print_analysis(analysis);
                    }
                }
            }
        }
        store.close().await;
        Ok(())
    })
}

/// `turn 2  1234 ms (voice to voice 512 ms)  [calm, question, 0.91]`; the greeting and a turn
/// where the caller said nothing (a reprompt) say so instead of an empty caller line.
fn turn_heading(t: &crate::store::Turn, analysis: &str) -> String {
    let mut line = format!("turn {}", t.turn);
    if t.caller.is_empty() {
        line.push_str(if t.turn == 0 { "  (greeting)" } else { "  (nothing heard from the caller)" });
    }
    if t.latency_ms.total > 0 {
        line.push_str(&format!("  {} ms", t.latency_ms.total));
    }
    if let Some(ms) = t.latency_ms.voice_to_voice {
        line.push_str(&format!(" (voice to voice {ms} ms)"));
    }
    if !analysis.is_empty() {
        line.push_str(&format!("  [{analysis}]"));
    }
    line
}

/// The after-call analysis, one part a line: summary, success and why, the structured data, and
/// what went wrong (the provider, or data that did not fit the agent's schema).
fn print_analysis(analysis: &serde_json::Value) {
    if let Some(summary) = analysis["summary"].as_str() {
        println!("summary   {summary}");
    }
    if let Some(success) = analysis["success"].as_bool() {
        let reason = analysis["success_reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        println!("success   {}{reason}", if success { "yes" } else { "no" });
    }
    if !analysis["data"].is_null() {
        println!("data      {}", analysis["data"]);
    }
    if let Some(error) = analysis["data_error"].as_str() {
        println!("invalid   {error}");
    }
    if let Some(error) = analysis["error"].as_str() {
        println!("error     {error}");
    }
}
