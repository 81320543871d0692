//! `asterai org`: organizations.

use super::Context;

/// Manage organizations: each owns its calls, campaigns, contacts, tokens and do-not-call list.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create an organization.
    Create {
        /// Short name used in AGI URLs (ai?org=<slug>) and the API: lower-case letters, digits, '-'.
        slug: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// List organizations.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        match args.command {
            Command::Create { slug, name } => {
                let org = store.create_org(&slug, name.as_deref().unwrap_or(&slug)).await?;
                println!("created organization {} ({})", org.slug, org.name);
            }
            Command::List { json } => {
                let orgs = store.list_orgs().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&orgs)?);
                } else {
                    for org in orgs {
                        println!("{:<24} {}", org.slug, org.name);
                    }
                }
            }
        }
        store.close().await;
        Ok(())
    })
}
