//! `asterai purge`: purges what callers said in calls older than their organization's
//! retention (`[retention]`), as the daily job of `asterai serve` does; `--dry-run` lists
//! exactly what would go and changes nothing.

use super::Context;
use crate::retention::{Actor, PurgeReport};

/// Purge the recordings and words (turns' text, transcripts, after-call analysis text) of calls
/// older than their organization's retention (`retention.days`, `retention.orgs`), keeping the
/// calls' metadata. Each call purged gets a purge record; the run is written to the audit log.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this organization (every organization without it).
    #[arg(long)]
    org: Option<String>,
    /// List exactly what would be purged; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        let (name, peer) = (super::audit::actor(), super::audit::peer());
        let actor = Actor { name: &name, via: "cli", peer: Some(&peer) };
        let report = crate::retention::purge(
            &store,
            &context.config.retention,
            args.org.as_deref(),
            crate::store::now(),
            actor,
            args.dry_run,
        )
        .await?;
        if args.json {
            let text = serde_json::to_string_pretty(&report)?;
            return super::write_stdout(format!("{text}\n").as_bytes());
        }
        super::write_stdout(text(&report).as_bytes())
    })
}

/// The report for a terminal: per organization its retention and the calls, one a line.
fn text(report: &PurgeReport) -> String {
    let verb = if report.dry_run { "would purge" } else { "purged" };
    let mut out = String::new();
    for org in &report.orgs {
        let (Some(days), Some(before)) = (org.days, org.before) else {
            out.push_str(&format!("{}: kept forever (retention.days = 0); nothing to purge\n", org.org));
            continue;
        };
        out.push_str(&format!(
            "{}: keeps {days} days; {verb} {} calls started before {}\n",
            org.org,
            org.calls.len(),
            before.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        for call in &org.calls {
            let mut what = vec![format!("{} turns", call.turns)];
            if call.transcript {
                what.push("transcript".into());
            }
            if call.analysis {
                what.push("analysis".into());
            }
            what.push(format!("{} events", call.events));
            if call.recordings > 0 {
                what.push(format!("{} recordings", call.recordings));
            }
            out.push_str(&format!(
                "  {}  started {}  {}\n",
                call.call_id,
                call.started_at.format("%Y-%m-%d %H:%M:%S"),
                what.join(", ")
            ));
        }
    }
    if report.orgs.is_empty() {
        out.push_str("no organization yet\n");
    }
    out
}
