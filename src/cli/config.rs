//! `asterai config`: prints the effective configuration.

use super::Context;

/// Print the effective configuration as TOML, after validating it.
///
/// Shows what the daemon would run with: the config file, then ASTERAI_* variables, then the
/// defaults for everything else. Secrets are redacted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// List every key with its environment variable instead.
    #[arg(long)]
    keys: bool,
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    if args.keys {
        for key in crate::config::Config::keys() {
            println!("{:<40} {}", key.path, key.env);
        }
        return Ok(());
    }
    println!("# source: {}", context.source);
    println!("# data directory: {}", context.config.data_dir().display());
    print!("{}", context.config.to_toml());
    Ok(())
}
