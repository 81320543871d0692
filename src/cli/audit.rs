//! `asterai audit`: the audit log (every action by a token or the CLI), and the record the CLI
//! writes after each command that changes something.

use super::Context;
use crate::config::Config;
use crate::store::audit::NewAudit;

/// The audit log: who did what, when, from where (tokens and the CLI).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this organization's entries (all of them without it).
    #[arg(long)]
    org: Option<String>,
    /// Entries after this id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many entries (1 to 10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    limit: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        let org_id = match &args.org {
            Some(slug) => Some(
                store
                    .org_by_slug(slug)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no organization {slug:?}; `asterai org list` shows them"))?
                    .id,
            ),
            None => None,
        };
        let entries = store.audit_log(org_id, args.after, args.limit).await?;
        if args.json {
            let text = serde_json::to_string_pretty(&serde_json::json!({ "entries": entries }))?;
            return super::write_stdout(format!("{text}\n").as_bytes());
        }
        let mut out = String::new();
        for e in &entries {
            out.push_str(&format!(
                "{:>6}  {}  {:<28} {:<24} {}  from {}\n",
                e.id,
                e.at.format("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.action,
                e.target.as_deref().unwrap_or("-"),
                e.peer.as_deref().unwrap_or("-")
            ));
        }
        if entries.is_empty() {
            out.push_str("no audit entries\n");
        }
        super::write_stdout(out.as_bytes())
    })
}

/// Subcommands that only read.
const READ_ONLY: &[&str] =
    &["list", "show", "status", "get", "versions", "version", "report", "stats", "compliance", "endpoints"];

/// The command a command line runs, when it changes something: `("campaign start", ["3"])`.
pub(crate) fn changes(argv: &[String]) -> Option<(String, Vec<String>)> {
    let mut words = Vec::new();
    let mut skip_value = false;
    for arg in argv.iter().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        if matches!(arg.as_str(), "--config" | "--log-format" | "--log-level") {
            skip_value = true;
            continue;
        }
        words.push(arg.clone());
    }
    let command = words.first()?.clone();
    let rest: Vec<String> = words[1..].to_vec();
    let sub = rest.iter().find(|w| !w.starts_with('-')).cloned();
    let changing = match command.as_str() {
        "call" => true,
        "campaign" | "agent" | "dnc" | "token" | "org" | "webhooks" => {
            sub.as_deref().is_some_and(|s| !READ_ONLY.contains(&s))
        }
        _ => false,
    };
    if !changing {
        return None;
    }
    let action = match (command.as_str(), &sub) {
        ("call", _) | (_, None) => command.clone(),
        (_, Some(sub)) => format!("{command} {sub}"),
    };
    let target = rest.into_iter().filter(|w| Some(w) != sub.as_ref() || command == "call").collect();
    Some((action, target))
}

/// Who runs the CLI: `cli:<user>` (the user `sudo` ran as, else the login).
pub(crate) fn actor() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// Where the CLI user came from: the SSH client's address, else `local`.
pub(crate) fn peer() -> String {
    std::env::var("SSH_CLIENT")
        .ok()
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .map_or_else(|| "local".into(), |ip| format!("ssh:{ip}"))
}

/// Writes the audit entry of a CLI command that succeeded and changed something. A failure to
/// write it is reported on stderr and fails the command: the change is made, its record is not.
pub(crate) fn record(config: &Config, argv: &[String], action: &str, target: &[String]) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(config).await?;
        let org = argv.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix("--org=")
                .map(str::to_owned)
                .or_else(|| (a == "--org").then(|| argv.get(i + 1).cloned()).flatten())
        });
        let org_id = match org {
            Some(slug) => store.org_by_slug(&slug).await?.map(|o| o.id),
            // Without --org, the only organization if there is one.
            None => match store.list_orgs().await?.as_slice() {
                [only] => Some(only.id),
                _ => None,
            },
        };
        let (actor, peer, target) = (actor(), peer(), target.join(" "));
        let entry = NewAudit {
            org_id,
            actor: &actor,
            via: "cli",
            action,
            target: Some(&target).filter(|t| !t.is_empty()).map(String::as_str),
            detail: serde_json::json!({ "argv": argv.iter().skip(1).collect::<Vec<_>>() }),
            peer: Some(&peer),
        };
        store
            .audit(&entry)
            .await
            .map_err(|e| anyhow::anyhow!("the command ran, but its audit entry was not written: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::changes;

    fn argv(line: &str) -> Vec<String> {
        std::iter::once("asterai").chain(line.split_whitespace()).map(String::from).collect()
    }

    #[test]
    fn which_commands_change_something() {
        assert_eq!(changes(&argv("campaign start 3")), Some(("campaign start".into(), vec!["3".into()])));
        assert_eq!(
            changes(&argv("--config /etc/a.toml dnc add +15551230000 --org acme")),
            Some(("dnc add".into(), vec!["+15551230000".into(), "--org".into(), "acme".into()]))
        );
        assert_eq!(changes(&argv("call +15551230000")), Some(("call".into(), vec!["+15551230000".into()])));
        assert_eq!(changes(&argv("webhooks retry --dead")), Some(("webhooks retry".into(), vec!["--dead".into()])));
        for read in [
            "campaign list",
            "campaign status 3",
            "dnc list",
            "calls list",
            "audit",
            "agent show x",
            "webhooks list",
            "webhooks endpoints",
        ] {
            assert_eq!(changes(&argv(read)), None, "{read}");
        }
    }
}
