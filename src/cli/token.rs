//! `asterai token`: API tokens for the REST API, the live feed and the monitor page.

use super::Context;
use crate::auth::Scopes;

/// Manage API tokens. A token belongs to one organization and sees only its data; its scopes
/// (monitor, dial, admin) say what it may do there.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a token and print it once; the last line of output is the token alone.
    Create {
        /// The organization the token belongs to.
        #[arg(long)]
        org: String,
        /// What the token is for, e.g. "wallboard".
        #[arg(long, default_value = "default")]
        name: String,
        /// What the token may do: monitor (read calls, the live feed, the monitor page), dial
        /// (place calls, run campaigns, add to the do-not-call list), admin (remove from the
        /// do-not-call list), or all. Repeat it or give a comma list; default monitor.
        #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',', default_value = "monitor")]
        scopes: Vec<String>,
    },
    /// List an organization's tokens (never their secrets).
    List {
        /// The organization whose tokens to list.
        #[arg(long)]
        org: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; it stops working at once.
    Revoke {
        /// The token id (the part after ast_, as shown by `token list`).
        id: String,
    },
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        match args.command {
            Command::Create { org, name, scopes } => {
                let scopes = Scopes::parse(&scopes.join(",")).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
                let org = store.require_org(&org).await?;
                let created = crate::auth::create_token(&store, org.id, &name, scopes).await?;
                println!(
                    "token {} for organization {} ({}), scopes {scopes}; it is shown only now:",
                    created.record.id, org.slug, created.record.name
                );
                println!("{}", created.token);
            }
            Command::List { org, json } => {
                let org = store.require_org(&org).await?;
                let tokens = store.list_tokens(org.id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&tokens)?);
                } else {
                    println!(
                        "{:<18} {:<20} {:<20} {:<22} {:<22} status",
                        "id", "name", "scopes", "created", "last used"
                    );
                    for t in tokens {
                        let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                            t.map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                        };
                        let status = if t.revoked_at.is_some() { "revoked" } else { "active" };
                        println!(
                            "{:<18} {:<20} {:<20} {:<22} {:<22} {status}",
                            t.id,
                            t.name,
                            t.scopes.join(","),
                            when(Some(t.created_at)),
                            when(t.last_used_at)
                        );
                    }
                }
            }
            Command::Revoke { id } => {
                let id = id
                    .strip_prefix(crate::auth::TOKEN_PREFIX)
                    .map(|rest| rest.split('_').next().unwrap_or(rest))
                    .unwrap_or(&id);
                if store.revoke_token(id).await? {
                    println!("revoked token {id}");
                } else {
                    println!("token {id} was already revoked");
                }
            }
        }
        store.close().await;
        Ok(())
    })
}
