//! `asterai agent`: an organization's agents, from TOML or JSON files (see [`crate::agent`]).
//! Every change is a new version; `show` prints a definition that `edit` takes back.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Context;
use crate::agent::{self, AgentSpec};
use crate::store::{Agent, Store};

/// Agents: who speaks on the organization's calls (prompt, greetings, phrases, voice, limits).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create an agent from a TOML or JSON file that names it (`name = "sales"`).
    Create {
        /// The agent's definition (JSON when it starts with `{`, else TOML).
        file: PathBuf,
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
        /// Make it the organization's default agent.
        #[arg(long)]
        default: bool,
    },
    /// Replace an agent's definition with the file's: a new version.
    Edit {
        /// The agent's new definition; its `name` (or --name) says which agent.
        file: PathBuf,
        /// The agent, when the file does not name it.
        #[arg(long)]
        name: Option<String>,
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
        /// Make it the organization's default agent.
        #[arg(long)]
        default: bool,
    },
    /// Print an agent's definition as TOML (what `edit` reads), or everything as JSON.
    Show {
        /// The agent.
        name: String,
        /// A version other than the current one.
        #[arg(value_name = "VERSION")]
        at: Option<i32>,
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
        /// JSON with the version, its note and whether it is the default.
        #[arg(long)]
        json: bool,
    },
    /// List the organization's agents.
    List {
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List an agent's versions, oldest first.
    Versions {
        /// The agent.
        name: String,
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
        /// As JSON, with each version's definition.
        #[arg(long)]
        json: bool,
    },
    /// Make an old version current again (as a new version that copies it).
    Rollback {
        /// The agent.
        name: String,
        /// The version to copy.
        #[arg(value_name = "VERSION")]
        to: i32,
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
    },
    /// Make an agent the organization's default (what calls run when neither the route nor
    /// the campaign names an agent).
    Default {
        /// The agent; `--builtin` instead goes back to the config file's agent.
        #[arg(required_unless_present = "builtin")]
        name: Option<String>,
        /// No default agent: calls run the built-in agent of the config file.
        #[arg(long, conflicts_with = "name")]
        builtin: bool,
        /// The organization (needed when there are several).
        #[arg(long)]
        org: Option<String>,
    },
}

fn read(file: &Path) -> anyhow::Result<AgentSpec> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    AgentSpec::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn summary(agent: &Agent) -> String {
    format!("agent {} version {}{}", agent.name, agent.version, if agent.default { " (default)" } else { "" })
}

async fn require(store: &Store, org_id: i64, name: &str) -> anyhow::Result<Agent> {
    store.agent(org_id, name).await?.ok_or_else(|| anyhow::anyhow!("no agent {name:?}; see `asterai agent list`"))
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        let result = command(&store, args.command).await;
        store.close().await;
        result
    })
}

async fn command(store: &Store, command: Command) -> anyhow::Result<()> {
    let org_of = |org: Option<String>| async move { super::calls::pick_org(store, org.as_deref()).await };
    match command {
        Command::Create { file, org, default } => {
            let org = org_of(org).await?;
            let spec = read(&file)?;
            let agent = agent::create(store, org.id, &spec, default)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!("{} created in {}", summary(&agent), org.slug);
        }
        Command::Edit { file, name, org, default } => {
            let org = org_of(org).await?;
            let spec = read(&file)?;
            let name = name.or_else(|| spec.name.clone()).ok_or_else(|| {
                anyhow::anyhow!("{}: no name; say which agent with name = \"…\" in the file or --name", file.display())
            })?;
            let agent = agent::update(store, org.id, &name, &spec, default)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!("{} saved in {}", summary(&agent), org.slug);
        }
        Command::Show { name, at, org, json } => {
            let org = org_of(org).await?;
            let agent = require(store, org.id, &name).await?;
            let version = at.unwrap_or(agent.version);
            let stored = store
                .agent_version(org.id, &name, version)
                .await?
                .ok_or_else(|| anyhow::anyhow!("agent {name:?} has no version {version}"))?;
            if json {
                let mut value = serde_json::to_value(&stored)?;
                value["default"] = agent.default.into();
                value["current_version"] = agent.version.into();
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                let spec = agent::spec_of(&name, &stored).map_err(anyhow::Error::msg)?;
                println!(
                    "# {} version {} of {} ({}, {})",
                    name,
                    stored.version,
                    agent.version,
                    stored.note,
                    stored.created_at.format("%Y-%m-%d %H:%M:%S")
                );
                print!("{}", toml::to_string(&spec)?);
            }
        }
        Command::List { org, json } => {
            let org = org_of(org).await?;
            let agents = store.list_agents(org.id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else if agents.is_empty() {
                println!("{} has no agents; its calls run the built-in agent of the config file", org.slug);
            } else {
                for agent in agents {
                    println!(
                        "{:<24}  v{:<4}  {}  {}",
                        agent.name,
                        agent.version,
                        agent.updated_at.format("%Y-%m-%d %H:%M"),
                        if agent.default { "default" } else { "" }
                    );
                }
            }
        }
        Command::Versions { name, org, json } => {
            let org = org_of(org).await?;
            let versions = store.agent_versions(org.id, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
            } else {
                for v in versions {
                    println!("v{:<4}  {}  {}", v.version, v.created_at.format("%Y-%m-%d %H:%M:%S"), v.note);
                }
            }
        }
        Command::Rollback { name, to, org } => {
            let org = org_of(org).await?;
            let agent = store.rollback_agent(org.id, &name, to).await?;
            println!("{} saved in {} (a copy of version {to})", summary(&agent), org.slug);
        }
        Command::Default { name, builtin: _, org } => {
            let org = org_of(org).await?;
            store.set_default_agent(org.id, name.as_deref()).await?;
            match name {
                Some(name) => println!("{}'s calls now run agent {name} unless they name another", org.slug),
                None => println!("{}'s calls now run the built-in agent unless they name another", org.slug),
            }
        }
    }
    Ok(())
}
